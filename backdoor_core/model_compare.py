"""Two models side by side on the same text: a suspect vs a clean reference, before vs after repair, or a model vs
itself with some heads switched off.

The trigger is inserted once (``triggers.insert_trigger``), so both models read exactly the same clean and
triggered texts; its word position is capped so the whole trigger lies inside the tokens BOTH models read, each
with its own tokenizer and reading length (capped with A's alone, a B that splits words finer could lose the
trigger to truncation: B's concentration grid then read 0 and B − A looked like a model that ignores the trigger).
Each model reads at the length it was trained at, as on its own Inspect page, in its own forward pass
(``attention.run_attention``, optionally under ``architecture.head_gates``) with its own
``inspection.InspectResult``. Where the two models have the same ``(layers, heads)`` the difference grids are B minus A:

* ``concentration_delta`` ``(L, H)``: trigger concentration of B minus that of A;
* ``similarity_delta_delta`` ``(L, H)``: B's change in head-to-head similarity (triggered - clean) minus A's.

A repaired model shows negative cells where the repair released the heads that locked onto the trigger.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .architecture import head_gates
from .attention import DEFAULT_MAX_LENGTH, check_text, run_attention
from .inspection import InspectResult, compare_records
from .triggers import insert_trigger, max_position_in_window


@dataclass
class ModelComparison:
    name_a: str
    name_b: str
    a: InspectResult
    b: InspectResult

    @property
    def same_shape(self) -> bool:
        return self.a.concentration.shape == self.b.concentration.shape

    @property
    def concentration_delta(self) -> np.ndarray | None:
        """``(L, H)`` B minus A, or None when the models' head grids differ."""
        return self.b.concentration - self.a.concentration if self.same_shape else None

    @property
    def similarity_delta_delta(self) -> np.ndarray | None:
        """``(L, H)`` B's similarity change minus A's, or None when the models' head grids differ."""
        return self.b.similarity_delta - self.a.similarity_delta if self.same_shape else None

    def to_dict(self, k: int = 5) -> dict:
        def side(name, r: InspectResult) -> dict:
            return {"model": name, "clean": r.prediction("clean"), "triggered": r.prediction("triggered"),
                    "top_heads_by_concentration": r.top_heads(k)}

        cd, sd = self.concentration_delta, self.similarity_delta_delta
        return {"clean_text": self.a.clean.text, "triggered_text": self.a.triggered.text, "trigger": self.a.trigger,
                "a": side(self.name_a, self.a), "b": side(self.name_b, self.b),
                "concentration_delta": None if cd is None else np.round(cd, 5).tolist(),
                "similarity_delta_delta": None if sd is None else np.round(sd, 5).tolist()}


def _label_names(model) -> list[str]:
    id2label = model.config.id2label or {}
    return [str(id2label.get(i, i)) for i in range(int(model.config.num_labels))]


def compare_models(model_a, tokenizer_a, model_b, tokenizer_b, text: str, trigger: str, *,
                   position: int | None = None, seed: int = 0, max_length: int = DEFAULT_MAX_LENGTH,
                   name_a: str = "A", name_b: str = "B", label_names_a: list[str] | None = None,
                   label_names_b: list[str] | None = None, heads_off_b: np.ndarray | None = None,
                   max_length_b: int | None = None) -> ModelComparison:
    """Inspect ``text`` with and without ``trigger`` on both models (see the module docstring).

    Args:
        max_length / max_length_b: the tokens each model reads (B's defaults to A's): each model at the length it
            was trained at (``defender_data.model_max_length``), as its own Inspect page reads it.
        heads_off_b: ``(L, H)`` bool heads gated off in model B (B may be model A itself).
    """
    max_length_b = max_length if max_length_b is None else int(max_length_b)
    check_text(text)
    if not str(trigger).strip():
        raise ValueError("The trigger is empty.")
    ins = insert_trigger(text, trigger, position, rng=seed, tokenizer=tokenizer_a, max_length=max_length)
    if tokenizer_b is not tokenizer_a or max_length_b < max_length:  # B's window too (Inspect's draw unless B
        fits_b = max_position_in_window(tokenizer_b, text, str(trigger).strip(), max_length_b)  # would not read it)
        if ins.position > fits_b:
            ins = insert_trigger(text, trigger, fits_b)
    results = []
    for model, tok, names, gates, length in ((model_a, tokenizer_a, label_names_a, None, max_length),
                                             (model_b, tokenizer_b, label_names_b, heads_off_b, max_length_b)):
        ctx = nullcontext() if gates is None else head_gates(
            model, torch.as_tensor(~np.asarray(gates, dtype=bool), dtype=torch.float32))
        with ctx:
            clean, trig = run_attention(model, tok, [text, ins.text], max_length=length, batch_size=2)
        results.append(compare_records(model, clean, trig, ins, trigger, trig.token_indices(*ins.span),
                                       names or _label_names(model)))
    return ModelComparison(name_a, name_b, results[0], results[1])
