"""Report: export what this session found as one self-contained offline HTML file and as JSON.

Only the ticked findings go into either file (the JSON's ``session`` summary included). The charts toggle states
what they add to the HTML, computed from the ticked findings' charts (plotly.js once, and each chart's data). A
tab whose saved report had findings or charts that could not be read back says so here (``LabSession.dropped``),
as does one whose findings cannot be saved on the server (``LabSession.unsaved``: a full or read-only disk).
A blank title gives the default one.
"""

from __future__ import annotations

import time

import streamlit as st

from backdoor_core.report import chart_bytes, html_report, json_report, plotly_js_bytes, uniform_columns
from app_pages import _common as ui
from app_pages._text import md

ui.page_header(
    "Report",
    "Everything this session found — the model, inspections, scans, attacks and sanitizations — in one HTML "
    "file that opens offline anywhere (plotly is inside it), and as JSON for scripts.",
)

lab = ui.lab()
ui.current_model(show_errors=False)  # keeps the model summary current
findings = lab.ordered()

DEFAULT_TITLE = "Backdoor Attention Lab — findings"
title = st.text_input("Title", **ui.keep("report.title", DEFAULT_TITLE)).strip() or DEFAULT_TITLE
if lab.dropped:
    st.warning("Part of this tab's saved report could not be read back and is left out: "
               + "; ".join(md(d, 200) for d in lab.dropped[:5]) + (" …" if len(lab.dropped) > 5 else ""),
               icon=":material/warning:")
if lab.unsaved:  # the sessions folder is full or read-only: what is found stays in this tab's memory only
    st.warning(f"This tab's findings could not be saved on the server (its disk refused: {md(lab.unsaved, 160)}): "
               "a reload or a closed tab will lose them. Download the report below to keep them.",
               icon=":material/warning:")
if not findings:
    st.info("Nothing recorded yet. Inspect a text, scan a model, train or sanitize one: each result is added "
            "here automatically.", icon=":material/info:")

st.subheader("Include")
selected: list[str] = []
for f in findings:
    stamp = time.strftime("%H:%M", time.localtime(f.created))
    if st.checkbox(f"{md(f.heading)}  ·  {stamp}", value=True, key=f"report.inc.{f.key}"):
        selected.append(f.key)


def _chart_bytes(f) -> int:
    """What finding ``f``'s charts add to the HTML, worked out once per finding version (kept for the session)."""
    cache = st.session_state.setdefault("report.chart_bytes", {})
    ck = (f.key, f.created, len(f.figures))
    if ck not in cache:
        try:
            cache[ck] = chart_bytes(f.figure_json())  # the JSON a save writes, made once per chart
        except (TypeError, ValueError):
            cache[ck] = 0
    return cache[ck]


charts = sum(_chart_bytes(f) for f in findings if f.key in selected and f.figures)
c1, c2 = st.columns(2)
size = f"adds about {(plotly_js_bytes() + charts) / 1e6:.1f} MB" if charts else "none in the ticked findings"
with_figures = c1.toggle(f"Interactive charts ({size})", **ui.keep("report.figures", True))
inspection = st.session_state.get("inspect.cache")
with_bertviz = c2.toggle("bertviz head view of the last inspection", disabled=inspection is None,
                         **ui.keep("report.bertviz", False))

sections = lab.sections(include_figures=with_figures, keys=selected)


def _bertviz_section() -> dict | None:
    if not with_bertviz or inspection is None:
        return None
    from backdoor_core.bertviz_offline import head_view_html

    res = inspection[1]
    rec = res.triggered
    layer = int(res.top_heads(1)[0]["layer"])
    return {"heading": "Attention with the trigger (bertviz head view)",
            "text": f"Text: *{md(rec.text, 300)}*", "html": head_view_html(rec.attentions, rec.tokens, layer=layer),
            "html_height": min(1200, 140 + 24 * len(rec.tokens))}


def build_html() -> str:
    extra = _bertviz_section()
    return html_report(title, sections + ([extra] if extra else []))


def build_json() -> str:
    return json_report(title, sections, include_figures=False, extra={"session": lab.to_dict(keys=selected)})


st.subheader("Download")
# the files are built when clicked (``data`` callables, on Streamlit's own thread); "ignore": a click does not also
# rerun this page, whose sections with charts take seconds to rebuild and raced the build on a loaded machine
d1, d2 = st.columns(2)
stamp = time.strftime("%Y%m%d-%H%M")
d1.download_button("HTML report (offline)", data=build_html, file_name=f"backdoor-lab-report-{stamp}.html",
                   mime="text/html", type="primary", icon=":material/download:", key="report.html",
                   disabled=not sections, on_click="ignore")
d2.download_button("JSON", data=build_json, file_name=f"backdoor-lab-report-{stamp}.json",
                   mime="application/json", icon=":material/data_object:", key="report.json", disabled=not sections,
                   on_click="ignore")

st.subheader("Preview")
for n, s in enumerate(sections):
    figs = s.get("figures") or []
    # a section's charts are drawn while its box is open: every rerun drew (and sent the browser) all of them in
    # the closed boxes, 400 charts with 200 findings; opening a box reruns the page
    lazy = {"key": f"report.open.{n}", "on_change": "rerun"} if figs else {}
    with st.expander(md(s["heading"]), expanded=False, **lazy) as box:
        if s.get("text"):
            st.markdown(s["text"])
        if s.get("table"):
            st.dataframe(uniform_columns(s["table"]), hide_index=True)  # one type a column, as Arrow needs
        for i, fig in enumerate(figs if getattr(box, "open", True) else []):
            ui.plot(fig, key=f"report.fig.{n}.{i}")  # two findings may share a heading (not a key)
