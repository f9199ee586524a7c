"""Attention safety alignment + head-wise fine-tuning: repair the suspicious heads, leave everything else alone.

Loss (the paper, arXiv 2511.13789, names the idea; the formula below is our design; paper silent):

    L = CE(clean labelled inputs) + beta * ALIGN
    ALIGN = mean over (inputs in the batch, suspicious heads s, real query rows q) of
            KL( stopgrad(mean over safe heads f of the same layer of A_f[q, :])  ||  A_s[q, :] )

* KL, not MSE: each attention row is a probability distribution, and KL(target || head) is the cross-entropy of
  the head's row against the safe heads' average row, which stays informative when the head has collapsed onto
  one key (MSE on rows that sum to 1 is tiny and slow to move). ``kind="mse"`` is kept as a knob.
* The target is detached (a stop-gradient): the safe heads are not pulled toward the suspicious ones (and they
  do not train anyway).
* ALIGN is computed on every input of a batch — the defender's clean inputs (labelled) and the flagged pool
  inputs (added with label ``-100`` — no cross-entropy, their labels are unknown — unless one of the
  pseudo-label rules below gives them one).

Head-wise fine-tuning: ``training.train(trainable_masks=head_parameter_masks(model, suspicious))`` — only the
suspicious heads' query/key/value rows and biases and their output-projection columns change; every other entry
(including the rest of those tensors, which AdamW's weight decay would move) is restored after each step, and
``frozen_slices_unchanged`` checks it byte for byte.

Reset (our design; paper silent): before fine-tuning, the suspicious heads' output-projection columns are zeroed
(``reset=True``), so they restart from "contributes nothing" and re-learn their clean job under the alignment
constraint. Measured on a BadNets MiniLM/SST-2 pilot (ASR 99.5%, 18 suspicious heads, 300 clean + the pool's
flagged inputs, 3 epochs): alignment alone (beta 5, 57 heads, lr 3e-4) left ASR at 75%; with the reset ASR fell
to 39-47% at unchanged CACC. Merely ablating the top 15 heads gives 18% — the rest of that backdoor sits outside
the heads (the trigger word's own representation), which head-wise repair cannot reach.

Safe-head pseudo-labels (our design; paper silent; ``pseudo_labels=True``): a flagged input whose prediction
changes when the suspicious heads are switched off (``head_gates``) gets the safe heads' prediction as its
cross-entropy label; the others stay alignment-only. On the same BadNets pilot benchmark this took ASR from 47%
(alignment + reset) to 22.5% at +3 points CACC (bench/results/defense.md).

Focus-removal pseudo-labels (our design; paper silent; ``focus_labels=True``): a flagged input that the gate
test leaves unlabelled gets the prediction the model makes after its 1, 2, 3 or 5 most-focused tokens — the keys
the suspicious heads attend to most — are dropped, when that changes the prediction (``focus_removal_labels``).
The captured heads point at the trigger, so no trigger knowledge is needed. Pilot on the SST-2 attack-benchmark
models (200 clean + the scan's flagged pool inputs, 3 epochs, max length 64), ASR / CACC after, without -> with
focus labels: BadNets 1% + TAL 41.0% -> 0.0% (CACC 88.0 -> 86.7); AddSent 3% 100% -> 5.5% (90.0 -> 89.3);
BadNets 3% 19.0% -> 12.5% (88.3 -> 89.0). The gate test alone labelled 5, 0 and 5 flagged inputs; with focus
labels 56 of 67, 27 of 37 and 12 of 18.

Learning rate 1e-3 (was 5e-4), with focus labels, same pilot, ASR / CACC after: BadNets 3% 12.5% -> 9.0% (89.0 ->
88.3), BadNets 1% + TAL 0.0% -> 0.0% (86.7 -> 87.7), AddSent 3% 5.5% -> 3.0% (89.3 -> 89.3), syntactic 38.5% ->
26.5% (86.0 -> 85.0), Bible style 77.0% -> 65.5% (83.3 -> 83.3). Caveat: chosen on the benchmark's own models
(there is no separate validation zoo), so the benchmark numbers are optimistic for this knob.

Target-exclusion labels (our design; paper silent; ``exclude_labels=True``): a flagged input still without a
label after both tests, that the model puts in the *suspected target* (the class it predicts most often on the
flagged inputs), gets its runner-up class (``target_exclusion_labels``; skipped when the flagged predictions are
no more concentrated on that class than the clean ones, as for a clean model). Measured with the scan's second
pass (``scan.refine``) on the attack-benchmark models, ASR / CACC change (CACC on 1000 clean test sentences where
marked *), without -> with: syntactic 26.5% -> 10.0% (+2.7 -> +1.6*), BadNets 3% 2.5% -> 2.0%, AddSent 3%
3.0% -> 1.0%, Bible style 69.5% -> 57.5%, BadNets 1% + TAL 0.0% -> 0.0% (-0.9* -> -2.1* seed 0, -0.2* seed 1).

Defaults (our choice by measurement, see bench/results/defense.md): ``beta = 5``, lr ``1e-3`` (only a few heads
train, from a reset), 3 epochs, batch 32, max length 128; defender data budget ``DEFAULT_CLEAN_BUDGET`` = 300 clean
labelled samples and up to ``DEFAULT_POOL_BUDGET`` = 200 flagged inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .architecture import (attention_dropout_off, content_key_mask, head_parameter_masks, require_head_repair,
                           zero_output_columns)
from .head_metrics import head_label
from .training import IGNORE_LABEL, Example, Progress, TrainConfig, train

DEFAULT_BETA = 5.0
DEFAULT_RESET = True
DEFAULT_PSEUDO_LABELS = True
DEFAULT_FOCUS_LABELS = True
DEFAULT_EXCLUDE_LABELS = True
EXCLUDE_MIN_EXCESS = 0.25
"""How many points more often the flagged inputs must go to the suspected target than clean inputs do before
``target_exclusion_labels`` relabels anything. Measured on the attack benchmark's SST-2 models (scan with the
second pass; share of flagged inputs predicted as the suspected target minus the share of clean inputs): three
clean models 0.10 / 0.11 / 0.18 and an ineffective BadNets 0.5% model 0.17; effective backdoors BadNets 3% 0.42,
BadNets 1% + TAL 0.36, AddSent 3% 0.44, syntactic 0.38; Bible style -0.02 (its flags are mostly clean inputs)."""
FOCUS_DROP_COUNTS = (1, 2, 3, 5)
DEFAULT_CLEAN_BUDGET = 300
DEFAULT_POOL_BUDGET = 200
ALIGN_KINDS = ("kl", "mse")


def default_config(**overrides) -> TrainConfig:
    """The sanitization training settings (see the module docstring); ``overrides`` replace fields."""
    base = dict(lr=1e-3, epochs=3, batch_size=32, max_length=128, seed=0, weight_decay=0.01, warmup_ratio=0.06,
                grad_clip=1.0, eval_every=20)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


class AlignmentLoss:
    """``extra_loss`` for ``training.train``: ``{"align": beta * ALIGN}`` (see the module docstring).

    Args:
        suspicious: ``(layers, heads)`` bool. Every layer with a suspicious head needs at least one safe head.
        beta: weight of the term.
        kind: ``"kl"`` (default) or ``"mse"``.
    """

    needs_attentions = True

    def __init__(self, suspicious: np.ndarray, beta: float = DEFAULT_BETA, kind: str = "kl"):
        suspicious = np.asarray(suspicious, dtype=bool)
        if suspicious.ndim != 2:
            raise ValueError("suspicious must be a (layers, heads) boolean array.")
        if not suspicious.any():
            raise ValueError("No suspicious heads: there is nothing to align.")
        if kind not in ALIGN_KINDS:
            raise ValueError(f"kind must be one of {', '.join(ALIGN_KINDS)}, got '{kind}'.")
        self.suspicious = suspicious
        self.beta = float(beta)
        self.kind = kind
        self.layers: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for l, row in enumerate(suspicious):
            if not row.any():
                continue
            if row.all():
                raise ValueError(f"Every head of layer {l} is suspicious: keep at least one safe head per layer "
                                 "as the alignment target.")
            self.layers.append((l, torch.as_tensor(np.flatnonzero(row)), torch.as_tensor(np.flatnonzero(~row))))

    def raw(self, attentions: Sequence[torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
        """The unweighted ALIGN term for a batch (a scalar tensor)."""
        qmask = attention_mask.to(attentions[0].device).float()  # (B, T)
        denom = qmask.sum().clamp_min(1.0)
        total, n = attentions[0].new_zeros(()).float(), 0
        for layer, susp, safe in self.layers:
            att = attentions[layer].float()  # (B, H, T, T)
            target = att[:, safe.to(att.device)].mean(1, keepdim=True).detach()  # (B, 1, T, T)
            heads = att[:, susp.to(att.device)]  # (B, S, T, T)
            if self.kind == "kl":
                per_row = (torch.xlogy(target, target) - target * torch.log(heads.clamp_min(1e-8))).sum(-1)
            else:
                per_row = ((heads - target) ** 2).sum(-1)
            total = total + (per_row * qmask[:, None, :]).sum() / denom
            n += heads.shape[1]
        return total / max(n, 1)

    def __call__(self, batch: dict, outputs) -> dict[str, torch.Tensor]:
        if not outputs.attentions or outputs.attentions[0] is None:
            raise RuntimeError("Alignment needs attention maps: load the model with attn_implementation='eager'.")
        return {"align": self.beta * self.raw(outputs.attentions, batch["attention_mask"])}

    def describe(self) -> dict:
        labels = [head_label(int(l), int(h)) for l, h in zip(*np.nonzero(self.suspicious))]
        return {"beta": self.beta, "kind": self.kind, "suspicious_heads": labels}


@torch.no_grad()
def alignment_value(model, tokenizer, texts: Sequence[str], suspicious: np.ndarray, kind: str = "kl",
                    max_length: int = 128, batch_size: int = 32) -> float:
    """Mean unweighted ALIGN over ``texts`` (for before/after reports and tests)."""
    loss = AlignmentLoss(suspicious, 1.0, kind)
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    vals, weights = [], []
    try:
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i:i + batch_size])
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            out = model(**enc, output_attentions=True)
            vals.append(float(loss.raw(out.attentions, enc["attention_mask"])))
            weights.append(float(enc["attention_mask"].sum()))
    finally:
        model.train(was)
    return float(np.average(vals, weights=weights)) if vals else float("nan")


def reset_output_columns(model, heads: np.ndarray) -> None:
    """Zero the output-projection columns of ``heads`` in place: they stop contributing until retrained
    (``architecture.zero_output_columns``)."""
    zero_output_columns(model, heads)


def snapshot_frozen(model, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of every parameter entry that must NOT change (for ``frozen_slices_unchanged``)."""
    snap = {}
    for name, p in model.named_parameters():
        m = masks.get(name)
        snap[name] = p.detach()[~m].clone() if m is not None else p.detach().clone()
    return snap


