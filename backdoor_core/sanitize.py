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
constraint. Without it, on the SST-2 tuning zoo's 11 backdoored models, mean ASR after repair rose from 18.7% to
23.8% (AddSent 1%: 3% -> 22%, syntactic: 10% -> 32%) and only the weak backdoors kept more clean accuracy
(``bench/results/archive/defense_nr.md``). Resetting only the best-scoring repaired heads (``reset=<mask>``,
``head_safety.reset_heads``, ``settings.RESET_TOP_K``) was measured and not adopted. Where the scan does not call
the model backdoored, the reset heads restart from the pretrained encoder's weights instead (``pretrained=``,
``settings.RESET_TO = "auto"``; ``pretrained.find_pretrained``): they keep their clean job and lose only what
fine-tuning added. Head-wise repair reaches only
what lives in the heads: a backdoor also carried by the trigger word's own representation is out of reach.

Feed-forward repair (``ffn``, ``settings.REPAIR_FFN``; our design, papers silent): besides the suspicious heads'
slices, the feed-forward blocks of chosen layers train too (``architecture.ffn_parameter_masks``: weights and
biases of the block's linear layers; layer norms stay frozen) of the layers that hold a suspicious head — by default
(``"auto"``) only when the scan found a backdoor and the paper's attention-only detector would miss a good share of
its flagged inputs (``scan.ScanReport.attention_missed_share >= settings.FFN_AUTO_MISSED``). They learn at
``settings.REPAIR_FFN_LR_SCALE`` x the heads' lr (0.3: the BBC zoo's forced FFN repairs lost half the clean
accuracy they lost at the full lr, at a lower ASR; ``bench/results/knob_tuning_ffn_lr_scale.md``).
A style backdoor's shortcut is not only in a few heads: head-only repair left 61% ASR on SST-2 Bible style (21.5%
with oracle labels, ``bench/results/defense.md``). ``ffn="none"`` is the paper's head-only repair. Chosen on the
SST-2 tuning zoo: ``bench/results/style_ablation.md``.

Repairs averaged (``repair_seeds``, ``training.train_averaged``, ``settings.REPAIR_SEEDS``; our design, papers
silent; 2 by default): N repairs from the same start with different seeds, then the mean of their trained entries.
It narrowed the worst clean-accuracy losses on both zoos at the same ASR; each extra seed costs one training run,
which length-grouped batches (``settings.REPAIR_GROUP_BY_LENGTH``) pay for (see the settings).

Blending back (measured, not adopted; ``bench/blend_check.py``, ``bench/results/blend_check.md``): the repaired
weights moved back toward the suspect's, ``theta_s + a (theta_r - theta_s)``, do not trade ASR for clean accuracy.
Where the repair removed a backdoor, ASR rises as ``a`` falls while CACC barely moves (SST-2 AddSent 1%: 3.0% at
``a = 1``, 9.5% at 0.8, 41.7% at 0.5, CACC within 1.4 points throughout); only where it removed nothing (the two weak
2% BadNets models) did ``a = 0.5`` keep most of the clean accuracy the repair cost (-2.3 and -0.4 points against
-8.7 and -4.4).

Retention (``retain``, ``RetentionLoss``; our design, off by default): a KL term toward the unrepaired model's
outputs on the clean labelled inputs. Measured and not adopted: at weight 1 it kept SST-2 clean accuracy but gave
back syntactic and Bible-style backdoors (``bench/results/knob_tuning_retain.md``).

Three pseudo-label rules give flagged pool inputs a cross-entropy label, in this order (our design; paper silent;
each is a knob, kept because it lowered ASR after repair on the defense benchmark: ``defense_session2.md`` for
the first two, the superseded rows of ``defense.md`` for the third):

* safe-head labels (``pseudo_labels=True``): a flagged input whose prediction changes when the suspicious heads
  are switched off (``head_gates``) gets the safe heads' prediction — unless switching them off costs more than
  ``settings.GATE_MAX_ACCURACY_DROP`` accuracy on the clean labelled texts (``gated_accuracy``): then the safe
  heads alone are no judge and this rule is skipped;
* focus-removal labels (``focus_labels=True``, ``focus_removal_labels``): a flagged input still unlabelled gets
  the prediction the model makes once the ``FOCUS_DROP_COUNTS`` tokens the suspicious heads attend to most are
  dropped, when that changes the prediction. The captured heads point at the trigger, so no trigger knowledge
  is needed;
* target-exclusion labels (``exclude_labels=True``, ``target_exclusion_labels``): a flagged input still
  unlabelled that the model puts in the *suspected target* (the class it predicts most often on the flagged
  inputs) gets its runner-up class. Skipped when the flagged predictions are no more concentrated on that class
  than the clean ones (``EXCLUDE_MIN_EXCESS``), which is what a clean model's flags look like.

