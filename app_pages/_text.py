"""Untrusted text (class names, model names, metadata, dataset texts, triggers, file names) in the app's output.

Everything a model folder, a data file or an upload brings is untrusted: a class name such as
``<iframe srcdoc="<script>...</script>">`` must show as those characters, never become an element. Rules:

* into HTML (``st.markdown(..., unsafe_allow_html=True)``, which the app keeps for its few styled blocks):
  ``h(text)`` — ``html.escape`` with quotes;
* into Streamlit markdown (``st.markdown``/``st.caption``/``st.error``... bodies, where ``**x**``, ``[a](b)``,
  ``$x$`` and ``:red[x]`` have meaning): ``md(text)`` — backslash-escapes the characters that start markup and
  puts the text on one line; ``md_code(text)`` — a code span when the text holds no backtick, else ``md(text)``;
* into plotly figures: ``backdoor_core.figures`` escapes labels, tokens and titles itself;
* into the offline report: ``backdoor_core.report`` escapes (its markdown understands ``md``'s backslashes).

Streamlit's own widgets (dataframes, selectboxes, metrics) take plain text and need nothing. Our design.
"""

from __future__ import annotations

import html
import re
from typing import Any

# Characters that start inline markup in Streamlit's markdown (CommonMark + GFM + math + directives):
# emphasis * _ ~, code `, links/images/directives [ ], raw HTML and autolinks < >, math $, tables |, escapes \.
# An underscore inside a word (snake_case, file_name.json) cannot open or close emphasis: it stays as it is.
_MD_INLINE = re.compile(r"([\\`*\[\]<>$~|]|(?<![^\W_])_|_(?![^\W_]))")
# At the start of a line these start a block (heading, quote, list, rule, setext underline).
_MD_BLOCK_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])")


def h(value: Any) -> str:
    """``value`` as HTML text (``<`` ``>`` ``&`` and both quotes escaped)."""
    return html.escape(str(value), quote=True)


def md(value: Any, max_chars: int | None = None) -> str:
    """``value`` as literal text inside Streamlit markdown, on one line (cut to ``max_chars`` first)."""
    text = " ".join(str(value).split())  # newlines would start new blocks
    if max_chars is not None and len(text) > max_chars:
        text = text[: max(0, max_chars - 1)] + "…"
    text = _MD_INLINE.sub(r"\\\1", text)
    return _MD_BLOCK_START.sub(_escape_block_start, text, count=1)


def _escape_block_start(m: re.Match) -> str:
    mark = m.group(2)
    if mark[0].isdigit():  # "1." / "1)": escape the punctuation, a backslash before a digit is literal
        return m.group(1) + mark[:-1] + "\\" + mark[-1]
    return m.group(1) + "\\" + mark


def md_code(value: Any) -> str:
    """``value`` as a markdown code span (literal by nature), or as escaped text when it holds a backtick."""
    text = " ".join(str(value).split())
    if "`" in text or not text:
        return md(text)
    return f"`{text}`"