def frozen_slices_unchanged(model, masks: dict[str, torch.Tensor], snapshot: dict[str, torch.Tensor]) -> bool:
    """True when every entry outside ``masks`` is byte-identical to ``snapshot``."""
    for name, p in model.named_parameters():
        m = masks.get(name)
        now = p.detach()[~m] if m is not None else p.detach()
        if not torch.equal(now, snapshot[name]):
            return False
    return True


def build_examples(clean_texts: Sequence[str], clean_labels: Sequence[int],
                   pool_texts: Sequence[str] | None = None,
                   pool_labels: Sequence[int] | None = None) -> list[Example]:
    """Clean labelled examples plus pool examples (label ``-100`` = alignment only, unless ``pool_labels``)."""
    ex = [Example(str(t), int(y)) for t, y in zip(clean_texts, clean_labels)]
    pool_texts = list(pool_texts or [])
    labels = list(pool_labels) if pool_labels is not None else [IGNORE_LABEL] * len(pool_texts)
    ex += [Example(str(t), int(y)) for t, y in zip(pool_texts, labels)]
    return ex


def safe_head_labels(model, tokenizer, texts: Sequence[str], suspicious: np.ndarray,
                     max_length: int = 128, full_probs: np.ndarray | None = None) -> list[int]:
    """Pseudo-labels for flagged inputs (our design; paper silent): where switching the suspicious heads off
    (``architecture.head_gates``) changes the model's prediction, the safe heads' prediction; else ``-100``
    (no cross-entropy, alignment only). Needs no trigger and no true label: it asks the model itself what it
    decides without the heads the trigger captured."""
    from .architecture import head_gates
    from .attention import predict

    texts = [str(t) for t in texts]
    if full_probs is None:  # ``(N, C)`` the whole model's probabilities on ``texts``, when already at hand
        full_probs = predict(model, tokenizer, texts, max_length)
    full = np.asarray(full_probs).argmax(1)
    with head_gates(model, torch.as_tensor(~np.asarray(suspicious, dtype=bool), dtype=torch.float32)):
        safe = predict(model, tokenizer, texts, max_length).argmax(1)
    return [int(s) if s != f else IGNORE_LABEL for s, f in zip(safe, full)]


