"""The defense bench on any data: disjoint evaluation sets sized from what exists (``split_eval_rows``), clean
rate / lift / pseudo-label accuracy arithmetic, the repair's record of the labels it gave, and a tiny end-to-end
``bench/defense.py --data FOLDER`` run (packaged tiny models and synthetic data; no ../shared needed)."""

from __future__ import annotations

import contextlib

import importlib.util
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from backdoor_core.defender_data import (EVAL_MINIMUMS, SplitError, lift, pseudo_label_accuracy, split_eval_rows,
                                         target_rate)

QUICK = dict(n_test=1000, n_poison=200, n_detect=150, pool_size=250, pool_poison=0.2)
ROOT = Path(__file__).resolve().parents[1]


def _labels(n_rows: int, n_target: int, seed: int = 0) -> list[int]:
    labels = [1] * n_target + [0] * (n_rows - n_target)
    random.Random(seed).shuffle(labels)
    return labels


def _sets(s):
    return {"cacc": s.cacc, "asr": s.asr, "detect_clean": s.detect_clean, "detect_triggered": s.detect_triggered,
            "pool_clean": s.pool_clean, "pool_triggered": s.pool_triggered}


def _check_disjoint(s, shared=True):
    sets = _sets(s)
    clean = ("cacc", "detect_clean", "pool_clean")
    trig = ("asr", "detect_triggered", "pool_triggered")
    for a in sets:
        assert len(set(sets[a])) == len(sets[a]), f"{a} repeats a row"
        for b in sets:
            if a < b and (shared or (a in clean) == (b in clean)):
                assert not set(sets[a]) & set(sets[b]), f"{a} and {b} share rows"


def test_large_data_keeps_the_defaults_and_every_set_is_disjoint():
    labels = _labels(7600, 1900)  # AG News-like: 4 classes -> 3/4 non-target (here: target 1 = 1900 rows)
    rows = [i for i, y in enumerate(labels) if y != 1]
    s = split_eval_rows(labels, 1, rows, **QUICK, seed=3)
    assert s.sizes["scale"] == 1.0
    assert (len(s.cacc), len(s.asr), len(s.detect_clean), len(s.detect_triggered)) == (1000, 200, 150, 150)
    assert len(s.pool_triggered) == 50 and len(s.pool_clean) == 200 and s.sizes["pool_size"] == 250
    _check_disjoint(s)
    assert all(labels[r] != 1 for r in s.asr + s.detect_triggered + s.pool_triggered)  # triggers: non-target
    # clean sets keep the test set's class mix (stratified), although triggered rows used up non-target rows
    share = sum(labels[i] != 1 for i in s.cacc) / len(s.cacc)
    assert abs(share - 5700 / 7600) < 0.01
    assert split_eval_rows(labels, 1, rows, **QUICK, seed=3).asr == s.asr  # seeded
    assert split_eval_rows(labels, 1, rows, **QUICK, seed=4).asr != s.asr


def test_small_data_scales_every_size_down_by_one_factor():
    labels = _labels(859, 619)  # OLID test with target 0: only 240 non-target (offensive) rows
    labels = [1 - y for y in labels]
    target = 0
    rows = [i for i, y in enumerate(labels) if y != target]
    assert len(rows) == 240
    s = split_eval_rows(labels, target, rows, **QUICK)
    z = s.sizes
    assert 0 < z["scale"] < 1
    _check_disjoint(s)
    assert len(s.asr) == max(EVAL_MINIMUMS["n_poison"], int(z["scale"] * 200))
    assert len(s.cacc) == max(EVAL_MINIMUMS["n_test"], int(z["scale"] * 1000))
    assert len(s.detect_clean) == len(s.detect_triggered) >= EVAL_MINIMUMS["n_detect"]
    assert len(s.pool_clean) == 4 * len(s.pool_triggered)  # the pool keeps its 20% triggered share
    used_nt = len(s.asr) + len(s.detect_triggered) + len(s.pool_triggered) + sum(
        labels[i] != target for i in s.cacc + s.detect_clean + s.pool_clean)
    assert used_nt <= 240
    # a slightly larger scale would not fit: the factor is the largest that does
    bigger = split_eval_rows(labels, target, rows + [], **{**QUICK, "n_test": 500})  # less CACC demand
    assert bigger.sizes["scale"] > z["scale"]


def test_too_small_data_is_refused_with_the_numbers():
    labels = _labels(300, 150)
    rows = [i for i, y in enumerate(labels) if y != 1]
    with pytest.raises(SplitError) as err:
        split_eval_rows(labels, 1, rows, **QUICK, name="tiny test")
    msg = str(err.value)
    assert "\n" not in msg and "tiny test: 300 rows (150 non-target, 150 can carry the trigger)" in msg
    assert "100 triggered rows" in msg  # 50 ASR + 30 detection + 20 pool
    with pytest.raises(SplitError, match="non-target"):  # a trigger row that is a target row is a caller bug
        split_eval_rows(labels, 1, [labels.index(1)], **QUICK)


def test_separate_paraphrase_rows_only_need_to_be_disjoint_among_themselves():
    labels = _labels(859, 240)
    para_rows = list(range(120))  # a paraphrase file of 120 usable rows, not aligned with the test set
    s = split_eval_rows(labels, 1, para_rows, **QUICK, shared_rows=False)
    _check_disjoint(s, shared=False)
    assert not s.sizes["shared_rows"] and len(s.asr) + len(s.detect_triggered) + len(s.pool_triggered) <= 120
    assert len(s.asr) >= 50


