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
from backdoor_core.models import METADATA_FILE, save_model, tiny_model

from defense_helpers import clean_texts, cli_files, toy_topics, write_tsv

ROOT = Path(__file__).resolve().parents[1]


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
    return cli_files(tmp_path_factory.mktemp("pipes"))


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
    data = (toy_topics(48, 0), toy_topics(20, 1))

    def tiny_build(dir, progress=None, should_stop=None, *, specs, force, model_factory=None):
        return real(dir, progress, should_stop, specs=specs, force=force, base="tiny", data=data,
                    settings={"epochs": 2, "batch_size": 4, "max_length": 24, "lr": 1e-3})

    monkeypatch.setattr(zoo, "build", tiny_build)
    assert main(["zoo", "build", "--dir", str(tmp_path / "zoo"), "--only", "clean"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    steps = _progress_lines(err, r"^\[1/1\] clean: \d+/24 steps")
    assert 3 <= len(steps) <= 15 and steps[-1].startswith("[1/1] clean: 24/24 steps (100%)"), err


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


# --------------------------------------------------------------------------- '-' for stdin


def _stdin(monkeypatch, data: bytes | str):
    """Feed ``data`` to the command as its stdin (a pipe's bytes)."""
    import io

    raw = data.encode("utf-8") if isinstance(data, str) else data
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))


def _scan_json(capsys, argv) -> dict:
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    return json.loads(capsys.readouterr().out)


def test_scan_reads_its_pool_or_its_clean_data_from_stdin(files, monkeypatch, capsys, tmp_path):
    """``generate | scan --pool -``: '-' was looked up as a dataset ('unknown dataset'). The pool (a table, or one
    text per line) and the clean data now read from stdin, with the same result as from the file."""
    base = ["scan", str(files["tiny"]), "--max-length", "16", "--json"]
    want = _scan_json(capsys, base + ["--clean-data", str(files["folder"]), "--pool", str(files["data"])])
    for pool in (files["data"].read_text("utf-8"),
                 "".join(line.split("\t")[0] + "\n" for line in files["data"].read_text("utf-8").splitlines()[1:])):
        _stdin(monkeypatch, pool)
        got = _scan_json(capsys, base + ["--clean-data", str(files["folder"]), "--pool", "-"])
        assert got["detection"] == want["detection"] and got["flagged"] == want["flagged"]
    dev = files["folder"] / "dev.tsv"
    want = _scan_json(capsys, base + ["--clean-data", str(dev), "--pool", str(files["data"])])
    _stdin(monkeypatch, dev.read_text("utf-8"))
    got = _scan_json(capsys, base + ["--clean-data", "-", "--pool", str(files["data"])])
    assert got["detection"] == want["detection"] and got["verdict"] == want["verdict"]


