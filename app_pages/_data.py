"""The dataset of this session (cached, read-only) and uploaded files (kept in this session's temp folder and
deleted as soon as they are not needed)."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

import streamlit as st

from backdoor_core import session_models as SM
from app_pages._state import DEFAULT_DATA, K_DATA, K_SESSION_ID, K_TMP, SESSIONS_ENV, TEST_DATA_ENV, ss
from app_pages._text import md
from app_pages._widgets import show_error


@st.cache_resource(show_spinner=False, max_entries=16)
def _load_dataset(spec: str, split: str, seed: int, label_names: tuple[str, ...] | None = None):
    from backdoor_core.data import TextDataset, align_labels, load_split, named_classes

    ds = load_split(spec, split=split, seed=seed)  # a single file: its training part or its test part
    if (label_names and named_classes(label_names) and not named_classes(ds.label_names)
            and len(label_names) == ds.num_labels):
        # an integer-labelled file read for a model that names its classes: its ids are the model's classes, as
        # the scan and sanitize commands read it (load_dataset(label_names=...)); pages then say "sports", not "3"
        ds = TextDataset(ds.texts, ds.labels, list(label_names), ds.name)
    if label_names:  # a file naming the model's classes in another order: ids in the model's order, as the CLI
        ds = align_labels(ds, list(label_names))
    return ds


def data_spec() -> str:
    if K_DATA not in ss():
        ss()[K_DATA] = os.environ.get(TEST_DATA_ENV) or DEFAULT_DATA
    return ss()[K_DATA]


def data_label(spec: str | None = None) -> str:
    """How a page names the dataset: a file by its name (an upload's path is the server's temporary folder),
    anything else as its spec (``bbc``, ``sst2/clean``)."""
    spec = spec or data_spec()
    path = Path(str(spec)).expanduser()
    return path.name if path.is_file() else str(spec)


def set_data_spec(spec: str) -> None:
    """Make ``spec`` this session's dataset; an uploaded file is also kept beside the tab's saved models so that a
    reload gets it back (``restore_kept_data``): a reload went back to BBC News without a word, and the pages ran
    on it with the models trained on the user's file."""
    ss()[K_DATA] = spec
    ss().pop(K_DATA_NOT_KEPT, None)
    upload = _is_upload(spec)
    failed: list[str] = []
    _kept(lambda sid, root: SM.keep_data(sid, spec, root) if upload else
          None if _is_kept(spec, sid, root) else SM.forget_data(sid, root), failed)
    if upload and failed:  # a full disk, a linked folder: the tab goes on with the file, which a reload loses
        ss()[K_DATA_NOT_KEPT] = failed[0]


K_DATA_NOT_KEPT = "lab.data_not_kept"  # why this tab's uploaded data file could not be kept for a reload


def data_not_kept_note() -> str | None:
    """The one-line warning, once, where ``set_data_spec`` could not keep an uploaded file for a reload."""
    why = ss().pop(K_DATA_NOT_KEPT, None)
    if not why:
        return None
    return (f"This file is in use, but the server could not keep a copy for a reload ({md(why, 160)}): a reload of "
            "this tab will go back to the default dataset. Upload it again after a reload.")


def restore_kept_data() -> None:
    """Once per Streamlit session, before the dataset is first read: the data file this tab had uploaded before a
    reload (``session_models.kept_data``). Called by the sidebar after ``lab()`` knows the tab's id.

    Only a regular file inside the tab's own folder comes back (``kept_data``): a kept "file" that is a link (to
    ``/etc/passwd``, to another tab's data) made the pages read it as this tab's data. Where something is kept but
    not such a file, the page says so in one line and the tab goes on with the default dataset (our design: the
    link is left where it is, never followed or deleted)."""
    if ss().get(K_DATA_RESTORED):
        return
    ss()[K_DATA_RESTORED] = True
    if K_DATA in ss():
        return
    path = _kept(lambda sid, root: SM.kept_data(sid, root))
    if path is not None:
        ss()[K_DATA] = str(path)
    elif _kept(lambda sid, root: _anything_kept(SM.models_dir(sid, root) / SM.DATA)):
        st.warning(f"The data file this tab had uploaded could not be brought back (it is not a plain file in this "
                   f"tab's folder, so it is not read); the pages use {md(data_spec())}. Upload it again to use it.",
                   icon=":material/warning:")


def _anything_kept(folder: Path) -> bool:
    """Whether ``folder`` (a tab's kept-data folder) or anything in it is there, a link included."""
    if folder.is_symlink() or (os.path.lexists(folder) and not folder.is_dir()):
        return True
    return folder.is_dir() and any(True for _ in folder.iterdir())


K_DATA_RESTORED = "lab.data_restored"