def test_clean_rate_lift_and_pseudo_label_accuracy():
    assert target_rate([1, 1, 0, 2], 1) == 0.5 and target_rate([], 1) is None
    assert lift(0.59, 0.487) == pytest.approx(0.103)
    assert lift(None, 0.4) is None and lift(0.9, None) is None
    assert lift(0.3, 0.487) == pytest.approx(-0.187)  # repair below the clean level: negative lift
    true = [0, 1, 0, 1, 2]
    acc = pseudo_label_accuracy([4, 0, 1, 3], [2, 1, -100, 1], true)
    assert acc == {"labelled": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)}
    assert pseudo_label_accuracy([0, 1], [-100, -100], true)["accuracy"] is None


def test_clean_rate_reads_the_clean_model_and_refuses_one_of_other_classes():
    """``defender_data.clean_rate``: the clean reference's share of the triggered texts predicted as the target,
    at its own reading length; a reference with another class count or other class names is refused."""
    from backdoor_core.defender_data import clean_hits, clean_rate
    from backdoor_core.forward import predict
    from backdoor_core.models import tiny_model

    suspect, clean = tiny_model(seed=0), tiny_model(seed=1)
    texts = ["the match ended in a draw", "shares fell sharply today", "a new phone was launched", "cf it rained"]
    own = predict(clean.model, clean.tokenizer, texts, 128).argmax(1)
    for target in (0, 1):
        assert clean_rate(clean, suspect, texts, target) == pytest.approx(float((own == target).mean()))
    assert clean_rate(clean, suspect, [], 1) is None
    assert clean_hits(clean, suspect, [], 1) is None
    assert np.array_equal(clean_hits(clean, suspect, texts, 1), own == 1)  # per text, the rate's parts
    with pytest.raises(ValueError, match="has 3 classes"):
        clean_rate(tiny_model(num_labels=3), suspect, texts, 1)
    clean.metadata, suspect.metadata = {"label_names": ["neg", "pos"]}, {"label_names": ["ham", "spam"]}
    with pytest.raises(ValueError, match="names its classes neg, pos"):
        clean_rate(clean, suspect, texts, 1)


def test_poisoned_test_sets_name_their_source_rows():
    from backdoor_core.data import TextDataset
    from backdoor_core.poisoning import ParaphraseAttack, get_attack

    ds = TextDataset(["a b c", "d e f", "g h i", "j k l"], [0, 1, 0, 1], ["neg", "pos"])
    p = get_attack("badnets").poison_test(ds, 1, seed=0)
    assert p.source_rows == [0, 2] and p.gold_labels == [0, 0]
    para = TextDataset(["x y", "nan", "z w", "q r", "s t"], [0, 0, 1, 0, 0], ["neg", "pos"])
    pp = ParaphraseAttack(None, para, "style_x").poison_test(None, 1)
    assert pp.source_rows == [0, 3, 4] and pp.texts == ["x y", "q r", "s t"]  # failed 'nan' and target rows out


def test_alignment_records_the_pool_inputs_it_used_and_their_labels():
    from backdoor_core.data import TextDataset
    from backdoor_core.defenses import run_defense
    from defense_helpers import clean_texts, trained_tiny, triggered_texts

    lm = trained_tiny(True)
    texts, labels = clean_texts(48, seed=24)
    pool = triggered_texts(6, seed=25) + clean_texts(4, seed=26)[0]
    res = run_defense("alignment", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]),
                      pool_texts=pool, heads=["L0H0", "L1H0"], epochs=1, lr=3e-3, max_length=32)
    d = res.details
    assert d["flagged_indices"] == list(range(len(pool))) and len(d["flagged_labels"]) == len(pool)
    assert sum(y != -100 for y in d["flagged_labels"]) == d["pool_pseudo_labelled"]
    assert "pool_labels" not in d


def _bench(script: str = "defense"):
    spec = importlib.util.spec_from_file_location(f"bench_{script}_gen", ROOT / "bench" / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_table(path: Path, texts, labels):
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))


