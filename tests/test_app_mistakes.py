"""The app under a user's mistakes and odd navigation (fourth audit): a reload while a job runs, the same link open
in two tabs, wrong files, odd URLs. AppTest with the tiny model (BACKDOOR_LAB_TEST_MODEL=tiny); a new ``AppTest`` on
the same ``?session=<id>`` is what a reload of that tab gives the server: a new Streamlit session, same URL.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import BROWSER_MISSING_REASON, address, browser_available, launch_browser, streamlit_app  # noqa: E402
from browser import wait_until_idle  # noqa: E402
# the app-page tests' own helpers
from test_app_pages import errors, goto, new_app, quick_finetune_repair, quick_scan, wait_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(autouse=True)
def _test_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv("BACKDOOR_LAB_SESSIONS_DIR", str(tmp_path / "sessions"))




def _start_attack(at: AppTest, epochs: int, n_train: int = 40):
    goto(at, "attack")
    at.number_input(key="attack.n_train").set_value(n_train)
    at.number_input(key="attack.n_test").set_value(30)
    at.number_input(key="attack.epochs").set_value(epochs)
    at.number_input(key="attack.rate").set_value(10.0)
    at.select_slider(key="attack.max_len").set_value(32)
    at.run()
    at.button(key="attack.train").click().run()
    assert not at.exception and not errors(at), errors(at)
    return at.session_state["lab.jobs"]["attack"]


# ------------------------------------------------------------------------------------------------ reload + jobs


def test_a_reload_while_training_gets_the_running_job_back_with_its_cancel():
    """A reload while the Attack lab trained started a new session without the job: no panel, no Cancel, the
    training went on burning the CPU, and its model was thrown away when it ended. Now the reloaded tab takes the
    job over: its panel and Cancel are back, and the Train button waits for it."""
    first = new_app()
    sid = first.session_state["lab.session_id"]
    job = _start_attack(first, epochs=30, n_train=400)
    try:
        again = goto(new_app(sid), "attack")  # the same tab reloaded
        assert again.session_state["lab.jobs"].get("attack") is job
        assert at_button(again, "cancel.attack") is not None and at_button(again, "attack.train").disabled
        at_button(again, "cancel.attack").click().run()
        assert job.wait(60) and job.status == "cancelled"
        again.run()
        assert not again.exception
        assert any("cancelled" in i.value and "discarded" in i.value for i in again.info), [i.value for i in again.info]
    finally:
        job.cancel()


def test_a_training_that_ends_during_a_reload_still_gives_its_model():
    """The job ended while no session watched it (the tab was reloading): its model used to be lost; now the
    reloaded tab receives it as its current model, and the report records the run."""
    first = new_app()
    sid = first.session_state["lab.session_id"]
    job = _start_attack(first, epochs=1)
    name = job.name.removeprefix("Training ")
    assert job.wait(120) and job.status == "done"
    again = new_app(sid)  # the first session never ran again
    assert again.session_state["lab.model_ref"] == {"kind": "session", "name": name}
    assert name in again.session_state["lab.session_models"]
    assert any(f.kind == "attack" for f in again.session_state["lab.session"].findings)
    again2 = new_app(sid)  # handled once: a further reload finds the model on disk, not the job
    assert "attack" not in again2.session_state["lab.jobs"]
    assert again2.session_state["lab.model_ref"] == {"kind": "session", "name": name}


def _subheaders(at: AppTest) -> list[str]:
    return [h.value for h in at.subheader]


def test_a_reload_brings_back_the_verdict_the_training_result_and_the_repair():
    """A reload gave the tab its report and models back but not what its pages showed: Detect asked for a scan
    again, the Attack lab's result and Sanitize's before/after were gone. Now the reloaded tab shows them again, and
    the result of a training started since is not brought back."""
    first = new_app()
    sid = first.session_state["lab.session_id"]
    _start_attack(first, epochs=1)
    assert wait_job(first, "attack").status == "done"
    quick_scan(first)
    shown = {m.label: m.value for m in first.metric}
    quick_finetune_repair(goto(first, "sanitize"))
    repaired = [h for h in _subheaders(first) if h.startswith("Before and after")]
    assert repaired

    again = goto(new_app(sid), "detect")  # the same tab reloaded
    assert not any("Run a scan to see the verdict" in i.value for i in again.info)
    assert {m.label: m.value for m in again.metric if m.label in shown} == shown
    goto(again, "sanitize")
    assert [h for h in _subheaders(again) if h.startswith("Before and after")] == repaired
    goto(again, "attack")
    assert any("is trained and is now the current model" in s.value for s in again.success), \
        [s.value for s in again.success]

    job = _start_attack(again, epochs=30, n_train=400)  # a new training: the old result no longer describes it
    job.cancel()
    assert job.wait(60)
    assert "attack.result" not in goto(new_app(sid), "attack").session_state


def test_the_same_link_open_in_another_tab_keeps_its_jobs_apart(monkeypatch):
    """A second tab on the same link (whose first tab is still connected) does not take the first tab's job."""
    from app_pages import _state

    first = new_app()
    sid = first.session_state["lab.session_id"]
    job = _start_attack(first, epochs=30, n_train=400)
    try:
        monkeypatch.setattr(_state, "connected", lambda session_id: True, raising=False)  # the first tab is still open
        other = goto(new_app(sid), "attack")
        assert "attack" not in other.session_state["lab.jobs"]
        assert not at_button(other, "attack.train").disabled
    finally:
        job.cancel()


