"""A trigger-free reference judge for the repair's pseudo-labels (our design; papers silent).

The repair gives some flagged pool inputs a cross-entropy label (``sanitize``'s rules). Every rule's label is a
*change* of the suspect model's prediction, which is right on an input the trigger flipped and wrong on one it did
not. A weak backdoor flips few of its triggered inputs, so there the rules teach the backdoor: on the SST-2 tuning
zoo the label accuracy fell to 0-29% on the weak BadNets models whose ASR rose after repair
(``bench/results/defense_tuning.md``, column "pseudo-label acc.").

The judge is a classifier that never saw the poison: a logistic regression (scikit-learn) on the *pretrained*
encoder's mean-pooled last hidden states, fit on the defender's clean labelled texts. The pretrained encoder is the
one the suspect was fine-tuned from (``pretrained.find_pretrained``), so the judge reads the same tokens with
weights that hold no trigger. It is a weak classifier (70-77% accuracy on SST-2 with 200 texts, on clean and on
BadNets, AddSent, syntactic and style-triggered texts alike: measured by hand), but its errors do not depend on
the trigger. ``judged_labels`` uses it four ways (``settings.LABEL_JUDGES``):

* ``"filter"``: a rule's label is kept only where the judge agrees with it;
* ``"fill"``: as filter, and a flagged input with no label whose prediction the judge contradicts gets the judge's
  label;
* ``"gate"``: every rule label is kept when the judge agrees with the labels at least as often as with the model's
  own predictions on the same inputs (``judge_agreement`` of each), none otherwise. Every rule's label is a change
  of the prediction, so with two classes the judge sides with exactly one of them and the line is 1/2: agreement
  = p j + (1 - p)(1 - j) for label accuracy p and judge accuracy j, above 1/2 exactly when p is, for any judge
  better than chance on each class. With C classes a fixed 1/2 would drop labels that beat the predictions they
  replace (right labels scatter the judge's errors over C - 1 classes); the comparison keeps exactly those.
* ``"gate_filter"``: the gate, and where it would drop every label, the filter instead (our design; papers
  silent). Where few of the pool's inputs carry the trigger, chance flags about as many clean inputs as triggered
  ones, and the rules' labels on the clean ones are wrong; the gate then drops them all, the right ones on the
  triggered inputs too (SST-2 tuning zoo, 5-10% of the pool triggered: ``bench/results/pool_share.md``,
  ``pool_share_gate_filter.md``).

The judge's regression weighs the classes equally (``settings.JUDGE_CLASS_WEIGHT = "balanced"``): the gate needs
a judge better than chance on *each* class, and on imbalanced data an unweighted judge puts nearly every input in
the majority class.

Measured (docs/design.md, "A judge for the pseudo-labels"; ``bench/results/archive/defense_tuning_judge_*``,
``defense_test_judge_*``); the gate was the default until session 44, the gate with the filter behind it since
(``settings.LABEL_JUDGE``). The first, unweighted judge broke the
gate's premise on OLID (two thirds of the tweets not offensive): it called 71-94% of the offensive test tweets not
offensive and agreed with the wrong labels of the BadNets -> NOT models.

    probs = judge_probs(model, tokenizer, weights, clean_texts, clean_labels, pool_texts, max_length)  # (N, C)
    labels = judged_labels(rule_labels, probs, model_probs, "filter")
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch

from . import settings as S
from .forward import ForwardBatch, run_with_cache
from .pretrained import PretrainedWeights
from .training import IGNORE_LABEL


@contextmanager
def pretrained_encoder(model, weights: PretrainedWeights):
    """Inside the block ``model``'s encoder parameters hold ``weights`` (the pooler and classifier stay); the
    model's own values come back on exit, exception or not."""
    params = {n: p for n, p in model.named_parameters() if n in weights.state}
    saved = {n: p.detach().clone() for n, p in params.items()}
    try:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(weights.state[n].to(device=p.device, dtype=p.dtype))
        yield model
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])


def _mean_pooled(batch: ForwardBatch) -> dict:
    """``(B, hidden)`` unit-length mean of the last hidden states over the real tokens."""
    h = batch.hidden_states[-1].float()  # (B, T, hidden)
    m = batch.attention_mask.unsqueeze(-1).float()  # (B, T, 1)
    v = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    return {"embedding": torch.nn.functional.normalize(v, dim=-1)}


