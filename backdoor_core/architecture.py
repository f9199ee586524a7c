"""Where each attention head's parameters live, and gating heads on and off.

In a BERT layer (``transformers`` ``modeling_bert``) head ``h`` of ``H`` with head size ``D = hidden / H``
owns:

* rows ``h*D:(h+1)*D`` of ``attention.self.query/key/value`` weight ``(hidden, hidden)`` and bias ``(hidden,)``;
* columns ``h*D:(h+1)*D`` of ``attention.output.dense`` weight ``(hidden, hidden)`` (its bias is shared).

``transformers`` 5 ignores ``head_mask`` and has no ``prune_heads``, so heads are gated with a forward
pre-hook on the output projection, whose input ``(batch, T, hidden)`` is the concatenation of the heads'
contexts: multiplying slice ``h`` by ``g[h]`` scales head ``h``'s contribution (0 = ablated).

BERT, RoBERTa, ELECTRA-style (``encoder.layer[i].attention``) and DistilBERT (``transformer.layer[i].attention``
with ``q_lin``/``k_lin``/``v_lin``/``out_lin``) are supported.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class UnsupportedModelError(ValueError):
    """The model's attention layout is not one we know how to slice into heads."""


@dataclass
class AttentionBlock:
    """One layer's attention projections. ``query``/``key``/``value``/``output`` are ``nn.Linear``."""

    layer: int
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear
    num_heads: int

    @property
    def head_dim(self) -> int:
        return self.query.out_features // self.num_heads

    def head_slice(self, head: int) -> slice:
        d = self.head_dim
        return slice(head * d, (head + 1) * d)


def attention_blocks(model) -> list[AttentionBlock]:
    """The attention projections of every layer, in order."""
    num_heads = int(model.config.num_attention_heads if hasattr(model.config, "num_attention_heads") else model.config.n_heads)
    base = getattr(model, "base_model", model)
    blocks: list[AttentionBlock] = []
    encoder = getattr(base, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer"):
        for i, layer in enumerate(encoder.layer):
            att = layer.attention
            blocks.append(AttentionBlock(i, att.self.query, att.self.key, att.self.value, att.output.dense, num_heads))
        return blocks
    transformer = getattr(base, "transformer", None)
    if transformer is not None and hasattr(transformer, "layer"):
        for i, layer in enumerate(transformer.layer):
            att = layer.attention
            blocks.append(AttentionBlock(i, att.q_lin, att.k_lin, att.v_lin, att.out_lin, num_heads))
        return blocks
    raise UnsupportedModelError(
        f"{type(model).__name__} is not a BERT-style encoder we can slice into heads "
        "(supported: BERT, RoBERTa, ELECTRA, DistilBERT)."
    )


def head_parameter_masks(model, heads_mask: np.ndarray) -> dict[str, torch.Tensor]:
    """Boolean masks, keyed by parameter name, that are True exactly on the selected heads' slices.

    Args:
        heads_mask: ``(layers, heads)`` booleans; True = this head's parameters may change.

    Returns:
        ``{name: mask}`` for every parameter touched by some selected head: query/key/value weight rows and
        bias entries, and output-projection weight columns. Parameters not in the dict hold no selected head.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    masks: dict[str, torch.Tensor] = {}
    for block in attention_blocks(model):
        sel = np.flatnonzero(heads_mask[block.layer])
        if sel.size == 0:
            continue
        for lin in (block.query, block.key, block.value):
            wm = torch.zeros_like(lin.weight, dtype=torch.bool)
            bm = torch.zeros_like(lin.bias, dtype=torch.bool)
            for h in sel:
                wm[block.head_slice(int(h)), :] = True
                bm[block.head_slice(int(h))] = True
            masks[names[id(lin.weight)]] = wm
            masks[names[id(lin.bias)]] = bm
        om = torch.zeros_like(block.output.weight, dtype=torch.bool)
        for h in sel:
            om[:, block.head_slice(int(h))] = True
        masks[names[id(block.output.weight)]] = om
    return masks


@contextmanager
def head_gates(model, gates):
    """Scale each head's contribution by ``gates[layer, head]`` while the context is open.

    Args:
        gates: ``(layers, heads)`` tensor or array; 1 = untouched, 0 = ablated. A tensor with
            ``requires_grad=True`` yields d loss / d gate — a head-importance score.
    """
    blocks = attention_blocks(model)
    g = gates if torch.is_tensor(gates) else torch.as_tensor(np.asarray(gates), dtype=torch.float32)
    handles = []

    def make_hook(block: AttentionBlock):
        def hook(module, args):
            (x, *rest) = args  # x: (batch, T, heads * head_dim)
            shape = x.shape
            scale = g[block.layer].to(x.device, x.dtype)  # (heads,)
            x = (x.view(*shape[:-1], block.num_heads, block.head_dim) * scale[:, None]).view(shape)
            return (x, *rest)

        return hook

    try:
        for block in blocks:
            handles.append(block.output.register_forward_pre_hook(make_hook(block)))
        yield g
    finally:
        for h in handles:
            h.remove()
