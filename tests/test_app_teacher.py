"""A teacher's walk on a 1024-px projector (presenter mode) and a speaker's live demo: the Attack lab's notes say
what its chart shows, its tiles are not cut; Home and the tour's tables fit the projector (browser checks with the
tiny model; every request off localhost blocked)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_pages import errors, goto, new_app, wait_job  # noqa: E402,F401 - the fixture is test_app_pages'
from test_app_pages import _test_env  # noqa: E402,F401 - BACKDOOR_LAB_TEST_MODEL=tiny, a private zoo folder


def test_the_tal_note_says_what_the_tal_line_shows():
    """At a low poison rate most batches hold no poisoned text and TAL's term is 0 there: the chart's tal line sits
    at 0 with dips. The note counts the dips instead of saying the total "falls toward −α" (it never did)."""
    at = goto(new_app(), "attack")
    at.number_input(key="attack.n_train").set_value(96)  # 6 steps, 3 poisoned texts: some batches hold none
    at.number_input(key="attack.n_test").set_value(30)
    at.number_input(key="attack.epochs").set_value(1)
    at.number_input(key="attack.rate").set_value(3.0)
    at.select_slider(key="attack.max_len").set_value(32)
    at.run()
    assert at.toggle(key="attack.tal").value
    at.button(key="attack.train").click().run()
    job = wait_job(at, "attack")
    assert job.status == "done", job.snapshot().traceback
    at.run()
    steps = [e for e in job.snapshot().events if "losses" in e and not e.get("metrics")]  # one event a step
    assert len(steps) == 6, [e.get("step") for e in steps]
    tal = [e["losses"]["tal"] for e in steps]
    dips = sum(1 for v in tal if v < 0)
    assert 0 < dips < len(tal), tal  # the situation the note must describe
    note = [c.value for c in at.caption if "below zero with TAL" in c.value]
    assert note, [c.value for c in at.caption]
    assert f"{dips} of the {len(tal)} steps so far; on the others it is 0" in note[0], note[0]
    assert "falls toward −α" not in note[0]


# ------------------------------------------------------------------------------------------------ in a browser

from browser import BROWSER_MISSING_REASON, browser_available, launch_browser, open_app_page, streamlit_app  # noqa: E402
from browser import address, click_until, lan_address, wait_until_idle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
PROJECTOR = {"width": 1024, "height": 768}
browser_only = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)

# a dataframe wider than its box scrolls sideways: the columns at the right are out of sight
TABLES_SCROLL_JS = """() => [...document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')]
  .filter(s => s.scrollWidth > s.clientWidth + 1).map(s => `${s.scrollWidth} px in ${s.clientWidth}`)"""
# a metric value ellipsized by its tile ("126 / …")
METRICS_CUT_JS = """() => [...document.querySelectorAll('[data-testid="stMetricValue"], [data-testid="stMetricValue"] div')]
  .filter(v => v.getBoundingClientRect().width > 0 && v.scrollWidth > v.clientWidth + 1)
  .map(v => `"${v.textContent.slice(0, 30)}" ${v.scrollWidth} px in ${v.clientWidth}`)"""


@pytest.fixture(scope="module")
def teacher_server(tmp_path_factory):
    env = {"BACKDOOR_LAB_TEST_MODEL": "tiny", "BACKDOOR_ZOO_DIR": str(tmp_path_factory.mktemp("zoo")),
           "BACKDOOR_LAB_SESSIONS_DIR": str(tmp_path_factory.mktemp("sessions"))}
    with streamlit_app(ROOT, env, tmp_path_factory.mktemp("log") / "streamlit.log", start_timeout_s=300,
                       address="0.0.0.0") as url:  # on every interface: the students' browsers reach it too
        yield url


def _presenter(page) -> None:
    page.locator('[data-testid="stSidebar"]').get_by_text("Presenter mode (larger text)").click()
    wait_until_idle(page)


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"teacher_{name}.png"), full_page=True)


@browser_only
def test_home_stacks_its_columns_on_a_projector(teacher_server):
    """Presenter mode at 1024 px: side by side, Home's two columns were 220 px each (three words a line)."""
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, PROJECTOR)
        page.goto(f"{teacher_server}/")
        wait_until_idle(page)
        _presenter(page)
        widths = page.evaluate("""() => {
            const h = [...document.querySelectorAll('h4')].find(e => e.innerText.includes('Where to start'));
            const main = document.querySelector('[data-testid="stMainBlockContainer"] [data-testid="stVerticalBlock"]');
            return [h.closest('[data-testid="stColumn"]').getBoundingClientRect().width,
                    main.getBoundingClientRect().width]; }""")
        _shot(page, "home_1024_presenter")
        assert widths[0] >= 0.9 * widths[1], f"'Where to start' column {widths[0]:.0f} px of {widths[1]:.0f}"
        assert blocked == [] and errors == [], (blocked[:3], errors[:3])


