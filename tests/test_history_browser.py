"""The browser's history in the app: `streamlit run app.py` (tiny model) in chromium, recording every
``history.pushState`` / ``replaceState`` the page makes.

Streamlit's front end pushes an entry for every query-string change a run makes (``st.query_params``) and one for a
page switch (once it draws the new page's navigation, without the query string it dropped). The sidebar put the
tab's ``?session=`` back with ``st.query_params`` on every page switch: a second entry whenever the page switch's own
came first (1 switch in 3; Back then stayed on the page), and the first visit of ``/`` made ``/`` and
``/?session=...`` (Back from Home stayed on Home). The app now writes the parameters that only keep state with
``history.replaceState`` (``_state.url_keeper``): one entry per page switch, none for the first visit.
A typed ``/home`` becomes ``/`` on its own entry (``app._home_link``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import (  # noqa: E402
    BROWSER_MISSING_REASON,
    address,
    browser_available,
    click_until,
    launch_browser,
    open_app_page,
    streamlit_app,
    wait_until_idle,
)
from test_tour_history_browser import RECORD_HISTORY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """One app server for the file's tests (each opens its own browser, so its own tabs and sessions): the tiny
    model, an empty zoo and sessions folder of its own."""
    tmp = tmp_path_factory.mktemp("history")
    (tmp / "zoo").mkdir()
    env = {"BACKDOOR_LAB_TEST_MODEL": "tiny", "BACKDOOR_ZOO_DIR": str(tmp / "zoo"),
           "BACKDOOR_LAB_SESSIONS_DIR": str(tmp / "sessions")}
    with streamlit_app(ROOT, env, tmp / "streamlit.log", start_timeout_s=300) as url:
        yield url


def _sid(url: str) -> list[str]:
    return parse_qs(urlsplit(url).query).get("session", [])


def test_one_history_entry_per_page_and_none_for_the_first_visit(app_url):
    url = app_url
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, {"width": 1280, "height": 1000})
        page.add_init_script(RECORD_HISTORY)
        page.goto(f"{url}/")
        wait_until_idle(page)
        sid = _sid(address(page))
        assert len(sid) == 1, address(page)  # the tab's id is in the URL...
        assert page.evaluate("window.__pushed") == [], page.evaluate("window.__pushed")  # ...without an entry
        start = page.evaluate("history.length")

        nav = page.locator('[data-testid="stSidebarNav"]')
        visited = ["/"]
        for name, path in (("Compare models", "/compare"), ("Attack lab", "/attack"), ("Sanitize", "/sanitize"),
                           ("Report", "/report")):  # the first three pushed two entries 1 time in 2 or 3
            page.evaluate("window.__pushed = []")
            nav.get_by_text(name, exact=True).click()
            page.wait_for_url(f"**{path}?*")
            wait_until_idle(page)
            pushed = page.evaluate("window.__pushed")
            assert len(pushed) == 1, (name, pushed)  # one entry for one page switch
            assert urlsplit(address(page)).path == path and _sid(address(page)) == sid, address(page)  # the id kept
            visited.append(path)
        assert page.evaluate("history.length") == start + 4

        for path in reversed(visited[:-1]):  # one Back press per page, back to the first visit
            page.go_back()
            wait_until_idle(page)
            assert urlsplit(address(page)).path == path and _sid(address(page)) == sid, (path, address(page))
        assert page.locator("h1").first.inner_text().strip() == "Backdoor Attention Lab"
        page.go_forward()
        wait_until_idle(page)
        assert urlsplit(address(page)).path == "/compare" and _sid(address(page)) == sid, address(page)

        # a typed /home (Streamlit serves Home at / only): Home at / on the same entry. st.switch_page had pushed /
        # after /home, and Back from Home went to /home, which switched to Home again: Back never left Home
        page.goto(f"{url}/home?session={sid[0]}")
        page.wait_for_url(f"{url}/?session=*")
        wait_until_idle(page)
        assert page.locator("h1").first.inner_text().strip() == "Backdoor Attention Lab"
        page.go_back()
        wait_until_idle(page)
        assert urlsplit(address(page)).path == "/compare", address(page)
        assert blocked == [] and errors == [], (blocked[:3], errors[:3])


def _set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_until_idle(page, settle_s=0.3)


def test_a_reload_before_the_old_page_let_go_keeps_the_tab(app_url):
    """A reload whose new session starts while the server still counts the old page as connected (a busy server,
    a slow close) is the same tab: same id, and its scan result back. It had been taken for the same link opened in
    a second tab: a copy of the report under a new id, without the verdict. Simulated with two pages: the second
    opens the first's URL, and the first closes once the second's first run has started. The widgets come back with
    the values they had (``_state.keep``), as the verdict does."""
    url = app_url
    with launch_browser() as browser:
        old, blocked, errors = open_app_page(browser, {"width": 1280, "height": 1000})
        old.goto(f"{url}/detect")
        wait_until_idle(old)
        _set_number(old, "Clean labelled texts (budget)", 16)
        _set_number(old, "Clean texts in the pool", 12)
        old.get_by_role("button", name="Scan the model").first.click()
        old.get_by_text("Backdoor score", exact=True).first.wait_for()
        wait_until_idle(old)
        sid = _sid(address(old))

        new, blocked2, errors2 = open_app_page(browser, {"width": 1280, "height": 1000})
        new.goto(address(old), wait_until="commit")
        new.wait_for_selector('[data-testid="stStatusWidget"], [data-testid="stMainBlockContainer"] '
                              '[data-testid="stVerticalBlock"]', timeout=60_000)  # its first run has started
        old.close()
        new.get_by_text("Backdoor score", exact=True).first.wait_for(timeout=60_000)  # the verdict came back
        wait_until_idle(new)
        assert _sid(address(new)) == sid, (address(new), sid)  # the same tab: its id, not a copy's
        # and its knobs where the user had set them (they were back at their defaults after any reload)
        assert new.get_by_label("Clean labelled texts (budget)", exact=True).input_value() == "16"
        assert new.get_by_label("Clean texts in the pool", exact=True).input_value() == "12"
        assert blocked == blocked2 == [] and errors == errors2 == [], (blocked[:3], errors[:3], errors2[:3])


def test_the_sidebar_shows_a_running_job_on_a_page_that_stops_early(app_url):
    """The sidebar's list of running jobs was drawn after the page: on a page that calls st.stop() (Detect before a
    scan, Sanitize before a repair) the run had ended, and a training started on the Attack lab vanished from the
    sidebar there (no progress, and its end handled only at the next click)."""
    url = app_url
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, {"width": 1280, "height": 1000})
        page.goto(f"{url}/attack")
        wait_until_idle(page)
        _set_number(page, "Training texts", 400)
        _set_number(page, "Epochs", 20)
        click_until(page, "Train", page.get_by_role("button", name="Cancel").first)
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Detect", exact=True).click()
        page.wait_for_url("**/detect?*")
        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("Running", exact=True).wait_for(timeout=20_000)  # the training, with its progress
        # drawn after its heading in the same run: under load the test looked between the two (count 0)
        sidebar.locator('[data-testid="stProgress"]').first.wait_for(timeout=20_000)
        assert sidebar.locator('[data-testid="stProgress"]').count() == 1
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Attack lab", exact=True).click()
        page.get_by_role("button", name="Cancel").first.click()  # its own panel again; stop it
        assert blocked == [] and errors == [], (blocked[:3], errors[:3])