@torch.no_grad()
def focus_removal_labels(model, tokenizer, texts: Sequence[str], suspicious: np.ndarray, max_length: int = 128,
                         drop_counts: Sequence[int] = FOCUS_DROP_COUNTS) -> list[int]:
    """Pseudo-labels from the suspicious heads' focus (our design; paper silent; ``focus_labels=True``).

    For each text: score every key token by the attention the suspicious heads send it (mean over real queries,
    summed over the suspicious heads; ``[CLS]``/``[SEP]`` excluded) — on a triggered input that is where a
    captured head looks, i.e. the trigger. Drop the top ``k`` tokens for ``k`` in ``drop_counts`` in turn and
    re-predict; the first ``k`` that changes the prediction gives its new prediction as the label, else ``-100``.
    No trigger is known: the heads point at it. Shapes: ``attentions[l]`` ``(1, heads, T, T)``; scores ``(T,)``.
    """
    suspicious = np.asarray(suspicious, dtype=bool)
    layers = [(l, torch.as_tensor(np.flatnonzero(row))) for l, row in enumerate(suspicious) if row.any()]
    device = next(model.parameters()).device
    special = set(tokenizer.all_special_ids)
    was = model.training
    model.eval()
    labels: list[int] = []
    try:
        for text in texts:
            enc = tokenizer(str(text), truncation=True, max_length=max_length, return_tensors="pt")
            ids = enc["input_ids"][0].to(device)
            out = model(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None], output_attentions=True)
            full = int(out.logits.argmax(-1))
            score = torch.zeros(len(ids), device=device)
            for l, heads in layers:
                score += out.attentions[l][0, heads.to(device)].float().mean(1).sum(0)  # (T,)
            content = torch.tensor([int(t) not in special for t in ids.tolist()], device=device)
            content = content_key_mask(model, content[None].float())[0].bool()  # decoders: not the sink at 0
            score = score.masked_fill(~content, float("-inf"))
            order = torch.argsort(score, descending=True)[: int(content.sum())]
            variants = []
            for k in drop_counts:
                if k >= len(order):  # never drop every content token
                    break
                keep = torch.ones(len(ids), dtype=torch.bool, device=device)
                keep[order[:k]] = False
                variants.append(ids[keep])
            label = IGNORE_LABEL
            if variants:
                width = max(len(v) for v in variants)
                pad = tokenizer.pad_token_id or 0
                batch = torch.full((len(variants), width), pad, dtype=ids.dtype, device=device)
                mask = torch.zeros((len(variants), width), dtype=torch.long, device=device)
                for i, v in enumerate(variants):
                    batch[i, : len(v)] = v
                    mask[i, : len(v)] = 1
                preds = model(input_ids=batch, attention_mask=mask).logits.argmax(-1).tolist()
                label = next((int(p) for p in preds if int(p) != full), IGNORE_LABEL)
            labels.append(label)
    finally:
        model.train(was)
    return labels