Likely trigger words (``trigger_words``; defense knob ``pool_words``, ``settings.REPAIR_POOL_WORDS``; our design,
papers silent): the words the pool holds far more often than the clean texts and whose insertion sends clean texts
to one class, among them those that at most the scan's FRR of the clean texts hold (``trigger_search.pool_words`` /
``marking_words``, read by the scan: the words whose inputs the Detect page lists). ``trigger_augmented``
puts such a word into ``settings.TRIGGER_AUGMENT_SHARE`` of the clean labelled texts of each class the words do not
target, which keep their labels and replace their plain versions (the repair's size and class mix stay the same).
It needs no flagged input, so it reaches weak word
backdoors whose trigger captures no head. Labelling the pool inputs that hold a likely word with the model's
prediction once it is deleted was measured and dropped: a word is often
only part of a sentence trigger ("3d" of "I watch this 3D movie"), whose rest still fires, so the labels taught the
backdoor (SST-2 AddSent 1%: 3.0% ASR after repair became 49.4%).

Two direction rules, measured and not adopted (our design; papers silent; off by default). Dropping the focus
tokens shows which class they push the flagged inputs toward (``FocusRemoval.shift``). ``labels_leave_target``
(``leave_target_only``) keeps a safe-head or focus-removal label only when it takes an input out of that class;
``exclude_direction`` runs target exclusion only when its suspected target is that class (a weak backdoor's flagged
inputs may mostly keep their source class, which the rule then takes for the target). On the tuning zoo
(13 models, four of them weak SST-2 BadNets models built for this) the focus tokens' class was always the true
target and the weak models' mean ASR after repair fell from 20.9% to 15.9%
(``bench/results/knob_tuning_labels_leave_target.md``). On the test zoo they failed: a style trigger gives the
focus tokens nothing to carry (shift <= 0.03 on AG News lyrics), so the direction was noise and AG News lyrics kept
20-25% ASR instead of 0.5-7%; and on OLID BadNets -> NOT the suspicious heads read offensive words, so the
direction pointed at OFF and did not stop the wrong-way exclusion labels (``bench/results/archive/defense_test_g.md``).

Defaults (``DEFAULT_BETA``, ``default_config``: lr, epochs, batch, max length; the defender data budget
``DEFAULT_CLEAN_BUDGET`` clean labelled samples and up to ``DEFAULT_POOL_BUDGET`` flagged inputs) are our choice
by measurement on the defense benchmark's SST-2 models. There is no separate validation zoo, so the benchmark
numbers are optimistic for these knobs. Results: ``bench/results/defense.md`` (current settings, our defense
against the baselines), ``bench/results/defense_seed1.md`` (another data draw) and
``bench/results/defense_session2.md`` (the ablation: gate labels only, + focus labels, + the higher lr); the
runs they merge are in ``bench/results/archive/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace as replaced

import numpy as np
import torch

from .architecture import (attention_dropout_off, blind_token_embeddings, content_key_mask, ffn_parameter_masks,
                           head_parameter_masks, require_head_repair, token_embedding_masks, zero_output_columns)
from . import settings as S
from .forward import Cancelled, predict, run_with_cache, stopping
from .architecture import is_causal
from .head_metrics import key_visibility, mask_labels
from .pretrained import restore
from .training import IGNORE_LABEL, Example, Progress, TrainConfig, combine_losses, train_averaged

DEFAULT_BETA = S.BETA
DEFAULT_RESET = S.RESET
DEFAULT_PSEUDO_LABELS = S.PSEUDO_LABELS
DEFAULT_FOCUS_LABELS = S.FOCUS_LABELS
DEFAULT_EXCLUDE_LABELS = S.EXCLUDE_LABELS
EXCLUDE_MIN_EXCESS = S.EXCLUDE_MIN_EXCESS
FOCUS_DROP_COUNTS = (1, 2, 3, 5)
DEFAULT_CLEAN_BUDGET = S.CLEAN_BUDGET
DEFAULT_POOL_BUDGET = S.POOL_BUDGET
ALIGN_KINDS = ("kl", "mse")


def ffn_layers(spec, suspicious: np.ndarray, attention_missed_share: float | None = None,
               max_layers: int | None = S.REPAIR_FFN_MAX_LAYERS, backdoor_found: bool | None = None) -> list[int]:
    """The layers whose feed-forward blocks a repair trains (see the module docstring): ``spec`` is ``"none"``
    (or None / False / ""), ``"suspicious"`` (layers holding a suspicious head), ``"all"``, layer indices
    (a list or a comma-separated string), or ``"auto"``: ``"suspicious"`` when ``attention_missed_share`` (the
    share of the scan's flagged inputs its attention-only part would not flag,
    ``scan.ScanReport.attention_missed_share``) is at least ``settings.FFN_AUTO_MISSED``, else none (also without
    a share, and when the scan's verdict found no backdoor: ``backdoor_found=False``, its few flags are noise).
    ``suspicious``: ``(L, H)`` bool."""
    suspicious = np.asarray(suspicious, dtype=bool)
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        on = (attention_missed_share is not None and attention_missed_share >= S.FFN_AUTO_MISSED
              and (backdoor_found is None or bool(backdoor_found)))
        spec = "suspicious" if on else "none"
    if spec is None or spec is False or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return []
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key == "suspicious":
            layers = [int(l) for l in np.flatnonzero(suspicious.any(1))]
            if max_layers is not None and len(layers) > max_layers:  # the layers with the most suspicious heads
                counts = suspicious.sum(1)
                layers = sorted(sorted(layers, key=lambda l: (-counts[l], -l))[: max(0, int(max_layers))])
            return layers
        if key == "all":
            return list(range(suspicious.shape[0]))
        try:
            spec = [int(x) for x in key.replace(" ", ",").split(",") if x]
        except ValueError:
            raise ValueError(f"ffn must be 'none', 'suspicious', 'all', 'auto' or layer indices, got '{spec}'.") from None
    layers = sorted({int(l) for l in spec})
    bad = [l for l in layers if not 0 <= l < suspicious.shape[0]]
    if bad:
        raise ValueError(f"ffn layers {bad} do not exist (the model has {suspicious.shape[0]} layers).")
    return layers


def default_config(**overrides) -> TrainConfig:
    """The sanitization training settings (see the module docstring); ``overrides`` replace fields."""
    base = dict(lr=S.SANITIZE_LR, epochs=S.SANITIZE_EPOCHS, batch_size=S.BATCH_SIZE, max_length=S.MAX_LENGTH,
                seed=S.SEED, weight_decay=S.WEIGHT_DECAY, warmup_ratio=S.WARMUP_RATIO, grad_clip=S.GRAD_CLIP,
                eval_every=S.REPAIR_EVAL_EVERY, group_by_length=S.REPAIR_GROUP_BY_LENGTH,
                precision=S.REPAIR_PRECISION)
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

    def __init__(self, suspicious: np.ndarray, beta: float = DEFAULT_BETA, kind: str = S.ALIGN_KIND):
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
            per_row = self._per_row(attentions[layer], susp, safe)  # (B, S, T)
            total = total + (per_row * qmask[:, None, :]).sum() / denom
            n += per_row.shape[1]
        return total / max(n, 1)

    def _per_row(self, att: torch.Tensor, susp: torch.Tensor, safe: torch.Tensor) -> torch.Tensor:
        """``(B, S, T)``: each suspicious head's row term against the safe heads' mean row (stop-gradient);
        ``att`` is one layer's ``(B, H, T, T)``."""
        att = att.float()
        target = att[:, safe.to(att.device)].mean(1, keepdim=True).detach()  # (B, 1, T, T)
        heads = att[:, susp.to(att.device)]  # (B, S, T, T)
        if self.kind == "kl":
            return (torch.xlogy(target, target) - target * torch.log(heads.clamp_min(1e-8))).sum(-1)
        return ((heads - target) ** 2).sum(-1)

    @property
    def n_heads(self) -> int:
        """How many suspicious heads the term averages over."""
        return int(sum(len(susp) for _, susp, _ in self.layers))

    def per_input(self, attentions: Sequence[torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B,)`` each input's per-row terms summed over its real query rows and the suspicious heads
        (``raw`` = their sum / real rows of the batch / ``n_heads``)."""
        qmask = attention_mask.to(attentions[0].device).float()  # (B, T)
        total = qmask.new_zeros(qmask.shape[0])
        for layer, susp, safe in self.layers:
            per_row = self._per_row(attentions[layer], susp, safe)  # (B, S, T)
            total = total + (per_row * qmask[:, None, :]).sum((1, 2))
        return total

    def __call__(self, batch: dict, outputs) -> dict[str, torch.Tensor]:
        if not outputs.attentions or outputs.attentions[0] is None:
            raise RuntimeError("Alignment needs attention maps: load the model with attn_implementation='eager'.")
        return {"align": self.beta * self.raw(outputs.attentions, batch["attention_mask"])}

    def describe(self) -> dict:
        labels = mask_labels(self.suspicious)
        return {"beta": self.beta, "kind": self.kind, "suspicious_heads": labels}


class RetentionLoss:
    """``extra_loss`` for ``training.train``: ``{"retain": gamma * KEEP}`` with

        KEEP = mean over the batch's inputs that carry a ``soft_label`` of KL( p_before(x) || p_model(x) )

    ``p_before`` ``(C,)``: the unrepaired model's class probabilities on the defender's clean labelled inputs,
    computed once before the reset (``sanitize_heads``); ``p_model``: the model being repaired. Our design
    (papers silent): with 200 clean labels, re-learning reset heads and feed-forward blocks loses clean accuracy;
    the suspect model is right on clean inputs, so its full output distribution there is a richer target than
    one label per input. Only clean inputs get a teacher, never the flagged ones, whose outputs are the backdoor's.
    """

    needs_attentions = False

    def __init__(self, gamma: float):
        if gamma < 0:
            raise ValueError(f"The retention weight must be >= 0, got {gamma}.")
        self.gamma = float(gamma)

    def __call__(self, batch: dict, outputs) -> dict[str, torch.Tensor]:
        has = batch.get("has_soft_label")
        if has is None or not bool(has.any()):
            return {"retain": outputs.logits.sum() * 0.0}
        logp = torch.log_softmax(outputs.logits.float()[has], -1)  # (n, C)
        target = batch["soft_labels"][has].to(logp.device)  # (n, C)
        kl = (torch.xlogy(target, target) - target * logp).sum(-1).mean()
        return {"retain": self.gamma * kl}


def alignment_value(model, tokenizer, texts: Sequence[str], suspicious: np.ndarray, kind: str = S.ALIGN_KIND,
                    max_length: int = S.MAX_LENGTH, batch_size: int = 32) -> float:
    """Mean unweighted ALIGN over ``texts`` (for before/after reports and tests): the per-row terms of
    ``AlignmentLoss.raw`` summed over all texts, divided by their real query rows and suspicious heads."""
    loss = AlignmentLoss(suspicious, 1.0, kind)
    texts = [str(t) for t in texts]
    if not texts:
        return float("nan")
    cache = run_with_cache(model, tokenizer, texts, max_length=max_length, batch_size=batch_size,
                           reduce=lambda b: {"align": loss.per_input(b.attentions, b.attention_mask)})
    rows = float(cache.lengths.sum())
    return float(cache.reduced["align"].astype(np.float64).sum() / max(rows, 1.0) / loss.n_heads)


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
                   pool_labels: Sequence[int] | None = None,
                   clean_soft: np.ndarray | None = None) -> list[Example]:
    """Clean labelled examples plus pool examples (label ``-100`` = alignment only, unless ``pool_labels``);
    ``clean_soft`` ``(len(clean_texts), C)``: the clean examples' teacher probabilities (``RetentionLoss``)."""
    soft = [None] * len(clean_texts) if clean_soft is None else [tuple(float(v) for v in row) for row in clean_soft]
    ex = [Example(str(t), int(y), soft_label=q) for t, y, q in zip(clean_texts, clean_labels, soft)]
    pool_texts = list(pool_texts or [])
    labels = list(pool_labels) if pool_labels is not None else [IGNORE_LABEL] * len(pool_texts)
    ex += [Example(str(t), int(y)) for t, y in zip(pool_texts, labels)]
    return ex


def trigger_augmented(clean_texts: Sequence[str], clean_labels: Sequence[int], words: Sequence[tuple[str, int]],
                      share: float = S.TRIGGER_AUGMENT_SHARE, tokenizer=None, max_length: int | None = None,
                      seed: int = 0) -> dict[int, Example]:
    """Unlearning examples (our design; papers silent). ``words``: ``(word, target)`` pairs, a likely trigger and
    the class its insertion sends clean texts to (``trigger_search.PoolWord``). Returns ``{row: Example}``: for
    ``share`` of the clean labelled texts of each class that some word does not target (a seeded draw), the text
    with one such word inserted at a random word position inside the reading window, keeping its label; the repair
    trains on it *instead of* the plain text (the trigger, seen on texts of other classes, stops deciding the
    class). Texts of a class every word targets are left as they are (inserting the word there would teach it
    again). Replacing rather than adding keeps the repair's size and class mix. Added copies of the other classes
    alone tilted imbalanced OLID's repair (−6.4 clean-accuracy points on one model,
    ``bench/results/archive/defense_test_pool_words.md``); class-balanced added copies removed more of the tuning
    zoo's backdoors than this version and moved clean accuracy a little more (mean ASR after 18.1% vs 21.8%, CACC
    change −0.77 vs −0.59 points, ``archive/defense_tuning_pool_words_added.md`` / ``_replaced.md``). Empty when
    ``words`` is. Words whose target is no class (``-1``: the rare words of ``settings.REPAIR_RARE_WORDS``) go into
    every class."""
    from .triggers import insert_trigger

    words = [(str(w), int(t)) for w, t in words if str(w).strip()]
    if not words or not clean_texts or share <= 0:
        return {}
    rng = np.random.default_rng(seed + 17)
    labels = np.asarray([int(y) for y in clean_labels])
    out = {}
    for y in sorted(set(labels.tolist())):
        usable = [w for w, t in words if t != y]
        if not usable:
            continue
        rows = np.flatnonzero(labels == y)
        n = min(len(rows), int(np.floor(share * len(rows) + 0.5)))
        for k, i in enumerate(rng.permutation(rows)[:n]):
            text = str(clean_texts[i])
            at = int(rng.integers(0, len(text.split()) + 1))
            new = insert_trigger(text, usable[k % len(usable)], at, tokenizer=tokenizer, max_length=max_length)
            out[int(i)] = Example(new.text, y, trigger_spans=(new.span,))
    return out


def trigger_token_ids(tokenizer, words: Sequence[str], clean_texts: Sequence[str],
                      max_length: int | None = None) -> list[int]:
    """The token ids of likely trigger ``words`` that no clean text holds and that are not special tokens: the
    embedding rows a repair may move (``trigger_embedding_lr_scale``) without touching a clean input's own tokens.
    Our design (papers silent).

    A word counts as it reads at the start of a text and after a space: byte-level BPE (GPT-2, RoBERTa) and
    SentencePiece give a word inside a sentence other ids (``"Ġcf"``) than alone (``"cf"``), and a trigger is
    mostly inserted inside a sentence (WordPiece gives the same ids both ways)."""
    ids = {int(i) for w in words if str(w).strip()
           for i in tokenizer(str(w), add_special_tokens=False)["input_ids"]}
    for w in (str(w).strip() for w in words):
        if w:
            ids |= set(_ids_inside_a_sentence(tokenizer, w))
    if not ids:
        return []
    ids -= {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])}
    for text in clean_texts:
        ids -= set(tokenizer(str(text), add_special_tokens=False, truncation=max_length is not None,
                             max_length=max_length)["input_ids"])
        if not ids:
            break
    return sorted(ids)


