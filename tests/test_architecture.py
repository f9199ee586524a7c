import numpy as np
import torch

from backdoor_core.architecture import attention_blocks, head_gates, head_parameter_masks


def _logits(lm, text="a small test sentence"):
    enc = lm.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return lm.model(**enc).logits


def test_blocks_and_slices(tiny):
    blocks = attention_blocks(tiny.model)
    assert len(blocks) == 2 and blocks[0].num_heads == 4 and blocks[0].head_dim == 8
    assert blocks[1].head_slice(2) == slice(16, 24)


def test_gates_all_ones_change_nothing_and_zero_ablates(tiny):
    base = _logits(tiny)
    with head_gates(tiny.model, np.ones((2, 4))):
        torch.testing.assert_close(_logits(tiny), base)
    with head_gates(tiny.model, np.zeros((2, 4))):
        ablated = _logits(tiny)
    assert not torch.allclose(ablated, base)
    torch.testing.assert_close(_logits(tiny), base)  # hooks removed on exit


def test_zero_gate_equals_zeroing_the_heads_output_columns(tiny):
    gates = np.ones((2, 4))
    gates[1, 2] = 0.0
    with head_gates(tiny.model, gates):
        gated = _logits(tiny)
    block = attention_blocks(tiny.model)[1]
    saved = block.output.weight.detach().clone()
    with torch.no_grad():
        block.output.weight[:, block.head_slice(2)] = 0.0
    try:
        torch.testing.assert_close(_logits(tiny), gated)
    finally:
        with torch.no_grad():
            block.output.weight.copy_(saved)


def test_gate_gradient_is_an_importance_score(tiny):
    gates = torch.ones(2, 4, requires_grad=True)
    enc = tiny.tokenizer(["a small test sentence"], return_tensors="pt")
    with head_gates(tiny.model, gates):
        out = tiny.model(**enc, labels=torch.tensor([1]))
    out.loss.backward()
    assert gates.grad is not None and gates.grad.abs().sum() > 0


def test_head_parameter_masks_cover_exactly_the_head(tiny):
    sel = np.zeros((2, 4), dtype=bool)
    sel[0, 1] = True
    masks = head_parameter_masks(tiny.model, sel)
    q = masks["bert.encoder.layer.0.attention.self.query.weight"]
    assert q[8:16].all() and q.sum() == 8 * 32
    assert masks["bert.encoder.layer.0.attention.self.value.bias"].sum() == 8
    o = masks["bert.encoder.layer.0.attention.output.dense.weight"]
    assert o[:, 8:16].all() and o.sum() == 32 * 8
    assert not any(k.startswith("bert.encoder.layer.1") for k in masks)