# ------------------------------------------------------------------------------------------------ two tabs


def _headings(at: AppTest) -> list[str]:
    return [f.title for f in at.session_state["lab.session"].findings]


def test_the_same_link_in_a_second_tab_no_longer_overwrites_the_first_tabs_report(monkeypatch):
    """Two tabs on one link (a duplicated tab, a pasted URL) shared one report file and each saved its own findings
    over the other's: tab B's scan was gone after B's reload once tab A inspected another text (seen in a browser).
    Now tab B gets a copy under its own id: it starts with A's findings and keeps its own apart."""
    from app_pages import _state

    a = goto(new_app(), "inspect")
    sid = a.session_state["lab.session_id"]
    assert "Inspection" in _headings(a)
    monkeypatch.setattr(_state, "connected", lambda session_id: True, raising=False)  # tab A is still open
    b = new_app(sid)
    b_sid = b.session_state["lab.session_id"]
    assert b.query_params["session"] in (b_sid, [b_sid])
    assert "Inspection" in _headings(b)  # a copy of what the link had
    goto(b, "compare")  # B's own finding
    assert "Model comparison" in _headings(b)
    a.text_area(key="inspect.text").input("Another sentence typed in tab A.").run()  # A records again
    assert not a.exception and "Model comparison" not in _headings(a)
    monkeypatch.setattr(_state, "connected", lambda session_id: False, raising=False)
    assert "Model comparison" in _headings(new_app(b_sid))  # B reloaded: its finding is still there
    assert "Model comparison" not in _headings(new_app(sid))  # and A's report never got it
    assert b_sid != sid


def test_a_second_tab_on_a_link_gets_that_tabs_models(monkeypatch):
    """A copy of a tab (the same link while that tab is open) starts with that tab's trained model as its current
    model, and each tab keeps its own list from then on."""
    from app_pages import _state

    a = new_app()
    sid = a.session_state["lab.session_id"]
    job = _start_attack(a, epochs=1)
    assert job.wait(120) and job.status == "done"
    a.run()
    name = job.name.removeprefix("Training ")
    assert a.session_state["lab.model_ref"] == {"kind": "session", "name": name}
    monkeypatch.setattr(_state, "connected", lambda session_id: True, raising=False)
    b = new_app(sid)
    assert b.session_state["lab.session_id"] != sid
    assert b.session_state["lab.model_ref"] == {"kind": "session", "name": name}
    assert name in b.session_state["lab.session_models"]


# ------------------------------------------------------------------------------------------------ wrong files


def test_a_refused_upload_is_named_as_the_user_named_it_not_by_the_servers_temp_path():
    """A bad data file or model .zip was refused with the server's temporary path ("/tmp/backdoor-lab-session-x/
    data-y/bad.jsonl, line 2: ...", "/tmp/.../unzipped-z/m/config.json is not valid JSON"): a folder the user never
    saw, already deleted. Now the message names the uploaded file (and the entry inside a .zip)."""
    import io
    import zipfile

    at = goto(new_app(), "model")
    at.selectbox(key="model.data_choice").set_value("Your file…").run()
    at.file_uploader(key="model.data_file").upload("bad.jsonl", b'{"text": "a", "label": 0}\n[1, 2]\n',
                                                   "text/plain").run()
    at.button(key="model.use_data_file").click().run()
    assert not at.exception
    assert any("bad.jsonl, line 2" in e for e in errors(at)), errors(at)
    assert not any("backdoor-lab-session" in e or "/tmp" in e for e in errors(at)), errors(at)

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("m/config.json", "{not json")
        z.writestr("m/model.safetensors", b"xx")
    at.segmented_control(key="model.source").set_value("Upload .zip").run()
    at.file_uploader(key="model.zip").upload("mine.zip", archive.getvalue(), "application/zip").run()
    at.button(key="model.load_zip").click().run()
    assert not at.exception
    assert any("mine.zip → m/config.json" in e for e in errors(at)), errors(at)
    assert not any("backdoor-lab-session" in e or "unzipped-" in e for e in errors(at)), errors(at)


