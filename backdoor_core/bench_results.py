"""Reading the benchmarks' result files (``bench/results/attack_tal.json``, ``defense.json``) for the app.

The benchmark scripts write these files; this module is the one reader of their schema, so a page never indexes a
result file by field names of its own. A file that is missing gives ``None`` (a checkout or install without
results); a file that does not match the schema raises ``ResultsError`` naming the file and the problem (the page
shows it; it is never swallowed).

Schema read here (written by ``bench/attack_tal.py`` and ``bench/defense.py``):

* ``attack_tal.json``: ``{"dataset": str, "runs": [{"attack": str, "rate": float, "tal": bool, "asr": float,
  "cacc": float, ...}]}``;
* ``defense.json``: ``{"runs": [{"model": str, "attack": str, "tal": bool, "defense": str, "asr_before",
  "asr_after", "cacc_before", "cacc_after": float or null, ...}]}``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "results"
"""The published results: what the README cites and the app reads."""


def results_dir() -> Path:
    """Where a benchmark writes: ``$BACKDOOR_BENCH_RESULTS`` when set (a test's temporary folder, a worker of a
    parallel run, a trial that must not overwrite the published files), else ``RESULTS_DIR``. The one owner every
    ``bench/*.py`` script reads its output folder from."""
    return Path(os.environ.get("BACKDOOR_BENCH_RESULTS") or RESULTS_DIR)
MAX_RESULT_BYTES = 20_000_000


class ResultsError(ValueError):
    """A benchmark result file exists but cannot be read as the benchmark writes it."""


def _load(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            raise ResultsError(f"{path.name} is larger than {MAX_RESULT_BYTES // 1_000_000} MB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, ResultsError):
            raise
        raise ResultsError(f"{path.name} could not be read: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ResultsError(f"{path.name} has no list of runs")
    return data


def _field(path: Path, i: int, run: Any, key: str, kind: str) -> Any:
    if not isinstance(run, dict) or key not in run:
        raise ResultsError(f"{path.name}: run {i} has no '{key}'")
    v = run[key]
    ok = {
        "text": isinstance(v, str),
        "flag": isinstance(v, bool),
        "share": isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1,
        "share?": v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                and 0 <= v <= 1),
    }[kind]
    if not ok:
        raise ResultsError(f"{path.name}: run {i} has '{key}' = {v!r}, not a {kind.rstrip('?')}")
    return v


def attack_tal_runs(attack: str = "badnets", rates: tuple[float, ...] | None = None,
                    path: str | os.PathLike | None = None) -> tuple[str, list[dict]] | None:
    """``(dataset, rows)`` of the attack benchmark for one attack (optionally some poison rates only), each row
    ``{"rate", "tal", "asr", "cacc"}``; None when the file is missing."""
    path = Path(path) if path is not None else RESULTS_DIR / "attack_tal.json"
    data = _load(path)
    if data is None:
        return None
    rows = []
    for i, run in enumerate(data["runs"]):
        if _field(path, i, run, "attack", "text") != attack:
            continue
        rate = _field(path, i, run, "rate", "share")
        if rates is not None and not any(math.isclose(rate, r) for r in rates):
            continue
        rows.append({"rate": rate, "tal": _field(path, i, run, "tal", "flag"),
                     "asr": _field(path, i, run, "asr", "share"), "cacc": _field(path, i, run, "cacc", "share")})
    dataset = data.get("dataset")
    return (dataset if isinstance(dataset, str) else "?"), rows


def defense_runs(defense: str = "alignment",
                 path: str | os.PathLike | None = None) -> tuple[str, list[dict]] | None:
    """``(dataset, rows)`` of the defense benchmark for one defense, each row ``{"model", "attack", "tal",
    "asr_before", "asr_after", "cacc_before", "cacc_after"}``; None when the file is missing."""
    path = Path(path) if path is not None else RESULTS_DIR / "defense.json"
    data = _load(path)
    if data is None:
        return None
    rows = []
    for i, run in enumerate(data["runs"]):
        if _field(path, i, run, "defense", "text") != defense:
            continue
        row = {"model": _field(path, i, run, "model", "text"), "attack": _field(path, i, run, "attack", "text"),
               "tal": _field(path, i, run, "tal", "flag")}
        for key in ("asr_before", "asr_after", "cacc_before", "cacc_after"):
            row[key] = _field(path, i, run, key, "share?")
        rows.append(row)
    dataset = data.get("dataset")
    return (dataset if isinstance(dataset, str) else "?"), rows