@browser_only
def test_tour_tables_fit_a_projector(teacher_server):
    """Presenter mode at 1024 px: step 2's dose table and step 7's benchmark table show every column (the ASR
    column of step 2 and both CACC columns of step 7 were out of sight at the right)."""
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, PROJECTOR)
        page.goto(f"{teacher_server}/tour?step=2")
        wait_until_idle(page)
        _presenter(page)
        for step in (2, 7):
            page.goto(f"{teacher_server}/tour?step={step}")  # the URL names the step (a reload keeps it)
            wait_until_idle(page)
            page.get_by_text(f"Step {step} of 7").first.wait_for()
            _presenter(page)  # a new page load is a new session
            page.locator('[data-testid="stDataFrame"]').first.wait_for()
            page.wait_for_timeout(500)
            _shot(page, f"tour_step{step}_1024_presenter")
            assert page.evaluate(TABLES_SCROLL_JS) == [], f"step {step}: a table scrolls sideways"
        assert blocked == [] and errors == [], (blocked[:3], errors[:3])


@browser_only
def test_attack_lab_tiles_are_not_cut_at_1024_px(teacher_server):
    """A run of 196 steps: four fixed tile columns cut "196 / 196" to "196 / …" in a 1024-px window. (At 32 tokens,
    the shortest the slider offers: the steps' count is what the tiles show, not their length.)"""
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, PROJECTOR)
        page.goto(f"{teacher_server}/attack")
        wait_until_idle(page)
        thumb = page.locator('[data-testid="stSlider"]').filter(has_text="Max tokens").get_by_role("slider")
        thumb.focus()
        thumb.press("Home")  # the first option
        wait_until_idle(page, settle_s=0.3)
        assert thumb.get_attribute("aria-valuetext") == "32", thumb.get_attribute("aria-valuetext")
        for label, value in (("Training texts", 1558), ("Test texts (CACC / ASR)", 30), ("Epochs", 2)):
            box = page.get_by_label(label, exact=True)
            box.fill(str(value))
            box.press("Enter")
            wait_until_idle(page, settle_s=0.3)
        click_until(page, "Train", page.get_by_role("button", name="Cancel", exact=True).first)
        page.get_by_text("is now the current model").first.wait_for(timeout=240_000)
        wait_until_idle(page)
        _shot(page, "attack_1024")
        steps = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text("Step", exact=True)).first
        assert steps.locator('[data-testid="stMetricValue"]').inner_text().strip() == "196 / 196"
        assert page.evaluate(METRICS_CUT_JS) == []
        assert blocked == [] and errors == [], (blocked[:3], errors[:3])


@browser_only
def test_a_students_browser_opens_no_folder_of_the_teachers_machine(teacher_server):
    """A teacher runs the app on a laptop and the class opens it over the network: a student's browser (another
    machine; here this machine's network address, not loopback) gets no path box and no pickle opt-in on the Model
    page, and is told why; the teacher's own browser (localhost) keeps both."""
    lan = lan_address()
    if lan is None:
        pytest.skip("this machine has no network address but loopback")
    student_url = teacher_server.replace("127.0.0.1", lan)
    with launch_browser() as browser:
        for url, student in ((student_url, True), (teacher_server, False)):
            page, blocked, errors = open_app_page(browser, PROJECTOR, allow_hosts=("127.0.0.1", "localhost", lan))
            page.goto(f"{url}/model")
            wait_until_idle(page)
            main = page.locator('[data-testid="stMainBlockContainer"]')
            main.get_by_text("Local folder", exact=True).click()
            wait_until_idle(page)
            refused = main.get_by_text("Loading a folder of the server is not open here")
            path_box = page.get_by_label("Model folder (holds config.json and model.safetensors)")
            assert (refused.count(), path_box.count()) == ((1, 0) if student else (0, 1)), (url, page.url)
            main.get_by_text("Upload .zip", exact=True).click()
            wait_until_idle(page)
            assert main.get_by_text("Allow pickled weights", exact=False).count() == (0 if student else 1), url
            if student:
                _shot(page, "student_model_page")
            assert blocked == [] and errors == [], (url, blocked[:3], errors[:3])
            page.close()


