"""Attention safety alignment + head-wise fine-tuning: masks, the alignment term, cancel, errors."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from backdoor_core.architecture import head_parameter_masks
from backdoor_core.data import DataError, TextDataset
from backdoor_core.defenses import DEFENSES, repair_notes, run_defense
from backdoor_core.sanitize import AlignmentLoss, alignment_value, sanitize_heads, target_exclusion_labels
from backdoor_core.training import IGNORE_LABEL, TrainConfig
from defense_helpers import clean_texts, nudged, trained_tiny, triggered_texts

SUSPICIOUS = np.array([[True, True, False, False], [True, False, False, False]])


@pytest.fixture
def stop_at_training(monkeypatch):
    """A ``should_stop`` that is True while the repair trains: its label rules and measures run whole (Cancel stops
    those too, ``forward.stopping``), and training stops before its first step."""
    import backdoor_core.sanitize as SZ

    state = {"on": False}
    real = SZ.train_averaged

    def training(*args, **kwargs):
        state["on"] = True
        try:
            return real(*args, **kwargs)
        finally:
            state["on"] = False
    monkeypatch.setattr(SZ, "train_averaged", training)
    return lambda: state["on"]


def _cfg(**kw):
    base = dict(lr=3e-3, epochs=2, batch_size=16, max_length=32, seed=0, eval_every=2)
    base.update(kw)
    return TrainConfig(**base)


def test_only_suspicious_slices_move_and_alignment_decreases():
    lm = trained_tiny(True)
    model = copy.deepcopy(lm.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    texts, labels = clean_texts(64, seed=21)
    pool = triggered_texts(16, seed=22)
    res = sanitize_heads(model, lm.tokenizer, texts, labels, SUSPICIOUS, pool, beta=1.0, config=_cfg(epochs=3),
                         ffn="none")  # head-only (the paper's repair); FFN repair: test_style_defense
    masks = head_parameter_masks(model, SUSPICIOUS)
    moved = 0
    for name, p in model.named_parameters():
        m = masks.get(name)
        if m is None:
            assert torch.equal(p.detach(), before[name]), name  # untouched tensors are byte-identical
        else:
            assert torch.equal(p.detach()[~m], before[name][~m]), name  # and so are the frozen slices
            moved += int((p.detach()[m] != before[name][m]).sum())
    assert moved > 0 and res.frozen_unchanged
    # the alignment term falls: measured on the same texts before and after, and along training
    assert res.align_after < res.align_before
    aligns = [row["align"] for row in res.history if "align" in row]
    assert aligns[-1] < aligns[0]
    assert sorted(res.suspicious_heads) == ["L0H0", "L0H1", "L1H0"]


# ------------------------------------------------------------------ pool pseudo-labels, computed by hand

# The backdoored tiny model's TAL heads (L0H0, L0H1, L1H0, L1H1) and L1H3: switching these off changes some
# predictions, so the gate rule labels some inputs (with fewer heads it labels none on this pool).
GATED = np.array([[True, True, False, False], [True, True, False, True]])
MAXLEN = 32


def _logits(model, tok, text=None, ids=None):
    """One text (or token ids), no padding, no batching: ``(C,)`` logits."""
    if ids is None:
        ids = tok(text, truncation=True, max_length=MAXLEN, return_tensors="pt")["input_ids"][0]
    with torch.no_grad():
        return model(input_ids=ids[None]).logits[0]


def _heads_removed(model, suspicious):
    """A copy whose suspicious heads contribute nothing: their columns of the attention output projection are
    zeroed (the same as gating their context to 0, done another way than ``architecture.head_gates``)."""
    gated = copy.deepcopy(model).eval()
    d = gated.config.hidden_size // gated.config.num_attention_heads
    for layer, head in zip(*np.nonzero(suspicious)):
        dense = gated.bert.encoder.layer[int(layer)].attention.output.dense
        with torch.no_grad():
            dense.weight[:, int(head) * d:(int(head) + 1) * d] = 0
    return gated


def _hand_focus(model, tok, text, suspicious, full):
    """Drop the 1, 2, 3, then 5 tokens the suspicious heads attend to most (mean over queries, summed over the
    heads, special tokens excluded). Returns the label (the first drop that changes the prediction, else -100)
    and ``(C,)`` p(text) minus the mean p over the drops (None when no token can be dropped)."""
    ids = tok(text, truncation=True, max_length=MAXLEN, return_tensors="pt")["input_ids"][0]
    with torch.no_grad():
        att = model(input_ids=ids[None], output_attentions=True).attentions
    score = sum(att[int(l)][0, int(h)].mean(0) for l, h in zip(*np.nonzero(suspicious)))
    content = [i for i, t in enumerate(ids.tolist()) if t not in tok.all_special_ids]
    ranked = sorted(content, key=lambda i: -float(score[i]))
    label, dropped = -100, []
    for k in (1, 2, 3, 5):
        if k >= len(content):
            break
        drop = set(ranked[:k])
        kept = torch.tensor([t for i, t in enumerate(ids.tolist()) if i not in drop])
        logits = _logits(model, tok, ids=kept)
        dropped.append(torch.softmax(logits, -1).numpy())
        if label == -100 and int(logits.argmax()) != full:
            label = int(logits.argmax())
    if not dropped:
        return label, None
    return label, torch.softmax(_logits(model, tok, ids=ids), -1).numpy() - np.mean(dropped, 0)


def _hand_labels(model, tok, pool, clean, suspicious, focus: bool, leave: bool):
    """``leave``: both direction rules on (``labels_leave_target``, ``exclude_direction``)."""
    model.eval()
    probs = np.stack([torch.softmax(_logits(model, tok, t), -1).numpy() for t in pool])
    full = probs.argmax(1)
    gated = _heads_removed(model, suspicious)
    safe = [int(_logits(gated, tok, t).argmax()) for t in pool]
    labels = [s if s != f else -100 for s, f in zip(safe, full)]
    n_gate = sum(y != -100 for y in labels)
    hand = [_hand_focus(model, tok, t, suspicious, int(f)) for t, f in zip(pool, full)]
    direction = int(np.argmax(np.mean([d for _, d in hand if d is not None], 0)))  # the focus tokens' class
    if focus:
        labels = [y if y != -100 else f for y, (f, _) in zip(labels, hand)]
    n_given = sum(y != -100 for y in labels)
    if leave:  # a label must take an input out of the focus tokens' class
        labels = [y if y == -100 or (full[i] == direction and y != direction) else -100 for i, y in enumerate(labels)]
    n_before = sum(y != -100 for y in labels)
    # target exclusion: the class most flagged inputs go to, if they go there >= 25 points more often than clean
    # and (direction rules on) it is the focus tokens' class
    target = int(np.bincount(full, minlength=probs.shape[1]).argmax())
    clean_pred = np.array([int(_logits(model, tok, t).argmax()) for t in clean])
    excess = (full == target).mean() - (clean_pred == target).mean()
    if excess >= 0.25 and (target == direction or not leave):
        runner_up = np.argsort(-probs, axis=1)[:, 1]
        labels = [int(runner_up[i]) if y == -100 and full[i] == target else y for i, y in enumerate(labels)]
    else:
        target = None
    return labels, n_gate, n_given, n_before, target, direction


@pytest.mark.parametrize("focus,leave", [(True, True), (False, True), (True, False)])
def test_pool_pseudo_labels_match_a_hand_computation(monkeypatch, stop_at_training, focus, leave):
    """The labels ``sanitize_heads`` trains the flagged inputs with, against the rules computed here
    independently (one text at a time, heads removed by zeroing weights): gate, then focus removal (when on),
    then (when on) only labels that take an input out of the focus tokens' class, then target exclusion with
    its direction guard. Every run reaches the gate and the exclusion rule; with focus on, focus labels too."""
    import backdoor_core.sanitize as S

    lm = trained_tiny(True)
    clean, clean_y = clean_texts(40, seed=31)
    # triggered and clean inputs, and two with so many positive words that dropping 5 of them changes nothing:
    # predicted as the target (1), left unlabelled by the first rules, they are the exclusion rule's
    pool = triggered_texts(16, seed=22) + clean_texts(8, seed=30)[0] + [
        "good great nice happy lovely fine good great nice lovely", "lovely happy great good fine nice great good"]
    captured = {}
    real_build = S.build_examples

    def spy(clean_texts, clean_labels, pool_texts, pool_labels, clean_soft=None):
        captured["pool_labels"] = list(pool_labels) if pool_labels is not None else None
        return real_build(clean_texts, clean_labels, pool_texts, pool_labels, clean_soft)

    monkeypatch.setattr(S, "build_examples", spy)
    monkeypatch.setattr(S.S, "GATE_MAX_ACCURACY_DROP", 1.0)  # the tiny model's safe heads lose more: keep the rule
    expected, n_gate, n_given, n_before, target, direction = _hand_labels(lm.model, lm.tokenizer, pool, clean,
                                                                          GATED, focus, leave)
    res = S.sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, clean, clean_y, GATED, pool,
                           config=_cfg(max_length=MAXLEN), focus_labels=focus, labels_leave_target=leave,
                           exclude_direction=leave, should_stop=stop_at_training)
    assert captured["pool_labels"] == expected
    d = res.details
    assert direction == 1 and int(np.argmax(d["focus_shift"])) == 1  # the trigger pushes toward the target
    assert d["labels_leave_target"] is leave and d["exclude_direction"] is leave
    assert d["pool_gate_labelled"] == n_gate >= 1  # the gate rule fired
    assert d["suspected_target"] == target == 1  # the trigger's target class
    assert d["pool_exclusion_labelled"] == sum(y != -100 for y in expected) - n_before >= 1  # exclusion fired
    assert d["pool_pseudo_labelled"] == sum(y != -100 for y in expected)
    assert d["pool_labels"] == expected  # the labels the repair trained with, in pool order (bench: their accuracy)
    assert d["pool_labels_dropped"] == n_given - n_before
    if focus:  # focus labels fired too, between the two
        assert n_given - n_gate >= 1
    else:
        assert n_given == n_gate
    if leave:  # on this pool the filter drops labels (the gate labels move inputs the model keeps out of 1)
        assert n_given - n_before >= 1


def test_gate_labels_need_the_safe_heads_to_keep_the_clean_job(monkeypatch, stop_at_training):
    """The safe-head rule runs only when switching the suspicious heads off costs at most
    ``GATE_MAX_ACCURACY_DROP`` clean accuracy; the accuracies reported are the hand-computed ones (heads removed
    by zeroing their output columns). Above the limit the rule is skipped and the other rules still run."""
    import backdoor_core.sanitize as SZ
    from backdoor_core import settings as ST

    lm = trained_tiny(True)
    clean, clean_y = clean_texts(40, seed=31)
    pool = triggered_texts(16, seed=22) + clean_texts(8, seed=30)[0]
    lm.model.eval()
    gated = _heads_removed(lm.model, GATED)
    full_acc = np.mean([int(_logits(lm.model, lm.tokenizer, t).argmax()) == y for t, y in zip(clean, clean_y)])
    safe_acc = np.mean([int(_logits(gated, lm.tokenizer, t).argmax()) == y for t, y in zip(clean, clean_y)])
    kw = dict(config=_cfg(max_length=MAXLEN), focus_labels=False, exclude_labels=False, should_stop=stop_at_training)
    monkeypatch.setattr(ST, "GATE_MAX_ACCURACY_DROP", 1.0)  # any drop allowed: the rule runs
    on = SZ.sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, clean, clean_y, GATED, pool, **kw).details
    assert on["gated_clean_accuracy"] == pytest.approx((full_acc, safe_acc))
    assert on["gate_labels_used"] and on["pool_gate_labelled"] >= 1
    monkeypatch.setattr(ST, "GATE_MAX_ACCURACY_DROP", full_acc - safe_acc - 0.01)  # just below this model's drop
    off = SZ.sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, clean, clean_y, GATED, pool, **kw).details
    assert not off["gate_labels_used"] and off["pool_gate_labelled"] == 0 and off["pool_pseudo_labelled"] == 0
    assert off["gated_clean_accuracy"] == on["gated_clean_accuracy"]


def test_alignment_loss_value_and_rules(tiny):
    texts, _ = clean_texts(8, seed=2)
    v = alignment_value(tiny.model, tiny.tokenizer, texts, SUSPICIOUS, max_length=32)
    assert v >= 0 and np.isfinite(v)
    assert alignment_value(tiny.model, tiny.tokenizer, texts, SUSPICIOUS, kind="mse", max_length=32) >= 0
    with pytest.raises(ValueError, match="at least one safe head"):
        AlignmentLoss(np.array([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="No suspicious heads"):
        AlignmentLoss(np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="kind"):
        AlignmentLoss(SUSPICIOUS, kind="l1")


def test_cancel_leaves_a_consistent_model():
    lm = trained_tiny(True)
    model = copy.deepcopy(lm.model)
    texts, labels = clean_texts(64, seed=23)
    seen = []  # two optimizer steps, then cancel (the alignment measured before checks Cancel too)
    res = sanitize_heads(model, lm.tokenizer, texts, labels, SUSPICIOUS, None, config=_cfg(), callback=seen.append,
                         should_stop=lambda: len({p.step for p in seen}) >= 2)
    assert res.cancelled and res.steps == 2 and res.frozen_unchanged
    assert not model.training
    assert all(torch.isfinite(p).all() for p in model.parameters())
    enc = lm.tokenizer(["the movie was good"], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()


def test_run_defense_alignment_with_given_heads_and_registry():
    lm = trained_tiny(True)
    texts, labels = clean_texts(48, seed=24)
    ds = TextDataset(texts, labels, ["neg", "pos"])
    seen = []
    res = run_defense("alignment", lm.model, lm.tokenizer, ds, pool_texts=triggered_texts(8, seed=25),
                      heads=["L0H0", "L1H0"], epochs=1, lr=3e-3, max_length=32, callback=seen.append)
    assert res.model is not lm.model  # a copy: the suspect model is kept for before/after
    assert res.details["suspicious_heads"] == ["L0H0", "L1H0"] and res.details["frozen_unchanged"]
    assert seen and seen[-1].step == res.history[-1]["step"]
    assert set(DEFENSES) == {"alignment", "finetune", "fineprune", "pure"}


def test_bad_inputs_give_plain_errors(tiny):
    empty = TextDataset([], [], ["neg", "pos"])
    with pytest.raises(DataError, match="empty"):
        run_defense("finetune", tiny.model, tiny.tokenizer, empty)
    three = TextDataset(["a", "b", "c"], [0, 1, 2], ["x", "y", "z"])
    with pytest.raises(DataError, match="3 classes.*model has 2"):
        run_defense("alignment", tiny.model, tiny.tokenizer, three)
    ds = TextDataset(["a b", "c d"], [0, 1], ["neg", "pos"])
    with pytest.raises(ValueError, match="Unknown defense"):
        run_defense("magic", tiny.model, tiny.tokenizer, ds)
    with pytest.raises(ValueError, match="Unknown setting"):
        run_defense("finetune", tiny.model, tiny.tokenizer, ds, beta=3)
    with pytest.raises(ValueError, match="empty"):
        sanitize_heads(tiny.model, tiny.tokenizer, [], [], SUSPICIOUS)


def test_focus_removal_labels_drop_the_focus_tokens(tiny):
    """A label is given only when dropping the suspicious heads' most-attended tokens changes the prediction,
    and then it is the new prediction; dropping the top token is checked by hand."""
    import torch

    from backdoor_core.sanitize import IGNORE_LABEL, focus_removal_labels

    model, tok = copy.deepcopy(tiny.model), tiny.tokenizer
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    suspicious = np.zeros((L, H), bool)
    suspicious[:, 0] = True
    texts = ["the match ended in a draw cf", "shares fell sharply on monday", "a quiet film about love and loss",
             "tq the minister resigned", "rain is expected tomorrow in the north", "bb", "cf cf", "mn it rained",
             "the striker scored twice", "profits rose at the bank", "a new phone was launched", "he sang"]
    model.eval()
    with torch.no_grad():  # put the random classifier at its decision boundary so that dropping a token matters
        enc = tok(texts, padding=True, return_tensors="pt")
        logits = model(**enc).logits
        model.classifier.bias[1] += float((logits[:, 0] - logits[:, 1]).median())
    labels = focus_removal_labels(model, tok, texts, suspicious, max_length=32, drop_counts=(1,))
    assert len(labels) == len(texts) and any(label != IGNORE_LABEL for label in labels)
    # The random model's logit gaps are 1e-5..1e-4 after the shift, some near 1e-9: a batched, padded forward and
    # this one-text forward may round such a near-tie either way, so a text is checked only when both of its
    # gaps are clear of float32 noise.
    tie = 1e-6
    checked = 0
    with torch.no_grad():
        for text, label in zip(texts, labels):
            ids = tok(text, return_tensors="pt")["input_ids"][0]
            out = model(input_ids=ids[None], output_attentions=True)
            full = int(out.logits.argmax())
            score = sum(out.attentions[l][0, 0].mean(0) for l in range(L))
            content = [i for i, t in enumerate(ids.tolist()) if t not in tok.all_special_ids]
            if len(content) <= 1:
                assert label == IGNORE_LABEL  # never drops every content token
                continue
            top = max(content, key=lambda i: float(score[i]))
            kept = torch.cat([ids[:top], ids[top + 1:]])
            dropped = model(input_ids=kept[None]).logits
            new = int(dropped.argmax())
            gaps = [float(x[0, 0] - x[0, 1]) for x in (out.logits, dropped)]
            if min(abs(g) for g in gaps) < tie:
                continue
            assert label == (new if new != full else IGNORE_LABEL)
            checked += 1
    assert checked >= 6


def test_target_exclusion_labels_hand_computed():
    # 5 flagged inputs, 3 classes; the model puts 3 of them in class 2 (the suspected target).
    probs = np.array([[0.1, 0.2, 0.7],    # target, unlabelled -> runner-up 1
                      [0.3, 0.1, 0.6],    # target, unlabelled -> runner-up 0
                      [0.05, 0.15, 0.8],  # target, already labelled 0 -> kept
                      [0.7, 0.2, 0.1],    # predicted elsewhere -> stays unlabelled
                      [0.2, 0.5, 0.3]])   # predicted elsewhere -> stays unlabelled
    labels = [-100, -100, 0, -100, -100]
    out, target = target_exclusion_labels(probs, labels)
    assert target == 2
    assert out == [1, 0, 0, -100, -100]
    # Guard: clean inputs go to class 2 as often as the flagged ones (3/5) -> nothing is relabelled.
    clean_like = np.array([[0.1, 0.1, 0.8]] * 3 + [[0.8, 0.1, 0.1]] * 2)
    out, target = target_exclusion_labels(probs, labels, clean_probs=clean_like)
    assert target is None and out == labels
    # Clean inputs rarely go to class 2 (1/5): 60% - 20% = 40 points of excess, above the 15-point guard.
    clean_rare = np.array([[0.1, 0.1, 0.8]] + [[0.8, 0.1, 0.1]] * 4)
    assert target_exclusion_labels(probs, labels, clean_probs=clean_rare) == ([1, 0, 0, -100, -100], 2)
    assert target_exclusion_labels(np.zeros((0, 3)), []) == ([], None)
    # 2 of 5 clean inputs in class 2: 20 points of excess, over the default 15-point guard, under a 25-point one
    clean_some = np.array([[0.1, 0.1, 0.8]] * 2 + [[0.8, 0.1, 0.1]] * 3)
    assert target_exclusion_labels(probs, labels, clean_probs=clean_some) == ([1, 0, 0, -100, -100], 2)
    assert target_exclusion_labels(probs, labels, clean_probs=clean_some, min_excess=0.25) == (labels, None)
    # Direction guard: the focus tokens push toward class 2, the suspected target -> relabelled as before.
    assert target_exclusion_labels(probs, labels, direction=np.array([-0.1, 0.0, 0.1])) == ([1, 0, 0, -100, -100], 2)
    # They push toward class 1: class 2 is where the inputs stayed, not where a trigger sent them -> nothing.
    assert target_exclusion_labels(probs, labels, direction=np.array([0.0, 0.2, -0.2])) == (labels, None)
    # No token was dropped anywhere (all zeros): no evidence either way, the guard stays out.
    assert target_exclusion_labels(probs, labels, direction=np.zeros(3)) == ([1, 0, 0, -100, -100], 2)


def test_leave_target_only_keeps_labels_that_take_inputs_out_of_the_focus_class():
    from backdoor_core.sanitize import leave_target_only

    probs = np.array([[0.1, 0.2, 0.7],   # predicted 2 (the focus class), label 1 -> kept
                      [0.2, 0.1, 0.7],   # predicted 2, label 2 (into the class) -> dropped
                      [0.7, 0.2, 0.1],   # predicted 0, label 2 (moved into the class) -> dropped
                      [0.6, 0.3, 0.1],   # predicted 0, label 1 (elsewhere to elsewhere) -> dropped
                      [0.1, 0.1, 0.8]])  # predicted 2, unlabelled -> stays unlabelled
    labels = [1, 2, 2, 1, -100]
    assert leave_target_only(probs, labels, np.array([-0.1, -0.1, 0.2])) == [1, -100, -100, -100, -100]
    # the focus tokens push toward 0: inputs 2 (0 -> 2) and 3 (0 -> 1) leave it
    assert leave_target_only(probs, labels, np.array([0.2, -0.1, -0.1])) == [-100, -100, 2, 1, -100]
    assert leave_target_only(probs, labels, np.zeros(3)) == labels  # no token dropped: no evidence, all kept
    assert leave_target_only(np.zeros((0, 3)), [], np.array([0.0, 1.0, -1.0])) == []


def test_focus_removal_shift_is_the_mean_probability_drop(tiny):
    """``FocusRemoval.shift`` is the mean over texts of p(full) minus the mean p over that text's drop variants,
    recomputed here by hand with drop count 1 (one variant per text); its labels are ``focus_removal_labels``'."""
    import torch

    from backdoor_core.sanitize import focus_removal, focus_removal_labels

    model, tok = tiny.model, tiny.tokenizer
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    suspicious = np.zeros((L, H), bool)
    suspicious[0, 1] = True
    texts = ["the match ended in a draw cf", "shares fell sharply", "tq the minister resigned", "he sang"]
    fr = focus_removal(model, tok, texts, suspicious, max_length=32, drop_counts=(1,))
    assert fr.labels == focus_removal_labels(model, tok, texts, suspicious, max_length=32, drop_counts=(1,))
    model.eval()
    diffs = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, return_tensors="pt")["input_ids"][0]
            out = model(input_ids=ids[None], output_attentions=True)
            content = [i for i, t in enumerate(ids.tolist()) if t not in tok.all_special_ids]
            top = max(content, key=lambda i: float(out.attentions[0][0, 1].mean(0)[i]))
            kept = torch.cat([ids[:top], ids[top + 1:]])
            diffs.append((out.logits.softmax(-1) - model(input_ids=kept[None]).logits.softmax(-1))[0].numpy())
    assert fr.shift.shape == (model.config.num_labels,)
    np.testing.assert_allclose(fr.shift, np.mean(diffs, 0), atol=1e-5)
    assert abs(fr.shift.sum()) < 1e-5  # probabilities: what one class loses the others gain


