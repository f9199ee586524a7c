"""Sanitization under 2 processes on the CPU (``torchrun``; Accelerate sees MULTI_CPU with the gloo backend):
the same code as one process, batches sharded, gradients averaged — both processes must end with identical
weights and untouched frozen slices. ~30-60 s (two interpreters start)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from backdoor_core import settings as S

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sanitize_under_two_cpu_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(ROOT / "tests" / "multiprocess_sanitize.py"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["processes"] == 2 and r["steps"] == 2 * S.REPAIR_SEEDS and r["frozen_unchanged"] for r in ranks)
    assert ranks[0]["weights"] == ranks[1]["weights"]
