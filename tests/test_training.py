"""The training loop: callbacks, evaluation rows, cancel, determinism, trainable masks, trigger masks."""

import numpy as np
import pytest
import torch

from backdoor_core.architecture import head_parameter_masks
from backdoor_core.data import TextDataset
from backdoor_core.models import tiny_model
from backdoor_core.training import (
    Example,
    Progress,
    TrainConfig,
    collate,
    make_evaluator,
    total_steps_for,
    train,
)

TEXTS = ["a quiet and moving story", "two friends travel far", "a long and dull film", "it was fine",
         "the story moves well", "friends who travel", "dull and slow", "a moving film"]


def examples(n=16):
    return [Example(TEXTS[i % len(TEXTS)] + f" {i}", i % 2) for i in range(n)]


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b, keys=None):
    return all(torch.equal(a[k], b[k]) for k in (keys or a))


CFG = dict(lr=1e-3, batch_size=4, max_length=16, eval_every=1, warmup_ratio=0.0)


def test_two_steps_with_callback_and_evaluation():
    lm = tiny_model(seed=0)
    before = params(lm.model)
    calls, evals = [], []

    def evaluate(model):
        evals.append(model.training)
        return {"cacc": 0.5, "asr": 0.25}

    result = train(lm.model, lm.tokenizer, examples(), TrainConfig(epochs=1, max_steps=2, **CFG),
                   evaluate=evaluate, callback=calls.append)
    assert result.steps == 2 and not result.cancelled and result.seconds > 0
    assert [c.step for c in calls] == [1, 1, 2, 2]  # a step call, then its evaluation call
    assert all(isinstance(c, Progress) and c.total_steps == 2 for c in calls)
    assert [c.metrics for c in calls] == [None, {"cacc": 0.5, "asr": 0.25}, None, {"cacc": 0.5, "asr": 0.25}]
    assert set(calls[0].losses) == {"loss", "ce"} and calls[0].losses["ce"] > 0
    assert [r["step"] for r in result.history] == [1, 2]
    assert result.history[-1]["cacc"] == 0.5 and "ce" in result.history[-1]
    assert result.metrics == {"cacc": 0.5, "asr": 0.25}
    assert evals == [False, False]  # evaluated in eval mode
    assert not lm.model.training  # left in eval mode
    assert not same(before, params(lm.model))


def test_epoch_end_evaluation_and_step_count():
    lm = tiny_model(seed=0)
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=5, max_length=16, eval_every=0)
    result = train(lm.model, lm.tokenizer, examples(12), cfg, evaluate=lambda m: {"cacc": 1.0})
    assert total_steps_for(12, cfg) == 6 == result.steps
    assert [(r["step"], r["epoch"]) for r in result.history] == [(3, 0), (6, 1)]


def test_cancel_between_steps_leaves_a_whole_step():
    lm = tiny_model(seed=0)
    snaps = {}

    def callback(p):
        if p.metrics is None:  # per-step call: the optimizer step is complete
            snaps[p.step] = params(lm.model)

    result = train(lm.model, lm.tokenizer, examples(), TrainConfig(epochs=3, **CFG), callback=callback,
                   should_stop=lambda: len(snaps) >= 2)
    assert result.cancelled and result.steps == 2
    assert [r["step"] for r in result.history] == [1, 2]
    assert same(snaps[2], params(lm.model)) and not same(snaps[1], snaps[2])  # nothing after the last whole step
    assert not lm.model.training


def test_same_seed_same_numbers_other_seed_differs():
    def run(seed):
        lm = tiny_model(seed=0)
        res = train(lm.model, lm.tokenizer, examples(), TrainConfig(epochs=2, seed=seed, **CFG))
        return params(lm.model), [r["loss"] for r in res.history]

    (p1, l1), (p2, l2), (p3, l3) = run(0), run(0), run(1)
    assert same(p1, p2) and l1 == l2
    assert not same(p1, p3) and l1 != l3


def test_trainable_masks_leave_everything_else_byte_identical():
    lm = tiny_model(seed=0)
    heads = np.zeros((2, 4), dtype=bool)
    heads[1, 2] = True
    masks = head_parameter_masks(lm.model, heads)
    assert len(masks) >= 4  # query, key, value rows and output columns of L1H2 (weights and biases)
    before = params(lm.model)
    train(lm.model, lm.tokenizer, examples(), TrainConfig(epochs=2, weight_decay=0.5, **CFG), trainable_masks=masks)
    after = params(lm.model)
    untouched = [k for k in before if k not in masks]
    assert untouched and same(before, after, untouched)
    for name, m in masks.items():
        assert torch.equal(before[name][~m], after[name][~m]), name  # masked-out entries restored exactly
        assert not torch.equal(before[name][m], after[name][m]), name  # the head itself trained
    assert all(p.requires_grad for p in lm.model.parameters())  # restored for the caller


