"""The current model: shared read-only models (``st.cache_resource``), per-session copies, locks, the zoo, and
the gate a page passes before it uses a model with a dataset."""

from __future__ import annotations

import copy
import threading
import weakref
from pathlib import Path

import streamlit as st

from backdoor_core import session_models as SM
from backdoor_core import settings as S

from app_pages._data import data_label, data_spec, dataset, dataset_or_none, server_files_allowed
from app_pages._state import K_MODEL, K_SESSION_MODELS, kept, lab, ss, test_model_name
from app_pages._text import md

K_DEVICE = "lab.device"  # the sidebar's device choice (backdoor_core.device.DEVICE_CHOICES)
from app_pages._widgets import show_error


# ------------------------------------------------------------------------------------------------ models


@st.cache_resource(show_spinner=False, max_entries=8)
def shared_model(spec: str, allow_pickle: bool = False, labels: tuple[str, ...] | None = None,
                 device: str = S.DEVICE):
    """A model shared read-only by every session (never train it: use ``session_copy``); ``device`` as in
    ``backdoor_core.device.resolve_device`` (the sidebar's choice)."""
    from backdoor_core.models import load_model, tiny_model

    if spec == "tiny":
        n = len(labels) if labels else 2
        loaded = tiny_model(num_labels=n, seed=0)
        if labels:
            loaded.model.config.id2label = {i: str(x) for i, x in enumerate(labels)}
            loaded.model.config.label2id = {str(x): i for i, x in enumerate(labels)}
        loaded.metadata = {"note": "random tiny BERT for tests"}
        return loaded
    return load_model(spec, label_names=list(labels) if labels else None, allow_pickle=allow_pickle,
                      device=device)


def default_ref() -> dict:
    """The model used before the user picks one: the test model, the zoo's clean model, or the packaged one."""
    labels = None
    try:
        labels = tuple(dataset("train").label_names)
    except Exception:  # noqa: BLE001 - no dataset yet is fine
        pass
    test = test_model_name()
    if test:
        return {"kind": "shared", "spec": test, "allow_pickle": False, "labels": labels, "name": test}
    for entry in zoo_entries():
        if entry.get("clean") and entry.get("path"):
            return {"kind": "shared", "spec": str(entry["path"]), "allow_pickle": False, "labels": None,
                    "name": entry.get("name", "zoo clean")}
    return {"kind": "shared", "spec": "default", "allow_pickle": False, "labels": labels, "name": "default"}


def model_ref() -> dict:
    if K_MODEL not in ss():
        ss()[K_MODEL] = default_ref()
    return ss()[K_MODEL]


def set_shared_model(spec: str, *, allow_pickle: bool = False, labels: tuple[str, ...] | None = None,
                     name: str | None = None) -> None:
    ss()[K_MODEL] = {"kind": "shared", "spec": spec, "allow_pickle": allow_pickle, "labels": labels,
                     "name": name or spec}
    ss().pop("lab.model_error", None)
    _kept_on_disk(lambda sid, root: SM.set_current(sid, None, root))  # a reload opens this model, not a kept one


def session_models() -> dict:
    if K_SESSION_MODELS not in ss():
        ss()[K_SESSION_MODELS] = {}
    return ss()[K_SESSION_MODELS]


K_ORIGINS = "lab.session_origins"  # {session model name: how it came to be ("trained in this session from …")}


# A reload starts a new Streamlit session, which loaded this tab's kept models from disk: while the reloaded page's
# result (``_jobs.keep_result``: the Attack lab's result holds the trained model) or the old session (Streamlit keeps
# a disconnected one 2 minutes for a reconnect) still held the model in memory, the tab held it twice (measured:
# ``bench/memory_class.py``, one more ``LoadedModel`` per reloaded tab). So the models a tab made are also listed
# here, by weak reference, under its id and name; ``restore_session_models`` takes a model still alive instead of
# loading a second copy. A weak reference keeps nothing alive: our design adds no memory of its own.
_LIVE_LOCK = threading.Lock()
_LIVE: dict[tuple[str, str], weakref.ref] = {}  # (tab id, model name) -> weak reference to its LoadedModel


