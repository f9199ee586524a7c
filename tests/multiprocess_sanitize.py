"""Run by tests/test_architectures.py under ``accelerate launch --cpu --num_processes 2``: head-wise sanitization
of a tiny model on each process (Accelerate shards the batches and averages the gradients). Each process writes
``rank<k>.json``: its process count, steps, whether the frozen slices stayed byte-identical, and a hash of every
parameter (the processes must end with identical weights)."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(out: str) -> None:
    from accelerate import PartialState
    from defense_helpers import clean_texts, triggered_texts

    from backdoor_core.models import tiny_model
    from backdoor_core.sanitize import default_config, sanitize_heads

    state = PartialState(cpu=True)
    lm = tiny_model(arch=sys.argv[2] if len(sys.argv) > 2 else "bert", seed=0)
    texts, labels = clean_texts(32, seed=1)
    suspicious = np.zeros((2, 4), dtype=bool)
    suspicious[0, 0] = suspicious[1, 3] = True
    cfg = default_config(epochs=1, batch_size=8, max_length=32, max_steps=2, eval_every=100)
    res = sanitize_heads(lm.model, lm.tokenizer, texts, labels, suspicious, triggered_texts(8, seed=2), config=cfg)
    digest = hashlib.sha256()
    for name, p in sorted(lm.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    Path(out, f"rank{state.process_index}.json").write_text(json.dumps({
        "processes": state.num_processes, "steps": res.steps, "frozen_unchanged": bool(res.frozen_unchanged),
        "weights": digest.hexdigest()}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
