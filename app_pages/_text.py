"""Untrusted text (class names, model names, metadata, dataset texts, triggers, file names) in the app's output.

Everything a model folder, a data file or an upload brings is untrusted: a class name such as
``<iframe srcdoc="<script>...</script>">`` must show as those characters, never become an element. Rules:

* into HTML (``st.markdown(..., unsafe_allow_html=True)``, which the app keeps for its few styled blocks):
  ``h(text)`` — ``html.escape`` with quotes, and more: that HTML is still markdown (the text of a line that does
  not start with a block tag is parsed as markdown around the tags, and a blank line ends an HTML block), so
  ``h`` also writes the characters that start markup as character references (``&#42;`` for ``*``: literal in
  HTML and in markdown alike, no backslash shows), puts the text on one line, and breaks autolinks and
  shortcodes as ``md`` does;
* into Streamlit markdown (``st.markdown``/``st.caption``/``st.error``... bodies and widget labels, where
  ``**x**``, ``[a](b)``, ``$x$`` and ``:red[x]`` have meaning): ``md(text)`` — backslash-escapes the characters
  that start markup, puts the text on one line, and puts an invisible word joiner (U+2060) where Streamlit's
  markdown would otherwise make a link or an icon of plain text (``https:⁠//…``, ``www⁠.…``, ``a@⁠b.c``,
  ``:⁠material/home:``, ``:⁠smile:``: GFM autolinks and shortcodes are found in the parsed text, where a
  backslash escape is already gone); ``md_code(text)`` — a code span when the text holds no backtick, else
  ``md(text)``; all three show Unicode's bidirectional controls as ``‹U+202E›`` (``report.show_bidi_controls``:
  an invisible one reordered the rest of a name, "evil" shown as "live");
* into plotly figures: ``backdoor_core.figures`` escapes labels, tokens and titles itself;
* into the offline report: ``backdoor_core.report`` escapes (its markdown understands ``md``'s backslashes).

Streamlit's own widgets (dataframes, selectboxes, metrics) take plain text and need nothing. Our design.
"""

from __future__ import annotations

import re
from typing import Any

from backdoor_core.report import show_bidi_controls

# Characters that start inline markup in Streamlit's markdown (CommonMark + GFM + math + directives):
# emphasis * _ ~, code `, links/images/directives [ ], raw HTML and autolinks < >, math $, tables |, escapes \.
# An underscore inside a word (snake_case, file_name.json) cannot open or close emphasis: it stays as it is.
_MD_INLINE = re.compile(r"([\\`*\[\]<>$~|]|(?<![^\W_])_|_(?![^\W_]))")
# At the start of a line these start a block (heading, quote, list, rule, setext underline).
_MD_BLOCK_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])")


# An invisible word joiner where Streamlit's markdown would make a link or an icon of plain text: after a colon
# that is followed by more text (``https://``, ``mailto:``, ``:material/home:``, ``:smile:``, ``:red[``), between
# ``www`` and its dot, after an ``@`` (e-mail autolinks). GFM autolinks and the shortcodes are found in the parsed
# text nodes, after backslash escapes and character references are resolved, so only a character in between
# stops them; U+2060 is not drawn and does not break the line.
JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?<=:)(?=\S)|(?<=www)(?=\.)|(?<=@)(?=\w)", re.IGNORECASE)
# ``h``: HTML's five, and the characters that start inline markup, as character references
_HTML_MD = {**{ord(c): f"&#{ord(c)};" for c in "\\`*_[]~|$!"},
            ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord('"'): "&quot;", ord("'"): "&#x27;"}
_H_BLOCK_START = re.compile(r"^( ?)([#>+=-]|\d+[.)])")


def unlink(text: str) -> str:
    """``text`` with a word joiner (``JOINER``) where Streamlit's markdown would autolink it or draw a shortcode."""
    return _AUTOLINK.sub(JOINER, text)


def h(value: Any) -> str:
    """``value`` as HTML text that markdown leaves alone, for ``st.markdown(..., unsafe_allow_html=True)``.

    ``<`` ``>`` ``&`` and both quotes escaped as ``html.escape`` does; the characters that start inline markup
    (``\\ ` * _ [ ] ~ | $ !``) as character references, which markdown shows literally (a backslash would show
    inside an HTML block); whitespace runs (newlines too: a blank line ends an HTML block, and markdown parses
    what follows) as one space, kept at the ends so that pieces can be joined; autolinks and shortcodes broken
    (``unlink``); a heading/list/quote mark at the start written as a reference too.
    """
    text = re.sub(r"\s+", " ", show_bidi_controls(str(value))).translate(_HTML_MD)
    text = _H_BLOCK_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + f"&#{ord(m.group(2)[-1])};", text, count=1)
    return unlink(text)


def md(value: Any, max_chars: int | None = None) -> str:
    """``value`` as literal text inside Streamlit markdown, on one line (cut to ``max_chars`` first); no link,
    image, math, icon or emoji comes of it (``unlink``)."""
    text = " ".join(show_bidi_controls(str(value)).split())  # newlines would start new blocks
    if max_chars is not None and len(text) > max_chars:
        text = text[: max(0, max_chars - 1)] + "…"
    text = _MD_INLINE.sub(r"\\\1", text)
    return unlink(_MD_BLOCK_START.sub(_escape_block_start, text, count=1))


def _escape_block_start(m: re.Match) -> str:
    mark = m.group(2)
    if mark[0].isdigit():  # "1." / "1)": escape the punctuation, a backslash before a digit is literal
        return m.group(1) + mark[:-1] + "\\" + mark[-1]
    return m.group(1) + "\\" + mark


_CITATION = re.compile(r"((?:docs/[\w-]+\.md|README),? )\\\*([^*\\\n]{1,80})\\\*")


def md_note(value: Any) -> str:
    """A core note as literal text (``md``), with its citations (a docs file or README, then a section's name
    between asterisks) in italics again as the core wrote them: escaped, the asterisks showed."""
    return _CITATION.sub(r"\1*\2*", md(value))


def md_code(value: Any) -> str:
    """``value`` as a markdown code span (literal by nature), or as escaped text when it holds a backtick."""
    text = " ".join(show_bidi_controls(str(value)).split())
    if "`" in text or not text:
        return md(text)
    return f"`{text}`"


def cut_middle(value: Any, max_chars: int) -> str:
    """``value`` on one line, cut in its middle to ``max_chars`` (with "…") where longer: the start and the end of
    a long model name tell two models apart ("… without 2 heads", "…-alignment"), which a cut at the end hides.
    Plain text: pass it through ``md`` / ``h`` like any other."""
    text = " ".join(str(value).split())
    if len(text) <= max_chars:
        return text
    head = (max_chars - 1) // 2
    return text[:head] + "…" + text[len(text) - (max_chars - 1 - head):]
