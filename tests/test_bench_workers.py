"""``bench/defense.py --workers N``: the one-thread part processes and their hidden ``.<stem>_<part>.log`` files.

The parts are real processes, but stand-ins (a Python one-liner that sleeps or exits) in place of ``defense.py``
runs, and the models are rows handed to ``run_parallel`` (no model is loaded): what is checked is the bookkeeping
of the parent: which logs remain after a Ctrl-C, a failed part and a run that merges."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_POPEN = subprocess.Popen  # the real one: each test replaces it


def _defense(monkeypatch, results: Path, part_code: str):
    """``bench/defense.py`` loaded afresh, writing to ``results``, with three models in two (dataset, seed) groups
    and every part process running ``python -c part_code``; returns (module, the started processes)."""
    spec = importlib.util.spec_from_file_location("bench_defense_workers", ROOT / "bench" / "defense.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RESULTS", results)
    rows = [{"name": n, "dataset": "sst2", "seed": s} for n, s in (("a0", 0), ("b0", 0), ("a1", 1))]
    monkeypatch.setattr(mod, "discover", lambda args: [dict(r) for r in rows])
    started = []

    def fake_popen(cmd, **kwargs):
        assert "--only" in cmd and "--tag" in cmd  # what defense.py would have run
        proc = _POPEN([sys.executable, "-c", part_code], **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    return mod, started


def test_ctrl_c_stops_the_parts_and_leaves_no_hidden_log(tmp_path, monkeypatch):
    """A Ctrl-C while the parts run (the parent waits in ``time.sleep``): the parts are ended and no hidden log is
    left in the results folder; before, both logs stayed (and the parts ran on alone when not in a terminal)."""
    mod, started = _defense(monkeypatch, tmp_path, "import time; print('part', flush=True); time.sleep(60)")
    seen = []

    def ctrl_c(_seconds):
        seen.extend(sorted(p.name for p in tmp_path.glob(".*.log")))
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "time", types.SimpleNamespace(perf_counter=time.perf_counter, sleep=ctrl_c))
    try:
        with pytest.raises(KeyboardInterrupt):
            mod.main(["--quick", "--models-from", str(tmp_path), "--workers", "2", "--zoo", "test"])
        assert seen == [".defense_test_w0.log", ".defense_test_w1.log"]  # the logs were there when Ctrl-C came
        assert not list(tmp_path.glob(".*.log"))
        assert len(started) == 2 and all(p.poll() is not None for p in started)
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_failed_part_keeps_its_log_and_a_merged_run_removes_them(tmp_path, monkeypatch, capsys):
    """No Ctrl-C, as before: a part that fails keeps its log (the error message points there); a run whose parts
    all end well merges them and removes every log."""
    failing = tmp_path / "failing"
    mod, _ = _defense(monkeypatch, failing, "import sys; print('boom', flush=True); sys.exit(3)")
    with pytest.raises(SystemExit) as ex:
        mod.main(["--quick", "--models-from", str(tmp_path), "--workers", "2", "--zoo", "test"])
    assert ex.value.code == 2 and "failed" in capsys.readouterr().err
    logs = sorted(failing.glob(".*.log"))
    assert [p.name for p in logs] == [".defense_test_w0.log", ".defense_test_w1.log"]
    assert all(p.read_text() == "boom\n" for p in logs)

    merged = tmp_path / "merged"
    mod, _ = _defense(monkeypatch, merged, "print('ok')")
    monkeypatch.setattr(mod, "merge", lambda tags, *a, **k: {"settings": {"merged_from": list(tags)}})
    monkeypatch.setattr(mod, "markdown", lambda report: "report\n")
    assert mod.main(["--quick", "--models-from", str(tmp_path), "--workers", "2", "--zoo", "test"]) == 0
    assert (merged / "defense_test.json").is_file()
    assert not list(merged.glob(".*.log"))
