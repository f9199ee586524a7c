"""Shared plumbing for the app's pages: state, cached models and data, the sidebar, jobs, messages.

Pages import this module (``from app_pages import _common as ui``); it is not a page itself. Everything about models,
data, attacks and defenses lives in ``backdoor_core``; this module only keeps Streamlit state and draws.

Session-state keys (stable, so state survives page switches):

* ``lab.model_ref``   — which model is current: ``{"kind": "shared", "spec", "allow_pickle", "labels"}`` (loaded
  through ``st.cache_resource``, read-only, shared across sessions) or ``{"kind": "session", "name"}`` (a
  per-session copy: trained or sanitized here, kept in ``lab.session_models``).
* ``lab.data_spec``   — the dataset spec string (``bbc``, ``sst2``, a path...).
* ``lab.session``     — ``backdoor_core.session.LabSession`` (what this session found, for the Report page).
* ``lab.jobs``        — ``{kind: backdoor_core.jobs.Job}``, one background job per kind ("attack", "scan"...).
* widget keys such as ``inspect.text`` — kept across page switches (``persist_state="session"``, see ``keep``).

Test hooks: with the environment variable ``BACKDOOR_LAB_TEST_MODEL=tiny`` the default model is the random tiny
BERT (2 layers x 4 heads) so AppTest and the browser test run in seconds (a model folder's path works too);
``BACKDOOR_LAB_TEST_DATA=<file>`` replaces the default dataset (the hostile-input tests use both).
"""

from __future__ import annotations

import copy
import html
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from backdoor_core.jobs import Job, JobSnapshot, start_job
from backdoor_core.session import LabSession
from app_pages._text import md, md_code

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
TEST_MODEL_ENV = "BACKDOOR_LAB_TEST_MODEL"
TEST_DATA_ENV = "BACKDOOR_LAB_TEST_DATA"
DEFAULT_DATA = "bbc"
POLL_SECONDS = 1.0

K_MODEL = "lab.model_ref"
K_SESSION_MODELS = "lab.session_models"
K_DATA = "lab.data_spec"
K_SESSION = "lab.session"
K_JOBS = "lab.jobs"
K_TMP = "lab.tmp"


# ------------------------------------------------------------------------------------------------ basics


def ss() -> Any:
    return st.session_state


def test_model_name() -> str | None:
    return os.environ.get(TEST_MODEL_ENV) or None


def keep(key: str, default: Any) -> dict:
    """Widget kwargs that keep its value across page switches (Streamlit's ``persist_state="session"``).

    Usage: ``st.text_area("Text", **keep("inspect.text", "A sentence"))`` — do not pass ``value``/``index``:
    the default is put into session state the first time, so code may also set it (``set_kept``).
    """
    if key not in ss():
        ss()[key] = default
    return {"key": key, "persist_state": "session"}


def kept(key: str, default: Any = None) -> Any:
    """The current value of a ``keep`` widget (also before it is drawn on this run)."""
    return ss().get(key, default)


def set_kept(key: str, value: Any) -> None:
    """Set a ``keep`` widget's value from code (only before the widget is drawn in this run)."""
    ss()[key] = value


def lab() -> LabSession:
    if K_SESSION not in ss():
        ss()[K_SESSION] = LabSession()
    return ss()[K_SESSION]


def show_error(exc: BaseException, prefix: str = "") -> None:
    """A plain message for a core error (never a traceback)."""
    text = str(exc).strip() or type(exc).__name__
    st.error(md(f"{prefix}{text}"), icon=":material/warning:")  # messages quote file names, labels, texts


def inject_css() -> None:
    css = (ASSETS / "style.css").read_text(encoding="utf-8") if (ASSETS / "style.css").is_file() else ""
    if ss().get("lab.presenter", False):
        css += (ASSETS / "presenter.css").read_text(encoding="utf-8") if (ASSETS / "presenter.css").is_file() else ""
    if css:
        st.html(f"<style>{css}</style>")


