"""Head safety evaluation: which attention heads a trigger captured (suspicious) and which are safe.

For every head ``(l, h)`` (our design; the defense paper arXiv 2511.13789 names the two ingredients, inter-head
similarity and importance, but publishes no formula):

* ``collapse``: how much more the head joins the other heads of its layer on one common key on flagged inputs
  than on clean inputs — the difference of the mean ``common`` statistic (see ``detection.attention_stats``)
  divided by its clean standard deviation (a z-like number; negative values are clipped to 0 when combining).
  ``collapse_feature`` switches to ``"sim"`` (mean cosine similarity to the layer's other heads), ``"peak"``
  or ``"focus"``; ``"common"`` (``DEFAULT_COLLAPSE``) is our choice after pilots on the benchmark's models (not
  among the published results); the suspicious heads it names are listed per model in
  ``bench/results/defense.md``, "Model-level verdict".
* ``importance``: mean over flagged inputs of ``|d margin / d gate|``, where ``gate`` is the head's gate
  (``architecture.head_gates``, 1 = untouched) and ``margin`` is the logit of the model's OWN predicted class
  minus the largest other logit. Flagged inputs have no trustworthy labels, so the model's prediction stands in;
  the margin (not cross-entropy) is used because cross-entropy's gradient vanishes on the confident predictions
  a trigger produces. It is the first-order estimate of what ablating the head would do to the decision.
* ``score = collapse⁺ / max(collapse⁺) × importance / max(importance)`` in [0, 1].

Split rule (knobs; defaults ``DEFAULT_REL_THRESHOLD``, ``DEFAULT_MAX_FRACTION``, our design): a head is
suspicious when ``score >= rel_threshold`` (relative to the best head), keeping at most ``max_fraction`` of all
heads (highest scores first) and at most
``heads - 1`` per layer so each layer keeps a safe head for the alignment target; ``top_k`` replaces the
threshold by a fixed count. Every other head is safe.

Without flagged inputs (no pool, or nothing in it crossed the threshold) the defender has nothing that shows the
trigger; we then use the clean inputs with the highest detection scores (the top ``fallback_frac``)
as stand-ins and mark the result ``basis="clean fallback"`` — it cannot see a trigger that never occurs in clean
data, so its split is weak (our design; paper silent). We deliberately do NOT synthesise candidates by inserting
rare tokens: a candidate list would smuggle trigger knowledge into a trigger-agnostic method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .architecture import head_gates
from . import settings as S
from .detection import AttentionStats, attention_stats
from .forward import model_device, run_with_cache
from .head_metrics import head_label

DEFAULT_REL_THRESHOLD = S.REL_THRESHOLD
DEFAULT_MAX_FRACTION = S.MAX_FRACTION
DEFAULT_FALLBACK_FRAC = S.FALLBACK_FRAC
DEFAULT_IMPORTANCE_INPUTS = S.IMPORTANCE_INPUTS


@dataclass
class HeadSafety:
    """Per-head results, all ``(layers, heads)``.

    Attributes:
        collapse: similarity rise on flagged vs clean inputs, in clean standard deviations.
        importance: mean ``|d margin / d gate|`` on flagged inputs.
        score: combined score in [0, 1].
        suspicious: True for the heads to repair.
        basis: ``"flagged"`` or ``"clean fallback"``.
        rule: the knobs used.
    """

    collapse: np.ndarray
    importance: np.ndarray
    score: np.ndarray
    suspicious: np.ndarray
    basis: str = "flagged"
    n_flagged: int = 0
    rule: dict = field(default_factory=dict)

    @property
    def suspicious_labels(self) -> list[str]:
        """``["L3H7", ...]`` ordered by decreasing score."""
        idx = np.argwhere(self.suspicious)
        idx = sorted(idx.tolist(), key=lambda lh: -self.score[lh[0], lh[1]])
        return [head_label(int(l), int(h)) for l, h in idx]

    @property
    def safe(self) -> np.ndarray:
        return ~self.suspicious

    def to_dict(self) -> dict:
        return {
            "collapse": self.collapse.round(4).tolist(),
            "importance": self.importance.round(6).tolist(),
            "score": self.score.round(4).tolist(),
            "suspicious": self.suspicious.astype(bool).tolist(),
            "suspicious_heads": self.suspicious_labels,
            "basis": self.basis,
            "n_flagged": int(self.n_flagged),
            "rule": dict(self.rule),
        }


COLLAPSE_FEATURES = {"common": "common", "sim": "head_sim", "peak": "head_peak", "focus": "focus"}
DEFAULT_COLLAPSE = S.COLLAPSE


def collapse_scores(clean: AttentionStats, flagged: AttentionStats, feature: str = DEFAULT_COLLAPSE) -> np.ndarray:
    """``(L, H)``: (mean flagged feature - mean clean feature) / clean standard deviation."""
    if feature not in COLLAPSE_FEATURES:
        raise ValueError(f"collapse feature must be one of {', '.join(COLLAPSE_FEATURES)}, got '{feature}'.")
    if len(clean) < 2 or len(flagged) == 0:
        raise ValueError("collapse needs at least 2 clean inputs and 1 flagged input.")
    c, f = getattr(clean, COLLAPSE_FEATURES[feature]), getattr(flagged, COLLAPSE_FEATURES[feature])
    sd = np.maximum(c.std(0), 1e-6)
    return ((f.mean(0) - c.mean(0)) / sd).astype(np.float64)


def gate_importance(
    model,
    tokenizer,
    texts: Sequence[str],
    max_length: int = S.MAX_LENGTH,
    max_inputs: int = DEFAULT_IMPORTANCE_INPUTS,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``(L, H)`` mean over inputs of ``|d margin / d gate|`` (see the module docstring).

    One input at a time (``forward.run_with_cache`` with ``grad=True``, batches of one: per-input absolute
    values; a batch gradient would let inputs cancel out). At most
    ``max_inputs`` texts are used, a seeded sample when there are more. ``progress(done, total)`` after each input.
    """
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("Importance needs at least one input.")
    if len(texts) > max_inputs:
        pick = np.random.default_rng(seed).choice(len(texts), max_inputs, replace=False)
        texts = [texts[i] for i in sorted(pick)]
    L = int(model.config.num_hidden_layers)
    H = int(model.config.num_attention_heads)
    gates = torch.ones(L, H, requires_grad=True, device=model_device(model))

    def margin_grad(batch) -> dict[str, torch.Tensor]:  # batch of one input: logits (1, C)
        logits = batch.logits[0].float()
        pred = int(logits.argmax())
        others = torch.cat([logits[:pred], logits[pred + 1:]])
        (grad,) = torch.autograd.grad(logits[pred] - others.max(), gates)
        return {"grad": grad.abs()[None]}  # (1, L, H)

    req = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with head_gates(model, gates):
            cache = run_with_cache(model, tokenizer, texts, max_length=max_length, batch_size=1, grad=True,
                                   reduce=margin_grad, sort_by_length=False, should_stop=should_stop,
                                   progress=progress)
    finally:
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
    total = np.zeros((L, H))
    for g in cache.reduced["grad"]:  # (L, H) per input, summed in input order
        total += g
    return total / len(texts)