def _sidebar_text(at: AppTest) -> str:
    return " ".join(m.value for m in at.sidebar.markdown) + " " + " ".join(c.value for c in at.sidebar.caption)


def test_a_reload_keeps_the_uploaded_data_file():
    """After a reload the tab had its trained models and report back, but its dataset silently went back to BBC
    News: Detect, Sanitize and the Attack lab then ran on BBC with models made for the user's file. Now the
    uploaded file is kept beside the tab's models and comes back with them; choosing BBC again forgets it."""
    rows = "".join(f"text number {i} about topic {i % 5}\t{i % 5}\n" for i in range(60))
    at = goto(new_app(), "model")
    sid = at.session_state["lab.session_id"]
    at.selectbox(key="model.data_choice").set_value("Your file…").run()
    at.file_uploader(key="model.data_file").upload("my_news.tsv", ("text\tlabel\n" + rows).encode(),
                                                    "text/plain").run()
    at.button(key="model.use_data_file").click().run()
    assert not at.exception and not errors(at), errors(at)
    assert "my_news.tsv" in _sidebar_text(at)

    again = goto(new_app(sid), "model")  # the same tab reloaded
    assert Path(again.session_state["lab.data_spec"]).name == "my_news.tsv"
    assert "my_news.tsv" in _sidebar_text(again) and not errors(again), errors(again)
    assert "backdoor-lab-session" not in again.session_state["lab.data_spec"]  # not the old session's temp copy
    again.selectbox(key="model.data_choice").set_value("bbc").run()
    assert new_app(sid).session_state["lab.data_spec"] == "bbc"


def test_an_upload_the_server_cannot_keep_for_a_reload_says_so(monkeypatch):
    """A full disk (or a linked folder) refused the copy kept for a reload, without a word: the file was in use and a
    reload went back to BBC News. Now the Model page says so once; the file is still in use."""
    import errno

    from backdoor_core import session_models as SM

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SM, "keep_data", full)
    rows = "".join(f"text number {i} about topic {i % 5}\t{i % 5}\n" for i in range(60))
    at = goto(new_app(), "model")
    at.selectbox(key="model.data_choice").set_value("Your file…").run()
    at.file_uploader(key="model.data_file").upload("my_news.tsv", ("text\tlabel\n" + rows).encode(),
                                                    "text/plain").run()
    at.button(key="model.use_data_file").click().run()
    assert not at.exception and "my_news.tsv" in _sidebar_text(at)
    said = [w.value for w in at.warning if "could not keep a copy for a reload" in w.value]
    assert len(said) == 1 and "No space left on device" in said[0], [w.value for w in at.warning]
    at.run()  # said once
    assert not any("could not keep a copy" in w.value for w in at.warning)


def test_a_trigger_of_commas_only_is_refused_before_a_training_starts():
    """Trigger words ",,," (commas, no word): the poison peek said "An insertion attack needs at least one non-empty
    trigger", yet Train started a run that failed at once with a red "failed" panel and a traceback. Now Train
    refuses it in one line and starts nothing."""
    at = goto(new_app(), "attack")
    at.number_input(key="attack.rate").set_value(10.0)
    at.text_input(key="attack.words").input(",,,").run()
    at.button(key="attack.train").click().run()
    assert not at.exception
    assert "attack" not in at.session_state["lab.jobs"]
    assert any("non-empty trigger" in e for e in errors(at)), errors(at)
    assert not any("failed" in e for e in errors(at)), errors(at)


@pytest.mark.parametrize("defense, knob", [("fineprune", "prune_fraction"), ("pure", "max_fraction")])
def test_a_share_of_heads_knob_stops_below_one(defense, knob):
    """Fine-pruning's prune fraction and PURE's largest share of heads took values up to 100: at 1 or more the
    repair started and failed at once ("prune_fraction must be in [0, 1)"). Their fields now stop at 0.95."""
    from backdoor_core.defenses import DEFENSES

    at = goto(new_app(), "sanitize")
    at.selectbox(key="sanitize.defense").set_value(DEFENSES[defense].label).run()
    field = at.number_input(key=f"sanitize.{defense}.{knob}")
    assert field.max < 1, field.max
    field.set_value(field.max).run()
    at.button(key="sanitize.run").click().run()
    job = at.session_state["lab.jobs"]["sanitize"]
    try:
        assert job.wait(5) is False or job.status != "failed", job.snapshot().error_message
    finally:
        job.cancel()
        job.wait(60)


# ------------------------------------------------------------------------------------------------ long texts


