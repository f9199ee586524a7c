"""Backdoor Attention Lab — the Streamlit entry point: page setup, navigation and the sidebar.

Pages live in ``app_pages/`` (one thin file each); shared plumbing in ``app_pages/_*.py`` (gathered by ``_common``);
all model logic in ``backdoor_core``. The folder is deliberately NOT called ``pages/``: Streamlit still
auto-discovers a ``pages/`` folder, and a cold deep link such as ``/inspect`` (first request after a server start)
then runs ``pages/inspect.py`` on its own, without this file's navigation, sidebar and styles.

Run: ``streamlit run app.py`` (``.streamlit/config.toml`` sets headless and ``fileWatcherType = "none"``).
``BACKDOOR_LAB_TEST_MODEL=tiny`` swaps in a tiny random model for tests.
"""

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app_pages import _common as ui  # noqa: E402
from app_pages._state import on_server, url_keeper  # noqa: E402

st.set_page_config(page_title="Backdoor Attention Lab", page_icon=str(ROOT / "assets" / "favicon.png"), layout="wide")

HOME_PATH = "welcome"
HOME = st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True, url_path=HOME_PATH)


_TO_HOME_JS = """<script>(() => {
  const url = new URL(window.location.href);
  url.pathname = url.pathname.replace(/\\/home\\/?$/, "/");
  window.history.replaceState(window.history.state, "", url.toString());
  window.dispatchEvent(new PopStateEvent("popstate", {state: window.history.state}));
})();</script>"""


def _home_link() -> None:
    """``/home`` (a bookmarked or typed link): Streamlit serves the default page at ``/`` only and answers its own
    path with "page not found", so this hidden page sends the visitor to Home. Not with ``st.switch_page``: that
    pushed ``/`` after ``/home``, and Back from Home went to ``/home``, which switched to Home again (Back was stuck
    there). The browser turns ``/home`` into ``/`` in place (replaceState) and tells Streamlit as Back does (a
    popstate): Home runs on the same history entry. Outside a browser (AppTest) a plain switch."""
    if not on_server():
        st.switch_page(HOME)
    st.html(_TO_HOME_JS, unsafe_allow_javascript=True)
    st.page_link(HOME, label="Go to Home")  # shown for a moment (or where scripts do not run)


PAGES = {
    "Start": [
        HOME,
        st.Page(_home_link, title="Home", url_path="home", visibility="hidden"),
        st.Page("app_pages/tour.py", title="Guided tour", icon=":material/explore:", url_path="tour"),
    ],
    "Lab": [
        st.Page("app_pages/model.py", title="Model", icon=":material/deployed_code:", url_path="model"),
        st.Page("app_pages/inspect.py", title="Inspect", icon=":material/search:", url_path="inspect"),
        st.Page("app_pages/compare.py", title="Compare models", icon=":material/compare:", url_path="compare"),
        st.Page("app_pages/attack.py", title="Attack lab", icon=":material/science:", url_path="attack"),
        st.Page("app_pages/detect.py", title="Detect", icon=":material/radar:", url_path="detect"),
        st.Page("app_pages/sanitize.py", title="Sanitize", icon=":material/healing:", url_path="sanitize"),
        st.Page("app_pages/report.py", title="Report", icon=":material/description:", url_path="report"),
    ],
}

page = st.navigation(PAGES)
ui.inject_css()
jobs_slot = ui.sidebar(page.url_path)
# the session id and presenter mode in the URL without a history entry of their own; before the page (its st.stop()
# ends the run)
url_keeper([f"/{page.url_path}"] if page.url_path else ["/", f"/{HOME_PATH}"])
ui.sidebar_jobs(jobs_slot, page.url_path)  # before the page too: a page's st.stop() ends the run
page.run()