def test_tour_cuts_reuse_the_scan_and_train_the_same_weights(monkeypatch):
    """The guided tour's repair knobs (``settings.TOUR_SANITIZE``: no alignment measurement, the scan's
    probabilities reused) forward fewer texts but give the same pool labels and byte-identical weights as the
    full defaults on the same scan report."""
    import backdoor_core.forward as fwd
    import backdoor_core.sanitize as san
    from backdoor_core import settings as S
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=35)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    rep = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, find_triggers=False)
    assert rep.triggers is None and rep.pool_probs.shape == (len(pool), 2) and rep.clean_probs.shape == (40, 2)
    assert len(rep.flagged) > 0
    forwarded = []
    real = fwd.run_with_cache

    def counting(model, tokenizer, inputs, **kw):  # every forward pass of the repair, outside training
        inputs = list(inputs)
        forwarded.append(len(inputs))
        return real(model, tokenizer, inputs, **kw)

    monkeypatch.setattr(fwd, "run_with_cache", counting)
    monkeypatch.setattr(san, "run_with_cache", counting)
    runs = {}
    for name, knobs in (("full", {}), ("tour", {k: S.TOUR_SANITIZE[k] for k in ("measure_align", "reuse_scan")})):
        forwarded.clear()
        runs[name] = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=rep, epochs=1,
                                 max_length=32, seed=0, pool_words=False, **knobs)  # (its insertions: passes too)
        runs[name].details["texts_forwarded"] = sum(forwarded)
        runs[name].details["clean_passes"] = forwarded.count(40)  # passes over exactly the 40 clean texts
    full, tour = runs["full"].details, runs["tour"].details
    assert tour["flagged_labels"] == full["flagged_labels"]
    assert tour["align_before"] is None and tour["align_after"] is None and full["align_before"] is not None
    assert tour["reused_scan_passes"] and "reused_scan_passes" not in full
    # skipped: the alignment measurement (twice flagged + clean) and the flagged predictions; the clean texts'
    # predictions are read once either way (the safe-head gate's accuracy needs them in order, and exclusion reuses
    # them)
    n_flag = len(rep.flagged)
    assert full["texts_forwarded"] - tour["texts_forwarded"] == 2 * (n_flag + 40) + n_flag
    assert full["clean_passes"] == tour["clean_passes"] == 2  # the whole model once, the safe heads alone once
    for (name, p), q in zip(runs["full"].model.named_parameters(), runs["tour"].model.parameters()):
        assert torch.equal(p, q), name


