"""A browser tab's own models on disk, so that a reload (or the tab's link opened again) gets them back.

The app keeps a model trained, repaired or uploaded in a session in that session's memory; a reload starts a new
Streamlit session and lost it (a six-minute live training gone without a word). Our design: beside the session's
report log (``session.session_file``) each such model is saved with ``models.save_model`` and listed in an index::

    <sessions>/<id>.models/index.json   {"models": [{"name", "folder", "origin", "saved"}, ...], "current": name}
    <sessions>/<id>.models/m<k>/        a saved model folder (safetensors, config, tokenizer, model card)
    <sessions>/<id>.models/data/<t>/<file>   the session's uploaded data file (``keep_data``), if any

``restore`` reads them back. At most ``KEPT`` models a session are kept (the oldest go first), and ``prune``
deletes the models of sessions untouched for ``MAX_AGE_DAYS`` (a MiniLM is about 90 MB). The index is ours to
read: a folder name that is not ``m<k>`` or an entry that is not what ``save`` writes is skipped, never followed.

Everything under ``<id>.models`` is read as untrusted (our design: anything on the disk may have changed it), and
the server neither reads nor writes outside it through that folder: a symbolic link anywhere in it (the models
folder itself, ``data``, a model folder or a file in one, the kept data file) is never followed, written through or
copied as what it points to; a file that is not a regular one (a FIFO, a device) is never opened; the index is read
only up to ``MAX_INDEX_BYTES``, and lists at most ``KEPT`` models, each folder once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_text
from .session import session_file

KEPT = 4
"""Models kept a session: a class's trainings and repairs fit; each MiniLM is about 90 MB on disk."""
MAX_AGE_DAYS = 7
"""A session's saved models are deleted once it has been untouched this long (``prune``)."""
INDEX = "index.json"
_FOLDER = re.compile(r"^m\d{1,6}$")


@dataclass
class SavedModel:
    """One entry of a session's index: the name the app shows, its folder, and where it came from in words."""

    name: str
    path: Path
    origin: str = ""
    saved: float = 0.0


def models_dir(session_id: str, root=None) -> Path:
    """``<sessions>/<id>.models``: session ``session_id``'s saved models (``session.session_file``'s folder;
    ValueError for an id that is not 32 hex digits)."""
    return session_file(session_id, root).with_suffix(".models")


MAX_INDEX_BYTES = 1 << 20
"""The largest index read (``KEPT`` entries take well under a kilobyte): a larger one is read as empty."""


def _own_folder(session_id: str, root=None) -> Path:
    """``models_dir``, for writing: OSError where it (or something in the way) is a symbolic link or not a
    folder, so that no write or delete of this session ever goes through a link planted there."""
    folder = models_dir(session_id, root)
    if folder.is_symlink() or (os.path.lexists(folder) and not folder.is_dir()):
        raise OSError(f"{folder.name} in the sessions folder is a link or a file, not this tab's folder; "
                      "nothing is written there")
    return folder


def _real_dir(path: Path) -> bool:
    """Whether ``path`` is a folder and not a symbolic link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _real_file(path: Path) -> bool:
    """Whether ``path`` is a regular file and not a symbolic link to one (nor a FIFO, a device)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _plain_tree(path: Path) -> bool:
    """Whether ``path`` is a folder holding only regular files and folders (no link, FIFO or device at any
    depth): a saved model folder as ``save`` wrote it."""
    if not _real_dir(path):
        return False
    for top, dirs, files in os.walk(path):
        for name in dirs:
            if not _real_dir(Path(top) / name):  # os.walk lists a link to a folder among the folders
                return False
        for name in files:
            if not _real_file(Path(top) / name):
                return False
    return True


