"""The browser's Back button after opening the guided tour: `streamlit run app.py` (tiny model) in chromium.

Streamlit's front end pushes a history entry for every query-string change the app makes (``st.query_params``),
except in a run that a Back/Forward press started. The tour wrote ``?step=1`` on arrival, so the tour had two
entries and one Back press went from the second to the first: still the tour. It now writes ``step`` only when the
URL names another step (none = step 1).

A page switch pushed two entries 1 time in 3, independent of the tour: Streamlit drops the query string on a page
switch and the sidebar put ``?session=`` back with ``st.query_params``, a second entry whenever the page switch's own
came first. The session id (and the step, when the sidebar brings the user back to a tour left at another step) is
now written with ``history.replaceState`` (``_state.url_keeper``): one entry, always (``test_history_browser``).

Inside the tour, Back and Forward move between its steps: the page follows a ``?step`` it did not write, and takes
a URL without one on a run that is not a page switch as step 1 (a page switch drops the query string: it keeps the
step).
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import (  # noqa: E402
    BROWSER_MISSING_REASON,
    browser_available,
    launch_browser,
    open_app_page,
    streamlit_app,
    wait_until_idle,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)

# every history.pushState / replaceState the page makes, in window.__pushed / window.__replaced
RECORD_HISTORY = """(() => {
  window.__pushed = []; window.__replaced = [];
  const push = history.pushState.bind(history), replace = history.replaceState.bind(history);
  history.pushState = (s, t, u) => { window.__pushed.push(String(u)); return push(s, t, u); };
  history.replaceState = (s, t, u) => { window.__replaced.push(String(u)); return replace(s, t, u); };
})()"""


def test_one_back_press_leaves_the_tour(tmp_path):
    env = {"BACKDOOR_LAB_TEST_MODEL": "tiny", "BACKDOOR_ZOO_DIR": str(tmp_path / "zoo")}
    (tmp_path / "zoo").mkdir()
    with streamlit_app(ROOT, env, tmp_path / "streamlit.log", start_timeout_s=300) as url, \
            launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, {"width": 1280, "height": 1000})
        page.add_init_script(RECORD_HISTORY)
        page.goto(f"{url}/")
        wait_until_idle(page)
        home = page.url
        assert urlsplit(home).path == "/" and "session" in parse_qs(urlsplit(home).query)
        before = len(page.evaluate("window.__pushed"))

        page.locator('[data-testid="stSidebarNav"]').get_by_text("Guided tour", exact=True).click()
        page.get_by_text("Step 1 of 7").first.wait_for()
        wait_until_idle(page)
        pushed = page.evaluate("window.__pushed")[before:]
        assert pushed and not [u for u in pushed if "step=" in u], pushed  # the tour added no entry of its own
        assert urlsplit(page.url).path == "/tour" and "step" not in parse_qs(urlsplit(page.url).query), page.url
        assert len(pushed) == 1, pushed  # the page switch: one entry

        page.go_back()  # one Back press: the page before
        wait_until_idle(page)
        assert page.url == home, (page.url, pushed)
        assert page.locator("h1").first.inner_text().strip() == "Backdoor Attention Lab"

        page.go_forward()  # and Next still writes the step (a reload mid-lesson opens it again)
        page.get_by_text("Step 1 of 7").first.wait_for()
        wait_until_idle(page)
        page.locator('[data-testid="stMainBlockContainer"]').get_by_role("button", name="Next").click()
        page.get_by_text("Step 2 of 7").first.wait_for()
        wait_until_idle(page)
        assert parse_qs(urlsplit(page.url).query).get("step") == ["2"], page.url

        page.go_back()  # Back after Next: the step before (it had stayed on step 2, written into the URL again)
        page.get_by_text("Step 1 of 7").first.wait_for()
        wait_until_idle(page)
        assert "step" not in parse_qs(urlsplit(page.url).query), page.url
        page.go_forward()  # and Forward: the step after
        page.get_by_text("Step 2 of 7").first.wait_for()
        wait_until_idle(page)
        assert parse_qs(urlsplit(page.url).query).get("step") == ["2"], page.url
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Model", exact=True).click()
        wait_until_idle(page)  # away and back by the sidebar (no ?step in its link): the tour keeps its step
        model = page.url
        before = len(page.evaluate("window.__pushed"))
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Guided tour", exact=True).click()
        page.get_by_text("Step 2 of 7").first.wait_for()
        wait_until_idle(page)
        assert page.get_by_text("Step 2 of 7").count() >= 1
        page.wait_for_url("**step=2*")  # written into the page switch's entry, not an entry of its own (it was)
        assert len(page.evaluate("window.__pushed")[before:]) == 1, page.evaluate("window.__pushed")[before:]
        page.go_back()
        wait_until_idle(page)
        assert page.url == model, page.url
        assert blocked == [] and errors == [], (blocked[:3], errors[:3])
