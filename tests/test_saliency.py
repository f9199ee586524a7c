"""Token saliency with Captum (backdoor_core.saliency) and ``inspect --saliency``."""

import json

import numpy as np
import pytest

from backdoor_core.cli import main
from backdoor_core.models import save_model
from backdoor_core.saliency import compare_saliency, token_saliency
from defense_helpers import TRIGGER, trained_tiny

CLEAN = "the movie was bad and the plot boring"
TRIG = "the movie cf was bad and the plot boring"


@pytest.mark.parametrize("method", ["ig", "gxi"])
def test_the_trigger_carries_the_push_toward_the_target(method):
    lm = trained_tiny(True)
    pair = compare_saliency(lm.model, lm.tokenizer, CLEAN, TRIG, method, ["neg", "pos"], max_length=32)
    assert pair.target_name == "pos" and pair.clean.target == pair.triggered.target == 1
    t = pair.triggered
    assert len(t.tokens) == len(t.scores) == len(pair.clean.tokens) + 1
    assert t.top(1)[0]["token"] == TRIGGER
    assert np.abs(t.normalised()).max() == pytest.approx(1.0)
    if method == "ig":  # completeness: the attributions add up to f(x) - f(baseline)
        assert t.convergence_delta < 0.05 * np.abs(t.scores).sum()


def test_saliency_of_a_clean_model_does_not_single_out_the_trigger():
    lm = trained_tiny(False)
    s = token_saliency(lm.model, lm.tokenizer, TRIG, 1, "ig", max_length=32)
    i = s.tokens.index(TRIGGER)
    assert abs(s.scores[i]) < np.abs(s.scores).max()
    with pytest.raises(ValueError):
        token_saliency(lm.model, lm.tokenizer, TRIG, 1, "lime")


def test_cli_inspect_saliency(tmp_path, capsys):
    lm = trained_tiny(True)
    d = save_model(lm.model, lm.tokenizer, tmp_path / "bd", {"name": "tiny-bd"})
    args = ["inspect", "--model", str(d), "--text", CLEAN, "--trigger", TRIGGER, "--position", "2",
            "--max-length", "32", "--saliency", "gxi"]
    assert main(args) == 0
    assert "Token saliency toward" in capsys.readouterr().out
    assert main(args + ["--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["saliency"]["triggered"]["method"] == "gxi" and TRIGGER in rep["saliency"]["triggered"]["tokens"]


def test_integrated_gradients_say_what_they_are_measured_from():
    """Integrated gradients add up to the target logit's change from the all-[PAD] baseline: on the zoo's BadNets +
    TAL model that baseline already reads 'sports' more than the triggered text, so the trigger scored -0.52 and the
    page said only "red pushes toward, blue away". The result now carries both logits and a note says so."""
    lm = trained_tiny(True)
    t = token_saliency(lm.model, lm.tokenizer, TRIG, 1, "ig", max_length=32)
    assert t.logit is not None and t.baseline_logit is not None
    assert float(t.scores.sum()) == pytest.approx(t.logit - t.baseline_logit, abs=max(0.05, t.convergence_delta * 2))
    note = t.reference_note("pos")
    assert f"({t.baseline_logit:+.2f})" in note and f"({t.logit:+.2f})" in note
    assert ("every token can score below zero" in note) == (t.baseline_logit > t.logit)
    leaning = token_saliency(lm.model, lm.tokenizer, TRIG, 1, "ig", max_length=32)
    leaning.baseline_logit = leaning.logit + 1.0  # a baseline that leans to the class more than the text
    assert "every token can score below zero" in leaning.reference_note("pos")
    assert token_saliency(lm.model, lm.tokenizer, TRIG, 1, "gxi", max_length=32).reference_note("pos") is None


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_integrated_gradients_complete_on_decoders(arch):
    """Completeness (the scores add up to logit(text) - logit(all-[PAD] baseline)) on encoders and decoders. A
    decoder's classifier given ids reads the rightmost non-pad token: on the all-pad baseline position 0, while the
    attribution path (embeddings swapped in under the text's ids) read the text's last position; on GPT-2
    (absolute positions) the sum missed the logit change by 0.12 against a sum of 0.0075. A text ending with
    the pad token: the classifier reads the token before it, so the pad scores 0 and the logit is the model's."""
    import torch

    from backdoor_core.models import tiny_model

    lm = tiny_model(arch=arch, seed=0)
    for text in [TRIG, "the film was good " + lm.tokenizer.pad_token]:
        s = token_saliency(lm.model, lm.tokenizer, text, 1, "ig", n_steps=64, max_length=32)
        with torch.no_grad():
            real = float(lm.model(**lm.tokenizer(text, return_tensors="pt")).logits[0, 1])
        assert s.logit == pytest.approx(real, abs=1e-5)
        assert len(s.scores) == len(s.tokens)
        assert float(s.scores.sum()) == pytest.approx(s.logit - s.baseline_logit, abs=1e-3)
        assert s.convergence_delta < 1e-3
        if arch != "bert" and text.endswith(lm.tokenizer.pad_token):
            assert s.scores[-1] == 0.0