# ------------------------------------------------------------------------------------------------ data


@st.cache_resource(show_spinner=False, max_entries=16)
def _load_dataset(spec: str, split: str, seed: int):
    from backdoor_core.data import load_dataset

    return load_dataset(spec, split=split, seed=seed)


def data_spec() -> str:
    if K_DATA not in ss():
        ss()[K_DATA] = os.environ.get(TEST_DATA_ENV) or DEFAULT_DATA
    return ss()[K_DATA]


def set_data_spec(spec: str) -> None:
    ss()[K_DATA] = spec


def dataset(split: str = "train", spec: str | None = None, seed: int = 0):
    """The dataset (cached, read-only). Raises ``DataError`` with a readable message."""
    spec = spec or data_spec()
    with st.spinner(f"Loading {md(spec)} ({split})…"):
        return _load_dataset(spec, split, seed)


def dataset_or_none(split: str = "train"):
    from backdoor_core.data import DataError

    try:
        return dataset(split)
    except (DataError, OSError, ValueError) as exc:
        show_error(exc, f"Dataset '{data_spec()}' ({split}): ")  # show_error escapes
        return None


class SessionTemp:
    """This browser session's private temp folder, deleted when the session's state is dropped (the tab is gone
    and Streamlit expired the session) or the server exits normally; a killed server leaves it in the temp dir."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="backdoor-lab-session-"))
        self._remove = weakref.finalize(self, shutil.rmtree, str(self.path), True)


def session_tmp() -> Path:
    """This session's temp folder (``SessionTemp``), created on first use."""
    if K_TMP not in ss() or not ss()[K_TMP].path.is_dir():
        ss()[K_TMP] = SessionTemp()
    return ss()[K_TMP].path


def save_upload(uploaded, subdir: str) -> Path:
    """Write an uploaded file into a fresh folder inside ``session_tmp()`` and return its path.

    The caller removes it with ``discard_upload`` as soon as it is not needed (at once for a model .zip, once it
    is replaced for a data file); whatever is left goes with the session's folder.
    """
    folder = Path(tempfile.mkdtemp(prefix=f"{subdir}-", dir=session_tmp()))
    path = folder / (Path(uploaded.name).name or "upload")
    try:
        path.write_bytes(uploaded.getvalue())
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return path


def discard_upload(path: str | os.PathLike | None) -> None:
    """Delete the folder ``save_upload`` made for ``path`` (nothing else: other paths are left alone)."""
    if not path:
        return
    folder = Path(path).parent
    tmp = ss()[K_TMP].path if K_TMP in ss() else None
    if tmp is not None and folder.parent == tmp and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ models


@st.cache_resource(show_spinner=False, max_entries=8)
def shared_model(spec: str, allow_pickle: bool = False, labels: tuple[str, ...] | None = None):
    """A model shared read-only by every session (never train it: use ``session_copy``)."""
    from backdoor_core.models import load_model, tiny_model

    if spec == "tiny":
        n = len(labels) if labels else 2
        loaded = tiny_model(num_labels=n, seed=0)
        if labels:
            loaded.model.config.id2label = {i: str(x) for i, x in enumerate(labels)}
            loaded.model.config.label2id = {str(x): i for i, x in enumerate(labels)}
        loaded.metadata = {"note": "random tiny BERT for tests"}
        return loaded
    return load_model(spec, label_names=list(labels) if labels else None, allow_pickle=allow_pickle)


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


def session_models() -> dict:
    if K_SESSION_MODELS not in ss():
        ss()[K_SESSION_MODELS] = {}
    return ss()[K_SESSION_MODELS]


def set_session_model(name: str, loaded) -> None:
    """Make ``loaded`` (a per-session LoadedModel, e.g. just trained) the current model."""
    session_models()[name] = loaded
    ss()[K_MODEL] = {"kind": "session", "name": name}
    ss().pop("lab.model_error", None)


