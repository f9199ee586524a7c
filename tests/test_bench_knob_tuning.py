"""``bench/knob_tuning.py``: our repair's rows per knob value, read from ``bench/defense.py`` results JSON
(synthetic results; the runs themselves are in ``bench/results/knob_tuning_*.md``)."""

from __future__ import annotations

import json

from bench_module import load_bench


def _result(path, rows: dict[str, float]) -> str:
    """A results JSON with one alignment row per model (``{model: asr_after}``) and one baseline row."""
    runs = [{"model": m, "defense": "alignment", "asr_before": 0.9, "asr_after": a, "cacc_before": 0.8,
             "cacc_after": 0.79, "details": {"ffn_layers": [], "suspicious_heads": ["L0H0"]}}
            for m, a in rows.items()]
    runs.append({"model": "m1", "defense": "finetune", "asr_before": 0.9, "asr_after": 0.5, "cacc_before": 0.8,
                 "cacc_after": 0.8, "details": {}})
    path.write_text(json.dumps({"runs": runs, "models": [{"name": m, "verdict_score": 0.9} for m in rows]}))
    return str(path)


def test_a_value_reads_its_own_run_first_and_the_full_run_for_the_rest(tmp_path):
    """A model already read for a value is skipped (the first file wins), so a run of the models a value changes
    can be completed by the knob-off run; baseline rows and models outside ``only`` are left out."""
    kt = load_bench("knob_tuning")
    part = _result(tmp_path / "part.json", {"m1": 0.1})
    full = _result(tmp_path / "full.json", {"m1": 0.3, "m2": 0.2, "m3": 0.4})
    rows = kt.sst2_rows([f"0={full}", f"4={part},{full}"], only={"m1", "m2"})
    got = {(r["value"], r["model"]): (r["asr_after"], r["source"]) for r in rows}
    assert got == {(0.0, "m1"): (0.3, "full.json"), (0.0, "m2"): (0.2, "full.json"),
                   (4.0, "m1"): (0.1, "part.json"), (4.0, "m2"): (0.2, "full.json")}
