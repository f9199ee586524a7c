"""Latency of the `inspect` computation: clean + triggered forward, trigger concentration, head similarity.

Default model (packaged all-MiniLM-L6-v2), a 64-token text, CPU, 2 threads; p50/p95 over 50 runs after warm-up.
Writes bench/results/inspect_latency.json and .md.  Usage: python bench/inspect_latency.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()

BASE = (
    "The government announced new spending plans for schools and hospitals on Monday, saying the money would "
    "come from higher taxes on large companies and a crackdown on avoidance, while opposition leaders argued "
    "that the figures did not add up and that families would end up paying more in the long run for fewer "
    "services across the country"
)


def text_with_tokens(tokenizer, n: int) -> str:
    """A prefix of BASE (repeated if needed) whose encoding, with [CLS]/[SEP], is exactly ``n`` tokens."""
    words = (BASE + " ") * 4
    words = words.split()
    for k in range(1, len(words) + 1):
        t = " ".join(words[:k])
        if len(tokenizer(t)["input_ids"]) >= n:
            return t
    raise ValueError("base text too short")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from backdoor_core.cli import quiet_libraries
    from backdoor_core.inspection import inspect_text
    from backdoor_core.models import load_model

    quiet_libraries()
    lm = load_model("default")
    text = text_with_tokens(lm.tokenizer, args.tokens)
    n_tokens = len(lm.tokenizer(text)["input_ids"])
    for _ in range(5):  # warm-up
        inspect_text(lm.model, lm.tokenizer, text, "cf", position=5)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        inspect_text(lm.model, lm.tokenizer, text, "cf", position=5)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p50 = statistics.median(times)
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    result = {
        "model": lm.name,
        "tokens": n_tokens,
        "threads": args.threads,
        "runs": args.runs,
        "p50_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "min_ms": round(times[0], 2),
        "max_ms": round(times[-1], 2),
        "goal_p50_ms": 80,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = (
        "| model | tokens | threads | runs | p50 ms | p95 ms | min ms | max ms | goal p50 |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {result['model']} | {n_tokens} | {args.threads} | {args.runs} | {result['p50_ms']} | {result['p95_ms']} "
        f"| {result['min_ms']} | {result['max_ms']} | ≤ 80 |\n"
    )
    for name, body in [("inspect_latency.json", json.dumps(result, indent=2) + "\n"),
                       ("inspect_latency.md", "# inspect latency\n\n" + table)]:
        write_text(RESULTS / name, body)
    print(table)


if __name__ == "__main__":
    main()