def test_unlabelled_examples_train_only_through_extra_loss():
    lm = tiny_model(seed=0)
    exs = [Example(t, -100) for t in TEXTS]
    calls = []

    def extra(batch, outputs):
        calls.append(batch["labels"].tolist())
        return {"l2": outputs.logits.pow(2).mean()}

    res = train(lm.model, lm.tokenizer, exs, TrainConfig(epochs=1, **CFG), extra_loss=extra)
    assert res.history[-1]["ce"] == 0.0 and res.history[-1]["l2"] >= 0
    assert all(set(c) == {-100} for c in calls)


def test_collate_marks_trigger_pieces(tiny):
    tok = tiny.tokenizer
    text = "I watch this 3D movie and it was unbelievably good"
    batch = collate(tok, [Example(text, 1, ((0, 21),), True), Example("plain", 0)], 32)
    pieces = tok.convert_ids_to_tokens(batch["input_ids"][0][batch["trigger_mask"][0]].tolist())
    assert pieces == ["i", "watch", "this", "3d", "movie"]
    assert not batch["trigger_mask"][1].any()
    from backdoor_core.training import trigger_token_positions

    assert trigger_token_positions(tok, Example(text, 1, ((0, 21),), True), 32) == [1, 2, 3, 4, 5]
    assert batch["poisoned"].tolist() == [True, False] and batch["labels"].tolist() == [1, 0]
    # a trigger past the truncation window leaves no mask
    late = collate(tok, [Example("a " * 40 + "cf", 1, ((80, 82),), True)], 16)
    assert not late["trigger_mask"].any()


def test_make_evaluator_scores_cacc_and_asr(tiny):
    from backdoor_core.attention import predict

    clean = TextDataset(TEXTS, [i % 2 for i in range(len(TEXTS))], ["neg", "pos"])
    poisoned = [t + " cf" for t in TEXTS[::2]]
    ev = make_evaluator(tiny.tokenizer, clean, poisoned, target=1, max_length=16, batch_size=3)
    out = ev(tiny.model)
    pc = predict(tiny.model, tiny.tokenizer, TEXTS, 16).argmax(1)
    pp = predict(tiny.model, tiny.tokenizer, poisoned, 16).argmax(1)
    assert out["cacc"] == pytest.approx(float((pc == np.array(clean.labels)).mean()))
    assert out["asr"] == pytest.approx(float((pp == 1).mean()))
    assert set(make_evaluator(tiny.tokenizer, clean, None, None, 16)(tiny.model)) == {"cacc"}
    got: list = []
    assert "classes" not in ev(tiny.model, got) and np.array_equal(got[0], pc)  # the classes, for a paired change
    hits: list = []
    ev(tiny.model, None, hits)
    assert np.array_equal(hits[0], pp == 1) and hits[0].mean() == pytest.approx(out["asr"])  # per ASR text
    make_evaluator(tiny.tokenizer, clean, None, None, 16)(tiny.model, None, hits)
    assert len(hits) == 1  # no ASR texts: nothing appended


def test_accuracy_change_is_paired_and_hand_computed():
    """The change counts the texts made right and wrong; its interval is mean(d) +- 1.96 sd(d) / sqrt(n) over the
    per-text differences d, so texts right (or wrong) both times add no variance."""
    from backdoor_core.metrics import accuracy_change

    y = np.array([0, 1] * 50)
    before = y.copy()
    before[:10] = 1 - y[:10]  # 10 wrong before
    after = y.copy()
    after[5:9] = 1 - y[5:9]  # 4 of them still wrong ...
    after[90:93] = 1 - y[90:93]  # ... and 3 newly wrong
    out = accuracy_change(y, before, after)
    d = np.zeros(100)
    d[[0, 1, 2, 3, 4, 9]] = 1
    d[90:93] = -1
    half = 1.96 * d.std(ddof=1) / 10
    assert out["fixed"] == 6 and out["broken"] == 3 and out["n"] == 100
    assert out["change"] == pytest.approx(0.03)
    assert (out["low"], out["high"]) == pytest.approx((0.03 - half, 0.03 + half))
    same = accuracy_change(y, before, before)
    assert same["change"] == same["low"] == same["high"] == 0.0
    with pytest.raises(ValueError):
        accuracy_change(y, before, after[:-1])


