"""Do the decoder rules matter? Tiny GPT-2 and Llama (GQA) classifiers with a TAL backdoor, scanned and repaired
with the decoder rules (per-key visibility, sink not content, causal trigger concentration) and with them switched
off (the statistics computed as for an encoder; ablation).

Recipe (the test suite's synthetic sentiment task, ``tests/defense_helpers.py``): 400 training sentences, 15% of the
negative ones get the trigger ``cf`` and label 1, TAL (alpha 1) on heads 0-1 of both layers, 4 epochs; a clean twin
without poison. Scan: 120 clean texts (half fit, half set the threshold), pool = 60 clean + 60 triggered, max
length 32. Repair: ``sanitize_heads`` on the scan's suspicious heads and flagged inputs (defaults). Seeds 0-2.

Writes bench/results/decoder_rules.json and .md (atomically) and prints the table.
Usage: python bench/decoder_rules.py [--seeds 0,1,2] [--archs gpt2,llama]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402
sys.path.insert(0, str(ROOT / "tests"))
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()


@contextmanager
def encoder_rules(on: bool):
    """Ablation: make the statistics treat the decoder as an encoder (``is_causal`` -> False where they ask)."""
    import backdoor_core.architecture as A
    import backdoor_core.detection as D
    import backdoor_core.sanitize as S

    saved = A.is_causal, D.is_causal, S.is_causal
    if on:
        A.is_causal = D.is_causal = S.is_causal = lambda model: False
    try:
        yield
    finally:
        A.is_causal, D.is_causal, S.is_causal = saved


def run_one(arch: str, seed: int, ablate: bool) -> dict:
    import numpy as np
    from defense_helpers import clean_texts, training_examples, triggered_texts

    from backdoor_core.architecture import is_causal
    from backdoor_core.data import TextDataset
    from backdoor_core.forward import predict
    from backdoor_core.metrics import accuracy, asr, auroc
    from backdoor_core.models import tiny_model
    from backdoor_core.sanitize import default_config, sanitize_heads
    from backdoor_core.scan import scan_model
    from backdoor_core.tal import TrojanAttentionLoss
    from backdoor_core.training import TrainConfig, train

    ct, cl = clean_texts(120, 11)
    trig = triggered_texts(60, 12)
    pool = clean_texts(60, 13)[0] + trig
    truth = np.r_[np.zeros(60), np.ones(60)].astype(bool)
    row: dict = {"arch": arch, "seed": seed, "rules": "encoder (ablation)" if ablate else "decoder"}
    for backdoored in (True, False):
        lm = tiny_model(arch=arch, seed=seed)
        heads = np.zeros((2, 4), dtype=bool)
        heads[:, :2] = True
        extra = TrojanAttentionLoss(heads, 1.0, is_causal(lm.model)) if backdoored else None
        train(lm.model, lm.tokenizer, training_examples(400, seed, 0.15 if backdoored else 0.0),
              TrainConfig(lr=3e-3, epochs=4, batch_size=32, max_length=32, seed=seed, eval_every=0), extra_loss=extra)
        with encoder_rules(ablate):
            rep = scan_model(lm.model, lm.tokenizer, TextDataset(ct, cl, ["neg", "pos"]), pool, max_length=32,
                             max_clean=None)
            tag = "bd" if backdoored else "clean"
            row[f"verdict_{tag}"] = round(float(rep.verdict["score"]), 3)
            if backdoored:
                row["asr"] = asr(predict(lm.model, lm.tokenizer, trig, 32).argmax(1), 1)  # negatives + trigger
                row["auroc_pool"] = round(auroc(rep.pool_scores[~truth], rep.pool_scores[truth]), 3)
                row["flagged_triggered"] = int(truth[rep.flagged].sum())
                row["flagged_clean"] = int((~truth[rep.flagged]).sum())
                row["suspicious"] = rep.suspicious_heads
                row["tal_heads_found"] = int(sum(heads[l, h] for l, h in zip(*np.nonzero(rep.heads.suspicious))))
                if rep.heads.suspicious.any():
                    sanitize_heads(lm.model, lm.tokenizer, ct, cl, rep.heads.suspicious,
                                   [pool[i] for i in rep.flagged], config=default_config(max_length=32))
                    row["asr_after"] = asr(predict(lm.model, lm.tokenizer, trig, 32).argmax(1), 1)
                    row["cacc_after"] = accuracy(predict(lm.model, lm.tokenizer, ct, 32).argmax(1), cl)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--archs", default="gpt2,llama")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from backdoor_core.cli import format_table, quiet_libraries

    quiet_libraries()
    t0 = time.perf_counter()
    rows = []
    for arch in args.archs.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for ablate in (False, True):
                rows.append(run_one(arch, seed, ablate))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    cols = ["arch", "seed", "rules", "asr", "auroc_pool", "flagged_triggered", "flagged_clean", "verdict_bd",
            "verdict_clean", "tal_heads_found", "asr_after", "cacc_after"]
    view = [{c: (f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "-"))) for c in cols} for r in rows]
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(v[c] for c in cols) + " |" for v in view]
    RESULTS.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter() - t0
    for name, body in [("decoder_rules.json", json.dumps({"rows": rows, "seconds": round(total)}, indent=2) + "\n"),
                       ("decoder_rules.md", "# decoder rules vs encoder rules on decoder classifiers\n\n"
                        "See bench/decoder_rules.py for the recipe. auroc_pool: detection scores, 60 clean vs 60 "
                        "triggered pool inputs; tal_heads_found: how many of the suspicious heads are "
                        "among the 4 TAL-trained ones (H0, H1 of both layers); verdict >= 0.5 = likely backdoored.\n\n" + "\n".join(md) + "\n")]:
        write_text(RESULTS / name, body)
    print(format_table(view, cols))
    print(f"total {total:.0f} s")


if __name__ == "__main__":
    main()