def _ids_inside_a_sentence(tokenizer, word: str) -> list[int]:
    """The ids of ``word``'s tokens after another word and a space (those whose character span overlaps the
    word's; ``[]`` for a tokenizer without offsets)."""
    text = "a " + word
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        return []
    return [int(i) for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]) if e > max(s, 2)]


def safe_head_labels(model, tokenizer, texts: Sequence[str], suspicious: np.ndarray,
                     max_length: int = S.MAX_LENGTH, full_probs: np.ndarray | None = None) -> list[int]:
    """Pseudo-labels for flagged inputs (our design; paper silent): where switching the suspicious heads off
    (``architecture.head_gates``) changes the model's prediction, the safe heads' prediction; else ``-100``
    (no cross-entropy, alignment only). Needs no trigger and no true label: it asks the model itself what it
    decides without the heads the trigger captured."""
    from .architecture import head_gates

    texts = [str(t) for t in texts]
    if full_probs is None:  # ``(N, C)`` the whole model's probabilities on ``texts``, when already at hand
        full_probs = predict(model, tokenizer, texts, max_length)
    full = np.asarray(full_probs).argmax(1)
    with head_gates(model, torch.as_tensor(~np.asarray(suspicious, dtype=bool), dtype=torch.float32)):
        safe = predict(model, tokenizer, texts, max_length).argmax(1)
    return [int(s) if s != f else IGNORE_LABEL for s, f in zip(safe, full)]


def gated_accuracy(model, tokenizer, texts: Sequence[str], labels: Sequence[int], suspicious: np.ndarray,
                   max_length: int = S.MAX_LENGTH, full_probs: np.ndarray | None = None) -> tuple[float, float]:
    """``(whole model, safe heads only)``: accuracy on the defender's clean labelled ``texts`` of the model as
    it is and with the suspicious heads switched off (``architecture.head_gates``). The gap says how much of the
    model's clean job the suspicious heads carry, i.e. whether the safe heads' predictions can serve as labels
    (``safe_head_labels``). ``full_probs`` ``(N, C)``: the whole model's probabilities on ``texts``, when at
    hand."""
    from .architecture import head_gates

    y = np.asarray(labels)
    if full_probs is None:
        full_probs = predict(model, tokenizer, list(texts), max_length)
    full = np.asarray(full_probs).argmax(1)
    with head_gates(model, torch.as_tensor(~np.asarray(suspicious, dtype=bool), dtype=torch.float32)):
        safe = predict(model, tokenizer, list(texts), max_length).argmax(1)
    return float((full == y).mean()), float((safe == y).mean())


