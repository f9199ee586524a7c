"""Many users on one server (a class on the teacher's machine): what one user does never reaches another user's tab.

Two AppTest sessions in one process share what a server shares (``st.cache_resource``, module-level dicts): user A
trains, repairs and switches heads off on the default model; user B's predictions on it stay the same."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_analyst import wait_job  # noqa: E402
from test_app_pages import goto, new_app, open_tab  # noqa: E402


@pytest.fixture(autouse=True)
def _test_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv("BACKDOOR_LAB_SESSIONS_DIR", str(tmp_path / "sessions"))


def _probs(at: AppTest) -> tuple:
    _, result = at.session_state["inspect.cache"]
    return tuple(tuple(sorted(result.prediction(w)["probs"].items())) for w in ("clean", "triggered"))


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _shared_tiny():
    """The default model every session gets (``_models.shared_model``'s cached object)."""
    from app_pages import _models as M
    from app_pages._data import _load_dataset

    labels = tuple(_load_dataset("bbc", "train", 0, None).label_names)
    return M.shared_model("tiny", False, labels, "cpu")


def test_a_users_training_repair_and_heads_off_leave_another_users_default_model_alone():
    b = goto(new_app(), "inspect")
    before = _probs(b)
    shared = _shared_tiny()
    weights, training = _weights(shared.model), shared.model.training

    a = goto(new_app(), "inspect")
    assert a.session_state["lab.session_id"] != b.session_state["lab.session_id"]
    open_tab(a, "Heads off").multiselect(key="inspect.ablate_heads").set_value(["L0H0", "L0H1", "L1H0", "L1H1"]).run()
    assert not a.exception and a.session_state["inspect.ablate_cache"][1].labels
    goto(a, "sanitize")  # a repair of the shared default model (a private copy is trained)
    a.selectbox(key="sanitize.defense").set_value("finetune").run()
    a.number_input(key="sanitize.n_clean").set_value(16)
    a.number_input(key="sanitize.n_test").set_value(16)
    a.number_input(key="sanitize.finetune.epochs").set_value(1)
    a.run()
    a.button(key="sanitize.run").click().run()
    assert wait_job(a, "sanitize").status == "done"
    goto(a, "attack")  # a training from it
    a.number_input(key="attack.n_train").set_value(40)
    a.number_input(key="attack.n_test").set_value(30)
    a.number_input(key="attack.epochs").set_value(1)
    a.number_input(key="attack.rate").set_value(10.0)
    a.select_slider(key="attack.max_len").set_value(32)
    a.run()
    a.button(key="attack.train").click().run()
    assert wait_job(a, "attack").status == "done"
    assert a.session_state["lab.model_ref"]["kind"] == "session"

    assert _shared_tiny() is shared  # one cached object for everyone...
    after = _weights(shared.model)  # ...whose weights no one changed
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert shared.model.training == training
    from backdoor_core.architecture import attention_blocks

    assert not any(getattr(b.attention, "_forward_pre_hooks", None) or getattr(b.attention, "_forward_hooks", None)
                   for b in attention_blocks(shared.model))  # no head gate left behind
    b.run()
    assert b.session_state["lab.model_ref"]["kind"] == "shared"
    del b.session_state["inspect.cache"]  # B reads the model again
    b.run()
    assert _probs(b) == before
    # A's models, results and report are not B's
    assert not (b.session_state["lab.session_models"] if "lab.session_models" in b.session_state else {})
    assert "attack.result" not in b.session_state and "sanitize.result" not in b.session_state
    assert {f.kind for f in b.session_state["lab.session"].findings} <= {"inspect"}  # B's own reading only


def test_a_new_tab_without_a_link_or_with_a_guessed_id_gets_nobodys_report_or_widgets(tmp_path):
    a = goto(new_app(), "inspect")
    a.text_area(key="inspect.text").input("a secret sentence of student A").run()
    a.session_state["lab.session"].record("note", "Inspect", text="A's finding")
    sid = a.session_state["lab.session_id"]
    assert (tmp_path / "sessions").exists()
    for link in (None, "0" * 32, sid[:-1] + ("0" if sid[-1] != "0" else "1"), "../" + sid, sid.upper()):
        b = new_app(link)
        assert b.session_state["lab.session_id"] != sid, link
        assert not b.session_state["lab.session"].findings, link
        goto(b, "inspect")
        assert b.session_state["inspect.text"] != "a secret sentence of student A", link


# ------------------------------------------------------------------------------------------------ jobs at once


def test_slots_run_at_most_their_limit_and_say_how_many_jobs_are_ahead():
    from backdoor_core.jobs import JobSlots, start_job

    slots, go, order = JobSlots(2, poll=0.05), threading.Event(), []

    def work(i):
        def target(ctx):
            go.wait(10)
            order.append(i)
            return i
        return target

    jobs = [start_job(work(i), name=f"job {i}", slots=slots) for i in range(5)]
    deadline = time.time() + 5
    while slots.running < 2 or slots.waiting < 3:
        assert time.time() < deadline, (slots.running, slots.waiting)
        time.sleep(0.02)
    time.sleep(0.2)
    assert [j.status for j in jobs] == ["running", "running", "pending", "pending", "pending"]
    assert [j.snapshot().message for j in jobs[2:]] == [
        f"waiting for a free slot: {n} jobs ahead of it (this server runs 2 at once)" for n in (2, 3, 4)]
    jobs[3].cancel()  # a cancel while waiting: ended, nothing kept, and it gives up its place
    assert jobs[3].wait(2) and jobs[3].status == "cancelled" and jobs[3].result is None
    deadline = time.time() + 2
    while not jobs[4].snapshot().message.startswith("waiting for a free slot: 3 jobs ahead"):
        assert time.time() < deadline, jobs[4].snapshot().message
        time.sleep(0.02)
    go.set()
    assert all(j.wait(10) for j in jobs)
    assert [j.status for j in jobs] == ["done", "done", "done", "cancelled", "done"]
    assert sorted(order) == [0, 1, 2, 4]
    deadline = time.time() + 2
    while slots.running or slots.waiting:  # each slot is given back just after its job's end
        assert time.time() < deadline, (slots.running, slots.waiting)
        time.sleep(0.02)


def test_a_training_started_while_the_server_is_full_waits_and_says_why(monkeypatch):
    from app_pages import _jobs
    from backdoor_core.jobs import JobSlots, start_job

    monkeypatch.setattr(_jobs, "SLOTS", JobSlots(1, poll=0.05))
    go = threading.Event()
    other = start_job(lambda ctx: go.wait(30), name="another user's training", slots=_jobs.SLOTS)
    b = goto(new_app(), "attack")
    b.number_input(key="attack.n_train").set_value(40)
    b.number_input(key="attack.n_test").set_value(30)
    b.number_input(key="attack.epochs").set_value(1)
    b.number_input(key="attack.rate").set_value(10.0)
    b.select_slider(key="attack.max_len").set_value(32)
    b.run()
    b.button(key="attack.train").click().run()
    job = b.session_state["lab.jobs"]["attack"]
    time.sleep(0.3)
    b.run()
    assert job.status == "pending"
    texts = [p.proto.text for p in b.get("progress")]
    assert any("waiting" in t and "1 job ahead of it (this server runs 1 at once)" in t for t in texts), texts
    b.switch_page("app_pages/home.py").run()  # the sidebar's list says it waits too (it showed seconds, as running)
    texts = [p.proto.text for p in b.get("progress")]
    assert any("waiting for a free slot: 1 job ahead of it" in t for t in texts), texts
    go.set()
    assert other.wait(10) and wait_job(b, "attack").status == "done"


# ------------------------------------------------------------------------------------------------ locks


def test_two_users_comparing_two_models_the_other_way_round_do_not_lock_each_other_out():
    """The Compare page holds model A's lock, then model B's: user X compares M1 with M2 while user Y compares M2
    with M1 (``with model_lock(a), model_lock(b)``). They had each held one lock and waited for the other's for
    ever, and every page that ran M1 or M2 (the default model) with them."""
    from app_pages._models import model_lock

    m1, m2, both_in, done = object(), object(), threading.Barrier(2, timeout=5), []

    def compare(a, b, who):
        with model_lock(a):
            both_in.wait()  # each holds its model A before it takes its model B
            with model_lock(b), model_lock(a):  # and A again: re-entrant
                done.append(who)

    threads = [threading.Thread(target=compare, args=args, daemon=True) for args in ((m1, m2, "x"), (m2, m1, "y"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(done) == ["x", "y"], "deadlocked"
    for m in (m1, m2):  # every lock was given back
        lock = model_lock(m)
        assert lock._lock.acquire(blocking=False)
        lock._lock.release()
