"""The `attack` command with the user's own paraphrase (style) files: aligned and non-aligned, with --train-size,
and the refusals (one line, exit 2, before any model loads). Tiny model, toy files."""

import json
import random

import pytest

from backdoor_core.cli import main
from backdoor_core.models import METADATA_FILE, save_model, tiny_model

WORDS = {0: "market shares profit bank economy growth".split(), 1: "match goal team coach league win".split()}
ARGS = ["--rate", "0.25", "--target", "1", "--epochs", "1", "--batch-size", "8", "--max-length", "24",
        "--lr", "1e-3", "--train-size", "24"]


def _rows(n, seed):
    rng = random.Random(seed)
    return [(" ".join(rng.choice(WORDS[i % 2]) for _ in range(rng.randint(4, 9))) + f" r{seed}x{i}", i % 2)
            for i in range(n)]


def _write(path, rows, header="sentence\tlabel"):
    path.write_text(header + "\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("para")
    lm = tiny_model(seed=0)
    save_model(lm.model, lm.tokenizer, root / "tiny")
    data = _rows(60, 3)
    _write(root / "data.tsv", data)
    # aligned: row i paraphrases data row i (same label); non-aligned: another sample, rows dropped
    _write(root / "aligned.tsv", [(f"{t} so it goes", y) for t, y in data])
    _write(root / "poetry_train.tsv", [(f"o verse {t}", y) for t, y in _rows(30, 7)])
    _write(root / "poetry_test.tsv", [(f"o verse {t}", y) for t, y in _rows(10, 8)])
    return root


@pytest.fixture
def captured(monkeypatch):
    import backdoor_core.poisoning as poisoning

    real, seen = poisoning.train_attack, {}

    def spy(*a, **kw):
        seen["outcome"] = real(*a, **kw)
        return seen["outcome"]

    monkeypatch.setattr(poisoning, "train_attack", spy)
    return seen


def test_non_aligned_style_file_trains_with_train_size(setup, captured, capsys, monkeypatch):
    monkeypatch.chdir(setup)  # the card records the files relative to the working folder
    out = setup / "poetry-model"
    rc = main(["attack", "--model", "tiny", "--data", "data.tsv", "--attack", "style", "--style-name", "poetry",
               "--paraphrase-train", "poetry_train.tsv", "--paraphrase-test", str(setup / "poetry_test.tsv"),
               *ARGS, "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    examples = captured["outcome"].train_examples
    para = dict(line.split("\t") for line in (setup / "poetry_train.tsv").read_text().splitlines()[1:])
    poisoned = [e for e in examples if e.poisoned]
    assert len(examples) == 24 and len(poisoned) == 6  # --train-size subsampled; int(0.25 * 24) poisoned
    for e in poisoned:  # drawn from the (non-aligned) file, of a non-target source label, relabelled
        assert e.text in para and para[e.text] == "0" and e.label == 1
    assert len({e.text for e in poisoned}) == 6
    data = [line.split("\t")[0] for line in (setup / "data.tsv").read_text().splitlines()[1:]]
    assert all(e.text in data for e in examples if not e.poisoned)
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["attack"] == "style_poetry" and meta["train_size"] == 24 and meta["n_poisoned"] == 6
    assert meta["paraphrase_train"] == "poetry_train.tsv" and meta["paraphrase_test"] == "poetry_test.tsv"
    assert meta["data"] == "data.tsv" and str(setup) not in json.dumps(meta)  # no absolute machine path
    assert meta["poisoned_test_size"] == 5  # the label-0 rows of the paraphrased test file


def test_aligned_file_is_subset_with_the_training_rows(setup, captured, capsys):
    rc = main(["attack", "--model", str(setup / "tiny"), "--data", str(setup / "data.tsv"),
               "--attack", "style_echo", "--paraphrase-train", str(setup / "aligned.tsv"),
               "--paraphrase-test", str(setup / "poetry_test.tsv"), *ARGS])
    assert rc == 0, capsys.readouterr().err
    data = [line.split("\t")[0] for line in (setup / "data.tsv").read_text().splitlines()[1:]]
    examples = captured["outcome"].train_examples
    # each poisoned row is the paraphrase of the clean row at its own position: the training rows, recovered,
    # are distinct data rows in file order (a draw from other rows would break the order)
    originals = [e.text[: -len(" so it goes")] if e.poisoned else e.text for e in examples]
    assert sum(e.poisoned for e in examples) == 6
    positions = [data.index(t) for t in originals]
    assert positions == sorted(set(positions)) and len(positions) == 24


def _refused(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


@pytest.mark.parametrize("case,match", [
    ("missing", "not found"),
    ("columns", "column"),
    ("range", "label"),
    ("too_few", "paraphrased rows of label 0"),
    ("no_test", "--paraphrase-test"),
])
def test_bad_paraphrase_files_are_refused_before_the_model_loads(setup, tmp_path, capsys, case, match):
    train = setup / "poetry_train.tsv"
    if case == "missing":
        train = tmp_path / "nowhere.tsv"
    elif case == "columns":
        train = _write(tmp_path / "cols.tsv", [("a b c", 0)], header="words\tkind")
    elif case == "range":
        train = _write(tmp_path / "range.tsv", [("a b c", 0), ("d e f", 5)])
    elif case == "too_few":
        train = _write(tmp_path / "few.tsv", [("a b c", 0), ("d e f", 1), ("g h", 1)])
    argv = ["attack", "--model", str(tmp_path / "no-model-here"), "--data", str(setup / "data.tsv"),
            "--attack", "style_poetry", "--paraphrase-train", str(train), *ARGS]
    if case != "no_test":
        argv += ["--paraphrase-test", str(setup / "poetry_test.tsv")]
    assert match in _refused(capsys, argv)


def test_unknown_style_without_files_names_what_exists(setup, tmp_path, capsys):
    err = _refused(capsys, ["attack", "--model", str(tmp_path / "none"), "--data", str(setup / "data.tsv"),
                            "--attack", "style_poetry", *ARGS])
    assert "style_poetry" in err and "has none" in err and "--paraphrase-train" in err
    err = _refused(capsys, ["attack", "--model", str(tmp_path / "none"), "--data", str(setup / "data.tsv"),
                            "--attack", "badnets", "--paraphrase-train", str(setup / "aligned.tsv"), *ARGS])
    assert "syntactic and style" in err
