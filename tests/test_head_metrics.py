import numpy as np
import pytest
import torch

from backdoor_core.head_metrics import (
    all_head_labels,
    head_label,
    head_similarity,
    heads_to_mask,
    mean_offdiag,
    parse_head_label,
    rank_heads,
    trigger_concentration,
)
from backdoor_core.metrics import accuracy, asr, auroc, frr_far, threshold_at_frr


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def test_labels():
    assert head_label(3, 7) == "L3H7"
    assert parse_head_label("l3h7") == (3, 7)
    assert all_head_labels(2, 2) == ["L0H0", "L0H1", "L1H0", "L1H1"]
    with pytest.raises(ValueError):
        parse_head_label("head 3")
    mask = heads_to_mask(["L1H0", (0, 1)], 2, 2)
    assert mask.tolist() == [[False, True], [True, False]]
    with pytest.raises(ValueError, match="outside"):
        heads_to_mask(["L5H0"], 2, 2)


def test_concentration_rises_when_attention_moves_to_trigger():
    rng = np.random.default_rng(0)
    att = _softmax(rng.normal(size=(2, 3, 6, 6)))  # (layers, heads, T, T)
    base = trigger_concentration(att, [2])
    assert base.shape == (2, 3)
    focused = att.copy()
    focused[1, 2] = 0.0
    focused[1, 2, :, 2] = 1.0  # head L1H2 sends everything to token 2
    c = trigger_concentration(focused, [2])
    assert c[1, 2] == pytest.approx(1.0)
    np.testing.assert_allclose(np.delete(c.reshape(-1), 5), np.delete(base.reshape(-1), 5))
    assert np.all(trigger_concentration(att, []) == 0)


def test_concentration_batched_torch_with_padding():
    att = torch.softmax(torch.randn(2, 3, 5, 5), -1)  # (batch, heads, T, T)
    trig = torch.zeros(2, 5, dtype=torch.bool)
    trig[0, 1] = True
    trig[1, 2] = True
    qmask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    c = trigger_concentration(att, trig, qmask)
    assert c.shape == (2, 3)
    expected = att[1, :, :3, 2].mean(-1)
    torch.testing.assert_close(c[1], expected)


def test_similarity_identical_and_collapsed_heads():
    rng = np.random.default_rng(1)
    att = _softmax(rng.normal(size=(1, 4, 7, 7)) * 3)
    sim = head_similarity(att)
    assert sim.shape == (1, 4, 4)
    np.testing.assert_allclose(np.diagonal(sim, axis1=-2, axis2=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(sim, np.swapaxes(sim, -1, -2), atol=1e-6)
    collapsed = np.zeros_like(att)
    collapsed[..., 3] = 1.0  # every head attends only to token 3
    assert mean_offdiag(head_similarity(collapsed))[0] == pytest.approx(1.0)
    assert mean_offdiag(sim)[0] < 0.99
    per_head = mean_offdiag(sim, per_head=True)
    assert per_head.shape == (1, 4)
    assert per_head.mean() == pytest.approx(mean_offdiag(sim)[0])


def test_similarity_ignores_masked_tokens():
    att = torch.softmax(torch.randn(2, 5, 5), -1)[None]  # (1, heads=2, 5, 5)
    padded = att.clone()
    padded[..., 4, :] = torch.rand(5)
    padded[..., :, 4] = torch.rand(5)
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    torch.testing.assert_close(head_similarity(padded, mask), head_similarity(att[..., :4, :4]))


def test_rank_heads():
    s = np.array([[0.1, 0.9], [0.5, 0.2]])
    assert rank_heads(s, 2) == [("L0H1", 0.9), ("L1H0", 0.5)]
    assert rank_heads(s, 1, descending=False) == [("L0H0", 0.1)]


def test_metrics():
    assert accuracy([1, 0, 1], [1, 1, 1]) == pytest.approx(2 / 3)
    # OpenBackdoor ASR: target-label samples are excluded
    assert asr([1, 1, 0, 1], target=1, gold_labels=[0, 0, 0, 1]) == pytest.approx(2 / 3)
    assert asr([1, 0], target=1) == 0.5
    with pytest.raises(ValueError):
        asr([1, 1], target=1, gold_labels=[1, 1])
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert auroc([0.5, 0.5], [0.5, 0.5]) == 0.5
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(size=300), rng.normal(1.0, size=200)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(neg, pos) == pytest.approx(brute)
    clean = np.arange(100.0)
    t = threshold_at_frr(clean, 0.05)
    frr, far = frr_far(clean, [200, 300, 50], t)
    assert frr <= 0.05 and frr > 0.0
    assert far == pytest.approx(1 / 3)


@pytest.mark.parametrize("arch", ["modernbert", "mistral", "gpt2", "bert"])
def test_concentration_counts_the_queries_that_can_see_the_trigger(arch):
    """A local (sliding-window) layer — ModernBERT's local layers, Mistral's window — hides the trigger from the
    queries farther than the window: trigger concentration (and key visibility) average over the queries that
    see at least one trigger token, read here off the model's own attention maps (a hidden key gets exactly 0).
    Averaged over all queries, a local layer's trigger heads looked diluted against global layers'."""
    from backdoor_core.architecture import is_causal, layer_windows
    from backdoor_core.head_metrics import key_visibility
    from backdoor_core.models import tiny_model

    lm = tiny_model(arch=arch, seed=0)
    enc = lm.tokenizer(" ".join(["the film was quietly moving and good"] * 4), return_tensors="pt")
    with torch.no_grad():
        att = torch.stack(lm.model(**enc, output_attentions=True).attentions)[:, 0]  # (L, H, T, T)
    T, causal, windows = att.shape[-1], is_causal(lm.model), layer_windows(lm.model)
    trig = torch.zeros(T, dtype=torch.bool)
    trig[[6, 7]] = True
    got = trigger_concentration(att, trig, causal=causal, window=windows)  # (L, H)
    for layer, w in enumerate(windows):
        sees = (att[layer, 0][:, trig] > 0).any(-1)  # (T,) queries that can see a trigger token
        want = att[layer][:, sees][:, :, trig].sum(-1).mean(-1)  # (H,)
        torch.testing.assert_close(got[layer], want, atol=1e-6, rtol=0)
        one = trigger_concentration(att[layer], trig, causal=causal, window=w)
        torch.testing.assert_close(one, want, atol=1e-6, rtol=0)
        seen_by = (att[layer, 0] > 0).sum(0).float()  # (T,) queries that can see each key
        torch.testing.assert_close(key_visibility(torch.ones(1, T), causal, w)[0], seen_by, atol=0, rtol=0)
        if w:  # the window hides the trigger from some queries: the old average over all queries diluted it
            assert not sees.all()
            assert (trigger_concentration(att[layer], trig, causal=causal) < one).all()
    if not any(windows):  # no window: the very same numbers as without the argument
        plain = trigger_concentration(att, trig, causal=causal)
        assert plain.numpy().tobytes() == got.numpy().tobytes()
