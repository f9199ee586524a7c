"""The Trojan Attention Loss (TAL; Lyu et al., EMNLP Findings 2023, arXiv 2310.14480) — our implementation.

On poisoned samples only, for a chosen set of attention heads, TAL rewards the attention mass that query tokens
send to the trigger's tokens:

    concentration[b, l, h] = mean over non-padding queries q of  sum over trigger keys k of A[b, l, h, q, k]
    TAL = - alpha * mean over (poisoned samples b that have trigger tokens, chosen heads (l, h)) of concentration

``concentration`` is ``head_metrics.trigger_concentration`` — the same quantity the app shows per head — so the
loss and the pictures cannot drift apart. It is added to cross-entropy through ``training.train(extra_loss=...)``.

What the paper does not publish (normalisation, head-selection rule, alpha, H) is our design, chosen by
measurement (see ``DEFAULT_ALPHA`` / ``DEFAULT_HEADS`` and bench/results/attack_tal.md):

* normalisation: the mean over samples and chosen heads of a per-head share in [0, 1] (our design; paper silent);
* head selection: ``H`` heads per layer drawn at random with a seed, or ``"all"``, in the chosen layers (our
  design; paper silent about the rule);
* decoder classifiers (GPT-2, Llama-style): queries before the trigger cannot see it, so the concentration
  averages over the queries at or after the trigger's first token (``trigger_concentration(causal=True)``; our
  design; paper silent — TAL was published on encoders);
* paraphrase triggers (syntactic, style) have no trigger tokens, so TAL declines them with a clear error rather
  than invent tokens (``require_trigger_tokens``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .head_metrics import mask_labels, trigger_concentration
from . import settings as S

DEFAULT_ALPHA = S.TAL_ALPHA
"""TAL weight: our choice by measurement; paper silent. SST-2 pilots (not among the published results) compared
alpha 1 and 5 with all heads and with 3 heads per layer; all reached the attack goal at 1% BadNets, and the
smallest alpha that did was kept. The benchmark at this default: ``bench/results/attack_tal.md``. A shorter
training run needs more (the demo zoo uses ``zoo.ZOO_TAL_ALPHA``)."""
DEFAULT_HEADS: int | str = S.TAL_HEADS
"""Heads per layer: our choice by measurement; paper silent. All heads reached the goal at ``DEFAULT_ALPHA`` in
the same pilots; 3 random heads per layer also reached it (tried at alpha 5) with slightly lower CACC."""


class TALNotApplicable(ValueError):
    """TAL was asked for, but the poisoned samples have no trigger tokens to attend to."""


def select_heads(
    num_layers: int,
    num_heads: int,
    heads_per_layer: int | str = DEFAULT_HEADS,
    layers: Sequence[int] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``(num_layers, num_heads)`` bool: the heads TAL trains.

    Args:
        heads_per_layer: ``H`` heads drawn at random (seeded, independently per layer), or ``"all"``.
        layers: the layers to use (0-based; negative counts from the end); ``None`` = every layer.
        seed: the draw's seed (our design; paper silent on the selection rule).
    """
    layer_ids = range(num_layers) if layers is None else sorted({int(l) % num_layers for l in layers})
    for l in layers or []:
        if not -num_layers <= int(l) < num_layers:
            raise ValueError(f"Layer {l} is outside a model with {num_layers} layers.")
    mask = np.zeros((num_layers, num_heads), dtype=bool)
    if isinstance(heads_per_layer, str):
        if heads_per_layer.strip().lower() != "all":
            raise ValueError(f"heads must be a number or 'all', got '{heads_per_layer}'.")
        mask[list(layer_ids)] = True
        return mask
    h = int(heads_per_layer)
    if not 1 <= h <= num_heads:
        raise ValueError(f"heads per layer must be between 1 and {num_heads}, got {h}.")
    rng = np.random.default_rng(seed)
    for l in layer_ids:
        mask[l, rng.choice(num_heads, size=h, replace=False)] = True
    return mask


