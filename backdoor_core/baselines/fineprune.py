"""Fine-pruning (Liu et al., RAID 2018), head version: prune the heads least active on clean data, fine-tune.

* Activity of head ``(l, h)`` (our choice of unit and measure; the original prunes CNN channels by mean
  activation): the mean L2 norm of the head's context vector — its slice of the input to the attention output
  projection — over the real tokens of the defender's clean inputs.
* The ``prune_fraction`` (default 20%) least active heads are pruned, keeping at least one head per layer.
* Pruning is persistent: the head's value rows and bias and its output-projection columns are zeroed in the
  weights (``architecture.pruned_slices``; under grouped-query attention a group's shared value rows only when
  every head of the group is pruned), so a saved model stays pruned (``transformers`` 5 has no ``prune_heads`` and ignores ``head_mask``).
  Fine-tuning then trains everything EXCEPT those slices (``trainable_masks``), so they stay zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..architecture import attention_blocks, head_parameter_masks, pruned_slices, require_head_repair
from .. import settings as S
from ..forward import run_with_cache, stopping
from ..training import Progress, TrainConfig, TrainResult
from .finetune import default_config, finetune

DEFAULT_PRUNE_FRACTION = S.PRUNE_FRACTION


def head_activity(model, tokenizer, texts: Sequence[str], max_length: int = S.MAX_LENGTH, batch_size: int = 32) -> np.ndarray:
    """``(L, H)`` mean L2 norm of each head's context vector over real tokens of ``texts``
    (``forward.run_with_cache``'s per-head contexts ``z``, reduced batch by batch)."""

    def norms(batch) -> dict[str, torch.Tensor]:
        m = batch.attention_mask.float()[:, :, None]  # (B, T, 1)
        per_layer = [(z.float().norm(dim=-1) * m).sum(1) for z in batch.z]  # (B, H) from (B, T, H, D)
        return {"norm_sum": torch.stack(per_layer, dim=1)}  # (B, L, H)

    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("Head activity needs at least one text.")
    cache = run_with_cache(model, tokenizer, texts, max_length=max_length, batch_size=batch_size, want=("z",),
                           reduce=norms)
    return cache.reduced["norm_sum"].astype(np.float64).sum(0) / max(float(cache.lengths.sum()), 1.0)


def choose_lowest(values: np.ndarray, fraction: float) -> np.ndarray:
    """``(L, H)`` bool: the ``fraction`` of heads with the lowest values, at least one head kept per layer."""
    values = np.asarray(values, dtype=float)
    L, H = values.shape
    n = int(round(fraction * L * H))
    out = np.zeros((L, H), dtype=bool)
    for flat in np.argsort(values, axis=None, kind="stable"):
        if out.sum() >= n:
            break
        l, h = np.unravel_index(flat, values.shape)
        if out[l].sum() < H - 1:
            out[l, h] = True
    return out


@torch.no_grad()
def prune_heads_persistent(model, pruned: np.ndarray) -> dict[str, torch.Tensor]:
    """Zero the pruned heads' value rows/bias and output columns in place; returns ``architecture.pruned_slices``."""
    slices = pruned_slices(model, pruned)
    params = dict(model.named_parameters())
    for name, m in slices.items():
        params[name][m] = 0.0
    return slices


def trainable_except(model, frozen: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``trainable_masks`` for ``training.train``: every entry of every parameter except ``frozen`` slices."""
    out = {}
    for name, p in model.named_parameters():
        m = frozen.get(name)
        out[name] = torch.ones_like(p, dtype=torch.bool) if m is None else ~m
    return out


def fineprune(
    model,
    tokenizer,
    clean_texts: Sequence[str],
    clean_labels: Sequence[int],
    config: TrainConfig | None = None,
    *,
    prune_fraction: float = DEFAULT_PRUNE_FRACTION,
    evaluate: Callable | None = None,
    callback: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[TrainResult, np.ndarray]:
    """Prune (in place) then fine-tune; returns (training result, ``(L, H)`` pruned mask)."""
    require_head_repair(model, "Fine-pruning")
    if len(clean_texts) == 0:
        raise ValueError("The clean set is empty: fine-pruning needs clean labelled samples.")
    if not 0.0 <= prune_fraction < 1.0:
        raise ValueError("prune_fraction must be in [0, 1).")
    config = config or default_config()
    with stopping(should_stop):  # Cancel while it reads the heads raises forward.Cancelled: nothing is pruned
        activity = head_activity(model, tokenizer, clean_texts, config.max_length)
    pruned = choose_lowest(activity, prune_fraction)
    slices = prune_heads_persistent(model, pruned)
    masks = trainable_except(model, slices)
    res = finetune(model, tokenizer, clean_texts, clean_labels, config, trainable_masks=masks, evaluate=evaluate,
                   callback=callback, should_stop=should_stop)
    return res, pruned


__all__ = ["fineprune", "head_activity", "choose_lowest", "prune_heads_persistent", "pruned_slices",
           "trainable_except", "head_parameter_masks"]
