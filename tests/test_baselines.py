"""Baselines: fine-tuning, fine-pruning, PURE, STRIP — on tiny models, through the common registry."""

import copy

import numpy as np
import torch

from backdoor_core.architecture import attention_blocks
from backdoor_core.baselines.fineprune import choose_lowest, head_activity, prune_heads_persistent
from backdoor_core.baselines.pure import cls_attention_variance, layer_weights, search_pruning
from backdoor_core.baselines.strip import strip_scores
from backdoor_core.data import TextDataset
from backdoor_core.defenses import run_defense
from backdoor_core.metrics import auroc
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
    pruned, _ = search_pruning(lm.model, lm.tokenizer, texts, labels, var, min_acc=1.01, group=3, max_length=32)
    assert pruned.sum() <= 3  # the floor cannot be met: the first group is restored head by head
    res = run_defense("pure", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), epochs=1,
                      lr=1e-3, max_length=32)
    assert {"pruned_heads", "min_acc", "layer_weights", "search"} <= set(res.details)
    assert any("cls_norm" in row for row in res.history)


def test_strip_flags_triggered_inputs_of_a_backdoored_model():
    lm = trained_tiny(True)
    ct, _ = clean_texts(30, seed=4)
    tt = triggered_texts(30, seed=5)
    pool, _ = clean_texts(50, seed=6)
    s_clean = strip_scores(lm.model, lm.tokenizer, ct, pool, repeats=6, max_length=32)
    s_trig = strip_scores(lm.model, lm.tokenizer, tt, pool, repeats=6, max_length=32)
    assert s_clean.shape == (30,) and np.all(s_clean <= 0)
    assert auroc(s_clean, s_trig) > 0.6