def split_heads(
    score: np.ndarray,
    rel_threshold: float = DEFAULT_REL_THRESHOLD,
    max_fraction: float = DEFAULT_MAX_FRACTION,
    top_k: int | None = None,
) -> np.ndarray:
    """``(L, H)`` bool suspicious mask from a score (see the module docstring for the rule)."""
    score = np.asarray(score, dtype=float)
    L, H = score.shape
    if not 0 < max_fraction <= 1:
        raise ValueError("max_fraction must be in (0, 1].")
    cap = max(1, int(np.floor(max_fraction * L * H))) if top_k is None else int(top_k)
    if cap < 1:
        raise ValueError("top_k must be at least 1.")
    best = float(score.max())
    out = np.zeros((L, H), dtype=bool)
    if best <= 0:
        return out
    per_layer = np.zeros(L, dtype=int)
    for flat in np.argsort(-score, axis=None, kind="stable"):
        l, h = np.unravel_index(flat, score.shape)
        if out.sum() >= cap:
            break
        if top_k is None and score[l, h] < rel_threshold * best:
            break
        if score[l, h] <= 0 or per_layer[l] >= H - 1:
            continue
        out[l, h] = True
        per_layer[l] += 1
    return out


def repair_heads(
    heads: HeadSafety,
    verdict_score: float | None,
    weak_verdict: float = S.WEAK_VERDICT,
    weak_top_k: int = S.WEAK_TOP_K,
    min_heads: int = S.REPAIR_MIN_HEADS,
) -> np.ndarray:
    """``(L, H)`` bool: the heads our repair trains (our design; papers silent).

    The scan's suspicious set, unless its verdict score is below ``weak_verdict``: then the evidence is weak (most
    flagged inputs are clean) and only the ``weak_top_k`` highest-scoring heads are kept
    (``split_heads(score, top_k=weak_top_k)``; see ``settings.WEAK_VERDICT``). ``weak_top_k`` 0 or a missing verdict
    keeps the scan's set. A scan's set smaller than ``min_heads`` is widened to the ``min_heads`` highest-scoring
    heads with a positive score, at most the scan's ``max_fraction`` of all heads (``settings.REPAIR_MIN_HEADS``;
    0 = off); a set the weak-evidence cap narrowed stays as asked.
    """
    k = int(weak_top_k or 0)
    if k < 0:
        raise ValueError("weak_top_k must be 0 (off) or more.")
    floor = int(min_heads or 0)
    if floor < 0:
        raise ValueError("min_heads must be 0 (off) or more.")
    if k and verdict_score is not None and float(verdict_score) < weak_verdict:
        return split_heads(heads.score, top_k=k)
    mask = heads.suspicious.copy()
    cap = int(np.floor(float(heads.rule.get("max_fraction", DEFAULT_MAX_FRACTION)) * mask.size))
    floor = min(floor, cap)
    if floor and int(mask.sum()) < floor:
        mask |= split_heads(heads.score, top_k=floor)
    return mask