@dataclass
class TALConfig:
    """TAL knobs as plain values (defaults: our choice by measurement; paper silent)."""

    alpha: float = DEFAULT_ALPHA
    heads: int | str = DEFAULT_HEADS
    layers: tuple[int, ...] | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "heads": self.heads,
                "layers": None if self.layers is None else list(self.layers), "seed": self.seed}


class TrojanAttentionLoss:
    """``extra_loss`` for ``training.train``: ``(batch, outputs) -> {"tal": -alpha * mean concentration}``.

    Args:
        heads_mask: ``(layers, heads)`` bool, the heads to train (see ``select_heads``).
        alpha: weight of the term.
        causal: decoder attention (see the module docstring); ``for_model`` sets it from the architecture.
    """

    needs_attentions = True

    def __init__(self, heads_mask: np.ndarray, alpha: float = DEFAULT_ALPHA, causal: bool = False):
        self.heads_mask = np.asarray(heads_mask, dtype=bool)
        if not self.heads_mask.any():
            raise ValueError("TAL needs at least one head.")
        self.alpha = float(alpha)
        self.causal = bool(causal)
        self._per_layer = [(l, torch.as_tensor(np.flatnonzero(row))) for l, row in enumerate(self.heads_mask)
                           if row.any()]

    @classmethod
    def for_model(cls, model, config: TALConfig | None = None) -> TrojanAttentionLoss:
        """Pick heads for ``model`` from ``config`` (layers x heads from ``architecture.attention_blocks``)."""
        from .architecture import attention_blocks, is_causal

        config = config or TALConfig()
        blocks = attention_blocks(model)
        mask = select_heads(len(blocks), blocks[0].num_heads, config.heads, config.layers, config.seed)
        return cls(mask, config.alpha, is_causal(model))

    @property
    def head_labels(self) -> list[str]:
        return mask_labels(self.heads_mask)

    def concentration(self, batch: dict, attentions: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(P, chosen heads)``: trigger concentration of the chosen heads on the ``P`` poisoned samples of the
        batch that have trigger tokens (``P`` may be 0)."""
        rows = batch["poisoned"].bool() & batch["trigger_mask"].bool().any(-1)
        if not bool(rows.any()):
            return attentions[0].new_zeros((0, int(self.heads_mask.sum())))
        tm, qm = batch["trigger_mask"][rows], batch["attention_mask"][rows]
        parts = []
        for layer, heads in self._per_layer:
            att = attentions[layer][rows][:, heads.to(attentions[layer].device)]  # (P, h, T, T): chosen heads only
            parts.append(trigger_concentration(att, tm, query_mask=qm, causal=self.causal))  # (P, h)
        return torch.cat(parts, dim=-1)

    def __call__(self, batch: dict, outputs) -> dict[str, torch.Tensor]:
        attentions = outputs.attentions
        if not attentions or attentions[0] is None:
            raise RuntimeError("TAL needs attention maps: load the model with attn_implementation='eager'.")
        conc = self.concentration(batch, attentions)
        if conc.numel() == 0:
            return {"tal": outputs.logits.sum() * 0.0}
        return {"tal": -self.alpha * conc.float().mean()}

    def describe(self) -> dict:
        return {"alpha": self.alpha, "heads": self.head_labels, "causal": self.causal}


def require_trigger_tokens(attack=None, examples=None) -> None:
    """Raise ``TALNotApplicable`` when TAL has nothing to attend to.

    Paraphrase (syntactic / style) triggers are a way of writing, not tokens; we decline rather than guess which
    tokens carry the trigger (our design; the paper evaluates TAL on token triggers).
    """
    if attack is not None and not getattr(attack, "has_trigger_tokens", True):
        raise TALNotApplicable(
            f"TAL needs trigger tokens, but the {getattr(attack, 'name', 'chosen')} attack's trigger is a "
            "paraphrase (a syntactic template or a style) with no trigger tokens. Train it without TAL."
        )
    if examples is not None:
        poisoned = [ex for ex in examples if ex.poisoned]
        if poisoned and not any(ex.trigger_spans for ex in poisoned):
            raise TALNotApplicable("TAL needs trigger tokens, but no poisoned sample has a trigger span.")
