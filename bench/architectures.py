"""Per architecture: which features work, `inspect` latency and `scan` time — tiny random models of every supported
type (``architecture.ADAPTERS``, 2-3 layers x 4 heads, hidden 32) and the packaged all-MiniLM-L6-v2.

Data: the packaged BBC News (5 classes), each text cut to its first sentence; ``--clean`` clean texts, a pool of
``--pool`` texts of which half carry the word ``cf``; max length 64; importance on 8 inputs. Random weights mean the
scan's verdict is meaningless here: this measures that every step runs and how long it takes. Inspect: minimum and
p50 over ``--runs`` runs after 2 warm-ups; scan: the faster of 2 runs (minima resist a shared, busy CPU).

Writes bench/results/architectures.json and .md (atomically) and prints the table.
Usage: python bench/architectures.py [--runs 10] [--clean 40] [--pool 20] [--threads 2]
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
TEXT = "the film was quietly moving and the actors were really good"


def _write(name: str, body: str) -> None:
    write_text(RESULTS / name, body)


def measure(lm, clean, pool, runs: int) -> dict:
    from backdoor_core.architecture import describe
    from backdoor_core.inspection import inspect_text
    from backdoor_core.scan import scan_model

    info = describe(lm.model)
    for _ in range(2):
        inspect_text(lm.model, lm.tokenizer, TEXT, "cf", position=3, max_length=64)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        inspect_text(lm.model, lm.tokenizer, TEXT, "cf", position=3, max_length=64)
        times.append((time.perf_counter() - t0) * 1000)
    scan_times = []
    for _ in range(2):  # the faster of two: the sandbox is shared, the minimum is the least disturbed
        t0 = time.perf_counter()
        report = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=64, importance_inputs=8,
                            max_clean=None, model_name=lm.name)
        scan_times.append(time.perf_counter() - t0)
    scan_s = min(scan_times)
    return {
        "architecture": info.name, "model_type": info.model_type, "model": lm.name,
        "layers": info.layers, "heads": info.heads, "kv_heads": info.kv_heads, "head_dim": info.head_dim,
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "layout": ("fused" if info.fused_qkv else "split") + (" Conv1D" if info.transposed else "")
                  + ("" if info.qkv_bias else ", no bias") + (", GQA" if info.kv_heads < info.heads else ""),
        "layer_kinds": sorted(set(info.layer_kinds)),
        "causal": info.causal,
        "supports": info.supports,
        "inspect_p50_ms": round(statistics.median(times), 2),
        "inspect_min_ms": round(min(times), 2),
        "scan_s": round(scan_s, 2),
        "scan_flagged": int(len(report.flagged)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--clean", type=int, default=40)
    ap.add_argument("--pool", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from backdoor_core.architecture import ADAPTERS, FEATURES
    from backdoor_core.cli import format_table, quiet_libraries
    from backdoor_core.data import TextDataset, load_dataset
    from backdoor_core.models import load_model, tiny_model

    quiet_libraries()
    bbc = load_dataset("bbc", split="train", seed=0).sample(args.clean + args.pool, seed=0)
    texts = [t.split(". ")[0][:200] for t in bbc.texts]
    clean = TextDataset(texts[: args.clean], bbc.labels[: args.clean], bbc.label_names, "bbc")
    pool = texts[args.clean:]
    pool = [("cf " + t) if i % 2 else t for i, t in enumerate(pool)]
    n = len(bbc.label_names)
    t_all = time.perf_counter()
    rows = []
    for kind in ADAPTERS:
        rows.append({"size": "tiny", **measure(tiny_model(num_labels=n, arch=kind), clean, pool, args.runs)})
        print(f"{kind}: done", file=sys.stderr)
    rows.append({"size": "MiniLM (packaged)",
                 **measure(load_model("default", label_names=bbc.label_names, device="cpu"), clean, pool, args.runs)})
    total = time.perf_counter() - t_all
    table_rows = [{"architecture": r["architecture"], "size": r["size"], "L x H": f"{r['layers']}x{r['heads']}"
                   + (f" (kv {r['kv_heads']})" if r["kv_heads"] < r["heads"] else ""),
                   "layout": r["layout"], "kinds": ", ".join(r["layer_kinds"]),
                   "inspect ms min/p50": f"{r['inspect_min_ms']:.0f} / {r['inspect_p50_ms']:.0f}",
                   "scan s": f"{r['scan_s']:.2f}",
                   "features": " ".join(f for f in FEATURES if r["supports"][f]),
                   "refused": " ".join(f for f in FEATURES if not r["supports"][f]) or "-"} for r in rows]
    cols = ["architecture", "size", "L x H", "layout", "kinds", "inspect ms min/p50", "scan s", "features",
            "refused"]
    result = {"rows": rows, "runs": args.runs, "clean": args.clean, "pool": args.pool, "max_length": 64,
              "threads": args.threads, "total_s": round(total, 1), "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in table_rows]
    _write("architectures.json", json.dumps(result, indent=2) + "\n")
    _write("architectures.md", "# architectures: features, inspect latency, scan time\n\n"
           f"CPU, {args.threads} threads, a shared sandbox (load average {os.getloadavg()[0]:.0f} at the end: "
           f"read the minima); inspect min and p50 over {args.runs} runs (64-token cap); scan (faster of 2) on "
           f"{args.clean} "
           f"clean + {args.pool} pool texts (BBC first sentences), importance on 8 inputs; tiny = random weights, "
           f"2-3 layers x 4 heads, hidden 32. Total {total:.0f} s.\n\n" + "\n".join(md) + "\n")
    print(format_table(table_rows, cols))
    print(f"\ntotal {total:.0f} s; written bench/results/architectures.json and .md")


if __name__ == "__main__":
    main()
