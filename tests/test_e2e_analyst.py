"""The analyst views (issue 14) in a real browser, offline, with the tiny model: switching heads off and token
saliency in Inspect, the Compare models page (also in presenter mode), candidate triggers and the [CLS] PCA in
Detect, the before/after PCA in Sanitize. Screenshots go to test-artifacts/analyst_*.png (look at them)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import (  # noqa: E402
    BROWSER_MISSING_REASON,
    browser_available,
    charts_drawn,
    launch_browser,
    open_app_page,
)
from test_e2e_browser import (  # noqa: E402,F401  (server is a fixture)
    ARTIFACTS,
    VIEWPORT,
    _click,
    _open_knobs,
    _nav,
    _no_exceptions,
    _scan_tiny_pool,
    _set_number,
    _train_tiny_backdoor,
    _wait_text,
    server,
    wait_until_idle,
)

pytestmark = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)


def _visible_panel(page):
    return page.locator('[data-testid="stTabs"] [role="tabpanel"]:not([hidden])').first


def _shot_chart(page, index: int, name: str) -> None:
    """Screenshot one chart (``index`` into the page's plotly charts, negative from the end)."""
    charts = page.locator(".js-plotly-plot")
    chart = charts.nth(charts.count() + index if index < 0 else index)
    chart.scroll_into_view_if_needed()
    chart.screenshot(path=str(ARTIFACTS / name))


def _toggle(page, label: str, tries: int = 3) -> None:
    """Flip the ``st.toggle`` named ``label``; a click that lands while the app reruns can be lost, so check that
    the switch moved and click again if not (as a user would)."""
    switch = page.locator("label").filter(has_text=label).locator('input[type="checkbox"]').first
    before = switch.is_checked()
    for _ in range(tries):
        page.get_by_text(label, exact=True).first.click()
        wait_until_idle(page)
        if switch.is_checked() != before:
            return
    raise AssertionError(f"the toggle {label!r} did not switch after {tries} clicks")


def test_analyst_views_offline(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, VIEWPORT)

        page.goto(f"{server}/inspect")
        wait_until_idle(page)
        for tab, shot, minimum in (("Heads off", "analyst_inspect_ablation.png", 2),
                                   ("Saliency", "analyst_inspect_saliency.png", 1)):
            page.get_by_role("tab", name=tab).click()
            wait_until_idle(page)
            panel = _visible_panel(page)
            charts_drawn(panel, minimum)
            _no_exceptions(page, tab)
            panel.screenshot(path=str(ARTIFACTS / shot))

        _nav(page, "Compare models")
        charts_drawn(page.locator('[data-testid="stMainBlockContainer"]'), 5)
        _no_exceptions(page, "compare")
        page.screenshot(path=str(ARTIFACTS / "analyst_compare.png"), full_page=True)

        # a tiny backdoored model, scanned: candidate triggers and the [CLS] projection
        _train_tiny_backdoor(page)
        _scan_tiny_pool(page, 8)
        _toggle(page, "Show the [CLS] representations (PCA)")
        main = page.locator('[data-testid="stMainBlockContainer"]')
        charts_drawn(main, 5)  # scatter, grid, histogram, candidate bars or none, PCA
        assert page.get_by_text("Candidate triggers", exact=True).count() >= 1
        _no_exceptions(page, "detect")
        page.screenshot(path=str(ARTIFACTS / "analyst_detect.png"), full_page=True)
        _shot_chart(page, -2, "analyst_detect_candidates.png")  # the candidate-trigger bars
        _shot_chart(page, -1, "analyst_detect_pca.png")

        _nav(page, "Sanitize")
        _set_number(page, "Clean labelled texts (budget)", 24)
        _set_number(page, "Test texts for CACC / ASR", 24)
        _open_knobs(page)
        _set_number(page, "Epochs", 1)
        _click(page, "Sanitize")
        _wait_text(page, "Heads changed", exact=True)
        # the page says what the repair decided beyond the heads (defenses.repair_notes)
        note = page.get_by_text(re.compile(r"^(Head-only repair|Feed-forward blocks of layers)"))
        assert note.count() >= 1
        note.first.scroll_into_view_if_needed()
        note.first.screenshot(path=str(ARTIFACTS / "analyst_sanitize_note.png"))
        _toggle(page, "Show the [CLS] representations (PCA)")
        charts_drawn(page.locator('[data-testid="stMainBlockContainer"]'), 4)
        _no_exceptions(page, "sanitize")
        _shot_chart(page, -1, "analyst_sanitize_pca.png")

        # presenter mode: the comparison still draws (before vs after the repair is now an option)
        page.locator('[data-testid="stSidebar"]').get_by_text("Presenter mode (larger text)").click()
        wait_until_idle(page)
        _nav(page, "Compare models")
        charts_drawn(page.locator('[data-testid="stMainBlockContainer"]'), 5)
        _no_exceptions(page, "compare (presenter)")
        page.screenshot(path=str(ARTIFACTS / "analyst_compare_presenter.png"), full_page=True)

        assert blocked == [], f"requests left localhost: {blocked[:5]}"
        assert not errors, f"JavaScript errors: {errors[:5]}"
