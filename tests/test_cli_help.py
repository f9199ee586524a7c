"""Every command's ``--help`` prints: argparse %-formats help strings, so a literal "20% of" in one crashes it."""

import argparse

import pytest

from backdoor_core.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_command_formats_its_help():
    seen = []
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()  # raises on a stray % in any help string
        assert "usage:" in text
        seen.append(" ".join(path))
    assert {"inspect", "attack", "scan", "sanitize", "zoo build"} <= set(seen), seen


@pytest.mark.parametrize("command", [["sanitize"], ["scan"], ["attack"]])
def test_help_exits_cleanly(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main(command + ["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_ctrl_c_while_the_commands_import_is_a_clean_cancel(monkeypatch, capsys):
    """Building the parser imports torch and transformers (seconds): a Ctrl-C then is 'cancelled', exit 130,
    like a Ctrl-C during the work, not a KeyboardInterrupt traceback."""
    from backdoor_core import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    try:
        rc = main(["scan", "--help"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C while importing escaped main() as a traceback")
    assert rc == 130
    assert capsys.readouterr().err == "cancelled\n"


@pytest.mark.parametrize("argv, says", [
    (["attack", "--tal", "--alpha", "nan"], "--alpha: must be a finite number >= 0"),
    (["attack", "--tal", "--alpha", "-1"], "--alpha: must be a finite number >= 0"),
    (["attack", "--lr", "inf"], "--lr: must be a finite number > 0"),
    (["attack", "--lr", "0"], "--lr: must be a finite number > 0"),
    (["attack", "--tal", "--heads", "abc"], "--heads: must be 'all' or a positive integer"),
    (["attack", "--tal", "--heads", "0"], "--heads: must be 'all' or a positive integer"),
    (["attack", "--tal", "--layers", "1,x"], "--layers: must be comma-separated layer numbers"),
    (["sanitize", "m", "--clean-data", "d", "--out", "o", "--beta", "nan"], "--beta: must be a finite number >= 0"),
    (["sanitize", "m", "--clean-data", "d", "--out", "o", "--beta", "-1"], "--beta: must be a finite number >= 0"),
    (["sanitize", "m", "--clean-data", "d", "--out", "o", "--lr", "nan"], "--lr: must be a finite number > 0"),
])
def test_weights_rates_and_tal_heads_are_checked_when_parsed(capsys, argv, says):
    """nan / inf / negative loss weights and learning rates, and TAL head counts or layers that are not numbers,
    were taken as given: the work ran and ended in 'NaN logits: the weights are broken' (a model that is fine), a
    bare 'invalid literal for int()' line, or, for a negative --beta, a repair that pushed the heads away from the
    safe ones and said nothing."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and says in err, err


def test_tal_heads_and_layers_parse():
    args = build_parser().parse_args(["attack", "--tal", "--heads", "2", "--layers", "0,-1", "--alpha", "0"])
    assert args.heads == 2 and args.layers == (0, -1) and args.alpha == 0.0
    args = build_parser().parse_args(["attack", "--tal", "--heads", "ALL"])
    assert args.heads == "all" and args.layers is None