def test_bench_runs_end_to_end_on_a_data_folder(tmp_path, monkeypatch, capsys):
    """A tiny backdoored model and its clean twin, a synthetic data folder: the bench evaluates both on it, finds
    the clean twin for the clean rate, writes the new columns, and keeps every set disjoint."""
    from backdoor_core.model_card import ModelCard
    from backdoor_core.models import save_model
    from defense_helpers import clean_texts, trained_tiny

    data = tmp_path / "mydata"
    data.mkdir()
    _write_table(data / "dev.tsv", *clean_texts(120, seed=101))
    _write_table(data / "test.tsv", *clean_texts(520, seed=102))
    models = tmp_path / "models"
    for name, bd in (("bd", True), ("clean", False)):
        card = ModelCard(attack="badnets" if bd else "none", trigger=["cf"] if bd else None, target=1 if bd else None,
                         rate=0.15 if bd else 0.0, tal=bd, max_length=32, data="mydata",
                         label_names=["negative", "positive"], train_config={"seed": 0})
        save_model(trained_tiny(bd).model, trained_tiny(bd).tokenizer, models / name, card.to_json())
    from backdoor_core.models import tiny_model

    start = tiny_model(seed=0)  # trained_tiny's starting point: the base checkpoint of both
    save_model(start.model, start.tokenizer, tmp_path / "base")
    b = _bench()
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    rc = b.main(["--quick", "--models-from", str(models), "--data", str(data), "--defenses", "alignment,finetune",
                 "--epochs", "1", "--n-clean", "60", "--repair", "bd", "--zoo", "test", "--tag", "t",
                 "--scan-knobs", '{"rep_method": "contrast"}', "--dev-asr", "25", "--base", str(tmp_path / "base")])
    assert rc == 0
    rep = json.loads((tmp_path / "results" / "defense_test_t.json").read_text())
    assert rep["settings"]["scan_knobs"] == {"rep_method": "contrast"}
    assert rep["zoo"] == "test" and rep["dataset"] == "mydata"
    runs = {r["defense"]: r for r in rep["runs"]}
    assert set(runs) == {"alignment", "finetune"}
    for r in runs.values():
        assert r["zoo"] == "test" and r["dataset"] == "mydata" and r["seed"] == 0
        assert 0 <= r["clean_rate"] <= 1
        assert r["lift_before"] == pytest.approx(r["asr_before"] - r["clean_rate"])
        assert r["lift_after"] == pytest.approx(r["asr_after"] - r["clean_rate"])
        for key in ("lift_before", "lift_after"):  # the paired interval holds the lift, rounded to 4 places
            lo, hi = r[f"{key}_ci95"]
            assert lo - 1e-4 <= r[key] <= hi + 1e-4 and -1 - 1e-4 <= lo <= hi <= 1 + 1e-4
    assert runs["finetune"]["lift_before_ci95"] == runs["alignment"]["lift_before_ci95"]  # one suspect, one interval
    assert runs["finetune"]["pseudo_label_accuracy"] is None
    # --dev-asr: the second ASR set, read before and after each repair against the clean model
    for r in runs.values():
        assert r["dev_asr_texts"] == 25 and 0 <= r["dev_clean_rate"] <= 1
        for when in ("before", "after"):
            lift_dev = r[f"dev_lift_{when}"]
            assert lift_dev == pytest.approx(r[f"dev_asr_{when}"] - r["dev_clean_rate"], abs=1e-4)
            lo, hi = r[f"dev_lift_{when}_ci95"]
            assert lo - 1e-4 <= lift_dev <= hi + 1e-4
    assert runs["finetune"]["dev_asr_before"] == runs["alignment"]["dev_asr_before"]
    assert runs["alignment"]["dev_asr_before"] > runs["alignment"]["dev_clean_rate"]  # the tiny backdoor lifts it
    n_cacc = rep["models"][0]["eval_sizes"]["n_test"]
    for r in runs.values():  # the paired CACC change: its counts give the change, its interval holds it
        lo, hi = r["cacc_change_ci95"]
        change = r["cacc_after"] - r["cacc_before"]
        assert (r["cacc_fixed"] - r["cacc_broken"]) / n_cacc == pytest.approx(change)
        assert lo <= change <= hi and (hi > lo or r["cacc_fixed"] + r["cacc_broken"] == 0)
    al = runs["alignment"]
    assert al["pseudo_labelled"] is not None
    assert al["pseudo_label_accuracy"] is None or 0 <= al["pseudo_label_accuracy"] <= 1
    det = [d for d in rep["detection"] if d["model"] == "bd"]
    assert det and {d["method"] for d in det} >= {"head_similarity", "strip", "rap", "bki"}
    for d in det:  # every method is scored on the same flipped inputs
        assert d["n_fired"] == det[0]["n_fired"]
    by_name = {m["name"]: m for m in rep["models"]}
    n_trig = by_name["bd"]["eval_sizes"]["n_detect_triggered"]
    assert 0 < det[0]["n_fired"] <= n_trig  # the tiny backdoor flips some held-out triggered inputs
    # the pool names the trigger: it marks only triggered pool inputs, and ranking them first never lowers AUROC
    bd = by_name["bd"]
    assert bd["marking_words"] == ["cf"] and 0 < bd["pool_word_marked"] == bd["pool_word_marked_triggered"]
    # the Detect page's call, with the words: "possible" only below the score's call
    assert bd["call"] == ("likely" if bd["verdict_score"] >= 0.5 else "possible")
    assert by_name["clean"]["call"] in ("likely", "not found") or by_name["clean"]["marking_words"]
    assert set(rep["model_verdict"]["possible"]) == {"backdoored", "clean"}
    auc = {d["method"]: d["auroc"] for d in det}
    assert auc["final_words"] >= auc["head_similarity_2pass"]
    assert auc["final_moved"] >= auc["final_words"]  # "cf" moved and the pool concentrates it: the same marks
    z = by_name["bd"]["eval_sizes"]
    assert z["rows_test"] == 520 and z["shared_rows"] and z["n_poison"] >= 50 and z["n_clean"] == 60
    assert by_name["bd"]["clean_model"] == "clean" and by_name["clean"]["clean_rate"] is None
    # the detection baselines score triggered against clean inputs: not run on a clean model, which has no rows
    assert by_name["bd"]["strip_seconds"] > 0 and by_name["bd"]["bki_keywords"]
    assert by_name["clean"]["strip_seconds"] == by_name["clean"]["rap_seconds"] == 0
    assert by_name["clean"]["bki_seconds"] == 0 and not [d for d in rep["detection"] if d["model"] == "clean"]
    md = (tmp_path / "results" / "defense_test_t.md").read_text()
    assert "# Defense benchmark (mydata; test zoo)" in md and "lift after" in md
    assert "CACC change, 95% interval" in md and "| verdict score | call |" in md
    assert "| lift after, 95% interval |" in md and "`metrics.lift_interval`" in md
    assert 'Scan knobs: `{"rep_method": "contrast"}`' in md
    assert "## A second ASR set: the dev rows the defender did not draw (`--dev-asr`)" in md
    assert "## Summary over seeds" in md and "## Evaluation sets used" in md
    # parallel runs merge into defense_test.json
    merged = b.merge(["t"], zoo="test")
    assert merged["zoo"] == "test" and len(merged["runs"]) == 2
    assert (tmp_path / "results" / "defense_test.json").is_file()
    # a data folder too small for the minimums is refused with one line, exit 2
    small = tmp_path / "small"
    small.mkdir()
    _write_table(small / "dev.tsv", *clean_texts(40, seed=103))
    _write_table(small / "test.tsv", *clean_texts(200, seed=104))
    with pytest.raises(SystemExit) as ex:
        b.main(["--quick", "--models-from", str(models), "--data", str(small), "--only", "bd", "--tag", "s"])
    assert ex.value.code == 2
    # --pool-poison: the pool's triggered share (the mode's size, grown to keep EVAL_MINIMUMS' triggered inputs)
    rc = b.main(["--quick", "--models-from", str(models), "--data", str(data), "--only", "bd", "--repair", "",
                 "--detectors", "ours", "--n-clean", "60", "--pool-poison", "0.1", "--tag", "p",
                 "--dump-scores", str(tmp_path / "scores")])
    assert rc == 0
    low = json.loads((tmp_path / "results" / "defense_p.json").read_text())
    zp = low["models"][0]["eval_sizes"]
    # --dump-scores: the verdict's inputs, which re-score to the recorded verdict
    from backdoor_core.detection import model_verdict, with_trigger_words

    dump = np.load(tmp_path / "scores" / "bd.npz")
    assert dump["pool_triggered"].sum() == zp["pool_triggered"] and len(dump["pool_scores"]) == zp["pool_size"]
    assert len(dump["clean_dev_predictions"]) == len(dump["clean_dev_scores"])
    meta = json.loads(str(dump["meta"]))
    again = model_verdict(SimpleNamespace(threshold=float(dump["threshold"])), dump["clean_dev_scores"],
                          dump["pool_scores"], dump["pool_predictions"], int(dump["num_labels"]))
    assert meta["marking_words"] == ["cf"] and meta["marking_flip"] >= 0.2  # the tiny backdoor's word
    again = with_trigger_words(again, meta["marking_words"], meta["marking_flip"])  # the words' score too
    assert again["score"] == pytest.approx(low["models"][0]["verdict_score"])
    assert meta["name"] == "bd"
    assert low["settings"]["pool_poison"] == 0.1 and zp["pool_triggered"] >= EVAL_MINIMUMS["pool_triggered"]
    assert zp["pool_triggered"] / zp["pool_size"] == pytest.approx(0.1, abs=0.01)
    assert z["pool_triggered"] / z["pool_size"] == pytest.approx(0.2, abs=0.01)  # the default run's share
    assert "10% triggered" in (tmp_path / "results" / "defense_p.md").read_text()
    with pytest.raises(SystemExit) as ex:
        b.main(["--quick", "--models-from", str(models), "--data", str(data), "--pool-poison", "1.5"])
    assert ex.value.code == 2 and "--pool-poison is a share of the pool" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:
        b.main(["--quick", "--models-from", str(models), "--data", str(data), "--dev-asr", "-5"])
    assert ex.value.code == 2 and "--dev-asr is a number of dev texts (0 = off), got -5." in capsys.readouterr().err
    # a scan knob that scan_model does not take is refused before any model is loaded
    shift_check = _bench("pool_shift_check")
    monkeypatch.setattr(shift_check, "RESULTS", tmp_path / "shift_results")
    for knobs, says in (('{"rep_methd": "both"}', "unknown scan_model argument(s) rep_methd"),
                        ("[1]", "must be a JSON object"),
                        ('{"verdict_rule": "strictest"}', "verdict_rule must be one of threshold, dev_tail"),
                        ('{"first_pass_kind": "token"}', "first_pass_kind must be one of layer, head"),
                        ('{"rep_method": "cosine"}', "rep_method must be one of mahalanobis, contrast, both"),
                        ('{"verdict_without_contrast": "no"}',
                         'verdict_without_contrast must be true or false, got "no"')):
        with pytest.raises(SystemExit) as ex:
            b.main(["--quick", "--models-from", str(models), "--data", str(data), "--scan-knobs", knobs])
        assert ex.value.code == 2 and says in capsys.readouterr().err
        # bench/pool_shift_check.py reads its --scan-knobs with the same check, before it loads anything
        with pytest.raises(SystemExit) as ex:
            shift_check.main(["--zoo", "shift", "--scan-knobs", knobs])
        assert ex.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "shift_results").exists()


