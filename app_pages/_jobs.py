"""Background jobs of this session: one per kind, started from a page, polled by ``job_panel`` and the sidebar;
``on_finish`` runs once in the script thread when a job ends."""

from __future__ import annotations

import threading
import time
from typing import Callable

import streamlit as st

from backdoor_core.device import usable_cores
from backdoor_core.jobs import Job, JobSlots, JobSnapshot, start_job
from app_pages import _state
from app_pages._state import K_JOBS, K_PANELS, K_SESSION_ID, POLL_SECONDS, session_owner, ss
from app_pages._text import md

# ------------------------------------------------------------------------------------------------ the server's slots
#
# Every user's trainings, scans and repairs run in this one server process. Five students starting a training at once
# on a 2-core machine ran five jobs side by side: each took about five times as long, none finished early, and every
# page of every user ran the model between them. At most ``MAX_JOBS_ENV`` (default: the CPU count) run at once; the
# others wait in the order they were started, their panel saying how many jobs are ahead.

MAX_JOBS_ENV = "BACKDOOR_LAB_MAX_JOBS"


def _slot_limit() -> int:
    import os

    try:
        n = int(os.environ.get(MAX_JOBS_ENV, "") or 0)
    except ValueError:
        n = 0
    return n if n >= 1 else usable_cores()


SLOTS = JobSlots(_slot_limit())


# ------------------------------------------------------------------------------------------------ tabs' jobs
#
# A job lives in its Streamlit session's state, and a reload starts a new Streamlit session: a training, repair or
# scan running at the reload went on burning the CPU with no panel, no Cancel, and its result thrown away when it
# ended (its on_finish runs only in a session that polls it). So each job is also listed under its browser tab's id
# (``?session=<id>``, ``_state.lab``); a session of that tab whose own state has no job of that kind takes it over
# from a session that is no longer connected (the reloaded page), never from one still open (the same link in a
# second tab keeps its own jobs). A job is dropped from the list once its result was used, or cleared.

ORPHAN_KEEP_S = 3600.0
"""How long a job that ended with no tab to take its result is kept for that tab's return (its result may be a
model of about 90 MB)."""
ORPHANS_KEPT = 24
"""At most this many tabs with no connected session keep their ended jobs (``_TABS``), and at most this many their
results (``_RESULTS``), for their return: the longest gone are forgotten first, even before ``ORPHAN_KEEP_S``. A
closed tab looks like one being reloaded, so each kept its trained model for the hour (``bench/memory_class.py``: 6
tabs trained and closed, their 6 models still alive once Streamlit had forgotten their sessions). Our design bounds
them by count: a class of many short tabs costs at most this many models, and a reload takes its tab's back within
seconds, long before it is among the oldest."""
_TABS_LOCK = threading.Lock()
_TABS: dict[str, dict[str, list]] = {}  # tab id -> kind -> [owner's token, Streamlit session id, Job, ended at]


def _list_job(kind: str, job: Job) -> None:
    tab = ss().get(K_SESSION_ID)
    if tab:
        with _TABS_LOCK:
            _TABS.setdefault(tab, {})[kind] = [*session_owner(), job, None]


def _unlist_job(job: Job) -> None:
    with _TABS_LOCK:
        for tab, kinds in list(_TABS.items()):
            for kind, entry in list(kinds.items()):
                if entry[2] is job:
                    del kinds[kind]
            if not kinds:
                del _TABS[tab]


def adopt_orphaned_jobs() -> None:
    """Take over this tab's jobs that a session no longer connected left running or unhandled (a reload while a
    job ran); called by the sidebar on every run, after ``_state.lab`` knows the tab's id."""
    tab, now = ss().get(K_SESSION_ID), time.time()
    me = session_owner()
    with _TABS_LOCK:
        for t, kinds in list(_TABS.items()):  # forget results no tab came back for
            for kind, entry in list(kinds.items()):
                if not entry[2].active:
                    entry[3] = entry[3] or now
                    if now - entry[3] > ORPHAN_KEEP_S and not _state.connected(entry[1]):
                        del kinds[kind]
            if not kinds:
                del _TABS[t]
        ended = [(entry[3], t, kind) for t, kinds in _TABS.items() if t != tab for kind, entry in kinds.items()
                 if entry[3] is not None]
        if len(ended) > ORPHANS_KEPT:  # the longest ended of the tabs gone first (``ORPHANS_KEPT``)
            gone = sorted(e for e in ended if not _state.connected(_TABS[e[1]][e[2]][1]))
            for _, t, kind in gone[:max(0, len(gone) - ORPHANS_KEPT)]:
                del _TABS[t][kind]
                if not _TABS[t]:
                    del _TABS[t]
        mine = dict(_TABS.get(tab, {})) if tab else {}
    for kind, entry in mine.items():
        token, session_id, job = entry[0], entry[1], entry[2]
        if token == me[0] or kind in jobs() or _state.connected(session_id):
            continue
        with _TABS_LOCK:
            entry[0], entry[1] = me
        jobs()[kind] = job