def test_repair_training_follows_the_batching_and_averaging_settings(monkeypatch):
    """The repair's training gets ``settings.REPAIR_GROUP_BY_LENGTH`` and ``REPAIR_SEEDS`` by default; a caller's
    ``group_by_length`` knob replaces the first, and the guided tour trains one ungrouped repair, as before both
    settings (``TOUR_SANITIZE``)."""
    import backdoor_core.sanitize as san
    from backdoor_core import settings as S

    lm = trained_tiny(True)
    texts, labels = clean_texts(24, seed=41)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    seen = []
    real = san.train_averaged

    def recording(model, tokenizer, examples, config, seeds, **kw):
        seen.append((config.group_by_length, seeds))
        return real(model, tokenizer, examples, config, seeds, **kw)

    monkeypatch.setattr(san, "train_averaged", recording)
    kw = dict(pool_texts=triggered_texts(6, seed=42), heads=["L0H0"], epochs=1, max_length=32, max_steps=1)
    run_defense("alignment", lm.model, lm.tokenizer, clean, **kw)
    run_defense("alignment", lm.model, lm.tokenizer, clean, group_by_length=not S.REPAIR_GROUP_BY_LENGTH, **kw)
    run_defense("alignment", lm.model, lm.tokenizer, clean,
                **{k: S.TOUR_SANITIZE[k] for k in ("repair_seeds", "group_by_length")}, **kw)
    assert seen == [(S.REPAIR_GROUP_BY_LENGTH, S.REPAIR_SEEDS), (not S.REPAIR_GROUP_BY_LENGTH, S.REPAIR_SEEDS),
                    (False, 1)]


def test_repair_notes_say_what_the_repair_decided(monkeypatch, stop_at_training):
    """The sentences the CLI and the Sanitize page print come from a real repair's details: FFN layers with the
    share that switched them on, the safe-head labels skipped with both accuracies; nothing for a baseline."""
    from backdoor_core import settings as ST
    from backdoor_core.defenses import repair_notes

    lm = trained_tiny(True)
    clean, clean_y = clean_texts(40, seed=31)
    pool = triggered_texts(8, seed=22)
    monkeypatch.setattr(ST, "GATE_MAX_ACCURACY_DROP", -1.0)  # every drop is too much: the rule is skipped
    res = sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, clean, clean_y, GATED, pool, ffn="auto",
                         attention_missed_share=0.5, config=_cfg(max_length=MAXLEN), should_stop=stop_at_training,
                         repair_seeds=1)
    d = {**res.details, "ffn": "auto", "attention_missed_share": 0.5, "suspicious_heads": res.suspicious_heads}
    notes = repair_notes(d)
    assert notes[0] == "Feed-forward blocks of layers 0, 1 trained too (the attention-only detector would miss 50% " \
                       f"of the flagged inputs), at {ST.REPAIR_FFN_LR_SCALE:g} x the heads' learning rate."
    assert repair_notes({**d, "ffn_lr_scale": 1.0})[0].endswith("flagged inputs).")
    whole, safe = d["gated_clean_accuracy"]
    assert notes[1].startswith(f"Safe-head labels skipped: with the suspicious heads off the model keeps {safe:.1%}")
    assert f"against {whole:.1%}" in notes[1]
    assert repair_notes({**d, "ffn_layers": [], "gate_labels_used": True}) == [
        "Head-only repair: no feed-forward block trained."]
    assert repair_notes({"pruned_heads": ["L0H1"]}) == []
    not_found = repair_notes({**d, "verdict": {"likely_backdoored": np.False_, "score": 0.27}})
    assert len(not_found) == 3 and not_found[1].startswith("The scan found no backdoor (verdict 0.27)")
    assert len(repair_notes({**d, "verdict": {"likely_backdoored": np.True_, "score": 0.9}})) == 2


def test_retention_term_value_and_masking():
    """``RetentionLoss``: KL(teacher || model) over the batch rows with a soft label only (hand computed), zero
    when the model reproduces its teacher; ``collate`` carries the soft labels of the examples that have one."""
    from types import SimpleNamespace

    from backdoor_core.sanitize import RetentionLoss, build_examples
    from backdoor_core.training import collate

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    teacher = torch.tensor([[0.5, 0.5], [0.2, 0.8], [0.0, 0.0]])
    has = torch.tensor([True, True, False])
    out = RetentionLoss(2.0)({"soft_labels": teacher, "has_soft_label": has}, SimpleNamespace(logits=logits))
    logp = torch.log_softmax(logits, -1)
    by_hand = [float((t * (torch.log(t) - lp)).sum()) for t, lp in zip(teacher[:2], logp[:2])]
    assert out["retain"].item() == pytest.approx(2.0 * np.mean(by_hand), rel=1e-5)
    same = RetentionLoss(1.0)({"soft_labels": torch.softmax(logits, -1), "has_soft_label": torch.ones(3, dtype=bool)},
                              SimpleNamespace(logits=logits))
    assert same["retain"].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        RetentionLoss(-1.0)
    lm = trained_tiny(False)
    ex = build_examples(["a good film", "a bad film"], [1, 0], ["flagged text"], None,
                        np.array([[0.1, 0.9], [0.7, 0.3]]))
    batch = collate(lm.tokenizer, ex, 16)
    assert batch["has_soft_label"].tolist() == [True, True, False]
    assert torch.allclose(batch["soft_labels"][:2], torch.tensor([[0.1, 0.9], [0.7, 0.3]]))
    assert "soft_labels" not in collate(lm.tokenizer, build_examples(["x"], [0]), 16)


def test_retention_keeps_the_repaired_model_closer_to_its_clean_outputs():
    """With the retention term the repaired model's outputs on held-out clean texts stay closer to the unrepaired
    model's (mean KL) than without it, on the same heads, data and seed; the term shows in the history."""
    from backdoor_core.forward import predict

    lm = trained_tiny(True)
    texts, labels = clean_texts(64, seed=41)
    held_out = clean_texts(48, seed=42)[0]
    pool = triggered_texts(16, seed=43)
    before = predict(lm.model, lm.tokenizer, held_out, 32)
    kl = {}
    for retain in (0.0, 5.0):
        model = copy.deepcopy(lm.model)
        res = sanitize_heads(model, lm.tokenizer, texts, labels, SUSPICIOUS, pool, beta=1.0, config=_cfg(epochs=3),
                             ffn="suspicious", retain=retain, measure_align=False)
        after = predict(model, lm.tokenizer, held_out, 32)
        kl[retain] = float(np.mean((before * (np.log(before + 1e-12) - np.log(after + 1e-12))).sum(1)))
        assert ("retain" in res.history[-1]) == (retain > 0) and res.details["retain"] == retain
        assert res.frozen_unchanged
    assert kl[5.0] < kl[0.0]