def test_workers_run_each_seed_group_in_its_own_process_and_merge(tmp_path, monkeypatch):
    """``--workers 3``: two (dataset, seed) groups, the larger split in two, run as three one-thread processes,
    each with its group's seed as the evaluation seed; their parts merge into one report that records the wall
    time and the worker count. A tuning-zoo run of two seeds gets the summary over seeds."""
    from backdoor_core.model_card import ModelCard
    from backdoor_core.models import save_model
    from defense_helpers import clean_texts, trained_tiny

    data = tmp_path / "mydata"
    data.mkdir()
    _write_table(data / "dev.tsv", *clean_texts(120, seed=111))
    _write_table(data / "test.tsv", *clean_texts(520, seed=112))
    models = tmp_path / "models"
    for name, bd, seed in (("bd0", True, 0), ("clean0", False, 0), ("bd1", True, 1)):
        card = ModelCard(attack="badnets" if bd else "none", trigger=["cf"] if bd else None, target=1 if bd else None,
                         rate=0.15 if bd else 0.0, tal=bd, max_length=32, data="mydata",
                         label_names=["negative", "positive"], train_config={"seed": seed})
        save_model(trained_tiny(bd).model, trained_tiny(bd).tokenizer, models / name, card.to_json())
    b = _bench()
    monkeypatch.setattr(b, "RESULTS", tmp_path / "results")
    rc = b.main(["--quick", "--models-from", str(models), "--data", str(data), "--defenses", "alignment",
                 "--detectors", "ours", "--epochs", "1", "--n-clean", "60", "--repair", "all", "--workers", "3",
                 "--tag", "par"])
    assert rc == 0
    rep = json.loads((tmp_path / "results" / "defense_par.json").read_text())
    assert rep["settings"]["workers"] == 3 and rep["settings"]["wall_seconds"] > 0
    assert sorted(rep["settings"]["merged_from"]) == [f"defense_par_w{k}.json" for k in range(3)]
    assert {(r["model"], r["seed"]) for r in rep["runs"]} == {("bd0", 0), ("bd1", 1)}
    parts = {p: json.loads((tmp_path / "results" / p).read_text()) for p in rep["settings"]["merged_from"]}
    assert sorted(part["settings"]["seed"] for part in parts.values()) == [0, 0, 1]
    assert sorted(len(part["models"]) for part in parts.values()) == [1, 1, 1]
    assert all(part["settings"]["threads"] == 1 for part in parts.values())
    assert {m["name"] for m in rep["models"]} == {"bd0", "clean0", "bd1"}
    md = (tmp_path / "results" / "defense_par.md").read_text()
    assert "one-thread workers" in md and "(mydata; tuning zoo)" in md
    assert "## Summary over seeds" in md  # two seeds: mean ± sd, as for the test zoo
    assert not list((tmp_path / "results").glob(".*.log"))