def pretrained_embeddings(model, tokenizer, weights: PretrainedWeights, texts: Sequence[str],
                          max_length: int) -> np.ndarray:
    """``(N, hidden)`` mean-pooled embeddings of ``texts`` by the pretrained encoder (``weights``)."""
    if not texts:
        return np.zeros((0, int(model.config.hidden_size)), dtype=np.float32)
    with pretrained_encoder(model, weights):
        cache = run_with_cache(model, tokenizer, [str(t) for t in texts], max_length=max_length,
                               reduce=_mean_pooled, reduce_hidden=True, reduce_attentions=False)
    return cache.reduced["embedding"]


def judge_probs(model, tokenizer, weights: PretrainedWeights, clean_texts: Sequence[str],
                clean_labels: Sequence[int], texts: Sequence[str], max_length: int,
                c: float = S.JUDGE_C, class_weight: str | None = S.JUDGE_CLASS_WEIGHT) -> np.ndarray:
    """``(len(texts), C)`` the judge's class probabilities on ``texts`` (C = ``model.config.num_labels``; a class
    absent from ``clean_labels`` gets 0). Needs at least two classes among ``clean_labels``. ``class_weight``:
    scikit-learn's (``"balanced"``: each class weighs the same in the fit, whatever its share)."""
    from sklearn.linear_model import LogisticRegression

    n_labels = int(model.config.num_labels)
    y = np.asarray(clean_labels, dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise ValueError("The reference judge needs clean texts of at least two classes.")
    x = pretrained_embeddings(model, tokenizer, weights, list(clean_texts) + list(texts), max_length)
    clf = LogisticRegression(C=float(c), class_weight=class_weight, max_iter=2000).fit(x[: len(y)], y)
    out = np.zeros((len(texts), n_labels), dtype=np.float32)
    if len(texts):
        out[:, clf.classes_] = clf.predict_proba(x[len(y):])
    return out


def judge_agreement(labels: Sequence[int], probs: np.ndarray, of: Sequence[int] | None = None) -> float | None:
    """Share of the labelled pool inputs (``labels`` not ``IGNORE_LABEL``) on which the judge's argmax (``probs``
    ``(N, C)``) is the label, or with ``of`` (N classes, e.g. the model's predictions) that class; None when
    nothing is labelled."""
    verdict = np.asarray(probs).argmax(1)
    ref = labels if of is None else of
    pairs = [(int(r), int(v)) for y, r, v in zip(labels, ref, verdict) if int(y) != IGNORE_LABEL]
    return None if not pairs else float(np.mean([r == v for r, v in pairs]))


def gate_keeps(labels: Sequence[int], probs: np.ndarray, model_probs: np.ndarray) -> bool:
    """The gate's line (module docstring): True when the judge (``probs`` ``(N, C)``) agrees with the rule
    ``labels`` at least as often as with the model's predictions (``model_probs`` ``(N, C)``) on the labelled
    inputs, or when nothing is labelled."""
    agree = judge_agreement(labels, probs)
    return agree is None or agree >= judge_agreement(labels, probs, np.asarray(model_probs).argmax(1))


def judged_labels(labels: Sequence[int], probs: np.ndarray, model_probs: np.ndarray | None,
                  mode: str) -> list[int]:
    """The rules' pool ``labels`` (``IGNORE_LABEL``: none) checked by the judge's ``probs`` ``(N, C)``
    (see the module docstring). ``model_probs`` ``(N, C)``: the suspect's probabilities, needed by ``"fill"``."""
    if mode not in S.LABEL_JUDGES:
        raise ValueError(f"label_judge must be one of {', '.join(S.LABEL_JUDGES)}, got '{mode}'.")
    labels = [int(y) for y in labels]
    if mode == "none":
        return labels
    probs = np.asarray(probs)
    if probs.shape[0] != len(labels):
        raise ValueError(f"the judge gave {probs.shape[0]} rows for {len(labels)} pool inputs.")
    if mode in ("gate", "gate_filter", "fill") and model_probs is None:
        raise ValueError(f"label_judge='{mode}' needs the model's probabilities on the pool.")
    verdict = probs.argmax(1)
    if mode in ("gate", "gate_filter") and gate_keeps(labels, probs, model_probs):
        return labels
    if mode == "gate":
        return [IGNORE_LABEL] * len(labels)
    out = [y if y == IGNORE_LABEL or y == int(v) else IGNORE_LABEL for y, v in zip(labels, verdict)]
    if mode == "fill":
        predicted = np.asarray(model_probs).argmax(1)
        out = [int(v) if y == IGNORE_LABEL and old == IGNORE_LABEL and int(v) != int(p) else y
               for y, old, v, p in zip(out, labels, verdict, predicted)]
    return out


def prior_shifted(probs: np.ndarray, prior: Sequence[float]) -> np.ndarray:
    """``(N, C)`` class-balanced judge probabilities moved to the class shares ``prior`` ``(C,)`` (Bayes' rule: a
    balanced fit behaves as if every class were equally likely, so each column is weighed by its share and rows are
    renormalised). Rows with no mass stay zero."""
    out = np.asarray(probs, dtype=float) * np.asarray(prior, dtype=float)[None, :]
    total = out.sum(1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def disagreement_labels(model_probs: np.ndarray, probs: np.ndarray, min_z: float = S.JUDGE_FLAGS_MIN_Z,
                        min_conf: float = S.JUDGE_FLAGS_MIN_CONF,
                        prior: Sequence[float] | None = None) -> tuple[list[int], list[int], dict]:
    """Pool inputs the judge takes out of the suspected target class (our design; papers silent).

    A trigger sends its inputs to the target class whatever they say, and the judge, blind to the trigger, reads
    what they say: among the inputs the suspect model puts in the target class the judge disagrees more often
    than among those it puts elsewhere. The suspected target is the class with the highest disagreement rate. It
    is taken only when its rate exceeds the other classes' by ``min_z`` standard errors (a two-proportion z
    test): a clean model's disagreements are the judge's and the model's own errors, spread over the classes.
    Then only the excess is labelled: ``k`` = the target's disagreements minus what the other classes' rate would
    give, the ``k`` with the largest gap ``log p_model(target) - log p_judge(target)`` (a trigger makes the model
    sure), each with the judge's class, among those the judge gives its class at least ``min_conf``
    (``settings.JUDGE_FLAGS_MIN_CONF``: a label the judge is unsure of is as often wrong as right, and a wrong label
    costs clean accuracy).

    ``prior`` ``(C,)`` (``settings.JUDGE_FLAGS_PRIOR``; off by default): the class shares the model was trained
    toward (the clean labelled texts'); ``prior_shifted`` moves the class-balanced judge to them first. Measured to
    hurt where the judge is unsure (OLID): its weak evidence, weighed by the prior, gave one class nearly every
    input.

    Shapes: ``model_probs``, ``probs`` ``(N, C)`` (the suspect's and the judge's). Returns the indices, their
    labels and a summary (target, per-class disagreement rates, z, excess, the candidates left out as unsure).
    """
    model_probs, probs = np.asarray(model_probs, dtype=float), np.asarray(probs, dtype=float)
    if prior is not None:
        probs = prior_shifted(probs, prior)
    pred, verdict = model_probs.argmax(1), probs.argmax(1)
    dis = verdict != pred
    rates = {int(c): float(dis[pred == c].mean()) for c in np.unique(pred)}
    info = {"target": None, "rates": {c: round(r, 4) for c, r in rates.items()}, "z": None, "excess": 0,
            "unsure": 0}
    if len(rates) < 2:
        return [], [], info
    target = max(rates, key=rates.get)
    inside, outside = pred == target, pred != target
    n1, n0 = int(inside.sum()), int(outside.sum())
    p1, p0 = rates[target], float(dis[outside].mean())
    p = float(dis.mean())
    se = (p * (1 - p) * (1 / n1 + 1 / n0)) ** 0.5
    z = (p1 - p0) / se if se > 0 else 0.0
    info["z"] = round(float(z), 3)
    if z < min_z:
        return [], [], info
    cand = np.flatnonzero(inside & dis)
    k = int(round(len(cand) - p0 * n1))
    info.update(target=int(target), excess=k)
    if k <= 0:
        return [], [], info
    sure = probs[cand, verdict[cand]] >= min_conf
    info["unsure"] = int((~sure).sum())
    cand = cand[sure]
    gap = np.log(model_probs[cand, target] + 1e-9) - np.log(probs[cand, target] + 1e-9)
    idx = [int(i) for i in cand[np.argsort(-gap, kind="stable")[:k]]]
    return idx, [int(verdict[i]) for i in idx], info