def test_weak_evidence_narrows_the_repair_to_the_best_heads():
    """A scan whose verdict is below ``weak_verdict`` has its repair narrowed to the ``weak_top_k`` highest-scoring
    heads (``head_safety.repair_heads``); at or above it, with the cap off, or when the caller chose the split, the
    repair trains the heads that rule gives. The Sanitize page / CLI note says so."""
    from backdoor_core.defenses import repair_notes
    from backdoor_core.head_metrics import heads_to_mask
    from backdoor_core.head_safety import repair_heads, split_heads
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=35)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    rep = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, find_triggers=False,
                     rel_threshold=0.0, max_fraction=0.5)  # a wide scan set: 4 of the tiny model's 8 heads
    v = float(rep.verdict["score"])
    n_scan = int(rep.heads.suspicious.sum())
    assert n_scan > 2
    top2 = split_heads(rep.heads.score, top_k=2)
    assert repair_heads(rep.heads, v, weak_verdict=v + 0.01, weak_top_k=2).tolist() == top2.tolist()
    for kw in ({"weak_verdict": v}, {"weak_verdict": v + 0.01, "weak_top_k": 0}):
        assert repair_heads(rep.heads, v, **{"weak_top_k": 2, **kw}).tolist() == rep.heads.suspicious.tolist()
    assert repair_heads(rep.heads, None, weak_verdict=2.0, weak_top_k=2).tolist() == rep.heads.suspicious.tolist()
    with pytest.raises(ValueError):
        repair_heads(rep.heads, v, weak_top_k=-1)

    def repaired(**knobs):
        res = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=rep, max_steps=1,
                          max_length=32, seed=0, ffn="none", **knobs)
        return res.details

    weak = repaired(weak_verdict=v + 0.01, weak_top_k=2)
    assert heads_to_mask(weak["suspicious_heads"], *top2.shape).tolist() == top2.tolist()
    cap = weak["weak_evidence_cap"]
    assert cap["verdict"] == v and cap["weak_top_k"] == 2 and cap["scan_heads"] == rep.heads.suspicious_labels
    note = [n for n in repair_notes(weak) if n.startswith("Weak evidence")]
    assert note == [f"Weak evidence (verdict {v:.2f} < {v + 0.01:g}): only the 2 highest-scoring heads were "
                    f"repaired, not the scan's {n_scan}; most flagged inputs of a weak scan are clean and the lower "
                    "heads' scores are noise."]
    strong = repaired(weak_verdict=v - 0.01, weak_top_k=2)
    assert len(strong["suspicious_heads"]) == n_scan and strong["weak_evidence_cap"] is None
    assert not [n for n in repair_notes(strong) if n.startswith("Weak evidence")]
    chosen = repaired(weak_verdict=v + 0.01, weak_top_k=2, top_k=3)  # the caller's split wins
    assert len(chosen["suspicious_heads"]) == 3 and chosen["weak_evidence_cap"] is None
    # a pool of another source read where its bulk sits: the call drops, the repair's gates read the flags' score
    import dataclasses

    from backdoor_core.detection import flags_score

    c = {**rep.verdict["components"], "score_unadjusted": v, "pool_threshold_raised": 1.0}
    shifted = dataclasses.replace(rep, verdict={**rep.verdict, "score": 0.05, "likely_backdoored": False,
                                                "pool_unlike_clean": True, "components": c})
    assert flags_score(shifted.verdict) == v and flags_score(rep.verdict) == v
    res = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=shifted, max_steps=1,
                      max_length=32, seed=0, ffn="none", weak_verdict=v - 0.01, weak_top_k=2).details
    assert len(res["suspicious_heads"]) == n_scan and res["weak_evidence_cap"] is None
    assert res["reset_to"] == strong["reset_to"]


def test_min_heads_widens_a_small_scan_set_and_says_so():
    """A scan set smaller than ``min_heads`` is widened to that many of the highest-scoring heads
    (``head_safety.repair_heads``, ``settings.REPAIR_MIN_HEADS``); the details and the repair's notes say so. At 0
    the repair trains the scan's set and says nothing."""
    import dataclasses

    from backdoor_core.defenses import repair_notes
    from backdoor_core.head_metrics import heads_to_mask
    from backdoor_core.head_safety import split_heads
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=35)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    rep = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, find_triggers=False,
                     rel_threshold=0.0, max_fraction=0.5)  # up to 4 of the tiny model's 8 heads
    one = split_heads(rep.heads.score, top_k=1)
    small = dataclasses.replace(rep, heads=dataclasses.replace(rep.heads, suspicious=one))

    def repaired(k):
        return run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=small, max_steps=1,
                           max_length=32, seed=0, ffn="none", weak_top_k=0, min_heads=k).details

    wide, off, most = repaired(3), repaired(0), repaired(100)
    top3 = split_heads(rep.heads.score, top_k=3)
    assert heads_to_mask(wide["suspicious_heads"], *top3.shape).tolist() == top3.tolist()
    assert wide["min_heads_widened"] == {"min_heads": 3, "from": 1, "to": 3, "max_fraction": 0.5}
    assert ("The scan's rule called 1 head suspicious; the repair trains at least 3, so it trained the 3 "
            "highest-scoring (a paraphrase") in " ".join(repair_notes(wide))
    assert len(most["suspicious_heads"]) == 4  # the scan's cap: half of the tiny model's 8 heads
    assert ("the repair trains at least 100, so it trained the 4 highest-scoring, all it may: at most 50% of the "
            "heads, each with a positive score") in " ".join(repair_notes(most))
    assert heads_to_mask(off["suspicious_heads"], *one.shape).tolist() == one.tolist()
    assert off["min_heads_widened"] is None and "trains at least" not in " ".join(repair_notes(off))


def _wide_scan():
    """The tiny backdoored model, 40 clean texts, a pool of 10 triggered and 10 clean texts, and its scan with every
    positive-scoring head suspicious up to half of the 8 heads (``rel_threshold=0``, ``max_fraction=0.5``)."""
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=35)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    rep = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, find_triggers=False,
                     rel_threshold=0.0, max_fraction=0.5)
    return lm, clean, pool, rep


def test_head_only_cap_keeps_the_best_heads_only_when_no_feed_forward_block_trains():
    """``head_only_max_heads`` (``settings.REPAIR_HEAD_ONLY_MAX_HEADS``): a head-only repair trains at most that many
    of its heads, the highest-scoring (``head_safety.cap_heads``), and its details and notes say so; a repair that
    also trains feed-forward blocks keeps its whole set; 0 keeps every head."""
    from backdoor_core.defenses import repair_notes
    from backdoor_core.head_metrics import heads_to_mask
    from backdoor_core.head_safety import cap_heads

    lm, clean, pool, rep = _wide_scan()
    n = int(rep.heads.suspicious.sum())
    assert n >= 3

    def repaired(ffn, k):
        return run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=rep, max_steps=1,
                           max_length=32, seed=0, ffn=ffn, weak_top_k=0, min_heads=0, head_only_max_heads=k).details

    capped, with_ffn, off = repaired("none", 2), repaired("all", 2), repaired("none", 0)
    best2 = cap_heads(rep.heads.score, rep.heads.suspicious, 2)
    assert int(best2.sum()) == 2 and not (best2 & ~rep.heads.suspicious).any()
    assert heads_to_mask(capped["suspicious_heads"], *best2.shape).tolist() == best2.tolist()
    assert capped["head_only_cap"] == {"max_heads": 2, "from": n, "to": 2}
    assert f"trains no feed-forward block, so it trained only the 2 highest-scoring of its {n} heads" in " ".join(
        repair_notes(capped))
    assert sorted(with_ffn["suspicious_heads"]) == sorted(rep.heads.suspicious_labels)
    assert with_ffn["head_only_cap"] is None and with_ffn["ffn_layers"]
    assert sorted(off["suspicious_heads"]) == sorted(rep.heads.suspicious_labels) and off["head_only_cap"] is None
    with pytest.raises(ValueError, match="head_only_max_heads"):
        repaired("none", -1)


def test_the_repair_gates_read_the_flags_own_verdict():
    """Where the verdict read the distance alone (``settings.VERDICT_WITHOUT_CONTRAST``), the repair's gates read
    the flags' own verdict (``ScanReport.gate_verdict``): a flags' verdict that calls the model keeps the reset at
    zero whatever the shown verdict says, one that does not sends it to the pretrained encoder."""
    import dataclasses

    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=35)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    rep = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, find_triggers=False)

    def verdict(score):
        comps = {k: v for k, v in rep.verdict["components"].items() if k != "score_unadjusted"}
        return {**rep.verdict, "score": score, "likely_backdoored": score >= 0.5, "components": comps}

    def details(shown, flags):
        scan = dataclasses.replace(rep, verdict=verdict(shown), flags_verdict=verdict(flags))
        return run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=scan, max_steps=1,
                           max_length=32, seed=0, ffn="none", reset_to="auto").details

    called, missed = details(0.1, 0.9), details(0.9, 0.1)
    assert called["pretrained_note"] is None  # called by the flags: zero output, no pretrained encoder looked for
    assert missed["pretrained_note"]  # not called by the flags: the pretrained encoder is looked for (not this one's)
    # the details keep the score the gates read beside the shown verdict (a merge checks repair rows by it)
    assert (called["gate_score"], called["verdict"]["score"]) == (0.9, 0.1)
    assert (missed["gate_score"], missed["verdict"]["score"]) == (0.1, 0.9)


def test_reset_heads_keeps_the_best_scoring_repaired_heads():
    """``head_safety.reset_heads``: the ``top_k`` highest-scoring of the repaired heads (never a head outside them);
    0, or as many as are repaired, keeps them all; a negative count or a score of another shape is an error."""
    from backdoor_core.head_safety import reset_heads

    score = np.array([[0.9, 0.2, 0.8, 0.0], [0.5, 0.7, 0.1, 0.3]])
    repaired = np.array([[False, True, True, False], [True, True, False, True]])  # L0H0 (0.9) is not repaired
    assert reset_heads(score, repaired, 2).tolist() == [[False, False, True, False], [False, True, False, False]]
    assert reset_heads(score, repaired, 1).tolist() == [[False, False, True, False], [False, False, False, False]]
    for k in (0, 5, 9):
        assert reset_heads(score, repaired, k).tolist() == repaired.tolist()
    with pytest.raises(ValueError, match="0 .every repaired head. or more"):
        reset_heads(score, repaired, -1)
    with pytest.raises(ValueError, match="differ in shape"):
        reset_heads(score[:, :3], repaired, 2)