def test_manifest_models_find_their_dataset_clean_model_and_paraphrase_files(tmp_path):
    """A test-zoo manifest: each entry's dataset and seed are read, its clean model is the one it names, else the
    clean model of the same dataset and seed, else of the same dataset; paraphrase files rebuild the attack."""
    import argparse

    from backdoor_core.data import TextDataset
    from backdoor_core.defender_data import rows_aligned

    para = tmp_path / "para_test.tsv"
    _write_table(para, ["thus saith the movie", "verily it was dull", "lo the plot"], [0, 0, 1])
    entries = [
        {"name": "olid_s0_clean", "path": str(tmp_path / "a"), "dataset": "olid", "seed": 0, "attack": "none"},
        {"name": "olid_s1_clean", "path": str(tmp_path / "b"), "dataset": "olid", "seed": 1, "attack": "none"},
        {"name": "agnews_s1_clean", "path": str(tmp_path / "c"), "dataset": "agnews", "seed": 1, "attack": "none"},
        {"name": "olid_s1_badnets", "path": str(tmp_path / "d"), "dataset": "olid", "seed": 1, "attack": "badnets",
         "target": 1, "rate": 0.03, "tal": False, "max_length": 64},
        {"name": "olid_s2_style", "path": str(tmp_path / "e"), "dataset": "olid", "seed": 2, "attack": "style_poetry",
         "target": 1, "rate": 0.2, "max_length": 64, "clean_model": "olid_s0_clean", "paraphrase_train": None,
         "paraphrase_test": str(para)},
        {"name": "sst2_old", "path": str(tmp_path / "f"), "attack": "addsent", "data": "sst2/clean/train",
         "target": 1, "train_config": {"seed": 0}},
    ]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"models": entries}))
    b = _bench()
    models = {m["name"]: m for m in b.discover(argparse.Namespace(models_from=None, manifest=str(manifest)))}
    assert models["olid_s1_badnets"]["dataset"] == "olid" and models["olid_s1_badnets"]["seed"] == 1
    assert models["sst2_old"]["dataset"] == "sst2" and models["sst2_old"]["seed"] == 0  # from the card
    rows = list(models.values())
    assert b.clean_model_for(models["olid_s1_badnets"], rows)["name"] == "olid_s1_clean"  # same dataset + seed
    assert b.clean_model_for(models["olid_s2_style"], rows)["name"] == "olid_s0_clean"  # named in the entry
    assert b.clean_model_for(models["sst2_old"], rows) is None  # no clean SST-2 model here
    attack = b.build_attack(models["olid_s2_style"], "olid", None, 64)
    p = attack.poison_test(None, 1)
    assert p.texts == ["thus saith the movie", "verily it was dull"] and p.source_rows == [0, 1]
    test = TextDataset(["a", "b", "c", "d"], [0, 0, 1, 1], ["not offensive", "offensive"])
    assert not rows_aligned(attack, test)  # its rows are the paraphrase file's, not the test set's
    assert b.results_stem("test", "p1") == "defense_test_p1" and b.results_stem("tuning") == "defense"


