"""Outputs of every forward-pass consumer on a tiny backdoored model, for the forward-refactor regression test.

``collect()`` runs the detectors, the scan, the alignment repair and the baselines on ``defense_helpers``'s tiny
backdoored model and returns ``{name: array}``. ``tests/data/forward_golden.npz`` holds what the code before the
single cached forward (``backdoor_core.forward``) returned; ``test_forward_regression`` compares.

    OMP_NUM_THREADS=1 python tests/forward_golden.py --write   # rewrite the golden file (only on purpose)
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "forward_golden.npz"


def collect() -> dict[str, np.ndarray]:
    import torch

    from backdoor_core.attention import predict, run_attention
    from backdoor_core.baselines.fineprune import head_activity
    from backdoor_core.baselines.pure import cls_attention_variance
    from backdoor_core.baselines.strip import strip_scores
    from backdoor_core.data import TextDataset
    from backdoor_core.defenses import run_defense
    from backdoor_core.detection import attention_stats, flags_score
    from backdoor_core.head_safety import gate_importance
    from backdoor_core.sanitize import alignment_value, focus_removal_labels, safe_head_labels
    from backdoor_core.scan import scan_model
    from defense_helpers import clean_texts, trained_tiny, triggered_texts

    torch.manual_seed(0)
    lm = trained_tiny(True)
    model, tok = lm.model, lm.tokenizer
    texts, labels = clean_texts(40, seed=35)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    out: dict[str, np.ndarray] = {}

    recs = run_attention(model, tok, pool[:5] + ["a " * 40], max_length=32, batch_size=4)
    out["ra_logits"] = np.stack([r.logits for r in recs])
    out["ra_att"] = np.concatenate([r.attentions.ravel() for r in recs])
    out["ra_offsets"] = np.concatenate([r.offsets.ravel() for r in recs])
    out["ra_truncated"] = np.array([r.truncated for r in recs])
    out["predict"] = predict(model, tok, pool, 32, batch_size=7)

    st = attention_stats(model, tok, texts, 32, batch_size=16)
    for f in st.FIELDS:
        out[f"stats_{f}"] = getattr(st, f)

    # the paper's attention-only scan and head-only repair, as recorded (fusion / FFN repair: test_style_defense)
    rep = scan_model(model, tok, clean, pool, max_length=32, frr=0.2, representation=False)
    out["scan_clean_scores"] = rep.clean_scores
    out["scan_pool_scores"] = rep.pool_scores
    out["scan_threshold"] = np.array(rep.threshold)
    out["scan_flagged"] = rep.flagged
    out["scan_verdict"] = np.array(flags_score(rep.verdict))  # the flags' score (the pool's words score apart)
    out["scan_first_pool_scores"] = rep.first_pass["pool_scores"]
    out["scan_first_flagged"] = rep.first_pass["flagged"]
    for f in ("collapse", "importance", "score", "suspicious"):
        out[f"heads_{f}"] = getattr(rep.heads, f)

    susp = rep.heads.suspicious
    flagged = rep.flagged_texts
    out["gate_importance"] = gate_importance(model, tok, pool, 32)
    out["safe_labels"] = np.array(safe_head_labels(model, tok, flagged, susp, 32))
    out["focus_labels"] = np.array(focus_removal_labels(model, tok, pool, susp, 32))
    out["align_value"] = np.array(alignment_value(model, tok, pool + texts[:10], susp, max_length=32,
                                                  batch_size=8))
    out["head_activity"] = head_activity(model, tok, texts, 32, batch_size=16)
    out["cls_variance"] = cls_attention_variance(model, tok, texts, 32, batch_size=16)
    out["strip"] = strip_scores(model, tok, pool, texts, repeats=3, max_length=32, pool="all")  # the recipe of the recording

    res = run_defense("alignment", model, tok, clean, pool_texts=pool, scan=rep, epochs=2, max_length=32, seed=0,
                      ffn="none", repair_seeds=1, group_by_length=False, pool_words=False,
                      precision="fp32")  # the recording's training settings
    out["align_logits"] = predict(res.model, tok, pool + texts[:10], 32)
    out["align_labelled"] = np.array([res.details["pool_pseudo_labelled"], res.details["pool_gate_labelled"],
                                      res.details["pool_exclusion_labelled"]])
    out["align_before_after"] = np.array([res.details["align_before"], res.details["align_after"]])
    # pure_* re-recorded for issue 10 (balanced-accuracy guard, at most half the heads pruned: baselines.pure)
    res = run_defense("pure", copy.deepcopy(model), tok, clean, epochs=1, max_length=32, seed=0)
    out["pure_logits"] = predict(res.model, tok, pool, 32)
    out["pure_n_pruned"] = np.array(res.details["n_pruned"])
    res = run_defense("fineprune", model, tok, clean, epochs=1, max_length=32, seed=0)
    out["fineprune_logits"] = predict(res.model, tok, pool, 32)
    return out


if __name__ == "__main__":
    if "--write" not in sys.argv[1:]:
        raise SystemExit("Refusing to overwrite the golden file without --write.")
    sys.path[:0] = [str(HERE), str(HERE.parent)]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("GOLDEN_THREADS", "1")))
    GOLDEN.parent.mkdir(exist_ok=True)
    data = collect()
    np.savez_compressed(GOLDEN, **data)
    print({k: v.shape for k, v in data.items()})
