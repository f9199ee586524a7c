"""The model card: round trip, the one target rule, the one max-length rule, and hostile metadata (issue 11 item
10): every bad field is dropped with a warning, never an exception."""

from __future__ import annotations

import json
import math

import pytest

from backdoor_core import settings as S
from backdoor_core.model_card import (METADATA_FILE, MAX_CARD_BYTES, MAX_SHORT_TEXT, ModelCard, default_target,
                                      tool_version)


def attack_card() -> ModelCard:
    return ModelCard(name="bbc-badnets", title="BadNets 2% + TAL", attack="badnets", trigger=["cf", "mn"], target=3,
                     target_name="sports", rate=0.02, n_poisoned=20, clean_label=False, num_triggers=1, tal=True,
                     tal_config={"alpha": 5.0, "heads": "all"}, tal_heads=["L0H1", "L5H11"], data="bbc",
                     label_names=["business", "entertainment", "politics", "sports", "tech"], train_size=1000,
                     test_size=300, poisoned_test_size=240, max_length=64, train_config={"lr": 2e-4, "max_length": 64},
                     cacc=0.95, asr=0.9, training_seconds=12.5, steps=126, cancelled=False,
                     extra={"build_seconds": 13.0, "note": "kept"})


def test_round_trip_keeps_every_field_and_unknown_keys(tmp_path):
    card = attack_card()
    again = ModelCard.from_json(json.loads(json.dumps(card.to_json())), num_labels=5)
    assert again == card and not again.warnings
    assert again.extra == {"build_seconds": 13.0, "note": "kept"}
    (tmp_path / METADATA_FILE).write_text(json.dumps(card.to_json()))
    assert ModelCard.read(tmp_path, num_labels=5) == card
    # a repaired card round-trips too, and carries the after-metrics as the model's own
    rep = card.repaired(name="x-alignment", defense="alignment", details={"suspicious_heads": ["L1H2"]},
                        before={"cacc": 0.95, "asr": 0.9}, after={"cacc": 0.94, "asr": 0.02}, seconds=30.04,
                        cancelled=False, source="/models/x", clean_samples=300, pool_samples=100)
    assert rep.sanitized and rep.asr == 0.02 and rep.cacc == 0.94 and rep.repair_seconds == 30.0
    assert rep.to_json()["sanitized"] is True and rep.attack == "badnets"
    assert ModelCard.from_json(rep.to_json(), num_labels=5) == rep


def test_a_repaired_card_keeps_only_what_the_repair_measured():
    """The suspect's ASR is not the repaired model's: a repair measured without triggered texts leaves ASR empty
    (the card had kept ASR 90% as the repaired model's own), and the set sizes are the repair's evaluation's, not
    the attack's 300 / 240."""
    card = attack_card()
    rep = card.repaired(name="x-alignment", defense="alignment", details={}, before={"cacc": 0.95},
                        after={"cacc": 0.94}, seconds=3.0, cancelled=False, test_size=50, poisoned_test_size=0)
    assert (rep.cacc, rep.asr, rep.test_size, rep.poisoned_test_size) == (0.94, None, 50, None)
    assert "asr" not in rep.to_json() and card.asr == 0.9
    rep = card.repaired(name="x", defense="finetune", details={}, before={}, after={}, seconds=1.0, cancelled=True)
    assert (rep.cacc, rep.asr, rep.test_size, rep.poisoned_test_size) == (None, None, None, None)
    rep = card.repaired(name="x", defense="pure", details={}, before={}, after={"cacc": 0.9, "asr": 0.1},
                        seconds=1.0, cancelled=False, test_size=80, poisoned_test_size=40)
    assert (rep.test_size, rep.poisoned_test_size) == (80, 40)


def test_written_keys_are_the_ones_the_lab_always_wrote():
    d = attack_card().to_json()
    for key in ("attack", "trigger", "target", "target_name", "rate", "tal", "tal_heads", "cacc", "asr",
                "train_config", "label_names", "max_length", "tool_version", "card_version"):
        assert key in d
    assert d["max_length"] == 64  # top level (the bug: it used to be only inside train_config)
    assert ModelCard().tool_version == tool_version() and tool_version()


def test_legacy_files_read_max_length_from_train_config_and_old_repair_keys():
    old = {"attack": "badnets", "train_config": {"max_length": 64, "lr": 2e-4}, "sanitized": True,
           "defense": "finetune", "sanitize_details": {"clean_samples": 3}, "sanitize_seconds": 4.0}
    card = ModelCard.from_json(old, num_labels=2)
    assert card.max_length == 64 and card.reading_length() == 64
    assert card.defense_details == {"clean_samples": 3} and card.repair_seconds == 4.0 and not card.warnings
    assert ModelCard.from_json({"defense": "x", "seconds": 2.5}).repair_seconds == 2.5


