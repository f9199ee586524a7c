"""``bench/verdict_compare.py``: two runs' verdicts on the same scans, side by side (synthetic runs; no model)."""

from __future__ import annotations

import json

import pytest

from bench_module import load_bench


def _run(path, scores: dict, flagged: dict | None = None):
    rows = []
    for name, score in scores.items():
        attack = "clean" if "clean" in name else "badnets"
        rows.append({"name": name, "attack": attack, "verdict_score": score, "call": "likely" if score >= 0.5 else
                     "not found", "lift_before": None if attack == "clean" else 0.6, "asr_before": 0.9,
                     "n_flagged": (flagged or {}).get(name, 20), "flagged_triggered": 10})
    path.write_text(json.dumps({"models": rows}))
    return str(path)


def test_compare_reports_auroc_misses_and_moved_models(tmp_path, monkeypatch):
    vc = load_bench("verdict_compare")
    monkeypatch.setattr(vc, "RESULTS", tmp_path / "results")
    a = _run(tmp_path / "a.json", {"m_clean": 0.7, "m_bd1": 0.9, "m_bd2": 0.6})
    b = _run(tmp_path / "b.json", {"m_clean": 0.0, "m_bd1": 0.9, "m_bd2": 0.4})
    vc.main(["--labels", "seen,blind", "--zoo", f"z={a}:{b}", "--tag", "t"])
    out = json.loads((tmp_path / "results" / "verdict_compare_t.json").read_text())
    z = out["zoos"][0]
    assert z["a"]["clean_called"] == ["m_clean"] and z["b"]["clean_called"] == []
    assert z["a"]["auroc"] == pytest.approx(0.5) and z["b"]["auroc"] == pytest.approx(1.0)
    assert z["b"]["lifted_missed"] == ["m_bd2"] and z["a"]["lifted_missed"] == []
    assert [m["model"] for m in z["moved"]] == ["m_bd2", "m_clean"]  # m_bd1 did not move
    md = (tmp_path / "results" / "verdict_compare_t.md").read_text()
    assert "| z | 3 | blind | 1.000" in md and "m_bd2" in md


def test_compare_refuses_runs_whose_scans_differ(tmp_path, monkeypatch):
    vc = load_bench("verdict_compare")
    monkeypatch.setattr(vc, "RESULTS", tmp_path / "results")
    a = _run(tmp_path / "a.json", {"m_clean": 0.1, "m_bd": 0.9})
    b = _run(tmp_path / "b.json", {"m_clean": 0.1, "m_bd": 0.9}, flagged={"m_bd": 25})
    with pytest.raises(SystemExit, match="m_bd has n_flagged 20 against 25"):
        vc.main(["--zoo", f"z={a}:{b}"])
    assert not (tmp_path / "results").exists()


def test_compare_refuses_a_file_that_is_not_a_defense_result(tmp_path, monkeypatch, capsys):
    vc = load_bench("verdict_compare")
    monkeypatch.setattr(vc, "RESULTS", tmp_path / "results")
    (tmp_path / "other.json").write_text("{}")
    a = _run(tmp_path / "a.json", {"m_clean": 0.1})
    with pytest.raises(SystemExit):
        vc.main(["--zoo", f"z={a}:{tmp_path / 'other.json'}"])
    assert "has no 'models' list: not a bench/defense.py result" in capsys.readouterr().err
