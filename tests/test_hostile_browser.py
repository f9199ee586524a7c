"""Issue #11 item 1 in a real browser: the app on a model, a dataset and a zoo whose class names, model name,
metadata and texts are HTML/script payloads (tests/hostile.py). Every page is visited in one session (Home, the
guided tour's seven steps, Model, Inspect with the bertviz view, Attack lab with its poisoned-text peek, Detect with
a scan, Sanitize, Report, and the downloaded offline report): no dialog may open, no element or event-handler
attribute from a payload may exist in any frame, and the payloads must show as text. Screenshots go to
test-artifacts/hostile_*.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import (  # noqa: E402
    BROWSER_MISSING_REASON,
    block_network,
    browser_available,
    download,
    launch_browser,
    streamlit_app,
)
from hostile import IFRAME, IMG, make_hostile_world  # noqa: E402
from test_e2e_browser import wait_until_idle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
pytestmark = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)
VIEWPORT = {"width": 1440, "height": 1800}

# Elements and attributes a payload would create; run in every frame of the page.
FIND_PAYLOAD_JS = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      const v = a.value || '';
      if (a.name.startsWith('on')) bad.push(el.tagName + ' ' + a.name + '=' + v.slice(0, 60));
      if (/^(href|src|xlink:href|action|formaction)$/.test(a.name) && /^\\s*javascript:/i.test(v))
        bad.push(el.tagName + ' ' + a.name + '=' + v.slice(0, 60));
    }
    if (el.tagName === 'IMG' && el.getAttribute('src') === 'x') bad.push('img src=x');
    if (el.tagName === 'IFRAME' && (el.getAttribute('srcdoc') || '').includes('parent.location')) bad.push('iframe');
    if (el.tagName === 'SCRIPT' && /alert\\(/.test(el.textContent) && !/bertviz|PYTHON_PARAMS|params/.test(el.textContent)
        && el.textContent.length < 2000) bad.push('script ' + el.textContent.slice(0, 60));
  }
  return bad;
}"""


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    world = make_hostile_world(tmp_path_factory.mktemp("hostile"))
    env = {
        "BACKDOOR_LAB_TEST_MODEL": str(world["model"]),
        "BACKDOOR_LAB_TEST_DATA": str(world["data"]),
        "BACKDOOR_ZOO_DIR": str(world["zoo"]),
    }
    with streamlit_app(ROOT, env, tmp_path_factory.mktemp("log") / "streamlit.log") as url:
        yield url


def _check(page, where: str, dialogs: list[str]) -> None:
    """No dialog so far, no exception box, and no payload element in any frame."""
    assert not dialogs, f"{where}: a dialog opened: {dialogs}"
    exc = page.locator('[data-testid="stException"]')
    assert exc.count() == 0, f"{where}: exception shown: {exc.first.inner_text()[:600]}"
    for frame in page.frames:
        try:
            bad = frame.evaluate(FIND_PAYLOAD_JS)
        except Exception as err:  # a frame that navigated away meanwhile
            if "detached" in str(err).lower() or "navigat" in str(err).lower():
                continue
            raise
        assert not bad, f"{where}: payload elements in frame {frame.url[:80]}: {bad[:5]}"


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"hostile_{name}.png"), full_page=True)


def _nav(page, label: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
    wait_until_idle(page)


def _open_expanders(page) -> None:
    for summary in page.locator('[data-testid="stExpander"] summary').all():
        summary.click()
    wait_until_idle(page, settle_s=0.3)


def test_hostile_names_labels_metadata_and_texts_run_no_script(hostile_server):
    ARTIFACTS.mkdir(exist_ok=True)
    with launch_browser() as browser:
        page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
        blocked = block_network(page)
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.set_default_timeout(90_000)

        page.goto(hostile_server)
        wait_until_idle(page)
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        assert IFRAME in sidebar and IMG in sidebar, sidebar[:500]  # shown as text, not dropped
        _check(page, "home", dialogs)
        _shot(page, "home")

        _nav(page, "Guided tour")
        for step in range(7):
            _check(page, f"tour step {step + 1}", dialogs)
            if step == 2:
                _shot(page, "tour_step3")
            if step < 6:
                page.get_by_role("button", name="Next").click()
                wait_until_idle(page)

        _nav(page, "Model")
        _open_expanders(page)
        _check(page, "model", dialogs)
        _shot(page, "model")

        _nav(page, "Inspect")
        page.wait_for_selector(".js-plotly-plot svg.main-svg")
        _check(page, "inspect", dialogs)
        _shot(page, "inspect")
        page.get_by_role("tab", name="bertviz views").click()
        wait_until_idle(page)
        page.frame_locator('[data-testid="stIFrame"]').first.locator("svg").first.wait_for()
        _check(page, "inspect bertviz", dialogs)

        _nav(page, "Attack lab")
        page.get_by_text("What a poisoned training text looks like").click()
        wait_until_idle(page)
        peek = page.locator('[data-testid="stExpander"]').first.inner_text()
        assert IFRAME in peek, peek[:500]  # the class name the old code ran as HTML
        _check(page, "attack", dialogs)
        _shot(page, "attack")

        _nav(page, "Detect")
        page.get_by_role("button", name="Scan the model").click()
        page.get_by_text("Backdoor score", exact=True).first.wait_for(timeout=120_000)
        wait_until_idle(page)
        page.wait_for_selector(".js-plotly-plot svg.main-svg")
        _check(page, "detect", dialogs)
        _shot(page, "detect")

        _nav(page, "Sanitize")
        _check(page, "sanitize", dialogs)

        _nav(page, "Report")
        _open_expanders(page)
        _check(page, "report", dialogs)
        _shot(page, "report")
        path = ARTIFACTS / "hostile_report.html"
        download(page, "HTML report (offline)").save_as(str(path))
        page.goto(path.as_uri())
        page.wait_for_selector(".js-plotly-plot svg.main-svg", timeout=60_000)
        time.sleep(0.5)
        _check(page, "downloaded report", dialogs)
        assert IFRAME in page.locator("body").inner_text()
        page.screenshot(path=str(ARTIFACTS / "hostile_report_download.png"), full_page=False)

        assert blocked == [], f"requests left localhost: {blocked[:5]}"
        assert not dialogs