def cap_heads(score: np.ndarray, repaired: np.ndarray, max_heads: int) -> np.ndarray:
    """``(L, H)`` bool: at most ``max_heads`` of the ``repaired`` heads, the highest-scoring (ties: the earlier head).

    ``score`` ``(L, H)``: the scan's head score (``HeadSafety.score``); ``repaired`` ``(L, H)`` bool. ``max_heads``
    0, or at least as many as are repaired, keeps them all. Our repair applies it when it trains no feed-forward
    block (``settings.REPAIR_HEAD_ONLY_MAX_HEADS``; our design, papers silent).
    """
    repaired = np.asarray(repaired, dtype=bool)
    k = int(max_heads or 0)
    if k < 0:
        raise ValueError("max_heads must be 0 (no cap) or more.")
    if k == 0 or int(repaired.sum()) <= k:
        return repaired.copy()
    score = np.asarray(score, dtype=float)
    if score.shape != repaired.shape:
        raise ValueError(f"score {score.shape} and repaired heads {repaired.shape} differ in shape.")
    order = np.argsort(-np.where(repaired, score, -np.inf), axis=None, kind="stable")[:k]
    out = np.zeros_like(repaired)
    out.flat[order] = True
    return out


def trigger_head_concentration(model, tokenizer, examples, max_length: int, batch_size: int = 32) -> np.ndarray:
    """``(L, H)``: per head, the attention mass real queries send to the trigger's word pieces
    (``head_metrics.trigger_concentration``), averaged over ``examples`` (``training.Example`` with
    ``trigger_spans``; one ``forward.run_with_cache`` pass). Examples whose trigger truncation cut off are left out;
    zeros when none is left."""
    from .head_metrics import trigger_concentration
    from .training import trigger_token_positions

    examples = list(examples)
    L, H = int(model.config.num_hidden_layers), int(model.config.num_attention_heads)
    positions = [trigger_token_positions(tokenizer, ex, max_length) for ex in examples]
    keep = np.array([len(p) > 0 for p in positions], dtype=bool)
    if not keep.any():
        return np.zeros((L, H))

    def reduce(b):
        mask = torch.zeros(b.input_ids.shape, dtype=torch.bool)  # (B, T) the trigger's word pieces
        for row, i in enumerate(b.index):
            mask[row, positions[int(i)]] = True
        per_layer = [trigger_concentration(att.float().cpu(), mask, b.attention_mask.float().cpu())
                     for att in b.attentions]  # L x (B, H)
        return {"conc": torch.stack(per_layer, 1)}  # (B, L, H)

    cache = run_with_cache(model, tokenizer, [ex.text for ex in examples], max_length=max_length,
                           batch_size=batch_size, reduce=reduce)
    return np.asarray(cache.reduced["conc"])[keep].mean(0)


