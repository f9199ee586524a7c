"""The app's style sheets reach the browser whole.

``ui.inject_css`` sends ``assets/style.css`` (and ``presenter.css`` in presenter mode) through ``st.html``, whose
sanitizer (DOMPurify) removes a ``<style>`` element whose text holds a tag-like run such as ``<p>``: every rule in
it is then lost, with no error (a comment naming a paragraph tag switched presenter mode off entirely).
``tests/test_layout_browser.py`` checks in chromium that presenter mode's sizes apply.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TAG_LIKE = re.compile(r"<[/\w!]")


@pytest.mark.parametrize("name", ["style.css", "presenter.css"])
def test_style_sheets_hold_nothing_the_html_sanitizer_drops(name):
    text = (ASSETS / name).read_text(encoding="utf-8")
    found = [(text.count("\n", 0, m.start()) + 1, text[m.start():m.start() + 12]) for m in TAG_LIKE.finditer(text)]
    assert not found, f"assets/{name}: tag-like text (line, text) {found}; st.html would drop the whole sheet"
