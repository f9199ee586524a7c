"""Inserting a trigger (a word or a sentence) into a text at a word position, remembering where it went.

Words are maximal runs of non-space characters; position ``p`` means "before the p-th word" (0 = at the
start, ``len(words)`` or more = at the end). The returned character span lets `attention` find the trigger's
word pieces. With a tokenizer and ``max_length`` the position is pulled forward so the whole trigger stays
inside the model's truncation window (a trigger that is cut off cannot fire).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Insertion:
    """A triggered text. ``span`` is the trigger's ``[start, end)`` character span in ``text``."""

    text: str
    span: tuple[int, int]
    position: int  # word index the trigger was inserted before


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of ``text``."""
    return [m.span() for m in _WORD.finditer(text)]


def max_position_in_window(tokenizer, text: str, trigger: str, max_length: int, words=None) -> int:
    """Largest word position at which ``trigger`` still fits entirely within ``max_length`` tokens (``words``:
    ``word_spans(text)``, where the caller has them).

    Counts the tokenizer's special tokens (``[CLS]`` and ``[SEP]``). Returns 0 when even the start is too late (a
    trigger longer than the window is then cut, which callers should treat as a user error).

    With a fast tokenizer the trigger is inserted and the result tokenised with truncation, so the count is the one
    the model will see: byte-level BPE (GPT-2, RoBERTa) tokenises a word differently with and without the space in
    front of it, and counting word by word had cut triggers off (WordPiece counts the same either way). The search
    starts at the word-by-word count and steps from there (a few tokenisations of at most ``max_length`` words
    each: a binary search over a whole BBC article had made poisoning its test set 20 times slower, 8.5 s instead
    of 0.4). Other tokenizers: the word-by-word count, with two special tokens.
    """
    words = word_spans(text) if words is None else words
    guess = _max_position_by_words(tokenizer, text, trigger, max_length, words)  # at most len(words)
    fits = _fits_in_window(tokenizer, text, trigger, max_length, words)
    try:
        guess_fits = fits(guess)
    except (TypeError, NotImplementedError, KeyError, ValueError, AttributeError):  # no offsets: the word count
        return guess
    # fits is monotone (a trigger placed later has no fewer tokens before it): the largest p with fits(p), or 0
    if guess_fits:
        lo, hi = guess, None  # fits(lo); the first position that does not fit lies above, if any
        step = 1
        while hi is None:
            nxt = min(len(words), lo + step)
            if nxt == lo:
                return lo  # the end of the text fits
            if fits(nxt):
                lo, step = nxt, step * 2
            else:
                hi = nxt
    else:
        hi, lo = guess, None  # not fits(hi)
        step = 1
        while lo is None:
            nxt = max(0, hi - step)
            if fits(nxt) or nxt == 0:
                lo = nxt
            else:
                hi, step = nxt, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _fits_in_window(tokenizer, text: str, trigger: str, max_length: int, words=None):
    """``position -> bool``: whether ``trigger`` inserted before word ``position`` survives truncation to
    ``max_length`` tokens whole (the last kept token ends at or after the trigger's end). Only the words up to
    ``max_length`` past the position are tokenised: every word is at least one token, so the window ends before
    them."""
    words = word_spans(text) if words is None else words
    trigger = trigger.strip()

    def fits(position: int) -> bool:
        if not trigger:  # as insert_trigger says it (the caller then falls back to the word count)
            raise ValueError("The trigger is empty.")
        end = position + max_length + 1
        head, head_words = (text, words) if end >= len(words) else (text[:words[end][0]], words[:end])
        ins = _insert_at(head, trigger, position, head_words)  # head holds every word up to ``end``: the same place
        enc = tokenizer(ins.text, truncation=True, max_length=max_length, return_offsets_mapping=True)
        return max((int(e) for s, e in enc["offset_mapping"] if e > s), default=0) >= ins.span[1]

    return fits


def _max_position_by_words(tokenizer, text: str, trigger: str, max_length: int, words) -> int:
    """Word-by-word count (tokenizers without offsets): two special tokens, each word tokenised alone.

    The words are tokenised a batch at a time, as many as could still fit (a word is rarely zero tokens, so the
    next batch is seldom needed): one call per word had been most of the time to poison a test set."""
    budget = max_length - 2 - len(tokenizer.tokenize(trigger))
    used, i = 0, 0
    while i < len(words):
        batch = [text[s:e] for s, e in words[i:i + max(budget - used, 0) + 1]]
        for n in _token_counts(tokenizer, batch):
            used += n
            if used > budget:
                return i
            i += 1
    return len(words)


def _token_counts(tokenizer, pieces: list[str]) -> list[int]:
    """How many tokens each of ``pieces`` is alone (no special tokens): one batched call where the tokenizer takes
    a batch, else ``tokenize`` on each."""
    try:
        ids = tokenizer(pieces, add_special_tokens=False)["input_ids"]
        if len(ids) == len(pieces):
            return [len(x) for x in ids]
    except (TypeError, NotImplementedError, KeyError, ValueError, AttributeError):
        pass
    return [len(tokenizer.tokenize(piece)) for piece in pieces]


def placement_note(text: str, asked: int | None, placed: int, max_length: int) -> str | None:
    """Why the trigger went in before word ``placed`` when word ``asked`` was asked for (``insert_trigger`` caps the
    position at the text's end and inside the first ``max_length`` tokens), or None where it went where asked. The
    Inspect page and ``inspect --position`` say it: the trigger had moved without a word."""
    if asked is None or asked < 0 or placed >= asked:
        return None
    n_words = len(word_spans(text))
    if asked > n_words and placed == n_words:
        return f"the text has {n_words} words, so the trigger went in after the last one (asked: before word {asked})."
    return (f"word {asked} is past what the model reads (its first {max_length} tokens): the trigger went in before "
            f"word {placed} instead.")


def insert_trigger(
    text: str,
    trigger: str,
    position: int | None = None,
    rng: random.Random | int | None = None,
    tokenizer=None,
    max_length: int | None = None,
) -> Insertion:
    """Insert ``trigger`` before word ``position`` of ``text``.

    Args:
        position: word index; ``None`` picks one uniformly at random with ``rng`` (a ``random.Random`` or a
            seed); negative counts from the end like Python indexing (-1 = before the last word).
        tokenizer, max_length: when both are given, the position is capped so the trigger stays inside the
            first ``max_length`` tokens.
    """
    trigger = trigger.strip()
    if not trigger:
        raise ValueError("The trigger is empty.")
    words = word_spans(text)
    limit = len(words)
    if tokenizer is not None and max_length is not None:
        limit = min(limit, max_position_in_window(tokenizer, text, trigger, max_length))
    if position is None:
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        position = rng.randint(0, limit)
    elif position < 0:
        position = max(0, len(words) + position)
    return _insert_at(text, trigger, max(0, min(position, limit)), words)


def _insert_at(text: str, trigger: str, position: int, words) -> Insertion:
    """``trigger`` (stripped, not empty) inserted before word ``position`` (``0 <= position <= len(words)``) of
    ``text``, whose ``word_spans`` are ``words``."""
    if position < len(words):
        at = words[position][0]
        new = text[:at] + trigger + " " + text[at:]
        return Insertion(new, (at, at + len(trigger)), position)
    head = text.rstrip()
    sep = " " if head else ""
    new = head + sep + trigger + text[len(head) :]
    at = len(head) + len(sep)
    return Insertion(new, (at, at + len(trigger)), position)
