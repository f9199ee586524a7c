"""BKI: backdoor keyword identification (Chen & Dai, Neurocomputing 2021), reimplemented from the paper's
description (no code copied) for a transformer classifier.

BKI looks for the word that, across a set of possibly poisoned inputs, keeps being the one whose removal moves
the model's internal representation most. For each input of the analysed set and each of its words, the
importance is the L2 change of the final ``[CLS]`` hidden state ``(hidden,)`` when the word is deleted (the paper
uses an LSTM's hidden states; our transformer analogue). Each input's ``top_k`` most important words enter a
dictionary; a word's keyword score is ``mean importance x log10(frequency)`` over the inputs it was a top word
in (frequent *and* important). The best-scoring word is the suspected trigger; an input's BKI score is the
highest keyword score among its words (higher = more suspicious), and inputs holding the top keyword are the
ones BKI removes.

Only the suspect model and the inputs to analyse are needed (no clean labels). In the benchmark the analysed
set is the scan's pool (the same data our scan sees) and held-out inputs are scored with its dictionary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..representations import cls_representations

DEFAULT_TOP_K = 5
MAX_WORDS = 64  # words per input examined (the rest are past the truncation window anyway at our lengths)


def _words(text: str) -> list[str]:
    return str(text).split()


@dataclass
class BKI:
    """Keyword dictionary built by ``fit`` (see the module docstring)."""

    top_k: int = DEFAULT_TOP_K
    scores: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def fit(self, model, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 64) -> BKI:
        texts = [str(t) for t in texts]
        base = cls_representations(model, tokenizer, texts, max_length, batch_size)  # (N, hidden)
        variants, owner, words_of = [], [], []
        for i, t in enumerate(texts):
            words = _words(t)[:MAX_WORDS]
            words_of.append(words)
            if len(words) < 2:
                continue
            for j in range(len(words)):
                variants.append(" ".join(words[:j] + words[j + 1:]))
                owner.append((i, j))
        states = cls_representations(model, tokenizer, variants, max_length, batch_size)  # (V, hidden)
        imp: dict[int, list[tuple[float, str]]] = {}
        for (i, j), st in zip(owner, states):
            imp.setdefault(i, []).append((float(np.linalg.norm(st - base[i])), words_of[i][j].lower()))
        total: dict[str, float] = {}
        count: dict[str, int] = {}
        for i, vals in imp.items():
            seen = set()
            for value, word in sorted(vals, key=lambda x: -x[0])[: self.top_k]:
                if word in seen:
                    continue
                seen.add(word)
                total[word] = total.get(word, 0.0) + value
                count[word] = count.get(word, 0) + 1
        self.counts = count
        self.scores = {w: (total[w] / count[w]) * math.log10(count[w]) for w in total}
        return self

    def keywords(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` best keywords with their scores, best first (the first is BKI's suspected trigger)."""
        return sorted(self.scores.items(), key=lambda kv: -kv[1])[:k]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """``(N,)`` per input: the highest keyword score among its words (0 when none is in the dictionary)."""
        return np.array([max([self.scores.get(w.lower(), 0.0) for w in _words(t)] or [0.0]) for t in texts])


def bki_scores(model, tokenizer, texts: Sequence[str], analysed_texts: Sequence[str], *, max_length: int = 128,
               top_k: int = DEFAULT_TOP_K) -> np.ndarray:
    """Build the keyword dictionary on ``analysed_texts`` and score ``texts`` (higher = more suspicious)."""
    return BKI(top_k).fit(model, tokenizer, analysed_texts, max_length).score(texts)
