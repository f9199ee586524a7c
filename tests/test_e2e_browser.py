"""The app in a real browser: `streamlit run app.py` on localhost with the tiny model, every page opened in
chromium with every non-localhost request blocked; the bertviz view must draw its SVG inside its iframe and the
plotly charts must render. Screenshots go to test-artifacts/app_*.png (look at them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import (  # noqa: E402
    BROWSER_MISSING_REASON,
    browser_available,
    charts_drawn,
    download,
    launch_browser,
    open_app_page,
    streamlit_app,
    wait_until_idle,
)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
pytestmark = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)

# "inspect" first: a cold deep link (the server's first request) must still get app.py's navigation
PAGES = ["inspect", "home", "tour", "model", "attack", "detect", "sanitize", "report"]
VIEWPORT = {"width": 1440, "height": 2200}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"BACKDOOR_LAB_TEST_MODEL": "tiny", "BACKDOOR_ZOO_DIR": str(tmp_path_factory.mktemp("zoo"))}
    with streamlit_app(ROOT, env, tmp_path_factory.mktemp("log") / "streamlit.log") as url:
        yield url


def _no_exceptions(page, name: str) -> None:
    exc = page.locator('[data-testid="stException"]')
    assert exc.count() == 0, f"{name}: exception shown: {exc.first.inner_text()[:800]}"


def test_every_page_offline(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, VIEWPORT)

        for name in PAGES:
            page.goto(f"{server}/{'' if name == 'home' else name}")
            wait_until_idle(page)
            _no_exceptions(page, name)
            if name == "inspect":
                _check_inspect(page)
            page.screenshot(path=str(ARTIFACTS / f"app_{name}.png"), full_page=True)
            sidebar = page.locator('[data-testid="stSidebar"]').inner_text().lower()
            assert sidebar.count("current model") == 1 and "guided tour" in sidebar, sidebar[:300]

        # a typed or bookmarked /home (Streamlit serves the default page at / only): Home, no "page not found"
        page.goto(f"{server}/home")
        wait_until_idle(page)
        assert page.get_by_text("Page not found").count() == 0
        assert page.locator("h1").first.inner_text().strip() == "Backdoor Attention Lab"

        _in_app_navigation_keeps_state(page)
        _attack_detect_sanitize(page)

        assert blocked == [], f"requests left localhost: {blocked[:5]}"
        assert not errors, f"JavaScript errors: {errors[:5]}"


def _nav(page, label: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
    wait_until_idle(page)


def _set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_until_idle(page, settle_s=0.3)


def _sidebar_text(page) -> str:
    return page.locator('[data-testid="stSidebar"]').inner_text().lower()


def _in_app_navigation_keeps_state(page) -> None:
    """Switch pages with the sidebar links (one session): the typed text and the sidebar survive."""
    _nav(page, "Inspect")
    area = page.get_by_role("textbox", name="Text", exact=True)
    area.fill("Profits at the carmaker rose in the third quarter.")
    area.press("Control+Enter")
    wait_until_idle(page)
    _nav(page, "Model")
    assert "current model" in _sidebar_text(page) and "tiny" in _sidebar_text(page)
    _nav(page, "Inspect")
    assert page.get_by_role("textbox", name="Text", exact=True).input_value().startswith("Profits at the carmaker")
    assert "tiny" in _sidebar_text(page)


def _click(page, name: str) -> None:
    page.get_by_role("button", name=name).first.click()


def _wait_text(page, text: str, timeout_s: float = 90, exact: bool = False) -> None:
    try:
        page.get_by_text(text, exact=exact).first.wait_for(timeout=timeout_s * 1000)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "app_FAILED.png"), full_page=True)
        raise
    wait_until_idle(page)


def _train_tiny_backdoor(page) -> None:
    """Attack lab: train a tiny backdoored model (40 texts, 1 epoch, 10% poison) and wait until it is current."""
    _nav(page, "Attack lab")
    _set_number(page, "Training texts", 40)
    _set_number(page, "Test texts (CACC / ASR)", 30)
    _set_number(page, "Epochs", 1)
    _set_number(page, "Poison rate (% of the training set)", 10)
    _click(page, "Train")
    _wait_text(page, "is now the current model")


def _scan_tiny_pool(page, triggered: int) -> None:
    """Detect: scan the current model with 24 clean labelled texts and a pool of 16 clean + ``triggered`` texts."""
    _nav(page, "Detect")
    _set_number(page, "Clean labelled texts (budget)", 24)
    _set_number(page, "Clean texts in the pool", 16)
    _set_number(page, "Triggered texts in the pool", triggered)
    _click(page, "Scan the model")
    _wait_text(page, "Backdoor score", exact=True)


def _open_knobs(page) -> None:
    """Unfold the Sanitize page's knobs (folded under the defaults)."""
    page.locator('[data-testid="stExpander"] summary').filter(has_text="Knobs").first.click()
    wait_until_idle(page)


