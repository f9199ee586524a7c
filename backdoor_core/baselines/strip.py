"""STRIP for text (Gao et al. 2019; text variant as in STRIP-ViTA / OpenBackdoor), an input-level detector.

Each input is perturbed ``repeats`` times: every word is swapped, with probability ``swap_ratio``, for a word
drawn from the defender's clean texts. A triggered input tends to keep its (target) prediction whatever else
changes, so the mean entropy of its perturbed predictions is LOW. Score = minus that mean entropy (higher = more
suspicious), thresholded at a chosen FRR on clean dev data like our detector (the paper uses FRR 1%; we report
AUROC, which needs no threshold).

Defaults (our choice): ``repeats = 10``, ``swap_ratio = 0.5``. The word pool is every whitespace word of the clean
texts (sampled with repetition, so frequent words are drawn more often).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from ..forward import predict
from .. import settings as S

DEFAULT_REPEATS = S.STRIP_REPEATS
DEFAULT_SWAP_RATIO = S.STRIP_SWAP_RATIO


def perturb(text: str, words: Sequence[str], swap_ratio: float, rng: random.Random) -> str:
    toks = text.split()
    if not toks:
        return rng.choice(words)
    return " ".join(rng.choice(words) if rng.random() < swap_ratio else t for t in toks)


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
) -> np.ndarray:
    """``(N,)`` STRIP scores (minus mean entropy of the perturbed predictions; higher = more suspicious)."""
    words = [w for t in clean_texts for w in str(t).split()]
    if not words:
        raise ValueError("STRIP needs clean texts with words to swap in.")
    if repeats < 1 or not 0 < swap_ratio <= 1:
        raise ValueError("repeats must be >= 1 and swap_ratio in (0, 1].")
    rng = random.Random(seed)
    texts = [str(t) for t in texts]
    perturbed = [perturb(t, words, swap_ratio, rng) for t in texts for _ in range(repeats)]
    if not perturbed:
        return np.zeros(0)
    probs = predict(model, tokenizer, perturbed, max_length, batch_size)
    ent = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(-1)
    return -ent.reshape(len(texts), repeats).mean(1)
