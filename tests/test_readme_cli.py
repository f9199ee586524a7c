"""The README's command-line examples run as written, in order, from a fresh checkout (issue 12).

The commands are read from README.md's "Command line" section (``README_PATH`` overrides the file) and run
in-process in an empty folder that only sees the checkout's ``assets/`` (so ``models/...`` outputs land there,
not in the repository). Each gets a few extra flags that make it small (fewer texts, two training steps); the
flags go last, so the README's own flags are all parsed and checked. MiniLM and the shipped zoo: ~1-2 min.
"""

import os
import re
import shlex
from pathlib import Path

import pytest

from backdoor_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = {  # appended to each verb's README command: the same code paths on a few texts
    "inspect": [],
    "zoo": [],
    "scan": ["--n-clean", "40"],
    "sanitize": ["--n-clean", "40", "--max-steps", "2", "--n-eval", "30"],
    "attack": ["--train-size", "60", "--test-size", "30", "--max-steps", "2"],
}


def readme_commands(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = [ln.strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith("python -m backdoor_core ")]


def test_readme_cli_examples_run_in_order(tmp_path, monkeypatch, capsys):
    readme = Path(os.environ.get("README_PATH", ROOT / "README.md"))
    commands = readme_commands(readme)
    verbs = [shlex.split(c)[3] for c in commands]
    assert {"inspect", "scan", "sanitize"} <= set(verbs)
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo-cache"))
    for cmd, verb in zip(commands, verbs):
        argv = shlex.split(cmd)[3:]
        if verb == "zoo" and argv[1:2] == ["build"]:
            pytest.fail("the README's runnable block should not train the whole zoo (it ships); say it in words")
        rc = main(argv + SMALL.get(verb, []))
        out, err = capsys.readouterr()
        assert rc == 0, f"{cmd}\n{err[-2000:]}"
        if verb == "sanitize":  # before/after numbers on stdout, the progress bar on stderr only
            assert re.search(r"^ASR\s+before [\d.]+%\s+after [\d.]+%", out, re.M), out
            ci = re.search(r"^ASR\s+before [\d.]+%\s+after ([\d.]+)%  \(after: 95% interval ([\d.]+) to ([\d.]+)% over "
                           r"(\d+) triggered texts\)", out, re.M)  # the ASR set's size bounds what ASR can say
            assert ci, out
            after_asr, lo, hi, n_asr = (float(g) for g in ci.groups())
            assert lo <= after_asr <= hi and n_asr > 0
            assert re.search(r"^CACC\s+before [\d.]+%\s+after [\d.]+%", out, re.M), out
            assert re.search(r"^KEPT\s+[\d.]+% of the clean predictions unchanged", out, re.M), out
            if "--clean-model" in argv:  # the clean reference's rate on the same triggered texts, and the lift
                asr = [float(x) for x in re.search(r"^ASR\s+before ([\d.]+)%\s+after ([\d.]+)%", out, re.M).groups()]
                cl = re.search(r"^CLEAN\s+\S+ \(no backdoor\) sends ([\d.]+)% of the same triggered texts to the "
                               r"target: lift ([+-][\d.]+) points before \(95% interval ([+-][\d.]+) to ([+-][\d.]+)\), "
                               r"([+-][\d.]+) after \(([+-][\d.]+) to ([+-][\d.]+); paired over the (\d+) texts\)",
                               out, re.M)
                assert cl, out
                rate, before, lo_b, hi_b, after, lo_a, hi_a, n_lift = (float(g) for g in cl.groups())
                assert before == pytest.approx(asr[0] - rate, abs=0.11) and after == pytest.approx(asr[1] - rate,
                                                                                                      abs=0.11)
                assert lo_b <= before <= hi_b and lo_a <= after <= hi_a and n_lift == n_asr
            # what the card's trigger does to the heads, before and after (repair_effect), on the same texts
            assert re.search(r"^TRIGGER\s+On the \d+ repaired heads, the trigger changed the similarity to their "
                             r"layer's other heads by [+-][\d.]+ before the repair and [+-][\d.]+ after", out, re.M), out
            assert re.search(r"^TRIGGER\s+Attention the \d+ repaired heads put on the trigger's tokens: \d+% before",
                             out, re.M), out
            ch = re.search(r"^CHANGE\s+CACC ([+-][\d.]+) points, 95% interval ([+-][\d.]+) to ([+-][\d.]+) over "
                           r"these (\d+) texts \((\d+) made right, (\d+) made wrong", out, re.M)
            assert ch, out
            c, lo, hi, n, fixed, broken = (float(g) for g in ch.groups())
            assert lo <= c <= hi and c == pytest.approx(100 * (fixed - broken) / n, abs=0.05)
            assert "step" not in out and "it/s" not in out
        if verb == "inspect" and "--json" not in argv and "default" not in argv:
            assert "sports" in out  # the zoo model's label names, not LABEL_3
        if verb == "inspect" and "default" in argv:
            assert "business" in out and "LABEL_0" not in out  # BBC's five labels, as in the app