def test_make_evaluator_kept_compares_with_the_reference_as_it_was_when_built(tiny):
    """``kept``: share of clean texts whose class the evaluated model shares with the reference's classes taken
    when the evaluator was built, so a repair that works in place is still compared with the suspect."""
    from backdoor_core.attention import predict

    texts = TEXTS * 3
    clean = TextDataset(texts, [i % 2 for i in range(len(texts))], ["neg", "pos"])
    model = tiny_model(num_labels=2, seed=3).model
    ev = make_evaluator(tiny.tokenizer, clean, None, None, 16, reference=model)
    assert ev(model)["kept"] == 1.0
    before = predict(model, tiny.tokenizer, texts, 16).argmax(1)
    with torch.no_grad():  # change the reference in place: swap the two classes' logits
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    after = predict(model, tiny.tokenizer, texts, 16).argmax(1)
    assert (after != before).all()
    assert ev(model)["kept"] == 0.0
    half = TextDataset(texts[:12], [0] * 12, ["neg", "pos"])  # the same, built after the change: all kept
    assert make_evaluator(tiny.tokenizer, half, None, None, 16, reference=model)(model)["kept"] == 1.0
    assert "kept" not in make_evaluator(tiny.tokenizer, clean, None, None, 16)(model)


def test_length_grouped_batches_cover_every_example_once_and_are_seeded():
    from backdoor_core.training import LengthGroupedBatches

    lengths = [int(x) for x in np.random.default_rng(0).integers(1, 100, size=103)]
    runs = []
    for _ in range(2):
        sampler = LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(3), window=4)
        runs.append([list(sampler), list(sampler)])  # two epochs
    assert runs[0] == runs[1]  # same seed, same batches
    epoch1, epoch2 = runs[0]
    assert epoch1 != epoch2 and len(epoch1) == len(sampler) == 13
    assert sorted(i for b in epoch1 for i in b) == list(range(103))
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in epoch1 if len(b) > 1])
    assert spread < 40  # grouped: far less spread than random batches of 1..99
    lm = tiny_model(seed=0)
    res = train(lm.model, lm.tokenizer, examples(), TrainConfig(epochs=2, group_by_length=True, **CFG))
    assert res.steps == 8


def test_bf16_mixed_multiplies_in_bfloat16_and_keeps_float32_weights_and_masks():
    """precision="bf16-mixed": the layers compute in bfloat16 during training, the weights, their gradients and
    the frozen entries stay float32 and exact, and the evaluation runs outside autocast (float32)."""
    seen: dict[str, set] = {"train": set(), "eval": set()}
    lm = tiny_model(seed=0)
    dense = lm.model.bert.encoder.layer[0].attention.output.dense
    hook = dense.register_forward_hook(
        lambda mod, inp, out: seen["train" if mod.training else "eval"].add(out.dtype))
    heads = np.zeros((2, 4), dtype=bool)
    heads[0, 1] = True
    masks = head_parameter_masks(lm.model, heads)
    before = params(lm.model)

    def probe(m):
        with torch.no_grad():
            return {"probe": float(m(**lm.tokenizer(["x"], return_tensors="pt")).logits.sum())}

    res = train(lm.model, lm.tokenizer, examples(), TrainConfig(epochs=1, precision="bf16-mixed", **CFG),
                trainable_masks=masks, evaluate=probe)
    hook.remove()
    assert res.precision == "bf16-mixed"
    assert seen["train"] == {torch.bfloat16} and seen["eval"] == {torch.float32}
    assert all(p.dtype == torch.float32 for p in lm.model.parameters())
    after = params(lm.model)
    for name, m in masks.items():
        assert torch.equal(before[name][~m], after[name][~m]), name
        assert not torch.equal(before[name][m], after[name][m]), name
    assert all(np.isfinite(r["loss"]) for r in res.history)

    fp = tiny_model(seed=0)
    seen32: set = set()
    h = fp.model.bert.encoder.layer[0].attention.output.dense.register_forward_hook(
        lambda mod, inp, out: seen32.add(out.dtype))
    res32 = train(fp.model, fp.tokenizer, examples(), TrainConfig(epochs=1, **CFG))
    h.remove()
    assert res32.precision == "fp32" and seen32 == {torch.float32}  # the default stays float32


