import json

import numpy as np
import pytest

from backdoor_core.cli import main
from backdoor_core.inspection import inspect_text
from backdoor_core.models import save_model

TEXT = "The government announced new spending plans for schools and hospitals on Monday."


def test_inspect_on_packaged_minilm(minilm):
    """Integration: the real model, offline; inserting a trigger puts attention on the trigger's tokens."""
    res = inspect_text(minilm.model, minilm.tokenizer, TEXT, "cf", position=3)
    L, H = 6, 12
    assert res.clean.attentions.shape[:2] == (L, H)
    assert res.triggered.attentions.shape[2] == res.clean.attentions.shape[2] + 1
    assert [res.triggered.tokens[i] for i in res.trigger_tokens] == ["cf"]
    assert res.concentration.shape == (L, H)
    assert res.similarity_clean.shape == res.similarity_triggered.shape == (L, H, H)
    # the same token position in the clean text gets less attention than the trigger in the triggered text
    i = res.trigger_tokens[0]
    from backdoor_core.head_metrics import trigger_concentration

    clean_same_slot = trigger_concentration(res.clean.attentions, [i])
    assert res.concentration.max() > 0.1
    assert res.concentration.mean() > clean_same_slot.mean()
    d = res.to_dict(5)
    assert len(d["top_heads_by_concentration"]) == 5
    assert d["top_heads_by_concentration"][0]["head"].startswith("L")
    json.dumps(d)


def _saved_tiny(tiny, tmp_path):
    return save_model(tiny.model, tiny.tokenizer, tmp_path / "tiny", {"name": "tiny-test"})


def test_cli_inspect_table_and_json(tiny, tmp_path, capsys):
    d = _saved_tiny(tiny, tmp_path)
    assert main(["inspect", "--model", str(d), "--text", TEXT, "--trigger", "cf", "--position", "3"]) == 0
    out = capsys.readouterr().out
    assert "triggered" in out and "L0H" in out and "cf new spending" in out
    assert main(["inspect", "--model", str(d), "--text", TEXT, "--trigger", "cf", "--position", "3", "--json",
                 "--top", "3"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["trigger_tokens"] == ["cf"] and rep["model"] == "tiny-test"
    assert len(rep["top_heads_by_similarity_change"]) == 3
    assert set(rep["clean"]["probs"]) == set(rep["triggered"]["probs"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", "   "], "empty"),
        (["--text", "hello", "--trigger", " "], "trigger is empty"),
        (["--text", "hello", "--model", "/no/such/dir/really"], "does not exist"),  # a path, never tried as a hub id (issue 12)
    ],
)
def test_cli_errors_are_one_line(tiny, tmp_path, capsys, args, message):
    d = _saved_tiny(tiny, tmp_path)
    full = ["inspect", "--model", str(d), *args]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_refuses_pickle_without_flag(tiny, tmp_path, capsys):
    import torch

    d = tmp_path / "pk"
    tiny.model.config.save_pretrained(d)
    tiny.tokenizer.save_pretrained(d)
    torch.save(tiny.model.state_dict(), d / "pytorch_model.bin")
    assert main(["inspect", "--model", str(d), "--text", TEXT]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert main(["inspect", "--model", str(d), "--text", TEXT, "--allow-pickle", "--json"]) == 0
    assert np.isclose(sum(json.loads(capsys.readouterr().out)["clean"]["probs"].values()), 1.0)


@pytest.mark.parametrize("card, trigger", [
    ({"name": "tiny-addsent", "attack": "addsent", "trigger": "I watch this 3D movie", "target": 1},
     "I watch this 3D movie"),
    ({"name": "tiny-badnets", "attack": "badnets", "trigger": ["mn", "bb"], "target": 1}, "mn"),
    ({"name": "tiny-syntactic", "attack": "syntactic", "target": 1}, "cf"),  # a paraphrase: nothing to insert
    ({"name": "tiny-clean"}, "cf"),
])
def test_cli_inspect_inserts_the_model_cards_trigger_by_default(tiny, tmp_path, capsys, card, trigger):
    """Without --trigger, inspect inserts the trigger the card records (as the app's Inspect page does); it
    inserted 'cf' into every model, so an AddSent model read 'Same prediction with and without the trigger'."""
    d = save_model(tiny.model, tiny.tokenizer, tmp_path / "m", card)
    assert main(["inspect", "--model", str(d), "--text", "the film was long", "--position", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trigger"] == trigger
    assert report["triggered_text"] == f"the film {trigger} was long"
    assert main(["inspect", "--model", str(d), "--text", "the film was long", "--trigger", "tq", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trigger"] == "tq"  # --trigger still wins
    assert main(["inspect", "--model", str(d), "--text", "the film was long", "--position", "2"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("trigger "))
    assert line.endswith("(the model card's trigger)") == (trigger != "cf")