def test_a_pool_piped_into_a_script_run_is_read(files):
    """The same through a real pipe: ``cut -f1 data.tsv | python -m backdoor_core scan ... --pool -``."""
    texts = [line.split("\t")[0] for line in files["data"].read_text("utf-8").splitlines()[1:]]
    proc = _cli("scan", files["tiny"], "--clean-data", files["folder"], "--pool", "-", "--max-length", "16",
                "--json", stdin="\n".join(texts) + "\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["detection"]["n_pool"] == len(texts)


@pytest.mark.parametrize("option, data, says", [
    ("--pool", b"", "<stdin>: file is empty"),
    ("--pool", b"\n  \n", "<stdin>: file is empty"),
    ("--pool", b'[{"text": "a"}]\n', "<stdin>, line 1: this is a JSON array"),
    ("--pool", b"good movie\n\xff\xfe\n", "<stdin>, line 2: not valid UTF-8"),
    ("--pool", b"x" * 500_000, "<stdin>, line 1: this line is longer than"),
    ("--pool", b"a text\n" * 200, "<stdin>: more than 1,000 bytes; the limit is 1,000 bytes"),
    ("--clean-data", b"foo\tbar\n1\t2\n", "<stdin>: no text column: found columns ['foo', 'bar']"),
    ("--clean-data", b"text,label\na good movie,\n", "<stdin>, line 2: label is empty"),
], ids=["empty", "blank", "json-array", "not-utf8", "long-line", "huge", "no-text-column", "empty-label"])
def test_stdin_gets_a_files_checks_each_in_one_line(files, monkeypatch, capsys, option, data, says):
    """Empty, huge, malformed or wrong-column input on stdin is refused as the same file would be: one line naming
    <stdin> (not the private copy's path), exit 2."""
    from backdoor_core import data as D

    monkeypatch.setattr(D, "MAX_FILE_BYTES", 1000 if b"a text" in data else D.MAX_FILE_BYTES)
    _stdin(monkeypatch, data)
    argv = ["scan", str(files["tiny"]), "--max-length", "16", "--clean-data", str(files["folder"]),
            "--pool", str(files["data"]), option, "-"]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {says}"), err
    assert "backdoor-lab-stdin-" not in err


def test_attack_and_sanitize_read_their_data_from_stdin(files, monkeypatch, capsys):
    """attack --data - trains on stdin (its card says <stdin>, never the private copy's path); sanitize reads its
    --pool and --poisoned-eval from stdin as it reads --pool FILE."""
    _stdin(monkeypatch, files["data"].read_text("utf-8"))
    assert main(["attack", "--model", str(files["tiny"]), "--data", "-", "--rate", "0.2", "--target", "1",
                 "--max-steps", "1", "--batch-size", "8", "--max-length", "16", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["data"] == "<stdin>" and card["train_size"] == 32 and card["name"] == "badnets-<stdin>"
    triggered = "".join(f"cf {t}\n" for t in clean_texts(12, seed=70)[0])
    for option in ("--pool", "--poisoned-eval"):
        _stdin(monkeypatch, triggered)
        out = files["dir"] / f"stdin{option}"
        argv = ["sanitize", str(files["tiny"]), "--clean-data", str(files["folder"]), "--defense", "finetune",
                "--max-steps", "1", "--max-length", "16", "--out", str(out), "--json", option, "-"]
        if option == "--poisoned-eval":
            argv += ["--target", "1"]
        assert main(argv) == 0, capsys.readouterr().err[-2000:]
        summary = json.loads(capsys.readouterr().out)
        if option == "--pool":
            assert json.loads((out / METADATA_FILE).read_text("utf-8"))["pool_samples"] == 12
        else:
            assert summary["asr_texts"] == 12


def test_inspect_reads_its_text_from_stdin(files, monkeypatch, capsys):
    """``echo "$TEXT" | inspect --text -``: the text was '-' itself."""
    _stdin(monkeypatch, "the movie was good\n")
    assert main(["inspect", "--model", str(files["tiny"]), "--text", "-", "--trigger", "cf", "--position", "0",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clean_text"] == "the movie was good"
    _stdin(monkeypatch, "")
    assert main(["inspect", "--model", str(files["tiny"]), "--text", "-"]) == 2
    assert capsys.readouterr().err.strip() == "error: The text is empty: type a sentence to analyse."


@pytest.mark.parametrize("argv, says", [
    (["scan", "-", "--clean-data", "d"], "model -: a model is a folder"),
    (["scan", "m", "--clean-data", "d", "--html", "-"], "--html -: the report is written to a file"),
    (["sanitize", "m", "--clean-data", "d", "--out", "-"], "--out -: the repaired model is a folder"),
    (["attack", "--data", "d", "--out", "-"], "--out -: the model is a folder"),
    (["attack", "--model", "-", "--data", "d"], "--model -: a model is a folder"),
    (["zoo", "list", "--dir", "-"], "--dir -: the zoo is a folder"),
    (["zoo", "build", "--dir", "-"], "--dir -: the zoo is a folder"),
    (["scan", "m", "--clean-data", "-", "--pool", "-"], "--clean-data - and --pool -: stdin can be read once"),
])
def test_a_dash_where_stdin_cannot_work_is_refused_in_one_line(tmp_path, monkeypatch, capsys, argv, says):
    """'-' for a model folder, an output or a second input was taken as a name: 'unknown dataset', 'not found', or
    a folder called '-' saved in the working folder. Now one line says why, exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    _stdin(monkeypatch, "text\tlabel\na\t0\n")
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: {says}"), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command, options", [
    ("scan", {"--clean-data", "--pool"}),
    ("sanitize", {"--clean-data", "--pool", "--eval-data", "--poisoned-eval"}),
    ("attack", {"--data", "--test-data", "--paraphrase-train", "--paraphrase-test"}),
    ("inspect", {"--text", "--labels-from"}),
])
def test_help_says_which_options_read_stdin(command, options):
    """--help names '-' for each option that reads stdin, and for no other."""
    from backdoor_core.cli import STDIN_HELP, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    said = {a.option_strings[-1] for a in sub._actions if a.option_strings and STDIN_HELP in (a.help or "")}
    assert said == options == {a.option_strings[-1] for a in sub._actions if a.dest in sub.get_default("stdin_kinds")}


# --------------------------------------------------------------------------- the paths the CLI names


def test_the_paths_the_cli_names_are_absolute_and_resolved(files, monkeypatch, capsys, tmp_path):
    """``saved ../runs/../b1``, ``-> ../x/../fixed``, ``HTML report written to ../r.html``, ``zoo: ../zoo``: the
    paths were printed as given (or absolute with '..' left in), so a log or a script reading stdout could not
    tell where the model went once it ran from another folder. They are now absolute and resolved, in the text
    and in sanitize's --json ``out`` alike."""
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work / "sub")
    odd = lambda name: f"../sub/../{name}"  # noqa: E731 - the same folder, spelled the long way
    assert main(["attack", "--model", str(files["tiny"]), "--data", str(files["data"]), "--rate", "0.2", "--target",
                 "1", "--max-steps", "1", "--batch-size", "8", "--max-length", "16", "--out", odd("b1")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"saved {work / 'b1'}"
    assert main(["attack", "--model", str(files["tiny"]), "--data", str(files["data"]), "--rate", "0.2", "--target",
                 "1", "--max-steps", "1", "--batch-size", "8", "--max-length", "16", "--out", odd("b2"),
                 "--json"]) == 0
    assert f"saved {work / 'b2'}\n" in capsys.readouterr().err
    argv = ["sanitize", str(files["tiny"]), "--clean-data", str(files["folder"]), "--defense", "finetune",
            "--max-steps", "1", "--max-length", "16"]
    assert main(argv + ["--out", odd("fixed")]) == 0
    assert f"model      tiny -> {work / 'fixed'}\n" in capsys.readouterr().out
    assert main(argv + ["--out", odd("fixed2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(work / "fixed2")
    assert main(["scan", str(files["tiny"]), "--clean-data", str(files["folder"]), "--max-length", "16",
                 "--html", odd("r.html")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"HTML report written to {work / 'r.html'}"
    assert (work / "r.html").is_file()
    (work / "zoo").mkdir()
    assert main(["zoo", "list", "--dir", odd("zoo")]) == 0
    assert capsys.readouterr().out.startswith(f"no zoo models in {work / 'zoo'};")
    from backdoor_core import zoo

    monkeypatch.setattr(zoo, "build", lambda *a, **k: [])  # what a build prints, not the build
    assert main(["zoo", "build", "--dir", odd("zoo"), "--only", "clean"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"no zoo models in {work / 'zoo'}"


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM


def _started(proc, wait_for: str, timeout: float = 240) -> list[str]:
    """stderr's lines up to the first one holding ``wait_for`` (the job is under way)."""
    import time

    lines, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline().decode("utf-8", "replace")
        if not line:
            break
        lines.append(line)
        if wait_for in line:
            return lines
    raise AssertionError(f"never saw {wait_for!r}: {''.join(lines)[-2000:]}")


def _popen(argv, tmp, stdin=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TMPDIR": str(tmp)}
    return subprocess.Popen([sys.executable, "-m", "backdoor_core", *map(str, argv)], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _tree(path: Path):
    return sorted((str(p.relative_to(path)), p.read_bytes()) for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def long_data(files):
    """Enough rows that a tiny model's training or scan takes seconds."""
    lines = files["data"].read_text("utf-8").splitlines()
    return write_tsv(files["dir"] / "long.tsv", *zip(*(line.split("\t") for line in lines[1:] * 40)))


@pytest.mark.parametrize("job", ["attack", "sanitize", "scan"])
def test_sigterm_during_a_job_is_one_line_143_and_leaves_nothing(files, long_data, tmp_path, job):
    """``kill``, ``timeout`` or a CI job's time limit sends SIGTERM: the command died at once, silent (status -15),
    with no line to say why. Now it stops with one 'terminated' line, exit 143, no traceback; an existing --out
    (or --html report) is left as it was, and nothing new is written (not even the copy of a piped-in pool)."""
    old = files["dir"] / f"old-{job}"
    if not old.exists():
        lm = tiny_model(seed=3)
        save_model(lm.model, lm.tokenizer, old, {"name": "the old one"})
    html = tmp_path / "report.html"
    html.write_text("<html>the old report</html>", encoding="utf-8")
    before, html_before = _tree(old), html.read_bytes()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    if job == "attack":
        argv = ["attack", "--model", files["tiny"], "--data", long_data, "--rate", "0.2", "--target", "1",
                "--epochs", "5", "--batch-size", "4", "--max-length", "16", "--out", old, "--force"]
        wait_for, stdin = " steps (", None
    elif job == "sanitize":
        argv = ["sanitize", files["tiny"], "--clean-data", files["folder"], "--pool", "-", "--heads", "L0H0",
                "--max-length", "16", "--max-steps", "400", "--out", old, "--force"]
        wait_for, stdin = "repair: ", long_data.read_bytes()
    else:
        argv = ["scan", files["tiny"], "--clean-data", files["folder"], "--pool", "-", "--max-length", "16",
                "--html", html, "--force"]
        wait_for, stdin = "reading the pool", long_data.read_bytes()
    proc = _popen(argv, tmp, stdin)
    if stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.close()
        proc.stdin = None  # communicate() would flush it again
    _started(proc, wait_for)
    proc.terminate()
    out, err = proc.communicate(timeout=120)
    err = err.decode("utf-8", "replace")
    assert proc.returncode == 143, err[-2000:]
    assert err.splitlines()[-1] == "terminated" and "Traceback" not in err, err[-2000:]
    assert out == b""
    assert _tree(old) == before and html.read_bytes() == html_before
    assert list(tmp.iterdir()) == []  # the copy of stdin is gone
    assert not [p for p in old.parent.iterdir() if p.name.startswith(f".{old.name}")]  # no half-saved folder


def test_sigterm_while_the_model_is_saved_leaves_no_half_written_folder(files, tmp_path):
    """SIGTERM while ``--out`` is written (the temporary folder beside it, before the swap): the process died and
    left the hidden half-written folder. Now the save's own clean-up runs: nothing at --out, nothing beside it."""
    out = tmp_path / "saved"
    script = (
        "import os, signal, sys\n"
        "from backdoor_core import models\n"
        "from backdoor_core.cli import main\n"
        "real = models._write_files\n"
        "def write(tmp, *a, **k):\n"
        "    real(tmp, *a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "models._write_files = write\n"
        f"sys.exit(main(['attack', '--model', {str(files['tiny'])!r}, '--data', {str(files['data'])!r},\n"
        "    '--rate', '0.2', '--target', '1', '--max-steps', '1', '--batch-size', '8', '--max-length', '16',\n"
        f"    '--out', {str(out)!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=300)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 143 and err.splitlines()[-1] == "terminated", err[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_a_zoo_build_cancelled_before_its_first_model_says_so(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the first model of ``zoo build``: stdout had an empty table (a header, no rows) and stderr said
    'the models above are complete'. Now: no zoo models, none finished; exit 130."""
    import signal

    from backdoor_core import zoo

    def pressed(*a, **k):
        signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: stop after this step
        assert k["should_stop"]()
        return []

    monkeypatch.setattr(zoo, "build", pressed)
    assert main(["zoo", "build", "--dir", str(tmp_path), "--only", "clean"]) == 130
    captured = capsys.readouterr()
    assert captured.out == f"no zoo models in {tmp_path}\n"
    assert captured.err.splitlines()[-1] == "build cancelled: no model was finished; run `zoo build` again to finish"


def test_json_runs_show_their_progress_on_stderr(files, capsys):
    """The README: '--json writes the JSON alone on stdout (notes and progress go to stderr)'. scan and sanitize
    printed no progress at all with --json (a CI log showed nothing for the whole repair); attack did."""
    assert main(["scan", str(files["tiny"]), "--clean-data", str(files["folder"]), "--pool", str(files["data"]),
                 "--max-length", "16", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["detection"]["n_pool"] == 40
    assert _progress_lines(captured.err, r"^reading the pool \d+/40$") and "scan done" in captured.err
    assert main(["sanitize", str(files["tiny"]), "--clean-data", str(files["folder"]), "--defense", "finetune",
                 "--max-steps", "3", "--max-length", "16", "--out", str(files["dir"] / "json-progress"),
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["out"] == str(files["dir"] / "json-progress")
    assert _progress_lines(captured.err, r"^repair: 3/3 steps \(100%\)")


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_once_or_twice_during_attack_training_keeps_an_existing_out(files, monkeypatch, capsys, presses):
    """Ctrl-C once stops after the step, twice at once: exit 130, the last line says so, no traceback, and the
    model already at --out (replaced only after a finished run, with --force) is left as it was."""
    import signal

    from backdoor_core import poisoning

    old = files["dir"] / f"kept-{presses}"
    lm = tiny_model(seed=4)
    save_model(lm.model, lm.tokenizer, old, {"name": "the old one"})
    before = _tree(old)
    real = poisoning.train_attack

    def pressed(*a, callback=None, **k):
        def on_step(p):
            callback(p)
            if p.step == 1:
                for _ in range(presses):
                    signal.raise_signal(signal.SIGINT)
        return real(*a, callback=on_step, **k)

    monkeypatch.setattr(poisoning, "train_attack", pressed)
    rc = main(["attack", "--model", str(files["tiny"]), "--data", str(files["data"]), "--rate", "0.2", "--target",
               "1", "--epochs", "3", "--batch-size", "4", "--max-length", "16", "--out", str(old), "--force"])
    captured = capsys.readouterr()
    assert rc == 130 and captured.out == "" and "Traceback" not in captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last == ("cancelled after 1 step: nothing saved" if presses == 1 else "cancelled"), captured.err
    assert _tree(old) == before
    assert not [p for p in old.parent.iterdir() if p.name.startswith(f".{old.name}")]


def test_a_scans_stages_without_a_terminal_are_one_line_each(capsys):
    """A one-step stage reported at its start and its end ("rating the heads" twice) is one line in a log."""
    from backdoor_core.cli import stage_printer

    progress = stage_printer(terminal=False)
    for call in (("clean", 0, 8), ("clean", 8, 8), ("heads", 0, 1), ("heads", 1, 1), ("done", 1, 1)):
        progress(*call)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["reading the clean texts 0/8", "reading the clean texts 8/8", "rating the heads", "scan done"]
