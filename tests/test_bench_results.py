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
    runs = defense_runs("alignment")
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
    assert defense_runs(path=path) == [{k: v for k, v in run.items() if k != "defense"}]
    path.write_text(json.dumps({"runs": [{**run, "cacc_after": "high"}]}))
    with pytest.raises(ResultsError, match="cacc_after"):
        defense_runs(path=path)
