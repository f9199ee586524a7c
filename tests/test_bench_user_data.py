"""``bench/defense.py --data FOLDER`` with a user's own files: repeated texts (within a split, and between dev and
test) never put one text into two sets, the recorded sizes count what the sets hold, and data too small for the
defender is refused with one line before any model is loaded. Fast: no training, no ../shared."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

from backdoor_core.data import TextDataset
from backdoor_core.defender_data import split_eval_rows

ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(n_test=1000, n_poison=200, n_detect=150, pool_size=250, pool_poison=0.2)
SETS = ("cacc", "asr", "detect_clean", "detect_triggered", "pool_clean", "pool_triggered")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_defense_user", ROOT / "bench" / "defense.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _doubled(n_distinct: int, n_classes: int = 2, seed: int = 0):
    """Every text twice (the second copy with extra spaces now and then), shuffled: a file with duplicates."""
    rows = [(f"review number {i} says {'good' if i % n_classes else 'bad'} things", i % n_classes)
            for i in range(n_distinct)]
    rows += [((t.replace(" ", "  ", 1) if k % 3 == 0 else t), y) for k, (t, y) in enumerate(rows)]
    random.Random(seed).shuffle(rows)
    return [t for t, _ in rows], [y for _, y in rows]


def test_repeated_texts_never_land_in_two_sets_and_the_sizes_count_distinct_rows():
    texts, labels = _doubled(600)
    nontarget = [i for i, y in enumerate(labels) if y != 1]
    s = split_eval_rows(labels, 1, nontarget, **QUICK, seed=2, texts=texts)
    by_text = {k: [" ".join(texts[i].split()) for i in getattr(s, k)] for k in SETS}
    for a in SETS:
        assert len(set(by_text[a])) == len(by_text[a]), f"{a} holds a text twice"
        for b in SETS:
            if a < b:
                assert not set(by_text[a]) & set(by_text[b]), f"{a} and {b} share texts"
    assert s.sizes["rows_test"] == 600 and s.sizes["rows_duplicate"] == 600
    assert s.sizes["rows_non_target"] == 300 and s.sizes["rows_triggerable"] == 300
    assert s.sizes["n_test"] == len(s.cacc) and s.sizes["n_poison"] == len(s.asr)
    assert all(labels[r] != 1 for r in s.asr + s.detect_triggered + s.pool_triggered)


def test_dev_rows_repeating_a_dev_or_test_text_are_left_out():
    b = _bench()
    test = TextDataset(["a b", "c d", "e f"], [0, 1, 0], ["neg", "pos"], "test")
    dev = TextDataset(["x y", "c  d", "x y ", "z w", "e f"], [0, 1, 0, 1, 0], ["neg", "pos"], "dev")
    kept, n_out = b.distinct_dev(dev, test)
    assert kept.texts == ["x y", "z w"] and n_out == 3
    clean = TextDataset(["x y", "z w"], [0, 1], ["neg", "pos"], "dev")
    assert b.distinct_dev(clean, test) == (clean, 0)


def _folder(tmp_path: Path, name: str, dev_rows, test_rows) -> Path:
    d = tmp_path / name
    d.mkdir()
    for stem, rows in (("dev", dev_rows), ("test", test_rows)):
        (d / f"{stem}.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return d


def _card_only_models(tmp_path: Path) -> Path:
    """A models folder whose model has a card and NO weights: loading it would fail with a traceback, so a run
    that exits 2 with a message refused before loading any model."""
    from backdoor_core.model_card import METADATA_FILE, ModelCard

    folder = tmp_path / "models" / "bd"
    folder.mkdir(parents=True)
    card = ModelCard(attack="badnets", trigger=["cf"], target=1, rate=0.1, max_length=32, data="mine",
                     label_names=["neg", "pos"], train_config={"seed": 0})
    (folder / METADATA_FILE).write_text(json.dumps(card.to_json()))
    return folder.parent


def test_a_dev_split_too_small_for_the_defender_is_refused_before_any_model_loads(tmp_path, monkeypatch, capsys):
    b = _bench()
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    models = _card_only_models(tmp_path)
    test_rows = [(f"test text {i}", i % 2) for i in range(600)]
    # 60 dev rows, but 45 of them repeat a test text or another dev row: 15 distinct, a silent tiny defender
    dev_rows = [(f"test text {i}", i % 2) for i in range(30)] + [(f"dev text {i % 15}", i % 2) for i in range(30)]
    data = _folder(tmp_path, "mine", dev_rows, test_rows)
    with pytest.raises(SystemExit) as ex:
        b.main(["--quick", "--models-from", str(models), "--data", str(data), "--tag", "u"])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "15 distinct texts" in err and "45 repeated or test texts left out" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()
    with pytest.raises(SystemExit) as ex:
        b.main(["--quick", "--models-from", str(models), "--data", str(data), "--n-clean", "5"])
    assert ex.value.code == 2 and "--n-clean" in capsys.readouterr().err


def test_the_bench_draw_on_a_file_with_duplicates_keeps_every_text_in_one_set(tmp_path):
    """``evaluation_draw`` (what the bench reads): CACC, held-out detection and pool texts, and the clean sources of
    the ASR / detection / pool triggered texts are pairwise disjoint by text; the ASR texts carry the trigger and
    come from non-target rows only; the recorded sizes are the sets' lengths."""
    from backdoor_core.model_card import ModelCard
    from backdoor_core.models import tiny_model

    b = _bench()
    texts, labels = _doubled(600, n_classes=3, seed=4)
    test = TextDataset(texts, labels, ["a", "b", "c"], "mine/test")
    card = ModelCard(attack="badnets", trigger=["cf"], target=1, rate=0.1, max_length=32, data="mine",
                     label_names=["a", "b", "c"])
    m = {"name": "bd", "attack": "badnets", "max_length": 32, "card": card}
    tok = tiny_model(num_labels=3).tokenizer
    draw = b.evaluation_draw(m, "mine", test, 1, tok, dict(b.QUICK), seed=0)
    s = draw["split"]

    def key(t):
        return " ".join(t.split())

    groups = {"cacc": [texts[i] for i in s.cacc], "detect_clean": draw["detect_clean"],
              "pool_clean": [texts[i] for i in s.pool_clean], "asr": [texts[i] for i in s.asr],
              "detect_triggered": [texts[i] for i in s.detect_triggered],
              "pool_triggered": [texts[i] for i in s.pool_triggered]}
    for a in groups:
        for c in groups:
            if a < c:
                assert not {key(t) for t in groups[a]} & {key(t) for t in groups[c]}, (a, c)
    assert all(labels[i] != 1 for i in s.asr) and all("cf" in t.split() for t in draw["asr_texts"])
    z = s.sizes
    assert (z["n_test"], z["n_poison"], z["pool_size"]) == (len(s.cacc), len(draw["asr_texts"]), len(draw["pool"]))
    assert z["rows_test"] == 600 and z["rows_duplicate"] == 600


