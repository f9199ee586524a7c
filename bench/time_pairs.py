"""Time two checkouts of the lab against each other on one model, alternating run by run.

A machine's speed drifts within a session and between sessions (README, goals: "≤ 60 s per sanitization"), so a
figure is only comparable with one taken beside it. This runs ``bench/defense.py --zoo test --only MODEL --defenses
alignment --detectors ours --repair all`` in checkout A and checkout B in turn (``--runs`` pairs, one process a run,
``OMP_NUM_THREADS=2``), each writing under ``--work``, and then summarises the pairs: the bench's per-run seconds (scan
included), the scan's seconds, the ratio B / A pair by pair (median), and whether ASR, CACC and pseudo-label accuracy
after repair agree. Both checkouts need the model built (``bench/test_zoo.py``; a symlinked ``bench/models`` will do).
Run it on an idle machine. ``--knobs-a`` / ``--knobs-b`` pass ``--align-knobs`` to one side: one checkout, two
settings (``--a . --b . --knobs-a '{"precision": "fp32"}'``).

    python bench/time_pairs.py --a /path/to/old --b . --model olid_s0_style_poetry_r0.2 --runs 3 --tag t23

Writes ``bench/results/archive/time_pairs_<tag>.json`` and ``.md`` (``--summarize-only`` re-reads ``--work``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "archive"


def one_run(checkout: Path, model: str, where: Path, knobs: str | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "BACKDOOR_BENCH_RESULTS": str(where)}
    cmd = [sys.executable, "bench/defense.py", "--zoo", "test", "--only", model, "--defenses", "alignment",
           "--detectors", "ours", "--repair", "all", "--tag", "t"] + (["--align-knobs", knobs] if knobs else [])
    with open(str(where) + ".log", "w") as log:
        subprocess.run(cmd, cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def read_run(where: Path) -> dict:
    d = json.loads((where / "defense_test_t.json").read_text())
    r, m = d["runs"][0], d["models"][0]
    return {"seconds": r["seconds"], "scan_seconds": m["scan_seconds"], "asr_after": r["asr_after"],
            "cacc_after": r["cacc_after"], "pseudo_label_accuracy": r.get("pseudo_label_accuracy")}


def summarize(a_runs: list[dict], b_runs: list[dict]) -> dict:
    def outcome(x):
        return x["asr_after"], x["cacc_after"], x["pseudo_label_accuracy"]

    return {"median_a": statistics.median(x["seconds"] for x in a_runs),
            "median_b": statistics.median(x["seconds"] for x in b_runs),
            "median_scan_a": statistics.median(x["scan_seconds"] for x in a_runs),
            "median_scan_b": statistics.median(x["scan_seconds"] for x in b_runs),
            "median_ratio_b_over_a": round(statistics.median(y["seconds"] / x["seconds"]
                                                             for x, y in zip(a_runs, b_runs)), 3),
            "identical_results": all(outcome(x) == outcome(y) for x, y in zip(a_runs, b_runs))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="checkout A (e.g. the commit before a change)")
    p.add_argument("--b", required=True, help="checkout B")
    p.add_argument("--model", required=True, help="a test-zoo model name")
    p.add_argument("--runs", type=int, default=3, help="pairs (default 3)")
    p.add_argument("--b-first", action="store_true", help="run B first in each pair")
    p.add_argument("--label-a", default="A"), p.add_argument("--label-b", default="B")
    p.add_argument("--knobs-a", default=None, help="--align-knobs JSON for A's runs")
    p.add_argument("--knobs-b", default=None, help="--align-knobs JSON for B's runs")
    p.add_argument("--work", default="/tmp/time_pairs", help="where the runs write")
    p.add_argument("--tag", required=True)
    p.add_argument("--summarize-only", action="store_true")
    p.add_argument("--out", default=str(OUT), help="where the summary goes (default bench/results/archive)")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    order = ("b", "a") if args.b_first else ("a", "b")
    for i in range(1, args.runs + 1):
        for side in order if not args.summarize_only else ():
            one_run(Path(getattr(args, side)).resolve(), args.model, work / f"{side}_{i}", getattr(args, f"knobs_{side}"))
            print(f"{side} {i}: {read_run(work / f'{side}_{i}')['seconds']} s", flush=True)
    a_runs = [read_run(work / f"a_{i}") for i in range(1, args.runs + 1)]
    b_runs = [read_run(work / f"b_{i}") for i in range(1, args.runs + 1)]
    s = summarize(a_runs, b_runs)
    first = args.label_b if args.b_first else args.label_a
    lines = [f"# Time per sanitization, {args.model}: {args.label_a} (A) vs {args.label_b} (B)", "",
             f"{args.runs} pairs on 2 idle cores (`OMP_NUM_THREADS=2`), one process a run, {first} first in each pair "
             "(`python bench/time_pairs.py`). Seconds: the bench's per-run seconds, scan included.", "",
             "| pair | A seconds | A scan | B seconds | B scan | B / A |", "|---|---|---|---|---|---|"]
    for i, (x, y) in enumerate(zip(a_runs, b_runs), 1):
        lines.append(f"| {i} | {x['seconds']:.1f} | {x['scan_seconds']:.1f} | {y['seconds']:.1f} | "
                     f"{y['scan_seconds']:.1f} | {y['seconds'] / x['seconds']:.2f} |")
    lines += ["", f"Median: A {s['median_a']:.1f} s (scan {s['median_scan_a']:.1f}), B {s['median_b']:.1f} s (scan "
                  f"{s['median_scan_b']:.1f}); B / A {s['median_ratio_b_over_a']:.2f} (pair by pair). ASR, CACC and "
                  f"pseudo-label accuracy after repair identical in every pair: {s['identical_results']} (ASR "
                  f"{a_runs[0]['asr_after']:.3f}, CACC {a_runs[0]['cacc_after']:.3f}"
                  + ("" if s["identical_results"] else
                     f" in A's first run, ASR {b_runs[0]['asr_after']:.3f}, CACC {b_runs[0]['cacc_after']:.3f} in B's")
                  + ").", ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "a": args.label_a, "b": args.label_b, "b_first": args.b_first,
              "knobs_a": args.knobs_a, "knobs_b": args.knobs_b,
              "runs_a": a_runs, "runs_b": b_runs, **s}
    sys.path.insert(0, str(ROOT))
    from backdoor_core.atomic import write_text  # the one atomic write (never half a file, no temporary left)

    for suffix, text in (("json", json.dumps(report, indent=1)), ("md", "\n".join(lines))):
        write_text(out / f"time_pairs_{args.tag}.{suffix}", text)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
