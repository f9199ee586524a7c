"""Baselines: fine-tuning, fine-pruning, PURE, STRIP — on tiny models, through the common registry."""

import copy

import numpy as np
import pytest
import torch

from backdoor_core.architecture import attention_blocks, head_gates
from backdoor_core.baselines.fineprune import choose_lowest, head_activity, prune_heads_persistent
from backdoor_core.baselines.pure import cls_attention_variance, layer_weights, max_pruned_heads, search_pruning
from backdoor_core.baselines.strip import strip_scores
from backdoor_core.data import TextDataset
from backdoor_core.defenses import run_defense
from backdoor_core.forward import run_with_cache
from backdoor_core.metrics import accuracy, auroc, balanced_accuracy
from backdoor_core.models import load_model, save_model
from defense_helpers import clean_texts, trained_tiny, triggered_texts


def _ds(n, seed):
    texts, labels = clean_texts(n, seed)
    return TextDataset(texts, labels, ["neg", "pos"])


def test_finetune_changes_weights_and_keeps_the_original(tiny):
    ds = _ds(32, 1)
    before = copy.deepcopy(tiny.model.state_dict())
    res = run_defense("finetune", tiny.model, tiny.tokenizer, ds, epochs=1, lr=1e-3, max_length=32)
    assert all(torch.equal(v, tiny.model.state_dict()[k]) for k, v in before.items())  # copy=True by default
    changed = sum(not torch.equal(v, res.model.state_dict()[k]) for k, v in before.items())
    assert changed > 0 and res.history and res.seconds > 0


def test_fineprune_keeps_pruned_heads_at_zero_through_training_and_saving(tiny, tmp_path):
    ds = _ds(40, 2)
    act = head_activity(tiny.model, tiny.tokenizer, ds.texts, max_length=32)
    assert act.shape == (2, 4) and np.all(act >= 0)
    chosen = choose_lowest(act, 0.75)
    assert chosen.sum() == 6 and np.all(chosen.sum(1) <= 3)  # one head per layer always kept
    res = run_defense("fineprune", tiny.model, tiny.tokenizer, ds, prune_fraction=0.25, epochs=1, lr=1e-3,
                      max_length=32)
    pruned = res.details["pruned_heads"]
    assert len(pruned) == 2
    out = save_model(res.model, tiny.tokenizer, tmp_path / "fp", {"pruned": pruned})
    reloaded = load_model(out).model
    blocks = {block.layer: block for block in attention_blocks(reloaded)}
    assert sorted(blocks) == [0, 1]
    for label in pruned:
        layer, head = int(label[1]), int(label[3])
        block = blocks[layer]
        assert torch.count_nonzero(block.output.weight[:, block.head_slice(head)]) == 0
        assert torch.count_nonzero(block.value.module.weight[block.value.features(head)]) == 0


def test_pure_pieces_and_end_to_end():
    lm = trained_tiny(False)
    texts, labels = clean_texts(40, seed=3)
    var = cls_attention_variance(lm.model, lm.tokenizer, texts, max_length=32)
    assert var.shape == (2, 4) and np.all(var >= 0)
    w = layer_weights(var)
    assert w.shape == (2,) and w.min() == 0 and w.max() == 1
    pruned, log = search_pruning(lm.model, lm.tokenizer, texts, labels, var, min_acc=0.0, group=3, max_length=32)
    assert np.all(pruned.sum(1) <= 3) and log  # never a whole layer
    # a floor that never fires stops at the cap (half of 2x4), not at "all but one head per layer" (6)
    assert max_pruned_heads((2, 4)) == 4 and pruned.sum() == 4 and log[-1]["pruned"] == 4
    assert max_pruned_heads((6, 12)) == 36 and max_pruned_heads((2, 4), 0.9) == 6
    pruned, _ = search_pruning(lm.model, lm.tokenizer, texts, labels, var, min_acc=1.01, group=3, max_length=32)
    assert pruned.sum() <= 3  # the floor cannot be met: the first group is restored head by head
    res = run_defense("pure", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), epochs=1,
                      lr=1e-3, max_length=32)
    assert {"pruned_heads", "min_acc", "layer_weights", "search"} <= set(res.details)
    assert any("cls_norm" in row for row in res.history)
    with pytest.raises(ValueError, match="max_fraction"):
        run_defense("pure", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), max_fraction=1.0)


def test_pure_guard_is_balanced_accuracy():
    """A model calling everything the majority class keeps 70% accuracy on a 70/30 set: the guard must see 0.5."""
    labels = [0] * 7 + [1] * 3
    majority = [0] * 10
    assert accuracy(majority, labels) == 0.7 and balanced_accuracy(majority, labels) == 0.5
    assert balanced_accuracy(labels, labels) == 1.0
    assert balanced_accuracy([0, 1, 1, 1], [0, 0, 1, 1]) == 0.75


