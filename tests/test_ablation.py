"""Switching heads off (backdoor_core.ablation) and ``inspect --ablate``."""

import json

import numpy as np
import pytest

from backdoor_core.ablation import inspect_ablated, parse_heads, run_with_heads_off
from backdoor_core.attention import run_attention
from backdoor_core.cli import main
from backdoor_core.models import save_model
from defense_helpers import TRIGGER, trained_tiny

TEXT = "the movie was bad and the plot boring"


def test_parse_heads_reads_labels_and_rejects_bad_ones():
    m = parse_heads("L1H3, l0h0", 2, 4)
    assert m.sum() == 2 and m[1, 3] and m[0, 0]
    for bad, msg in [("L2H0", "out of range"), ("L0H4", "out of range"), ("X1", "not a head label"),
                     ("L1Hx", "not a head label"), ("", "No heads")]:
        with pytest.raises(ValueError, match=msg):
            parse_heads(bad, 2, 4)


def test_gating_heads_changes_downstream_and_restores(tiny):
    off = parse_heads("L0H0,L0H1,L0H2,L0H3", 2, 4)
    base = run_attention(tiny.model, tiny.tokenizer, [TEXT], 32)[0]
    gated = run_with_heads_off(tiny.model, tiny.tokenizer, [TEXT], off, 32)[0]
    assert np.allclose(gated.attentions[0], base.attentions[0], atol=1e-6)  # a gated head's own map is unchanged
    assert np.abs(gated.attentions[1] - base.attentions[1]).max() > 1e-6  # later layers see the change
    assert not np.allclose(gated.logits, base.logits)
    again = run_attention(tiny.model, tiny.tokenizer, [TEXT], 32)[0]
    assert np.allclose(again.logits, base.logits)  # the gate is gone after the call


def test_switching_off_the_trojan_heads_undoes_the_flip():
    lm = trained_tiny(True)  # TAL trained heads 0 and 1 of every layer onto the trigger
    full_off = np.ones((2, 4), bool)
    full_off[:, 2:] = False
    res = inspect_ablated(lm.model, lm.tokenizer, TEXT, TRIGGER, full_off, position=2, max_length=32)
    assert res.full.triggered.prediction == 1 and res.full.clean.prediction == 0
    d = res.to_dict()
    assert d["heads_off"] == ["L0H0", "L0H1", "L1H0", "L1H1"]
    none_off = inspect_ablated(lm.model, lm.tokenizer, TEXT, TRIGGER, np.zeros((2, 4), bool), position=2,
                               max_length=32)
    assert np.allclose(none_off.ablated.triggered.probs, none_off.full.triggered.probs)
    assert res.ablated.triggered.probs[1] < res.full.triggered.probs[1]  # the gated heads carried the backdoor


def test_cli_inspect_ablate(tmp_path, capsys):
    lm = trained_tiny(True)
    d = save_model(lm.model, lm.tokenizer, tmp_path / "bd", {"name": "tiny-bd"})
    args = ["inspect", "--model", str(d), "--text", TEXT, "--trigger", TRIGGER, "--position", "2",
            "--max-length", "32", "--ablate", "L0H0,L1H1"]
    assert main(args) == 0
    assert "With L0H0, L1H1 switched off" in capsys.readouterr().out
    assert main(args + ["--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ablated"]["heads_off"] == ["L0H0", "L1H1"] and set(rep["ablated"]["triggered"]["probs"])
    assert main(args[:-1] + ["L5H0"]) == 2
    err = capsys.readouterr().err
    assert "out of range" in err and err.count("\n") == 1 and "Traceback" not in err
