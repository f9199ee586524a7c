"""Reports: one self-contained offline HTML file, or JSON, from a list of sections.

A section is a dict with any of these keys (all but ``heading`` optional)::

    {
        "heading": "Suspicious heads",            # str
        "text": "**3** heads ...",               # plain text or simple markdown (see below)
        "table": [{"head": "L2H3", "score": 0.91}, ...],   # list of dicts (or a pandas DataFrame)
        "figure": plotly_figure,                  # a plotly Figure (or its dict form)
        "figures": [fig1, fig2],                  # several figures, drawn one after another
        "html": "<!DOCTYPE html>...",             # raw HTML, e.g. a bertviz view
    }

``html_report(title, sections)`` returns ONE HTML document that needs no network:

* plotly.js is taken from the installed ``plotly`` package and inlined once (about 4.8 MB), only when a
  section has a figure; there is no CDN link anywhere;
* a raw ``html`` value that is a complete document (starts with ``<!DOCTYPE`` or ``<html``, as the offline
  bertviz views do) is put into an ``<iframe srcdoc=...>`` so its scripts and styles stay isolated; an HTML
  fragment is inserted as is (it is trusted: it comes from our own code, never from a user);
* a Content-Security-Policy ``<meta>`` forbids every fetch, so the page cannot reach out even by accident.

Simple markdown in ``text``: paragraphs (blank line), ``- `` / ``* `` bullet lists, ``1. `` numbered lists,
``**bold**``, ``*italic*``, `` `code` ``, ``### heading`` lines and backslash escapes (``\\*`` is a literal ``*``).
Everything else is escaped: names, labels and texts from models and data files never become HTML.

``html_report`` and ``json_report`` record the tool version (``backdoor_core.__version__``): the HTML in its
header, its footer and a generator ``<meta>`` tag, the JSON as ``tool_version``.

``json_report(title, sections)`` returns a JSON string with the same content: tables as lists of records,
figures as plotly's JSON (``include_figures=True``) and raw HTML left out (only its size is noted).

No Streamlit import here: the app, the CLI (``scan --html``) and the benchmarks all call these.
"""

from __future__ import annotations

import datetime as _dt
import functools
import html as _html
import json
import math
import re
from typing import Any, Iterable, Sequence

from ._version import __version__

__all__ = ["html_report", "json_report", "markdown_to_html", "table_html", "to_jsonable", "uniform_columns", "CSP",
           "REPORT_MARK", "chart_bytes", "plotly_js_bytes"]

REPORT_MARK = b'<meta name="generator" content="Backdoor Attention Lab'
"""Bytes every report ``html_report`` writes holds in its first lines: a command may replace such a file."""

CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; frame-src 'self' about: data:"

_FIGURE_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}

_CSS = """
:root { --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --accent: #b42318; --bg-alt: #f6f8fa; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1200px; padding: 24px 32px 64px; line-height: 1.5; font-size: 16px; }
h1 { font-size: 2rem; margin: 0 0 4px; }
.meta { color: var(--muted); margin-bottom: 24px; font-size: 0.9rem; }
section { border-top: 1px solid var(--line); padding: 16px 0 8px; }
h2 { font-size: 1.4rem; margin: 8px 0 12px; }
h3 { font-size: 1.1rem; margin: 12px 0 8px; }
code { background: var(--bg-alt); padding: 1px 4px; border-radius: 4px; font-size: 0.92em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.95rem; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--bg-alt); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figure { width: 100%; margin: 8px 0 16px; }
iframe.embed { width: 100%; height: 720px; border: 1px solid var(--line); border-radius: 6px; }
nav ol { margin: 0 0 16px; padding-left: 20px; }
@media print { iframe.embed { display: none; } }
/* a 3000-character model name or table cell with no space made the page 37,000 px wide: break anywhere */
h1, h2, h3, h4, h5, h6, p, li, th, td, .meta { overflow-wrap: anywhere; }
"""


# ------------------------------------------------------------------------------------------------ helpers


@functools.lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def plotly_js_bytes() -> int:
    """The bytes the inlined plotly.js adds to a report with at least one figure (about 4.8 MB)."""
    return len(_plotly_js().encode("utf-8"))