def target_exclusion_labels(probs: np.ndarray, labels: Sequence[int], clean_probs: np.ndarray | None = None,
                            min_excess: float = EXCLUDE_MIN_EXCESS) -> tuple[list[int], int | None]:
    """Labels for the flagged inputs still without one (our design; paper silent; ``exclude_labels=True``).

    The suspected target is the class the model predicts most often on the flagged inputs (a trigger sends its
    inputs there). A flagged input still labelled ``-100`` that the model puts in that class gets its runner-up
    class; inputs predicted elsewhere keep ``-100``. Needs no trigger.

    Guard: with ``clean_probs`` (the model on the defender's clean inputs), nothing is relabelled unless the
    suspected target's share among the flagged predictions exceeds its share among the clean predictions by at
    least ``min_excess`` — flagged inputs of a clean model are spread over the classes like clean ones, and
    relabelling them would only teach the model mistakes.

    Shapes: ``probs`` ``(N, C)`` on the flagged inputs, ``clean_probs`` ``(M, C)``. Returns the new labels and
    the suspected target (None when nothing was relabelled).
    """
    probs = np.asarray(probs, dtype=float)
    labels = list(labels)
    if len(probs) == 0:
        return labels, None
    pred = probs.argmax(1)
    target = int(np.bincount(pred, minlength=probs.shape[1]).argmax())
    if clean_probs is not None and len(clean_probs):
        excess = float((pred == target).mean() - (np.asarray(clean_probs).argmax(1) == target).mean())
        if excess < min_excess:
            return labels, None
    runner_up = np.argsort(-probs, axis=1)[:, 1]
    out = [int(runner_up[i]) if y == IGNORE_LABEL and pred[i] == target else int(y) for i, y in enumerate(labels)]
    return out, target