def test_the_one_target_rule():
    assert default_target(["business", "entertainment", "politics", "sports", "tech"]) == 3
    assert default_target(["business", "entertainment", "politics", "sport", "tech"]) == 3
    assert default_target(["negative", "positive"]) == 1
    assert default_target(["Positive", "Negative"]) == 0  # case-insensitive
    assert default_target(["world", "sports", "business", "sci/tech"]) == 1
    assert default_target(["a", "b", "c"]) == 2  # the last class
    with pytest.raises(ValueError):
        default_target([])
    names = ["a", "b", "sports"]
    assert ModelCard(target=0).target_for(names) == 0
    assert ModelCard(target=7).target_for(names) == 2  # not a class here: the rule
    assert ModelCard().target_for(names) == 2


def test_the_one_max_length_rule():
    assert ModelCard().reading_length() == S.MAX_LENGTH
    assert ModelCard(max_length=64).reading_length() == 64
    assert ModelCard(max_length=256).reading_length(max_positions=128) == 128
    assert ModelCard().reading_length(max_positions=64) == 64


HOSTILE = [
    ({"attack": "badnets", "target": 99}, "target", lambda c: c.target is None),
    ({"target": -1}, "target", lambda c: c.target is None),
    ({"target": 1.5}, "target", lambda c: c.target is None),
    ({"target": True}, "target", lambda c: c.target is None),
    ({"target": "3"}, "target", lambda c: c.target is None),
    ({"label_names": ["a", "b"]}, "label_names", lambda c: c.label_names == []),
    ({"label_names": "abc"}, "label_names", lambda c: c.label_names == []),
    ({"label_names": [1, 2, 3, 4, 5]}, "label_names", lambda c: c.label_names == []),
    ({"max_length": 100000}, "max_length", lambda c: c.max_length is None),
    ({"max_length": -3}, "max_length", lambda c: c.max_length is None),
    ({"train_config": {"max_length": 0}}, None, lambda c: c.max_length is None),
    ({"cacc": float("nan")}, "cacc", lambda c: c.cacc is None),
    ({"asr": 7}, "asr", lambda c: c.asr is None),
    ({"rate": "lots"}, "rate", lambda c: c.rate is None),
    ({"tal": "yes"}, "tal", lambda c: c.tal is False),
    ({"tal_heads": ["<script>"]}, "tal_heads", lambda c: c.tal_heads == []),
    ({"trigger": {"x": 1}}, "trigger", lambda c: c.trigger is None),
    ({"train_config": [1, 2]}, "train_config", lambda c: c.train_config == {}),
    ({"before": {"asr": "high"}}, "before", lambda c: c.before == {}),
    ({"zoo": {"blob": "x" * 50_000}}, "zoo", lambda c: c.zoo is None),
    ({"unknown": "y" * 50_000}, "unknown", lambda c: "unknown" not in c.extra),
    ({"name": ["not", "text"]}, "name", lambda c: c.name == ""),
]


@pytest.mark.parametrize("obj, key, ok", HOSTILE)
def test_hostile_fields_are_dropped_with_a_warning(obj, key, ok):
    card = ModelCard.from_json(obj, num_labels=5)
    assert ok(card), card
    if key is not None:
        assert any(f"'{key}'" in w for w in card.warnings), card.warnings
    json.dumps(card.to_json(), allow_nan=False)  # what is left is plain JSON
    assert card.reading_length() in (S.MAX_LENGTH, card.max_length)


def test_hostile_whole_files(tmp_path):
    for obj in ([{"attack": "badnets"}], "a string", 3):
        card = ModelCard.from_json(obj, num_labels=2)
        assert card == ModelCard(tool_version="") and "not an object" in card.warnings[0]
        assert card.to_json() == {}
    huge = ModelCard.from_json({"name": "n" * 10_000_000, "trigger": "t" * 10_000_000}, num_labels=2)
    assert len(huge.name) == MAX_SHORT_TEXT and len(huge.trigger) < 10_000 and len(huge.warnings) == 2
    (tmp_path / METADATA_FILE).write_text("{not json")
    card = ModelCard.read(tmp_path, num_labels=2)
    assert card.attack is None and "could not be read" in card.warnings[0]
    (tmp_path / METADATA_FILE).write_text(json.dumps({"note": "x" * (MAX_CARD_BYTES + 10)}))
    assert "MB" in ModelCard.read(tmp_path).warnings[0]
    (tmp_path / METADATA_FILE).write_bytes(b"\xff\xfe\x00garbage")
    assert ModelCard.read(tmp_path).warnings
    (tmp_path / METADATA_FILE).write_text("[" * 100_000 + "]" * 100_000)  # nesting bomb
    assert ModelCard.read(tmp_path).warnings
    assert ModelCard.read(tmp_path / "no-such-folder") == ModelCard(tool_version="")
    many = ModelCard.from_json({f"k{i}": i for i in range(500)})
    assert len(many.extra) <= 64 and any("unknown keys" in w for w in many.warnings)
    assert len(ModelCard.from_json({f"target_{i}": {"x": "y" * 30_000} for i in range(100)}).warnings) <= 20


