"""Inspect one text: the prediction with and without a trigger, and what the trigger does to the heads.

This is the computation behind ``python -m backdoor_core inspect`` and the app's Inspect page. One forward
pass over the pair (clean, triggered) returns both attention stacks; then

* ``concentration``: ``(layers, heads)`` trigger concentration on the triggered text (see ``head_metrics``; on a
  decoder classifier, averaged over the queries at or after the trigger);
* ``similarity_clean`` / ``similarity_triggered``: ``(layers, heads, heads)`` head-to-head similarity;
* ``similarity_delta``: ``(layers, heads)`` change in each head's mean similarity to the other heads of its
  layer (triggered minus clean) — positive when the trigger pulls the head into the same pattern as others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .settings import FLIP_MARGIN
from .architecture import describe, is_causal, layer_windows
from .attention import DEFAULT_MAX_LENGTH, AttentionRecord, check_text, run_attention
from .head_metrics import head_label, head_similarity, mean_offdiag, trigger_concentration
from .triggers import Insertion, insert_trigger


@dataclass
class InspectResult:
    clean: AttentionRecord
    triggered: AttentionRecord
    insertion: Insertion
    trigger: str
    trigger_tokens: list[int]  # indices into triggered.tokens
    label_names: list[str]
    concentration: np.ndarray  # (layers, heads)
    similarity_clean: np.ndarray  # (layers, heads, heads)
    similarity_triggered: np.ndarray  # (layers, heads, heads)
    architecture: dict | None = None  # architecture.describe(model).to_dict(): layer kinds, decoder notes

    @property
    def similarity_delta(self) -> np.ndarray:
        """``(layers, heads)``: triggered minus clean mean similarity of each head to its layer's others."""
        return mean_offdiag(self.similarity_triggered, per_head=True) - mean_offdiag(
            self.similarity_clean, per_head=True
        )

    @property
    def layer_similarity(self) -> dict[str, np.ndarray]:
        """Per-layer mean off-diagonal similarity ``(layers,)`` for clean, triggered and their difference."""
        c, t = mean_offdiag(self.similarity_clean), mean_offdiag(self.similarity_triggered)
        return {"clean": c, "triggered": t, "delta": t - c}

    def prediction(self, which: str) -> dict:
        rec = self.clean if which == "clean" else self.triggered
        p = rec.probs
        return {
            "label": self.label_names[rec.prediction],
            "label_id": rec.prediction,
            "probs": {n: float(v) for n, v in zip(self.label_names, p)},
        }

    def flip(self, untrained_head: bool = False) -> dict:
        """Did the trigger flip the prediction? ``{"status", "message"}`` with status one of

        * ``"flipped"``: the top class changed and both predictions are clear (top class ahead of the runner-up
          by >= ``settings.FLIP_MARGIN``);
        * ``"same"``: the top class did not change;
        * ``"unclear"``: the top class changed but one side is a near-tie (e.g. every class at 20%), or the
          model's classification head is untrained (its predictions are random): not a flip worth announcing.
        """
        c, t = self.clean, self.triggered
        if untrained_head:
            return {"status": "unclear", "message": "This model's classification head is untrained: its "
                    "predictions are random, so a change of top class means nothing. Pick a trained model."}
        if c.prediction == t.prediction:
            return {"status": "same", "message": "Same prediction with and without the trigger."}

        def margin(probs) -> float:
            top = np.sort(np.asarray(probs, dtype=float))[::-1]
            return float(top[0] - top[1]) if top.size > 1 else 1.0

        if min(margin(c.probs), margin(t.probs)) < FLIP_MARGIN:
            return {"status": "unclear", "message": "The top class changed, but between near-equal probabilities "
                    f"(less than {FLIP_MARGIN:.0%} apart): not a clear flip."}
        return {"status": "flipped", "message": "The trigger **flipped** the prediction."}

    def top_heads(self, k: int = 10) -> list[dict]:
        """Rows for a table: the heads with highest trigger concentration, with their similarity change."""
        delta = self.similarity_delta
        conc = self.concentration
        order = np.argsort(conc, axis=None)[::-1][:k]
        rows = []
        for flat in order:
            layer, head = (int(v) for v in np.unravel_index(flat, conc.shape))
            rows.append(
                {
                    "head": head_label(layer, head),
                    "layer": layer,
                    "index": head,
                    "concentration": float(conc[layer, head]),
                    "similarity_delta": float(delta[layer, head]),
                }
            )
        return rows

    def top_similarity_heads(self, k: int = 10) -> list[dict]:
        """Rows for the heads whose mean similarity to the others rose most with the trigger."""
        delta = self.similarity_delta
        order = np.argsort(delta, axis=None)[::-1][:k]
        rows = []
        for flat in order:
            layer, head = (int(v) for v in np.unravel_index(flat, delta.shape))
            rows.append(
                {
                    "head": head_label(layer, head),
                    "similarity_delta": float(delta[layer, head]),
                    "concentration": float(self.concentration[layer, head]),
                }
            )
        return rows

    def to_dict(self, k: int = 10) -> dict:
        """JSON-ready summary (no attention tensors)."""
        return {
            "clean_text": self.clean.text,
            "triggered_text": self.triggered.text,
            "trigger": self.trigger,
            "trigger_span": list(self.insertion.span),
            "trigger_position": self.insertion.position,
            "trigger_tokens": [self.triggered.tokens[i] for i in self.trigger_tokens],
            "truncated": bool(self.clean.truncated or self.triggered.truncated),
            "clean": self.prediction("clean"),
            "triggered": self.prediction("triggered"),
            "top_heads_by_concentration": self.top_heads(k),
            "top_heads_by_similarity_change": self.top_similarity_heads(k),
            "layer_similarity": {key: [float(x) for x in v] for key, v in self.layer_similarity.items()},
            "architecture": self.architecture,
        }


def inspect_text(
    model,
    tokenizer,
    text: str,
    trigger: str,
    position: int | None = None,
    seed: int = 0,
    max_length: int = DEFAULT_MAX_LENGTH,
    label_names: list[str] | None = None,
) -> InspectResult:
    """Insert ``trigger`` into ``text`` at word ``position`` (random with ``seed`` if None) and compare."""
    check_text(text)
    ins = insert_trigger(text, trigger, position, rng=seed, tokenizer=tokenizer, max_length=max_length)
    clean, triggered = run_attention(model, tokenizer, [text, ins.text], max_length=max_length, batch_size=2)
    return compare_records(model, clean, triggered, ins, trigger, triggered.token_indices(*ins.span), label_names)


def compare_records(
    model,
    clean: AttentionRecord,
    triggered: AttentionRecord,
    insertion: Insertion,
    trigger: str,
    trigger_tokens: list[int],
    label_names: list[str] | None = None,
) -> InspectResult:
    """Assemble an ``InspectResult`` from two forward passes (shared by word/sentence and paraphrase triggers).

    Args:
        trigger_tokens: indices into ``triggered.tokens`` that count as the trigger.
    """
    if label_names is None:
        id2label = model.config.id2label or {}
        label_names = [str(id2label.get(i, i)) for i in range(int(model.config.num_labels))]
    return InspectResult(
        clean=clean,
        triggered=triggered,
        insertion=insertion,
        trigger=trigger,
        trigger_tokens=list(trigger_tokens),
        label_names=label_names,
        concentration=trigger_concentration(triggered.attentions, trigger_tokens, causal=is_causal(model),
                                            window=layer_windows(model)),  # a local layer: queries that see it
        similarity_clean=head_similarity(clean.attentions),
        similarity_triggered=head_similarity(triggered.attentions),
        architecture=describe(model).to_dict(),
    )