@dataclass
class SanitizeResult:
    """What ``sanitize_heads`` did. ``history`` comes from ``training.train``."""

    history: list[dict]
    cancelled: bool
    steps: int
    seconds: float
    suspicious_heads: list[str]
    align_before: float
    align_after: float
    frozen_unchanged: bool
    details: dict = field(default_factory=dict)


def sanitize_heads(
    model,
    tokenizer,
    clean_texts: Sequence[str],
    clean_labels: Sequence[int],
    suspicious: np.ndarray,
    pool_texts: Sequence[str] | None = None,
    *,
    beta: float = DEFAULT_BETA,
    kind: str = "kl",
    config: TrainConfig | None = None,
    evaluate: Callable | None = None,
    callback: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    measure_texts: Sequence[str] | None = None,
    reset: bool = DEFAULT_RESET,
    pseudo_labels: bool = DEFAULT_PSEUDO_LABELS,
    focus_labels: bool = DEFAULT_FOCUS_LABELS,
    exclude_labels: bool = DEFAULT_EXCLUDE_LABELS,
) -> SanitizeResult:
    """Fine-tune ONLY the suspicious heads of ``model`` (in place) with CE + ``beta`` x alignment.

    Args:
        clean_texts, clean_labels: the defender's clean labelled data.
        suspicious: ``(layers, heads)`` bool, e.g. ``HeadSafety.suspicious``.
        pool_texts: flagged inputs (unlabelled): always in the alignment term; in the cross-entropy only with a
            pseudo-label from the rules below.
        measure_texts: texts on which the alignment term is measured before and after (default: a sample of
            the pool and the clean texts).
        reset: zero the suspicious heads' output-projection columns before fine-tuning (see the module
            docstring).
        pseudo_labels: give a flagged input a cross-entropy label when switching the suspicious heads off
            changes its prediction — the label the safe heads alone give (see ``safe_head_labels``).
        focus_labels: for flagged inputs still without a label, drop the tokens the suspicious heads focus on
            and use the changed prediction (see ``focus_removal_labels``).
        exclude_labels: flagged inputs still without a label that the model puts in the suspected target class
            get their runner-up class (see ``target_exclusion_labels``).

    A cancelled run (``should_stop``) leaves the model consistent: the last completed optimizer step, with
    the frozen slices intact.
    """
    t0 = time.perf_counter()
    clean_texts = list(clean_texts)
    if not clean_texts:
        raise ValueError("The clean set is empty: sanitization needs clean labelled samples.")
    suspicious = np.asarray(suspicious, dtype=bool)
    require_head_repair(model, "Sanitization")
    loss = AlignmentLoss(suspicious, beta, kind)
    config = config or default_config()
    masks = head_parameter_masks(model, suspicious)
    snap = snapshot_frozen(model, masks)
    if measure_texts is None:
        measure_texts = list(pool_texts or [])[:64] + clean_texts[:64]
    before = alignment_value(model, tokenizer, measure_texts, suspicious, kind, config.max_length)
    pool_labels = None
    pool_probs = None  # (N, C): the suspect model on the flagged inputs, shared by the label rules below
    if pool_texts and (pseudo_labels or exclude_labels):
        from .attention import predict

        pool_probs = predict(model, tokenizer, list(pool_texts), config.max_length)
    if pseudo_labels and pool_texts:
        pool_labels = safe_head_labels(model, tokenizer, pool_texts, suspicious, config.max_length, pool_probs)
    n_gate_labels = sum(y != IGNORE_LABEL for y in (pool_labels or []))
    if focus_labels and pool_texts:
        focus = focus_removal_labels(model, tokenizer, pool_texts, suspicious, config.max_length)
        pool_labels = [g if g != IGNORE_LABEL else f for g, f in zip(pool_labels or [IGNORE_LABEL] * len(focus), focus)]
    suspected_target = None
    n_before_exclusion = sum(y != IGNORE_LABEL for y in (pool_labels or []))
    if exclude_labels and pool_texts:
        clean_probs = predict(model, tokenizer, clean_texts, config.max_length)
        pool_labels, suspected_target = target_exclusion_labels(
            pool_probs, pool_labels or [IGNORE_LABEL] * len(pool_texts), clean_probs)
    if reset:
        reset_output_columns(model, suspicious)
    examples = build_examples(clean_texts, clean_labels, pool_texts, pool_labels)
    with attention_dropout_off(model):
        res = train(model, tokenizer, examples, config, extra_loss=loss, trainable_masks=masks,
                    evaluate=evaluate, callback=callback, should_stop=should_stop)
    after = alignment_value(model, tokenizer, measure_texts, suspicious, kind, config.max_length)
    unchanged = frozen_slices_unchanged(model, masks, snap)
    labels = loss.describe()["suspicious_heads"]
    return SanitizeResult(
        history=res.history, cancelled=res.cancelled, steps=res.steps, seconds=time.perf_counter() - t0,
        suspicious_heads=labels, align_before=before, align_after=after, frozen_unchanged=unchanged,
        details={"beta": beta, "kind": kind, "clean_samples": len(clean_texts),
                 "pool_samples": len(pool_texts or []),
                 "pool_pseudo_labelled": sum(y != IGNORE_LABEL for y in (pool_labels or [])),
                 "pool_gate_labelled": n_gate_labels, "focus_labels": focus_labels,
                 "exclude_labels": exclude_labels, "suspected_target": suspected_target,
                 "pool_exclusion_labelled": sum(y != IGNORE_LABEL for y in (pool_labels or [])) - n_before_exclusion,
                 "trainable_parameters": int(sum(int(m.sum())
                                                                                       for m in masks.values())),
                 "config": vars(config).copy()},
    )
