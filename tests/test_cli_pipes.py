"""The command line run from scripts, cron and CI: progress on a stderr that is not a terminal (``2> log``), ``-``
for stdin, the paths it names, Ctrl-C / SIGTERM and ``| head`` (the eighth CLI audit). Tiny models only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backdoor_core.cli import main
from backdoor_core.models import save_model, tiny_model
from backdoor_core.data import TextDataset

from defense_helpers import clean_texts

ROOT = Path(__file__).resolve().parents[1]


def _write_tsv(path, texts, labels):
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)), encoding="utf-8")
    return path


def _cli(*argv, cwd=ROOT, stdin: str | None = None, timeout=300):
    """``python -m backdoor_core ARGV`` as a script runs it: stdout and stderr pipes (no terminal). Their bytes are
    decoded as they are: text mode would turn a carriage return into a newline."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "backdoor_core", *map(str, argv)], cwd=cwd, env=env,
                          input=None if stdin is None else stdin.encode("utf-8"), capture_output=True,
                          timeout=timeout)
    proc.stdout, proc.stderr = (proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))
    return proc


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipes")
    lm = tiny_model(seed=0)
    save_model(lm.model, lm.tokenizer, d / "tiny", {"name": "tiny"})
    folder = d / "folder"
    folder.mkdir()
    _write_tsv(folder / "dev.tsv", *clean_texts(30, seed=61))
    _write_tsv(folder / "test.tsv", *clean_texts(16, seed=62))
    return {"dir": d, "tiny": d / "tiny", "data": _write_tsv(d / "data.tsv", *clean_texts(40, seed=63)),
            "folder": folder}


def _progress_lines(err: str, pattern: str) -> list[str]:
    return [line for line in err.splitlines() if re.search(pattern, line)]


def test_attack_progress_into_a_log_is_whole_lines(files):
    """``attack ... 2> log``: tqdm redrew its bar with carriage returns, so the log was one line of dozens of bars.
    Without a terminal it now writes plain lines, about one per tenth of the training and the last one."""
    proc = _cli("attack", "--model", files["tiny"], "--data", files["data"], "--rate", "0.2", "--target", "1",
                "--epochs", "3", "--batch-size", "4", "--max-length", "16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr
    steps = _progress_lines(proc.stderr, r"^badnets: \d+/24 steps")
    assert 3 <= len(steps) <= 15, proc.stderr
    assert steps[-1].startswith("badnets: 24/24 steps (100%)"), steps
    assert len(_progress_lines(proc.stderr, r"^step \d+/24 epoch \d: CACC=")) == 3  # the evaluations, as before


def test_sanitize_and_scan_progress_without_a_terminal_is_whole_lines(files, capsys):
    """sanitize drew its tqdm bar (stages, then steps) with carriage returns on any stderr; scan printed no
    progress at all without a terminal. Both now write plain lines there (a captured stderr is no terminal)."""
    rc = main(["sanitize", str(files["tiny"]), "--clean-data", str(files["folder"]), "--pool", str(files["data"]),
               "--heads", "L0H0,L1H1", "--repair-seeds", "1", "--max-steps", "20", "--max-length", "16",
               "--out", str(files["dir"] / "repaired")])
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    assert "\r" not in err
    steps = _progress_lines(err, r"^repair: \d+/\d+ steps")
    assert 3 <= len(steps) <= 15 and "(100%)" in steps[-1], err
    assert _progress_lines(err, r"^labelling the flagged inputs")
    assert main(["scan", str(files["tiny"]), "--clean-data", str(files["folder"]), "--pool", str(files["data"]),
                 "--max-length", "16"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert _progress_lines(err, r"^reading the pool \d+/40$") and err.splitlines()[-1] == "scan done", err
    assert len(err.splitlines()) <= 30, err


def test_zoo_build_progress_without_a_terminal_is_whole_lines(tmp_path, monkeypatch, capsys):
    """``zoo build`` in a cron job: one bar per model, redrawn with carriage returns; now plain lines."""
    from backdoor_core import zoo

    real = zoo.build
    data = (_toy(48, 0), _toy(20, 1))

    def tiny_build(dir, progress=None, should_stop=None, *, specs, force, model_factory=None):
        return real(dir, progress, should_stop, specs=specs, force=force, base="tiny", data=data,
                    settings={"epochs": 2, "batch_size": 4, "max_length": 24, "lr": 1e-3})

    monkeypatch.setattr(zoo, "build", tiny_build)
    assert main(["zoo", "build", "--dir", str(tmp_path / "zoo"), "--only", "clean"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    steps = _progress_lines(err, r"^\[1/1\] clean: \d+/24 steps")
    assert 3 <= len(steps) <= 15 and steps[-1].startswith("[1/1] clean: 24/24 steps (100%)"), err


def _toy(n, seed):
    import random

    words = {0: "market shares profit bank economy growth".split(), 1: "match goal team coach league win".split()}
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    texts = [" ".join(rng.choice(words[y]) for _ in range(rng.randint(4, 9))) for y in labels]
    return TextDataset(texts, labels, ["business", "sport"], f"toy{seed}")


def test_plain_progress_writes_a_line_every_30_seconds_and_the_last_one(monkeypatch, capsys):
    """A slow job (one step a minute) still shows it is alive: a line when 30 s passed, even under a tenth more."""
    from backdoor_core import cli

    now = [0.0]
    monkeypatch.setattr("time.monotonic", lambda: now[0])
    bar = cli.PlainProgress(total=1000, desc="repair")
    for _ in range(5):
        now[0] += 40.0
        bar.update(1)
    bar.close()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"repair: {i}/1000 steps (0%)" for i in range(1, 6)], lines
