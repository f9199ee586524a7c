"""The plumbing the after-repair diagnostics share (``blend_check.py``, ``bias_check.py``): each runs
``bench/defense.py`` in its own process with our repair patched to append one JSON line per repaired model, then
``--report`` turns those lines into ``bench/results/<stem>.json`` / ``.md``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def read_rows(paths: list[str]) -> list[dict]:
    """Every JSON line of ``paths``, in order (blank lines skipped)."""
    return [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]


def write_results(stem: str, payload: dict, lines: list[str]) -> None:
    """``bench/results/<stem>.json`` (``payload``) and ``.md`` (``lines``), written atomically; the table printed."""
    from backdoor_core.atomic import write_text

    out = ROOT / "bench" / "results" / stem
    write_text(out.with_suffix(".json"), json.dumps(payload, indent=2))
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(doc: str, run: Callable[[str, list[str]], int], report: Callable[[str, list[str]], int]) -> int:
    """``script OUT.jsonl BENCH_ARGS...`` runs; ``script --report NOTE OUT.jsonl...`` reports; no argument: usage."""
    args = sys.argv[1:]
    if not args:
        raise SystemExit(doc)
    return report(args[1], args[2:]) if args[0] == "--report" else run(args[0], args[1:])
