"""Head safety: collapse x importance, the suspicious / safe split, and the clean fallback."""

import numpy as np
import pytest
import torch

from backdoor_core.detection import attention_stats
from backdoor_core.head_safety import (HeadSafety, collapse_scores, evaluate_heads, gate_importance, repair_heads,
                                       split_heads)
from defense_helpers import clean_texts, trained_tiny, triggered_texts


def test_split_rule_threshold_caps_and_top_k():
    score = np.array([[1.0, 0.9, 0.8, 0.1], [0.5, 0.05, 0.0, 0.0]])
    m = split_heads(score, rel_threshold=0.3, max_fraction=1.0)
    # layer 0 would have 3 heads above 0.3 but may keep at most H-1 = 3: all three; layer 1 only head 0
    assert m.tolist() == [[True, True, True, False], [True, False, False, False]]
    m = split_heads(score, rel_threshold=0.3, max_fraction=0.25)  # cap: 2 of 8 heads
    assert m.sum() == 2 and m[0, 0] and m[0, 1]
    m = split_heads(score, top_k=5)
    assert m.sum() == 5 and not m[0].all()
    assert not split_heads(np.zeros((2, 4))).any()
    with pytest.raises(ValueError):
        split_heads(score, max_fraction=0)


def test_repair_min_heads_widens_a_small_set_to_the_best_scoring_heads():
    """``min_heads`` widens a suspicious set smaller than it to that many of the highest-scoring heads with a
    positive score (per-layer cap kept), at most the scan's ``max_fraction`` of all heads; a set already that
    large, 0, or a set the weak-evidence cap narrowed keeps its heads."""
    score = np.array([[1.0, 0.05, 0.3, 0.0], [0.02, 0.6, 0.0, 0.0]])
    scan = split_heads(score, rel_threshold=0.5)  # L0H0, L1H1
    heads = HeadSafety(collapse=score, importance=score, score=score, suspicious=scan, rule={"max_fraction": 1.0})
    assert repair_heads(heads, 0.9, min_heads=0).tolist() == scan.tolist()
    assert repair_heads(heads, 0.9, min_heads=2).tolist() == scan.tolist()
    wide = repair_heads(heads, 0.9, min_heads=4)
    assert wide.tolist() == [[True, True, True, False], [False, True, False, False]]
    assert repair_heads(heads, 0.9, min_heads=8).sum() == 5  # only five heads score above 0
    heads.rule["max_fraction"] = 0.375  # 3 of the 8 heads at most
    assert repair_heads(heads, 0.9, min_heads=4).tolist() == [[True, False, True, False], [False, True, False, False]]
    narrowed = repair_heads(heads, 0.5, weak_verdict=0.7, weak_top_k=1, min_heads=4)
    assert narrowed.tolist() == [[True, False, False, False], [False, False, False, False]]
    with pytest.raises(ValueError):
        repair_heads(heads, 0.9, min_heads=-1)


def test_importance_is_zero_for_a_silenced_head(tiny):
    import copy

    from backdoor_core.architecture import attention_blocks

    model = copy.deepcopy(tiny.model)
    block = attention_blocks(model)[1]
    with torch.no_grad():
        block.output.weight[:, block.head_slice(2)] = 0
    texts, _ = clean_texts(6, seed=3)
    imp = gate_importance(model, tiny.tokenizer, texts, max_length=32)
    assert imp.shape == (2, 4) and np.all(imp >= 0)
    assert imp[1, 2] == 0 and imp.sum() > 0
    assert all(p.requires_grad for p in model.parameters())  # restored


def test_backdoor_heads_collapse_and_rank_high():
    lm = trained_tiny(True)
    ct, _ = clean_texts(60, seed=7)
    tt = triggered_texts(30, seed=8)
    res = evaluate_heads(lm.model, lm.tokenizer, ct, tt, max_length=32, rel_threshold=0.3, max_fraction=0.5)
    assert res.basis == "flagged" and res.n_flagged == 30
    assert res.collapse.shape == res.importance.shape == res.score.shape == (2, 4)
    # the TAL-trained heads are 0 and 1 of each layer: they collapse more onto the trigger than the others
    assert res.collapse[:, :2].mean() > res.collapse[:, 2:].mean()
    assert 1 <= res.suspicious.sum() <= 4 and np.all(res.suspicious.sum(1) <= 3)
    assert res.suspicious_labels and res.suspicious_labels[0].startswith("L")
    d = res.to_dict()
    assert d["suspicious_heads"] == res.suspicious_labels and np.array(d["score"]).shape == (2, 4)


def test_clean_fallback_without_flagged_inputs(tiny):
    ct, _ = clean_texts(20, seed=1)
    stats = attention_stats(tiny.model, tiny.tokenizer, ct, max_length=32)
    scores = stats.common.mean(-1).max(-1)
    res = evaluate_heads(tiny.model, tiny.tokenizer, ct, [], clean_stats=stats, clean_scores=scores,
                         max_length=32)
    assert res.basis == "clean fallback" and res.n_flagged == 2
    with pytest.raises(ValueError, match="clean_scores"):
        evaluate_heads(tiny.model, tiny.tokenizer, ct, [], clean_stats=stats, max_length=32)
    with pytest.raises(ValueError, match="at least 4 clean"):
        evaluate_heads(tiny.model, tiny.tokenizer, ct[:3], ["x"], max_length=32)
    with pytest.raises(ValueError, match="collapse feature"):
        collapse_scores(stats, stats, "nope")
