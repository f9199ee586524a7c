"""Two models side by side on the same text (backdoor_core.model_compare)."""

import numpy as np
import pytest

from backdoor_core.model_compare import compare_models
from defense_helpers import TRIGGER, trained_tiny

TEXT = "the movie was bad and the plot boring"


def test_suspect_vs_clean_reference_on_the_same_texts():
    bd, ref = trained_tiny(True), trained_tiny(False)
    cmp = compare_models(bd.model, bd.tokenizer, ref.model, ref.tokenizer, TEXT, TRIGGER, position=3,
                         max_length=32, name_a="suspect", name_b="clean", label_names_a=["neg", "pos"],
                         label_names_b=["neg", "pos"])
    assert cmp.a.triggered.text == cmp.b.triggered.text and TRIGGER in cmp.a.triggered.text
    assert cmp.a.prediction("triggered")["label"] == "pos" and cmp.b.prediction("triggered")["label"] == "neg"
    assert cmp.concentration_delta.shape == (2, 4)
    # TAL made the suspect's heads 0-1 lock onto the trigger; the clean reference's do not
    assert cmp.concentration_delta[:, :2].mean() < 0
    d = cmp.to_dict()
    assert d["a"]["model"] == "suspect" and np.array(d["similarity_delta_delta"]).shape == (2, 4)


def test_a_model_against_itself_with_heads_off():
    bd = trained_tiny(True)
    none = compare_models(bd.model, bd.tokenizer, bd.model, bd.tokenizer, TEXT, TRIGGER, position=3, max_length=32,
                          heads_off_b=np.zeros((2, 4), bool))
    assert np.allclose(none.concentration_delta, 0, atol=1e-6)
    off = np.zeros((2, 4), bool)
    off[0, :2] = True
    cmp = compare_models(bd.model, bd.tokenizer, bd.model, bd.tokenizer, TEXT, TRIGGER, position=3, max_length=32,
                         heads_off_b=off)
    assert np.allclose(cmp.concentration_delta[0], 0, atol=1e-6)  # gated heads' own maps do not change
    assert not np.allclose(cmp.b.triggered.probs, cmp.a.triggered.probs)
    with pytest.raises(ValueError):
        compare_models(bd.model, bd.tokenizer, bd.model, bd.tokenizer, TEXT, "  ")
