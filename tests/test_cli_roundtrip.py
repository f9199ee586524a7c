"""CLI round trips on tiny saved models: attack -> save -> load, and what each command prints about them."""

from __future__ import annotations

import json

import pytest

from backdoor_core.cli import main
from backdoor_core.models import METADATA_FILE, save_model, tiny_model

from defense_helpers import clean_texts


def _write_tsv(path, texts, labels):
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("roundtrip")
    lm = tiny_model(seed=0)
    save_model(lm.model, lm.tokenizer, d / "tiny")
    texts, labels = clean_texts(40, seed=41)
    return {"dir": d, "tiny": d / "tiny", "data": _write_tsv(d / "data.tsv", texts, labels)}


def test_attack_json_is_the_only_stdout_and_is_the_saved_card(files, capsys):
    out = files["dir"] / "bn-json"
    rc = main(["attack", "--model", str(files["tiny"]), "--data", str(files["data"]), "--attack", "badnets",
               "--rate", "0.2", "--target", "1", "--epochs", "1", "--batch-size", "8", "--max-length", "16",
               "--out", str(out), "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    card = json.loads(captured.out)  # nothing but the JSON on stdout
    assert f"saved {out}" in captured.err
    saved = json.loads((out / METADATA_FILE).read_text("utf-8"))
    saved.pop("saved_at")
    assert card == saved
    assert card["attack"] == "badnets" and card["target"] == 1 and card["rate"] == 0.2