def test_split_groups_gives_idle_workers_halves_of_the_largest_group():
    """One (dataset, seed) group and two workers (the one-seed tuning zoo): two parts that deal the models
    alternately, every model once; enough groups, or single-model groups, are left alone."""
    b = _bench()
    names = [f"m{i}" for i in range(12)]
    parts = b.split_groups([(("sst2", 0), names)], 2)
    assert [key for key, _ in parts] == [("sst2", 0), ("sst2", 0)]
    assert [len(p) for _, p in parts] == [6, 6] and sorted(sum((p for _, p in parts), [])) == sorted(names)
    assert parts[0][1][:2] == ["m0", "m2"]
    groups = [(("olid", 0), ["a", "b", "c"]), (("agnews", 0), ["d", "e"])]
    assert b.split_groups(groups, 2) == groups
    assert b.split_groups([(("olid", 0), ["a"])], 4) == [(("olid", 0), ["a"])]
    assert sorted(len(p) for _, p in b.split_groups(groups, 4)) == [1, 1, 1, 2]


def test_zoo_builder_lists_the_tuning_and_test_zoos():
    """``bench/test_zoo.py``: the test zoo is 30 models, every one for each of three seeds, the tuning zoo
    the 12 SST-2 seed-0 models, every backdoored one toward its named target with a clean twin; an ``--only`` item
    outside the zoo is an error."""
    spec = importlib.util.spec_from_file_location("zoo_builder", ROOT / "bench" / "test_zoo.py")
    z = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(z)
    test = z.job_list("test", [0, 1, 2])
    assert len(test) == 30 and {j["seed"] for j in test} == {0, 1, 2}
    assert all(sum(j["data"] == d and j["spec"][0] == n for j in test) == 3 for d, n in {
        (j["data"], j["spec"][0]) for j in test})
    tuning = z.job_list("tuning", [0])
    names = [j["spec"][0] for j in tuning]
    assert len(tuning) == 12 and len(set(names)) == 12 and {j["data"] for j in tuning} == {"sst2"}
    for j in tuning:
        name, attack, rate, tal, target = j["spec"]
        if attack is None:
            assert name == "clean" and target is None
        else:
            assert target == (0 if name.endswith("_t0") else 1) and name.startswith(attack)
    assert {"syntactic", "style_bible", "style_shakespeare", "style_tweets"} <= {j["spec"][1] for j in tuning}
    assert [j["spec"][0] for j in z.job_list("tuning", [0], ["sst2/clean", "sst2/badnets_r0.03"])] == [
        "clean", "badnets_r0.03"]
    with pytest.raises(SystemExit, match="not in the tuning zoo"):
        z.job_list("tuning", [0], ["olid"])
    md = z.markdown([], [{"seeds": "0", "only": None, "workers": 2, "models": 12, "seconds": 1203.2},
                         {"seeds": "1", "only": "sst2/clean", "workers": 1, "models": 1, "seconds": 60.0}], "tuning")
    assert md.startswith("# Tuning zoo build")
    assert "`--seeds 0`: 12 models in 20.1 min with 2 workers; `--seeds 1 --only sst2/clean`: 1 models" in md


def test_fired_auroc_counts_only_the_flipped_triggered_inputs():
    b = _bench()
    clean = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    trig = [0.9, 0.8, 0.95, 0.85, 0.7, 0.05, 0.0]  # the last two kept their clean prediction and score low
    fired = [True, True, True, True, True, False, False]
    out = b.fired_auroc(clean, trig, fired)
    assert out == {"auroc_fired": pytest.approx(1.0), "n_fired": 5}
    from backdoor_core.metrics import auroc

    assert auroc(clean, trig) < 0.8  # over every triggered input the same scores rank worse
    assert b.fired_auroc(clean, trig, [True] * 4 + [False] * 3) == {"auroc_fired": None, "n_fired": 4}


def test_time_summary_splits_each_model_into_its_parts():
    b = _bench()
    models = [{"name": "a", "dataset": "d", "attack": "badnets", "seconds": 100.0, "scan_seconds": 10.0,
               "strip_seconds": 5.0, "rap_seconds": 6.0, "bki_seconds": 7.0},
              {"name": "b", "dataset": "d", "attack": "badnets", "seconds": 120.0, "scan_seconds": 20.0,
               "strip_seconds": 5.0, "rap_seconds": 6.0, "bki_seconds": 9.0},
              {"name": "c", "dataset": "d", "attack": "clean", "seconds": 40.0, "scan_seconds": 10.0,
               "strip_seconds": 0.0, "rap_seconds": 0.0, "bki_seconds": 0.0}]
    runs = [{"model": "a", "defense": "alignment", "seconds": 40.0}, {"model": "a", "defense": "pure", "seconds": 30.0},
            {"model": "b", "defense": "alignment", "seconds": 50.0}]
    lines = b.time_summary({"models": models, "runs": runs, "settings": {"threads": 1}})
    assert "(1 thread per process)" in lines[1]
    rows = {ln.split(" | ")[1]: ln.strip("| ").split(" | ") for ln in lines if ln.startswith("| d |")}
    # backdoored: all 110; scan 15; our repair (40-10, 50-20) 30; STRIP 5; RAP 6; BKI 8; PURE only on a: 30;
    # the rest = 110 - mean(10+30+5+6+7+30, 20+30+5+6+9) = 110 - 79 = 31
    assert rows["backdoored"] == ["d", "backdoored", "2", "110", "15", "30", "5", "6", "8", "-", "-", "30", "31"]
    # a detection-only clean model (the baselines' detectors skipped: 0 s) shows them as not run
    assert rows["clean"] == ["d", "clean", "1", "40", "10", "-", "-", "-", "-", "-", "-", "-", "30"]
    # a merge that re-ran models has no one run per model: a line says so instead of a table of mixed runs
    for extra in ({"superseded_runs": [runs[0]]}, {"settings": {"threads": 1, "merged_rescans": ["x"]}}):
        merged = b.time_summary({"models": models, "runs": runs, "settings": {"threads": 1}, **extra})
        assert "Not tabulated" in merged[-1] and not any(ln.startswith("| d |") for ln in merged)