def _read_small(path: Path, cap: int) -> bytes | None:
    """The bytes of the regular file ``path`` if it has at most ``cap``; None for a link, a FIFO, a device, a
    larger file or one that cannot be read. Opened without following a link and without blocking (a FIFO named
    ``index.json`` hung the reload's thread forever; a link to ``/dev/zero`` read until memory ran out)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
                return None
            data = f.read(cap + 1)
        except OSError:
            return None
    return data if len(data) <= cap else None


def _read_index(folder: Path) -> dict:
    """The index of ``folder`` as ``save`` writes it, checked: at most ``KEPT`` rows (the last ones), each with a
    name and an ``m<k>`` folder, no folder or name twice (a forged index naming one model folder 500 times loaded
    it 500 times into the server's memory at a reload); an unreadable index is an empty one."""
    raw = None if not _real_dir(folder) else _read_small(folder / INDEX, MAX_INDEX_BYTES)
    try:
        data = json.loads(raw.decode("utf-8")) if raw is not None else None
    except (ValueError, RecursionError):
        data = None
    if data is None:
        return {"models": [], "current": None}
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        return {"models": [], "current": None}
    rows, names, folders = [], set(), set()
    for r in reversed(data["models"]):  # the last entry of a name or a folder is the one ``save`` wrote last
        if isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("folder"), str) \
                and _FOLDER.fullmatch(r["folder"]) and r["name"] not in names and r["folder"] not in folders:
            rows.insert(0, r)
            names.add(r["name"])
            folders.add(r["folder"])
    rows = rows[-KEPT:]
    current = data.get("current") if isinstance(data.get("current"), str) else None
    return {"models": rows, "current": current}


def _write_index(folder: Path, index: dict) -> None:
    write_text(folder / INDEX, json.dumps(index, indent=1))


def save(session_id: str, name: str, loaded, origin: str = "", root=None, current: bool = True) -> SavedModel:
    """Save ``loaded`` (a ``models.LoadedModel``) as session ``session_id``'s model ``name`` (replacing one of that
    name), the current one when ``current``; beyond ``KEPT`` the oldest are deleted."""
    from .models import save_model

    folder = _own_folder(session_id, root)
    folder.mkdir(parents=True, exist_ok=True)
    index = _read_index(folder)
    rows = [r for r in index["models"] if r["name"] != name]
    old = next((r for r in index["models"] if r["name"] == name), None)
    used = {r["folder"] for r in index["models"]}
    k = 0
    while f"m{k}" in used:
        k += 1
    target = folder / f"m{k}"
    save_model(loaded.model, loaded.tokenizer, target, loaded.card, force=target.exists())
    rows.append({"name": name, "folder": target.name, "origin": origin, "saved": time.time()})
    dropped = rows[:-KEPT] if len(rows) > KEPT else []
    rows = rows[-KEPT:]
    index = {"models": rows, "current": name if current else index["current"]}
    if index["current"] not in {r["name"] for r in rows}:
        index["current"] = None
    _write_index(folder, index)
    for r in dropped + ([old] if old else []):  # after the index no longer names them
        shutil.rmtree(folder / r["folder"], ignore_errors=True)
    return SavedModel(name, target, origin, rows[-1]["saved"])


def set_current(session_id: str, name: str | None, root=None) -> None:
    """Record which saved model is current (None: one that is not saved here, e.g. a zoo model)."""
    folder = _own_folder(session_id, root)
    if not _real_file(folder / INDEX):
        return
    index = _read_index(folder)
    index["current"] = name if name in {r["name"] for r in index["models"]} else None
    _write_index(folder, index)


def saved(session_id: str, root=None) -> tuple[list[SavedModel], str | None]:
    """Session ``session_id``'s saved models, oldest first, and the name of the current one (or None). A model
    folder that is a link, or holds one (or a FIFO, a device), is left out: loading it read files outside the
    sessions folder."""
    try:
        folder = models_dir(session_id, root)
    except ValueError:
        return [], None
    index = _read_index(folder)
    rows = [SavedModel(r["name"], folder / r["folder"], str(r.get("origin") or ""), _number(r.get("saved")))
            for r in index["models"] if _plain_tree(folder / r["folder"])]
    current = index["current"] if index["current"] in {r.name for r in rows} else None
    return rows, current


