"""Session state of the app: stable keys, widgets that keep their value across pages, and the Report's finding
log (``backdoor_core.session.LabSession``). Pages reach it through ``app_pages._common`` (``ui``).

Session-state keys (stable, so state survives page switches):

* ``lab.model_ref``   — which model is current: ``{"kind": "shared", "spec", "allow_pickle", "labels"}`` (loaded
  through ``st.cache_resource``, read-only, shared across sessions) or ``{"kind": "session", "name"}`` (a
  per-session copy: trained or sanitized here, kept in ``lab.session_models``).
* ``lab.data_spec``   — the dataset spec string (``bbc``, ``sst2``, a path...).
* ``lab.session``     — ``backdoor_core.session.LabSession`` (what this session found, for the Report page).
* ``lab.jobs``        — ``{kind: backdoor_core.jobs.Job}``, one background job per kind ("attack", "scan"...).
* widget keys such as ``inspect.text`` — kept across page switches (``persist_state="session"``, see ``keep``).

* ``lab.tmp``       — ``_data.SessionTemp``: this session's temp folder for uploads (deleted with the session).

Test hooks: with the environment variable ``BACKDOOR_LAB_TEST_MODEL=tiny`` the default model is the random tiny
BERT (2 layers x 4 heads) so AppTest and the browser test run in seconds (a model folder's path works too);
``BACKDOOR_LAB_TEST_DATA=<file>`` replaces the default dataset (the hostile-input tests use both).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import streamlit as st

from backdoor_core.session import LabSession

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
TEST_MODEL_ENV = "BACKDOOR_LAB_TEST_MODEL"
TEST_DATA_ENV = "BACKDOOR_LAB_TEST_DATA"
DEFAULT_DATA = "bbc"
POLL_SECONDS = 2.0
"""How often a job's panel redraws its progress and live chart. Every redraw costs the job CPU time on a 2-core
machine (README, *Live progress*: one repair, 78 s with the browser away, 225 s from click to result under a 1-s
panel plus the sidebar's 2-s list of the same job, 133 s with this and the sidebar leaving the job to its panel)."""
SIDEBAR_POLL_SECONDS = 2.0
"""How often the sidebar's list of running jobs redraws (only jobs whose own panel is not on the page)."""
K_PANELS = "lab.panels_shown"

K_MODEL = "lab.model_ref"
K_SESSION_MODELS = "lab.session_models"
K_DATA = "lab.data_spec"
K_SESSION = "lab.session"
K_SESSION_ID = "lab.session_id"
K_JOBS = "lab.jobs"
K_TMP = "lab.tmp"


# ------------------------------------------------------------------------------------------------ basics


def ss() -> Any:
    return st.session_state


def test_model_name() -> str | None:
    return os.environ.get(TEST_MODEL_ENV) or None


def keep(key: str, default: Any) -> dict:
    """Widget kwargs that keep its value across page switches (Streamlit's ``persist_state="session"``) and across a
    reload of the tab (``_restore_kept``).

    Usage: ``st.text_area("Text", **keep("inspect.text", "A sentence"))`` — do not pass ``value``/``index``:
    the default is put into session state the first time, so code may also set it (``set_kept``).
    """
    if key not in ss():
        ss()[key] = default
    _keep_in_tab(key)
    return {"key": key, "persist_state": "session"}


# A reload starts a new Streamlit session: the tab's report, models, results and jobs came back, but every kept widget
# (the text typed on Inspect, the scan's and the attack's knobs) was at its default again. Their values are also kept
# under the tab's id in this server's memory; a new session of that tab (a reload, or a copy in a second tab) starts
# each widget at the value it had there.
#
# A value is kept by reference (no copy while its session lives), but it outlives the session: a pool of texts pasted
# on Detect (megabytes) stayed in memory for as long as 500 tabs had not pushed it out, a class's worth of such
# pastes for the whole day. Our design bounds what is kept, in characters (``_kept_size``; 1 to 4 bytes each): a value
# over ``KEPT_VALUE_MAX_CHARS`` is not kept for a reload (a reload starts that widget at its default, never at an
# older value of it; the session itself keeps the value), and the kept values of all tabs together stay under
# ``KEPT_MAX_CHARS``, the least recently used tabs forgotten first (the tab being drawn is never dropped).
_KEPT_TABS = 500  # the tabs whose widget values are kept (the oldest are forgotten first)
KEPT_VALUE_MAX_CHARS = 200_000
"""The largest widget value kept for a reload: a pasted pool of about 2,000 texts of 100 characters."""
KEPT_MAX_CHARS = 20_000_000
"""All tabs' kept widget values together (about 100 tabs with a pool of ``KEPT_VALUE_MAX_CHARS`` each)."""
_KEPT: dict[str, dict[str, Any]] = {}  # tab id -> {widget key: value}
_KEPT_CHARS: dict[str, int] = {}  # tab id -> its kept values' size (``_kept_size``)


def _kept_size(value: Any) -> int:
    """A widget value's size for ``KEPT_MAX_CHARS``: characters of text (and bytes), 8 for anything else."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return 8 + sum(_kept_size(v) for v in value)
    if isinstance(value, dict):
        return 8 + sum(_kept_size(k) + _kept_size(v) for k, v in value.items())
    return 8


def _keep_in_tab(key: str) -> None:
    tab = ss().get(K_SESSION_ID)
    if not tab or key not in ss():
        return
    value = ss()[key]
    big = _kept_size(value) > KEPT_VALUE_MAX_CHARS
    with _TABS_LOCK:
        values = _KEPT.pop(tab, None) or {}
        if big:
            values.pop(key, None)  # not kept: a reload shows the default, not an older value
        else:
            values[key] = value
        _KEPT[tab] = values  # the most recent last
        _KEPT_CHARS[tab] = sum(_kept_size(v) for v in values.values())
        total = sum(_KEPT_CHARS.values())
        while len(_KEPT) > 1 and (len(_KEPT) > _KEPT_TABS or total > KEPT_MAX_CHARS):
            oldest = next(iter(_KEPT))
            del _KEPT[oldest]
            total -= _KEPT_CHARS.pop(oldest, 0)


def _restore_kept(tab: str) -> None:
    """Start this new session's widgets at the values they had in tab ``tab`` (this tab before a reload, or the
    tab a second tab copies), as if it were the same session: in session state before any page draws, so code that
    removes a key to reset its widget (the tour's "set up the Attack lab") still gets the default."""
    import copy

    with _TABS_LOCK:
        values = dict(_KEPT.get(tab) or {})
    for key, value in values.items():
        if key != K_PRESENTER:  # read from the URL (``presenter``)
            ss().setdefault(key, copy.deepcopy(value))


def kept(key: str, default: Any = None) -> Any:
    """The current value of a ``keep`` widget (also before it is drawn on this run)."""
    return ss().get(key, default)


def set_kept(key: str, value: Any) -> None:
    """Set a ``keep`` widget's value from code (only before the widget is drawn in this run)."""
    ss()[key] = value


def follow_default(key: str, default: Any) -> None:
    """Give widget ``key`` its ``default`` again when that default changed and the user had left the widget at the
    old one (a choice of theirs is kept). Call before drawing the widget, and draw it without ``index``/``default``.

    For pickers whose default follows the data (the Inspect page's heads: the top head of the text and trigger now
    shown); a plain ``default=`` is read once per key, so they kept the first text's top head."""
    mark = f"{key}.__default"
    if key not in ss() or ss()[key] == ss().get(mark):
        ss()[key] = default
    ss()[mark] = default


SESSION_PARAM = "session"
SESSIONS_ENV = "BACKDOOR_LAB_SESSIONS_DIR"


def lab() -> LabSession:
    """This browser tab's finding log. It survives a reload: the URL carries a random session id
    (``?session=<32 hex>``) and every finding is written to ``session.session_file(id)``; a reload with that
    URL reads it back. A URL without one (or with a broken one) starts a new log; the same link opened in a second
    tab while the first is open gets a copy under its own id (``_open_elsewhere``)."""
    if K_SESSION not in ss():
        import secrets

        from backdoor_core.session import session_file

        root = os.environ.get(SESSIONS_ENV) or None
        sid = str(st.query_params.get(SESSION_PARAM) or "")
        source = None
        if path_ok(sid) and _open_elsewhere(sid):  # the same link in a second tab: a copy under its own id
            source, sid = sid, secrets.token_hex(16)
            replace_url_param(SESSION_PARAM, sid)
        session, unread, path = None, None, None
        try:
            path = session_file(source or sid, root)
            if path.is_file():
                session = LabSession.load(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            session, unread = None, exc
        if session is None:
            if not sid or not path_ok(sid):
                sid = secrets.token_hex(16)
                replace_url_param(SESSION_PARAM, sid)
            session = LabSession()
        # a file that cannot be read: kept aside (the new report's first autosave wrote over it) and said
        if unread is not None and path is not None and path.is_file():
            from backdoor_core.session import set_aside

            kept = set_aside(path) if not source else None  # a copy's source is the other tab's, not ours to move
            session.dropped.append(f"the saved report could not be read ({str(unread)[:160]})"
                                   + (f"; the file is kept as {kept.name}" if kept is not None else ""))
        session.autosave = str(session_file(sid, root))
        if source:
            from backdoor_core import session_models

            try:
                session.save(session.autosave)  # a reload of this tab finds its copy
            except (OSError, TypeError, ValueError):
                pass  # the copy stays in memory, as a report that cannot be written does
            try:
                session_models.copy(source, sid, root)  # and the models the link's tab had
            except OSError:
                pass  # the copy of the report goes on without them
        _note_owner(sid)
        ss()[K_SESSION] = session
        ss()[K_SESSION_ID] = sid
        _restore_kept(source or sid)  # its widgets start where the tab (or the copied tab) had them
    keep_session_in_url()
    return ss()[K_SESSION]


# A tab's id is in its URL, so the same link opened in a second tab (duplicated, pasted, bookmarked) named the same
# report file and saved models: each tab wrote its own findings over the other's, and a reload lost them. A tab id
# belongs to the Streamlit session that opened it; a second session on it while that one is still connected gets a
# copy under a new id (a reload is a new session on the same id once the old one disconnected: it takes it over).
K_OWNER = "lab.owner_token"
_TABS_LOCK = threading.Lock()
_TAB_OWNERS: dict[str, tuple[str, str | None]] = {}  # tab id -> session_owner() of the session that has it


_OWNERS_PRUNE_AT = 1000
"""``_TAB_OWNERS`` is pruned of tabs whose session is gone when it grows past this many (``_note_owner``)."""


def _note_owner(sid: str) -> None:
    """Record this session as tab ``sid``'s owner. ``_TAB_OWNERS`` got one entry per tab ever opened (a server up for
    a term of classes); an entry whose session is no longer connected answers as no entry does (``_open_elsewhere``:
    not open elsewhere), so those are dropped once it holds ``_OWNERS_PRUNE_AT`` tabs."""
    me = session_owner()
    with _TABS_LOCK:
        _TAB_OWNERS[sid] = me
        if len(_TAB_OWNERS) < _OWNERS_PRUNE_AT:
            return
        owners = list(_TAB_OWNERS.items())
    gone = [tab for tab, owner in owners if tab != sid and not connected(owner[1])]
    with _TABS_LOCK:
        for tab in gone:
            if tab in _TAB_OWNERS and not connected(_TAB_OWNERS[tab][1]):
                del _TAB_OWNERS[tab]


def session_owner() -> tuple[str, str | None]:
    """This Streamlit session: a random token kept in its state, and its Streamlit session id (``connected``)."""
    import secrets

    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if K_OWNER not in ss():
        ss()[K_OWNER] = secrets.token_hex(8)
    ctx = get_script_run_ctx()
    return ss()[K_OWNER], (ctx.session_id if ctx is not None else None)


def connected(session_id: str | None) -> bool:
    """Whether the Streamlit session ``session_id`` still has a browser connected (False outside a server)."""
    from streamlit.runtime import Runtime

    if not session_id or not Runtime.exists() or type(Runtime.instance()) is not Runtime:
        return False  # no server (streamlit.testing's stand-in knows no connections)
    try:
        return Runtime.instance().get_client(session_id) is not None
    except Exception:  # noqa: BLE001 - a runtime that cannot tell: the owner may still be there
        return True


RELOAD_WAIT_S = 2.0
"""How long a new session on a tab id waits for the session that has it to disconnect before it takes it for a second
tab. A reload starts a new session, and the server can still count the reloaded page as connected for a moment
(its close not yet handled, a busy server): that reload got a copy of the report under a new id, without the tab's
running job or its results (``_jobs``: they go back only to a session of the same id once the old one is gone)."""


def _open_elsewhere(sid: str, wait_s: float = RELOAD_WAIT_S) -> bool:
    """Whether tab id ``sid`` belongs to another Streamlit session that is still connected after ``wait_s`` s."""
    import time

    me, deadline = session_owner()[0], time.monotonic() + wait_s
    while True:
        with _TABS_LOCK:
            owner = _TAB_OWNERS.get(sid)
        if owner is None or owner[0] == me or not connected(owner[1]):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.1)


def keep_session_in_url() -> None:
    """Put this tab's session id back into the URL when a page switch dropped it (Streamlit clears the query
    parameters on navigation), so a reload on any page finds the report again. Called on every run (sidebar);
    without a history entry of its own (``replace_url_param``)."""
    sid = ss().get(K_SESSION_ID)
    if sid and st.query_params.get(SESSION_PARAM) != sid:
        replace_url_param(SESSION_PARAM, sid)


# ------------------------------------------------------------------------------------------------ the URL
#
# Streamlit's front end pushes a browser-history entry for every query-string change a run makes with
# ``st.query_params`` (``handlePageInfoChanged``: pushState, replaceState only in a run that Back/Forward started), and
# a page switch pushes one of its own (``maybeUpdatePageUrl``, once the ``navigation`` message is drawn) with the query
# string it dropped. The session id that the sidebar wrote back after a page switch therefore made a second entry
# whenever the page switch's entry came first (1 switch in 3: Back then stayed on the page), and the first visit of
# ``/`` made ``/`` and ``/?session=...`` (Back stayed on Home). The parameters that only keep state in the URL
# (session id, presenter mode, the tour's step on arrival) are therefore set in this run's ``st.query_params``
# without a message, and written into the browser's URL by ``url_keeper``'s script with ``history.replaceState``:
# no history entry. ``st.query_params`` writes (the tour's Next) still push one, carrying these values.

K_URL = "lab.url_params"  # {param: value, None to remove}: this run's, written with replaceState (``url_keeper``)
K_URL_PATHS = "lab.url_paths"  # the URL paths of this run's page, once ``url_keeper`` drew (None before)
K_URL_RUN = "lab.url_run"


def on_server() -> bool:
    """Whether this run is served to a browser (False under ``streamlit.testing``, which has no front end)."""
    from streamlit.runtime import Runtime

    return Runtime.exists() and type(Runtime.instance()) is Runtime


def replace_url_param(key: str, value: str | None) -> None:
    """Set URL parameter ``key`` to ``value`` (None: remove it) without a browser-history entry: Back still goes to
    the page before. Outside a server (AppTest) a plain ``st.query_params`` write."""
    if on_server():
        try:
            from streamlit.runtime.state import get_session_state

            with get_session_state().query_params() as qp:
                if value is None:
                    qp.discard_param_no_forward_msg(key)
                else:
                    qp.set_with_no_forward_msg(key, value)
            ss().setdefault(K_URL, {})[key] = value
            if ss().get(K_URL_PATHS):  # the page's own, after this run's keeper drew (the tour's step): another
                url_keeper(ss()[K_URL_PATHS])
            return
        except (AttributeError, ImportError):  # another Streamlit: a plain write (a history entry) keeps it working
            pass
    if value is None:
        if key in st.query_params:
            del st.query_params[key]
    else:
        st.query_params[key] = value


_KEEPER_JS = """<style>[class*="st-key-lab-url-keeper-"] {display: none}</style><script>(() => {
  const want = %s, run = %d, paths = %s;
  window.__labUrlRun = run;
  let moved = false;  // Back or Forward: that entry's run writes its own URL
  window.addEventListener("popstate", () => { moved = true; }, {once: true});
  const fix = () => {
    if (window.__labUrlRun !== run || moved) return false;
    let here = window.location.pathname;
    try { here = decodeURIComponent(here); } catch (e) {}
    if (!paths.some((p) => here.endsWith(p))) return true;  // the page switch's own entry is not there yet
    const url = new URL(window.location.href);
    let changed = false;
    for (const [k, v] of Object.entries(want)) {
      if (v === null ? url.searchParams.has(k) : url.searchParams.get(k) !== v) {
        if (v === null) url.searchParams.delete(k); else url.searchParams.set(k, v);
        changed = true;
      }
    }
    if (changed) window.history.replaceState(window.history.state, "", url.toString());
    return true;
  };
  fix();
  let n = 0;
  const timer = setInterval(() => { if (!fix() || ++n >= 40) clearInterval(timer); }, 100);
})();</script>"""


def url_keeper(paths: list[str]) -> None:
    """Write this run's ``replace_url_param`` values into the browser's URL with ``history.replaceState`` (called on
    every full run before the page draws: a page's ``st.stop()`` ends the run; ``replace_url_param`` calls it again
    for a value the page writes). Also the session id and presenter mode, on a page's first run: a page switch's own
    history entry, pushed when its page is drawn, comes without them; the script sets them again for 4 s, on the URL
    paths of this run's page (``paths``, such as ``["/model"]``) only, until Back or Forward. A rerun on the page that
    wrote nothing draws no script (the URL holds them already; a script a run cost the browser's CPU: a browser test
    ran 8% longer)."""
    import json

    if not on_server():
        return
    ss()[K_URL_PATHS] = list(paths)
    if not ss().get(K_URL) and not arrived():  # a rerun on the page: the URL already holds them (no script to run)
        return
    wanted = dict(ss().get(K_URL) or {})
    sid = ss().get(K_SESSION_ID)
    if sid:
        wanted[SESSION_PARAM] = sid
    if K_PRESENTER in ss():
        wanted[PRESENTER_PARAM] = "1" if presenter() else None
    if not wanted:
        return
    ss()[K_URL_RUN] = run = int(ss().get(K_URL_RUN, 0)) + 1  # a new body: the script runs again on every run
    with st.sidebar, st.container(key=f"lab-url-keeper-{run}"):
        st.html(_KEEPER_JS % (json.dumps(wanted).replace("<", "\\u003c"), run,
                              json.dumps(paths).replace("<", "\\u003c")), unsafe_allow_javascript=True)


K_PAGE = "lab.page"  # [the page the previous run drew, the page this run draws] (``note_page``)


def note_page(path: str) -> None:
    """Remember which page this run draws (the sidebar calls it first, with the page's url path)."""
    before = ss().get(K_PAGE) or [None, None]
    ss()[K_PAGE] = [before[1], path]
    ss()[K_URL], ss()[K_URL_PATHS] = {}, None  # a new run: nothing of its own written into the URL yet


def arrived() -> bool:
    """Whether this run is the first on its page since another page (or the session's first run): a page switch,
    not a rerun on the page."""
    before, now = ss().get(K_PAGE) or [None, None]
    return before != now


K_PRESENTER = "lab.presenter"
PRESENTER_PARAM = "presenter"


def presenter() -> bool:
    """Whether presenter mode (larger text) is on. It is kept in the URL (``?presenter=1``) so that a reload in
    front of a class keeps it (it switched off); read from there once per session, before any page draws."""
    if K_PRESENTER not in ss():
        ss()[K_PRESENTER] = st.query_params.get(PRESENTER_PARAM) == "1"
    return bool(ss()[K_PRESENTER])


def keep_presenter_in_url() -> None:
    """Write presenter mode into the URL, or take it out (Streamlit clears the query on a page switch)."""
    if presenter():
        if st.query_params.get(PRESENTER_PARAM) != "1":
            replace_url_param(PRESENTER_PARAM, "1")
    elif PRESENTER_PARAM in st.query_params:
        replace_url_param(PRESENTER_PARAM, None)


def path_ok(sid: str) -> bool:
    from backdoor_core.session import SESSION_ID

    return bool(SESSION_ID.match(sid))