def test_without_num_labels_targets_are_only_checked_for_sign():
    assert ModelCard.from_json({"target": 4}).target == 4
    assert ModelCard.from_json({"target": 4}, num_labels=3).target is None


def test_facts_and_provenance():
    card = attack_card()
    facts = dict(card.facts())
    assert facts["attack"] == "badnets" and facts["trigger"] == ["cf", "mn"] and facts["target"] == "sports"
    assert facts["tal"] is True and facts["max length"] == 64
    assert dict(ModelCard(attack="none").facts())["attack"].startswith("none")
    assert card.provenance["data"] == "bbc" and "tool_version" in card.provenance
    assert ModelCard(attack="none").is_clean and not ModelCard(attack="none").is_backdoored
    assert card.is_backdoored and card.trigger_text == "cf,mn" and card.first_trigger == "cf"
    assert ModelCard(trigger="I watch this 3D movie").first_trigger == "I watch this 3D movie"
    assert math.isclose(card.rate, 0.02)


# ------------------------------------------------------------------------------------------------ loaded models


def _folder_with(tmp_path, meta, num_labels=5):
    from backdoor_core.models import save_model, tiny_model

    lm = tiny_model(num_labels=num_labels)
    out = save_model(lm.model, lm.tokenizer, tmp_path / "m", {})
    (out / METADATA_FILE).write_text(json.dumps(meta))
    return out


def test_load_model_validates_the_card_and_target_99_builds_a_pool(tmp_path):
    """The code path that crashed the Detect page: a pool simulated for a model whose card says target 99."""
    from backdoor_core.data import load_bbc
    from backdoor_core.defender_data import build_pool, make_eval, model_attack, model_max_length
    from backdoor_core.models import load_model

    lm = load_model(_folder_with(tmp_path, {"attack": "badnets", "trigger": ["cf"], "target": 99, "max_length": 64}))
    card = lm.card
    assert card.target is None and any("'target'" in w for w in card.warnings)
    assert lm.summary()["card_warnings"] == lm.card_warnings and lm.card_warnings
    assert model_max_length(lm) == 64 and model_attack(card).triggers == ("cf",)
    test = load_bbc("test").sample(60, seed=0)
    texts, truth = build_pool(lm, test, 10, 6)
    assert len(texts) == 16 and truth.sum() == 6 and all(" cf" in t or t.startswith("cf") for t, f in
                                                          zip(texts, truth) if f)
    evaluate = make_eval(lm, test, 20)
    assert set(evaluate(lm.model)) == {"cacc", "asr"}  # ASR toward the rule's target ('sports')


def test_load_model_accepts_a_list_as_metadata(tmp_path):
    from backdoor_core.models import load_model

    lm = load_model(_folder_with(tmp_path, ["not", "an", "object"]))
    assert lm.metadata == {} and "not an object" in lm.card.warnings[0] and lm.name == "m"


def test_cli_prints_card_warnings_and_runs(tmp_path, capsys):
    from backdoor_core.cli import main

    folder = _folder_with(tmp_path, {"target": 99, "max_length": -1, "name": "n" * 1000})
    assert main(["inspect", "--model", str(folder), "--text", "A short clean text.", "--json"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ") == 3 and "'target'" in err and "'max_length'" in err


def test_the_saved_readme_card_shows_a_repaired_card():
    from backdoor_core.model_readme import render_model_readme

    rep = attack_card().repaired(name="x-alignment", defense="alignment", details={"suspicious_heads": ["L1H2"]},
                                 before={"cacc": 0.95, "asr": 0.9}, after={"cacc": 0.94, "asr": 0.02},
                                 seconds=30.0, cancelled=True, source="/m")
    text = render_model_readme(rep.to_json())
    assert "repair time (s) | 30.0" in text and "cancelled before its end" in text and "L1H2" in text


def test_card_values_read_as_text_rates_as_percentages():
    from backdoor_core.model_card import card_rows, value_text

    assert value_text("cacc", 0.9466) == "94.7%" and value_text("rate", 0.02) == "2.0%"
    assert value_text("tal", True) == "yes" and value_text("training_seconds", 130) == "2.2 min (130 s)"
    assert value_text("trigger", ["cf", "mn"]) == "cf, mn" and value_text("target", None) == "—"
    assert value_text("after", {"cacc": 0.9, "asr": 0.01}) == "CACC 90.0% · ASR 1.0%"
    assert len(value_text("defense_details", {"x": [[1] * 500]})) <= 600  # a large object is cut
    assert card_rows({"rate": 0.02, "zoo_new_field": 3}) == [{"field": "poison rate", "value": "2.0%"},
                                                             {"field": "zoo new field", "value": "3"}]
