"""What a defender (or a demo of one) feeds a scan or a repair: row samples, the model's own attack rebuilt from
its card, a simulated pool of clean and triggered inputs, and a CACC / ASR evaluator. The app's pages, the
benchmarks and the CLI call these instead of each building their own.

Every function reads the model's facts from its ``model_card.ModelCard`` (``loaded.card``) through the card's
two rules: the target class (``ModelCard.target_for``) and the reading length (``model_max_length``).

    attack = model_attack(loaded.card, loaded.tokenizer, model_max_length(loaded))
    texts, is_triggered = build_pool(loaded, test_ds, n_clean=150, n_triggered=30)
    evaluate = make_eval(loaded, test_ds, n_test=200)      # model -> {"cacc", "asr"?}
"""

from __future__ import annotations

import contextlib
import random

import numpy as np

from . import settings as S
from .model_card import ModelCard


def sample_indices(n_total: int, n: int, seed: int) -> list[int]:
    """``n`` of ``range(n_total)``, seeded, sorted: the rows ``TextDataset.sample(n, seed)`` keeps (so a
    paraphrased copy of the data can be subset the same way)."""
    n = min(n, n_total)
    return sorted(random.Random(seed).sample(range(n_total), n))


def max_positions(model) -> int | None:
    """How many tokens the model's position embeddings allow, when its config says."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def model_max_length(loaded) -> int:
    """Tokens to read ``loaded`` (a ``models.LoadedModel``) with: the card's rule (its training length, else
    ``settings.MAX_LENGTH``), capped by its position embeddings. Scanning, sanitizing and evaluating at the
    training length keeps triggers inside the window the model saw and costs far less on short-window models
    (the zoo trains at 64)."""
    return loaded.card.reading_length(max_positions(loaded.model))


def model_attack(card: ModelCard, tokenizer=None, max_length: int | None = None):
    """The attack a model's card records, rebuilt to make triggered inputs (``poisoning.Attack``), or None when
    the card names none, names an unknown attack, or its paraphrase data is not available here."""
    from .data import DataError
    from .poisoning import attack_type, get_attack

    if not card.is_backdoored:
        return None
    name = str(card.attack)
    try:
        kind = attack_type(name)
        if kind.has_trigger_tokens:  # insertion triggers: place them inside the window the model reads
            return get_attack(name, tokenizer=tokenizer, max_length=max_length, trigger=card.trigger_text,
                              num_triggers=card.num_triggers or S.NUM_TRIGGERS)
        return get_attack(name)
    except (ValueError, DataError, OSError):
        return None


def build_pool(loaded, test_ds, n_clean: int, n_triggered: int, seed: int = 0, attack=None,
               lock: contextlib.AbstractContextManager | None = None):
    """A simulated pool: ``n_clean`` clean test texts + ``n_triggered`` texts carrying the model's trigger.

    The triggered texts are the non-target rows of ``test_ds`` with the card's attack (``model_attack``; none when
    the card names no attack) toward the card's target (``target_for``). Returns ``(texts, is_triggered)``
    shuffled with ``seed``: ``is_triggered`` is a ``(len(texts),)`` bool array that only an evaluation may see.
    ``lock`` (e.g. a ``threading.RLock``) guards the (possibly shared) tokenizer while the attack tokenizes.
    """
    card = loaded.card
    if attack is None:
        attack = model_attack(card, loaded.tokenizer, model_max_length(loaded))
    clean = test_ds.sample(n_clean, seed=seed + 1).texts if n_clean else []
    trig: list[str] = []
    if attack is not None and n_triggered:
        target = card.target_for(test_ds.label_names)
        with lock if lock is not None else contextlib.nullcontext():
            poisoned = attack.poison_test(test_ds, target, seed)
        texts = list(poisoned.texts)
        trig = random.Random(seed).sample(texts, min(n_triggered, len(texts)))
    items = [(t, False) for t in clean] + [(t, True) for t in trig]
    random.Random(seed + 2).shuffle(items)
    return [t for t, _ in items], np.array([f for _, f in items], dtype=bool)


def make_eval(loaded, test_ds, n_test: int = S.EVAL_TEXTS, max_length: int | None = None, seed: int = 0):
    """``model -> {"cacc", "asr"?}`` on a seeded sample of ``test_ds``, with ``loaded``'s tokenizer, at the model's
    reading length. ASR (triggered non-target rows predicted as the target) only when the card names an attack
    that can be rebuilt here."""
    from .training import make_evaluator

    max_length = max_length or model_max_length(loaded)
    test = test_ds.sample(n_test, seed=seed)
    card = loaded.card
    attack = model_attack(card, loaded.tokenizer, max_length)
    target = card.target_for(test.label_names) if attack is not None else None
    poisoned = None
    if attack is not None:
        try:
            poisoned = attack.poison_test(test, target, seed).texts
        except ValueError:  # e.g. a paraphrase set with no non-target rows: no ASR then
            poisoned = None
    return make_evaluator(loaded.tokenizer, test, poisoned, target if poisoned else None, max_length)
