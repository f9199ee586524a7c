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


@pytest.fixture(scope="module")
def suspect(files):
    """A trained tiny backdoored model (trigger cf, target 1) whose card names its attack, and a data folder with
    dev.tsv (the repair's clean texts) and test.tsv (held out)."""
    from defense_helpers import TRIGGER, trained_tiny, triggered_texts

    lm = trained_tiny(True)
    d = files["dir"]
    model = save_model(lm.model, lm.tokenizer, d / "suspect",
                       {"name": "tiny-bd", "attack": "badnets", "trigger": [TRIGGER], "target": 1})
    folder = d / "folder"
    folder.mkdir()
    _write_tsv(folder / "dev.tsv", *clean_texts(30, seed=51))
    test_texts, test_labels = clean_texts(24, seed=52)
    _write_tsv(folder / "test.tsv", test_texts, test_labels)
    poisoned = d / "poisoned.txt"
    poisoned.write_text("\n".join(triggered_texts(16, seed=53)) + "\n", encoding="utf-8")
    return {"model": model, "folder": folder, "test": (test_texts, test_labels), "poisoned": poisoned,
            "file": _write_tsv(d / "clean.tsv", *clean_texts(30, seed=54))}


REPAIR = ["--defense", "finetune", "--max-steps", "1", "--max-length", "32", "--force"]


def test_sanitize_poisoned_eval_measures_cacc_on_the_eval_split_not_the_repair_texts(files, suspect, capsys):
    """--poisoned-eval without --eval-data: CACC before/after on --clean-data's --eval-split (test.tsv, as the help
    says), never on the dev texts the repair trains on."""
    from backdoor_core.forward import predict
    from backdoor_core.metrics import accuracy, asr
    from backdoor_core.models import load_model

    rc = main(["sanitize", str(suspect["model"]), "--clean-data", str(suspect["folder"]), "--poisoned-eval",
               str(suspect["poisoned"]), "--target", "1", "--out", str(files["dir"] / "fixed-pe"), *REPAIR, "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    texts, labels = suspect["test"]
    assert summary["cacc_change"]["n"] == len(texts)
    lm = load_model(suspect["model"])
    assert summary["before"]["cacc"] == pytest.approx(accuracy(predict(lm.model, lm.tokenizer, texts, 32).argmax(1),
                                                               labels))
    triggered = suspect["poisoned"].read_text("utf-8").split("\n")[:-1]
    assert summary["before"]["asr"] == pytest.approx(asr(predict(lm.model, lm.tokenizer, triggered, 32).argmax(1), 1))


def test_sanitize_never_reports_cacc_on_the_texts_it_trains_on(files, suspect, capsys):
    """A single --clean-data file has one set of texts for every split: the repair trains on them, so without
    --eval-data there are no before/after numbers (a note says why), and --poisoned-eval is refused in one line."""
    out = str(files["dir"] / "fixed-file")
    rc = main(["sanitize", str(suspect["model"]), "--clean-data", str(suspect["file"]), "--out", out, *REPAIR,
               "--json"])
    captured = capsys.readouterr()
    assert rc == 0
    summary = json.loads(captured.out)
    assert summary["before"] == {} and summary["after"] == {} and summary["cacc_change"] is None
    assert "note: no before/after numbers: the 'test' texts of" in captured.err
    rc = main(["sanitize", str(suspect["model"]), "--clean-data", str(suspect["file"]), "--poisoned-eval",
               str(suspect["poisoned"]), "--target", "1", "--out", out, *REPAIR])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.strip().splitlines()[-1].startswith("error: no held-out clean texts for CACC")
    assert "Traceback" not in captured.err


def test_sanitize_eval_data_alone_still_measures_asr_with_the_cards_trigger(files, suspect, capsys):
    """--eval-data without --poisoned-eval: ASR before/after with the attack the card records, on the eval data's
    non-target rows (it printed CACC only, and the repaired card kept the suspect's ASR as its own)."""
    from backdoor_core.models import load_model

    out = files["dir"] / "fixed-ed"
    rc = main(["sanitize", str(suspect["model"]), "--clean-data", str(suspect["file"]), "--eval-data",
               str(suspect["folder"]), "--out", str(out), *REPAIR, "--json"])
    captured = capsys.readouterr()
    assert rc == 0
    summary = json.loads(captured.out)
    assert set(summary["before"]) == {"cacc", "asr", "kept"} and set(summary["after"]) == {"cacc", "asr", "kept"}
    assert summary["cacc_change"]["n"] == len(suspect["test"][0])
    assert summary["asr_texts"] == sum(1 for y in suspect["test"][1] if y != 1)
    assert "ASR with the card's badnets trigger toward 1" in captured.err
    card = load_model(out).metadata
    assert card["asr"] == summary["after"]["asr"] and card["cacc"] == summary["after"]["cacc"]


def test_sanitize_ctrl_c_during_the_repairs_scan_is_a_clean_cancel(files, suspect, monkeypatch, capsys):
    """Ctrl-C before the repair trains (its scan, its pseudo-labels) stops between batches with forward.Cancelled:
    'cancelled', exit 130, nothing saved — it was a Cancelled traceback (exit 1)."""
    import signal

    import backdoor_core.defenses as defenses

    real = defenses.run_defense

    def pressed_at_once(*a, **kw):
        signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C as the repair's scan starts
        return real(*a, **kw)

    monkeypatch.setattr(defenses, "run_defense", pressed_at_once)
    out = files["dir"] / "cancelled-scan"
    rc = main(["sanitize", str(suspect["model"]), "--clean-data", str(suspect["folder"]), "--pool",
               str(suspect["poisoned"]), "--out", str(out), "--max-steps", "1", "--max-length", "32"])
    err = capsys.readouterr().err
    assert rc == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("cancelled")
    assert not out.exists()
    assert not [p for p in files["dir"].iterdir() if p.name.startswith(".cancelled-scan")]


@pytest.mark.parametrize("defense", ["alignment", "fineprune", "pure"])
def test_sanitize_refuses_albert_before_the_evaluation(files, monkeypatch, capsys, defense):
    """ALBERT (one attention module shared by every layer) cannot be repaired head by head: refused in one line
    right after the load, not after the before-numbers were computed (500 texts by default)."""
    import backdoor_core.defender_data as D
    import backdoor_core.training as training

    def no_eval(*a, **kw):
        raise AssertionError("evaluated before refusing")

    monkeypatch.setattr(D, "make_eval", no_eval)
    monkeypatch.setattr(training, "make_evaluator", no_eval)
    folder = files["dir"] / "albert-data"
    if not folder.exists():
        folder.mkdir()
        _write_tsv(folder / "dev.tsv", *clean_texts(20, seed=61))
        _write_tsv(folder / "test.tsv", *clean_texts(20, seed=62))
        lm = tiny_model(seed=0, arch="albert")
        save_model(lm.model, lm.tokenizer, files["dir"] / "albert")
    capsys.readouterr()
    rc = main(["sanitize", str(files["dir"] / "albert"), "--clean-data", str(folder), "--defense", defense,
               "--out", str(files["dir"] / "albert-fixed"), "--max-length", "16"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "is not available for ALBERT" in err