def word_heads(model, tokenizer, clean_texts: Sequence[str], words: Sequence[str], max_length: int,
               n_texts: int = S.REPAIR_WORD_HEADS_TEXTS, seed: int = 0) -> np.ndarray:
    """``(L, H)``: how much each head attends to the pool's likely trigger ``words`` (``trigger_search``), read on
    the first ``n_texts`` clean texts with one of the words inserted at a seeded random word position inside the
    reading window (the words take turns; ``trigger_head_concentration``). Our design (papers silent): the words
    are the scan's finding, not trigger knowledge, and BadNets' attention goes to a few last-layer heads that the
    scan's flags on a weak backdoor often miss (``bench/results/trigger_heads_check_olid.md``)."""
    from .training import Example
    from .triggers import insert_trigger

    words = [str(w) for w in words if str(w).strip()]
    texts = [str(t) for t in clean_texts[: max(0, int(n_texts))]]
    if not words or not texts:
        L, H = int(model.config.num_hidden_layers), int(model.config.num_attention_heads)
        return np.zeros((L, H))
    rng = np.random.default_rng(seed + 29)
    examples = []
    for i, text in enumerate(texts):
        new = insert_trigger(text, words[i % len(words)], int(rng.integers(0, len(text.split()) + 1)),
                             tokenizer=tokenizer, max_length=max_length)
        examples.append(Example(new.text, 0, trigger_spans=(new.span,)))
    return trigger_head_concentration(model, tokenizer, examples, max_length)


def add_word_heads(repaired: np.ndarray, concentration: np.ndarray, k: int) -> np.ndarray:
    """``(L, H)`` bool: the ``repaired`` heads and the ``k`` heads with the largest ``concentration`` (``(L, H)``,
    ``word_heads``; ties: the earlier head) that are not yet repaired, leaving every layer at least one head that is
    not (the alignment's safe target). ``k`` 0 adds none (``settings.REPAIR_WORD_HEADS``)."""
    repaired = np.asarray(repaired, dtype=bool)
    k = int(k or 0)
    if k < 0:
        raise ValueError("word_heads must be 0 (off) or more.")
    conc = np.asarray(concentration, dtype=float)
    if conc.shape != repaired.shape:
        raise ValueError(f"concentration {conc.shape} and repaired heads {repaired.shape} differ in shape.")
    out = repaired.copy()
    added = 0
    for i in np.argsort(-conc, axis=None, kind="stable"):
        if added >= k:
            break
        l, h = divmod(int(i), conc.shape[1])
        if out[l, h] or conc[l, h] <= 0 or int(out[l].sum()) >= conc.shape[1] - 1:
            continue
        out[l, h] = True
        added += 1
    return out