def load_ref(ref: dict):
    """The LoadedModel a ref points to (raises ModelLoadError / KeyError)."""
    if ref["kind"] == "session":
        return session_models()[ref["name"]]
    labels = tuple(ref["labels"]) if ref.get("labels") else None
    return shared_model(ref["spec"], bool(ref.get("allow_pickle")), labels)


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


_LOCKS: dict[int, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def model_lock(loaded) -> threading.RLock:
    """One lock per model object. Hold it while using a model or tokenizer that other threads can reach.

    Fast tokenizers are not thread-safe: a call with other truncation/padding settings reconfigures the shared
    Rust tokenizer under a concurrent call ("Unable to create tensor..."), and the head-importance scan hooks
    into the model's modules. Streamlit runs each session's script in its own thread and background jobs in
    theirs, so a model shared through ``st.cache_resource`` is only touched under this lock, and jobs get a
    private copy (``session_copy``).
    """
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(loaded), threading.RLock())


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
            untrained_head=loaded.untrained_head,
        )


def labels_problem(loaded, ds) -> str | None:
    """A message when the model's classes do not fit the dataset, else None."""
    from backdoor_core.data import DataError, check_labels_match

    if loaded is None or ds is None:
        return None
    try:
        check_labels_match(ds, loaded.num_labels)
    except DataError as exc:
        return f"{exc}. Pick a matching dataset or model on the Model page."
    return None


# ------------------------------------------------------------------------------------------------ zoo


def zoo_dir() -> Path:
    """The zoo folder (``zoo.default_zoo_dir``: ``$BACKDOOR_ZOO_DIR`` or the user cache)."""
    from backdoor_core.zoo import default_zoo_dir

    return default_zoo_dir()


def zoo_entries() -> list[dict]:
    """The demo-zoo models on disk (``zoo.list_models``: name, title, path, attack, cacc, asr...), each with
    ``clean`` set for models without an attack; [] without a zoo."""
    from backdoor_core.zoo import list_models

    return [{**row, "clean": row.get("attack") in (None, "", "none", "clean")} for row in list_models(zoo_dir())]


# ------------------------------------------------------------------------------------------------ sidebar


def _fmt_rate(v: Any) -> str:
    return f"{float(v):.1%}" if isinstance(v, (int, float)) else str(v)


def _sidebar_jobs() -> None:
    """Running jobs with live progress (polls while any runs; a finished job triggers a full rerun)."""
    if not any(j.active for j in jobs().values()):
        return

    @st.fragment(run_every=2.0)
    def _jobs() -> None:
        current = list(jobs().values())
        if any(not j.active and not j.meta.get("handled") for j in current):
            st.rerun(scope="app")
        running = [j for j in current if j.active]
        if running:
            st.markdown("### Running")
        for j in running:
            snap = j.snapshot()
            st.progress(snap.fraction or 0.0, text=f"{md(j.name)} · {snap.elapsed:.0f} s")

    _jobs()