def _note_live(name: str, loaded) -> None:
    """List ``loaded`` as this tab's model ``name`` (``_LIVE``); entries whose model died are forgotten."""
    from app_pages._state import K_SESSION_ID

    sid = ss().get(K_SESSION_ID)
    if not sid:
        return
    try:
        ref = weakref.ref(loaded)
    except TypeError:  # an object that takes no weak reference: loaded from disk on a reload, as before
        return
    with _LIVE_LOCK:
        for key in [k for k, r in _LIVE.items() if r() is None]:
            del _LIVE[key]
        _LIVE[(sid, name)] = ref


def _live_model(sid: str, name: str):
    """This tab's model ``name`` if an object of it is still alive (``_note_live``), else None."""
    with _LIVE_LOCK:
        ref = _LIVE.get((sid, name))
    return ref() if ref is not None else None


def set_session_model(name: str, loaded, origin: str | None = None) -> None:
    """Make ``loaded`` (a per-session LoadedModel, e.g. just trained) the current model.

    ``origin`` says where it came from, in words ("trained in this session from <base>", "uploaded in this
    session from m.zip"); without it ``session_origin`` reads it from the model card."""
    session_models()[name] = loaded
    _note_live(name, loaded)
    origins = ss().setdefault(K_ORIGINS, {})
    if origin:
        origins[name] = origin
    else:
        origins.pop(name, None)  # an older model of that name came from elsewhere
    with st.spinner("Keeping the model for a reload of this page…"):
        _kept_on_disk(lambda sid, root: SM.save(sid, name, loaded, origins.get(name, ""), root))
    use_session_model(name)


def use_session_model(name: str) -> None:
    """Make this session's model ``name`` (in ``session_models``) the current model again."""
    ss()[K_MODEL] = {"kind": "session", "name": name}
    ss().pop("lab.model_error", None)
    _kept_on_disk(lambda sid, root: SM.set_current(sid, name, root))


K_RESTORED = "lab.session_models_restored"


def _kept_on_disk(action) -> None:
    """Run ``action(session id, sessions folder)`` on this tab's saved models (``backdoor_core.session_models``,
    beside its report log, so a reload gets them back). A disk that refuses is not the user's problem now: the
    model stays in memory, and the failure is kept for the Model page to mention."""
    import os

    from app_pages._state import K_SESSION_ID, SESSIONS_ENV

    sid = ss().get(K_SESSION_ID)
    if not sid:
        return
    try:
        action(sid, os.environ.get(SESSIONS_ENV) or None)
    except Exception as exc:  # noqa: BLE001 - a full disk, a read-only cache: the session goes on in memory
        ss()["lab.keep_error"] = f"{type(exc).__name__}: {exc}"


def restore_session_models() -> None:
    """Once per Streamlit session: bring back the models this tab trained, repaired or uploaded before a reload
    (``session_models.saved``), their origins, and the current one; and delete the kept models of sessions
    untouched for ``session_models.MAX_AGE_DAYS``. Called by the sidebar after ``lab()`` knows the tab's id. A model
    still alive in this server's memory (``_live_model``: the reloaded page's kept result holds it) is taken as it
    is, not loaded a second time from its copy on disk."""
    import os

    from app_pages._state import K_SESSION_ID, SESSIONS_ENV

    if ss().get(K_RESTORED):
        return
    ss()[K_RESTORED] = True
    sid, root = ss().get(K_SESSION_ID), os.environ.get(SESSIONS_ENV) or None
    if not sid:
        return
    try:
        SM.prune(root)
        rows, current = SM.saved(sid, root)
    except (OSError, ValueError):
        return
    if not rows:
        return
    origins = ss().setdefault(K_ORIGINS, {})
    lost: list[str] = []
    with st.spinner(f"Bringing back this tab's {len(rows)} model(s) from before the reload…"):
        for entry in rows:
            live = _live_model(sid, entry.name)  # still in memory (a result kept for the reload): not twice
            try:
                session_models()[entry.name] = live if live is not None else SM.load(entry, kept(K_DEVICE, S.DEVICE))
            except Exception as exc:  # noqa: BLE001 - a model that no longer loads is left out, the others come back
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                lost.append(f"{entry.name[:80]} ({why[:160]})")
                continue
            _note_live(entry.name, session_models()[entry.name])
            if entry.origin:
                origins[entry.name] = entry.origin
    if lost:  # a copy on disk changed or damaged since: said once, in one line (it was left out without a word)
        st.warning(md(f"{len(lost)} of this tab's models could not be brought back after the reload: "
                      + "; ".join(lost[:3]) + (" …" if len(lost) > 3 else "")), icon=":material/warning:")
    if current in session_models() and K_MODEL not in ss():
        ss()[K_MODEL] = {"kind": "session", "name": current}