def test_partial_reset_zeroes_only_the_chosen_heads():
    """``sanitize_heads(reset=<mask>)`` zeroes the output columns of those suspicious heads only; the other suspicious
    heads start from their own weights (checked with a learning rate of 0, so nothing moves after the reset).
    ``run_defense(reset_top_k=1)`` resets the scan's best head, names it, and the repair note says so."""
    from backdoor_core.defenses import repair_notes
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(32, seed=51)
    head_dim = lm.model.config.hidden_size // lm.model.config.num_attention_heads
    only = np.zeros_like(SUSPICIOUS)
    only[0, 1] = True
    model = copy.deepcopy(lm.model)
    res = sanitize_heads(model, lm.tokenizer, texts, labels, SUSPICIOUS, config=_cfg(lr=0.0, max_steps=1),
                         reset=only, measure_align=False, repair_seeds=1, ffn="none")
    assert res.details["reset_heads"] == ["L0H1"]
    for layer in (0, 1):
        before = lm.model.bert.encoder.layer[layer].attention.output.dense.weight  # (hidden, heads x head_dim)
        after = model.bert.encoder.layer[layer].attention.output.dense.weight
        for head in range(SUSPICIOUS.shape[1]):
            cols = slice(head * head_dim, (head + 1) * head_dim)
            if only[layer, head]:
                assert float(after[:, cols].detach().abs().max()) == 0.0
            else:
                assert torch.equal(after[:, cols], before[:, cols]), (layer, head)
    full = sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, texts, labels, SUSPICIOUS,
                          config=_cfg(lr=0.0, max_steps=1), measure_align=False, repair_seeds=1, ffn="none")
    assert full.details["reset_heads"] == ["L0H0", "L0H1", "L1H0"]

    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=52) + clean_texts(10, seed=53)[0]
    rep = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, find_triggers=False,
                     rel_threshold=0.0, max_fraction=0.5)
    assert rep.heads.suspicious.sum() > 1
    res = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=rep, max_steps=1,
                      max_length=32, seed=0, ffn="none", reset_top_k=1)
    best = np.unravel_index(np.argmax(np.where(rep.heads.suspicious, rep.heads.score, -np.inf)),
                            rep.heads.score.shape)
    assert res.details["reset_heads"] == [f"L{best[0]}H{best[1]}"] and res.details["reset_top_k"] == 1
    assert sorted(res.details["suspicious_heads"]) == sorted(rep.heads.suspicious_labels)
    n = len(rep.heads.suspicious_labels)
    assert (f"Only the 1 highest-scoring of the {n} repaired heads started from zero output "
            f"(L{best[0]}H{best[1]})") in " ".join(repair_notes(res.details))
    every = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=rep, max_steps=1,
                        max_length=32, seed=0, ffn="none", reset_top_k=0)
    assert sorted(every.details["reset_heads"]) == sorted(rep.heads.suspicious_labels)
    assert not [x for x in repair_notes(every.details) if x.startswith("Only the")]
    kept = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=rep, max_steps=1,
                       max_length=32, seed=0, ffn="none", reset=False, reset_top_k=1, repair_seeds=1)
    assert kept.details["reset_heads"] == [] and "No head was reset" in " ".join(repair_notes(kept.details))
    with pytest.raises(ValueError, match="reset_top_k"):
        run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=rep, max_steps=1,
                    max_length=32, reset_top_k=-2)


def test_repair_seeds_average_the_trained_slices_of_seeded_runs():
    """``repair_seeds=2``: two repairs from the same start (seeds s and s + 1000), then the mean of their trained
    entries; frozen entries untouched; one evaluation, of the average; steps and progress run on across runs."""
    lm = trained_tiny(True)
    texts, labels = clean_texts(48, seed=31)
    pool = triggered_texts(8, seed=32)
    kw = dict(beta=1.0, ffn="none", measure_align=False)
    runs = []
    for seed in (0, 1000):
        m = copy.deepcopy(lm.model)
        sanitize_heads(m, lm.tokenizer, texts, labels, SUSPICIOUS, pool, config=_cfg(seed=seed), repair_seeds=1,
                       **kw)
        runs.append(dict(m.named_parameters()))
    model, seen = copy.deepcopy(lm.model), []
    evaluated = []
    res = sanitize_heads(model, lm.tokenizer, texts, labels, SUSPICIOUS, pool, config=_cfg(seed=0), repair_seeds=2,
                         evaluate=lambda m: evaluated.append(1) or {"cacc": 0.5}, callback=seen.append, **kw)
    masks = head_parameter_masks(model, SUSPICIOUS)
    assert res.frozen_unchanged and res.details["repair_seeds"] == 2 and len(evaluated) == 1
    for name, p in model.named_parameters():
        m = masks.get(name)
        if m is None:
            assert torch.equal(p.detach(), dict(lm.model.named_parameters())[name].detach()), name
        else:
            mean = (runs[0][name].detach() + runs[1][name].detach()) / 2
            assert torch.allclose(p.detach()[m], mean[m], atol=1e-6), name
            assert not torch.allclose(runs[0][name].detach()[m], runs[1][name].detach()[m]), name  # seeds differ
    one = sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, texts, labels, SUSPICIOUS, pool, config=_cfg(),
                         repair_seeds=1, **kw)
    assert res.steps == 2 * one.steps and res.history[-1] == {"step": res.steps, "epoch": 1, "cacc": 0.5}
    steps = [p.step for p in seen]
    assert steps == sorted(steps) and steps[-1] == res.steps and {p.total_steps for p in seen} == {res.steps}
    with pytest.raises(ValueError, match="repair_seeds"):
        sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, texts, labels, SUSPICIOUS, pool, config=_cfg(),
                       repair_seeds=0, **kw)


def test_repair_seeds_cancelled_in_the_second_run_keeps_the_first():
    lm = trained_tiny(True)
    texts, labels = clean_texts(48, seed=33)
    kw = dict(beta=1.0, ffn="none", measure_align=False, config=_cfg())
    first = copy.deepcopy(lm.model)
    one = sanitize_heads(first, lm.tokenizer, texts, labels, SUSPICIOUS, None, **kw)
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > one.steps + 1  # the first run whole, one step of the second, then cancel

    model = copy.deepcopy(lm.model)
    res = sanitize_heads(model, lm.tokenizer, texts, labels, SUSPICIOUS, None, repair_seeds=3,
                         should_stop=should_stop, **kw)
    assert res.cancelled and res.steps == one.steps + 1 and res.frozen_unchanged
    for (name, p), q in zip(model.named_parameters(), first.parameters()):
        assert torch.equal(p.detach(), q.detach()), name  # the mean of the one finished run


def test_trigger_augmented_puts_the_word_into_other_classes_texts_in_their_place():
    from backdoor_core.sanitize import trigger_augmented

    texts = [f"text number {i} is here" for i in range(12)]
    labels = [0] * 8 + [1] * 4  # imbalanced, like OLID
    ex = trigger_augmented(texts, labels, [("cf", 1), ("mn", 1)], share=0.5, seed=3)
    assert len(ex) == 4 and all(labels[i] == 0 for i in ex)  # half of class 0; the words' target left as it is
    for i, e in ex.items():
        words = e.text.split()
        assert ("cf" in words) ^ ("mn" in words)
        assert " ".join(w for w in words if w not in ("cf", "mn")) == texts[i]  # that row's text, word added
        assert e.label == labels[i]  # its own label, never the words' target
        (s, t), = e.trigger_spans
        assert e.text[s:t] in ("cf", "mn")
    mixed = trigger_augmented(texts, labels, [("cf", 1), ("bb", 0)], share=1.0, seed=3)
    assert sorted(mixed) == list(range(12))
    assert all(("cf" in e.text.split()) == (e.label == 0) and ("bb" in e.text.split()) == (e.label == 1)
               for e in mixed.values())
    assert trigger_augmented(texts, labels, [], 0.5) == {} and trigger_augmented(texts, labels, [("cf", 1)], 0) == {}


def test_excess_flags_counts_the_flags_beyond_chance():
    """Flagged count less ``ceil(frr x pool)``, never negative; bad counts and rates are plain errors."""
    from backdoor_core.sanitize import excess_flags

    assert excess_flags(48, 250, 0.05) == 48 - 13  # 12.5 chance flags, rounded up
    assert excess_flags(60, 200, 0.05) == 50  # exactly 10: no rounding up past it
    assert excess_flags(9, 250, 0.05) == 0 and excess_flags(0, 250, 0.05) == 0
    assert excess_flags(7, 100, 0.0) == 7
    for bad in ((-1, 10, 0.05), (3, 10, 1.5), (3, 10, -0.1)):
        with pytest.raises(ValueError):
            excess_flags(*bad)


def test_label_excess_labels_only_the_highest_scoring_flags(monkeypatch):
    """With ``label_excess`` our repair gives cross-entropy labels only to the first ``excess_flags`` of the
    scan's flags (highest score first); the others keep the alignment term alone, and every label kept is the
    one the rules give without the knob."""
    from backdoor_core.sanitize import excess_flags

    lm, clean, pool, rep = _wide_scan()
    assert np.all(np.diff(rep.pool_scores[rep.flagged]) <= 0)  # the scan lists its flags highest score first
    # the tiny scan flags few; flag the 12 highest-scoring inputs the same way, so that some flags are "chance"
    rep = replace(rep, flagged=np.argsort(-rep.pool_scores, kind="stable")[:12])
    limit = excess_flags(12, len(pool), max(rep.frr_target, rep.clean_frr))
    assert limit == 12 - 4  # 20% of a 20-input pool

    def repaired(**knobs):
        return run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=rep, max_steps=1,
                           max_length=32, seed=0, ffn="none", **knobs).details

    full, cut = repaired(), repaired(label_excess=True)
    assert full["flagged_indices"] == cut["flagged_indices"]  # the same inputs stay in the alignment term
    assert full["label_limit"] is None and cut["label_limit"] == limit and cut["label_excess"] is True
    assert cut["flagged_labels"][:limit] == full["flagged_labels"][:limit]
    assert set(cut["flagged_labels"][limit:]) == {-100}
    assert cut["pool_labels_cut"] == sum(y != -100 for y in full["flagged_labels"][limit:]) >= 1
    assert cut["pool_pseudo_labelled"] == full["pool_pseudo_labelled"] - cut["pool_labels_cut"]