def reset_heads(score: np.ndarray, repaired: np.ndarray, top_k: int = S.RESET_TOP_K) -> np.ndarray:
    """``(L, H)`` bool: the repaired heads whose output columns the repair zeroes first (our design; papers silent).

    ``score`` ``(L, H)``: the scan's head score (``HeadSafety.score``); ``repaired`` ``(L, H)`` bool: the heads the
    repair trains (``repair_heads``). With ``top_k`` > 0 only the ``top_k`` highest-scoring repaired heads are reset
    (ties: the earlier head); the others keep their weights and train from there. ``top_k`` 0, or at least as many as
    are repaired, resets them all. See ``settings.RESET_TOP_K``.
    """
    repaired = np.asarray(repaired, dtype=bool)
    if int(top_k or 0) < 0:
        raise ValueError("reset_top_k must be 0 (every repaired head) or more.")
    return cap_heads(score, repaired, top_k)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=float), 0, None)
    m = x.max()
    return x / m if m > 0 else x


def evaluate_heads(
    model,
    tokenizer,
    clean_texts: Sequence[str],
    flagged_texts: Sequence[str] | None = None,
    *,
    clean_stats: AttentionStats | None = None,
    flagged_stats: AttentionStats | None = None,
    clean_scores: np.ndarray | None = None,
    rel_threshold: float = DEFAULT_REL_THRESHOLD,
    max_fraction: float = DEFAULT_MAX_FRACTION,
    top_k: int | None = None,
    fallback_frac: float = DEFAULT_FALLBACK_FRAC,
    importance_inputs: int = DEFAULT_IMPORTANCE_INPUTS,
    collapse_feature: str = DEFAULT_COLLAPSE,
    max_length: int = S.MAX_LENGTH,
    batch_size: int = 32,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> HeadSafety:
    """Rate every head and split them into suspicious and safe (see the module docstring).

    Args:
        clean_texts: the defender's clean inputs (at least 4).
        flagged_texts: inputs the detector flagged; empty/None triggers the clean fallback, which needs
            ``clean_scores`` (detection scores of ``clean_texts``) to pick the stand-ins.
        clean_stats, flagged_stats: precomputed ``attention_stats`` to skip the forward passes.
        progress: ``progress(done, total)`` after each input whose gradient the importance reads (the longest
            part when the attention statistics are given).
    """
    clean_texts = [str(t) for t in clean_texts]
    if len(clean_texts) < 4:
        raise ValueError(f"Head safety needs at least 4 clean texts (got {len(clean_texts)}).")
    if clean_stats is None:
        clean_stats = attention_stats(model, tokenizer, clean_texts, max_length, batch_size,
                                      should_stop=should_stop)
    flagged_texts = [str(t) for t in (flagged_texts or [])]
    basis = "flagged"
    ref = clean_stats
    if not flagged_texts:
        basis = "clean fallback"
        if clean_scores is None:
            raise ValueError("Without flagged inputs, pass clean_scores to pick the clean fallback inputs.")
        k = max(1, int(round(fallback_frac * len(clean_texts))))
        top = np.argsort(-np.asarray(clean_scores), kind="stable")[:k]
        rest = np.setdiff1d(np.arange(len(clean_texts)), top)
        flagged_texts = [clean_texts[i] for i in top]
        flagged_stats = clean_stats.subset(top)
        ref = clean_stats.subset(rest)
    elif flagged_stats is None:
        flagged_stats = attention_stats(model, tokenizer, flagged_texts, max_length, batch_size,
                                        should_stop=should_stop)
    collapse = collapse_scores(ref, flagged_stats, collapse_feature)
    importance = gate_importance(model, tokenizer, flagged_texts, max_length, importance_inputs, seed,
                                 should_stop, progress)
    score = _normalise(collapse) * _normalise(importance)
    suspicious = split_heads(score, rel_threshold, max_fraction, top_k)
    rule = {"rel_threshold": rel_threshold, "max_fraction": max_fraction, "top_k": top_k,
            "fallback_frac": fallback_frac, "importance_inputs": importance_inputs,
            "collapse_feature": collapse_feature,
            "combine": "collapse+/max x importance/max"}
    return HeadSafety(collapse, importance, score, suspicious, basis, len(flagged_texts), rule)
