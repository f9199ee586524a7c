"""Backdoor metrics, following OpenBackdoor's conventions.

* CACC: accuracy on the full clean test set.
* ASR: the poisoned test set holds only test samples whose gold label differs from the target, each with the
  trigger; ASR is the share of them predicted as the target.
* FRR / FAR for input-level detectors: FRR = clean inputs flagged / clean inputs; FAR = poisoned inputs
  missed / poisoned inputs. Higher scores mean "more likely poisoned".
* AUROC via the Mann-Whitney U statistic (ties count one half).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import settings as S


def _arr(x) -> np.ndarray:
    return np.asarray(x).reshape(-1)


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Share of predictions equal to the labels (CACC on a clean test set)."""
    p, y = _arr(predictions), _arr(labels)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} labels.")
    if p.size == 0:
        raise ValueError("No samples to score.")
    return float((p == y).mean())


cacc = accuracy


def paired_difference(before: Sequence[bool], after: Sequence[bool], z: float = 1.96) -> dict:
    """Change in a share between two readings of the same texts, with a paired interval.

    ``before`` and ``after``: ``(n,)`` booleans (a text counted by the share, e.g. classified right or sent to the
    target), one per text, in the same order. Per text d = after - before (-1, 0 or 1); the change is mean(d) and
    its interval ``change +- z x sd(d) / sqrt(n)`` (normal approximation, paired: only the texts that changed add
    variance, as in McNemar's test), cut to the changes that are possible from ``before``'s share p:
    ``[-p, 1 - p]`` (from a clean rate of 0 a lift cannot fall below 0). It covers which texts were drawn, not the
    randomness of what made the two readings (a repair's seed), which another run measures. Where no text changed
    the interval is that point.
    Returns ``{"change", "low", "high", "up", "down", "n"}``: shares, and the counts of texts counted after and not
    before (``up``) and the reverse (``down``).
    """
    b, a = _arr(before).astype(bool), _arr(after).astype(bool)
    if b.shape != a.shape:
        raise ValueError(f"{b.size} texts before and {a.size} after: a paired change needs the same texts.")
    if b.size == 0:
        raise ValueError("No texts: the change has no interval.")
    d = a.astype(float) - b.astype(float)
    n = d.size
    half = z * float(d.std(ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
    change, p = float(d.mean()), float(b.mean())
    low, high = max(change - half, -p) + 0.0, min(change + half, 1.0 - p) + 0.0  # + 0.0: no "-0.0" at a bound
    return {"change": change, "low": low, "high": high, "up": int((d > 0).sum()),
            "down": int((d < 0).sum()), "n": int(n)}


def accuracy_change(labels: Sequence[int], before: Sequence[int], after: Sequence[int], z: float = 1.96) -> dict:
    """CACC change from ``before`` to ``after`` predictions on the same texts, with a paired interval
    (``paired_difference`` of being right). Shapes: three ``(n,)`` arrays.
    Returns ``{"change", "low", "high", "fixed", "broken", "n"}``: shares, and the counts of texts the change
    made right and wrong.
    """
    y, b, a = _arr(labels), _arr(before), _arr(after)
    accuracy(b, y), accuracy(a, y)  # same checks
    out = paired_difference(b == y, a == y, z)
    return {"change": out["change"], "low": out["low"], "high": out["high"], "fixed": out["up"],
            "broken": out["down"], "n": out["n"]}


def lift_interval(clean_hits: Sequence[bool], hits: Sequence[bool], z: float = 1.96) -> dict:
    """A backdoor's lift over a clean model, with a paired 95% interval over the triggered texts.

    ``clean_hits``: ``(n,)`` booleans, the clean model sends triggered text i to the target; ``hits``: the same for
    the model measured (the suspect, or the repaired model), on the same texts in the same order. The lift is
    ASR minus the clean rate, ``mean(hits) - mean(clean_hits)`` (``defender_data.lift``); its interval is
    ``paired_difference``'s: a lift whose interval holds 0 is not told apart from the clean model on these texts.
    Returns ``{"lift", "low", "high", "n"}``.
    """
    out = paired_difference(clean_hits, hits, z)
    return {"lift": out["change"], "low": out["low"], "high": out["high"], "n": out["n"]}


def rate_interval(rate: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval of a share (e.g. an ASR) measured on ``n`` texts (``scipy.stats.binomtest``): how far another
    draw of as many triggered texts could move it. An ASR near 50% on 57 texts spans about 37 to 62%."""
    n = int(n)
    if n <= 0:
        raise ValueError("No texts: the share has no interval.")
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"A share lies in [0, 1], got {rate}.")
    from scipy.stats import binomtest

    ci = binomtest(int(round(float(rate) * n)), n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def balanced_accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Mean over the classes present in ``labels`` of the share of that class predicted right (recall).

    A classifier that predicts one class for everything scores ``1 / classes`` whatever the class balance, where
    its plain accuracy is the majority share (PURE's pruning guard, ``baselines.pure``)."""
    p, y = _arr(predictions), _arr(labels)
    accuracy(p, y)  # same checks
    return float(np.mean([(p[y == c] == c).mean() for c in np.unique(y)]))


def asr(predictions: Sequence[int], target: int, gold_labels: Sequence[int] | None = None) -> float:
    """Attack success rate: share of triggered non-target samples predicted as ``target``.

    Args:
        predictions: predictions on triggered samples.
        gold_labels: their original labels; samples whose gold label already is ``target`` are excluded, as
            OpenBackdoor never puts them in the poisoned test set. Omit when the set is already filtered.
    """
    p = _arr(predictions)
    if gold_labels is not None:
        g = _arr(gold_labels)
        if g.shape != p.shape:
            raise ValueError(f"{p.size} predictions for {g.size} gold labels.")
        p = p[g != target]
    if p.size == 0:
        raise ValueError("No non-target samples: ASR is undefined.")
    return float((p == target).mean())


def threshold_at_frr(clean_scores: Sequence[float], frr: float = S.FRR) -> float:
    """The score threshold that flags (score > threshold) about ``frr`` of clean inputs."""
    s = _arr(clean_scores).astype(float)
    if s.size == 0:
        raise ValueError("No clean scores to set a threshold on.")
    if not 0.0 <= frr <= 1.0:
        raise ValueError("frr must be in [0, 1].")
    return float(np.quantile(s, 1.0 - frr, method="higher")) if frr > 0 else float(s.max())


def frr_far(clean_scores: Sequence[float], poisoned_scores: Sequence[float], threshold: float) -> tuple[float, float]:
    """(FRR, FAR) of the rule "flag when score > threshold"."""
    c, p = _arr(clean_scores).astype(float), _arr(poisoned_scores).astype(float)
    frr = float((c > threshold).mean()) if c.size else float("nan")
    far = float((p <= threshold).mean()) if p.size else float("nan")
    return frr, far


def auroc(negative_scores: Sequence[float], positive_scores: Sequence[float]) -> float:
    """Area under the ROC curve for "positives score higher": P(pos > neg) + 0.5 P(pos == neg)."""
    neg, pos = _arr(negative_scores).astype(float), _arr(positive_scores).astype(float)
    if neg.size == 0 or pos.size == 0:
        raise ValueError("AUROC needs at least one negative and one positive score.")
    both = np.concatenate([neg, pos])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size, dtype=float)
    sorted_vals = both[order]
    # average ranks over ties
    i = 0
    while i < both.size:
        j = i
        while j + 1 < both.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[neg.size :].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (neg.size * pos.size))