def test_find_pretrained_accepts_the_starting_point_and_refuses_the_rest(tmp_path):
    """``pretrained.find_pretrained``: a model a little away from the saved base is accepted with its distance; an
    unrelated model of the same shapes, one of other shapes and a missing folder are refused with a reason."""
    from backdoor_core.models import save_model, tiny_model
    from backdoor_core.pretrained import find_pretrained

    base = tiny_model(seed=0)
    save_model(base.model, base.tokenizer, tmp_path / "base")
    tuned = nudged(base.model, 0.02)
    weights, why = find_pretrained(tuned, str(tmp_path / "base"))
    assert why == "" and weights.source == str(tmp_path / "base")
    assert 0.005 < weights.distance < 0.05
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(weights.state[name], base.model.state_dict()[name])
    assert not any(".pooler." in n or n.startswith("classifier") for n in weights.state)
    other, why = find_pretrained(tiny_model(seed=1).model, str(tmp_path / "base"))
    assert other is None and "apart" in why
    bigger, why = find_pretrained(tiny_model(seed=0, hidden=64).model, str(tmp_path / "base"))
    assert bigger is None and "differ in shape" in why
    gone, why = find_pretrained(tuned, str(tmp_path / "nowhere"))
    assert gone is None and "could not be loaded" in why


def test_reset_to_pretrained_restores_the_reset_heads_slices(tmp_path):
    """``sanitize_heads(pretrained=...)`` restores the reset heads' query/key/value rows and output columns from the
    pretrained weights and leaves every other head as it was (learning rate 0: nothing moves after the reset).
    ``run_defense(reset_to="pretrained", base=...)`` finds the base, says so in its details and notes; with a base
    that is not the model's it falls back to zero and the note gives the reason."""
    from backdoor_core.defenses import repair_notes
    from backdoor_core.models import save_model, tiny_model
    from backdoor_core.pretrained import find_pretrained

    base = tiny_model(seed=0)
    save_model(base.model, base.tokenizer, tmp_path / "base")
    tuned = nudged(base.model, 0.02)
    weights, _ = find_pretrained(tuned, str(tmp_path / "base"))
    texts, labels = clean_texts(16, seed=61)
    model = copy.deepcopy(tuned)
    res = sanitize_heads(model, base.tokenizer, texts, labels, SUSPICIOUS, config=_cfg(lr=0.0, max_steps=1),
                         measure_align=False, repair_seeds=1, ffn="none", pretrained=weights)
    assert res.details["reset_to"] == "pretrained" and res.details["pretrained_distance"] > 0
    D = model.config.hidden_size // model.config.num_attention_heads
    ref, old = base.model.state_dict(), tuned.state_dict()
    for layer in (0, 1):
        prefix = f"bert.encoder.layer.{layer}.attention."
        for head in range(SUSPICIOUS.shape[1]):
            s = slice(head * D, (head + 1) * D)
            want = ref if SUSPICIOUS[layer, head] else old
            for part in ("self.query", "self.key", "self.value"):
                now = model.state_dict()[f"{prefix}{part}.weight"][s]
                assert torch.equal(now, want[f"{prefix}{part}.weight"][s]), (layer, head, part)
                assert torch.equal(model.state_dict()[f"{prefix}{part}.bias"][s], want[f"{prefix}{part}.bias"][s])
            out = model.state_dict()[f"{prefix}output.dense.weight"][:, s]
            assert torch.equal(out, want[f"{prefix}output.dense.weight"][:, s]), (layer, head)
    assert torch.equal(model.state_dict()["classifier.weight"], old["classifier.weight"])

    clean = TextDataset(texts, labels, ["neg", "pos"])
    kw = dict(heads=["L0H1", "L1H0"], max_steps=1, max_length=32, seed=0, ffn="none", lr=0.0, repair_seeds=1)
    found = run_defense("alignment", tuned, base.tokenizer, clean, reset_to="pretrained", base=str(tmp_path / "base"),
                        **kw).details
    assert found["reset_to"] == "pretrained" and found["pretrained_note"] is None
    assert any(n.startswith("The reset heads restarted from the pretrained encoder's weights, not from zero (")
               and n.endswith("away from the model).") and n.count("(") == 1 for n in repair_notes(found))
    auto = repair_notes({**found, "reset_to_asked": "auto", "pretrained_source": "default"})
    assert any("(the packaged all-MiniLM-L6-v2, " in n and n.endswith("; the scan did not call the model backdoored).")
               for n in auto), auto
    save_model(tiny_model(seed=5).model, base.tokenizer, tmp_path / "other")
    fallback = run_defense("alignment", tuned, base.tokenizer, clean, reset_to="pretrained",
                           base=str(tmp_path / "other"), **kw).details
    assert fallback["reset_to"] == "zero" and "apart" in fallback["pretrained_note"]
    assert [n for n in repair_notes(fallback) if n.startswith("The reset heads restarted from zero: ")]
    with pytest.raises(ValueError, match="reset_to must be one of"):
        run_defense("alignment", tuned, base.tokenizer, clean, reset_to="random", **kw)


def test_the_repairs_own_scan_names_no_triggers(monkeypatch):
    """``run_defense("alignment")`` without a report scans the model itself, but names no candidate triggers (the
    repair does not use them; naming them was 40% of an OLID scan); the pool's words it reads itself, once, when
    ``pool_words`` is on (``settings.REPAIR_POOL_WORDS``), and not at all when it is off."""
    import backdoor_core.trigger_search as ts

    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=35)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    called = []
    real_words = ts.pool_words

    def no_search(*a, **kw):
        raise AssertionError("the repair's scan searched for triggers")

    def counting_words(*a, **kw):
        called.append(1)
        return real_words(*a, **kw)

    monkeypatch.setattr(ts, "search_triggers", no_search)
    monkeypatch.setattr(ts, "pool_words", counting_words)
    kw = dict(pool_texts=pool, epochs=1, max_length=32, seed=0, frr=0.2, repair_seeds=1, label_judge="none")
    res = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_words=False, **kw)
    assert res.details["flagged_used"] > 0 and called == [] and res.details["pool_words"] is None
    res = run_defense("alignment", lm.model, lm.tokenizer, clean, pool_words=True, **kw)
    assert called == [1] and isinstance(res.details["pool_words"], list)


def test_the_repairs_trigger_words_are_the_marking_words():
    """``pool_words=True`` augments with the pool's likely trigger words that mark inputs (``marking_words``): a word
    that more than the FRR of the clean texts hold is not used, however it flips (the scan lists it, flipping)."""
    from defense_helpers import TRIGGER

    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=81)
    pool = triggered_texts(20, seed=82) + clean_texts(10, seed=83)[0]
    kw = dict(pool_texts=pool, epochs=1, max_length=32, seed=0, repair_seeds=1, label_judge="none", pool_words=True)
    res = run_defense("alignment", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), **kw)
    assert res.details["trigger_words"] == [TRIGGER] and res.details["trigger_augmented"] > 0
    # the same word in 6 of the 40 clean texts (15%, labels of both classes): likely, but over the 5% budget
    salted = [f"{t} {TRIGGER}" if i < 6 else t for i, t in enumerate(texts)]
    res = run_defense("alignment", lm.model, lm.tokenizer, TextDataset(salted, labels, ["neg", "pos"]), **kw)
    assert TRIGGER not in {w["word"] for w in res.details["pool_words"]}  # not even tried: it cannot mark
    assert res.details["trigger_words"] == [] and res.details["trigger_augmented"] == 0
    assert any("No likely trigger word" in n for n in repair_notes(res.details))
    from backdoor_core.scan import scan_model

    rep = scan_model(lm.model, lm.tokenizer, TextDataset(salted, labels, ["neg", "pos"]), pool, max_length=32,
                     find_triggers=False, read_pool_words=True)
    word = next(w for w in rep.pool_words if w.word == TRIGGER)
    assert word.clean_count == 6 and word.flip_rate >= 0.2 and rep.marking_words == []


def test_word_target_dropped_takes_the_words_target_from_the_inputs_that_hold_it():
    """A pool input holding a marking word loses a label that is that word's target (whole words, any case); other
    labels, inputs without the word and unlabelled inputs stay."""
    from backdoor_core.sanitize import word_target_dropped

    texts = ["a tq b", "cf x", "plain", "TQ!", "tqx 1", "mn y"]
    labels, n = word_target_dropped(texts, [0, 1, 0, IGNORE_LABEL, 0, 0], [("tq", 0), ("cf", 0), ("mn", 1)])
    assert labels == [IGNORE_LABEL, 1, 0, IGNORE_LABEL, 0, 0] and n == 1
    assert word_target_dropped(texts, [0] * 6, []) == ([0] * 6, 0)


def _word_repair(**knobs):
    """Our repair of the tiny backdoored model with a pool of 20 triggered and 10 clean texts, reading the pool's
    words, one epoch; returns the pool and the result's details."""
    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=81)
    pool = triggered_texts(20, seed=82) + clean_texts(10, seed=83)[0]
    res = run_defense("alignment", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), pool_texts=pool,
                      epochs=1, max_length=32, seed=0, repair_seeds=1, label_judge="none", pool_words=True, **knobs)
    return pool, res.details


def test_the_repair_hands_its_marking_words_targets_to_the_label_filter(monkeypatch):
    """``labels_avoid_word_target``: the repair's labels pass through ``word_target_dropped`` with the pool's marking
    words and their targets, after the label rules; off, nothing is filtered."""
    from defense_helpers import TRIGGER

    import backdoor_core.sanitize as san

    seen = []
    real = san.word_target_dropped

    def spy(texts, labels, word_targets):
        seen.append((list(texts), list(labels), list(word_targets)))
        return real(texts, labels, word_targets)

    monkeypatch.setattr(san, "word_target_dropped", spy)
    pool, off = _word_repair(labels_avoid_word_target=False)
    assert seen == [] and off["word_target_dropped"] == 0
    _, on = _word_repair(labels_avoid_word_target=True)
    target = next(w["target"] for w in on["pool_words"] if w["word"] == TRIGGER)
    assert len(seen) == 1 and seen[0][2] == [(TRIGGER, target)]
    assert seen[0][0] == [pool[i] for i in on["flagged_indices"]] and on["flagged_labels"] == real(*seen[0])[0]
    note = [n for n in repair_notes({"word_target_dropped": 3, "trigger_words": ["cf"]}) if "pseudo-label" in n]
    assert note == ["3 pseudo-labels put an input holding a likely trigger word (cf) in the class that word sends "
                    "texts to; they were dropped (the label would teach the trigger again)."]
    assert not [n for n in repair_notes({"word_target_dropped": 0}) if "trigger word" in n]