def test_inspect_shows_a_very_long_text_only_as_far_as_the_model_read_it():
    """A 20,000-character text was shown whole in big type under "With the trigger:" (hundreds of lines before the
    charts), with "The text was cut to its first N tokens" at its very end. Now the shown text stops where the
    model stopped reading, says how much more there was, and keeps the trigger in sight."""
    at = goto(new_app(), "inspect")
    long_text = " ".join(f"word{i}" for i in range(4000))[:20000]
    at.text_area(key="inspect.text").input(long_text).run()
    assert not at.exception and not errors(at), errors(at)
    big = next(m.value for m in at.markdown if 'class="lab-big"' in m.value)
    assert len(big) < 3000, len(big)
    assert "more characters that the model did not read" in big and '<mark class="trigger">' in big
    assert any("cut to its first" in c.value for c in at.caption)


def test_inspect_says_where_the_trigger_went_when_the_chosen_word_is_past_the_models_window():
    """"Insert before word" 2000 of a long text put the trigger at word ~60 (kept inside the tokens the model reads)
    without a word: the slider moved, the trigger did not. Now a caption says where it went and why."""
    at = goto(new_app(), "inspect")
    at.text_area(key="inspect.text").input(" ".join(f"w{i}" for i in range(2500))).run()
    at.radio(key="inspect.where").set_value("choose word").run()
    at.slider(key="inspect.position").set_value(2000).run()
    assert not at.exception and not errors(at), errors(at)
    note = [c.value for c in at.caption if c.value.startswith("Word 2000 is past")]
    assert note and "went in before word" in note[0], [c.value for c in at.caption]
    at.slider(key="inspect.position").set_value(3).run()  # inside the window: no such note
    assert not any("is past what the model reads" in c.value for c in at.caption)


# ------------------------------------------------------------------------------------------------ real browser


def _sid(page) -> str:
    return parse_qs(urlsplit(address(page)).query).get("session", [""])[0]


def _main(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _until(check, timeout_s: float = 30.0) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)
def test_in_a_browser_a_second_tab_keeps_apart_and_a_reload_gets_the_training_back(tmp_path):
    """What AppTest cannot see (a reload is a new Streamlit session whose old one has disconnected; a second tab
    is one still connected), with the tiny model: tab A starts a training; the same link in tab B gets its own
    session id and none of A's jobs; A reloaded keeps its id and its running training, with Cancel. Screenshots go
    to test-artifacts/mistakes_*.png."""
    env = {"BACKDOOR_LAB_TEST_MODEL": "tiny", "BACKDOOR_ZOO_DIR": str(tmp_path / "zoo"),
           "BACKDOOR_LAB_SESSIONS_DIR": str(tmp_path / "sessions2")}
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_app(ROOT, env, tmp_path / "streamlit.log") as url, launch_browser() as browser:
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        a = ctx.new_page()
        a.goto(url + "/attack")
        wait_until_idle(a)
        sid = _sid(a)
        assert len(sid) == 32
        a.get_by_role("button", name="Train").click()
        assert _until(lambda: a.get_by_role("button", name="Cancel").count() == 1), _main(a)[-500:]

        b = ctx.new_page()  # the same link in a second tab, while tab A is open and training
        b.goto(a.url)
        wait_until_idle(b)
        assert _until(lambda: len(_sid(b)) == 32 and _sid(b) != sid), address(b)
        assert b.get_by_role("button", name="Cancel").count() == 0  # A's job stays A's
        assert b.get_by_role("button", name="Train").is_enabled()
        b.screenshot(path=str(ARTIFACTS / "mistakes_second_tab.png"))
        b.close()

        a.reload()  # a reload keeps the tab's id and brings back its running training
        wait_until_idle(a)
        assert _sid(a) == sid, address(a)
        assert _until(lambda: a.get_by_role("button", name="Cancel").count() == 1), _main(a)[-800:]
        assert "Training" in _main(a)
        a.screenshot(path=str(ARTIFACTS / "mistakes_reloaded.png"))
        a.get_by_role("button", name="Cancel").click()
        assert _until(lambda: "was cancelled" in _main(a)), _main(a)[-800:]
        assert a.locator('[data-testid="stException"]').count() == 0


def at_button(at: AppTest, key: str):
    try:
        return at.button(key=key)
    except KeyError:
        return None


def test_an_empty_box_of_your_texts_does_not_scan_without_a_pool():
    """Detect with "Your texts" and nothing pasted ran a scan with no pool at all (what "No pool" is for), and its
    verdict read as the pasted texts' without a word: Scan waits for a text and says so."""
    at = goto(new_app(), "detect")
    kinds = at.radio(key="detect.pool_kind").options
    at.radio(key="detect.pool_kind").set_value(kinds[2]).run()
    assert at.button(key="detect.run").disabled
    assert any("Paste at least one pool text" in c.value for c in at.caption)
    at.text_area(key="detect.pool_raw").input("a first text about markets\na second one").run()
    assert not at.button(key="detect.run").disabled and not errors(at)
    at.radio(key="detect.pool_kind").set_value(kinds[3]).run()  # "No pool" scans without one, as it says
    assert not at.button(key="detect.run").disabled
