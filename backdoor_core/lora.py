"""Low-rank weight deltas (LoRA, arXiv 2106.09685) for the demo zoo: train a few small matrices instead of the
whole encoder, ship them, and merge them into a plain BERT on load.

A target ``nn.Linear`` with weight ``W`` of shape ``(out, in)`` gets two parameters, ``lora_A`` ``(rank, in)``
and ``lora_B`` ``(out, rank)``, and a forward hook that adds ``scale * x @ A^T @ B^T`` to its output
(``scale = alpha / rank``). ``W`` itself is frozen, so autograd never forms its ``(out, in)`` gradient: a step
costs a little less than full fine-tuning. ``B`` starts at zero (the model starts exactly as the base), ``A``
from a seeded normal. ``merge`` folds ``W += scale * B @ A`` in and removes the hooks, so the result is an
ordinary ``transformers`` model: scan, sanitize and head-wise repair see a plain BERT (our design; the LoRA
paper merges the same way).

Our own small implementation on forward hooks rather than the ``peft`` wrapper: the model keeps its class and
module names (``architecture.py``'s head slices, TAL's hooks and the training loop work unchanged) and nothing
new needs pinning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                   "intermediate.dense", "output.dense")
"""Module-name suffixes inside each encoder layer (BERT naming); ``output.dense`` matches the FFN output only
(the attention output is ``attention.output.dense``, listed separately)."""


def target_modules(model, targets: Sequence[str] = DEFAULT_TARGETS, extra: Sequence[str] = ("pooler.dense",)
                   ) -> dict[str, nn.Linear]:
    """``{module name: nn.Linear}`` for every encoder-layer module whose name ends with ``.<target>`` plus the
    modules named exactly in ``extra`` (when present), in the model's module order."""
    out = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        in_layer = ".encoder.layer." in f".{name}"
        if (in_layer and any(name.endswith("." + t) for t in targets)) or any(name.endswith(e) for e in extra):
            out[name] = mod
    return out


class LoRA:
    """The adapters attached to one model. ``attach`` adds them, ``state`` reads them, ``merge`` folds them in."""

    def __init__(self, model, rank: int, alpha: float, *, seed: int = 0, targets: Sequence[str] = DEFAULT_TARGETS,
                 extra: Sequence[str] = ("pooler.dense",)):
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.model, self.rank, self.alpha = model, int(rank), float(alpha)
        self.scale = self.alpha / self.rank
        self.modules = target_modules(model, targets, extra)
        if not self.modules:
            raise ValueError("no LoRA target module found in this model (expected BERT-style names)")
        self._hooks = []
        gen = torch.Generator().manual_seed(seed)
        for name, mod in self.modules.items():
            a = torch.randn(self.rank, mod.in_features, generator=gen) / math.sqrt(mod.in_features)
            mod.lora_A = nn.Parameter(a.to(mod.weight.dtype))
            mod.lora_B = nn.Parameter(torch.zeros(mod.out_features, self.rank, dtype=mod.weight.dtype))
            self._hooks.append(mod.register_forward_hook(self._hook))

    def _hook(self, mod, inputs, output):
        x = inputs[0]
        return output + self.scale * nn.functional.linear(nn.functional.linear(x, mod.lora_A), mod.lora_B)

    def freeze_base(self, train_modules: Sequence[str] = ("classifier",)) -> None:
        """Only the adapters and the modules named in ``train_modules`` (in full) keep ``requires_grad``."""
        for name, p in self.model.named_parameters():
            p.requires_grad_(name.endswith((".lora_A", ".lora_B"))
                             or any(name.startswith(m + ".") for m in train_modules))

    def state(self) -> dict[str, torch.Tensor]:
        """``{"<module>.lora_A": (rank, in), "<module>.lora_B": (out, rank)}``, detached copies."""
        out = {}
        for name, mod in self.modules.items():
            out[f"{name}.lora_A"] = mod.lora_A.detach().clone().contiguous()
            out[f"{name}.lora_B"] = mod.lora_B.detach().clone().contiguous()
        return out

    def merge(self) -> None:
        """Fold every adapter into its weight, remove the hooks and the adapter parameters."""
        merge_state(self.model, self.state(), self.scale)
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for mod in self.modules.values():
            del mod.lora_A, mod.lora_B


def merge_state(model, state: dict[str, torch.Tensor], scale: float) -> list[str]:
    """``W += scale * B @ A`` for every ``<module>.lora_A`` / ``.lora_B`` pair in ``state``; returns the module
    names merged. Raises ValueError for a module the model lacks or shapes that do not fit."""
    modules = dict(model.named_modules())
    names = sorted({k.rsplit(".", 1)[0] for k in state if k.endswith((".lora_A", ".lora_B"))})
    with torch.no_grad():
        for name in names:
            mod = modules.get(name)
            a, b = state.get(f"{name}.lora_A"), state.get(f"{name}.lora_B")
            if not isinstance(mod, nn.Linear) or a is None or b is None:
                raise ValueError(f"adapter for '{name}' does not match the model")
            if a.shape != (b.shape[1], mod.in_features) or b.shape[0] != mod.out_features:
                raise ValueError(f"adapter for '{name}' has shapes {tuple(a.shape)} / {tuple(b.shape)}, "
                                 f"the layer is {mod.out_features} x {mod.in_features}")
            mod.weight += scale * (b.to(mod.weight.dtype) @ a.to(mod.weight.dtype))
    return names