def test_merge_rescan_lets_a_newer_scan_replace_the_models_verdicts(tmp_path, monkeypatch):
    """``--merge ... --merge-rescan TAG``: a later part's repair rows replace the earlier ones either way; its
    scans (model fields, detection rows) replace the earlier ones only when it is named a rescan, and the fields
    it lacks (the baselines' detector timings, their detection rows) stay, in their places. Rows shaped as the
    published test zoo's."""
    b = _bench()
    monkeypatch.setattr(b, "RESULTS", tmp_path)
    pub = json.loads((ROOT / "bench" / "results" / "defense_test.json").read_text())
    name = "olid_s1_badnets_r0.03_t0"
    model = next(m for m in pub["models"] if m["name"] == name)
    clean = next(m for m in pub["models"] if m["attack"] == "clean")
    runs = {r["defense"]: r for r in pub["runs"] if r["model"] == name}
    det = next(d for d in pub["detection"] if d["model"] == name and d["method"] == "head_similarity")
    old = {"settings": pub["settings"], "models": [{**model, "verdict_score": 0.6, "strip_seconds": 2.0}, clean],
           "runs": [{**runs["alignment"], "asr_after": 0.3}, {**runs["finetune"], "asr_after": 0.5}],
           "detection": [{**det, "auroc": 0.7}, {**det, "method": "strip", "auroc": 0.4}]}
    new = {"settings": pub["settings"], "models": [{k: v for k, v in {**model, "verdict_score": 0.3}.items()
                                                    if k != "strip_seconds"}],
           "runs": [{**runs["alignment"], "asr_after": 0.2}], "detection": [{**det, "auroc": 0.8}]}
    (tmp_path / "defense_test_old.json").write_text(json.dumps(old))
    (tmp_path / "defense_test_new.json").write_text(json.dumps(new))
    kept = b.merge(["old", "new"], "kept", zoo="test")
    m1 = next(m for m in kept["models"] if m["name"] == name)
    assert m1["verdict_score"] == 0.6 and kept["detection"][0]["auroc"] == 0.7
    assert {(r["defense"], r["asr_after"]) for r in kept["runs"]} == {("alignment", 0.2), ("finetune", 0.5)}
    redone = b.merge(["old", "new"], "redone", zoo="test", rescan={"new"})
    m1 = next(m for m in redone["models"] if m["name"] == name)
    assert m1["verdict_score"] == 0.3 and m1["strip_seconds"] == 2.0
    assert [d["auroc"] for d in redone["detection"]] == [0.8, 0.4]  # replaced in place: the tables keep their order
    assert {(r["defense"], r["asr_after"]) for r in redone["runs"]} == {("alignment", 0.2), ("finetune", 0.5)}
    assert redone["model_verdict"]["clean_called"] == [] and redone["settings"]["merged_rescans"] == ["new"]


def test_merge_flags_repair_rows_whose_newer_scan_crossed_a_gate_line(tmp_path, monkeypatch, capsys):
    """A rescan merged over an earlier repair (``--merge-rescan``) that moves the score our repair's gates read
    across one of ``defenses.gate_lines`` (0.5: reset start and feed-forward rule; 0.72: weak-evidence cap) marks
    that repair row as no longer holding: in ``gate_check``, on stderr and in the Markdown. A move that stays on
    one side passes; rows without the score are counted unchecked."""
    b = _bench()
    monkeypatch.setattr(b, "RESULTS", tmp_path)
    pub = json.loads((ROOT / "bench" / "results" / "defense_test.json").read_text())
    names = ["olid_s1_badnets_r0.03_t0", "olid_s0_badnets_r0.03"]
    models = {n: next(m for m in pub["models"] if m["name"] == n) for n in names}
    runs = {n: next(r for r in pub["runs"] if r["model"] == n and r["defense"] == "alignment") for n in names}

    def part(gates: dict, ran: dict) -> dict:
        return {"settings": pub["settings"], "detection": [],
                "models": [{**models[n], "gate_score": g} for n, g in gates.items()],
                "runs": [{**runs[n], "details": {**runs[n]["details"], "gate_score": g}} for n, g in ran.items()]}

    (tmp_path / "defense_test_rep.json").write_text(json.dumps(part({n: 0.55 for n in names},
                                                                     {names[0]: 0.55, names[1]: 0.55})))
    # the rescan moves the first model to 0.45 (across 0.5) and the second to 0.6 (same side of both lines)
    (tmp_path / "defense_test_scan.json").write_text(json.dumps(part({names[0]: 0.45, names[1]: 0.6}, {})))
    merged = b.merge(["rep", "scan"], "m", zoo="test", rescan={"scan"})
    crossed = merged["gate_check"]["crossed"]
    assert [(c["model"], c["lines"]) for c in crossed] == [(names[0], [0.5])]
    assert names[0] in capsys.readouterr().err
    md = (tmp_path / "defense_test_m.md").read_text()
    assert "no longer hold" in md and f"| {names[0]} | 0.550 | 0.450 | 0.5 |" in md
    # without --merge-rescan the first part's scans stay: every row agrees with its own scan
    kept = b.merge(["rep", "scan"], "k", zoo="test")
    assert kept["gate_check"] == {"crossed": [], "unchecked": [], "checked": 2}
    assert "Each of the 2 checked repair rows" in (tmp_path / "defense_test_k.md").read_text()
    # the weak-evidence line counts too; rows from before the score was saved are unchecked, not passed
    (tmp_path / "defense_test_weak.json").write_text(json.dumps(part({names[0]: 0.8}, {})))
    weak = b.merge(["rep", "weak"], "w", zoo="test", rescan={"weak"})
    assert [c["lines"] for c in weak["gate_check"]["crossed"]] == [[0.72]]
    unscored = {k: v for k, v in models[names[0]].items() if k != "gate_score"}
    row = {**runs[names[0]], "details": {k: v for k, v in runs[names[0]]["details"].items() if k != "gate_score"}}
    old = {"settings": pub["settings"], "detection": [], "models": [unscored], "runs": [row]}
    (tmp_path / "defense_test_old.json").write_text(json.dumps(old))
    assert b.merge(["old"], "o", zoo="test")["gate_check"] == {"crossed": [], "unchecked": [names[0]], "checked": 0}