def sidebar() -> None:
    """The sidebar: current model (name, layers x heads, labels, attack metadata) and dataset; running jobs."""
    handle_finished_jobs()
    with st.sidebar:
        st.markdown("### Current model")
        loaded = current_model(show_errors=False)
        if loaded is None:
            st.error(md(ss().get("lab.model_error") or "No model loaded."), icon=":material/warning:")
        else:
            ref = model_ref()
            st.markdown(f"**{md(loaded.name)}**" + (" · *session copy*" if ref["kind"] == "session" else ""))
            st.caption(f"{loaded.num_layers} layers × {loaded.num_heads} heads · labels: "
                       + md(", ".join(loaded.label_names)))
            meta = loaded.metadata or {}
            bits = []
            if str(meta.get("attack") or "").lower() in ("none", "clean"):
                bits.append("clean (no attack)")
            elif meta.get("attack"):
                trig = meta.get("trigger")
                trig = ", ".join(trig) if isinstance(trig, (list, tuple)) else trig
                bits.append(f"attack **{md(meta['attack'])}**" + (f" · trigger {md_code(trig)}" if trig else ""))
                if meta.get("target") is not None:
                    bits.append(f"target {md(meta.get('target_name') or meta['target'])}")
                if "rate" in meta:
                    bits.append(f"ρ {md(_fmt_rate(meta['rate']))}")
                if meta.get("tal"):
                    bits.append("TAL")
            for k in ("cacc", "asr"):
                if isinstance(meta.get(k), (int, float)):
                    bits.append(f"{k.upper()} {_fmt_rate(meta[k])}")
            if meta.get("sanitized") or meta.get("defense"):
                bits.append(f"sanitized ({md(meta.get('defense', 'yes'))})")
            if bits:
                st.caption(" · ".join(bits))
            if loaded.untrained_head:
                st.caption(":material/warning: classification head untrained: predictions are random until fine-tuned")
        st.markdown("### Dataset")
        spec = data_spec()
        try:
            ds = dataset("train")
            st.caption(f"**{md(spec)}** · {len(ds):,} training texts · {ds.num_labels} labels")
            problem = labels_problem(loaded, ds)
            if problem:
                st.warning(problem, icon=":material/warning:")
        except Exception as exc:  # noqa: BLE001 - shown, never raised
            st.error(md(f"{spec}: {exc}"), icon=":material/warning:")
        _sidebar_jobs()
        st.divider()
        st.toggle("Presenter mode (larger text)", **keep("lab.presenter", False))


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
                                             "cancelled_note": cancelled_note})
    jobs()[kind] = job
    return job


def handle_finished_jobs() -> None:
    """Run the ``on_finish`` of every job that ended since the last run (called by the sidebar)."""
    for job in list(jobs().values()):
        _handle_finish(job)


def clear_job(kind: str) -> None:
    job = jobs().pop(kind, None)
    if job is not None and job.active:
        job.cancel()


def _handle_finish(job: Job) -> None:
    if job.active or job.meta.get("handled"):
        return
    job.meta["handled"] = True
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

    @st.fragment(run_every=interval if job.active else None)
    def _panel() -> None:
        snap = job.snapshot()
        if not snap.active and not job.meta.get("handled"):
            st.rerun(scope="app")  # the full run handles the result, then draws without polling
        cols = st.columns([6, 1])
        with cols[0]:
            label = {"running": "running", "pending": "starting", "done": "finished", "cancelled": "cancelled",
                     "failed": "failed"}[snap.status]
            text = f"**{md(snap.name)}** — {label} · {snap.elapsed:.0f} s"
            if snap.message and snap.active:
                text += f" · {md(snap.message)}"
            st.progress(snap.fraction or 0.0, text=text)
        with cols[1]:
            if snap.active:
                if st.button("Cancel", key=f"cancel.{kind}", type="secondary", width="stretch",
                             disabled=snap.cancel_requested):
                    job.cancel()
                    st.toast("Cancelling after the current step…")
            elif st.button("Clear", key=f"clear.{kind}", width="stretch"):
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


# ------------------------------------------------------------------------------------------------ drawing


def plot(fig, key: str | None = None) -> None:
    """A plotly chart at full width, with the lab's chart config."""
    st.plotly_chart(fig, width="stretch", key=key, theme=None,
                    config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}})


def page_header(title: str, intro: str | None = None) -> None:
    st.title(title)
    if intro:
        st.markdown(f'<div class="lab-intro">{html.escape(intro)}</div>', unsafe_allow_html=True)


def require_model_and_data():
    """The current model and the dataset's train/test splits, or stop the page with a message.

    Returns ``(loaded, train, test)``; stops (``st.stop``) when a piece is missing or the dataset's classes do
    not match the model's (the message says so).
    """
    loaded = current_model()
    if loaded is None:
        st.stop()
    train = dataset_or_none("train")
    test = dataset_or_none("test") if train is not None else None
    if train is None or test is None:
        st.stop()
    problem = labels_problem(loaded, train)
    if problem:
        st.error(problem, icon=":material/warning:")
        st.stop()
    return loaded, train, test
