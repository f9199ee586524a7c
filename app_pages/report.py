"""Report: export what this session found as one self-contained offline HTML file and as JSON."""

from __future__ import annotations

import time

import streamlit as st

from backdoor_core.report import html_report, json_report, uniform_columns
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

title = st.text_input("Title", **ui.keep("report.title", "Backdoor Attention Lab — findings"))
if not findings:
    st.info("Nothing recorded yet. Inspect a text, scan a model, train or sanitize one: each result is added "
            "here automatically.", icon=":material/info:")

st.subheader("Include")
selected: list[str] = []
for f in findings:
    stamp = time.strftime("%H:%M", time.localtime(f.created))
    if st.checkbox(f"{md(f.heading)}  ·  {stamp}", value=True, key=f"report.inc.{f.key}"):
        selected.append(f.key)
c1, c2 = st.columns(2)
with_figures = c1.toggle("Interactive charts (adds about 5 MB)", **ui.keep("report.figures", True))
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
    return json_report(title, sections, include_figures=False, extra={"session": lab.to_dict()})


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
for s in sections:
    with st.expander(md(s["heading"]), expanded=False):
        if s.get("text"):
            st.markdown(s["text"])
        if s.get("table"):
            st.dataframe(uniform_columns(s["table"]), hide_index=True)  # one type a column, as Arrow needs
        for i, fig in enumerate(s.get("figures") or []):
            ui.plot(fig, key=f"report.fig.{s['heading']}.{i}")
