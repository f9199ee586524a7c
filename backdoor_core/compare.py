"""Compare a clean text with a *given* changed text (a paraphrase trigger) the way ``inspect_text`` does.

``inspection.inspect_text`` inserts a word or sentence trigger itself. Paraphrase triggers (syntactic or style,
as in ``../shared/data/sst2/syntactic_transfer`` and ``style_*``) rewrite the whole sentence instead, so there
is no inserted span. ``inspect_pair`` runs the same forward pass over ``(clean, changed)`` and returns the same
``InspectResult``; as "trigger tokens" it uses the word pieces of the changed text that do not occur in the clean
text (our choice: they are what the rewrite added), so the concentration heatmap shows the heads that look at
the new wording. ``trigger`` is the label given (e.g. ``"syntactic paraphrase"``).
"""

from __future__ import annotations

from .attention import DEFAULT_MAX_LENGTH, check_text, run_attention
from .inspection import InspectResult, compare_records
from .triggers import Insertion

SPECIAL_TOKENS = {"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"}


def changed_token_indices(clean_tokens: list[str], changed_tokens: list[str]) -> list[int]:
    """Indices into ``changed_tokens`` of the (non-special) word pieces absent from ``clean_tokens``."""
    seen = set(clean_tokens)
    return [i for i, t in enumerate(changed_tokens) if t not in seen and t not in SPECIAL_TOKENS]


def inspect_pair(
    model,
    tokenizer,
    clean_text: str,
    changed_text: str,
    trigger: str = "paraphrase",
    max_length: int = DEFAULT_MAX_LENGTH,
    label_names: list[str] | None = None,
) -> InspectResult:
    """``InspectResult`` for a clean text and its given rewrite (see the module docstring)."""
    check_text(clean_text)
    check_text(changed_text)
    clean, changed = run_attention(model, tokenizer, [clean_text, changed_text], max_length=max_length, batch_size=2)
    idx = changed_token_indices(clean.tokens, changed.tokens)
    return compare_records(model, clean, changed, Insertion(changed_text, (0, 0), -1), trigger, idx, label_names)
