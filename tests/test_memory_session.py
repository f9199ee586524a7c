"""Memory of a long class session on one server (``bench/memory_class.py`` measures it with a real browser): a
reloaded tab holds its trained model once, not twice; widget values kept for a reload are bounded in size; the
results, ended jobs, model locks and tab owners of closed tabs do not pile up without bound."""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_pages import _small_attack, goto, new_app, wait_job  # noqa: E402

from app_pages import _jobs, _models, _state  # noqa: E402


@pytest.fixture(autouse=True)
def _test_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv("BACKDOOR_LAB_SESSIONS_DIR", str(tmp_path / "sessions"))


class _Model:
    """A stand-in for a trained ``LoadedModel`` (it takes weak references, as the real one does)."""


class _FakeSession(dict):
    """``st.session_state`` of one tab outside a script run."""


@pytest.fixture
def fake_tab(monkeypatch):
    """``use(tab)`` makes tab ``tab`` (its own session state) the one the app's helpers see; ``use.close(tab)``
    drops its session state (Streamlit forgets a closed tab's session 2 minutes after it closed)."""
    sessions: dict[str, _FakeSession] = {}
    current: list[_FakeSession] = []
    made: list[str] = []

    def use(tab: str) -> _FakeSession:
        if tab not in sessions:  # a new Streamlit session of the tab: a token of its own
            sessions[tab] = _FakeSession({_state.K_SESSION_ID: tab, _state.K_OWNER: f"owner-{len(made)}"})
            made.append(tab)
        state = sessions[tab]
        current[:] = [state]
        return state

    def owner():
        return current[0][_state.K_OWNER], None  # no Streamlit session: never connected

    for module in (_state, _jobs, _models):
        monkeypatch.setattr(module, "ss", lambda: current[0])
    monkeypatch.setattr(_state, "session_owner", owner)
    monkeypatch.setattr(_jobs, "session_owner", owner)
    use.close = lambda tab: sessions.pop(tab, None) and current.clear()
    return use


# ------------------------------------------------------------------------------------------------ a reload


def test_a_reloaded_tab_holds_its_trained_model_once_not_a_copy_from_disk_beside_the_kept_result():
    at = goto(new_app(), "attack")
    _small_attack(at)
    at.button(key="attack.train").click().run()
    assert wait_job(at, "attack").status == "done"
    sid = at.session_state["lab.session_id"]
    trained = at.session_state["attack.result"]["loaded"]
    assert [trained] == list(at.session_state["lab.session_models"].values())

    again = goto(new_app(sid), "attack")  # a reload of the tab
    models = again.session_state["lab.session_models"]
    assert list(models) == [trained.name]  # the model came back, and is the current one
    assert again.session_state["lab.model_ref"] == {"kind": "session", "name": trained.name}
    # ... as the same object the kept result holds (before: a second copy loaded from disk, ~1 model per reload)
    assert models[trained.name] is again.session_state["attack.result"]["loaded"] is trained
    assert not again.exception


def test_a_model_no_longer_alive_comes_back_from_disk(fake_tab):
    fake_tab("a" * 32)
    gone = _Model()
    _models._note_live("m", gone)
    assert _models._live_model("a" * 32, "m") is gone
    assert _models._live_model("b" * 32, "m") is None  # another tab (a copy of the link) gets its own
    del gone
    gc.collect()
    assert _models._live_model("a" * 32, "m") is None
    _models._note_live("n", _Model())  # listing another forgets the dead entries
    assert ("a" * 32, "m") not in _models._LIVE


# ------------------------------------------------------------------------------------------------ kept widget values


def test_a_pasted_pool_too_big_to_keep_is_not_kept_for_a_reload_and_a_small_one_is():
    at = goto(new_app(), "detect")
    at.radio(key="detect.pool_kind").set_value("Your texts (one per line)").run()
    small = "\n".join(f"a short pasted text number {i}" for i in range(20))
    at.text_area(key="detect.pool_raw").set_value(small).run()
    sid = at.session_state["lab.session_id"]
    assert goto(new_app(sid), "detect").text_area(key="detect.pool_raw").value == small
    assert not any("will not bring them back" in c.value for c in at.caption)

    big = "\n".join(f"a long pasted pool, text number {i:06d} of many" for i in range(6000))
    assert len(big) > _state.KEPT_VALUE_MAX_CHARS
    at.text_area(key="detect.pool_raw").set_value(big).run()
    assert at.text_area(key="detect.pool_raw").value == big  # the session itself keeps it, and says so
    assert any("a reload of this page will not bring them back" in c.value for c in at.caption)
    assert "detect.pool_raw" not in _state._KEPT[sid]  # not kept past the session: nor the older small one
    assert _state._KEPT_CHARS[sid] < _state.KEPT_VALUE_MAX_CHARS
    again = goto(new_app(sid), "detect")  # a reload starts the field at its default
    assert again.text_area(key="detect.pool_raw").value == ""
    assert again.radio(key="detect.pool_kind").value == "Your texts (one per line)"  # the rest came back


