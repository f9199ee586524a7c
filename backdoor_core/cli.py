"""Command-line entry point: ``python -m backdoor_core <command> ...``, or ``backdoor-lab <command> ...`` once
the package is installed (``pip install .``; ``pyproject.toml`` points the console script at ``main``).

Each command lives in ``backdoor_core/commands/<name>.py`` and exposes ``register(subparsers)``, which adds its
parser and sets ``func``. Known user errors (bad model, bad data, bad text) print one plain line on stderr and
exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Sequence

from .jobs import JobCancelled  # standard library only: importing the CLI stays cheap

COMMANDS = ["inspect", "attack", "zoo", "scan", "sanitize"]  # modules under backdoor_core.commands, in help order


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is meant for the user as it is. ``OSError`` is one: a full disk or a folder
    that became unwritable after the work ("[Errno 28] No space left on device: '<path>'") is the machine's
    condition, not the lab's bug, and the file name is in the message."""
    from .architecture import UnsupportedModelError
    from .attention import InputTextError
    from .data import DataError
    from .models import ModelLoadError, SaveRefusedError

    return (ModelLoadError, DataError, InputTextError, UnsupportedModelError, SaveRefusedError, OSError,
            ValueError)


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose usage errors are one plain line on stderr (exit 2), like every other user error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low``; ``what`` names the range in the message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
"""argparse type: an integer >= 1 (epochs, steps, batch sizes, sizes)."""
nonnegative_int = int_at_least(0, "an integer >= 0")
"""argparse type: an integer >= 0 (positions, 'every N' where 0 means the default)."""


def finite_float(low: float, what: str, strict: bool = False):
    """An argparse type: a finite number >= ``low`` (> ``low`` when ``strict``); ``what`` names the range. nan and
    inf are refused here: as a learning rate or a loss weight they only surface later, after the work, as 'NaN
    logits: the weights are broken'."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


positive_float = finite_float(0.0, "a finite number > 0", strict=True)
"""argparse type: a finite number > 0 (learning rates)."""
nonnegative_float = finite_float(0.0, "a finite number >= 0")
"""argparse type: a finite number >= 0 (loss weights: TAL's alpha, the alignment's beta)."""


def max_length_int(text: str) -> int:
    """argparse type for ``--max-length``: at least ``settings.MAX_LENGTH_RANGE[0]`` tokens (the special tokens
    alone take two, so fewer leaves nothing to read); the upper end is the model's own (``fit_max_length``)."""
    from .settings import MAX_LENGTH_RANGE

    return int_at_least(MAX_LENGTH_RANGE[0], f"an integer >= {MAX_LENGTH_RANGE[0]} (tokens)")(text)


def unit_float(text: str) -> float:
    """argparse type: a finite number in [0, 1] (shares, relative thresholds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def open_unit_float(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a false-rejection rate: 0 flags nothing, 1 everything)."""
    value = unit_float(text)
    if value in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got {text}")
    return value


def share_float(text: str) -> float:
    """argparse type: a share in (0, 1] (at most this share of heads: 0 would allow none)."""
    value = unit_float(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text}")
    return value


def head_labels(text: str) -> str:
    """argparse type: head labels such as ``L3H4,L5H0`` (``ablation.head_pairs``; their range is the model's,
    checked once it loads)."""
    from .ablation import head_pairs

    try:
        head_pairs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).rstrip(".")) from None
    return text


def fit_max_length(args, loaded) -> int:
    """Cap ``args.max_length`` at the model's position embeddings (``models.check_max_length``), printing a
    note on stderr when it was lowered; returns the value now in ``args.max_length``."""
    from .models import check_max_length

    args.max_length, note = check_max_length(args.max_length, loaded.model)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return args.max_length