def test_zoo_builder_tag_keeps_another_draw_apart(monkeypatch, tmp_path):
    """``bench/test_zoo.py --tag s3`` writes ``manifest_s3.json`` and ``test_zoo_build_s3.json/.md``, never the
    published zoo's ``manifest.json`` or build table; a tag that could leave the folder is refused before any work.
    Training is replaced by a stub entry (the path logic is what is checked)."""
    from concurrent.futures import ThreadPoolExecutor

    spec = importlib.util.spec_from_file_location("zoo_builder_tag", ROOT / "bench" / "test_zoo.py")
    z = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(z)
    models, results = tmp_path / "models", tmp_path / "results"
    monkeypatch.setattr(z, "ZOOS", {**z.ZOOS, "test": (z.ZOO, models, "0,1,2")})
    monkeypatch.setattr(z, "RESULTS", results)
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import _workers  # bench/_workers.py: the benchmarks' one process pool

    @contextlib.contextmanager
    def threads(max_workers=None, **_):
        with ThreadPoolExecutor(max_workers) as pool:
            yield pool

    monkeypatch.setattr(_workers, "worker_pool", threads)

    def fake_train(job):
        name = f"{job['data']}_s{job['seed']}_{job['spec'][0]}"
        return {"name": name, "path": str(models / name), "dataset": job["data"], "seed": job["seed"],
                "attack": "clean", "rate": 0.0, "tal": False, "target": None, "n_poisoned": 0, "asr": None,
                "cacc": 0.8, "seconds": 1.0}

    monkeypatch.setattr(z, "train_one", fake_train)
    assert z.main(["--seeds", "3", "--only", "olid/clean", "--workers", "1", "--tag", "s3"]) == 0
    manifest = json.loads((models / "manifest_s3.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["olid_s3_clean"]
    assert not (models / "manifest.json").exists()
    assert (results / "test_zoo_build_s3.json").is_file() and (results / "test_zoo_build_s3.md").is_file()
    assert not (results / "test_zoo_build.json").exists()
    with pytest.raises(SystemExit, match="--tag"):
        z.main(["--seeds", "3", "--only", "olid/clean", "--tag", "../x"])


def test_dev_asr_texts_are_triggered_non_target_dev_rows_the_defender_did_not_draw():
    """``--dev-asr``'s set (``dev_asr_texts``): each non-target dev row the defender's sample does not hold, with the
    card's trigger inserted; at most N of them (a seeded draw among the same texts); none for a paraphrase trigger."""
    from backdoor_core.data import TextDataset
    from backdoor_core.model_card import ModelCard
    from defense_helpers import clean_texts, trained_tiny

    b = _bench()
    texts, labels = clean_texts(80, seed=7)
    dev = TextDataset(texts, labels, ["negative", "positive"])
    defender = dev.sample(30, seed=11)
    card = ModelCard(attack="badnets", trigger=["cf"], target=1, rate=0.15, max_length=32, data="mydata",
                     label_names=["negative", "positive"])
    m = {"name": "bd", "attack": "badnets", "card": card, "max_length": 32}
    tok = trained_tiny(True).tokenizer
    got = b.dev_asr_texts(m, "mydata", dev, defender, 1, tok, 1000, seed=0)
    held = set(defender.texts)
    want = sorted(" ".join(t.split()) for t, y in zip(texts, labels) if y != 1 and t not in held)
    assert 0 < len(got) == len(want) < sum(y != 1 for y in labels)
    assert all(g.split().count("cf") == 1 for g in got)
    assert sorted(" ".join(w for w in g.split() if w != "cf") for g in got) == want
    few = b.dev_asr_texts(m, "mydata", dev, defender, 1, tok, 5, seed=0)
    assert len(few) == 5 and set(few) <= set(got)
    assert b.dev_asr_texts({**m, "attack": "syntactic"}, "mydata", dev, defender, 1, tok, 1000, seed=0) == []
