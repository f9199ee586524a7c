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
"""

from __future__ import annotations

import json
import re
import shutil
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


def _read_index(folder: Path) -> dict:
    try:
        data = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"models": [], "current": None}
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        return {"models": [], "current": None}
    rows = [r for r in data["models"] if isinstance(r, dict) and isinstance(r.get("name"), str)
            and isinstance(r.get("folder"), str) and _FOLDER.match(r["folder"])]
    current = data.get("current") if isinstance(data.get("current"), str) else None
    return {"models": rows, "current": current}


def _write_index(folder: Path, index: dict) -> None:
    write_text(folder / INDEX, json.dumps(index, indent=1))


def save(session_id: str, name: str, loaded, origin: str = "", root=None, current: bool = True) -> SavedModel:
    """Save ``loaded`` (a ``models.LoadedModel``) as session ``session_id``'s model ``name`` (replacing one of that
    name), the current one when ``current``; beyond ``KEPT`` the oldest are deleted."""
    from .models import save_model

    folder = models_dir(session_id, root)
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
    folder = models_dir(session_id, root)
    if not (folder / INDEX).is_file():
        return
    index = _read_index(folder)
    index["current"] = name if name in {r["name"] for r in index["models"]} else None
    _write_index(folder, index)


def saved(session_id: str, root=None) -> tuple[list[SavedModel], str | None]:
    """Session ``session_id``'s saved models, oldest first, and the name of the current one (or None)."""
    try:
        folder = models_dir(session_id, root)
    except ValueError:
        return [], None
    index = _read_index(folder)
    rows = [SavedModel(r["name"], folder / r["folder"], str(r.get("origin") or ""), float(r.get("saved") or 0))
            for r in index["models"] if (folder / r["folder"]).is_dir()]
    current = index["current"] if index["current"] in {r.name for r in rows} else None
    return rows, current


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
    the one kept before). Returns the copy's path, under a new folder each time (a path names one content)."""
    import secrets

    folder = models_dir(session_id, root) / DATA
    target = folder / secrets.token_hex(4) / Path(source).name
    target.parent.mkdir(parents=True)
    shutil.copy2(source, target)
    for old in folder.iterdir():
        if old != target.parent:
            shutil.rmtree(old, ignore_errors=True)
    return target


def forget_data(session_id: str, root=None) -> None:
    """Delete the data file kept by ``keep_data`` (the session chose another dataset)."""
    shutil.rmtree(models_dir(session_id, root) / DATA, ignore_errors=True)


def kept_data(session_id: str, root=None) -> Path | None:
    """The data file ``keep_data`` kept for session ``session_id``, or None."""
    try:
        folder = models_dir(session_id, root) / DATA
        files = [f for d in folder.iterdir() if d.is_dir() for f in d.iterdir() if f.is_file()] \
            if folder.is_dir() else []
    except (OSError, ValueError):
        return None
    return files[0] if len(files) == 1 else None


def copy(source_id: str, session_id: str, root=None) -> int:
    """Give session ``session_id`` the saved models of session ``source_id`` (the same link opened in a second tab:
    each tab then keeps, replaces and deletes its own). Files are hard-linked where the disk allows (a MiniLM is
    about 90 MB; ``save`` writes a new folder, never into a saved file), else copied. Returns how many models."""
    import os

    src, dst = models_dir(source_id, root), models_dir(session_id, root)
    index = _read_index(src)
    rows = [r for r in index["models"] if (src / r["folder"]).is_dir()]
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
        shutil.copytree(src / r["folder"], dst / r["folder"], copy_function=link_or_copy)
    if data is not None:  # and its uploaded data file
        shutil.copytree(data.parent, dst / DATA / data.parent.name, copy_function=link_or_copy)
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
