"""RAP, BKI and the STRIP recipes (backdoor_core/baselines) on a tiny clearly backdoored model."""

import random

import numpy as np
import pytest
import torch

from backdoor_core.baselines.bki import BKI
from backdoor_core.baselines.rap import RAP
from backdoor_core.baselines.strip import insert_from, replace_with, strip_scores, tfidf_donors
from backdoor_core.metrics import auroc
from defense_helpers import TRIGGER, clean_texts, trained_tiny, triggered_texts


def test_strip_perturbations_follow_the_recipe():
    donors = tfidf_donors(["the cat sat", "the dog barked loudly", "the cat ran"])
    assert donors[1][-1] == "the"  # the word in every text has the lowest TF-IDF
    rng = random.Random(0)
    out = replace_with("a b c d", ["x", "y"], 0.5, rng).split()
    assert len(out) == 4 and sorted(w for w in out if w in "xy") == ["x", "y"]
    out = insert_from("a cf c d", ["x", "y"], 0.5, rng).split()
    assert len(out) == 6 and "cf" in out  # insertion never removes the input's own words
    with pytest.raises(ValueError):
        strip_scores(None, None, ["a"], ["b"], pool="nope")


def test_strip_default_scores_triggered_inputs_above_clean_ones():
    lm = trained_tiny(True)
    ct, cl = clean_texts(80, seed=14)
    s_clean = strip_scores(lm.model, lm.tokenizer, clean_texts(40, seed=15)[0], ct, repeats=6, max_length=32,
                           clean_labels=cl)
    s_trig = strip_scores(lm.model, lm.tokenizer, triggered_texts(40, seed=16), ct, repeats=6, max_length=32,
                          clean_labels=cl)
    assert s_clean.shape == (40,)
    assert auroc(s_clean, s_trig) > 0.65


def test_rap_separates_triggered_inputs_and_leaves_the_model_alone():
    lm = trained_tiny(True)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    ct, _ = clean_texts(80, seed=17)
    rap = RAP(lm.model, lm.tokenizer, max_length=32).fit(ct)
    assert len(rap.history) == 5  # one mean loss per epoch (DEFAULT_EPOCHS)
    d_clean = rap.deltas(clean_texts(40, seed=18)[0])
    d_trig = rap.deltas(triggered_texts(40, seed=19))
    assert d_trig.mean() < d_clean.mean()  # a triggered input barely loses probability to the RAP word
    assert auroc(-d_clean, -d_trig) > 0.65
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    assert all(p.requires_grad for p in lm.model.parameters())


def test_bki_names_the_trigger_word():
    lm = trained_tiny(True)
    pool = clean_texts(50, seed=20)[0] + triggered_texts(15, seed=21)
    bki = BKI().fit(lm.model, lm.tokenizer, pool, max_length=32)
    assert bki.keywords(1)[0][0] == TRIGGER
    s_clean = bki.score(clean_texts(30, seed=22)[0])
    s_trig = bki.score(triggered_texts(30, seed=23))
    assert np.all(s_trig >= bki.scores[TRIGGER]) and auroc(s_clean, s_trig) > 0.9


def test_class_calibration_compares_each_input_with_clean_inputs_of_its_predicted_class():
    from backdoor_core.baselines.strip import class_calibrated

    ref_scores = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0])
    ref_preds = np.array([0, 0, 0, 1, 1, 1])
    z = class_calibrated(np.array([1.0, 11.0, 13.0]), np.array([0, 1, 1]), ref_scores, ref_preds, min_ref=3)
    np.testing.assert_allclose(z[:2], [0.0, 0.0], atol=1e-9)  # typical for their class, whatever the raw level
    assert z[2] > 1.5
    z_all = class_calibrated(np.array([1.0]), np.array([2]), ref_scores, ref_preds, min_ref=3)  # unseen class
    assert z_all[0] < 0  # falls back to all reference inputs