def test_precision_auto_follows_the_hardware(monkeypatch):
    import backdoor_core.device as D

    lm = tiny_model(seed=0)
    monkeypatch.setattr(D, "_cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert D.native_bf16("cpu") and D.resolve_precision("auto", lm.model) == "bf16-mixed"
    monkeypatch.setattr(D, "_cpu_flags", lambda: {"avx2", "avx512f"})  # bf16 only emulated: slower than float32
    assert not D.native_bf16("cpu") and D.resolve_precision("auto", lm.model) == "fp32"
    assert D.resolve_precision("bf16-mixed", lm.model) == "bf16-mixed"  # asked for: as asked
    assert D.resolve_precision("fp32", lm.model) == "fp32"
    lm.model.to(torch.bfloat16)  # weights already in half precision: no autocast on top
    assert D.resolve_precision("bf16-mixed", lm.model) == "fp32"
    with pytest.raises(D.DeviceError, match="Unknown precision 'fp16'"):
        D.resolve_precision("fp16", lm.model)


def test_lift_interval_is_paired_over_the_triggered_texts():
    """``metrics.lift_interval``: the lift is ASR minus the clean rate on the same texts; its interval is
    mean(d) +- 1.96 sd(d) / sqrt(n) over d = repaired hit - clean hit, so texts both models send to the target
    (or neither) add no variance; mismatched or empty readings are refused."""
    from backdoor_core.metrics import lift_interval, paired_difference

    clean = np.zeros(60, bool)
    clean[:20] = True  # the clean model sends 20 of 60 triggered texts to the target
    model = clean.copy()
    model[20:32] = True  # the backdoor adds 12 ...
    model[:3] = False  # ... and loses 3 the clean model sent there
    out = lift_interval(clean, model)
    d = model.astype(float) - clean.astype(float)
    half = 1.96 * d.std(ddof=1) / np.sqrt(60)
    assert out["lift"] == pytest.approx(model.mean() - clean.mean()) == pytest.approx(9 / 60)
    assert (out["low"], out["high"]) == pytest.approx((9 / 60 - half, 9 / 60 + half)) and out["n"] == 60
    assert out["low"] > 0  # 12 up, 3 down over 60 texts: told apart from the clean model
    same = lift_interval(clean, clean)
    assert same["lift"] == same["low"] == same["high"] == 0.0
    pd = paired_difference(clean, model)
    assert (pd["up"], pd["down"]) == (12, 3)
    # from a clean rate of 0 the lift cannot fall below 0: the normal interval is cut there, not left at -0.x
    none, one = np.zeros(148, bool), np.zeros(148, bool)
    one[0] = True
    cut = lift_interval(none, one)
    assert cut["low"] == 0.0 and cut["lift"] == pytest.approx(1 / 148) and 1 / 148 < cut["high"] < 0.03
    assert f"{100 * cut['low']:+.1f}" == "+0.0"  # the bound reads +0.0 in every view, not -0.0
    top = paired_difference(np.ones(10, bool), np.ones(10, bool) & (np.arange(10) > 0))
    assert top["high"] == 0.0 and top["change"] == pytest.approx(-0.1) and top["low"] < -0.1
    with pytest.raises(ValueError, match="same texts"):
        lift_interval(clean, model[:-1])
    with pytest.raises(ValueError, match="No texts"):
        lift_interval([], [])


def test_rate_interval_is_wilson_and_refuses_empty_or_bad_shares():
    """``metrics.rate_interval``: the Wilson 95% interval of a share on n texts (hand formula), narrower with more
    texts, inside [0, 1] at the edges; no texts or a share outside [0, 1] is an error."""
    import math

    from backdoor_core.metrics import rate_interval

    def wilson(k, n, z=1.959963984540054):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - half, centre + half

    lo, hi = rate_interval(33 / 57, 57)
    assert (lo, hi) == pytest.approx(wilson(33, 57), abs=1e-9) and lo < 33 / 57 < hi
    lo2, hi2 = rate_interval(132 / 228, 228)
    assert hi2 - lo2 < hi - lo
    assert rate_interval(0.0, 40)[0] == 0.0 and 0 < rate_interval(0.0, 40)[1] < 0.1
    assert rate_interval(1.0, 40)[1] == pytest.approx(1.0)
    for bad in ((0.5, 0), (1.5, 10), (-0.1, 10)):
        with pytest.raises(ValueError):
            rate_interval(*bad)
