"""Drawing helpers shared by the pages: messages, styles, charts, page headers."""

from __future__ import annotations

import weakref

import streamlit as st

from app_pages._state import ASSETS, presenter, ss
from app_pages._text import h, md


def show_error(exc: BaseException | str, prefix: str = "") -> None:
    """A plain message for a core error (never a traceback), or the message itself."""
    text = str(exc).strip() or type(exc).__name__
    st.error(md(f"{prefix}{text}"), icon=":material/warning:")  # messages quote file names, labels, texts


def inject_css() -> None:
    css = (ASSETS / "style.css").read_text(encoding="utf-8") if (ASSETS / "style.css").is_file() else ""
    if presenter():
        css += (ASSETS / "presenter.css").read_text(encoding="utf-8") if (ASSETS / "presenter.css").is_file() else ""
    if css:
        st.html(f"<style>{css}</style>")


# ------------------------------------------------------------------------------------------------ drawing


def plot(fig, key: str | None = None) -> None:
    """A plotly chart at full width, with the lab's chart config; its text larger in presenter mode."""
    if presenter():
        fig = enlarged(fig)
    st.plotly_chart(fig, width="stretch", key=key, theme=None,
                    config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}})


_ENLARGED: dict[int, tuple[weakref.ref, object]] = {}  # id(figure) -> (the figure, its enlarged copy)


def enlarged(fig):
    """``figures.enlarge(fig)``, made once per figure object while it lives. A page keeps the figures of a result it
    shows (``figure_once``), and presenter mode copied each one on every rerun: 60-140 ms a chart, an Inspect rerun
    of MiniLM's at 0.5 s instead of 0.2 s. A figure is never changed once drawn, so its copy stays right."""
    from backdoor_core.figures import enlarge

    key = id(fig)
    hit = _ENLARGED.get(key)
    if hit is not None and hit[0]() is fig:
        return hit[1]
    big = enlarge(fig)
    _ENLARGED[key] = (weakref.ref(fig, lambda _ref: _ENLARGED.pop(key, None)), big)
    return big


K_FIGURES = "lab.figures"  # {name: (objects, values, figure)}: the charts a page drew from a result it keeps


def figure_once(name: str, build, objects: tuple, values: tuple = ()):
    """The chart ``build()`` made for ``objects`` (a page's kept results, compared by identity: the page keeps them
    while they are current) and ``values`` (compared by equality), built again only when one changed. A rerun
    that shows the same result (a head picked, a tab's radio moved) built all its charts anew: plotly checks each
    one's whole template (40-60 ms a chart, most of an Inspect rerun). Kept per session, the latest one a name;
    ``plot`` never changes a figure (presenter mode draws a copy)."""
    store = ss().setdefault(K_FIGURES, {})
    hit = store.get(name)
    if (hit is not None and len(hit[0]) == len(objects) and all(a is b for a, b in zip(hit[0], objects))
            and hit[1] == values):
        return hit[2]
    fig = build()
    store[name] = (objects, values, fig)
    return fig


def stack_columns(key: str, spec=2, gap: str = "medium") -> list:
    """``st.columns(spec)`` that stack, one a row, where side by side they would be cut: in a window narrower
    than 1200 px (a 1024-px projector with the sidebar open cut chart titles, colorbar ticks and select boxes)
    and in presenter mode below 1600 px, where three form columns broke words ("Trojan Attentio n Loss")
    (``assets/style.css`` / ``presenter.css`` select the ``lab-stack`` container)."""
    with st.container(key=f"lab-stack-{key}"):
        return st.columns(spec, gap=gap)


def tile_columns(key: str, n: int) -> list:
    """``st.columns(n)`` for a row of metric tiles, two a row in presenter mode below 1600 px (``presenter.css``
    selects the ``lab-tiles`` container): four in a 1024-px window broke "Parameters" into "Parameter s")."""
    with st.container(key=f"lab-tiles-{key}"):
        return st.columns(n)


def points_delta(change: float, **colour) -> dict:
    """A before/after ``st.metric`` tile's delta in points; where nothing changed, no arrow and no colour (not a
    red "↑ +0.0")."""
    if abs(100 * change) < 0.05:
        return {"delta": "±0.0 pts", "delta_color": "off", "delta_arrow": "off"}
    return {"delta": f"{100 * change:+.1f} pts", **colour}


def flip_line(clean: dict, triggered: dict) -> None:
    """The big "label p% → label p%" line: ``clean`` / ``triggered`` are ``prediction()`` dicts (``label``,
    ``probs``). It wraps in a narrow column (a ``st.metric`` would cut the label to "business ·…")."""
    def part(pred: dict, cls: str) -> str:
        return f'<span class="{cls}">{h(pred["label"])}</span>&nbsp;{max(pred["probs"].values()):.0%}'

    # the arrow stays with the prediction it points to when the line wraps
    st.markdown(f'<div class="lab-flip">{part(clean, "clean")} <span style="white-space: nowrap">→&nbsp;'
                f'{part(triggered, "trig")}</span></div>', unsafe_allow_html=True)


def page_header(title: str, intro: str | None = None) -> None:
    st.title(title)
    if intro:
        st.markdown(f'<div class="lab-intro">{h(intro)}</div>', unsafe_allow_html=True)


def trigger_text_html(res) -> str:
    """An inspection's (``inspection.inspect_text``) triggered text as HTML with the trigger marked, up to where the model stopped reading (a 20,000-character text
    filled the column with big type for screens on end, the charts and the "cut" note far below); a trigger placed
    beyond that is still shown, after a note of what was left out."""
    t = res.triggered.text
    s, e = res.insertion.span
    end = len(t)
    if res.triggered.truncated and len(res.triggered.offsets):
        end = int(res.triggered.offsets[:, 1].max())  # the last character the model read
    mark = f'<mark class="trigger">{h(t[s:e])}</mark>' if e > s else ""
    if not mark or e <= end:  # h(): one line, so no blank line in the text ends the HTML block (markdown stays out)
        text = h(t[:s]) + mark + h(t[e:end]) if mark else h(t[:end])
    else:
        text = h(t[:end]) + f" <i>… {s - end:,} characters not read …</i> " + mark
        end = e
    if end < len(t):
        text += f" <i>… ({len(t) - end:,} more characters that the model did not read)</i>"
    return text