def source_label(source: str) -> str:
    """A model's ``source`` in words: the packaged encoder, a zoo model's title, else the source itself."""
    source = str(source or "")
    if source == "default":
        return "the packaged base encoder (all-MiniLM-L6-v2)"
    if source == "tiny":
        return "the tiny test model"
    try:
        for entry in zoo_entries():
            if entry.get("path") and str(entry["path"]) == source:
                return f"the zoo model {entry.get('title') or entry.get('name')}"
    except Exception:  # noqa: BLE001 - a label, never a failure
        pass
    return source or "an unknown model"


def session_origin(name: str, loaded) -> str:
    """Where this session's model ``name`` came from, in words: "trained in this session from the packaged base
    encoder (all-MiniLM-L6-v2)", "sanitized in this session (alignment)", "uploaded in this session from m.zip".
    Untrusted (names, file names): pass it through ``md``."""
    origin = ss().get(K_ORIGINS, {}).get(name)
    if origin:
        return str(origin)
    card = loaded.card
    if card.defense:
        return f"sanitized in this session ({card.defense})"
    return f"made in this session from {source_label(loaded.source)}"


def session_origin_short(name: str, loaded) -> str:
    """``session_origin`` without what it started from: "trained in this session"."""
    return session_origin(name, loaded).partition(" from ")[0]


def load_ref(ref: dict):
    """The LoadedModel a ref points to (raises ModelLoadError / KeyError)."""
    if ref["kind"] == "session":
        return session_models()[ref["name"]]
    labels = tuple(ref["labels"]) if ref.get("labels") else None
    return shared_model(ref["spec"], bool(ref.get("allow_pickle")), labels, kept(K_DEVICE, S.DEVICE))


def current_model(show_errors: bool = True):
    """The current LoadedModel, or None (with an error message) when it cannot be loaded."""
    from backdoor_core.models import ModelLoadError

    ref = model_ref()
    try:
        with st.spinner(f"Loading model {md(ref.get('name') or ref.get('spec'))}…"):
            loaded = load_ref(ref)
    except (ModelLoadError, KeyError, OSError, ValueError) as exc:
        ss()["lab.model_error"] = str(exc)
        if show_errors:
            show_error(exc, "Model: ")
        return None
    summary = loaded.summary()
    if lab().model.get("source") != summary.get("source") or lab().model.get("name") != summary.get("name"):
        lab().set_model(summary)
    return loaded


class ModelLock:
    """A model's lock (``model_lock``): a re-entrant lock that never waits for a second model while holding a first.

    The Compare page holds its model A's lock and then its model B's: one user comparing the zoo's clean model with
    a backdoored one while another compared them the other way round held one lock each and waited for the other's,
    for ever, and with them every user's page that ran either model (the default one). A thread that holds model
    locks and cannot take another at once gives them back and takes them all again in one order (the models' ids):
    nothing runs between the locks of one ``with`` statement, so no caller sees the difference."""

    def __init__(self, key: int):
        self.key = key
        self._lock = threading.RLock()

    def __enter__(self) -> "ModelLock":
        held = _held_locks()
        if self in held or not held:  # taken again, or the first: waiting holds nothing another thread needs
            self._lock.acquire()
        elif not self._lock.acquire(blocking=False):  # another thread has it, and may be waiting for ours
            mine = list(held.items())
            for lock, depth in mine:
                for _ in range(depth):
                    lock._lock.release()
            held.clear()
            for lock, depth in sorted([*mine, (self, 0)], key=lambda item: item[0].key):
                for _ in range(depth or 1):
                    lock._lock.acquire()
                held[lock] = depth
        held[self] = held.get(self, 0) + 1
        return self

    def __exit__(self, *exc) -> None:
        held = _held_locks()
        held[self] -= 1
        if not held[self]:
            del held[self]
        self._lock.release()


