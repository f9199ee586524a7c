"""What a repair did to the trigger's hold on the heads: the same measures on the model before and after.

Our design; paper silent on how to show a repair. The heads' similarity on triggered inputs alone does not show
it: attention safety alignment pulls the repaired heads toward their layer's safe heads on every input, so that
similarity RISES after a repair that works (BBC demo zoo, ``sanitize`` defaults: 0.40 → 0.74 on AddSent's
repaired heads as ASR fell 100% → 3.5%; ``bench/results/repair_effect.md``). What falls is the trigger's effect:
the attention the repaired heads put on the trigger's tokens (AddSent 0.17 → 0.09, BadNets + TAL 0.65 → 0.32)
and, where the trigger made the heads alike (the signal of arXiv 2511.13789; BadNets + TAL), the similarity
lift (0.36 → 0.07). AddSent's trigger barely moves the similarity (lift −0.00 before), so both are shown.

Per model, on ``n`` non-target test texts and the same texts with the model card's trigger
(``PoisonedTestSet.source_rows`` pairs them; a paraphrase trigger's texts are paired with the sample's
non-target clean texts instead, as its rows come from another set):

* ``lift``: ``(L, H)`` each head's mean similarity to the other heads of its layer (``AttentionStats.head_sim``,
  content keys only) on the triggered texts minus on the clean texts: positive where the trigger pulls the head
  into its layer's common pattern.
* ``concentration``: ``(L, H)`` share of attention that queries send to the trigger's tokens on the triggered
  texts (``head_metrics.trigger_concentration``, the Trojan Attention Loss's target); None for paraphrase
  triggers, which have no trigger tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .architecture import is_causal, layer_windows
from .detection import attention_stats
from .forward import Cancelled
from .head_metrics import heads_to_mask, trigger_concentration
from .training import trigger_token_mask

SAMPLE_SIZE = 60  # clean test texts drawn; their non-target rows (at most ``TEXTS``) carry the trigger
TEXTS = 40
SEED = 5


@dataclass
class TriggerEffect:
    """One model's response to the trigger. ``lift`` ``(L, H)``; ``concentration`` ``(L, H)`` or None."""

    lift: np.ndarray
    concentration: np.ndarray | None


@dataclass
class RepairEffect:
    """The trigger's effect before and after a repair, and which heads the repair changed (``mask`` ``(L, H)``)."""

    before: TriggerEffect
    after: TriggerEffect
    mask: np.ndarray
    n: int

    @classmethod
    def of(cls, before: TriggerEffect | None, after: TriggerEffect | None, heads: Sequence[str],
           n: int) -> "RepairEffect | None":
        """From the two models' ``trigger_effect`` on the same ``n`` texts and the changed heads' labels (None when
        either is missing)."""
        if before is None or after is None:
            return None
        L, H = before.lift.shape
        return cls(before, after, heads_to_mask(list(heads), L, H), int(n))

    def to_dict(self) -> dict:
        """JSON-ready means (the ``summary`` numbers) for a CLI summary or a report."""
        which = self.mask if self.mask.any() else np.ones_like(self.mask)
        out = {"n": self.n, "heads": int(self.mask.sum()),
               "lift": [float(self.before.lift[which].mean()), float(self.after.lift[which].mean())]}
        if self.before.concentration is not None and self.after.concentration is not None:
            out["concentration"] = [float(self.before.concentration[which].mean()),
                                    float(self.after.concentration[which].mean())]
        return out

    def summary(self) -> list[str]:
        """Plain sentences: the repaired heads' (else every head's) mean lift and concentration, before → after."""
        which = self.mask if self.mask.any() else np.ones_like(self.mask)
        whose = (f"the {int(which.sum())} repaired heads" if self.mask.any() else "all heads")
        lines = [f"On {whose}, the trigger changed the similarity to their layer's other heads by "
                 f"{_signed(self.before.lift[which].mean())} before the repair and "
                 f"{_signed(self.after.lift[which].mean())} after (mean over {self.n} texts)."]
        if self.mask.any() and (~self.mask).any():
            lines.append(f"The other heads: {_signed(self.before.lift[~self.mask].mean())} before, "
                         f"{_signed(self.after.lift[~self.mask].mean())} after.")
        if self.before.concentration is not None and self.after.concentration is not None:
            conc = self.before.concentration[which].mean(), self.after.concentration[which].mean()
            lines.append(f"Attention {whose} put on the trigger's tokens: {conc[0]:.0%} before, {conc[1]:.0%} after.")
        return lines


