"""The command line as a script uses it: pipes whose reader quits early, several runs given one --out, an empty
variable passed as an option, out-of-range counts refused when parsed (seventh CLI audit). Tiny models only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backdoor_core.cli import main
from backdoor_core.models import METADATA_FILE, save_model, tiny_model

from defense_helpers import cli_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, unbuffered", [
    (["zoo", "list", "--json"], False),
    (["zoo", "list", "--json"], True),
    (["zoo", "--help"], False),  # unbuffered, argparse itself ignores the failed write of its help
])
def test_a_reader_that_quits_early_ends_the_command_quietly(argv, unbuffered):
    """``... | head -1`` / ``| grep -q`` closing the pipe before the output is written: the command printed
    'error: [Errno 32] Broken pipe' with exit 2 (unbuffered stdout), or 'Exception ignored ... BrokenPipeError'
    with exit 120 (a pipe's usual block-buffered stdout), so a ``set -o pipefail`` script read a failed scan.
    Now it stops quietly with 141 (128 + SIGPIPE), as cat does."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "backdoor_core", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command (importing for a second or more) writes
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert err == "", err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("argv", [["zoo", "list", "--json"], ["zoo", "list", "--help"]])
def test_stdout_on_a_full_disk_is_one_error_line(argv):
    """``> result.json`` on a full disk: the write failed at the interpreter's exit, after the command had
    returned ('Exception ignored ... OSError: No space left on device', exit 120; with the error line first where
    the write failed earlier). Now it is the one 'error:' line, exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "backdoor_core", *argv], cwd=ROOT, env=env, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == ["error: [Errno 28] No space left on device"], proc.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return cli_files(tmp_path_factory.mktemp("scripting"))


def _taken_meanwhile(monkeypatch, module, name, out):
    """Wrap ``module.name`` (the command's work) so that, while it runs, another run saves its model at ``out``."""
    real = getattr(module, name)

    def work(*args, **kwargs):
        result = real(*args, **kwargs)
        other = tiny_model(seed=1)
        save_model(other.model, other.tokenizer, out, {"name": "the other run's"})
        return result

    monkeypatch.setattr(module, name, work)


@pytest.mark.parametrize("verb", ["attack", "sanitize"])
def test_an_out_another_run_saved_to_meanwhile_is_not_replaced_without_force(files, monkeypatch, capsys, verb):
    """Two runs started at once with one --out both passed the check before the work; the one that finished last
    replaced the other's model without --force, both said 'saved' and exited 0. Now the later one is refused when
    it comes to save: one line, exit 2, the first model kept."""
    from backdoor_core import defenses, poisoning

    out = files["dir"] / f"same-{verb}"
    if verb == "attack":
        _taken_meanwhile(monkeypatch, poisoning, "train_attack", out)
        argv = ["attack", "--model", str(files["tiny"]), "--data", str(files["data"]), "--rate", "0.2", "--target",
                "1", "--max-steps", "1", "--batch-size", "8", "--max-length", "16", "--out", str(out)]
    else:
        _taken_meanwhile(monkeypatch, defenses, "run_defense", out)
        argv = ["sanitize", str(files["tiny"]), "--clean-data", str(files["folder"]), "--defense", "finetune",
                "--max-steps", "1", "--max-length", "16", "--out", str(out)]
    rc = main(argv)
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1, captured.err[-2000:]
    assert "already holds a saved model" in err[0] and "nothing saved" in err[0], err
    assert json.loads((out / METADATA_FILE).read_text("utf-8"))["name"] == "the other run's"
    assert "saved" not in captured.out and "Traceback" not in captured.err


@pytest.mark.parametrize("argv, says", [
    (["scan", "m", "--clean-data", "d", "--top-k", "0"], "--top-k: must be a positive integer"),
    (["scan", "m", "--clean-data", "d", "--top-k", "-3"], "--top-k: must be a positive integer"),
    (["attack", "--data", "nosuch", "--num-triggers", "0"], "--num-triggers: must be a positive integer"),
    (["attack", "--data", "nosuch", "--rate", "1.5"], "--rate: must be a number in [0, 1]"),
    (["attack", "--data", "nosuch", "--rate", "nan"], "--rate: must be a number in [0, 1]"),
    (["scan", "m", "--clean-data", "d", "--frr", "0"], "--frr: must be a number between 0 and 1 (exclusive)"),
    (["scan", "m", "--clean-data", "d", "--frr", "1.5"], "--frr: must be a number in [0, 1]"),
    (["scan", "m", "--clean-data", "d", "--max-fraction", "0"], "--max-fraction: must be a number in (0, 1]"),
    (["sanitize", "m", "--clean-data", "d", "--heads", "garbage"], "--heads: 'garbage' is not a head label"),
    (["inspect", "--text", "x", "--ablate", "L1H2,foo"], "--ablate: 'foo' is not a head label"),
])
def test_counts_and_the_poison_rate_are_refused_when_parsed(capsys, argv, says):
    """The README: counts below 1 are refused when parsed. --top-k and --num-triggers were refused only after the
    model and the data loaded (with 'top_k must be at least 1'), --rate after the model loaded and the training bar
    started."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and says in err, err


def test_zoo_build_with_an_empty_only_builds_nothing(tmp_path, monkeypatch, capsys):
    """``zoo build --only "$MODELS"`` with an empty variable started building the whole zoo (hours on a CPU): an
    empty --only meant all. Now it names no model: one line, exit 2, nothing built."""
    from backdoor_core import zoo

    calls = []
    monkeypatch.setattr(zoo, "build", lambda *a, **k: calls.append(k.get("specs")) or [])
    for only in ("", " , "):
        rc = main(["zoo", "build", "--dir", str(tmp_path / "zoo"), "--only", only])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "names no zoo model" in err and len(err.splitlines()) == 1, err
    assert calls == []
    assert main(["zoo", "build", "--dir", str(tmp_path / "zoo"), "--only", "clean"]) == 0
    assert [s.name for s in calls[0]] == ["clean"]


def test_zoo_help_names_where_the_zoo_is_built(tmp_path, monkeypatch, capsys):
    """``zoo build --help`` said the default folder is $BACKDOOR_ZOO_DIR or ~/.cache/...; the build reads
    $XDG_CACHE_HOME too (a CI runner's cache folder), so a script built where the help did not say."""
    from backdoor_core.zoo import default_zoo_dir

    monkeypatch.delenv("BACKDOOR_ZOO_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_zoo_dir() == tmp_path / "backdoor-attention-lab" / "zoo"
    with pytest.raises(SystemExit):
        main(["zoo", "build", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps the help, even at a hyphen
    assert "$BACKDOOR_ZOO_DIR" in text and "backdoor-attention-lab/zoounder$XDG_CACHE_HOMEor~/.cache" in text


def test_a_model_saved_at_out_while_this_run_writes_its_own_is_not_replaced(files, monkeypatch, capsys):
    """The check right before saving left a window: a run that saved at --out while this one wrote its files (after
    that check) was replaced. ``save_model(replace_model=False)`` checks under the folder's lock, before the swap."""
    from backdoor_core import models

    out = files["dir"] / "same-window"
    real_write = models._write_files
    other = tiny_model(seed=2)

    def write_and_race(tmp, *args, **kwargs):
        real_write(tmp, *args, **kwargs)
        if not out.exists():  # the other run's save lands between this run's last check and its swap
            real_write_save(other, out)

    def real_write_save(lm, where):
        monkeypatch.setattr(models, "_write_files", real_write)
        try:
            save_model(lm.model, lm.tokenizer, where, {"name": "the other run's"})
        finally:
            monkeypatch.setattr(models, "_write_files", write_and_race)

    monkeypatch.setattr(models, "_write_files", write_and_race)
    argv = ["sanitize", str(files["tiny"]), "--clean-data", str(files["folder"]), "--defense", "finetune",
            "--max-steps", "1", "--max-length", "16", "--out", str(out)]
    rc = main(argv)
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(err) == 1 and "already holds a saved model" in err[0], captured.err[-2000:]
    assert json.loads((out / METADATA_FILE).read_text("utf-8"))["name"] == "the other run's"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temporary left


def test_inspect_says_when_the_trigger_did_not_go_where_position_asked(files, capsys):
    """``inspect --position`` past the end of the text put the trigger after the last word without a word (the
    Inspect page said so only for a word past the model's window); stdout's JSON stays the JSON alone."""
    argv = ["inspect", "--model", str(files["tiny"]), "--text", "a short text here", "--trigger", "cf",
            "--position", "9", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["trigger_position"] == 4
    assert "note: the text has 4 words, so the trigger went in after the last one (asked: before word 9)." \
        in captured.err
    long = " ".join(f"w{i}" for i in range(200))
    assert main(["inspect", "--model", str(files["tiny"]), "--text", long, "--trigger", "cf", "--position", "150",
                 "--max-length", "32"]) == 0
    err = capsys.readouterr().err
    assert "note: word 150 is past what the model reads (its first 32 tokens): the trigger went in before word" in err
    assert main(argv[:-3] + ["--position", "2", "--json"]) == 0
    assert "note:" not in capsys.readouterr().err  # where it was asked: nothing to say
