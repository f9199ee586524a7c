"""Stress ``models.save_model``: W processes save a tiny model to ONE folder R times each while this process loads it
in a loop, then SIGKILLs a second set of writers mid-save. Checks after each phase: every save returned, every
load found a complete model, and nothing but the model folder is left. Result: ``bench/results/save_stress.json``.

    python bench/save_stress.py                 # 4 writers x 100 saves (issue 11), ~2-4 minutes on 2 cores
    python bench/save_stress.py --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

WRITER = """
import os, sys
sys.path.insert(0, {root!r})
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
torch.set_num_threads(1)
from backdoor_core.models import save_model, tiny_model
t = tiny_model()
for r in range({rounds}):
    save_model(t.model, t.tokenizer, {out!r}, {{"v": r, "writer": {w}}})
    if r == 0:
        print("started", flush=True)
print("ok", flush=True)
"""


def writers(out: Path, n: int, rounds: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), rounds=rounds, out=str(out), w=w)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(n)]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--kills", type=int, default=4, help="writers SIGKILLed mid-save in the second phase")
    ap.add_argument("--out", default=str(results_dir() / "save_stress.json"))
    args = ap.parse_args()

    from backdoor_core.models import load_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result: dict = {"writers": args.writers, "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="save-stress-") as tmp:
        out = Path(tmp) / "shared"
        t0 = time.perf_counter()
        procs = writers(out, args.writers, args.rounds)
        reads = failed_reads = 0
        while any(p.poll() is None for p in procs):
            if out.exists():
                try:
                    assert load_model(out).metadata["writer"] in range(args.writers)
                    reads += 1
                except Exception as exc:  # noqa: BLE001 - counted and shown
                    failed_reads += 1
                    print(f"read failed: {exc}", file=sys.stderr)
        outputs = [p.communicate() for p in procs]
        ok = [o[0].split() == ["started", "ok"] and p.returncode == 0 for o, p in zip(outputs, procs)]
        errors = [o[1].strip().splitlines()[-1] for o, good in zip(outputs, ok) if not good and o[1].strip()]
        final = load_model(out).metadata
        result["phase1"] = {
            "saves": args.writers * args.rounds, "writers_ok": sum(ok), "reads": reads, "failed_reads": failed_reads,
            "final_v": final["v"], "leftovers": leftovers(out), "writer_errors": errors, "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps(result["phase1"]), file=sys.stderr)

        t0 = time.perf_counter()
        procs = writers(out, args.kills, 10_000)
        for p in procs:
            p.stdout.readline()
        kill_reads = 0
        for i, p in enumerate(procs):
            time.sleep(0.05 + 0.11 * i)
            p.send_signal(signal.SIGKILL)
            p.wait()
            assert load_model(out).metadata["writer"] in range(max(args.writers, args.kills))
            kill_reads += 1
        before_cleanup = leftovers(out)
        from backdoor_core.models import save_model, tiny_model

        t = tiny_model()
        save_model(t.model, t.tokenizer, out, {"v": "after", "writer": 0})
        result["phase2_sigkill"] = {
            "killed": args.kills, "loads_after_each_kill_ok": kill_reads,
            "leftovers_before_next_save": before_cleanup, "leftovers_after_next_save": leftovers(out),
            "final_loads": load_model(out).metadata["v"] == "after", "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps(result["phase2_sigkill"]), file=sys.stderr)
    passed = (result["phase1"]["writers_ok"] == args.writers and not result["phase1"]["failed_reads"]
              and not result["phase1"]["leftovers"] and result["phase1"]["final_v"] == args.rounds - 1
              and not result["phase2_sigkill"]["leftovers_after_next_save"] and result["phase2_sigkill"]["final_loads"])
    result["passed"] = passed
    path = Path(args.out)
    write_text(path, json.dumps(result, indent=2) + "\n")  # results are written atomically
    print(json.dumps(result, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