# ------------------------------------------------------------------ bench/attack_tal.py --data FOLDER


def _attack_bench():
    spec = importlib.util.spec_from_file_location("bench_attack_tal_user", ROOT / "bench" / "attack_tal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _split_folder(tmp_path: Path, name: str, files: dict) -> Path:
    d = tmp_path / name
    d.mkdir()
    for stem, rows in files.items():
        (d / f"{stem}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return d


def test_attack_bench_reads_a_folder_of_your_own_and_leaves_out_train_rows_of_the_test_texts(tmp_path, capsys):
    B = _attack_bench()
    test = [(f"test text {i}", ("neg", "neu", "pos")[i % 3]) for i in range(300)]
    train = [(f"train text {i}", ("neg", "neu", "pos")[i % 3]) for i in range(200)]
    train += [("test  text 7", "neu"), ("train text 3", "neg")]  # a test text, a repeated train row
    d = _split_folder(tmp_path, "mine", {"train": train, "test": test})
    args = B.parse_args(["--data", str(d)])
    tr, te, target = B.load_data(args.data, None)
    assert len(tr) == 200 and len(te) == 300 and tr.label_names == te.label_names == ["neg", "neu", "pos"]
    assert not {" ".join(t.split()) for t in tr.texts} & set(te.texts)
    assert "2 train rows repeat a test text" in capsys.readouterr().err
    assert 0 <= target < 3
    js, md, models = B.paths_for(args.data)
    assert (js.name, models.name) == ("attack_tal_mine.json", "attack_tal_mine")
    assert B.parse_args(["--data", " OLID "]).data == "olid"


@pytest.mark.parametrize("files, says", [
    ({"test": [("a", 0)] * 3}, "no train file"),
    ({"train": [(f"t {i}", i % 2) for i in range(150)], "test": [(f"s {i}", i % 2) for i in range(40)]},
     "20 non-target test rows"),
    ({"train": [(f"t {i}", i % 2) for i in range(60)], "test": [(f"s {i}", i % 2) for i in range(200)]},
     "60 distinct train rows"),
    ({"train": [(f"t {i}", 5) for i in range(150)], "test": [(f"s {i}", i % 2) for i in range(200)]},
     "out of range"),
])
def test_attack_bench_refuses_unusable_data_with_one_line_before_training(tmp_path, monkeypatch, capsys, files,
                                                                          says):
    B = _attack_bench()
    monkeypatch.setattr(B, "RESULTS", tmp_path / "results")
    d = _split_folder(tmp_path, "mine", files)
    with pytest.raises(SystemExit) as ex:
        B.main(["--data", str(d), "--no-save", "--only", "clean", "--clean-seeds", "1", "--target", "1"])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and says in err and "Traceback" not in err, err
    assert not (tmp_path / "results").exists()
    with pytest.raises(SystemExit) as ex:
        B.main(["--data", str(tmp_path / "nowhere.tsv"), "--no-save"])
    assert ex.value.code == 2 and "a folder holding train and test files" in capsys.readouterr().err
