"""Switch heads off and watch: the inspection of a text (clean and triggered) with chosen heads gated off.

Gating is ``architecture.head_gates`` (a head's contribution to its layer's output projection scaled by 0); the
model's weights are not touched and the gate is removed when the call returns. A gated head's own attention map
is unchanged (its queries and keys still run); what changes is everything downstream: later layers' attention
maps and the prediction. Heads are named ``L{layer}H{head}`` (0-based); ``parse_heads`` reads
``"L3H4,L5H0"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .architecture import head_gates
from .attention import DEFAULT_MAX_LENGTH, AttentionRecord, run_attention
from .head_metrics import head_label, mask_labels
from .inspection import InspectResult, compare_records, inspect_text

_LABEL_HELP = "heads are written like L3H4 (layer 3, head 4; 0-based), separated by commas"


def head_pairs(spec: str | Sequence[str]) -> list[tuple[int, int]]:
    """``[(layer, head), ...]`` from ``"L3H4,L5H0"`` (or a list of labels), without a model: the syntax alone
    (``ValueError``, one plain line, for a malformed label or none), so the CLI refuses ``--heads x`` when parsed,
    before a model loads."""
    labels = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not labels:
        raise ValueError(f"No heads given: {_LABEL_HELP}.")
    pairs = []
    for lab in labels:
        s = str(lab).strip().upper()
        parts = s[1:].split("H", 1) if s.startswith("L") else []
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ValueError(f"'{str(lab)[:40]}' is not a head label: {_LABEL_HELP}.")
        pairs.append((int(parts[0]), int(parts[1])))
    return pairs


def parse_heads(spec: str | Sequence[str], num_layers: int, num_heads: int) -> np.ndarray:
    """``(L, H)`` bool mask from ``"L3H4,L5H0"`` (or a list of labels). Raises ``ValueError`` with one plain line
    for a malformed label (``head_pairs``) or a head out of range; an empty spec is an error too."""
    mask = np.zeros((num_layers, num_heads), dtype=bool)
    for layer, head in head_pairs(spec):
        if layer >= num_layers or head >= num_heads:
            raise ValueError(f"{head_label(layer, head)} is out of range: this model has layers L0-L{num_layers - 1} "
                             f"and heads H0-H{num_heads - 1}.")
        mask[layer, head] = True
    return mask


def _gates(mask: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(~np.asarray(mask, dtype=bool), dtype=torch.float32)


def run_with_heads_off(model, tokenizer, texts: Sequence[str], heads_off: np.ndarray,
                       max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 16,
                       with_attentions: bool = True) -> list[AttentionRecord]:
    """``attention.run_attention`` with ``heads_off`` ``(L, H)`` gated off: per text, probabilities (``.probs``)
    and ``(layers, heads, T, T)`` attention maps."""
    with head_gates(model, _gates(heads_off)):
        return run_attention(model, tokenizer, texts, max_length, batch_size, with_attentions)


@dataclass
class AblationResult:
    """The same inspection with all heads (``full``) and with ``heads_off`` gated off (``ablated``)."""

    full: InspectResult
    ablated: InspectResult
    heads_off: np.ndarray  # (L, H) bool

    @property
    def labels(self) -> list[str]:
        return mask_labels(self.heads_off)

    def to_dict(self, k: int = 10) -> dict:
        a = self.ablated
        return {"heads_off": self.labels,
                "clean": a.prediction("clean"), "triggered": a.prediction("triggered"),
                "flip_undone": bool(self.full.triggered.prediction != self.full.clean.prediction
                                    and a.triggered.prediction == a.clean.prediction),
                "top_heads_by_concentration": a.top_heads(k)}


def ablate_result(model, tokenizer, result: InspectResult, heads_off: np.ndarray,
                  max_length: int = DEFAULT_MAX_LENGTH) -> AblationResult:
    """Re-run an inspection's two texts (clean, triggered or paraphrased) with ``heads_off`` ``(L, H)`` gated off;
    the trigger tokens are the same indices as in ``result``."""
    clean, trig = run_with_heads_off(model, tokenizer, [result.clean.text, result.triggered.text], heads_off,
                                     max_length, batch_size=2)
    ablated = compare_records(model, clean, trig, result.insertion, result.trigger, result.trigger_tokens,
                              result.label_names)
    return AblationResult(result, ablated, np.asarray(heads_off, dtype=bool))


def inspect_ablated(model, tokenizer, text: str, trigger: str, heads_off: np.ndarray, position: int | None = None,
                    seed: int = 0, max_length: int = DEFAULT_MAX_LENGTH, label_names: list[str] | None = None,
                    full: InspectResult | None = None) -> AblationResult:
    """``inspection.inspect_text`` twice: as is (or ``full`` when already computed) and with ``heads_off``
    ``(L, H)`` bool gated off, on the same clean and triggered texts."""
    if full is None:
        full = inspect_text(model, tokenizer, text, trigger, position, seed, max_length, label_names)
    return ablate_result(model, tokenizer, full, heads_off, max_length)