def _logits(model, tokenizer, texts):
    return run_with_cache(model, tokenizer, texts, max_length=32).logits


def _head_moves_logits(model, tokenizer, texts, layer, head, base) -> float:
    """Largest logit change after adding noise to head ``(layer, head)``'s query, key and value rows."""
    twin = copy.deepcopy(model)
    block = attention_blocks(twin)[layer]
    gen = torch.Generator().manual_seed(layer * 10 + head)
    with torch.no_grad():
        for rows in (block.query, block.key, block.value):
            w = rows.module.weight[rows.features(head)]
            w += torch.randn(w.shape, generator=gen)
            if rows.module.bias is not None:
                b = rows.module.bias[rows.features(head)]
                b += torch.randn(b.shape, generator=gen)
    return float(np.abs(_logits(twin, tokenizer, texts) - base).max())


def test_pure_pruning_is_in_the_weights_during_training_after_and_after_saving(tmp_path):
    """Issue 10 item 4: pruned heads contribute nothing while PURE fine-tunes, in the model it returns (no hook
    left to remove) and after save/load; unpruned heads still matter; the count respects the cap."""
    lm = trained_tiny(True)
    texts, labels = clean_texts(50, seed=4)
    probe_texts = texts[:16]
    seen = []

    def evaluate(model):  # called by training.train in the middle of PURE's fine-tuning
        if seen and seen[0] is not None:
            pruned = seen[0]
            plain = _logits(model, lm.tokenizer, probe_texts)
            with head_gates(model, torch.as_tensor(~pruned, dtype=torch.float32)):
                gated = _logits(model, lm.tokenizer, probe_texts)
            seen.append(float(np.abs(plain - gated).max()))
        return {}

    # the pruned mask is only known at the end: run once to learn it, then again (same seed) with the check on
    seen.append(None)
    first = run_defense("pure", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), epochs=2,
                        lr=1e-3, max_length=32, eval_every=2)
    det = first.details
    L, H = 2, 4
    pruned = np.zeros((L, H), dtype=bool)
    for label in det["pruned_heads"]:
        pruned[int(label[1]), int(label[3])] = True
    assert det["n_pruned"] == len(det["pruned_heads"]) == int(pruned.sum()) >= 1
    assert det["n_pruned"] <= det["max_pruned"] == 4 and np.all(pruned.sum(1) <= H - 1)
    assert det["pruned_zero"] is True and det["guard"] == "balanced accuracy"

    seen[:] = [pruned]
    res = run_defense("pure", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), epochs=2,
                      lr=1e-3, max_length=32, eval_every=2, evaluate=evaluate)
    assert res.details["pruned_heads"] == det["pruned_heads"]
    assert len(seen) > 2 and max(seen[1:]) == 0.0  # gating the pruned heads off changes nothing mid-training

    model = res.model
    assert not any(b.output._forward_pre_hooks for b in attention_blocks(model))  # nothing to fall off
    base = _logits(model, lm.tokenizer, probe_texts)
    with head_gates(model, torch.as_tensor(~pruned, dtype=torch.float32)):
        assert np.array_equal(_logits(model, lm.tokenizer, probe_texts), base)
    moved = {(l, h): _head_moves_logits(model, lm.tokenizer, probe_texts, l, h, base)
             for l in range(L) for h in range(H)}
    assert all(moved[lh] == 0.0 for lh in zip(*np.nonzero(pruned)))
    assert all(moved[lh] > 1e-3 for lh in zip(*np.nonzero(~pruned)))

    out = save_model(model, lm.tokenizer, tmp_path / "pure", {"pruned": det["pruned_heads"]})
    reloaded = load_model(out).model
    assert np.allclose(_logits(reloaded, lm.tokenizer, probe_texts), base, atol=1e-5)
    for l, h in zip(*np.nonzero(pruned)):
        assert _head_moves_logits(reloaded, lm.tokenizer, probe_texts, int(l), int(h), base) < 1e-5


def test_strip_flags_triggered_inputs_of_a_backdoored_model():
    lm = trained_tiny(True)
    ct, _ = clean_texts(30, seed=4)
    tt = triggered_texts(30, seed=5)
    pool, _ = clean_texts(50, seed=6)
    s_clean = strip_scores(lm.model, lm.tokenizer, ct, pool, repeats=6, max_length=32)
    s_trig = strip_scores(lm.model, lm.tokenizer, tt, pool, repeats=6, max_length=32)
    assert s_clean.shape == (30,) and np.all(s_clean <= 0)
    assert auroc(s_clean, s_trig) > 0.6