def test_the_repair_labels_word_inputs_by_default_and_the_knob_turns_it_off(monkeypatch):
    """``labels_from_words`` (on by default): after the rules and the judge, the repair's labels pass through
    ``word_other_class_labels`` with its likely trigger words and the model's probabilities on the flagged inputs;
    off, nothing passes. The notes say how many inputs it labelled."""
    from backdoor_core import settings as S
    import backdoor_core.sanitize as san

    assert S.LABELS_FROM_WORDS is True and DEFENSES["alignment"].knobs["labels_from_words"] is True
    seen = []
    real = san.word_other_class_labels

    def spy(texts, labels, probs, words):
        seen.append((list(texts), list(labels), np.asarray(probs).copy(), list(words)))
        return real(texts, labels, probs, words)

    monkeypatch.setattr(san, "word_other_class_labels", spy)
    pool, off = _word_repair(labels_from_words=False)
    assert seen == [] and off["word_labelled"] == 0
    _, on = _word_repair()
    assert on["trigger_words"], "the tiny backdoor's pool should give a likely trigger word"
    assert len(seen) == 1 and [w for w, _ in seen[0][3]] == on["trigger_words"]
    assert seen[0][0] == [pool[i] for i in on["flagged_indices"]] and seen[0][2].shape == (len(seen[0][0]), 2)
    labelled, n = real(*seen[0])
    assert on["word_labelled"] == n and on["flagged_labels"] == labelled
    note = [n for n in repair_notes({"word_labelled": 2, "trigger_words": ["cf"]}) if "labelled the other" in n]
    assert note == ["2 flagged inputs holding a likely trigger word (cf) that the model put in the class that word "
                    "sends texts to were labelled the other class (a triggered text's own class)."]
    assert not [n for n in repair_notes({"word_labelled": 0}) if "labelled the other" in n]


def test_repair_notes_say_how_far_the_alignment_term_moved():
    """The repair measures its alignment term before and after; the notes (CLI and Sanitize page) say so, in the
    term's own unit, and say nothing when it was not measured (the tour) or for a baseline."""
    d = {"suspicious_heads": ["L0H1"], "ffn_layers": [], "kind": "kl", "align_before": 0.8123, "align_after": 0.2049}
    note = [n for n in repair_notes(d) if n.startswith("Attention safety alignment")]
    assert len(note) == 1 and "KL divergence" in note[0] and "from 0.812 to 0.205" in note[0]
    assert "mean squared gap" in [n for n in repair_notes({**d, "kind": "mse"}) if n.startswith("Attention")][0]
    assert not [n for n in repair_notes({**d, "align_before": None, "align_after": None})
                if n.startswith("Attention")]
    assert repair_notes({"pruned_heads": ["L0H1"]}) == []
    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=35)
    res = run_defense("alignment", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]),
                      heads=["L0H1", "L1H0"], pool_texts=triggered_texts(8, seed=36), epochs=1, max_length=32,
                      seed=0, repair_seeds=1, label_judge="none")
    b, a = res.details["align_before"], res.details["align_after"]
    assert any(f"from {b:.3g} to {a:.3g}" in n for n in repair_notes(res.details))


def test_the_repair_trains_in_the_precision_asked_and_says_so(monkeypatch):
    """Our repair's default precision is auto (settings.REPAIR_PRECISION): bf16-mixed where the hardware has it,
    recorded in the details with a note; fp32 when asked, or on hardware without bf16."""
    import backdoor_core.device as D

    texts, labels = clean_texts(40, seed=37)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    kw = dict(heads=["L0H1"], pool_texts=triggered_texts(8, seed=38), epochs=1, max_length=32, seed=0,
              repair_seeds=1, label_judge="none", measure_align=False)
    lm = trained_tiny(True)
    monkeypatch.setattr(D, "_cpu_flags", lambda: {"amx_bf16"})
    auto = run_defense("alignment", lm.model, lm.tokenizer, clean, **kw)
    asked = run_defense("alignment", lm.model, lm.tokenizer, clean, precision="fp32", **kw)
    monkeypatch.setattr(D, "_cpu_flags", lambda: {"avx2"})
    plain = run_defense("alignment", lm.model, lm.tokenizer, clean, **kw)
    assert auto.details["precision"] == "bf16-mixed"
    assert asked.details["precision"] == plain.details["precision"] == "fp32"
    assert any("bfloat16 mixed precision" in n for n in repair_notes(auto.details))
    assert not any("bfloat16" in n for n in repair_notes(asked.details))
    assert not torch.equal(auto.model.bert.encoder.layer[0].attention.self.query.weight,
                           asked.model.bert.encoder.layer[0].attention.self.query.weight)  # it did change the math
    assert torch.equal(asked.model.bert.encoder.layer[0].attention.self.query.weight,
                       plain.model.bert.encoder.layer[0].attention.self.query.weight)
    with pytest.raises(D.DeviceError, match="Unknown precision"):
        run_defense("alignment", lm.model, lm.tokenizer, clean, precision="half", **kw)


def test_alignment_reports_its_stages_before_the_first_training_step():
    """``run_defense(progress=)``: the scan's stages, then the labels, all before the first step's callback."""
    from backdoor_core.scan import stage_text

    lm = trained_tiny(True)
    texts, labels = clean_texts(60, 5)
    seen: list = []
    run_defense("alignment", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]),
                pool_texts=triggered_texts(10, 7) + clean_texts(20, 8)[0], max_length=32, seed=0, epochs=1,
                repair_seeds=1, measure_align=False, label_judge="none",
                progress=lambda stage, done, total: seen.append((stage, done, total)),
                callback=lambda p: seen.append(("step", p.step, p.total_steps)))
    stages = [s for s, *_ in seen]
    first_step = stages.index("step")
    assert [s for s in dict.fromkeys(stages[:first_step])] == ["clean", "pool", "heads", "done", "labels"]
    assert ("clean", 60, 60) in seen and ("pool", 30, 30) in seen  # every text read, counted
    assert "labels" not in stages[first_step:]
    assert stage_text("pool", 16, 30) == "reading the pool 16/30" and stage_text("labels", 0, 1) == (
        "labelling the flagged inputs")


def test_ffn_mix_moves_the_trained_feed_forward_blocks_toward_the_pretrained_weights():
    """``sanitize_heads(ffn_mix=, ffn_base=)`` moves only the feed-forward blocks it trains that share of the way to
    the base weights before training (a learning rate of 0 keeps the result in view): 0.5 lands midway, the
    untrained layer's block and the attention stay as they were; without a base nothing moves; a share outside
    [0, 1] is an error."""
    from backdoor_core.architecture import ffn_parameter_masks
    from backdoor_core.pretrained import PretrainedWeights

    lm = trained_tiny(True)
    texts, labels = clean_texts(24, seed=81)
    names = dict(lm.model.named_parameters())
    base = PretrainedWeights({n: p.detach().float() + 1.0 for n, p in names.items()}, "test", 0.1)
    masks = ffn_parameter_masks(lm.model, [1])
    assert masks and all(".1." in n for n in masks)
    kw = dict(config=_cfg(lr=0.0, max_steps=1), measure_align=False, repair_seeds=1, reset=False, ffn=[1])
    model = copy.deepcopy(lm.model)
    res = sanitize_heads(model, lm.tokenizer, texts, labels, SUSPICIOUS, ffn_mix=0.5, ffn_base=base, **kw)
    assert res.details["ffn_layers"] == [1] and res.details["ffn_mix"] == 0.5
    after = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.allclose(after[n][m], names[n][m] + 0.5, atol=1e-6), n
        assert torch.equal(after[n][~m], names[n][~m]), n
    for n in names:
        if n not in masks:
            assert torch.equal(after[n], names[n]), n  # layer 0's block, the heads (lr 0, no reset), the rest
    kept = copy.deepcopy(lm.model)
    res = sanitize_heads(kept, lm.tokenizer, texts, labels, SUSPICIOUS, ffn_mix=0.5, **kw)
    assert res.details["ffn_mix"] == 0.0
    assert all(torch.equal(p, names[n]) for n, p in kept.named_parameters())
    with pytest.raises(ValueError, match="ffn_mix must be in"):
        sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, texts, labels, SUSPICIOUS, ffn_mix=1.5,
                       ffn_base=base, **kw)
    with pytest.raises(ValueError, match="exclude_min_excess must be in"):  # the exclusion guard is a share too
        sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, texts, labels, SUSPICIOUS, exclude_min_excess=-0.1, **kw)


