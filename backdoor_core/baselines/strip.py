"""STRIP for text (Gao et al. 2019; text variant as in STRIP-ViTA / OpenBackdoor), an input-level detector.

Each input is perturbed ``repeats`` times: ``swap_ratio`` of its words (at distinct random positions) are
replaced by words from the defender's clean texts. A triggered input tends to keep its (target) prediction
whatever else changes, so the mean entropy of its perturbed predictions is LOW. Score = minus that mean entropy
(higher = more suspicious), thresholded at a chosen FRR on clean dev data like our detector (the paper uses FRR
1%; we report AUROC, which needs no threshold).

Where the replacement words come from (``pool``):

* ``"all"``: every whitespace word of the clean texts, sampled with repetition — frequent words ("the", ",")
  dominate, so a perturbed copy mostly loses content words and gains stop words.
* ``"tfidf"``: the text recipe OpenBackdoor follows — pick one clean text at random and write its words in
  order of TF-IDF (its most distinctive words first) into the chosen positions.
* ``"opposite"`` (our variant of the TF-IDF recipe): the clean text is drawn from those whose label differs from
  the model's prediction on the input, so every perturbation pushes a clean input toward another class; only a
  trigger holds the prediction in place.

Class-conditional calibration (``class_calibrated``, our design): how stable a clean input is under perturbation
depends on its class (on a 2-class model, the target class's own clean inputs keep their prediction about as well
as triggered ones), so a raw STRIP score partly measures the class mix. Each score is z-scored against the clean
dev inputs the model puts in the same class, which removes that bias without knowing the target.

Defaults (``tfidf`` words, ``insert``, ``entropy``; ``repeats = 10``, ``swap_ratio = 0.5``) and the measurements
behind them: ``bench/results/strip_check_tiny.md`` (``bench/strip_check.py``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from ..forward import predict
from .. import settings as S

DEFAULT_REPEATS = S.STRIP_REPEATS
DEFAULT_SWAP_RATIO = S.STRIP_SWAP_RATIO
POOLS = ("all", "tfidf", "opposite")
MODES = ("replace", "insert")
SCORES = ("entropy", "keep")
DEFAULT_POOL = "tfidf"
DEFAULT_MODE = "insert"
DEFAULT_SCORE = "entropy"


def perturb(text: str, words: Sequence[str], swap_ratio: float, rng: random.Random) -> str:
    """``pool="all"``: each word swapped, with probability ``swap_ratio``, for a random word of ``words``."""
    toks = text.split()
    if not toks:
        return rng.choice(words)
    return " ".join(rng.choice(words) if rng.random() < swap_ratio else t for t in toks)


def replace_with(text: str, donor: Sequence[str], swap_ratio: float, rng: random.Random) -> str:
    """``round(swap_ratio * n)`` (at least 1) distinct random word positions of ``text`` get ``donor``'s words in
    order (cycled when the donor is shorter)."""
    toks = text.split()
    if not toks:
        return donor[0] if donor else ""
    if not donor:
        return text
    m = min(len(toks), max(1, int(round(swap_ratio * len(toks)))))
    for i, pos in enumerate(sorted(rng.sample(range(len(toks)), m))):
        toks[pos] = donor[i % len(donor)]
    return " ".join(toks)


def insert_from(text: str, donor: Sequence[str], swap_ratio: float, rng: random.Random) -> str:
    """``mode="insert"``: ``round(swap_ratio * n)`` (at least 1) of ``donor``'s words inserted at random word
    positions; the input's own words (a trigger among them) all stay, as an image keeps its pixels under STRIP's
    blending."""
    toks = text.split()
    if not donor:
        return text
    m = max(1, int(round(swap_ratio * max(1, len(toks)))))
    for i in range(m):
        toks.insert(rng.randint(0, len(toks)), donor[i % len(donor)])
    return " ".join(toks)


def class_calibrated(scores: np.ndarray, preds: np.ndarray, ref_scores: np.ndarray, ref_preds: np.ndarray,
                     min_ref: int = 5) -> np.ndarray:
    """``(N,)`` z-scores of ``scores`` against the reference (clean dev) scores of the same predicted class.

    Classes with fewer than ``min_ref`` reference inputs use all reference inputs."""
    scores, preds = np.asarray(scores, float), np.asarray(preds)
    ref_scores, ref_preds = np.asarray(ref_scores, float), np.asarray(ref_preds)
    out = np.empty_like(scores)
    for c in np.unique(preds):
        ref = ref_scores[ref_preds == c]
        if len(ref) < min_ref:
            ref = ref_scores
        mu, sd = float(ref.mean()), float(ref.std()) or 1e-9
        out[preds == c] = (scores[preds == c] - mu) / sd
    return out


def tfidf_donors(clean_texts: Sequence[str]) -> list[list[str]]:
    """Per clean text, its words ordered by TF-IDF (fitted on the clean texts), most distinctive first."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer()
    try:
        mat = vec.fit_transform([str(t) for t in clean_texts]).tocsr()
    except ValueError:  # no word at all
        return [[] for _ in clean_texts]
    vocab = vec.get_feature_names_out()
    donors = []
    for i in range(mat.shape[0]):
        row = mat.getrow(i)
        order = np.argsort(-row.data, kind="stable")
        donors.append([str(vocab[row.indices[j]]) for j in order])
    return donors


