"""The one cached forward pass (``backdoor_core.forward``): order, shapes, modes, hooks, cancel; and that every
consumer returns what it returned before the refactor (``tests/data/forward_golden.npz``)."""

import numpy as np
import pytest
import torch

from backdoor_core.architecture import attention_blocks, head_gates
from backdoor_core.forward import Cancelled, run_with_cache
from forward_golden import GOLDEN, collect

TEXTS = ["a much longer sentence about the film and its plot and music", "short", "",
         "medium length text here", "x y"]


def _hooks(model) -> int:
    return sum(len(b.output._forward_pre_hooks) for b in attention_blocks(model))


def test_results_come_back_in_input_order_with_padding_removed(tiny):
    cache = run_with_cache(tiny.model, tiny.tokenizer, TEXTS, max_length=32, batch_size=2,
                           want=("attentions", "hidden_states", "z", "offsets"))
    L, H = 2, 4
    D = tiny.model.config.hidden_size // H
    for i, text in enumerate(TEXTS):  # each input alone (no padding) gives the same numbers
        alone = run_with_cache(tiny.model, tiny.tokenizer, [text], max_length=32, want=("attentions", "z"))
        n = int(cache.lengths[i])
        assert cache.attentions[i].shape == (L, H, n, n) and cache.hidden_states[i].shape == (L + 1, n, 32)
        assert cache.z[i].shape == (L, n, H, D) and cache.offsets[i].shape == (n, 2) and len(cache.tokens[i]) == n
        np.testing.assert_allclose(cache.attentions[i], alone.attentions[0], atol=1e-5)
        np.testing.assert_allclose(cache.z[i], alone.z[0], atol=1e-5)
        np.testing.assert_allclose(cache.logits[i], alone.logits[0], atol=1e-5)
        assert cache.input_ids[i].tolist() == tiny.tokenizer(text)["input_ids"]
    np.testing.assert_allclose(cache.probs.sum(1), 1.0, atol=1e-6)
    assert cache.tokens[2] == ["[CLS]", "[SEP]"] and not cache.truncated.any()
    # token id inputs give the same logits as the texts they came from
    ids = run_with_cache(tiny.model, tiny.tokenizer, [c.tolist() for c in cache.input_ids], max_length=32)
    np.testing.assert_allclose(ids.logits, cache.logits, atol=1e-5)


def test_reducer_sees_batches_and_results_are_scattered_back(tiny):
    seen = []

    def reduce(batch):
        seen.append(len(batch))
        assert batch.attentions[0].shape[:2] == (len(batch), 4) and batch.attentions[0].shape[-1] == batch.input_ids.shape[1]
        first = batch.attention_mask.sum(-1)  # (B,) a per-input tensor
        return {"n": first, "text_len": [int(m.sum()) * 10 for m in batch.attention_mask]}

    cache = run_with_cache(tiny.model, tiny.tokenizer, TEXTS, max_length=8, batch_size=2, reduce=reduce)
    assert seen == [2, 2, 1] and cache.attentions is None  # maps computed for the reducer, not kept
    assert cache.reduced["n"].tolist() == cache.lengths.tolist() and max(cache.lengths) == 8  # truncated at 8
    assert cache.reduced["text_len"] == [10 * n for n in cache.lengths.tolist()]


def test_training_mode_and_hooks_are_restored_even_on_cancel_or_error(tiny):
    model = tiny.model
    model.train()
    try:
        before = _hooks(model)
        run_with_cache(model, tiny.tokenizer, TEXTS, max_length=16, want=("z",))
        assert model.training and _hooks(model) == before
        calls = {"n": 0}

        def stop():
            calls["n"] += 1
            return calls["n"] > 1

        with pytest.raises(Cancelled):
            run_with_cache(model, tiny.tokenizer, TEXTS, max_length=16, batch_size=2, want=("z",), should_stop=stop)
        assert model.training and _hooks(model) == before

        def boom(batch):
            assert not model.training  # the pass itself runs in eval mode (no dropout)
            raise KeyError("boom")

        with pytest.raises(KeyError):
            run_with_cache(model, tiny.tokenizer, TEXTS, max_length=16, want=("z",), reduce=boom)
        assert model.training and _hooks(model) == before
    finally:
        model.eval()
    model.eval()
    run_with_cache(model, tiny.tokenizer, TEXTS[:1], max_length=16)
    assert not model.training
    with pytest.raises(ValueError, match="want"):
        run_with_cache(model, tiny.tokenizer, TEXTS, max_length=16, want=("everything",))


