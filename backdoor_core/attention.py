"""Batched forward passes that return predictions, per-input attention maps and token/character alignment.

Shapes used throughout (TransformerLens-style names):

* ``attentions``: ``(layers, heads, tokens, tokens)`` for ONE input, padding removed; row ``q`` is the
  distribution query token ``q`` puts over key tokens (rows sum to 1).
* ``offsets``: ``(tokens, 2)`` character span ``[start, end)`` of each word piece in the text; ``(0, 0)`` for
  special tokens such as ``[CLS]`` and ``[SEP]``.
* ``logits`` / ``probs``: ``(num_labels,)`` per input, or ``(batch, num_labels)`` from ``predict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_MAX_LENGTH = 128
MAX_TEXT_CHARS = 20_000  # longer inputs are refused: only the first max_length tokens are read anyway


CHARS_PER_TOKEN_CAP = 128  # a text is cut to max_length * this many characters before tokenizing (our design)


class InputTextError(ValueError):
    """A text given for analysis is unusable (empty, or absurdly long)."""


class NonFiniteOutputError(ValueError):
    """The model's outputs hold NaN or Inf: no prediction or attention from it means anything."""


def check_finite(values: torch.Tensor, what: str = "logits") -> torch.Tensor:
    """``values`` unchanged, or ``NonFiniteOutputError`` (one line) when any entry is NaN or Inf."""
    if not bool(torch.isfinite(values).all()):
        raise NonFiniteOutputError(
            f"The model produced NaN/Inf {what}: its weights are broken (or overflow on this input), so no "
            "prediction or attention map from it means anything."
        )
    return values


def clip_text(text: str, max_length: int) -> str:
    """The part of ``text`` the model can read: at most ``max_length * CHARS_PER_TOKEN_CAP`` characters.

    Tokenizers encode the WHOLE string before truncating, so a 100 MB line would cost gigabytes; a word piece
    covers at least one character, so the first ``max_length`` tokens lie in this prefix unless the text hides
    them behind long runs of spaces.
    """
    limit = max(1, int(max_length)) * CHARS_PER_TOKEN_CAP
    return text if len(text) <= limit else text[:limit]


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


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _device(model) -> torch.device:
    return next(model.parameters()).device


def encode(tokenizer, texts: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH, offsets: bool = False):
    """Tokenize a batch with padding and truncation to ``max_length`` tokens (texts ``clip_text``-ed first)."""
    return tokenizer(
        [clip_text(t, max_length) for t in texts],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=offsets,
        return_tensors="pt",
    )


@torch.inference_mode()
def run_attention(
    model,
    tokenizer,
    texts: Sequence[str],
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 16,
    with_attentions: bool = True,
) -> list[AttentionRecord]:
    """Forward ``texts`` in batches and return one ``AttentionRecord`` per text (padding removed).

    The model must use eager attention (``models.load_model`` ensures it); otherwise attentions come back
    empty and this raises ``RuntimeError``.
    """
    records: list[AttentionRecord] = []
    device = _device(model)
    for chunk in _batches(list(texts), batch_size):
        enc = encode(tokenizer, chunk, max_length, offsets=True)
        offsets = enc.pop("offset_mapping").numpy()
        # one token past max_length tells whether the text was cut, without tokenizing all of a huge text
        full_lengths = [len(ids) for ids in tokenizer([clip_text(t, max_length + 1) for t in chunk],
                                                      truncation=True, max_length=max_length + 1)["input_ids"]]
        enc = {k: v.to(device) for k, v in enc.items()}
        out = model(**enc, output_attentions=with_attentions)
        logits = check_finite(out.logits.float()).cpu().numpy()
        att = None
        if with_attentions:
            if not out.attentions or out.attentions[0] is None:
                raise RuntimeError("The model returned no attentions: load it with attn_implementation='eager'.")
            att = torch.stack(out.attentions, dim=1).float().cpu().numpy()  # (batch, layers, heads, T, T)
        mask = enc["attention_mask"].cpu().numpy().astype(bool)
        ids = enc["input_ids"].cpu().numpy()
        for b, text in enumerate(chunk):
            n = int(mask[b].sum())
            keep = np.flatnonzero(mask[b])[:n]
            records.append(
                AttentionRecord(
                    text=text,
                    tokens=tokenizer.convert_ids_to_tokens(ids[b, keep].tolist()),
                    offsets=offsets[b, keep].astype(np.int64),
                    attentions=None if att is None else att[b][:, :, keep][:, :, :, keep],
                    logits=logits[b],
                    truncated=full_lengths[b] > max_length,
                )
            )
    return records


@torch.inference_mode()
def predict(
    model, tokenizer, texts: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 64
) -> np.ndarray:
    """Class probabilities ``(len(texts), num_labels)`` without attentions (the fast path for metrics)."""
    device = _device(model)
    out = []
    for chunk in _batches(list(texts), batch_size):
        enc = {k: v.to(device) for k, v in encode(tokenizer, chunk, max_length).items()}
        out.append(torch.softmax(check_finite(model(**enc).logits.float()), dim=-1).cpu().numpy())
    if not out:
        return np.zeros((0, int(model.config.num_labels)), dtype=np.float32)
    return np.concatenate(out)
