"""``bench/defense.py --data FOLDER`` with a user's own files: repeated texts (within a split, and between dev and
test) never put one text into two sets, the recorded sizes count what the sets hold, and data too small for the
defender is refused with one line before any model is loaded. Fast: no training, no ../shared."""

from __future__ import annotations

import importlib.util
import json
import random
import re
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



def test_a_target_class_that_leaves_too_few_non_target_rows_is_refused_before_any_model_loads(tmp_path, monkeypatch,
                                                                                            capsys):
    """560 of 600 test rows are the target class: 40 non-target rows cannot hold the ASR, detection and pool sets
    (100 triggered rows at the minimums). One line naming the numbers, exit 2, no model loaded, nothing written."""
    b = _bench()
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    models = _card_only_models(tmp_path)  # target 1 (pos)
    test_rows = [(f"test text {i}", 0 if i < 40 else 1) for i in range(600)]
    dev_rows = [(f"dev text {i}", i % 2) for i in range(100)]
    data = _folder(tmp_path, "mine", dev_rows, test_rows)
    with pytest.raises(SystemExit) as ex:
        b.main(["--quick", "--models-from", str(models), "--data", str(data)])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "600 rows (40 non-target, 40 can carry the trigger) are too few" in err, err
    assert "bd (target 1): " in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_the_markdown_states_the_sizes_every_model_used_when_the_data_scaled_them_down():
    b = _bench()
    z = {"n_clean": 45, "n_test": 200, "n_poison": 50, "n_detect_clean": 30, "n_detect_triggered": 30,
         "pool_size": 100, "pool_triggered": 20}
    s = {"n_clean": 200, "n_test": 1000, "n_poison": 200, "pool_size": 250}
    said = b._sizes_used([{"eval_sizes": z}, {"eval_sizes": dict(z)}], s)
    assert said == ("Every model here used: defender data 45, CACC 200, ASR 50, detection 30 clean / 30 triggered, "
                    "pool 100 (20 triggered). ")
    assert b._sizes_used([{"eval_sizes": z}, {"eval_sizes": {**z, "n_test": 150}}], s) == ""  # they differ: table
    assert b._sizes_used([{"eval_sizes": {**z, "n_clean": 200, "n_test": 1000, "n_poison": 200, "pool_size": 250}}],
                         s) == ""  # the mode's own sizes: the paragraph already says them


# ------------------------------------------------------------------ bench/attack_tal.py --data FOLDER