def test_grad_mode_gives_gate_gradients_and_gates_reach_the_cached_z(tiny):
    gates = torch.ones(2, 4, requires_grad=True)

    def grad(batch):
        (g,) = torch.autograd.grad(batch.logits[0, 1], gates)
        return {"g": g[None]}

    with head_gates(tiny.model, gates):
        cache = run_with_cache(tiny.model, tiny.tokenizer, TEXTS[:2], max_length=16, batch_size=1, grad=True,
                               reduce=grad)
    assert cache.reduced["g"].shape == (2, 2, 4) and np.abs(cache.reduced["g"]).sum() > 0
    with pytest.raises(RuntimeError):  # without grad=True there is no graph
        run_with_cache(tiny.model, tiny.tokenizer, TEXTS[:1], max_length=16, reduce=grad)
    off = torch.ones(2, 4)
    off[0, 1] = 0.0
    with head_gates(tiny.model, off):
        gated = run_with_cache(tiny.model, tiny.tokenizer, TEXTS[:1], max_length=16, want=("z",))
    assert np.all(gated.z[0][0, :, 1] == 0) and np.abs(gated.z[0][0, :, 0]).sum() > 0


def test_empty_input_list(tiny):
    cache = run_with_cache(tiny.model, tiny.tokenizer, [], max_length=16, want=("attentions",))
    assert cache.logits.shape == (0, 2) and len(cache) == 0 and cache.attentions == []


def test_every_consumer_returns_what_it_returned_before_the_refactor():
    """Golden outputs recorded on the code before ``forward`` existed (one thread). Continuous numbers may move by
    float noise (batches are now sorted by length, so padding differs); every decision must be the same."""
    golden = np.load(GOLDEN)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        now = collect()
    finally:
        torch.set_num_threads(threads)
    assert sorted(now) == sorted(golden.files)
    for key in golden.files:
        want, got = golden[key], now[key]
        assert got.shape == want.shape, key
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=key)
        else:
            assert np.array_equal(got, want), key
    # the setup is not trivial: the scan flags inputs and names heads, and the repair changed the model
    assert len(golden["scan_flagged"]) > 0 and golden["heads_suspicious"].any()
    assert not np.allclose(golden["align_logits"][:20], golden["predict"], atol=1e-3)


def test_scan_report_carries_the_detectors_it_fitted():
    from backdoor_core.data import TextDataset
    from backdoor_core.detection import attention_stats
    from backdoor_core.scan import scan_model
    from defense_helpers import clean_texts, trained_tiny, triggered_texts

    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=35)
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    rep = scan_model(lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), pool, max_length=32,
                     frr=0.2, representation=False)  # the attention-only path (fusion: test_style_defense)
    stats = attention_stats(lm.model, lm.tokenizer, pool, 32)
    # the final pass flags by the head-focus detector, the first pass by the per-layer one: re-scoring the pool
    # with the carried detectors gives the report's numbers, so callers (the defense bench) need not refit them
    np.testing.assert_allclose(rep.head_detector.score(stats), rep.pool_scores, atol=1e-6)
    assert rep.head_detector.threshold == rep.threshold and rep.head_detector.heads.tolist() == rep.heads.suspicious.tolist()
    np.testing.assert_allclose(rep.detector.score(stats), rep.first_pass["pool_scores"], atol=1e-6)
    assert rep.detector.threshold == rep.first_pass["threshold"] and rep.detector.features == ("focus",)
    assert sorted(rep.clean_fit_texts + rep.clean_dev_texts) == sorted(texts)
    dev = attention_stats(lm.model, lm.tokenizer, rep.clean_dev_texts, 32)
    np.testing.assert_allclose(rep.head_detector.score(dev), rep.clean_scores, atol=1e-6)
    one = scan_model(lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), pool, max_length=32,
                     frr=0.2, refine=False, representation=False)
    assert one.head_detector is None and one.detector.threshold == one.threshold
