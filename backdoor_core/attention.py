"""Per-input attention records (maps, tokens, character alignment) and predictions, from ``forward.run_with_cache``.

Shapes used throughout (TransformerLens-style names):

* ``attentions``: ``(layers, heads, tokens, tokens)`` for ONE input, padding removed; row ``q`` is the
  distribution query token ``q`` puts over key tokens (rows sum to 1).
* ``offsets``: ``(tokens, 2)`` character span ``[start, end)`` of each word piece in the text; ``(0, 0)`` for
  special tokens such as ``[CLS]`` and ``[SEP]``.
* ``logits`` / ``probs``: ``(num_labels,)`` per input, or ``(batch, num_labels)`` from ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .forward import predict as _predict
from .forward import NonFiniteOutputError, check_finite, clip_text, run_with_cache  # noqa: F401 - re-exported

from . import settings as S

DEFAULT_MAX_LENGTH = S.MAX_LENGTH
MAX_TEXT_CHARS = 20_000  # longer inputs are refused: only the first max_length tokens are read anyway


class InputTextError(ValueError):
    """A text given for analysis is unusable (empty, or absurdly long)."""


@dataclass
class AttentionRecord:
    """One input's forward pass.

    Attributes:
        text: the input text.
        tokens: word pieces including ``[CLS]``/``[SEP]``, length ``tokens``.
        offsets: ``(tokens, 2)`` int array of character spans (``(0, 0)`` for special tokens).
        attentions: ``(layers, heads, tokens, tokens)`` float32, padding removed.
        logits: ``(num_labels,)`` float32.
        truncated: True when the text was longer than ``max_length`` tokens and was cut.
    """

    text: str
    tokens: list[str]
    offsets: np.ndarray
    attentions: np.ndarray | None
    logits: np.ndarray
    truncated: bool

    @property
    def probs(self) -> np.ndarray:
        """``(num_labels,)`` softmax of the logits."""
        z = self.logits - self.logits.max()
        e = np.exp(z)
        return e / e.sum()

    @property
    def prediction(self) -> int:
        return int(self.logits.argmax())

    def token_indices(self, start: int, end: int) -> list[int]:
        """Indices of the tokens overlapping the character span ``[start, end)``."""
        return char_span_to_token_indices(self.offsets, start, end)


def check_text(text: str) -> str:
    """Return ``text`` or raise ``InputTextError`` with a plain message for empty or huge input."""
    if not isinstance(text, str):
        raise InputTextError(f"Expected text, got {type(text).__name__}.")
    if not text.strip():
        raise InputTextError("The text is empty: type a sentence to analyse.")
    if len(text) > MAX_TEXT_CHARS:
        raise InputTextError(
            f"The text has {len(text):,} characters; at most {MAX_TEXT_CHARS:,} are accepted "
            "(the model reads only its first tokens anyway)."
        )
    return text


def char_span_to_token_indices(offsets: np.ndarray, start: int, end: int) -> list[int]:
    """Token indices whose character span overlaps ``[start, end)``; special tokens (``(0, 0)``) never match.

    Args:
        offsets: ``(tokens, 2)`` character spans.
    """
    offsets = np.asarray(offsets)
    if offsets.size == 0 or end <= start:
        return []
    s, e = offsets[:, 0], offsets[:, 1]
    hit = (e > s) & (s < end) & (e > start)
    return [int(i) for i in np.flatnonzero(hit)]


def run_attention(
    model,
    tokenizer,
    texts: Sequence[str],
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 16,
    with_attentions: bool = True,
) -> list[AttentionRecord]:
    """Forward ``texts`` (``forward.run_with_cache``) and return one ``AttentionRecord`` per text, in order,
    padding removed.

    The model must use eager attention (``models.load_model`` ensures it); otherwise attentions come back
    empty and this raises ``RuntimeError``.
    """
    texts = list(texts)
    want = ("attentions", "offsets") if with_attentions else ("offsets",)
    cache = run_with_cache(model, tokenizer, texts, max_length=max_length, batch_size=batch_size, want=want)
    return [
        AttentionRecord(
            text=text,
            tokens=cache.tokens[i],
            offsets=cache.offsets[i],
            attentions=cache.attentions[i] if with_attentions else None,
            logits=cache.logits[i],
            truncated=bool(cache.truncated[i]),
        )
        for i, text in enumerate(texts)
    ]


def predict(
    model, tokenizer, texts: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 64
) -> np.ndarray:
    """Class probabilities ``(len(texts), num_labels)`` without attentions (the fast path for metrics);
    ``forward.predict`` with this module's default length."""
    return _predict(model, tokenizer, texts, max_length, batch_size)