def _attack_detect_sanitize(page) -> None:
    """Train a tiny backdoored model live, scan it, sanitize it; every chart must render."""
    _train_tiny_backdoor(page)
    assert page.locator(".js-plotly-plot svg.main-svg").count() >= 1  # the live training chart
    assert "badnets" in _sidebar_text(page)
    page.screenshot(path=str(ARTIFACTS / "app_attack_trained.png"), full_page=True)

    _scan_tiny_pool(page, 8)
    charts_drawn(page, 3)  # scatter, head grid, histogram
    _no_exceptions(page, "detect")
    page.screenshot(path=str(ARTIFACTS / "app_detect_result.png"), full_page=True)

    _nav(page, "Sanitize")
    _set_number(page, "Clean labelled texts (budget)", 24)
    _set_number(page, "Test texts for CACC / ASR", 24)
    _open_knobs(page)
    _set_number(page, "Epochs", 1)
    assert page.get_by_text("Knobs — 1 changed from the defaults").count() == 1
    _click(page, "Sanitize")
    _wait_text(page, "Heads changed", exact=True)  # a metric shown only with the result
    charts_drawn(page, 3)
    assert page.get_by_text("Attention safety alignment:").count() == 1  # the repair's note on its own term
    page.screenshot(path=str(ARTIFACTS / "app_sanitize_result.png"), full_page=True)
    _no_exceptions(page, "sanitize")

    _nav(page, "Report")
    assert page.get_by_text("Detection scan").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "app_report_filled.png"), full_page=True)
    # the downloaded HTML report opens offline and draws its charts
    path = ARTIFACTS / "app_report_download.html"
    download(page, "HTML report (offline)").save_as(str(path))
    page.goto(path.as_uri())  # the last step: the app page is no longer needed (its route still blocks)
    charts_drawn(page, 5)
    assert "Detection scan" in page.content()
    page.screenshot(path=str(ARTIFACTS / "app_report_download.png"), full_page=False)


def _check_inspect(page) -> None:
    # plotly charts on the first tab rendered as SVG
    charts_drawn(page, 3)
    # the bertviz head view: open its tab, wait for the iframe, and for d3's SVG inside it
    page.get_by_role("tab", name="bertviz views").click()
    wait_until_idle(page)
    frame = page.frame_locator('[data-testid="stIFrame"]').first
    frame.locator("svg").first.wait_for(timeout=60_000)
    lines = frame.locator("svg path, svg line, svg rect")
    assert lines.count() > 10, "bertviz drew no attention lines"
    page.locator('[data-testid="stIFrame"]').first.scroll_into_view_if_needed()
    page.locator('[data-testid="stIFrame"]').first.screenshot(path=str(ARTIFACTS / "app_inspect_bertviz.png"))
    page.get_by_role("tab", name="Heads on trigger").click()
    wait_until_idle(page)


def _chips(page, label: str) -> list[str]:
    box = page.locator('[data-testid="stMultiSelect"]').filter(has_text=label)
    return [t.get_attribute("title") for t in box.locator('[data-testid="stMultiSelectTagsContainer"] span[title]').all()]


def test_compare_starts_from_the_heads_switched_off_on_inspect(server):
    """Compare's help says a first visit starts from the heads switched off on the Inspect page; in a browser it
    started from L0H0 (it read the Inspect widget's own value, which is gone once the browser leaves that page)."""
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, {"width": 1400, "height": 1400})
        page.goto(f"{server}/inspect")
        wait_until_idle(page)
        page.get_by_role("tab", name="Heads off").click()
        wait_until_idle(page)
        heads = _chips(page, "Heads to switch off")
        assert len(heads) == 2, heads
        box = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Heads to switch off")
        box.get_by_role("button", name=f"Remove {heads[0]}").click()  # the user's own choice: one head
        wait_until_idle(page)
        assert _chips(page, "Heads to switch off") == heads[1:]
        _nav(page, "Compare models")
        _no_exceptions(page, "compare")
        assert _chips(page, "Heads switched off in B") == heads[1:]
        assert blocked == [] and not errors, (blocked[:3], errors[:3])