def check_out_again(out, force: bool, protect: Sequence[str] = ()) -> None:
    """``models.check_save_target`` once more, right before the save: ``--out`` was free when the command started,
    but another run given the same ``--out`` (a script starting several at once) may have saved there meanwhile,
    and without ``--force`` its model must not be replaced (``save_model`` itself replaces a lab model)."""
    from .models import SaveRefusedError, check_save_target

    try:
        check_save_target(out, force, protect=protect)
    except SaveRefusedError as exc:
        raise SaveRefusedError(f"{str(exc).rstrip('.')} (checked again before saving: it changed while this run "
                               "worked, e.g. another run saved there; nothing saved).") from None


@contextlib.contextmanager
def ctrl_c_stops(message: str):
    """Within the block, the first Ctrl-C asks the running job to stop after its current step — the block
    gets ``should_stop() -> bool`` to pass on — and prints ``message``; a second Ctrl-C aborts at once."""
    from tqdm import tqdm

    state = {"requested": False}

    def on_sigint(signum, frame):
        if state["requested"]:
            raise KeyboardInterrupt
        state["requested"] = True
        tqdm.write(message, file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield lambda: state["requested"]
    finally:
        signal.signal(signal.SIGINT, previous)


PLAIN_PROGRESS_SHARE = 0.1
"""Without a terminal on stderr, a progress line at least every this share of a job's (or a stage's) total..."""
PLAIN_PROGRESS_SECONDS = 30.0
"""... or every this many seconds, whichever comes first (and the last line, when it ends)."""


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal: the one test of whether progress is drawn in place (tqdm bars, a line
    rewritten with ``\\r``) or written as plain lines, which a log file (``2> log``), a pipe or a CI log shows
    one under another instead of as one long line of redrawn bars."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or a stand-in stream
        return False


class _Throttle:
    """When a plain progress line is due: a new stage, ``PLAIN_PROGRESS_SHARE`` more of its total, the end of it,
    or ``PLAIN_PROGRESS_SECONDS`` since the last line."""

    def __init__(self):
        import time

        self._clock = time.monotonic
        self._key = self._printed = None
        self._bucket = -1
        self._time = self._clock()

    def due(self, key, done, total) -> bool:
        if (key, done) == self._printed:
            return False
        new = key != self._key
        bucket = int(done / total / PLAIN_PROGRESS_SHARE) if total else -1
        due = (new or (total and done >= total) or bucket > self._bucket
               or self._clock() - self._time >= PLAIN_PROGRESS_SECONDS)
        if due:
            self._key, self._printed, self._bucket, self._time = key, (key, done), bucket, self._clock()
        return bool(due)


class PlainProgress:
    """The part of tqdm's bar the commands use (``n``, ``total``, ``desc``, ``update``, ``set_postfix``,
    ``set_description_str``, ``refresh``, ``close``, ``write``), written as whole lines when one is due
    (``_Throttle``) and once more at ``close``: ``repair: 40/120 steps (33%), ce=0.412``."""

    def __init__(self, total=None, desc: str = "", unit: str = "step", file=None):
        self.n, self.total, self.desc, self.unit = 0, total, desc or "", unit
        self.file = file
        self._postfix: dict = {}
        self._throttle = _Throttle()
        self._closed = False
        self._last = None  # the (desc, n) of the last line written

    @staticmethod
    def write(text: str, file=None) -> None:
        print(text, file=file or sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        self._postfix = {**dict(ordered_dict or {}), **kwargs}
        if refresh:
            self.refresh()

    def set_description_str(self, desc=None, refresh: bool = True) -> None:
        self.desc = desc or ""
        if refresh:
            self.refresh()

    set_description = set_description_str

    def line(self) -> str:
        count = f"{self.n}/{self.total} {self.unit}s" if self.total else f"{self.n} {self.unit}s"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = "".join(f", {k}={v}" for k, v in self._postfix.items())
        return f"{self.desc + ': ' if self.desc else ''}{count}{share}{post}"

    def _emit(self) -> None:
        self._last = (self.desc, self.n)
        self.write(self.line(), self.file)

    def refresh(self) -> None:
        if not self._closed and self._throttle.due(self.desc, self.n, self.total):
            self._emit()

    def close(self) -> None:
        if not self._closed and self._last != (self.desc, self.n) and (self.n or self._last is not None):
            self._emit()
        self._closed = True


def progress_bar(total=None, desc: str = "", unit: str = "step"):
    """A progress bar on stderr: tqdm's on a terminal, else a ``PlainProgress`` of whole lines (``2> log``, CI)."""
    if stderr_is_terminal():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
    return PlainProgress(total=total, desc=desc, unit=unit, file=sys.stderr)


def stage_printer(terminal: bool | None = None):
    """``progress(stage, done, total)`` for a scan's stages on stderr (``scan.stage_text``): on a terminal one
    line rewritten in place (``\\r``), ended when the stage is ``done``; else whole lines, when due (``_Throttle``).
    ``terminal``: None asks ``stderr_is_terminal``."""
    from .scan import stage_text

    if terminal is None:
        terminal = stderr_is_terminal()
    if terminal:
        def progress(stage, done, total):  # one line, rewritten in place: "reading the pool 64/130"
            print(f"\r{stage_text(stage, done, total):<40}", end="" if stage != "done" else "\n", file=sys.stderr,
                  flush=True)

        return progress
    throttle, last = _Throttle(), [None]

    def plain(stage, done, total):  # a one-step stage reported twice ("rating the heads") is one line
        if throttle.due(stage, done, total) and stage_text(stage, done, total) != last[0]:
            last[0] = stage_text(stage, done, total)
            print(last[0], file=sys.stderr, flush=True)

    return plain


def format_table(rows: Sequence[dict], columns: Sequence[str], floats: str = "{:.3f}") -> str:
    """A plain aligned text table of ``rows`` (dicts) restricted to ``columns``."""
    cells = [[floats.format(r[c]) if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([line, sep, *body])


_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Control characters but a tab and a newline (escape sequences, a carriage return that overwrites the line, C1
codes), and the bidi overrides that reorder what a terminal shows."""


def terminal_safe(text: str) -> str:
    """``text`` with every ``_UNSAFE_CHARS`` character written as its escape (``\\x1b``, ``\\r``, ``\\u202e``):
    names, class names and texts from hostile files cannot clear the screen, move the cursor, rewrite a line
    of the output (e.g. the scan's verdict) or set the terminal's title."""
    return _UNSAFE_CHARS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class _TerminalSafe:
    """A text stream that passes everything written through ``terminal_safe`` (``main`` wraps stdout in it)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(terminal_safe(text))

    def __getattr__(self, name):
        return getattr(self._stream, name)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=float))


def quiet_libraries() -> None:
    """Silence the libraries' warnings that mean nothing to a CLI user (e.g. 'weights newly initialized')."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def program_name() -> str:
    """``backdoor-lab`` when run as the installed console command (``pyproject.toml``), else how the module
    is run: ``python -m backdoor_core``."""
    return "backdoor-lab" if os.path.basename(sys.argv[0] or "").startswith("backdoor-lab") else "python -m backdoor_core"


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = Parser(
        prog=program_name(),
        description="Backdoor Attention Lab: see and repair backdoors in BERT-style text classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"backdoor_core.commands.{name}").register(sub)
    return parser


STDIN = "-"
"""A file argument's name for standard input (``--pool -``); ``./-`` names a file called ``-``."""
STDIN_NAME = "<stdin>"
"""How messages and model cards name what came from standard input."""
STDIN_HELP = "'-' reads it from stdin"
"""What ``--help`` says of an option that accepts ``-``."""


def accepts_stdin(parser, tables: Sequence[str] = (), texts: Sequence[str] = (), text: Sequence[str] = (),
                  refused: dict | None = None) -> None:
    """Declare which of ``parser``'s options take ``-`` for stdin (``stdin_inputs`` reads it before the command
    runs): ``tables``, labelled data (a TSV/CSV header naming the text column, or JSON Lines); ``texts``, unlabelled
    texts (those, or one text per line); ``text``, one text, all of stdin. ``refused``: option -> why ``-`` cannot
    work there (a model folder, an output), said in one line instead of looking for a file called '-'."""
    kinds = {**{d: "table" for d in tables}, **{d: "texts" for d in texts}, **{d: "text" for d in text}}
    names = {a.dest: (a.option_strings[-1] if a.option_strings else a.dest) for a in parser._actions}
    unknown = sorted(set(kinds) - set(names) | set(refused or {}) - set(names))
    if unknown:  # a renamed option must not lose its '-' silently
        raise AssertionError(f"accepts_stdin: no option {unknown}")
    parser.set_defaults(stdin_kinds=kinds, stdin_refused=dict(refused or {}),
                        stdin_names={d: names[d] for d in [*kinds, *(refused or {})]})


def _option(args, dest: str) -> str:
    return getattr(args, "stdin_names", {}).get(dest, "--" + dest.replace("_", "-"))


def _read_stdin(what: str) -> bytes:
    """All of stdin, at most ``data.MAX_FILE_BYTES`` (as for a file: refused past it, before reading on)."""
    from .data import MAX_FILE_BYTES, DataError

    stream = getattr(sys.stdin, "buffer", None)
    if sys.stdin is None or stream is None or sys.stdin.closed:
        raise DataError(f"{what} is '-', but stdin is closed; pipe the data in, or give a file", STDIN_NAME)
    if stream.isatty():
        print(f"note: reading {what} from stdin (the terminal); end it with Ctrl-D", file=sys.stderr)
    chunks, size = [], 0
    while block := stream.read(1 << 20):
        chunks.append(block)
        size += len(block)
        if size > MAX_FILE_BYTES:
            raise DataError(f"more than {MAX_FILE_BYTES:,} bytes; the limit is {MAX_FILE_BYTES:,} bytes "
                            "(MAX_FILE_BYTES)", STDIN_NAME)
    return b"".join(chunks)


def _stdin_suffix(data: bytes, kind: str) -> str:
    """The file type the bytes of stdin are read as: ``.jsonl`` when the first non-blank line opens a JSON object or
    array; ``.tsv`` / ``.csv`` when it is a header with tabs / commas naming a text column; else ``.txt`` (one text a
    line) for unlabelled texts and ``.tsv`` for a table (whose reading then names the columns it found)."""
    from .data import TEXT_COLUMNS

    first = next((line for line in data.splitlines() if line.strip()), b"")
    first = first.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace").strip()
    if first.startswith(("{", "[")):
        return ".jsonl"
    for sep, suffix in (("\t", ".tsv"), (",", ".csv")):
        if sep in first and any(c.strip().strip('"').lower() in TEXT_COLUMNS for c in first.split(sep)):
            return suffix
    return ".txt" if kind == "texts" else ".tsv"


@contextlib.contextmanager
def stdin_inputs(args):
    """Within the block, the option given as ``-`` (one at most: stdin reads once) names a private copy of stdin
    (``accepts_stdin``; the same size, line and row limits as a file, read by the same code), or holds the text
    itself (``text``); options that cannot take stdin refuse ``-`` in one line. Errors that name the copy name
    ``<stdin>`` instead; ``args.stdin_path`` is the copy (None without one), for ``shown_input``."""
    import shutil
    import tempfile

    from .data import DataError

    args.stdin_path = None
    kinds, refused = getattr(args, "stdin_kinds", {}), getattr(args, "stdin_refused", {})
    for dest, why in refused.items():
        if getattr(args, dest, None) == STDIN:
            raise ValueError(f"{_option(args, dest)} -: {why}; '-' (stdin, stdout) cannot stand for it there "
                             "(./- names a file called '-').")
    wanted = [d for d in kinds if getattr(args, d, None) == STDIN]
    if len(wanted) > 1:
        raise ValueError(f"{' and '.join(_option(args, d) + ' -' for d in wanted)}: stdin can be read once; give "
                         "all but one of them as a file.")
    if not wanted:
        yield
        return
    dest = wanted[0]
    data = _read_stdin(_option(args, dest))
    if kinds[dest] == "text":
        try:
            setattr(args, dest, data.decode("utf-8").removesuffix("\n").removesuffix("\r"))
        except UnicodeDecodeError as exc:
            raise DataError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at {exc.start})", STDIN_NAME) from None
        yield
        return
    folder = tempfile.mkdtemp(prefix="backdoor-lab-stdin-")
    path = os.path.join(folder, "stdin" + _stdin_suffix(data, kinds[dest]))
    try:
        with open(path, "wb") as f:
            f.write(data)
        del data
        setattr(args, dest, path)
        args.stdin_path = path
        try:
            yield
        except DataError as exc:
            if exc.path is None or os.path.abspath(exc.path) != path:
                raise
            raise DataError(exc.reason, STDIN_NAME, exc.line) from None
        except (ValueError, OSError) as exc:
            if path not in str(exc):
                raise
            raise ValueError(str(exc).replace(path, STDIN_NAME)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def full_path(path) -> str:
    """``path`` as the CLI names what it wrote or read from (``saved <path>``, ``--json``'s ``out``): absolute, with
    ``..``, ``~`` and links resolved, so a log line or a script's variable names the same place from any folder."""
    from pathlib import Path

    return str(Path(path).expanduser().resolve())


def shown_input(args, value):
    """``value`` as messages and model cards name it: ``<stdin>`` for the copy ``stdin_inputs`` made."""
    path = getattr(args, "stdin_path", None)
    return STDIN_NAME if path is not None and value is not None and str(value) == path else value


TERMINATED = 143
"""Exit status after SIGTERM (``kill``, a CI job's timeout, ``timeout``, systemd stopping a service): 128 + 15."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is (``_sigterm_raises``): a KeyboardInterrupt, so every clean-up a Ctrl-C
    runs runs too (a half-written ``--out`` or report, the copy of stdin, a zoo model in training), and ``main``
    ends with one ``terminated`` line and ``TERMINATED`` instead of the interpreter dying mid-write, silent."""


@contextlib.contextmanager
def _sigterm_raises():
    """Within the block, SIGTERM raises ``Terminated`` (in the main thread only: signals go there)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


PIPE_CLOSED = 141
"""Exit status when the reader of stdout quit early (``| head``, ``| grep -q``): 128 + SIGPIPE, as ``cat`` ends."""


def _drop_stdout(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null: the reader is gone (or the disk full), and the interpreter's
    last flush at exit must not fail again ('Exception ignored ... BrokenPipeError', exit 120)."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture): nothing to flush at exit
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Its results go to stdout through ``terminal_safe`` (a model card, a class name or a data
    text from a file cannot drive the terminal); a user error is one ``terminal_safe`` line on stderr, exit 2.
    A reader of stdout that quits early ends the command quietly with ``PIPE_CLOSED``; Ctrl-C ends it with
    'cancelled', 130, SIGTERM with 'terminated', ``TERMINATED`` (143), nothing half-written left behind."""
    stdout = sys.stdout
    sys.stdout = _TerminalSafe(stdout)
    try:  # Ctrl-C while the commands import torch and transformers (seconds) is a cancel too, not a traceback
        try:
            with _sigterm_raises():
                parser = build_parser()
                args = parser.parse_args(argv)
                quiet_libraries()
                with stdin_inputs(args):
                    code = int(args.func(args) or 0)
        finally:  # --help and usage errors exit here too; a closed pipe shows now, not at the interpreter's exit
            try:
                stdout.flush()
            except OSError:  # a closed pipe, a full disk: the rest cannot be written, and must not fail again at exit
                _drop_stdout(stdout)
                raise
        return code
    except BrokenPipeError:  # an OSError, but not the user's error: the output was wanted only in part
        _drop_stdout(stdout)
        return PIPE_CLOSED
    except Terminated:
        print("terminated", file=sys.stderr)
        return TERMINATED
    except (KeyboardInterrupt, JobCancelled):  # JobCancelled: a job stopped between batches (forward.Cancelled)
        print("cancelled", file=sys.stderr)
        return 130
    except user_errors() as exc:
        print(f"error: {terminal_safe(str(exc))}", file=sys.stderr)
        return 2
    finally:
        sys.stdout = stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
