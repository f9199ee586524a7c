"""Atomic writes of text or bytes: the one way the lab and its benchmarks write a file that a killed or cancelled
run must not leave half written (benchmark results, model manifests, sessions, HTML reports).

The data goes to a new hidden sibling ``.<name>.tmp-<pid>-<random>`` first, is flushed to disk, and is then renamed
over ``path`` (``os.replace``: atomic on one file system), so a reader sees the old file or the new one, never a
torn one; a failed write leaves the old file and no temporary behind. The temporary is created exclusively and
never through a link (``O_EXCL | O_NOFOLLOW``): a link planted at a predictable name in a shared folder cannot
redirect the write into another file, and two threads of one process (the app's sessions) writing one path each
get their own temporary (the last rename wins).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def _temporary(path: Path) -> tuple[int, Path]:
    """A new, exclusively created hidden sibling of ``path``: ``(fd, its path)``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # a leftover (or a planted link) of that name: draw another
            continue


def _write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a ``_temporary`` sibling, flush it to disk, then rename it over ``path``; returns the
    path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write or the rename failed
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder; returns the path."""
    if not isinstance(text, str):
        raise TypeError(f"write_text needs a str, not {type(text).__name__}")
    return _write(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating its folder; returns the path."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write_bytes needs bytes, not {type(data).__name__}")
    return _write(path, bytes(data))


def writable_reason(path: str | os.PathLike) -> str | None:
    """Why nothing could be written at ``path`` (a file or a folder to create), or ``None``: the nearest existing
    folder at or above ``path``'s parent must take a new entry (checked by creating and removing a temporary
    file there, which catches read-only mounts and pseudo file systems that permission bits do not)."""
    place = Path(os.path.abspath(Path(path).expanduser())).parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        return f"{place} is a file, so nothing can be written under it; choose another path."
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=place)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write under {place} ({exc.strerror or exc}); choose another path."
    return None


def check_output_file(path: str | os.PathLike, *, force: bool = False, ours: bytes | None = None) -> Path:
    """Raise ``ValueError`` now when ``write_text(path, ...)`` would fail or replace a file that is not ours:
    an empty path, a folder, a place nothing can be written (``writable_reason``), or an existing file that does
    not hold ``ours`` in its first 4 KiB (e.g. the lab's report ``<meta name="generator">``) unless ``force``.
    Returns the path. Command lines call this before the work, so a refusal loses nothing."""
    if not str(path).strip():
        raise ValueError("the output file's path is empty; give a file path.")
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{target} is a folder; give a file path (e.g. {target / 'report.html'}).")
    reason = writable_reason(target)
    if reason:
        raise ValueError(reason)
    if target.exists() and not force:
        try:
            with open(target, "rb") as f:
                head = f.read(4096)
        except OSError as exc:
            raise ValueError(f"cannot read {target} ({exc.strerror or exc}); choose another path.") from exc
        if ours is None or ours not in head:
            raise ValueError(f"{target} exists and was not written by this lab; pass --force to replace it, or "
                             "choose another path.")
    return target