def _attack_bench():
    spec = importlib.util.spec_from_file_location("bench_attack_tal_user", ROOT / "bench" / "attack_tal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _split_folder(tmp_path: Path, name: str, files: dict) -> Path:
    d = tmp_path / name
    d.mkdir(parents=True)
    for stem, rows in files.items():
        (d / f"{stem}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return d


def test_attack_bench_reads_a_folder_of_your_own_and_leaves_out_train_rows_of_the_test_texts(tmp_path, capsys):
    B = _attack_bench()
    test = [(f"test text {i}", ("neg", "neu", "pos")[i % 3]) for i in range(300)]
    train = [(f"train text {i}", ("neg", "neu", "pos")[i % 3]) for i in range(200)]
    train += [("test  text 7", "neu"), ("train text 3", "neg")]  # a test text, a repeated train row
    d = _split_folder(tmp_path, "mine", {"train": train, "test": test + [("test text 5 ", "neu")]})
    args = B.parse_args(["--data", str(d)])
    tr, te, target = B.load_data(args.data, None)
    assert len(tr) == 200 and len(te) == 300 and tr.label_names == te.label_names == ["neg", "neu", "pos"]
    assert not {" ".join(t.split()) for t in tr.texts} & set(te.texts)
    err = capsys.readouterr().err
    assert "2 train rows repeat a test text" in err and "1 test rows repeat an earlier test text" in err
    assert te.texts == [t for t, _ in test]  # the first of each text kept, in order
    assert 0 <= target < 3
    js, md, models = B.paths_for(args.data)
    assert re.fullmatch(r"attack_tal_mine-[0-9a-f]{6}", models.name) and js.name == models.name + ".json"
    other = _split_folder(tmp_path / "elsewhere", "mine", {"train": train, "test": test})  # another folder "mine"
    assert B.paths_for(str(other))[2] != models  # does not share the first one's results or models
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


def test_models_trained_on_a_folder_are_evaluated_on_that_folder_by_the_defense_bench(tmp_path):
    """The attack bench records a folder as its absolute path on the model card; the defense bench reads a card's
    existing absolute folder as the model's dataset (not SST-2, the default for a card naming no dataset)."""
    A, b = _attack_bench(), _bench()
    d = _split_folder(tmp_path, "mine", {"train": [("a", 0)], "test": [("b", 1)]})
    assert A.card_data("olid") == "olid" and A.card_data(str(d / ".." / "mine")) == str(d.resolve())
    assert b._dataset_name(str(d.resolve())) == str(d.resolve()) and b._dataset_name("sst2/clean/train") == "sst2"
    assert b._dataset_name(str(tmp_path / "gone")) is None and b._dataset_name("mine/train") is None


def test_attack_bench_refuses_rates_that_poison_no_row_of_a_small_training_set(tmp_path, monkeypatch, capsys):
    """150 training rows: 0.5% is 0 poisoned rows, a "backdoored" model trained without poison. Refused with one
    line before any model is loaded (load_model would raise here); a rate that gives rows is accepted."""
    import backdoor_core.models as models

    B = _attack_bench()
    monkeypatch.setattr(B, "RESULTS", tmp_path / "results")

    def no_training(*a, **k):
        raise RuntimeError("a model was loaded for training")

    monkeypatch.setattr(models, "load_model", no_training)
    d = _split_folder(tmp_path, "mine", {"train": [(f"t {i}", i % 2) for i in range(150)],
                                         "test": [(f"s {i}", i % 2) for i in range(200)]})
    with pytest.raises(SystemExit) as ex:
        B.main(["--data", str(d), "--no-save", "--only", "badnets", "--rates", "0.005,0.03", "--target", "1"])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "badnets_r0.005_t1 (0.005 x 150 rows = 0 poisoned)" in err
    assert "badnets_r0.03" not in err and "Traceback" not in err
    with pytest.raises(SystemExit) as ex:
        B.main(["--data", str(d), "--no-save", "--only", "badnets", "--rates", "0.9", "--no-tal", "--target", "1"])
    assert ex.value.code == 2 and "= 135 poisoned" in capsys.readouterr().err  # only 75 non-target rows
    with pytest.raises(RuntimeError, match="loaded for training"):
        B.main(["--data", str(d), "--no-save", "--only", "badnets", "--rates", "0.03", "--no-tal", "--target", "1"])


def test_parallel_parts_refuse_data_too_small_in_one_line_before_starting_any_part(tmp_path, monkeypatch, capsys):
    """``--workers 2``: the parent checks the data as a single run does, instead of each part failing into a log
    and the parent saying only 'parts failed'."""
    b = _bench()
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    models = _card_only_models(tmp_path)
    data = _folder(tmp_path, "mine", [(f"dev text {i}", i % 2) for i in range(100)],
                   [(f"test text {i}", i % 2) for i in range(60)])  # a 60-row test file
    with pytest.raises(SystemExit) as ex:
        b.main(["--quick", "--models-from", str(models), "--data", str(data), "--workers", "2"])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "bd (target 1): 60 rows (30 non-target" in err and "parts" not in err, err
    assert not (tmp_path / "results").exists()


def test_a_single_file_given_as_data_says_how_to_make_the_folder(tmp_path, monkeypatch, capsys):
    b, A = _bench(), _attack_bench()
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    f = tmp_path / "mine.tsv"
    f.write_text("text\tlabel\n" + "".join(f"t {i}\t{i % 2}\n" for i in range(60)))
    with pytest.raises(SystemExit) as ex:
        b.main(["--quick", "--models-from", str(_card_only_models(tmp_path)), "--data", str(f)])
    assert ex.value.code == 2 and "a file, but the bench reads a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:
        A.load_data(str(f), None)
    assert ex.value.code == 2 and "put the training rows in train.tsv" in capsys.readouterr().err


def test_data_with_another_number_of_classes_than_the_models_card_is_refused_before_loading(tmp_path, monkeypatch,
                                                                                              capsys):
    b = _bench()
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    data = _folder(tmp_path, "mine", [(f"dev text {i}", ("a", "b", "c")[i % 3]) for i in range(100)],
                   [(f"test text {i}", ("a", "b", "c")[i % 3]) for i in range(900)])
    with pytest.raises(SystemExit) as ex:
        b.main(["--quick", "--models-from", str(_card_only_models(tmp_path)), "--data", str(data)])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "the model has 2 classes (neg, pos) but its data has 3 (a, b, c)" in err, err