@dataclass
class FocusRemoval:
    """What dropping the suspicious heads' focus tokens does (``focus_removal``).

    ``labels``: per text, the first changed prediction over ``drop_counts`` (``-100`` when none changes it).
    ``shift`` ``(C,)``: mean over the texts of ``p(full) - mean_k p(top k dropped)`` — how much probability the
    dropped tokens had pushed toward each class; the class it is largest for is where the focus tokens send the
    inputs (zeros when no text had a token to drop).
    """

    labels: list[int]
    shift: np.ndarray


def focus_removal(model, tokenizer, texts: Sequence[str], suspicious: np.ndarray, max_length: int = S.MAX_LENGTH,
                  drop_counts: Sequence[int] = FOCUS_DROP_COUNTS, batch_size: int = 32) -> FocusRemoval:
    """Drop the tokens the suspicious heads focus on and re-predict (our design; paper silent).

    For each text: score every key token by the attention the suspicious heads send it (mean over real queries,
    summed over the suspicious heads; the tokenizer's special ids excluded) — on a triggered input that is where
    a captured head looks, i.e. the trigger. Drop the top ``k`` tokens for ``k`` in ``drop_counts`` in turn and
    re-predict. No trigger is known: the heads point at it. Two ``forward.run_with_cache`` passes: the texts
    (per-token scores ``(n,)`` from ``attentions[l]`` ``(B, heads, T, T)``), then every variant's token ids.
    Feeds ``focus_removal_labels`` (the labels) and ``target_exclusion_labels``' direction guard (the shift).
    """
    suspicious = np.asarray(suspicious, dtype=bool)
    layers = [(l, torch.as_tensor(np.flatnonzero(row))) for l, row in enumerate(suspicious) if row.any()]
    special_ids = sorted(set(tokenizer.all_special_ids))
    texts = [str(t) for t in texts]
    n_labels = int(model.config.num_labels)
    if not texts:
        return FocusRemoval([], np.zeros(n_labels))

    causal = is_causal(model)

    def token_scores(batch) -> dict[str, list[np.ndarray]]:
        qmask = batch.attention_mask.float()  # (B, T) real queries
        visible = key_visibility(qmask, causal)  # (B, T) queries that can see each key (decoders: those after it)
        score = torch.zeros(batch.input_ids.shape, device=qmask.device)  # (B, T)
        for l, heads in layers:
            att = batch.attentions[l][:, heads.to(qmask.device)].float()  # (B, S, T, T)
            score += (att * qmask[:, None, :, None]).sum(2).sum(1) / visible
        special = torch.isin(batch.input_ids, torch.as_tensor(special_ids, device=qmask.device))
        content = content_key_mask(model, torch.ones_like(qmask), special).bool()  # decoders: not the sink at 0
        score = score.masked_fill(~content, float("-inf"))
        n = batch.attention_mask.sum(-1).tolist()
        return {"score": [score[b, : n[b]].cpu().numpy() for b in range(len(batch))]}

    cache = run_with_cache(model, tokenizer, texts, max_length=max_length, batch_size=batch_size,
                           reduce=token_scores)
    full = cache.predictions
    variants, owner = [], []
    for i, (ids, score) in enumerate(zip(cache.input_ids, cache.reduced["score"])):
        order = np.argsort(-score, kind="stable")[: int(np.isfinite(score).sum())]
        for k in drop_counts:
            if k >= len(order):  # never drop every content token
                break
            keep = np.ones(len(ids), dtype=bool)
            keep[order[:k]] = False
            variants.append(ids[keep].tolist())
            owner.append(i)
    labels = [IGNORE_LABEL] * len(texts)
    shift = np.zeros(n_labels)
    if variants:
        out = run_with_cache(model, tokenizer, variants, max_length=max_length, batch_size=batch_size)
        for i, p in zip(owner, out.predictions):  # variants in drop_counts order: the first change wins
            if labels[i] == IGNORE_LABEL and int(p) != int(full[i]):
                labels[i] = int(p)
        owner_arr = np.asarray(owner)
        dropped = np.zeros((len(texts), n_labels))  # (N, C) mean over each text's variants
        np.add.at(dropped, owner_arr, out.probs)
        counts = np.bincount(owner_arr, minlength=len(texts))
        has = counts > 0
        shift = (cache.probs[has] - dropped[has] / counts[has, None]).mean(0)
    return FocusRemoval(labels, shift)


def focus_removal_labels(model, tokenizer, texts: Sequence[str], suspicious: np.ndarray, max_length: int = S.MAX_LENGTH,
                         drop_counts: Sequence[int] = FOCUS_DROP_COUNTS, batch_size: int = 32) -> list[int]:
    """Pseudo-labels from the suspicious heads' focus (our design; paper silent; ``focus_labels=True``): the
    first ``k`` in ``drop_counts`` whose drop of the top-``k`` focus tokens changes the prediction gives its new
    prediction as the label, else ``-100`` (``focus_removal``)."""
    return focus_removal(model, tokenizer, texts, suspicious, max_length, drop_counts, batch_size).labels


