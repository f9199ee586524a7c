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