def test_a_trained_model_comes_back_after_a_reload():
    """The speaker's model took minutes to train: a reload (a new Streamlit session with the page's link, which
    names this tab's session) brings it back as the current model, with its origin; the page says so next to the
    save panel. A new tab (no session in its link) starts without it (a reload had shown the default model again
    with no word of the trained one)."""
    from streamlit.testing.v1 import AppTest

    from test_app_pages import APP, _small_attack

    at = goto(new_app(), "attack")
    _small_attack(at)
    at.button(key="attack.train").click().run()
    assert wait_job(at, "attack").status == "done"
    at.run()
    assert any("is trained and" in s.value for s in at.success)
    assert any("A reload of this page brings it back" in c.value for c in at.caption), [c.value for c in at.caption]
    name, sid = at.session_state["lab.model_ref"]["name"], at.session_state["lab.session_id"]
    trained = at.session_state["lab.session_models"][name]

    reloaded = AppTest.from_file(APP, default_timeout=120)
    reloaded.query_params["session"] = sid
    reloaded.run()
    assert not reloaded.exception
    assert reloaded.session_state["lab.model_ref"] == {"kind": "session", "name": name}
    back = reloaded.session_state["lab.session_models"][name]
    assert back.card.to_json()["attack"] == trained.card.to_json()["attack"] == "badnets"
    assert reloaded.session_state["lab.session_origins"][name].startswith("trained in this session")
    assert any(name in m.value for m in reloaded.sidebar.markdown)

    fresh = new_app()  # another tab: a session of its own
    assert fresh.session_state["lab.model_ref"]["kind"] == "shared"


def test_presenter_mode_is_in_the_url_and_survives_a_reload():
    """A teacher switches presenter mode on; a reload in front of the class switched it off. The URL carries it
    (``?presenter=1``), a reload with that URL starts in presenter mode, and switching it off takes it out."""
    from streamlit.testing.v1 import AppTest

    from test_app_pages import APP

    at = new_app()
    assert "presenter" not in at.query_params
    at.toggle(key="lab.presenter").set_value(True).run()
    assert at.query_params.get("presenter") in ("1", ["1"]), dict(at.query_params)

    reloaded = AppTest.from_file(APP, default_timeout=120)
    reloaded.query_params["presenter"] = "1"
    reloaded.run()
    assert not reloaded.exception
    assert reloaded.session_state["lab.presenter"] is True and reloaded.toggle(key="lab.presenter").value
    assert any("Presenter mode: everything larger" in str(e.proto) for e in reloaded.get("html"))
    reloaded.toggle(key="lab.presenter").set_value(False).run()
    assert "presenter" not in reloaded.query_params


@browser_only
def test_cancel_stays_one_word_and_presenter_mode_survives_a_reload(teacher_server):
    """Presenter mode at 1024 px: the job panel's Cancel button broke into "Ca / nc / el" (a fixed sixth of the
    row); and a reload switched presenter mode off in front of the class."""
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, PROJECTOR)
        page.goto(f"{teacher_server}/attack")
        wait_until_idle(page)
        _presenter(page)
        assert "presenter=1" in address(page)
        page.reload()
        wait_until_idle(page)
        assert page.evaluate("""() => parseFloat(getComputedStyle(
            document.querySelector('[data-testid="stAppViewContainer"]')).fontSize)""") == 21, "presenter mode lost"
        for label, value in (("Training texts", 1558), ("Epochs", 3)):
            box = page.get_by_label(label, exact=True)
            box.fill(str(value))
            box.press("Enter")
            wait_until_idle(page, settle_s=0.3)
        cancel = page.get_by_role("button", name="Cancel", exact=True).first
        click_until(page, "Train", cancel)
        lines = cancel.evaluate("""b => { const p = b.querySelector('p') || b;
            return Math.round(p.getBoundingClientRect().height / parseFloat(getComputedStyle(p).lineHeight)); }""")
        _shot(page, "attack_cancel_1024_presenter")
        assert lines == 1, f"'Cancel' wraps onto {lines} lines"
        cancel.click()
        page.get_by_text("was cancelled").first.wait_for(timeout=60_000)
        assert blocked == [] and errors == [], (blocked[:3], errors[:3])
