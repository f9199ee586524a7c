"""The one reader of the benchmarks' result files (used by the tour): the files in the repo parse; a broken file
raises ResultsError naming it; a missing file is None."""

import json

import pytest

from backdoor_core.bench_results import RESULTS_DIR, ResultsError, attack_tal_runs, defense_runs


def test_the_repository_results_parse():
    if not (RESULTS_DIR / "attack_tal.json").is_file():
        pytest.skip("no bench/results in this install")
    dataset, rows = attack_tal_runs("badnets", rates=(0.005, 0.01))
    assert dataset == "sst2" and {r["rate"] for r in rows} == {0.005, 0.01} and {r["tal"] for r in rows} == {False, True}
    assert all(0 <= r["asr"] <= 1 and 0 <= r["cacc"] <= 1 for r in rows)
    dataset, runs = defense_runs("alignment")
    assert dataset == json.loads((RESULTS_DIR / "defense.json").read_text())["dataset"]
    assert runs and all(set(r) == {"model", "attack", "tal", "asr_before", "asr_after", "cacc_before", "cacc_after"}
                        for r in runs)


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "could not be read"),
    ("[1, 2]", "no list of runs"),
    ('{"runs": [{"attack": "badnets"}]}', "'rate'"),
    ('{"runs": [{"attack": "badnets", "rate": 0.01, "tal": "yes", "asr": 0.5, "cacc": 0.9}]}', "'tal'"),
    ('{"runs": [{"attack": "badnets", "rate": 0.01, "tal": true, "asr": 7, "cacc": 0.9}]}', "'asr'"),
    ('{"runs": ["a string"]}', "run 0"),
])
def test_broken_files_raise_a_clear_error(tmp_path, content, fragment):
    path = tmp_path / "attack_tal.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match="attack_tal.json") as err:
        attack_tal_runs(path=path)
    assert fragment in str(err.value)


def test_defense_rows_and_missing_files(tmp_path):
    assert attack_tal_runs(path=tmp_path / "none.json") is None and defense_runs(path=tmp_path / "none.json") is None
    path = tmp_path / "defense.json"
    run = {"model": "m", "attack": "badnets", "tal": False, "defense": "alignment", "asr_before": 0.99,
           "asr_after": None, "cacc_before": 0.9, "cacc_after": 0.89}
    path.write_text(json.dumps({"runs": [run, {**run, "defense": "finetune"}]}))
    assert defense_runs(path=path)[1] == [{k: v for k, v in run.items() if k != "defense"}]
    path.write_text(json.dumps({"runs": [{**run, "cacc_after": "high"}]}))
    with pytest.raises(ResultsError, match="cacc_after"):
        defense_runs(path=path)


