"""Atomic writes of text or bytes: the one way the lab and its benchmarks write a file that a killed or cancelled
run must not leave half written (benchmark results, model manifests, sessions, HTML reports).

The data goes to a hidden sibling ``.<name>.tmp-<pid>`` first and is then renamed over ``path`` (``os.replace``:
atomic on one file system), so a reader sees the old file or the new one, never a torn one; a failed write leaves
the old file and no temporary behind.
"""

from __future__ import annotations

import os
from pathlib import Path


def _write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp)`` on the hidden sibling, then rename it over ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write or the rename failed
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder; returns the path."""
    return _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating its folder; returns the path."""
    return _write(path, lambda tmp: tmp.write_bytes(data))
