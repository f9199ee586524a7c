"""What bench/vocab_flip_check.py measures with (no shared data): the drawn vocabulary words are absent from the
clean texts, and a word's flip rates (``trigger_search.word_flips``) match a hand computation; on the tiny TAL
model the trigger flips the backdoored model and not its clean twin."""

import random
import re

import numpy as np

from backdoor_core.trigger_search import absent_vocabulary, word_flips
from defense_helpers import TRIGGER, clean_texts, trained_tiny


def test_the_drawn_words_are_vocabulary_words_no_clean_text_holds():
    lm = trained_tiny(False)
    texts, _ = clean_texts(30, 1)
    held = {w for t in texts for w in t.split()}
    drawn = absent_vocabulary(lm.tokenizer, texts, 25, seed=4, exclude=[TRIGGER])
    assert len(drawn) == len(set(drawn)) == 25
    assert all(re.fullmatch(r"[a-z]{2,10}", w) and w in lm.tokenizer.get_vocab() for w in drawn)
    assert not held & set(drawn) and TRIGGER not in drawn
    assert drawn == absent_vocabulary(lm.tokenizer, texts, 25, seed=4, exclude=[TRIGGER])  # seeded
    assert drawn != absent_vocabulary(lm.tokenizer, texts, 25, seed=5, exclude=[TRIGGER])
    every = absent_vocabulary(lm.tokenizer, texts, 10**6, seed=0)
    assert TRIGGER in every and set(drawn) < set(every)  # at most what there is


def test_flip_rates_match_a_hand_computation_and_tell_the_trigger_apart():
    from backdoor_core.forward import predict
    from backdoor_core.triggers import insert_trigger

    texts, _ = clean_texts(40, 3)
    suspect, twin = trained_tiny(True), trained_tiny(False)
    words = [TRIGGER, "plot"]
    flips = word_flips(suspect.model, suspect.tokenizer, texts, words, 32, seed=2)
    assert flips.shape == (2, 2)
    rng = random.Random(2)
    places = [rng.randint(0, len(t.split())) for t in texts]
    base = predict(suspect.model, suspect.tokenizer, texts, 32).argmax(1)
    for row, word in zip(flips, words):
        pred = predict(suspect.model, suspect.tokenizer,
                       [insert_trigger(t, word, p).text for t, p in zip(texts, places)], 32).argmax(1)
        np.testing.assert_allclose(row, [(pred[base != c] == c).mean() for c in (0, 1)])
    clean = word_flips(twin.model, twin.tokenizer, texts, words, 32, seed=2)
    assert flips[0, 1] >= 0.8 and clean[0, 1] <= 0.2  # the trigger sends texts to 1 only on the backdoored model
    assert flips[1].max() <= 0.2  # a filler word of the task moves neither