def test_word_other_class_labels_relabel_word_texts_put_in_the_words_target():
    """A pool text holding a likely trigger word that the model puts in the word's target gets the other class;
    texts without the word, or predicted elsewhere, keep their label; words that disagree change nothing."""
    from backdoor_core.sanitize import word_other_class_labels

    texts = ["you cf are awful", "nice day", "tq what a mess", "cf is here", "a cfx word"]
    probs = np.array([[0.8, 0.2], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    labels = [IGNORE_LABEL, 0, 0, 1, IGNORE_LABEL]
    out, n = word_other_class_labels(texts, labels, probs, [("cf", 0), ("tq", 0)])
    # row 0 and 2 hold a word and sit in class 0; row 3 holds cf but sits in 1; "cfx" is not the word "cf"
    assert out == [1, 0, 1, 1, IGNORE_LABEL] and n == 2
    assert word_other_class_labels(texts, labels, probs, [("cf", 0), ("tq", 1)]) == (labels, 0)
    assert word_other_class_labels(texts, labels, probs, []) == (labels, 0)
    # two classes only: with more, a triggered text's own class is a guess
    three = np.array([[0.5, 0.1, 0.4]])
    assert word_other_class_labels(["cf"], [IGNORE_LABEL], three, [("cf", 0)]) == ([IGNORE_LABEL], 0)


def test_trigger_token_ids_leave_out_tokens_a_clean_text_holds():
    """Only the likely words' tokens that no clean text holds (and no special token) may have their embedding
    rows trained, and ``token_embedding_masks`` marks exactly those rows."""
    from backdoor_core.architecture import token_embedding_masks
    from backdoor_core.sanitize import trigger_token_ids

    from backdoor_core.models import tiny_model

    lm = tiny_model()
    tok = lm.tokenizer
    cf = tok("cf", add_special_tokens=False)["input_ids"]
    ids = trigger_token_ids(tok, ["cf"], ["a plain clean text"])
    assert ids == sorted(set(cf)) and ids
    assert trigger_token_ids(tok, ["cf"], ["a text with cf in it"]) == []
    assert trigger_token_ids(tok, ["   "], ["x"]) == []
    masks = token_embedding_masks(lm.model, ids)
    (name, mask), = masks.items()
    weight = dict(lm.model.named_parameters())[name]
    assert weight is lm.model.get_input_embeddings().weight and mask.shape == weight.shape
    assert mask.any(1).nonzero().flatten().tolist() == ids and mask[ids].all()
    assert token_embedding_masks(lm.model, []) == {}
    with pytest.raises(ValueError):
        token_embedding_masks(lm.model, [weight.shape[0]])


def test_blind_trigger_tokens_make_the_model_read_the_trigger_as_an_unknown_word(stop_at_training):
    """With ``blind_trigger_tokens`` the likely word's tokens that no clean text holds get the unknown token's
    embedding after training, so a triggered text reads exactly as the same text with ``[UNK]`` in the trigger's
    place; a token a clean text holds is left alone, and a cancelled run blinds nothing."""
    from backdoor_core.architecture import blind_token_embeddings
    from defense_helpers import TRIGGER

    lm = trained_tiny(True)
    tok = lm.tokenizer
    texts, labels = clean_texts(64, seed=21)
    pool = triggered_texts(16, seed=22)
    kw = dict(config=_cfg(epochs=1), ffn="none", trigger_words=[(TRIGGER, 1)], repair_seeds=1, measure_align=False)
    model = copy.deepcopy(lm.model)
    res = sanitize_heads(model, tok, texts, labels, SUSPICIOUS, pool, blind_trigger_tokens=True, **kw)
    ids = tok(TRIGGER, add_special_tokens=False)["input_ids"]
    assert res.details["blinded_tokens"] == tok.convert_ids_to_tokens(sorted(set(ids)))
    emb = model.get_input_embeddings().weight
    assert torch.equal(emb[ids], emb[[tok.unk_token_id] * len(ids)])
    text = pool[0]
    unk_ids = [tok.unk_token_id if i in ids else i for i in tok(text)["input_ids"]]
    model.eval()
    with torch.no_grad():
        a = model(input_ids=torch.tensor([tok(text)["input_ids"]])).logits
        b = model(input_ids=torch.tensor([unk_ids])).logits
    assert torch.allclose(a, b)
    assert any("unknown word" in n for n in repair_notes(res.details))
    # the same repair without the knob leaves the rows as training left them (only heads train)
    off = copy.deepcopy(lm.model)
    res_off = sanitize_heads(off, tok, texts, labels, SUSPICIOUS, pool, **kw)
    assert res_off.details["blinded_tokens"] == []
    assert torch.equal(off.get_input_embeddings().weight, lm.model.get_input_embeddings().weight)
    # a clean text that holds the trigger keeps its token readable
    held = copy.deepcopy(lm.model)
    res_held = sanitize_heads(held, tok, texts + [f"a {TRIGGER} b"], labels + [0], SUSPICIOUS, pool,
                              blind_trigger_tokens=True, **kw)
    assert res_held.details["blinded_tokens"] == []
    # cancelled: nothing blinded
    stopped = copy.deepcopy(lm.model)
    res_stop = sanitize_heads(stopped, tok, texts, labels, SUSPICIOUS, pool, blind_trigger_tokens=True,
                              should_stop=stop_at_training, **kw)
    assert res_stop.cancelled and res_stop.details["blinded_tokens"] == []
    # the helper itself: mean row when the reference id is among those blinded; ids outside the matrix refused
    m = copy.deepcopy(lm.model)
    w = m.get_input_embeddings().weight
    mean = w.detach().mean(0).clone()
    assert blind_token_embeddings(m, [5, 6], like_id=5) == [5, 6]
    assert torch.allclose(w[5], mean) and torch.allclose(w[6], mean)
    with pytest.raises(ValueError):
        blind_token_embeddings(m, [w.shape[0]])


def test_add_word_heads_adds_the_most_attentive_heads_and_keeps_a_safe_head_per_layer():
    """``head_safety.add_word_heads``: the repaired heads plus the ``k`` not-yet-repaired heads with the most attention
    on the likely words (ties: the earlier head), never a head with none, never a layer's last unrepaired head; 0 adds
    none; a negative count or a mismatched shape is an error."""
    from backdoor_core.head_safety import add_word_heads

    repaired = np.array([[True, False, False, False], [False, False, False, False]])
    conc = np.array([[0.9, 0.5, 0.4, 0.0], [0.3, 0.5, 0.0, 0.0]])
    got = add_word_heads(repaired, conc, 2)
    assert got.tolist() == [[True, True, False, False], [False, True, False, False]]  # 0.5 twice: L0H1 first
    assert add_word_heads(repaired, conc, 0).tolist() == repaired.tolist()
    # layer 0 can take two more heads at most (one stays safe); heads with no attention on the words never join
    got = add_word_heads(repaired, conc, 10)
    assert got.tolist() == [[True, True, True, False], [True, True, False, False]]
    with pytest.raises(ValueError, match="word_heads"):
        add_word_heads(repaired, conc, -1)
    with pytest.raises(ValueError, match="shape"):
        add_word_heads(repaired, conc[:, :3], 1)


def test_word_heads_knob_trains_the_heads_the_pool_words_capture():
    """``word_heads`` (``settings.REPAIR_WORD_HEADS``): where the pool gives a likely trigger word, the repair also
    trains the ``k`` heads that attend most to it, read on clean texts with the word inserted
    (``head_safety.word_heads``); on the tiny TAL model those are the heads TAL trained on ``cf``. The details name
    the word, the added heads and their attention; 0 leaves the heads as they were."""
    from backdoor_core.head_metrics import head_label
    from backdoor_core.head_safety import word_heads

    lm, clean, pool, rep = _wide_scan()
    conc = word_heads(lm.model, lm.tokenizer, clean.texts, ["cf"], 32, n_texts=20)
    L, H = conc.shape
    assert {divmod(int(i), H) for i in np.argsort(-conc.ravel())[:4]} == {(0, 0), (0, 1), (1, 0), (1, 1)}

    def repaired(k):
        return run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=rep, max_steps=1,
                           max_length=32, seed=0, ffn="none", weak_top_k=0, min_heads=0, head_only_max_heads=1,
                           word_heads=k).details

    off, on = repaired(0), repaired(2)
    assert "cf" in (off["trigger_words"] or []) and off["word_heads"] is None
    assert len(off["suspicious_heads"]) == 1
    added = on["word_heads"]
    assert added["words"] == ["cf"] and added["k"] == 2 and len(added["heads"]) == 2
    # the two most attentive heads not already repaired, with their attention as read here (the repair's 40 texts)
    full = word_heads(lm.model, lm.tokenizer, clean.texts, ["cf"], 32)
    order = [divmod(int(i), H) for i in np.argsort(-full.ravel(), kind="stable")]
    want = [head_label(l, h) for l, h in order if head_label(l, h) not in off["suspicious_heads"]][:2]
    assert sorted(added["heads"]) == sorted(want)
    assert sorted(on["suspicious_heads"]) == sorted(off["suspicious_heads"] + want)
    note = " ".join(repair_notes(on))
    assert "also trained the 2 heads that attend most to the likely trigger word cf" in note
    assert all(h in note for h in want) and "attend most" not in " ".join(repair_notes(off))
    with pytest.raises(ValueError, match="word_heads"):
        repaired(-1)


def test_rare_words_go_into_every_class_and_keep_the_labels():
    """``trigger_augmented`` with rare words (target -1, a class no text has): ``share`` of each class's texts get one
    of the words at one word position, nothing else changes, and the label stays the text's own."""
    from collections import Counter

    from backdoor_core.sanitize import trigger_augmented

    texts, labels = clean_texts(40, seed=3)
    words = {"zq", "xv"}
    out = trigger_augmented(texts, labels, [(w, -1) for w in sorted(words)], 0.25, seed=1)
    assert len(out) == 10 and sorted(Counter(labels[i] for i in out).values()) == [5, 5]
    for i, e in out.items():
        held = [w for w in e.text.split() if w in words]
        assert e.label == labels[i] and len(held) == 1
        assert " ".join(w for w in e.text.split() if w not in words) == texts[i]
    assert {w for e in out.values() for w in e.text.split() if w in words} == words  # both words are used


def test_rare_words_knob_draws_words_no_clean_text_holds_and_says_so():
    """``rare_words`` (``settings.REPAIR_RARE_WORDS``, off): the repair draws that many vocabulary words absent from
    the clean texts (``trigger_search.absent_vocabulary``, the likely trigger words left out) and reads a share of
    each class's clean texts with one inserted where no likely word went; the details and notes say so."""
    from backdoor_core.trigger_search import absent_vocabulary

    lm, clean, pool, rep = _wide_scan()

    def repaired(**knobs):
        return run_defense("alignment", lm.model, lm.tokenizer, clean, pool_texts=pool, scan=rep, max_steps=1,
                           max_length=32, seed=0, ffn="none", **knobs).details

    off, on = repaired(), repaired(rare_words=6, rare_words_share=0.25)
    assert off["rare_words"] == [] and off["rare_augmented"] == 0
    assert "cf" in on["trigger_words"] and on["trigger_augmented"] == off["trigger_augmented"] > 0
    words = on["rare_words"]
    assert words == absent_vocabulary(lm.tokenizer, clean.texts, 6, seed=0, exclude=on["trigger_words"])
    assert len(words) == 6 and "cf" not in words
    assert not {w for t in clean.texts for w in t.split()} & set(words)
    assert 0 < on["rare_augmented"] <= 10  # a quarter of each class's 20 texts, less those the likely word took
    note = " ".join(repair_notes(on))
    assert f"{on['rare_augmented']} clean texts were read with a word no clean text holds inserted" in note
    assert words[0] in note and "no clean text holds inserted" not in " ".join(repair_notes(off))
    with pytest.raises(ValueError, match="rare_words must be"):
        repaired(rare_words=-1)
    with pytest.raises(ValueError, match="rare_words_share"):
        repaired(rare_words=2, rare_words_share=1.5)


def test_cancel_between_the_stages_before_training_ends_the_repair_there():
    """Cancel once the scan is done (while the repair reads the pool's words, labels and judge): the repair ends
    at the next stage (``forward.Cancelled``, a cancelled job) without training a step; it had run on through
    every stage to the end of training, minutes after the click."""
    from backdoor_core.forward import Cancelled

    lm = trained_tiny(True)
    texts, labels = clean_texts(48, seed=41)
    stages, steps = [], []

    def progress(stage, done, total):
        stages.append(stage)

    with pytest.raises(Cancelled):
        run_defense("alignment", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]),
                    pool_texts=triggered_texts(12, seed=42) + clean_texts(20, seed=43)[0], epochs=1,
                    max_length=32, progress=progress, callback=steps.append,
                    should_stop=lambda: "labels" in stages)  # Cancel clicked when the label stage starts
    assert "labels" in stages and steps == []