def chart_bytes(figures: Iterable[Any]) -> int:
    """About the bytes ``figures`` (plotly Figures or dicts) add to an HTML report besides plotly.js: their JSON
    and the few hundred bytes of markup and config around each. With ``plotly_js_bytes`` it is the size a page
    states for "interactive charts" (a fixed "about 5 MB" was 8.3 MB for 200 inspections' charts). A figure may
    also be given as its plotly JSON (``session.Finding.figure_json``, written once per chart)."""
    return sum(len((f if isinstance(f, str) else _figure_obj(f).to_json()).encode("utf-8")) + 600
               for f in figures if f is not None)


def to_jsonable(value: Any) -> Any:
    """Numpy scalars/arrays, tuples, sets, paths, dataclasses-with-to_dict and NaN made JSON-friendly."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "to_dict") and callable(value.to_dict) and not _is_dataframe(value):
        try:
            return to_jsonable(value.to_dict())
        except TypeError:
            pass
    if _is_dataframe(value):
        return to_jsonable(value.to_dict(orient="records"))
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    return str(value)


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "to_dict")


def _rows(table: Any) -> list[dict]:
    if table is None:
        return []
    if _is_dataframe(table):
        return [dict(r) for r in table.to_dict(orient="records")]
    rows = list(table)
    out = []
    for r in rows:
        if isinstance(r, dict):
            out.append(r)
        else:
            raise TypeError(f"a table must be a list of dicts, got a row of type {type(r).__name__}")
    return out


def _format_cell(value: Any) -> tuple[str, bool]:
    """(escaped text, is_number)."""
    value = to_jsonable(value)
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value), True
    if isinstance(value, float):
        if value == 0:
            return "0", True
        if abs(value) >= 1000 or abs(value) < 1e-3:
            return f"{value:.3g}", True
        return f"{value:.4g}", True
    if value is None:
        return "", False
    if isinstance(value, (list, dict)):
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            return _esc(", ".join(str(v) for v in value)), False
        return _esc(json.dumps(value, default=str)), False
    return _esc(str(value)), False


BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
"""Unicode's bidirectional embeddings, overrides and isolates (LRE RLE PDF LRO RLO, LRI RLI FSI PDI): invisible,
they reorder the text after them, so a name that holds one reads as other words ("evil" shown as "live"). Text
without them (Arabic, Hebrew, marks U+200E/U+200F) keeps its direction."""


def show_bidi_controls(text: str) -> str:
    """``text`` with each bidirectional control (``BIDI_CONTROLS``) written as a visible ``‹U+202E›``: untrusted
    names and texts show what they hold instead of reordering what follows. Our design (as code editors show
    them)."""
    return BIDI_CONTROLS.sub(lambda m: f"\u2039U+{ord(m.group()):04X}\u203a", text)


def _esc(text: str, quote: bool = True) -> str:
    """``html.escape`` of untrusted text, its bidirectional controls made visible (``show_bidi_controls``)."""
    return _html.escape(show_bidi_controls(text), quote)


def uniform_columns(rows: list[dict]) -> list[dict]:
    """``rows`` with every column that mixes text and numbers as text: a table widget backed by Arrow (the app's
    ``st.dataframe``) takes one type per column, and a "value" column of "94.7%" and 120 failed to convert. An
    integer beyond 64 bits (only a hand-edited session file has one) is text too: Arrow refused it, and the
    Report page failed."""
    rows = [{k: (str(v) if _beyond_int64(v) else v) for k, v in r.items()} for r in rows]
    mixed = {k for k in {k for r in rows for k in r}
             if len({isinstance(r.get(k), str) for r in rows if r.get(k) is not None}) > 1}
    return [{k: (str(v) if k in mixed and v is not None else v) for k, v in r.items()} for r in rows]


def _beyond_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63


def table_html(table: Any) -> str:
    """An HTML ``<table>`` from a list of dicts (columns: the union of keys, in first-seen order)."""
    rows = _rows(table)
    if not rows:
        return "<p><em>(empty table)</em></p>"
    columns: list[str] = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    head = "".join(f"<th>{_esc(str(c))}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            text, is_num = _format_cell(r.get(c))
            cells.append(f'<td class="num">{text}</td>' if is_num else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_INLINE_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")


_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark: a backslash before ASCII punctuation
_PROTECTED = re.compile("\x00(\\d+)\x00")


def _inline(text: str) -> str:
    """Inline markdown to HTML. Backslash escapes (``\\*``, the app's ``md()`` output) give the literal character:
    it is set aside before the code/bold/italic rules run and put back HTML-escaped."""
    kept: list[str] = []

    def keep(m: re.Match) -> str:
        kept.append(m.group(1))
        return f"\x00{len(kept) - 1}\x00"

    text = _ESCAPED.sub(keep, text.replace("\x00", ""))
    parts = _INLINE_CODE.split(text)  # odd indices are code spans
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # inside code a backslash is literal
            out.append(f"<code>{_esc(_PROTECTED.sub(lambda m: chr(92) + kept[int(m.group(1))], part))}</code>")
        else:
            esc = _esc(part)
            esc = _BOLD.sub(r"<strong>\1</strong>", esc)
            esc = _ITALIC.sub(r"<em>\1</em>", esc)
            out.append(_PROTECTED.sub(lambda m: _esc(kept[int(m.group(1))]), esc))
    return "".join(out)


_BULLET = re.compile(r"^\s*[-*]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def markdown_to_html(text: str) -> str:
    """Simple markdown (paragraphs, lists, bold, italic, code, headings) to safe HTML."""
    blocks: list[str] = []
    para: list[str] = []
    items: list[str] = []
    list_tag = ""

    def flush_para():
        if para:
            blocks.append("<p>" + "<br>".join(_inline(p) for p in para) + "</p>")
            para.clear()

    def flush_list():
        nonlocal list_tag
        if items:
            blocks.append(f"<{list_tag}>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + f"</{list_tag}>")
            items.clear()
        list_tag = ""

    for line in str(text or "").splitlines():
        if not line.strip():
            flush_para()
            flush_list()
            continue
        if m := _HEADING.match(line):
            flush_para()
            flush_list()
            level = min(6, max(3, len(m.group(1)) + 1))  # h1/h2 belong to the report itself
            blocks.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            continue
        bullet, numbered = _BULLET.match(line), _NUMBERED.match(line)
        if bullet or numbered:
            flush_para()
            tag = "ul" if bullet else "ol"
            if list_tag and list_tag != tag:
                flush_list()
            list_tag = tag
            items.append((bullet or numbered).group(1))
            continue
        if items:  # a continuation line of the last list item
            items[-1] += " " + line.strip()
            continue
        para.append(line.strip())
    flush_para()
    flush_list()
    return "\n".join(blocks)


def _figure_obj(figure: Any):
    import plotly.graph_objects as go

    if isinstance(figure, go.Figure):
        return figure
    if isinstance(figure, dict):
        return go.Figure(figure)
    raise TypeError(f"a section's figure must be a plotly Figure or dict, got {type(figure).__name__}")


def _section_figures(section: dict) -> list:
    figs = []
    if section.get("figure") is not None:
        figs.append(section["figure"])
    figs.extend(f for f in (section.get("figures") or []) if f is not None)
    return [_figure_obj(f) for f in figs]


def _figure_html(fig, index: int) -> str:
    height = fig.layout.height or 480
    div_id = f"figure-{index}"
    return (
        f'<div class="figure">'
        + fig.to_html(
            include_plotlyjs=False,
            full_html=False,
            div_id=div_id,
            config=_FIGURE_CONFIG,
            default_width="100%",
            default_height=f"{int(height)}px",
        )
        + "</div>"
    )


def _is_document(raw: str) -> bool:
    head = raw.lstrip()[:20].lower()
    return head.startswith("<!doctype") or head.startswith("<html")


def _raw_html(raw: str, index: int, height: int | None) -> str:
    if _is_document(raw):
        h = int(height or 720)
        return (
            f'<iframe class="embed" id="embed-{index}" style="height:{h}px" '
            f'sandbox="allow-scripts" srcdoc="{_html.escape(raw, quote=True)}"></iframe>'
        )
    return f'<div class="raw">{raw}</div>'


def _slug(text: str, i: int) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return f"s{i}-{s[:40]}" if s else f"s{i}"


def _check_sections(sections: Sequence[dict]) -> list[dict]:
    out = []
    for i, s in enumerate(sections or []):
        if not isinstance(s, dict):
            raise TypeError(f"section {i} must be a dict, got {type(s).__name__}")
        unknown = set(s) - {"heading", "text", "table", "figure", "figures", "html", "html_height"}
        if unknown:
            raise ValueError(f"section {i} has unknown keys: {sorted(unknown)}")
        out.append(s)
    return out


# ------------------------------------------------------------------------------------------------- public


def html_report(title: str, sections: Iterable[dict], *, subtitle: str | None = None, toc: bool = True) -> str:
    """One self-contained HTML document (no network needed) with ``sections`` in order.

    Args:
        title: the page title and top heading.
        sections: dicts with ``heading`` and optional ``text``, ``table``, ``figure``/``figures``, ``html``
            (plus ``html_height`` in pixels for an embedded document).
        subtitle: a line under the title; defaults to the tool version and the generation time. The tool
            version is always in a ``<meta name="generator">`` tag and the page's footer.
        toc: add a table of contents when there are three or more sections.
    """
    sections = _check_sections(list(sections))
    figures_present = any(_section_figures(s) for s in sections)
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    tool = f"Backdoor Attention Lab {__version__}"
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="{_html.escape(tool)}">',
        f'<meta http-equiv="Content-Security-Policy" content="{_html.escape(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
    ]
    if figures_present:
        # plotly's UMD bundle registers a global Plotly when no AMD loader is present.
        parts.append(f'<script type="text/javascript">{_plotly_js()}</script>')
    parts.append("</head><body>")
    parts.append(f"<h1>{_esc(title)}</h1>")
    parts.append(f'<div class="meta">{_esc(subtitle or f"{tool} · generated {generated}")}</div>')
    if toc and len(sections) >= 3:
        links = "".join(
            f'<li><a href="#{_slug(str(s.get("heading", "")), i)}">{_esc(str(s.get("heading", "")))}</a></li>'
            for i, s in enumerate(sections)
        )
        parts.append(f"<nav><ol>{links}</ol></nav>")
    fig_index = 0
    for i, s in enumerate(sections):
        heading = str(s.get("heading", ""))
        parts.append(f'<section id="{_slug(heading, i)}">')
        if heading:
            parts.append(f"<h2>{_esc(heading)}</h2>")
        if s.get("text"):
            parts.append(markdown_to_html(str(s["text"])))
        if s.get("table") is not None:
            parts.append(table_html(s["table"]))
        for fig in _section_figures(s):
            parts.append(_figure_html(fig, fig_index))
            fig_index += 1
        if s.get("html"):
            parts.append(_raw_html(str(s["html"]), i, s.get("html_height")))
        parts.append("</section>")
    parts.append(f'<footer class="meta">{_esc(tool)} · generated {_esc(generated)}</footer>')
    parts.append("</body></html>")
    return "\n".join(parts)


def json_report(
    title: str,
    sections: Iterable[dict],
    *,
    include_figures: bool = True,
    extra: dict | None = None,
    indent: int | None = 2,
) -> str:
    """The same content as JSON: ``{"title", "generated", "tool", "tool_version", "sections": [...], **extra}``.

    Tables become lists of records; figures plotly JSON (or are left out with ``include_figures=False``);
    raw HTML is not copied (``{"html_chars": n}`` notes it was there).
    """
    sections = _check_sections(list(sections))
    out_sections = []
    for s in sections:
        item: dict[str, Any] = {"heading": str(s.get("heading", ""))}
        if s.get("text"):
            item["text"] = str(s["text"])
        if s.get("table") is not None:
            item["table"] = to_jsonable(_rows(s["table"]))
        figs = _section_figures(s)
        if figs and include_figures:
            item["figures"] = [json.loads(f.to_json()) for f in figs]
        elif figs:
            item["figures_omitted"] = len(figs)
        if s.get("html"):
            item["html_chars"] = len(str(s["html"]))
        out_sections.append(item)
    doc = {
        "title": title,
        "generated": _dt.datetime.now().isoformat(timespec="seconds"),
        "tool": "Backdoor Attention Lab",
        "tool_version": __version__,
        "sections": out_sections,
    }
    if extra:
        doc.update(to_jsonable(extra))
    return json.dumps(doc, indent=indent, allow_nan=False, default=str)
