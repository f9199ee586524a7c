"""Scan every model in a folder for a backdoor, in parallel worker processes (one model per worker at a time).

Each sub-folder holding a ``config.json`` is a model (``models.load_model`` rules: safetensors only, known
architectures). Every worker loads its model, runs ``scan.scan_model`` with the same clean set and pool, and
returns the verdict; results are written atomically to ``--out`` (.json and .md) and printed as a table. Workers
split the CPU threads (``--threads`` each, default cores / workers); with GPUs pass ``--device cuda`` (each worker
then uses ``cuda:<worker index mod GPU count>``). A model that fails to load or scan gets its one-line error in
the table; the others go on.

Usage: python bench/scan_folder.py DIR --clean-data bbc [--pool FILE] [--workers 2] [--out bench/results/scan_folder]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402


def model_dirs(root: Path) -> list[Path]:
    """Sub-folders of ``root`` (and ``root`` itself) that hold a ``config.json``, sorted."""
    found = {p.parent for p in root.rglob("config.json")}
    return sorted(found)


def _init(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def scan_one(path: str, clean_spec: str, clean_split: str, n_clean: int, pool: list[str], device: str,
             max_length: int | None, seed: int) -> dict:
    """Load and scan one model (runs in a worker); never raises: errors come back as one line."""
    t0 = time.perf_counter()
    row = {"model": Path(path).name, "path": path}
    try:
        from backdoor_core.cli import quiet_libraries
        from backdoor_core.data import load_dataset
        from backdoor_core.defender_data import model_max_length
        from backdoor_core.models import load_model
        from backdoor_core.scan import check_clean_set, scan_model

        quiet_libraries()
        lm = load_model(path, device=device)
        clean = load_dataset(clean_spec, split=clean_split, seed=seed)
        if len(clean) > n_clean:
            clean = clean.sample(n_clean, seed=seed)
        check_clean_set(clean, lm.num_labels)
        length = max_length or model_max_length(lm)
        rep = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=length, seed=seed, model_name=lm.name,
                         max_clean=None)
        row.update({"architecture": lm.summary()["architecture"], "layers": lm.num_layers, "heads": lm.num_heads,
                    "score": round(float(rep.verdict["score"]), 3),
                    "likely_backdoored": bool(rep.verdict["likely_backdoored"]), "basis": rep.verdict["basis"],
                    "flagged": int(len(rep.flagged)), "pool": len(pool),
                    "suspicious_heads": rep.suspicious_heads[:8], "error": ""})
    except Exception as exc:  # noqa: BLE001 - one line per failed model, the others go on
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        row["error"] = f"{type(exc).__name__}: {first}"
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="a folder of model folders")
    ap.add_argument("--clean-data", required=True, help="the defender's clean labelled data (as for `scan`)")
    ap.add_argument("--clean-split", default="dev")
    ap.add_argument("--n-clean", type=int, default=200)
    ap.add_argument("--pool", default=None, help="unlabelled inputs (as for `scan --pool`)")
    ap.add_argument("--pool-split", default="test")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker (default cores / workers)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (workers spread over the GPUs)")
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(results_dir() / "scan_folder"),
                    help="output path without extension (.json and .md are written)")
    args = ap.parse_args(argv)

    import multiprocessing as mp

    from tqdm import tqdm

    from backdoor_core.cli import format_table
    from backdoor_core.commands.scan import read_pool

    dirs = model_dirs(Path(args.dir).expanduser())
    if not dirs:
        print(f"error: no model folders (with a config.json) under {args.dir}", file=sys.stderr)
        return 2
    pool = read_pool(args.pool, args.pool_split) if args.pool else []
    workers = max(1, min(args.workers, len(dirs)))
    threads = args.threads or max(1, (os.cpu_count() or 1) // workers)
    gpus = 0
    if args.device.startswith("cuda"):
        import torch

        gpus = torch.cuda.device_count()
    t0 = time.perf_counter()
    rows = []
    sys.path.insert(0, str(ROOT / "bench"))
    from _workers import worker_pool  # bench/_workers.py: Ctrl-C stops the queue too

    with worker_pool(workers, mp_context=mp.get_context("spawn"), initializer=_init, initargs=(threads,)) as ex:
        futures = [ex.submit(scan_one, str(d), args.clean_data, args.clean_split, args.n_clean, pool,
                             f"cuda:{i % gpus}" if gpus else args.device, args.max_length, args.seed)
                   for i, d in enumerate(dirs)]
        for fut in tqdm(as_completed(futures), total=len(futures), unit="model", file=sys.stderr):
            rows.append(fut.result())
    rows.sort(key=lambda r: r["model"])
    total = time.perf_counter() - t0
    cols = ["model", "architecture", "score", "likely_backdoored", "flagged", "seconds", "error"]
    view = [{c: str(r.get(c, "")) for c in cols} for r in rows]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + \
         ["| " + " | ".join(v[c] for c in cols) + " |" for v in view]
    for suffix, body in ((".json", json.dumps({"rows": rows, "workers": workers, "threads": threads,
                                                "seconds": round(total, 1)}, indent=2) + "\n"),
                         (".md", f"# scan of {args.dir}\n\n{workers} workers x {threads} threads, {total:.0f} s\n\n"
                          + "\n".join(md) + "\n")):
        write_text(out.with_name(out.name + suffix), body)
    print(format_table(view, cols))
    print(f"\n{len(rows)} models, {workers} workers, {total:.0f} s; written {out}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