def test_kept_widget_values_of_all_tabs_stay_under_their_budget_the_least_recent_tabs_forgotten(fake_tab,
                                                                                                   monkeypatch):
    monkeypatch.setattr(_state, "_KEPT", {})
    monkeypatch.setattr(_state, "_KEPT_CHARS", {})
    monkeypatch.setattr(_state, "KEPT_MAX_CHARS", 10_000)
    tabs = [f"{i:032x}" for i in range(8)]
    for tab in tabs:
        state = fake_tab(tab)
        state["detect.pool_raw"] = "x" * 3000
        state["detect.n_clean"] = 64
        _state.keep("detect.pool_raw", "")
        _state.keep("detect.n_clean", 32)
    assert list(_state._KEPT) == tabs[-3:]  # 3 x 3,000 characters fit in 10,000; the oldest went first
    assert sum(_state._KEPT_CHARS.values()) <= 10_000
    assert set(_state._KEPT_CHARS) == set(_state._KEPT)
    fake_tab(tabs[-3])["detect.n_clean"] = 65  # drawn again: now the most recent, the next one goes first
    _state.keep("detect.n_clean", 32)
    fake_tab(tabs[0])["detect.pool_raw"] = "y" * 3000
    _state.keep("detect.pool_raw", "")
    assert list(_state._KEPT) == [tabs[-1], tabs[-3], tabs[0]]
    assert _state._KEPT[tabs[-3]]["detect.n_clean"] == 65


# ------------------------------------------------------------------------------------------------ closed tabs


def test_the_results_of_closed_tabs_are_bounded_and_their_models_freed(fake_tab, monkeypatch):
    monkeypatch.setattr(_jobs, "_RESULTS", {})
    monkeypatch.setattr(_jobs, "ORPHANS_KEPT", 3)
    tabs = [f"{i:032x}" for i in range(8)]
    models = []
    for tab in tabs:  # each tab trains, shows its result, and is closed (no session of it is connected)
        fake_tab(tab)
        model = _Model()
        models.append(weakref.ref(model))
        _jobs.keep_result("attack.result", {"loaded": model})
        fake_tab.close(tab)
        del model
    gc.collect()
    assert list(_jobs._RESULTS) == tabs[-4:]  # the 3 most recent gone tabs, and the one keeping a result now
    assert [m() is None for m in models] == [True] * 4 + [False] * 4
    fake_tab(tabs[0])  # a reload of a forgotten tab: nothing to take back, no error
    _jobs.restore_results()
    assert "attack.result" not in fake_tab(tabs[0])
    fake_tab(tabs[-1])  # the most recent one takes its result back
    _jobs.restore_results()
    assert fake_tab(tabs[-1])["attack.result"]["loaded"] is models[-1]()


def test_the_ended_jobs_of_closed_tabs_are_bounded_running_ones_kept(fake_tab, monkeypatch):
    import threading

    from backdoor_core.jobs import start_job

    monkeypatch.setattr(_jobs, "_TABS", {})
    monkeypatch.setattr(_jobs, "ORPHANS_KEPT", 2)
    tabs = [f"{i:032x}" for i in range(5)]
    results = []
    for tab in tabs:  # each tab's training ended after its tab was closed: nobody handled it
        fake_tab(tab)
        model = _Model()
        results.append(weakref.ref(model))
        job = start_job(lambda ctx, m=model: {"loaded": m})
        assert job.wait(10)
        _jobs._list_job("attack", job)
        del model, job
    release = threading.Event()
    fake_tab("f" * 32)
    running = start_job(lambda ctx: release.wait(10))
    _jobs._list_job("attack", running)
    fake_tab("e" * 32)
    _jobs.adopt_orphaned_jobs()  # any session's run prunes
    try:
        assert sorted(_jobs._TABS) == sorted([*tabs[-2:], "f" * 32])
        gc.collect()
        assert [r() is None for r in results] == [True] * 3 + [False] * 2
    finally:
        release.set()
        running.wait(10)


def test_a_model_lock_goes_with_its_model():
    model = _Model()
    key = id(model)
    lock = _models.model_lock(model)
    assert _models.model_lock(model) is lock and key in _models._LOCKS
    del model
    gc.collect()
    assert key not in _models._LOCKS  # before: one lock per model ever locked, for the server's life
    with lock:  # a lock still held by someone keeps working
        pass


def test_tab_owners_of_gone_sessions_are_pruned(fake_tab, monkeypatch):
    monkeypatch.setattr(_state, "_TAB_OWNERS", {})
    monkeypatch.setattr(_state, "_OWNERS_PRUNE_AT", 5)
    for i in range(12):
        fake_tab(f"{i:032x}")
        _state._note_owner(f"{i:032x}")
    assert len(_state._TAB_OWNERS) < 5 and f"{11:032x}" in _state._TAB_OWNERS
    assert not _state._open_elsewhere(f"{0:032x}", wait_s=0)  # a pruned tab: as one whose session is gone