def _bench_defense():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "defense.py"
    spec = importlib.util.spec_from_file_location("bench_defense", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_defense_bench_reads_each_model_card(tmp_path):
    """The bench takes attack, target and reading length from the model card: a model trained at 128 tokens is
    read at 128 (the bench used to read a top-level max_length that train_attack never wrote, so always 64), a
    clean model ('none') is a clean model, and the target follows the card's one rule."""
    import argparse

    from backdoor_core.model_card import METADATA_FILE, ModelCard

    cards = {"bd128": ModelCard(attack="badnets", trigger=["cf"], target=0, tal=True, rate=0.01, max_length=128),
             "legacy64": {"attack": "addsent", "target": 1, "rate": 0.03, "train_config": {"max_length": 64}},
             "clean": ModelCard(attack="none", rate=0.0, max_length=64),
             "hostile": {"attack": "badnets", "target": 99, "max_length": "x"}}
    for name, card in cards.items():
        (tmp_path / name).mkdir()
        data = card.to_json() if isinstance(card, ModelCard) else card
        (tmp_path / name / METADATA_FILE).write_text(json.dumps(data))
    (tmp_path / "not-a-model").mkdir()
    rows = {r["name"]: r for r in _bench_defense().discover(argparse.Namespace(models_from=str(tmp_path),
                                                                              manifest=None))}
    assert set(rows) == set(cards)
    assert rows["bd128"]["max_length"] == 128 and rows["bd128"]["tal"] and rows["bd128"]["attack"] == "badnets"
    assert rows["legacy64"]["max_length"] == 64 and rows["clean"]["attack"] == "clean"
    labels = ["negative", "positive"]
    assert rows["bd128"]["card"].target_for(labels) == 0 and rows["legacy64"]["card"].target_for(labels) == 1
    assert rows["hostile"]["card"].target_for(labels) == 1 and rows["hostile"]["max_length"] == 128


def test_time_pairs_summary_reads_pair_by_pair(tmp_path):
    """``bench/time_pairs.py --summarize-only``: medians of each side, the B / A ratio taken pair by pair (not the
    ratio of the medians), and whether every pair's outcome after repair agrees; written whole to ``--out``."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "time_pairs", Path(__file__).resolve().parents[1] / "bench" / "time_pairs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seconds = {"a": [100.0, 60.0, 80.0], "b": [50.0, 54.0, 72.0]}  # ratios 0.5, 0.9, 0.9
    for side, values in seconds.items():
        for i, sec in enumerate(values, 1):
            (tmp_path / f"{side}_{i}").mkdir()
            run = {"seconds": sec, "asr_after": 0.05, "cacc_after": 0.8 if (side, i) != ("b", 3) else 0.7,
                   "pseudo_label_accuracy": 0.77}
            (tmp_path / f"{side}_{i}" / "defense_test_t.json").write_text(json.dumps(
                {"runs": [run], "models": [{"scan_seconds": sec / 4}]}))
    assert mod.main(["--a", "x", "--b", "y", "--model", "m", "--runs", "3", "--work", str(tmp_path), "--tag", "t",
                     "--summarize-only", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "time_pairs_t.json").read_text())
    assert report["median_a"] == 80.0 and report["median_b"] == 54.0 and report["median_scan_b"] == 13.5
    assert report["median_ratio_b_over_a"] == 0.9  # pair by pair; the medians' ratio would be 0.675
    assert report["identical_results"] is False  # pair 3's CACC differs
    assert "| 1 | 100.0 | 25.0 | 50.0 | 12.5 | 0.50 |" in (tmp_path / "out" / "time_pairs_t.md").read_text()
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_time_pairs_passes_each_sides_knobs(tmp_path, monkeypatch):
    """``--knobs-a`` / ``--knobs-b``: one checkout, two settings; each side's runs get its own ``--align-knobs``
    and the summary names both outcomes when they differ."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "time_pairs_knobs", Path(__file__).resolve().parents[1] / "bench" / "time_pairs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    calls = []

    def fake_run(cmd, cwd, env, stdout, stderr, check):
        calls.append(cmd)
        where = Path(env["BACKDOOR_BENCH_RESULTS"])
        where.mkdir(parents=True, exist_ok=True)
        fast = "--align-knobs" not in cmd
        run = {"seconds": 30.0 if fast else 60.0, "asr_after": 0.05 if fast else 0.04, "cacc_after": 0.8,
               "pseudo_label_accuracy": 0.7}
        (where / "defense_test_t.json").write_text(json.dumps({"runs": [run], "models": [{"scan_seconds": 10.0}]}))

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    assert mod.main(["--a", str(tmp_path), "--b", str(tmp_path), "--model", "m", "--runs", "2", "--work",
                     str(tmp_path / "w"), "--tag", "k", "--knobs-a", '{"precision": "fp32"}',
                     "--out", str(tmp_path / "out")]) == 0
    assert [c[c.index("--align-knobs") + 1] if "--align-knobs" in c else None for c in calls] == [
        '{"precision": "fp32"}', None, '{"precision": "fp32"}', None]  # A, B, A, B
    report = json.loads((tmp_path / "out" / "time_pairs_k.json").read_text())
    assert report["median_ratio_b_over_a"] == 0.5 and report["knobs_a"] == '{"precision": "fp32"}'
    md = (tmp_path / "out" / "time_pairs_k.md").read_text()
    assert "identical in every pair: False (ASR 0.040, CACC 0.800 in A's first run, ASR 0.050" in md


def test_every_bench_script_writes_where_results_dir_says(monkeypatch, tmp_path):
    """One owner of the benchmarks' output folder: ``$BACKDOOR_BENCH_RESULTS`` moves every script's writes (a trial
    or a test must not overwrite the published files); no script builds ``bench/results`` by hand."""
    import re
    from pathlib import Path

    from backdoor_core.bench_results import results_dir

    assert results_dir() == RESULTS_DIR
    monkeypatch.setenv("BACKDOOR_BENCH_RESULTS", str(tmp_path))
    assert results_dir() == tmp_path
    bench = Path(__file__).resolve().parents[1] / "bench"
    by_hand = re.compile(r'"bench"\s*/\s*"results"')
    # time_pairs.py compares two checkouts and points each one's runs at its own folder (it sets the variable)
    offenders = [p.name for p in sorted(bench.glob("*.py"))
                 if p.name != "time_pairs.py" and by_hand.search(p.read_text())]
    assert offenders == []