def _kept(action, failed: list[str] | None = None):
    """``action(session id, sessions folder)``, or None where this tab has no id or the disk refuses (its reason
    appended to ``failed``)."""
    sid = ss().get(K_SESSION_ID)
    if not sid:
        return None
    try:
        return action(sid, os.environ.get(SESSIONS_ENV) or None)
    except (OSError, ValueError) as exc:  # a full or read-only disk: the session goes on with the file in memory
        if failed is not None:
            failed.append(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        return None


def _is_upload(spec: str) -> bool:
    """Whether ``spec`` is a file ``save_upload`` wrote (in this session's temp folder)."""
    return K_TMP in ss() and Path(str(spec)).parent.parent == ss()[K_TMP].path and Path(str(spec)).is_file()


def _is_kept(spec: str, sid: str, root) -> bool:
    return Path(str(spec)).is_relative_to(SM.models_dir(sid, root) / SM.DATA)


def dataset(split: str = "train", spec: str | None = None, seed: int = 0, label_names=None):
    """The dataset (cached, read-only). Raises ``DataError`` with a readable message. ``label_names``: a model's
    classes, which name the classes of data that only numbers them (``_load_dataset``)."""
    spec = spec or data_spec()
    with st.spinner(f"Loading {md(spec)} ({split})…"):
        return _load_dataset(spec, split, seed, tuple(label_names) if label_names else None)


def dataset_or_none(split: str = "train", label_names=None):
    from backdoor_core.data import DataError

    try:
        return dataset(split, label_names=label_names)
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


def upload_error(exc: BaseException, name: str) -> str:
    """``exc``'s message with the server's paths of an upload (``save_upload``'s folder, a .zip's unpacked copy, all
    inside ``session_tmp()``) written as the user named the file: "my.zip → m/config.json is not valid...", not
    "/tmp/backdoor-lab-session-x/unzipped-y/m/config.json" (a folder the user never saw, deleted by then)."""
    import re

    text = str(exc).strip() or type(exc).__name__
    if K_TMP not in ss():
        return text
    tmp = re.escape(str(ss()[K_TMP].path))
    text = re.sub(tmp + r"/[^/\s]+/" + re.escape(Path(name).name) + r"(?![^\s,:;'\"()\]])", lambda m: name, text)
    text = re.sub(tmp + r"/[^/\s]+/", lambda m: f"{name} → ", text)
    return re.sub(tmp + r"(/[^/\s,:;'\"()\]]+)?", lambda m: name, text)


# ------------------------------------------------------------------------------------------------ server files
#
# Every browser that reaches the app runs code in the server's process. A class on one server, or students on a
# teacher's laptop over the network, could type any folder of that machine (Model → Local folder, Sanitize's clean
# reference, Detect's base checkpoint, a "hub id" such as ``bench/models``) and load the models in it, or upload a
# .zip of pickled weights and tick "Allow pickled weights" (torch's weights-only unpickler, but a pickle of their
# making all the same). So the server's folders and the pickle opt-in are open only to a browser on the server's
# own machine, unless whoever starts the server says otherwise (our design).

SERVER_FILES_ENV = "BACKDOOR_LAB_SERVER_FILES"
SERVER_FILES_MODES = {
    "local": "only to a browser on the server's own machine (the default)",
    "all": "to every browser (a lab on one trusted machine)",
    "none": "to no browser (a server behind a proxy, where every browser looks local)",
}


def server_files_mode() -> str:
    """``$BACKDOOR_LAB_SERVER_FILES``: ``local`` (default), ``all`` or ``none``; any other value reads as
    ``none`` (a typo never opens the server)."""
    mode = (os.environ.get(SERVER_FILES_ENV) or "local").strip().lower()
    return mode if mode in SERVER_FILES_MODES else "none"


def server_files_allowed() -> bool:
    """Whether this browser may name the server's own files or opt in to pickled weights
    (``server_files_mode``). "On the server's own machine" is Streamlit's reading of the connection: no IP address
    for a loopback peer (``st.context.ip_address``; a reverse proxy makes every browser loopback, hence ``none``)."""
    mode = server_files_mode()
    if mode != "local":
        return mode == "all"
    try:
        ip = st.context.ip_address
    except Exception:  # noqa: BLE001 - no reading of the connection: closed
        return False
    return not isinstance(ip, str)  # None: loopback; AppTest's stand-in (no str) has no connection at all


def server_files_refusal(what: str) -> str:
    """The message where a browser may not use the server's files: ``what`` is refused, why, and what to do."""
    mode = server_files_mode()
    why = ("this browser is on another machine" if mode == "local" else
           f"the server's owner set {SERVER_FILES_ENV}={os.environ.get(SERVER_FILES_ENV, '').strip()[:20]}")
    return (f"{what} is not open here: {why}, and the server's folders and pickled weights are open "
            f"{SERVER_FILES_MODES['local' if mode == 'local' else 'none']}. Use the demo zoo, a hub id, or upload "
            f"a .zip of a model saved as safetensors; whoever runs the server can start it with "
            f"{SERVER_FILES_ENV}=all to open them to every browser.")


def hub_id_refusal(spec: str) -> str | None:
    """None when this browser may load ``spec``; else the message: a name that reads this machine's files
    (``models.reads_local_files``) while ``server_files_allowed`` is False."""
    from backdoor_core.models import reads_local_files

    if server_files_allowed() or not reads_local_files(spec):
        return None
    return server_files_refusal(f"'{str(spec).strip()[:100]}' names a folder on the server; loading it")


def local_folder(text: str) -> Path | None:
    """The folder a user typed (``~`` expanded), or None when it is empty or not a folder on this machine; a path
    the file system refuses to look up (too long, a NUL byte) is not a folder either."""
    text = str(text or "").strip()
    if not text:
        return None
    try:
        path = Path(text).expanduser()
        return path if path.is_dir() else None
    except (OSError, ValueError, RuntimeError):  # ENAMETOOLONG, embedded NUL, an unknown user's ~
        return None