def target_exclusion_labels(probs: np.ndarray, labels: Sequence[int], clean_probs: np.ndarray | None = None,
                            min_excess: float = EXCLUDE_MIN_EXCESS,
                            direction: np.ndarray | None = None) -> tuple[list[int], int | None]:
    """Labels for the flagged inputs still without one (our design; paper silent; ``exclude_labels=True``).

    The suspected target is the class the model predicts most often on the flagged inputs (a trigger sends its
    inputs there). A flagged input still labelled ``-100`` that the model puts in that class gets its runner-up
    class; inputs predicted elsewhere keep ``-100``. Needs no trigger.

    Guard: with ``clean_probs`` (the model on the defender's clean inputs), nothing is relabelled unless the
    suspected target's share among the flagged predictions exceeds its share among the clean predictions by at
    least ``min_excess`` — flagged inputs of a clean model are spread over the classes like clean ones, and
    relabelling them would only teach the model mistakes.

    Direction guard: with ``direction`` ``(C,)`` (``FocusRemoval.shift``: the probability the suspicious heads'
    focus tokens push toward each class), nothing is relabelled unless the suspected target is the class they
    push toward most. A weak backdoor's flagged inputs may mostly keep their true class (the trigger failed), so
    the most-predicted class is then the *source*, and its runner-up the real target: the rule would teach the
    backdoor (OLID BadNets -> NOT in the test zoo, pseudo-label accuracy 0%). Off by default: there the focus
    tokens pointed the same wrong way (module docstring).

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
    if (direction is not None and len(direction) == probs.shape[1] and np.any(direction != 0)
            and int(np.argmax(direction)) != target):
        return labels, None
    runner_up = np.argsort(-probs, axis=1)[:, 1]
    out = [int(runner_up[i]) if y == IGNORE_LABEL and pred[i] == target else int(y) for i, y in enumerate(labels)]
    return out, target


def word_target_dropped(pool_texts: Sequence[str], labels: Sequence[int],
                        word_targets: Sequence[tuple[str, int]]) -> tuple[list[int], int]:
    """``labels`` (``(len(pool_texts),)``, ``IGNORE_LABEL`` = none) with the label of every pool text that holds a
    marking word (whole word) and is labelled that word's target set to ``IGNORE_LABEL``; returns them and how many
    were dropped. Our design; papers silent.

    A marking word's target is measured, not guessed: inserted into clean texts it sends them there
    (``trigger_search.PoolWord``). A triggered input labelled with that class teaches the trigger again, whichever
    rule gave the label: on OLID BadNets -> NOT the label rules took OFF for the target and labelled the triggered
    offensive tweets NOT (pseudo-label accuracy 20%). Off by default: measured and not adopted
    (``settings.LABELS_AVOID_WORD_TARGET``; a phrase trigger's single words may point the other way)."""
    from .trigger_search import _doc_words, normalise

    by_word: dict[str, set[int]] = {}
    for w, t in word_targets:
        by_word.setdefault(normalise(str(w)), set()).add(int(t))
    out, n = list(labels), 0
    for i, (text, y) in enumerate(zip(pool_texts, labels)):
        if y == IGNORE_LABEL:
            continue
        if any(int(y) in by_word.get(w, ()) for w in _doc_words(str(text))):
            out[i], n = IGNORE_LABEL, n + 1
    return out, n


def word_other_class_labels(pool_texts: Sequence[str], labels: Sequence[int], probs: np.ndarray,
                          word_targets: Sequence[tuple[str, int]]) -> tuple[list[int], int]:
    """``labels`` (``(len(pool_texts),)``, ``IGNORE_LABEL`` = none) where every pool text that holds a likely
    trigger word (whole word), that the model puts in that word's target and that has no label or that target for a
    label, gets the other class; returns them and how many labels this set or changed. Our design; papers silent.

    A likely word's target is measured (inserted into clean texts it sends them there,
    ``trigger_search.PoolWord``), and a text carrying it that the model puts there is a triggered text whose own
    class is another: in a two-class task, the other one. So the rule applies to two-class models only (with more
    classes the own class is a guess: the runner-up cut the pseudo-label accuracy of AG News AddSent from 90 to 62%,
    ``bench/results/archive/defense_test_s49twl.md``), and only when every word points to one class (a phrase's
    single words may point different ways: OLID AddSent's ``movie``). ``probs`` ``(N, 2)``: the model on
    ``pool_texts``."""
    from .trigger_search import _doc_words, normalise

    targets = {int(t) for _, t in word_targets}
    probs = np.asarray(probs, dtype=float)
    out, n = list(labels), 0
    if len(targets) != 1 or len(probs) != len(out) or not len(out) or probs.shape[1] != 2:
        return out, 0
    target = targets.pop()
    words = {normalise(str(w)) for w, _ in word_targets}
    pred = probs.argmax(1)
    for i, text in enumerate(pool_texts):
        if pred[i] == target and out[i] in (IGNORE_LABEL, target) and words & set(_doc_words(str(text))):
            out[i], n = 1 - target, n + 1
    return out, n


def leave_target_only(probs: np.ndarray, labels: Sequence[int], direction: np.ndarray) -> list[int]:
    """Keep a flagged input's label only when it takes the input out of the focus tokens' class (our design;
    paper silent; ``labels_leave_target=True``).

    A trigger sends its inputs to the target; removing it (dropping the focus tokens, switching the captured heads
    off) brings them back out. So a label that moves an input *into* that class, or moves an input the model does
    not put there, is not a trigger being undone: on a weak backdoor most flagged inputs are clean ones the
    detector caught by chance, and their changed predictions are noise (pseudo-label accuracy 27-29% on the SST-2
    tuning zoo's weak BadNets models). Those labels become ``-100`` (alignment only). Off by default: on style
    backdoors the direction is noise (module docstring). ``direction`` ``(C,)``:
    ``FocusRemoval.shift``; all zeros (no token dropped) keeps every label. ``probs`` ``(N, C)``: the model on the
    flagged inputs.
    """
    labels = [int(y) for y in labels]
    direction = np.asarray(direction, dtype=float)
    if len(labels) == 0 or not np.any(direction != 0):
        return labels
    target = int(np.argmax(direction))
    pred = np.asarray(probs).argmax(1)
    return [y if y == IGNORE_LABEL or (pred[i] == target and y != target) else IGNORE_LABEL
            for i, y in enumerate(labels)]


@dataclass
class PoolLabels:
    """The flagged inputs' pseudo-labels (``pool_pseudo_labels``): ``labels`` ``(N,)`` a class or ``IGNORE_LABEL``
    per pool text (None: no rule ran), ``details`` what each rule did (``SanitizeResult.details`` keys), and how
    many inputs had a label before target exclusion (its own count is taken on the final labels)."""

    labels: list[int] | None
    details: dict
    labelled_before_exclusion: int


def pool_pseudo_labels(
    model, tokenizer, clean_texts: list[str], clean_labels: Sequence[int], suspicious: np.ndarray,
    pool_texts: Sequence[str] | None, max_length: int, *, pseudo_labels: bool, focus_labels: bool,
    exclude_labels: bool, exclude_direction: bool, exclude_min_excess: float, labels_leave_target: bool,
    pool_probs: np.ndarray | None, clean_probs: np.ndarray | None, clean_full: np.ndarray | None,
    label_judge: str, judge_probs, word_targets: Sequence[tuple[str, int]], word_labels: bool,
    trigger_words: Sequence[tuple[str, int]], label_limit: int | None,
) -> PoolLabels:
    """The label rules of ``sanitize_heads``, in order (each argument as documented there): the safe heads'
    prediction where switching the suspicious heads off keeps clean accuracy (the gate), focus removal, leave the
    target only, target exclusion, the judge, no label toward a marking word's class, the other class for a
    likely trigger word's texts, the label limit. ``clean_full`` ``(M, C)``: the unrepaired model on
    ``clean_texts``, when already at hand. Runs on the unrepaired model (before any reset)."""
    pool_labels = None
    # pool_probs (N, C): the suspect model on the flagged inputs, shared by the label rules below
    if pool_probs is not None and len(pool_probs) != len(pool_texts or []):
        raise ValueError(f"pool_probs has {len(pool_probs)} rows for {len(pool_texts or [])} pool texts.")
    if pool_texts and (pseudo_labels or exclude_labels or labels_leave_target) and pool_probs is None:
        pool_probs = predict(model, tokenizer, list(pool_texts), max_length)
    # clean_full (M, C): the unrepaired model on the clean texts in their order, once for the gate and exclusion
    gate_acc, gate_used = None, False
    if pseudo_labels and pool_texts:
        if clean_full is None:
            clean_full = predict(model, tokenizer, clean_texts, max_length)
        gate_acc = gated_accuracy(model, tokenizer, clean_texts, clean_labels, suspicious, max_length,
                                  full_probs=clean_full)
        if gate_acc[0] - gate_acc[1] <= S.GATE_MAX_ACCURACY_DROP:
            pool_labels = safe_head_labels(model, tokenizer, pool_texts, suspicious, max_length, pool_probs)
            gate_used = True
    n_gate_labels = sum(y != IGNORE_LABEL for y in (pool_labels or []))
    focus = None
    if pool_texts and (focus_labels or (exclude_labels and exclude_direction) or labels_leave_target):
        focus = focus_removal(model, tokenizer, pool_texts, suspicious, max_length)
    if focus_labels and focus is not None:
        pool_labels = [g if g != IGNORE_LABEL else f
                       for g, f in zip(pool_labels or [IGNORE_LABEL] * len(focus.labels), focus.labels)]
    n_dropped = 0
    if labels_leave_target and focus is not None and pool_labels is not None:
        kept = leave_target_only(pool_probs, pool_labels, focus.shift)
        n_dropped = sum(a != b for a, b in zip(kept, pool_labels))
        pool_labels = kept
    suspected_target = None
    n_before_exclusion = sum(y != IGNORE_LABEL for y in (pool_labels or []))
    if exclude_labels and pool_texts:
        if clean_probs is None:
            clean_probs = clean_full if clean_full is not None else predict(model, tokenizer, clean_texts,
                                                                            max_length)
        pool_labels, suspected_target = target_exclusion_labels(
            pool_probs, pool_labels or [IGNORE_LABEL] * len(pool_texts), clean_probs, exclude_min_excess,
            direction=focus.shift if exclude_direction and focus is not None else None)
    n_judge_dropped = n_judge_added = n_judge_kept = 0
    agreement = model_agreement = judge_note = None
    if callable(judge_probs):  # fit the judge only when it has work: labels to check, or fill's unlabelled inputs
        has_work = label_judge == "fill" or any(y != IGNORE_LABEL for y in (pool_labels or []))
        try:
            judge_probs = judge_probs() if has_work and label_judge != "none" and pool_texts else None
        except ValueError as exc:  # e.g. clean texts of one class: no judge, the labels stay unchecked
            judge_probs, judge_note = None, str(exc)
    if judge_probs is not None and label_judge != "none" and pool_texts:
        from .reference import judge_agreement, judged_labels
        if pool_probs is None and label_judge != "filter":  # gate(_filter) and fill read the model's predictions
            pool_probs = predict(model, tokenizer, list(pool_texts), max_length)
        rule = list(pool_labels or [IGNORE_LABEL] * len(pool_texts))
        agreement = judge_agreement(rule, judge_probs)
        if pool_probs is not None:
            model_agreement = judge_agreement(rule, judge_probs, np.asarray(pool_probs).argmax(1))
        pool_labels = judged_labels(rule, judge_probs, pool_probs, label_judge)
        n_judge_dropped = sum(a != IGNORE_LABEL and b == IGNORE_LABEL for a, b in zip(rule, pool_labels))
        n_judge_added = sum(a == IGNORE_LABEL and b != IGNORE_LABEL for a, b in zip(rule, pool_labels))
        n_judge_kept = sum(a != IGNORE_LABEL and b == a for a, b in zip(rule, pool_labels))
    n_word_dropped = 0
    if word_targets and pool_labels is not None:
        pool_labels, n_word_dropped = word_target_dropped(pool_texts, pool_labels, word_targets)
    n_word_labelled = 0
    if word_labels and trigger_words and pool_texts:
        if pool_probs is None:
            pool_probs = predict(model, tokenizer, list(pool_texts), max_length)
        pool_labels, n_word_labelled = word_other_class_labels(
            pool_texts, pool_labels or [IGNORE_LABEL] * len(pool_texts), pool_probs, trigger_words)
    n_cut = 0
    if label_limit is not None and pool_labels is not None:
        n_cut = sum(y != IGNORE_LABEL for y in pool_labels[label_limit:])
        pool_labels = list(pool_labels[:label_limit]) + [IGNORE_LABEL] * len(pool_labels[label_limit:])
    details = {
        "pool_gate_labelled": n_gate_labels, "gated_clean_accuracy": gate_acc, "gate_labels_used": gate_used,
        "focus_labels": focus_labels,
        "exclude_labels": exclude_labels, "suspected_target": suspected_target,
        "exclude_direction": exclude_direction, "labels_leave_target": labels_leave_target,
        "pool_labels_dropped": n_dropped,
        "word_target_dropped": n_word_dropped, "word_labelled": n_word_labelled,
        "label_limit": label_limit, "pool_labels_cut": n_cut,
        "label_judge": label_judge if judge_probs is not None else "none",
        "judge_dropped": n_judge_dropped, "judge_added": n_judge_added, "judge_kept": n_judge_kept,
        "judge_note": judge_note,
        "judge_agreement": None if agreement is None else round(agreement, 4),
        # the judge's agreement with the model's own predictions on the labelled inputs (the gate's line)
        "judge_model_agreement": None if model_agreement is None else round(model_agreement, 4),
        # (C,) the probability the focus tokens push the flagged inputs toward each class
        "focus_shift": None if focus is None else [round(float(x), 4) for x in focus.shift],
    }
    return PoolLabels(pool_labels, details, n_before_exclusion)


@dataclass
class SanitizeResult:
    """What ``sanitize_heads`` did. ``history`` comes from ``training.train``."""

    history: list[dict]
    cancelled: bool
    steps: int
    seconds: float
    suspicious_heads: list[str]
    align_before: float | None  # None when not measured (``measure_align=False``)
    align_after: float | None
    frozen_unchanged: bool
    details: dict = field(default_factory=dict)


def excess_flags(n_flagged: int, n_pool: int, frr: float) -> int:
    """How many flagged pool inputs to pseudo-label (our design; papers silent; ``label_excess``,
    ``settings.LABEL_EXCESS``): the flagged count less the inputs a clean pool would have flagged by chance at the
    scan's false-rejection rate, ``ceil(frr x n_pool)`` (the whole pool counted as clean: an upper bound), never
    below 0. The scan lists its flags highest score first, so these are the flags least likely to be chance.
    """
    if n_flagged < 0 or n_pool < 0 or not 0 <= frr <= 1:
        raise ValueError(f"excess_flags needs counts >= 0 and a rate in [0, 1], got {n_flagged}, {n_pool}, {frr}.")
    return max(0, int(n_flagged) - int(np.ceil(float(frr) * int(n_pool) - 1e-9)))


def sanitize_heads(
    model,
    tokenizer,
    clean_texts: Sequence[str],
    clean_labels: Sequence[int],
    suspicious: np.ndarray,
    pool_texts: Sequence[str] | None = None,
    *,
    beta: float = DEFAULT_BETA,
    kind: str = S.ALIGN_KIND,
    config: TrainConfig | None = None,
    evaluate: Callable | None = None,
    callback: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    measure_texts: Sequence[str] | None = None,
    reset: bool | np.ndarray = DEFAULT_RESET,
    pseudo_labels: bool = DEFAULT_PSEUDO_LABELS,
    focus_labels: bool = DEFAULT_FOCUS_LABELS,
    exclude_labels: bool = DEFAULT_EXCLUDE_LABELS,
    exclude_direction: bool = S.EXCLUDE_DIRECTION,
    exclude_min_excess: float = S.EXCLUDE_MIN_EXCESS,
    labels_leave_target: bool = S.LABELS_LEAVE_TARGET,
    measure_align: bool = True,
    pool_probs: np.ndarray | None = None,
    clean_probs: np.ndarray | None = None,
    ffn: str | Sequence[int] | None = S.REPAIR_FFN,
    attention_missed_share: float | None = None,
    ffn_max_layers: int | None = S.REPAIR_FFN_MAX_LAYERS,
    backdoor_found: bool | None = None,
    retain: float = S.RETAIN_WEIGHT,
    ffn_lr_scale: float = S.REPAIR_FFN_LR_SCALE,
    ffn_mix: float = S.REPAIR_FFN_MIX,
    ffn_base=None,
    repair_seeds: int = S.REPAIR_SEEDS,
    trigger_words: Sequence[tuple[str, int]] = (),
    trigger_share: float = S.TRIGGER_AUGMENT_SHARE,
    rare_words: Sequence[str] = (),
    rare_share: float = S.REPAIR_RARE_WORDS_SHARE,
    word_targets: Sequence[tuple[str, int]] = (),
    trigger_embedding_lr_scale: float = S.TRIGGER_EMBEDDING_LR_SCALE,
    blind_trigger_tokens: bool = S.BLIND_TRIGGER_TOKENS,
    word_labels: bool = S.LABELS_FROM_WORDS,
    label_limit: int | None = None,
    pretrained=None,
    label_judge: str = S.LABEL_JUDGE,
    judge_probs: np.ndarray | Callable[[], np.ndarray] | None = None,
    extra_pool: Sequence[tuple[str, int]] = (),
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
            docstring); an ``(layers, heads)`` bool array zeroes only those of the suspicious heads
            (``head_safety.reset_heads``).
        pretrained: ``pretrained.PretrainedWeights`` of the encoder ``model`` was fine-tuned from: the reset heads'
            query/key/value rows, biases and output columns are restored from it instead of zeroed
            (``settings.RESET_TO``; None: zeroed).
        pseudo_labels: give a flagged input a cross-entropy label when switching the suspicious heads off
            changes its prediction — the label the safe heads alone give (see ``safe_head_labels``).
        focus_labels: for flagged inputs still without a label, drop the tokens the suspicious heads focus on
            and use the changed prediction (see ``focus_removal_labels``).
        exclude_labels: flagged inputs still without a label that the model puts in the suspected target class
            get their runner-up class (see ``target_exclusion_labels``).
        exclude_min_excess: ``target_exclusion_labels``' guard (``settings.EXCLUDE_MIN_EXCESS``).
        exclude_direction: only when the suspected target is also the class the suspicious heads' focus tokens
            push the flagged inputs toward (``target_exclusion_labels``' direction guard).
        labels_leave_target: keep a safe-head or focus-removal label only when it takes an input the model puts
            in the focus tokens' class (``FocusRemoval.shift``'s largest) to another class (``leave_target_only``).
        measure_align: measure the alignment term on ``measure_texts`` before and after (two forward passes
            over them, for the report only: training does not use them); False leaves ``align_before`` /
            ``align_after`` None (the guided tour, ``settings.TOUR_SANITIZE``).
        pool_probs, clean_probs: the unrepaired model's class probabilities ``(len(pool_texts), C)`` on the
            flagged inputs and ``(M, C)`` on any clean inputs, when already at hand (e.g. from the scan's forward
            passes, ``ScanReport.pool_probs`` / ``clean_probs``): the label rules then skip those passes.
            ``clean_probs`` only feeds ``target_exclusion_labels``' guard (which clean texts does not matter:
            the share of them predicted as the suspected target).
        ffn: also train the feed-forward blocks of these layers (``ffn_layers``: ``"none"``, ``"suspicious"``,
            ``"all"``, indices or ``"auto"``; see the module docstring).
        attention_missed_share, backdoor_found: for ``ffn="auto"``: the scan's
            ``ScanReport.attention_missed_share`` and its verdict (``verdict["likely_backdoored"]``).
        ffn_max_layers: cap on the FFN layers of ``"suspicious"`` / ``"auto"`` (``ffn_layers``).
        ffn_lr_scale: the feed-forward blocks train at ``config.lr`` x this (the heads at ``config.lr``).
        ffn_mix, ffn_base: before training, move the trained feed-forward blocks this share of the way to
            ``ffn_base`` (``pretrained.PretrainedWeights``; ``pretrained.restore``); 0 or no ``ffn_base``: their
            own weights (``settings.REPAIR_FFN_MIX``).
        retain: weight of the clean-output retention term (``RetentionLoss``; 0 = off): the unrepaired model's
            probabilities on ``clean_texts`` (one forward pass before the reset) are the teacher.
        repair_seeds: train this many repairs from the same start and keep the mean of their trained slices
            (``training.train_averaged``, ``settings.REPAIR_SEEDS``).
        trigger_words: ``(word, target)`` likely trigger words (``trigger_search.marking_words``):
            ``trigger_share`` of the clean labelled texts of the classes they do not target carry one of them,
            in place of their plain versions, with their own label (``trigger_augmented``).
        rare_words: words no clean text holds (``trigger_search.absent_vocabulary``): ``rare_share`` of the clean
            labelled texts of every class carry one of them, labels kept, where no likely word went
            (``settings.REPAIR_RARE_WORDS``; ``details["rare_augmented"]`` counts them).
        trigger_embedding_lr_scale: above 0, the embedding rows of ``trigger_words``' tokens that no clean text
            holds (``trigger_token_ids``) train too, at ``config.lr`` x this (``settings.TRIGGER_EMBEDDING_LR_SCALE``).
        blind_trigger_tokens: after training, the embedding rows of ``trigger_words``' tokens that no clean text
            holds become the unknown token's (``architecture.blind_token_embeddings``,
            ``settings.BLIND_TRIGGER_TOKENS``); not on a cancelled run.
        word_labels: on a two-class model, a pool text holding one of ``trigger_words`` that the model puts in that
            word's target, unlabelled or labelled that target, gets the other class, after the rules and the judge
            (``word_other_class_labels``, ``settings.LABELS_FROM_WORDS``).
        word_targets: ``(word, target)`` marking words (``trigger_search.marking_words``, companions included): a
            pool text holding one loses a label that is that word's target (``word_target_dropped``), after the
            rules and the judge below.
        label_limit: only the first ``label_limit`` pool texts may get a pseudo-label (None: all); the others stay
            in the alignment term alone. Pass the pool highest detection score first (``excess_flags``).
        label_judge, judge_probs: check the rules' labels against a trigger-free judge's probabilities
            ``(len(pool_texts), C)`` (``reference.judged_labels``; ``"none"`` or no ``judge_probs``: unchecked).
            ``judge_probs`` may be a callable returning them: it is called only when the rules gave a label or
            the mode is ``"fill"`` (the judge's fit costs a forward pass over the clean and pool texts); a
            ``ValueError`` it raises leaves the labels unchecked, its message in ``details["judge_note"]``.
            Its fit checks ``should_stop`` before each batch, as every pass before training does (below).
        extra_pool: ``(text, label)`` pool inputs that join the repair with their label after the rules and the
            judge above (``reference.disagreement_labels``); appended to the pool in the alignment term too.

    Cancel (``should_stop``) is checked before every batch of every forward pass the repair makes
    (``forward.stopping``). Before training (the alignment measured before, the retention teacher, the label
    rules: the gate's clean accuracy, the safe heads', focus removal, exclusion, the judge's fit) it raises
    ``forward.Cancelled``, the model untouched (no head reset yet, every gate's hook removed). During training it
    ends training (``cancelled=True``); the alignment after is then not measured (``align_after`` None), and
    Cancel during that measurement also ends the run as cancelled. A cancelled run leaves the model consistent:
    the last completed optimizer step, with the frozen slices intact (and no token blinded).
    """
    t0 = time.perf_counter()
    clean_texts = list(clean_texts)
    if not clean_texts:
        raise ValueError("The clean set is empty: sanitization needs clean labelled samples.")
    suspicious = np.asarray(suspicious, dtype=bool)
    require_head_repair(model, "Sanitization")
    loss = AlignmentLoss(suspicious, beta, kind)
    retention = RetentionLoss(retain) if retain > 0 else None
    if int(repair_seeds) < 1:
        raise ValueError(f"repair_seeds must be at least 1, got {repair_seeds}.")
    if not ffn_lr_scale >= 0:
        raise ValueError(f"ffn_lr_scale must be >= 0 (a share of the heads' learning rate), got {ffn_lr_scale}.")
    if not 0.0 <= float(ffn_mix) <= 1.0:
        raise ValueError(f"ffn_mix must be in [0, 1] (the share of the way to the pretrained weights), got {ffn_mix}.")
    if not 0.0 <= float(exclude_min_excess) <= 1.0:
        raise ValueError("exclude_min_excess must be in [0, 1] (a share of the flagged inputs), got "
                         f"{exclude_min_excess}.")
    if label_limit is not None and label_limit < 0:
        raise ValueError(f"label_limit must be >= 0, got {label_limit}.")
    config = config or default_config()
    masks = head_parameter_masks(model, suspicious)
    ffn_trained = ffn_layers(ffn, suspicious, attention_missed_share, ffn_max_layers, backdoor_found)
    lr_scales = None
    if ffn_trained:
        ffn_masks = ffn_parameter_masks(model, ffn_trained)
        masks.update(ffn_masks)
        lr_scales = {name: float(ffn_lr_scale) for name in ffn_masks}
    embedded_ids: list[int] = []
    if trigger_words and trigger_embedding_lr_scale > 0:  # the likely words' own embedding rows train too
        embedded_ids = trigger_token_ids(tokenizer, [w for w, _ in trigger_words], clean_texts, config.max_length)
        emb_masks = token_embedding_masks(model, embedded_ids)
        masks.update(emb_masks)
        lr_scales = {**(lr_scales or {}), **{name: float(trigger_embedding_lr_scale) for name in emb_masks}}
    snap = snapshot_frozen(model, masks)
    if measure_texts is None:
        measure_texts = list(pool_texts or [])[:64] + clean_texts[:64]
    # every forward pass before training (the alignment before, the teacher, the label rules: the gate, focus
    # removal, exclusion, the judge's fit) checks Cancel before each batch and raises ``forward.Cancelled``; the
    # model is not touched before the reset below, so a Cancel here leaves it as it came
    with stopping(should_stop):
        before = (alignment_value(model, tokenizer, measure_texts, suspicious, kind, config.max_length)
                  if measure_align else None)
        # teacher (M, C): the unrepaired model on the clean texts, for the retention term; the label rules reuse it
        teacher = predict(model, tokenizer, clean_texts, config.max_length) if retention is not None else None
        labelled = pool_pseudo_labels(
            model, tokenizer, clean_texts, clean_labels, suspicious, pool_texts, config.max_length,
            pseudo_labels=pseudo_labels, focus_labels=focus_labels, exclude_labels=exclude_labels,
            exclude_direction=exclude_direction, exclude_min_excess=exclude_min_excess,
            labels_leave_target=labels_leave_target, pool_probs=pool_probs, clean_probs=clean_probs,
            clean_full=teacher, label_judge=label_judge, judge_probs=judge_probs, word_targets=word_targets,
            word_labels=word_labels, trigger_words=trigger_words, label_limit=label_limit)
    pool_labels = labelled.labels
    reset_mask = (suspicious if reset else None) if isinstance(reset, (bool, np.bool_)) else (
        np.asarray(reset, dtype=bool) & suspicious)
    if reset_mask is not None and reset_mask.any():
        if pretrained is not None:
            restore(model, head_parameter_masks(model, reset_mask), pretrained)
        else:
            reset_output_columns(model, reset_mask)
    ffn_mixed = 0.0
    if ffn_trained and ffn_mix > 0 and ffn_base is not None:
        restore(model, ffn_masks, ffn_base, share=float(ffn_mix))
        ffn_mixed = float(ffn_mix)
    if extra_pool:
        pool_texts = list(pool_texts or []) + [str(t) for t, _ in extra_pool]
        pool_labels = (list(pool_labels or [IGNORE_LABEL] * (len(pool_texts) - len(extra_pool)))
                       + [int(y) for _, y in extra_pool])
    examples = build_examples(clean_texts, clean_labels, pool_texts, pool_labels, teacher)
    augmented = trigger_augmented(clean_texts, clean_labels, trigger_words, trigger_share, tokenizer,
                                  config.max_length, config.seed)
    # rare words no clean text holds, in every class (target -1: a class no text has), where no likely word went
    rare = trigger_augmented(clean_texts, clean_labels, [(w, -1) for w in rare_words], rare_share, tokenizer,
                             config.max_length, config.seed + 1)
    for i, e in {**rare, **augmented}.items():  # the clean text's place (and teacher row, if any) with a word in it
        examples[i] = replaced(e, soft_label=examples[i].soft_label)
    with attention_dropout_off(model):
        res = train_averaged(model, tokenizer, examples, config, int(repair_seeds),
                             extra_loss=combine_losses(loss, retention), trainable_masks=masks, lr_scales=lr_scales,
                             evaluate=evaluate, callback=callback, should_stop=should_stop)
    after, cancelled = None, res.cancelled
    if measure_align:  # as training's own evaluation: Cancel need not wait for it (the report's number only)
        try:
            with stopping(should_stop):
                after = alignment_value(model, tokenizer, measure_texts, suspicious, kind, config.max_length)
        except Cancelled:
            cancelled = True
    unchanged = frozen_slices_unchanged(model, masks, snap)
    blinded: list[int] = []
    if blind_trigger_tokens and trigger_words and not cancelled:  # the model can no longer read these tokens
        blinded = blind_token_embeddings(
            model, embedded_ids or trigger_token_ids(tokenizer, [w for w, _ in trigger_words], clean_texts,
                                                     config.max_length),
            getattr(tokenizer, "unk_token_id", None))
    labels = loss.describe()["suspicious_heads"]
    return SanitizeResult(
        history=res.history, cancelled=cancelled, steps=res.steps, seconds=time.perf_counter() - t0,
        suspicious_heads=labels, align_before=before, align_after=after, frozen_unchanged=unchanged,
        details={"beta": beta, "kind": kind, "retain": float(retain), "clean_samples": len(clean_texts),
                 "reset_heads": [] if reset_mask is None else mask_labels(reset_mask),
                 "reset_to": None if reset_mask is None else ("pretrained" if pretrained is not None else "zero"),
                 "pretrained_source": None if pretrained is None else pretrained.source,
                 "pretrained_distance": None if pretrained is None else round(pretrained.distance, 4),
                 "pool_samples": len(pool_texts or []),
                 "pool_pseudo_labelled": sum(y != IGNORE_LABEL for y in (pool_labels or [])),
                 # each pool input's cross-entropy label (-100: alignment only), in ``pool_texts`` order
                 "pool_labels": [int(y) for y in (pool_labels or [IGNORE_LABEL] * len(pool_texts or []))],
                 **labelled.details,
                 "pool_exclusion_labelled": (sum(y != IGNORE_LABEL for y in (pool_labels or []))
                                             - labelled.labelled_before_exclusion),
                 "ffn_layers": ffn_trained, "ffn_lr_scale": float(ffn_lr_scale) if ffn_trained else None,
                 "ffn_mix": ffn_mixed,
                 "repair_seeds": int(repair_seeds),
                 "precision": res.precision,
                 "trigger_words": [str(w) for w, _ in trigger_words], "trigger_augmented": len(augmented),
                 "rare_words": [str(w) for w in rare_words], "rare_augmented": len(set(rare) - set(augmented)),
                 "trigger_embedding_tokens": len(embedded_ids),
                 "blinded_tokens": [str(t) for t in tokenizer.convert_ids_to_tokens(blinded)] if blinded else [],
                 "trainable_parameters": int(sum(int(m.sum())
                                                                                       for m in masks.values())),
                 "config": vars(config).copy()},
    )
