"""``bench/pool_share.py``: rows from a ``bench/defense.py`` results JSON, the per-share summary and its Markdown
(synthetic results; the bench runs themselves are in ``bench/results/pool_share*.md``)."""

from __future__ import annotations

import json

import pytest
from bench_module import load_bench


def _result(score_bd: float, asr_after: float | None, labels: float | None, tail_bd: float | None = None) -> dict:
    def verdict(s, tail=None):  # tail: the dev-tail rule's score, recorded beside the threshold rule's
        comp = {} if tail is None else {"score_threshold": s, "score_dev_tail": tail}
        return {"score": s, "likely_backdoored": s >= 0.5, "basis": "pool", "components": comp}

    runs = [] if asr_after is None else [{
        "model": "bd", "defense": "alignment", "asr_before": 0.9, "asr_after": asr_after, "cacc_before": 0.80,
        "cacc_after": 0.79, "lift_before": 0.8, "lift_after": asr_after - 0.1, "pseudo_label_accuracy": labels,
        "seconds": 40.0, "details": {"ffn_layers": []}}]
    return {"runs": runs,
            "detection": [{"model": "bd", "method": "head_similarity_2pass", "auroc": 0.97},
                          {"model": "bd", "method": "head_similarity", "auroc": 0.5}],
            "models": [{"name": "bd", "attack": "badnets", "tal": False, "verdict_score": score_bd,
                        "verdict": verdict(score_bd, tail_bd), "lift_before": 0.8, "n_flagged": 30, "flagged_triggered": 20,
                        "pool_triggered": 21, "eval_sizes": {"pool_size": 210}},
                       {"name": "clean", "attack": "clean", "tal": False, "verdict_score": 0.1,
                        "verdict": verdict(0.1, None if tail_bd is None else 0.2), "n_flagged": 9, "flagged_triggered": 2,
                        "pool_triggered": 21, "eval_sizes": {"pool_size": 210}}]}


def test_rows_summary_and_markdown(tmp_path):
    b = load_bench("pool_share")
    rows = b.rows_of(0.2, _result(0.9, 0.05, 0.8)) + b.rows_of(0.05, _result(0.4, 0.25, None, tail_bd=0.7))
    bd = {r["share"]: r for r in rows if r["model"] == "bd"}
    assert bd[0.2]["call"] == "likely" and bd[0.05]["call"] == "not found"
    assert bd[0.2]["auroc_final"] == 0.97 and bd[0.2]["cacc_change"] == pytest.approx(-0.01)
    summ = {m["share"]: m for m in b.summary(rows)}
    assert [m["share"] for m in b.summary(rows)] == [0.2, 0.05]  # largest share first
    assert (summ[0.2]["called"], summ[0.05]["called"], summ[0.2]["clean_called"]) == (1, 0, 0)
    assert summ[0.05]["asr_after_mean"] == pytest.approx(0.25) and summ[0.05]["labelled"] == 0
    assert summ[0.05]["label_acc_mean"] is None and summ[0.2]["label_acc_mean"] == pytest.approx(0.8)
    # both verdict rules where the run recorded both: the dev-tail rule calls what the threshold rule missed
    assert "dev_tail" not in summ[0.2]
    assert summ[0.05]["threshold"] == {"called": 0, "clean_called": 0, "lifted": 1, "lifted_called": 0, "auroc": 1.0}
    assert summ[0.05]["dev_tail"] == {"called": 1, "clean_called": 0, "lifted": 1, "lifted_called": 1, "auroc": 1.0}
    report = {"settings": {"zoo": "test", "shares": [0.2, 0.05], "align_knobs": {"label_judge": "gate_filter"},
                           "scan_knobs": {"verdict_rule": "dev_tail"},
                           "command": "python bench/pool_share.py", "date": "today"},
              "rows": rows, "seconds": 60.0, "runs": {},
              "failed": {"0.05": {"w1": "olid_s1_x (olid test): 859 rows are too few"}}}
    md = b.save(report, tmp_path / "pool_share_x.json")
    assert json.loads((tmp_path / "pool_share_x.json").read_text())["rows"] == json.loads(json.dumps(rows))
    assert (tmp_path / "pool_share_x.md").read_text() == md
    assert "Test data: measured, never tuned on." in md and '`{"label_judge": "gate_filter"}`' in md
    assert 'Scan knobs: `{"verdict_rule": "dev_tail"}`' in md
    assert "Not run at 5%" in md and "* part w1: olid_s1_x (olid test): 859 rows are too few" in md
    assert "| 5% | 0 of 1 | 0 of 1 | 1 | 25.0 (25.0) |" in md and "| bd | 5% | 210 | 0.40 | 0.70 | not found |" in md
    assert "| 5% | dev_tail | 1 of 1 | 1 of 1 | 0 of 1 | 1.000 |" in md


def test_bad_shares_and_knobs_are_refused_before_any_run(capsys):
    b = load_bench("pool_share")
    for argv, says in ((["--shares", "0.2,abc"], "--shares are shares of the pool"),
                       (["--shares", "1.5"], "--shares are shares of the pool"),
                       (["--align-knobs", "{label_judge"], "--align-knobs must be a JSON object"),
                       (["--align-knobs", "[1]"], "--align-knobs must be a JSON object"),
                       (["--scan-knobs", "{verdict"], "--scan-knobs must be a JSON object"),
                       (["--scan-knobs", '{"rep_method": "cosine"}'], "rep_method must be one of")):
        with pytest.raises(SystemExit) as ex:
            b.main(argv)
        assert ex.value.code == 2 and says in capsys.readouterr().err
