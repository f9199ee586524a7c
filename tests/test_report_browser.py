"""The exported report in a real browser, offline: hostile names run nothing, and a very long one keeps the page
at the window's width (a 3000-character name made it 37,000 px wide)."""

from __future__ import annotations

import sys
from pathlib import Path

import plotly.graph_objects as go
import pytest

from backdoor_core.report import html_report, show_bidi_controls
from backdoor_core.session import LabSession

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import BROWSER_MISSING_REASON, block_network, browser_available, launch_browser  # noqa: E402

pytestmark = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)

EVIL = "</script><script>alert(1)</script>"


def test_a_hostile_report_runs_nothing_and_keeps_the_page_width(tmp_path):
    long = "x" * 3000
    fig = go.Figure(go.Bar(x=[EVIL, long[:200], "\u202eevil\u202c مرحبا"], y=[1, 2, 3]))
    fig.update_layout(title=EVIL)
    lab = LabSession()
    lab.record("scan", "<script>alert(1)</script>", model="<img src=x onerror=alert(2)>", text="**bold** " + EVIL,
               table=[{"cell": EVIL, "long": long}], figures=[fig])
    lab.record("scan", long, text="a name with no space")
    lab.record("inspect", "**bold** \u202eevil\u202c שלום", figures=[fig])
    sections = lab.sections()
    path = tmp_path / "report.html"
    path.write_text(html_report(EVIL, sections), encoding="utf-8")
    with launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        blocked = block_network(page, allow_hosts=())
        dialogs: list[str] = []
        errors: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot svg.main-svg').length >= 2",
                               timeout=30_000)
        assert dialogs == [] and errors == [] and blocked == []
        # shown as written, but for the bidirectional controls, which show as ‹U+202E› (report.show_bidi_controls)
        assert page.locator("h2").all_inner_texts() == [show_bidi_controls(s["heading"]) for s in sections]
        assert page.locator("h1").inner_text() == EVIL and page.locator("table").count() == 1
        assert page.evaluate("document.documentElement.scrollWidth") <= 1200