_HELD = threading.local()


def _held_locks() -> dict[ModelLock, int]:
    """The model locks this thread holds, and how many times each (in the order they were taken)."""
    if not hasattr(_HELD, "locks"):
        _HELD.locks = {}
    return _HELD.locks


_LOCKS: dict[int, ModelLock] = {}
_LOCKS_GUARD = threading.Lock()


def model_lock(loaded) -> ModelLock:
    """One lock per model object. Hold it while using a model or tokenizer that other threads can reach.

    Fast tokenizers are not thread-safe: a call with other truncation/padding settings reconfigures the shared
    Rust tokenizer under a concurrent call ("Unable to create tensor..."), and the head-importance scan hooks
    into the model's modules. Streamlit runs each session's script in its own thread and background jobs in
    theirs, so a model shared through ``st.cache_resource`` is only touched under this lock, and jobs get a
    private copy (``session_copy``). Two models' locks may be held together, taken in any order (``ModelLock``).
    """
    key = id(loaded)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = ModelLock(key)
            _forget_lock_with(loaded, key)
    return lock


def _forget_lock_with(loaded, key: int) -> None:
    """Drop ``loaded``'s lock from ``_LOCKS`` when the model is freed. ``_LOCKS`` kept one lock for every model a
    session ever locked (every training's copy, every reloaded tab's models), and a new model that got a freed one's
    ``id`` got its lock too. A lock still held then stays with its holder; the entry goes (a plain ``dict.pop``: the
    finalizer may run in any thread, also one inside ``_LOCKS_GUARD``)."""
    def forget(lock_key: int = key, locks: dict = _LOCKS) -> None:
        locks.pop(lock_key, None)

    try:
        weakref.finalize(loaded, forget)
    except TypeError:  # no weak reference (not a LoadedModel): its lock stays, as before
        pass


def session_copy(loaded, name: str | None = None):
    """A private deep copy of ``loaded`` (model AND tokenizer) that may be trained, sanitized or scanned."""
    from backdoor_core.models import LoadedModel

    with model_lock(loaded):
        return LoadedModel(
            model=copy.deepcopy(loaded.model),
            tokenizer=copy.deepcopy(loaded.tokenizer),
            name=name or loaded.name,
            source=loaded.source,
            metadata=copy.deepcopy(loaded.metadata),
            card_warnings=list(loaded.card_warnings),
            load_notes=list(loaded.load_notes),
            untrained_head=loaded.untrained_head,
        )


def labels_problem(loaded, ds) -> str | None:
    """A message when the model's classes do not fit the dataset (their number, or their names and order where
    both name them: ``data.label_mismatch``), else None."""
    from backdoor_core.data import DataError, align_labels, check_labels_match

    if loaded is None or ds is None:
        return None
    try:  # the same names in another order are read in the model's order (the pages' data is: _load_dataset)
        check_labels_match(align_labels(ds, loaded.label_names), loaded.num_labels, loaded.label_names)
    except DataError as exc:
        return f"{exc}. Pick a matching dataset or model on the Model page."
    return None


def require_rows(train, test, page: str, *, train_min: int = 0, test_min: int = 0) -> None:
    """Stop ``page`` (its name in a sentence: "the Attack lab") with a message when the dataset has fewer
    training or test texts than its number fields start at (a field whose minimum is above its maximum raises
    ``StreamlitInvalidMinMaxError``): how many it has, and how many the page needs."""
    short = [f"{need} {what} texts (it has {len(ds)})" for ds, need, what in
             ((train, train_min, "training"), (test, test_min, "test")) if ds is not None and len(ds) < need]
    if short:
        st.warning(md(f"This dataset ({data_label()}) is too small for {page}: it needs at least "
                      + " and ".join(short) + ". Pick a larger dataset on the Model page."),
                   icon=":material/dataset:")
        st.stop()


# ------------------------------------------------------------------------------------------------ zoo