# ------------------------------------------------------------------------------------------------ tabs' results
#
# What a finished job gave the pages (Detect's scan report, the Attack lab's training curves, Sanitize's before and
# after) lives in session state, and a reload starts a new Streamlit session: the tab's report and models came back
# from disk, but its verdict, charts and repair result were gone. So each is also kept under the tab's id, in this
# server's memory (they hold fitted detectors and models, not files' worth of JSON), and a session of that tab that
# lacks them takes them back from one no longer connected, as ``adopt_orphaned_jobs`` takes its jobs.

_RESULTS: dict[str, dict] = {}  # tab id -> {"owner": session_owner(), "seen": time, "values": {state key: value}}


def _prune_results(tab: str | None, now: float) -> None:
    """Forget the results of tabs gone for ``ORPHAN_KEEP_S``, and of all but the ``ORPHANS_KEPT`` most recently seen
    tabs with no connected session (never tab ``tab``'s: the session asking). Call under ``_TABS_LOCK``."""
    for t, entry in list(_RESULTS.items()):
        if t != tab and now - entry["seen"] > ORPHAN_KEEP_S and not _state.connected(entry["owner"][1]):
            del _RESULTS[t]
    if len(_RESULTS) > ORPHANS_KEPT:
        gone = sorted((entry["seen"], t) for t, entry in _RESULTS.items()
                      if t != tab and not _state.connected(entry["owner"][1]))
        for _, t in gone[:max(0, len(gone) - ORPHANS_KEPT)]:
            del _RESULTS[t]


def keep_result(key: str, value) -> None:
    """Put a job's result into session state under ``key`` and keep it for a reload of this tab."""
    ss()[key] = value
    tab = ss().get(K_SESSION_ID)
    if tab:
        with _TABS_LOCK:
            entry = _RESULTS.setdefault(tab, {"values": {}})
            entry.update(owner=session_owner(), seen=time.time())
            entry["values"][key] = value
            _prune_results(tab, entry["seen"])


def drop_result(key: str) -> None:
    """Remove a result that no longer describes the current model (also from what a reload gets back)."""
    ss().pop(key, None)
    tab = ss().get(K_SESSION_ID)
    with _TABS_LOCK:
        if tab in _RESULTS:
            _RESULTS[tab]["values"].pop(key, None)


def restore_results() -> None:
    """Give a reloaded tab its results back (called by the sidebar on every run, after ``_state.lab``). Results of
    tabs gone for ``ORPHAN_KEEP_S``, or beyond the ``ORPHANS_KEPT`` most recent gone tabs, are forgotten
    (``_prune_results``)."""
    tab, now, me = ss().get(K_SESSION_ID), time.time(), session_owner()
    with _TABS_LOCK:
        _prune_results(tab, now)
        entry = _RESULTS.get(tab) if tab else None
        if entry is None:
            return
        owner = entry["owner"]
    if owner[0] != me[0]:
        if _state.connected(owner[1]):
            return  # another session still shows this tab: not a reload
        for key, value in entry["values"].items():
            ss().setdefault(key, value)
    with _TABS_LOCK:
        entry.update(owner=me, seen=now)


# ------------------------------------------------------------------------------------------------ jobs


def jobs() -> dict[str, Job]:
    if K_JOBS not in ss():
        ss()[K_JOBS] = {}
    return ss()[K_JOBS]


def get_job(kind: str) -> Job | None:
    return jobs().get(kind)