def _signed(value: float) -> str:
    """``+0.12`` / ``-0.05``, and ``0.00`` without a sign where it rounds to zero (it printed ``-0.00``)."""
    text = f"{float(value):+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text


def trigger_effect(model, tokenizer, triggered, clean_texts: Sequence[str], max_length: int,
                   should_stop=None) -> TriggerEffect:
    """``TriggerEffect`` of ``model`` on ``triggered`` (``Example``s with their ``trigger_spans``) against
    ``clean_texts`` (the same texts without the trigger where the attack inserts one). ``should_stop()`` raises
    ``forward.Cancelled`` between batches."""
    texts = [ex.text for ex in triggered]
    tokens = any(ex.trigger_spans for ex in triggered)  # word / sentence triggers: keep the maps of the same pass
    trig = attention_stats(model, tokenizer, texts, max_length, cls=False, should_stop=should_stop,
                           keep=("attentions", "offsets") if tokens else ())
    clean = attention_stats(model, tokenizer, list(clean_texts), max_length, cls=False, should_stop=should_stop)
    lift = trig.head_sim.mean(0) - clean.head_sim.mean(0)
    concentration = None
    if tokens:
        cache = trig.forward
        causal, windows = is_causal(model), layer_windows(model)
        per_text = []
        for att, off, ex in zip(cache.attentions, cache.offsets, triggered):
            tm = trigger_token_mask(torch.as_tensor(off)[None], [ex.trigger_spans])[0]
            if tm.any():  # a trigger cut off by truncation has nothing to attend to
                per_text.append(trigger_concentration(att, tm.numpy(), causal=causal, window=windows))
        if per_text:
            concentration = np.mean(per_text, 0)
    return TriggerEffect(lift=lift, concentration=concentration)


def try_trigger_effect(model, tokenizer, pairs, max_length: int, should_stop=None) -> TriggerEffect | None:
    """``trigger_effect`` on ``pairs`` (``triggered_pairs``), or None when there are no pairs or the measure fails
    on this model: a view must never cost the user the repair it shows (the CLI and the app's job measure before
    the repair and after it, before saving). Cancellation (``forward.Cancelled``) still propagates."""
    if not pairs:
        return None
    try:
        return trigger_effect(model, tokenizer, *pairs, max_length, should_stop=should_stop)
    except Cancelled:
        raise
    except Exception:  # noqa: BLE001 - e.g. an architecture whose attention this measure cannot read
        return None


def triggered_pairs(attack, test_ds, target: int, n: int = TEXTS, seed: int = SEED):
    """``(triggered examples, clean texts)``: up to ``n`` non-target rows of a ``SAMPLE_SIZE`` draw of ``test_ds``
    with ``attack``'s trigger, and their clean counterparts (see the module docstring). Raises ``ValueError`` when
    the draw has no non-target row."""
    sample = test_ds.sample(min(SAMPLE_SIZE, len(test_ds)), seed=seed)
    poisoned = attack.poison_test(sample, target, 0)
    triggered = list(poisoned.examples)[:n]
    if attack.has_trigger_tokens:
        clean = [sample.texts[i] for i in poisoned.source_rows[:n]]
    else:
        clean = [t for t, y in zip(sample.texts, sample.labels) if y != target][:n]
    if not triggered or not clean:
        raise ValueError("The test set has no non-target texts to put the trigger in.")
    return triggered, clean


def card_pairs(loaded, test_ds, max_length: int, n: int = TEXTS, seed: int = SEED):
    """``triggered_pairs`` with the attack and target that ``loaded``'s model card records (``models.LoadedModel``;
    ``defender_data.model_attack``), or None when the card names no attack this machine can rebuild."""
    from .defender_data import model_attack

    attack = model_attack(loaded.card, loaded.tokenizer, max_length)
    if attack is None:
        return None
    return triggered_pairs(attack, test_ds, loaded.card.target_for(test_ds.label_names), n, seed)


def repair_effect(suspect, repaired, attack, test_ds, target: int, max_length: int,
                  heads: Sequence[str] = (), n: int = TEXTS, seed: int = SEED) -> RepairEffect:
    """The trigger's effect on ``suspect`` and ``repaired`` (``models.LoadedModel``s of one architecture) on the
    same texts; ``heads`` (``L{layer}H{head}`` labels) are the heads the repair changed."""
    triggered, clean = triggered_pairs(attack, test_ds, target, n, seed)
    before = trigger_effect(suspect.model, suspect.tokenizer, triggered, clean, max_length)
    after = trigger_effect(repaired.model, repaired.tokenizer, triggered, clean, max_length)
    return RepairEffect.of(before, after, heads, len(triggered))
