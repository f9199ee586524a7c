"""The clean-accuracy guard of our repair (``settings.CLEAN_GUARD``, ``defender_data.held_out_split``; our design)."""

import numpy as np
import pytest
import torch

from backdoor_core import settings as S
from backdoor_core.data import TextDataset
from backdoor_core.defender_data import held_out_split
from backdoor_core.defenses import repair_notes, run_defense
from defense_helpers import clean_texts, trained_tiny, triggered_texts

KW = dict(heads=["L0H0", "L1H1"], max_length=32, seed=0, epochs=1, repair_seeds=1, measure_align=False,
          label_judge="none", pool_words=False)  # the guard's own cases: no trigger-augmented clean texts


def test_held_out_split_is_stratified_seeded_and_keeps_every_class():
    labels = [0] * 50 + [1] * 30 + [2] * 1
    kept, held = held_out_split(labels, 0.2, seed=3)
    assert sorted(kept + held) == list(range(len(labels))) and not set(kept) & set(held)
    assert [sum(labels[i] == c for i in held) for c in range(3)] == [10, 6, 0]  # a lone row stays in
    assert held_out_split(labels, 0.2, seed=3) == (kept, held)
    assert held_out_split(labels, 0.2, seed=4)[1] != held
    with pytest.raises(ValueError, match="held-out share"):
        held_out_split(labels, 1.0, seed=0)


@pytest.fixture
def small_guard(monkeypatch):
    """The guard on 40 held-out texts (the default minimum, 100, would need 500 clean texts: slow for a test)."""
    monkeypatch.setattr(S, "CLEAN_GUARD_MIN_HELD", 20)


@pytest.fixture(scope="module")
def case():
    lm = trained_tiny(True)
    texts, labels = clean_texts(200, 5)
    pool = triggered_texts(30, 7) + clean_texts(70, 8)[0]
    return lm, TextDataset(texts, labels, ["neg", "pos"]), pool


def _ffn_weight(model, layer=0):
    return model.bert.encoder.layer[layer].intermediate.dense.weight.detach().clone()


def test_guard_holds_texts_out_and_stays_quiet_within_its_limit(case, small_guard):
    lm, clean, pool = case
    res = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, ffn="all", clean_guard=True,
                      clean_guard_max_drop=1.0, **KW)
    guard = res.details["clean_guard"]
    assert guard["held_out"] == 40 and res.details["clean_samples"] == 160
    assert guard["fired"] is False and guard["kept"] == "first" and res.details["ffn_layers"] == [0, 1]
    assert 0.0 <= guard["acc_after"] <= 1.0 and "acc_head_only" not in guard
    assert any(n.startswith("Clean-accuracy guard: 40 clean texts") for n in repair_notes(res.details))
    off = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, ffn="all", **KW)
    assert off.details["clean_guard"] is None and off.details["clean_samples"] == 200


@pytest.mark.parametrize("lr, kept", [(1e-3, "head_only"), (5e-2, "first")])  # both ends of the choice
def test_guard_retrains_head_only_and_keeps_the_better_held_out_accuracy(case, small_guard, lr, kept):
    lm, clean, pool = case
    # a drop of 0 or more always fires: the repair is trained again without feed-forward blocks
    res = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, ffn="all", lr=lr,
                      clean_guard=True, clean_guard_max_drop=0.0, **KW)
    guard = res.details["clean_guard"]
    assert guard["fired"] is True and guard["first_ffn_layers"] == [0, 1] and guard["kept"] == kept
    held = clean.subset(held_out_split(clean.labels, S.CLEAN_GUARD_SHARE, 0)[1])
    with torch.no_grad():
        enc = lm.tokenizer(held.texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        acc = float((res.model(**enc).logits.argmax(1).numpy() == np.asarray(held.labels)).mean())
    if guard["kept"] == "head_only":  # the kept model is the head-only one: its feed-forward blocks never moved
        assert guard["acc_head_only"] >= guard["acc_after"] and res.details["ffn_layers"] == []
        assert torch.equal(_ffn_weight(res.model), _ffn_weight(lm.model)) and acc == guard["acc_head_only"]
    else:  # the first repair restored, feed-forward blocks and all
        assert guard["acc_head_only"] < guard["acc_after"] and res.details["ffn_layers"] == [0, 1]
        assert not torch.equal(_ffn_weight(res.model), _ffn_weight(lm.model)) and acc == guard["acc_after"]
    note = [n for n in repair_notes(res.details) if n.startswith("Clean-accuracy guard")][0]
    assert "trained again head-only" in note and "layers 0, 1" in note


def test_guard_retry_reports_progress_after_the_first_repair(case, small_guard):
    lm, clean, pool = case
    seen = []
    res = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, ffn="all", clean_guard=True,
                      clean_guard_max_drop=0.0, callback=lambda p: seen.append((p.step, p.total_steps)), **KW)
    assert res.details["clean_guard"]["fired"] is True
    steps = [s for s, _ in seen]
    first = len(steps) // 2  # two runs of the same length: the retry's steps continue where the first stopped
    assert steps == sorted(steps) and steps[first] == steps[first - 1] + 1 and seen[-1][0] == seen[-1][1]
    assert seen[0][1] < seen[-1][1]  # the bar's total grows when the retry starts


def test_guard_without_feed_forward_blocks_only_measures(case, small_guard):
    lm, clean, pool = case
    res = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, ffn="none", clean_guard=True,
                      clean_guard_max_drop=0.0, **KW)
    assert res.details["clean_guard"]["fired"] is False and res.details["ffn_layers"] == []


def test_guard_needs_enough_clean_texts_and_sane_settings(case):
    lm, clean, pool = case
    # 200 clean texts leave 40 to hold out, fewer than the default minimum: the repair reads all 200 and says why
    res = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, ffn="none", clean_guard=True,
                      max_steps=1, **KW)
    assert S.CLEAN_GUARD_MIN_HELD > 40 and res.details["clean_samples"] == 200
    assert res.details["clean_guard"] == {"note": f"200 clean texts leave 40 to hold out (the guard needs "
                                                  f"{S.CLEAN_GUARD_MIN_HELD})."}
    assert any(n.startswith("No clean-accuracy guard: 200 clean texts") for n in repair_notes(res.details))
    for knob, bad, msg in (("clean_guard_share", 0.0, "clean_guard_share"), ("clean_guard_share", 1.0, "share"),
                           ("clean_guard_max_drop", -0.1, "clean_guard_max_drop")):
        with pytest.raises(ValueError, match=msg):
            run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, clean_guard=True,
                        **{knob: bad}, **KW)