def _number(value) -> float:
    """``value`` as a float where it is a finite number, else 0 (a forged index's ``"saved": "x"`` was a
    ValueError that failed the reload)."""
    try:
        out = float(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return out if out == out and abs(out) != float("inf") else 0.0


def load(entry: SavedModel, device: str | None = None):
    """The ``LoadedModel`` of a saved entry, named as the app named it (``models.load_model``'s checks apply)."""
    import dataclasses

    from .models import load_model

    kwargs = {"device": device} if device else {}
    return dataclasses.replace(load_model(entry.path, **kwargs), name=entry.name)


DATA = "data"
"""The subfolder of a session's models folder that keeps its uploaded data file: ``data/<token>/<file name>``."""


def keep_data(session_id: str, source, root=None) -> Path:
    """Keep a copy of session ``session_id``'s uploaded data file ``source`` for a reload (one a session: it replaces
    the one kept before). Returns the copy's path, under a new folder each time (a path names one content).

    The copy is written under a hidden name and renamed complete, and the file kept before is deleted only then:
    a disk that filled up mid-copy left a truncated file that the next reload restored as the user's data. Raises
    OSError (nothing written, the earlier copy kept) where the session's folder or its ``data`` is a link: a
    ``data`` linked to a user's folder had that folder's contents deleted as "the file kept before"."""
    import secrets

    folder = _own_folder(session_id, root) / DATA
    if os.path.lexists(folder) and not _real_dir(folder):
        raise OSError(f"{folder} is a link or a file, not this tab's data folder; the data file is not kept")
    target = folder / secrets.token_hex(4) / Path(source).name
    target.parent.mkdir(parents=True)
    partial = target.with_name(f".{target.name}.part")
    try:
        shutil.copy2(source, partial)
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(target.parent, ignore_errors=True)
        raise
    for old in folder.iterdir():
        if old != target.parent:
            if _real_dir(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)  # a link or a file: the link itself, never what it points to
    return target


def forget_data(session_id: str, root=None) -> None:
    """Delete the data file kept by ``keep_data`` (the session chose another dataset)."""
    shutil.rmtree(models_dir(session_id, root) / DATA, ignore_errors=True)


def kept_data(session_id: str, root=None) -> Path | None:
    """The data file ``keep_data`` kept for session ``session_id``, or None. Only a regular file in a real folder
    counts: a link (to ``/etc/passwd``, another tab's file) is not followed, and a partial copy (``.part``) is not
    one."""
    try:
        base = models_dir(session_id, root)
        folder = base / DATA
        files = [f for d in folder.iterdir() if _real_dir(d) for f in d.iterdir()
                 if _real_file(f) and not f.name.endswith(".part")] \
            if _real_dir(base) and _real_dir(folder) else []
    except (OSError, ValueError):
        return None
    return files[0] if len(files) == 1 else None


def copy(source_id: str, session_id: str, root=None) -> int:
    """Give session ``session_id`` the saved models of session ``source_id`` (the same link opened in a second tab:
    each tab then keeps, replaces and deletes its own). Files are hard-linked where the disk allows (a MiniLM is
    about 90 MB; ``save`` writes a new folder, never into a saved file), else copied. Returns how many models."""
    import os

    src, dst = models_dir(source_id, root), _own_folder(session_id, root)
    index = _read_index(src)
    rows = [r for r in index["models"] if _plain_tree(src / r["folder"])]  # no link copied as what it points to
    data = kept_data(source_id, root)
    if not (rows or data) or dst.exists():
        return 0

    def link_or_copy(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    dst.mkdir(parents=True)
    for r in rows:
        shutil.copytree(src / r["folder"], dst / r["folder"], symlinks=True, copy_function=link_or_copy)
    if data is not None:  # and its uploaded data file
        shutil.copytree(data.parent, dst / DATA / data.parent.name, symlinks=True, copy_function=link_or_copy)
    if rows:
        current = index["current"] if index["current"] in {r["name"] for r in rows} else None
        _write_index(dst, {"models": rows, "current": current})
    return len(rows)


def prune(root=None, max_age_days: float = MAX_AGE_DAYS, now: float | None = None) -> int:
    """Delete the saved models of every session whose folder was last written ``max_age_days`` ago or more;
    returns how many sessions' models were deleted."""
    base = session_file("0" * 32, root).parent
    if not base.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - max_age_days * 86400
    gone = 0
    for folder in base.glob("*.models"):
        if not re.match(r"^[0-9a-f]{32}\.models$", folder.name) or not folder.is_dir():
            continue
        try:
            stamp = max([folder.stat().st_mtime] + [p.stat().st_mtime for p in folder.iterdir()])
        except OSError:
            continue
        if stamp < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            gone += 1
    return gone