def zoo_dir() -> Path:
    """The zoo folder (``zoo.default_zoo_dir``: ``$BACKDOOR_ZOO_DIR`` or the user cache)."""
    from backdoor_core.zoo import default_zoo_dir

    return default_zoo_dir()


def zoo_entries() -> list[dict]:
    """The demo-zoo models: the shipped ones (``assets/zoo``) and any built in the zoo folder (``zoo.list_models``:
    name, title, path, attack, cacc, asr, clean, shipped...)."""
    from backdoor_core.zoo import list_models

    return list_models(zoo_dir(), shipped=True)


def zoo_table(entries: list[dict], full: bool = True) -> None:
    """The demo-zoo models as one table (``zoo_entries`` rows): title, poison rate, TAL, CACC and ASR as a bar (the
    clean model's cell stays empty: it has no trigger); ``full`` adds the attack and its trigger (the Model page;
    the tour shows the doses only)."""
    rows = []
    for e in entries:
        row = {"model": e.get("title") or e["name"]}
        if full:
            trigger = e.get("trigger")
            row.update(attack=e.get("attack") or "none",
                       trigger=", ".join(trigger) if isinstance(trigger, list) else (trigger or ""))
        row.update({"poison rate": e.get("rate"), "TAL": bool(e.get("tal")), "CACC": e.get("cacc"),
                    "ASR (attack success)": e.get("asr")})
        rows.append(row)
    if not rows:
        return
    st.dataframe(rows, hide_index=True, column_config={
        "poison rate": st.column_config.NumberColumn(format="percent"),
        "CACC": st.column_config.NumberColumn(format="percent", help="Accuracy on the clean test texts."),
        "ASR (attack success)": st.column_config.ProgressColumn(
            min_value=0.0, max_value=1.0, format="percent",
            help="The share of triggered test texts not of the target class that the model puts in it (empty for "
                 "the clean model: it has no trigger)."),
    })


NO_REFERENCE = "None"
FOLDER_REFERENCE = "A local folder…"


def clean_references(loaded) -> tuple[dict[str, tuple | None], str]:
    """The Sanitize page's choices of a clean reference (a model of the same task without the backdoor, whose rate
    on the same triggered texts is the clean rate: ``defender_data.clean_hits``' mean), and the default one.

    Returns ``(options, default)``: ``options`` maps a label to ``("zoo", path)`` (the zoo's clean models),
    ``("model", LoadedModel)`` (this session's other models), ``("folder", None)`` (a saved model folder the
    page asks for; safetensors only; offered where ``server_files_allowed``) or None (no reference); the default
    is the zoo's clean model when the current model is a zoo model (the same data and classes), else no
    reference."""
    here = str(getattr(loaded, "source", ""))
    entries = zoo_entries()
    options: dict[str, tuple | None] = {NO_REFERENCE: None}
    for entry in entries:
        if entry.get("clean") and entry.get("path") and str(entry["path"]) != here:
            options[f"Zoo: {entry.get('title') or entry.get('name')}"] = ("zoo", str(entry["path"]))
    for name, lm in session_models().items():
        if lm is not loaded:
            options.setdefault(f"Session model: {name}", ("model", lm))
    if server_files_allowed():  # a browser on another machine names no server folder (_data.server_files_allowed)
        options[FOLDER_REFERENCE] = ("folder", None)
    from_zoo = any(str(e.get("path")) == here for e in entries if e.get("path"))
    default = next((k for k, v in options.items() if v is not None and v[0] == "zoo"), NO_REFERENCE) \
        if from_zoo else NO_REFERENCE
    return options, default


def require_model_and_data():
    """The current model and the dataset's train/test splits, or stop the page with a message.

    Returns ``(loaded, train, test)``; stops (``st.stop``) when a piece is missing or the dataset's classes do
    not match the model's (the message says so).
    """
    loaded = current_model()
    if loaded is None:
        st.stop()
    train = dataset_or_none("train", loaded.label_names)  # numbered classes read as the model's named ones
    test = dataset_or_none("test", loaded.label_names) if train is not None else None
    if train is None or test is None:
        st.stop()
    problem = labels_problem(loaded, train)
    if problem:
        st.error(md(problem), icon=":material/warning:")  # it names the data's classes
        st.stop()
    return loaded, train, test