def strip_scores(
    model,
    tokenizer,
    texts: Sequence[str],
    clean_texts: Sequence[str],
    repeats: int = DEFAULT_REPEATS,
    swap_ratio: float = DEFAULT_SWAP_RATIO,
    seed: int = 0,
    max_length: int = S.MAX_LENGTH,
    batch_size: int = 64,
    pool: str = DEFAULT_POOL,
    clean_labels: Sequence[int] | None = None,
    mode: str = DEFAULT_MODE,
    score: str = DEFAULT_SCORE,
) -> np.ndarray:
    """``(N,)`` STRIP scores (minus mean entropy of the perturbed predictions; higher = more suspicious).

    Args:
        clean_texts: the defender's clean texts (the replacement words).
        pool: ``"all"``, ``"tfidf"`` or ``"opposite"`` (see the module docstring).
        clean_labels: labels of ``clean_texts``; ``"opposite"`` needs them (without them it falls back to
            ``"tfidf"``).
    """
    if mode not in MODES or score not in SCORES:
        raise ValueError(f"mode must be one of {MODES} and score one of {SCORES}.")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got '{pool}'.")
    if repeats < 1 or not 0 < swap_ratio <= 1:
        raise ValueError("repeats must be >= 1 and swap_ratio in (0, 1].")
    rng = random.Random(seed)
    texts = [str(t) for t in texts]
    if pool == "opposite" and clean_labels is None:
        pool = "tfidf"
    if pool == "all":
        words = [w for t in clean_texts for w in str(t).split()]
        if not words:
            raise ValueError("STRIP needs clean texts with words to swap in.")
        perturbed = [perturb(t, words, swap_ratio, rng) for t in texts for _ in range(repeats)]
    else:
        donors = tfidf_donors(clean_texts)
        usable = [i for i, d in enumerate(donors) if d]
        if not usable:
            raise ValueError("STRIP needs clean texts with words to swap in.")
        if pool == "opposite":
            labels = np.asarray(clean_labels)
            preds = predict(model, tokenizer, texts, max_length, batch_size).argmax(1) if texts else []
            by_pred = {}
            for p in set(int(x) for x in preds):
                others = [i for i in usable if int(labels[i]) != p]
                by_pred[p] = others or usable
            choices = [by_pred[int(p)] for p in preds]
        else:
            choices = [usable] * len(texts)
        edit = replace_with if mode == "replace" else insert_from
        perturbed = [edit(t, donors[rng.choice(c)], swap_ratio, rng)
                     for t, c in zip(texts, choices) for _ in range(repeats)]
    if not perturbed:
        return np.zeros(0)
    probs = predict(model, tokenizer, perturbed, max_length, batch_size)
    if score == "keep":  # mean probability, over the copies, of the class predicted on the unperturbed input
        base = predict(model, tokenizer, texts, max_length, batch_size).argmax(1)
        return probs.reshape(len(texts), repeats, -1)[np.arange(len(texts)), :, base].mean(1)
    ent = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(-1)
    return -ent.reshape(len(texts), repeats).mean(1)
