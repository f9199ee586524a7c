"""How a scan's verdict reads pools of a few texts: clean models and pools of their own clean test texts.

A user pastes a handful of texts into Detect's "Your texts" (or `scan --pool`). The verdict's rule was built and
measured on pools of 100 or more; this scans the shipped demo zoo's clean BBC model (tuning data: the demo zoo) with
``--draws`` pools of each size in ``--sizes``, drawn from BBC's test texts (the defender's clean texts are the dev
split), and one pool holding a single short sentence of our own; and ``--backdoored`` (shipped zoo models) with
pools of ``--backdoored-sizes``, 20% of each carrying its trigger. It counts the pools the rule before
``settings.VERDICT_EXCESS_INPUTS`` and ``VERDICT_MIN_POOL`` would have called (from the same verdict components),
those whose flags' score calls a backdoor (score >= 0.5) and those the verdict calls (``likely_backdoored``; pools
below ``VERDICT_MIN_POOL`` read "possible" at most). The scan is the CLI's (``python -m backdoor_core scan ... --json``), its defaults throughout.

    python bench/verdict_small_pools.py [--sizes 5,10,20,30,50,100] [--draws 5]
                                        [--backdoored badnets,badnets-tal] [--backdoored-sizes 20,30,50,100]

Writes ``bench/results/verdict_small_pools[_T].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backdoor_core import settings as S  # noqa: E402
from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.cli import main as cli_main  # noqa: E402
from backdoor_core.data import load_dataset  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
MODEL = ROOT / "assets" / "zoo" / "clean"
SENTENCE = "the government announced a new budget for schools on monday"
"""One short text of our own: BBC's test texts are articles of hundreds of words."""


def scan(pool: list[str], folder: Path, model: Path = MODEL) -> dict:
    """The CLI's scan of ``model`` (the clean zoo model) with ``pool`` (texts), as its JSON."""
    path = folder / "pool.txt"
    path.write_text("\n".join(" ".join(t.split()) for t in pool) + "\n", encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = cli_main(["scan", str(model), "--clean-data", "bbc", "--pool", str(path), "--json"])
    if rc != 0:
        raise SystemExit(f"scan failed with exit {rc}")
    return json.loads(out.getvalue())


def render(report: dict) -> str:
    lines = [f"# Verdicts on small pools ({report['model']})", "",
             f"{report['draws']} draws per size of BBC test texts; the shipped clean demo-zoo model, and backdoored "
             "ones with 20% of each pool triggered; the CLI's scan at its defaults. The verdict's excess saturates at "
             f"5% of the pool and at least `settings.VERDICT_EXCESS_INPUTS` = {report['excess_inputs']} inputs, and a "
             f"pool below `settings.VERDICT_MIN_POOL` = {report['min_pool']} gets no call from its flags "
             "(\"possible\" at most). Written by `bench/verdict_small_pools.py`.", "",
             "| pool | draws | called by the rule before (5% alone, no least pool) | flags' score >= 0.5 | called "
             "(likely backdoored) | read \"possible\" | median score |",
             "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['pool']} | {row['draws']} | {row['called_before']} | {row['score_calls']} | "
                     f"{row['called']} | {row['possible']} | {row['median_score']:.2f} |")
    lines += ["", f"{report['seconds']:.0f} s in all on this machine.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="5,10,20,30,50,100")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--backdoored", default="badnets,badnets-tal",
                    help="shipped zoo models whose pools hold 20%% triggered texts ('' to skip)")
    ap.add_argument("--backdoored-sizes", default="20,30,50,100")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    from backdoor_core.detection import pool_verdict_score, verdict_call

    test = load_dataset("bbc", split="test")
    start, rows = time.time(), []
    with tempfile.TemporaryDirectory() as tmp:
        pools = [("one short sentence of ours", [[SENTENCE]], MODEL)]
        for n in sizes:
            rng = random.Random(n)
            pools.append((f"{n} BBC test texts", [rng.sample(test.texts, n) for _ in range(args.draws)], MODEL))
        from backdoor_core.defender_data import build_pool
        from backdoor_core.models import load_model

        for name in [b for b in args.backdoored.split(",") if b.strip()]:
            folder = ROOT / "assets" / "zoo" / name.strip()
            loaded = load_model(folder)
            for n in [int(x) for x in args.backdoored_sizes.split(",") if x.strip()]:
                k = max(1, round(0.2 * n))
                draws = [build_pool(loaded, test, n - k, k, seed=100 * n + d)[0] for d in range(args.draws)]
                pools.append((f"{name.strip()}: {n} texts, {k} triggered", draws, folder))
        for label, draws, model in pools:
            verdicts = [scan(pool, Path(tmp), model)["verdict"] for pool in draws]
            scores = sorted(float(v["score"]) for v in verdicts)
            row = {"pool": label, "n": len(draws[0]), "draws": len(draws),
                   "score_calls": sum(s >= 0.5 for s in scores),
                   "called": sum(bool(v["likely_backdoored"]) for v in verdicts),
                   "possible": sum(verdict_call(v) == "possible" for v in verdicts),
                   "median_score": scores[len(scores) // 2], "scores": scores,
                   "components": [{k: v["components"].get(k) for k in ("flag_rate", "chance_flag_rate", "tail",
                                                                         "purity")}
                                  | {"unlike": v.get("pool_unlike_clean")} for v in verdicts]}
            # the rule before settings.VERDICT_EXCESS_INPUTS and VERDICT_MIN_POOL: the same components, 5% alone
            row["called_before"] = sum(pool_verdict_score(c["flag_rate"], c["chance_flag_rate"], c["tail"],
                                                          c["purity"]) >= 0.5 for c in row["components"])
            rows.append(row)
            print(f"{label:28s} score>=0.5 {row['score_calls']}/{row['draws']}  called {row['called']}  "
                  f"possible {row['possible']}  median {row['median_score']:.2f}", flush=True)
    report = {"model": "BBC demo zoo", "draws": args.draws, "min_pool": S.VERDICT_MIN_POOL,
              "excess_inputs": S.VERDICT_EXCESS_INPUTS, "rows": rows,
              "seconds": time.time() - start}
    stem = "verdict_small_pools" + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / f"{stem}.json", json.dumps(report, indent=2))
    write_text(RESULTS / f"{stem}.md", render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