def start(kind: str, target: Callable, name: str, meta: dict | None = None,
          on_finish: Callable[[JobSnapshot], None] | None = None,
          cancelled_note: str | Callable[[JobSnapshot], str] | None = None) -> Job | None:
    """Start a background job of this kind unless one is already running (then warn and return None).

    ``on_finish(snapshot)`` runs once in the Streamlit script thread after the job ends, on whichever page the
    user is on (the sidebar checks every run): register the trained model, record a finding...
    ``cancelled_note`` (text, or ``snapshot -> text``) says what a cancel left behind; by default the panel says
    "nothing was kept" when the cancelled job returned no result.
    """
    old = get_job(kind)
    if old is not None and old.active:
        st.warning(f"'{md(old.name)}' is still running; cancel it first.")
        return None
    job = start_job(target, name=name, meta={**(meta or {}), "on_finish": on_finish,
                                             "cancelled_note": cancelled_note}, slots=SLOTS)
    jobs()[kind] = job
    _list_job(kind, job)
    return job


def handle_finished_jobs() -> None:
    """Run the ``on_finish`` of every job that ended since the last run (called by the sidebar)."""
    for job in list(jobs().values()):
        _handle_finish(job)


def clear_job(kind: str) -> None:
    job = jobs().pop(kind, None)
    if job is not None:
        _unlist_job(job)
        if job.active:
            job.cancel()


def _handle_finish(job: Job) -> None:
    if job.active or job.meta.get("handled"):
        return
    job.meta["handled"] = True
    _unlist_job(job)  # its result goes to this session (a trained model is kept on disk for a reload)
    on_finish = job.meta.get("on_finish")
    if on_finish is not None:
        snap = job.snapshot()
        try:
            on_finish(snap)
        except Exception as exc:  # noqa: BLE001 - shown, never raised
            job.meta["finish_error"] = str(exc) or type(exc).__name__


def cancelled_note(job: Job, snap: JobSnapshot) -> str:
    """What a cancelled job left behind (its ``cancelled_note``, else whether it returned a partial result)."""
    note = job.meta.get("cancelled_note")
    if callable(note):
        note = note(snap)
    if note:
        return str(note)
    return "its partial result is kept" if snap.result is not None else "nothing was kept"


def job_panel(kind: str, *, draw: Callable[[JobSnapshot], None] | None = None,
              interval: float = POLL_SECONDS) -> Job | None:
    """Draw the job's progress (and ``draw(snapshot)`` live charts), polling every ``interval`` s while it runs.

    When the job ends, the next full run handles it (its ``on_finish``, see ``start``). Cancel is offered while
    it runs; a failure is shown as an error message.
    """
    job = get_job(kind)
    if job is None:
        return None
    _handle_finish(job)
    ss().setdefault(K_PANELS, set()).add(kind)  # the sidebar leaves this job to the panel (one poller, not two)

    @st.fragment(run_every=interval if job.active else None)
    def _panel() -> None:
        snap = job.snapshot()
        if not snap.active and not job.meta.get("handled"):
            st.rerun(scope="app")  # the full run handles the result, then draws without polling
        # one row: the bar takes what the button leaves (a sixth of the row cut "Cancel" to "Ca / nc / el" in
        # presenter mode at 1024 px)
        with st.container(horizontal=True, vertical_alignment="bottom", wrap=False, key=f"lab-jobrow-{kind}"):
            label = {"running": "running", "pending": "waiting", "done": "finished", "cancelled": "cancelled",
                     "failed": "failed"}[snap.status]
            text = f"**{md(snap.name)}** — {label} · {snap.elapsed:.0f} s"
            if snap.message and snap.active:
                text += f" · {md(snap.message)}"
            st.progress(snap.fraction or 0.0, text=text, width="stretch")
            if snap.active:
                if st.button("Cancel", key=f"cancel.{kind}", type="secondary", width="content",
                             disabled=snap.cancel_requested):
                    job.cancel()
                    st.toast("Cancelling after the current step…")
            elif st.button("Clear", key=f"clear.{kind}", width="content"):
                clear_job(kind)
                st.rerun(scope="app")
        if snap.status == "failed":
            st.error(md(f"{snap.name} failed: {snap.error_message}"), icon=":material/warning:")
            with st.expander("Technical details"):
                st.code(snap.traceback[-4000:], language="text")
        elif snap.status == "cancelled":
            st.info(md(f"{snap.name} was cancelled after {snap.elapsed:.0f} s; {cancelled_note(job, snap)}."))
        if job.meta.get("finish_error"):
            st.error(md(f"Could not use the result: {job.meta['finish_error']}"), icon=":material/warning:")
        if draw is not None:
            draw(snap)

    _panel()
    return job
