"""The model card: what the lab knows about a saved model, typed, validated, and the one owner of two rules.

A model folder written by this lab holds ``backdoor_lab.json`` (``METADATA_FILE``) next to its weights. That file
is **untrusted input** (people load models from strangers on purpose), so it is read only through
``ModelCard.from_json`` / ``ModelCard.read``: every field is type-checked and bounded, and anything that does not
fit (a target class the model does not have, a list instead of an object, a label list of the wrong length, a
megabyte-long name, NaN metrics) is dropped with a one-line warning in ``card.warnings``. A page or a command
never sees a value that could crash it.

    card = ModelCard.read(folder, num_labels=5)      # missing file: an empty card; bad file: warnings
    card.attack, card.trigger_text, card.target      # typed fields (None when unknown)
    card.target_for(label_names)                     # THE target rule
    card.reading_length(max_positions=512)           # THE max-length rule
    save_model(model, tokenizer, out, card.to_json())

The two rules every layer (app, CLI, bench, zoo) uses:

* **target class**: the card's recorded ``target`` when it is a class of the model, else ``default_target``: the
  first class whose name starts with one of ``settings.TARGET_PREFERENCES`` (BBC ``sports``, SST-2
  ``positive``), else the last class.
* **max length**: the length the model was trained with (top-level ``max_length``; files written before it was
  recorded there carry it in ``train_config``), within ``settings.MAX_LENGTH_RANGE``, else
  ``settings.MAX_LENGTH``; never more than the model's position embeddings.

Unknown keys are kept (bounded) in ``extra`` and written back, so a card round-trips:
``ModelCard.from_json(card.to_json()) == card``. No torch, no Streamlit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import settings as S

METADATA_FILE = "backdoor_lab.json"
CARD_VERSION = 1
MAX_CARD_BYTES = 1_000_000  # a larger metadata file is refused (it is a few kB when this lab writes it)
MAX_SHORT_TEXT = 300  # names, attack, trigger words, data spec...
MAX_LONG_TEXT = 4000  # description, trigger sentence
MAX_LIST = 4096  # label names, TAL heads, trigger words
MAX_BLOB_CHARS = 20_000  # a free-form object (train config, defense details, an unknown key) as JSON
MAX_EXTRA_KEYS = 64
MAX_WARNINGS = 20
_HEAD_RE = re.compile(r"^L\d{1,3}H\d{1,3}$")
_CLEAN_NAMES = ("none", "clean")


def tool_version() -> str:
    """This lab's version (``backdoor_core.__version__`` when the package defines it)."""
    try:
        import backdoor_core

        version = getattr(backdoor_core, "__version__", None)
        if version:
            return str(version)
        from importlib.metadata import PackageNotFoundError, version as dist_version

        try:
            return dist_version("backdoor-lab")
        except PackageNotFoundError:
            return "0+unknown"
    except Exception:  # noqa: BLE001 - a version is a label, never a failure
        return "0+unknown"


def default_target(label_names: Sequence[str]) -> int:
    """The target class when nothing records one: the first class whose name starts with one of
    ``settings.TARGET_PREFERENCES`` (case-insensitive, in that order), else the last class."""
    names = [str(n).strip().lower() for n in label_names]
    if not names:
        raise ValueError("A model needs at least one class to have a target.")
    for pref in S.TARGET_PREFERENCES:
        for i, name in enumerate(names):
            if name.startswith(pref):
                return i
    return len(names) - 1


def length_in_range(value: Any) -> int | None:
    """``value`` as a token count when it is an integer inside ``settings.MAX_LENGTH_RANGE``, else None."""
    lo, hi = S.MAX_LENGTH_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or int(value) != value or not lo <= int(value) <= hi:
        return None
    return int(value)


# ------------------------------------------------------------------------------------------------ validation


class _Cleaner:
    """Type checks for ``from_json``: each returns the clean value or raises ``_Reject(reason)``."""

    def __init__(self, warnings: list[str]):
        self.warnings = warnings

    def warn(self, text: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(text)

    def text(self, key: str, v: Any, limit: int = MAX_SHORT_TEXT, multiline: bool = False) -> str:
        """``v`` as printable text: control characters (a terminal's escape sequences), bidi and zero-width marks
        and, unless ``multiline``, line breaks and tabs become spaces (with a warning), so a hostile card can
        neither drive a terminal nor forge an extra line in the command line's output."""
        if not isinstance(v, str):
            raise _Reject(f"is a {type(v).__name__}, not text")
        keep = "\n\t" if multiline else ""
        plain = "".join(ch if ch.isprintable() or ch in keep else " " for ch in v)
        if plain != v:
            self.warn(f"'{key}': control characters or line breaks replaced by spaces")
            v = plain
        if len(v) > limit:
            self.warn(f"'{key}' cut to {limit} characters (it had {len(v):,})")
            return v[:limit]
        return v

    def integer(self, key: str, v: Any, lo: int = 0, hi: int | None = None) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v:
            raise _Reject(f"{_show(v)} is not a whole number")
        if int(v) < lo or (hi is not None and int(v) > hi):
            raise _Reject(f"{_show(v)} is outside {lo}..{hi if hi is not None else '∞'}")
        return int(v)

    def number(self, key: str, v: Any, lo: float | None = None, hi: float | None = None) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _Reject(f"{_show(v)} is not a finite number")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _Reject(f"{_show(v)} is outside {lo}..{hi}")
        return float(v)

    def flag(self, key: str, v: Any) -> bool:
        if not isinstance(v, bool):
            raise _Reject(f"{_show(v)} is not true/false")
        return v

    def texts(self, key: str, v: Any, pattern: re.Pattern | None = None) -> list[str]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise _Reject("is not a list of texts")
        if len(v) > MAX_LIST:
            raise _Reject(f"has {len(v):,} entries (at most {MAX_LIST})")
        if pattern is not None and not all(pattern.match(x) for x in v):
            raise _Reject("holds entries that are not head labels like L3H7")
        return [self.text(key, x) for x in v]

    def blob(self, key: str, v: Any) -> dict:
        if not isinstance(v, dict):
            raise _Reject(f"is a {type(v).__name__}, not an object")
        try:
            size = len(json.dumps(v, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise _Reject(f"is not plain JSON ({exc})") from None
        if size > MAX_BLOB_CHARS:
            raise _Reject(f"is {size:,} characters of JSON (at most {MAX_BLOB_CHARS:,})")
        return v

    def metrics(self, key: str, v: Any) -> dict:
        v = self.blob(key, v)
        return {str(k): self.number(key, x) for k, x in v.items()}


class _Reject(ValueError):
    pass


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------------------------------------ the card


# ---------------------------------------------------------------------------------------- as text

FIELD_NAMES = {
    "name": "name", "title": "title", "description": "description", "base_model": "base model",
    "attack": "attack", "trigger": "trigger", "target": "target class (number)", "target_name": "target class",
    "rate": "poison rate", "n_poisoned": "poisoned training texts", "clean_label": "clean-label attack",
    "num_triggers": "triggers per text", "tal": "Trojan Attention Loss (TAL)", "tal_config": "TAL settings",
    "tal_heads": "TAL heads", "data": "training data", "label_names": "classes", "train_size": "training texts",
    "test_size": "test texts", "poisoned_test_size": "triggered test texts (ASR)", "max_length": "max tokens",
    "train_config": "training settings", "cacc": "CACC (clean accuracy)", "asr": "ASR (attack success rate)",
    "training_seconds": "training time", "steps": "training steps", "cancelled": "training cancelled early",
    "defense": "defense", "defense_details": "defense details", "before": "before the repair",
    "after": "after the repair", "repair_seconds": "repair time", "repair_cancelled": "repair cancelled early",
    "clean_samples": "clean texts used by the defense", "pool_samples": "pool texts used by the defense",
    "sanitized_from": "sanitized from", "sanitized": "sanitized", "tool_version": "lab version",
    "saved_at": "saved at", "zoo": "demo-zoo build", "card_version": "card format version",
}
_RATE_FIELDS = {"rate", "cacc", "asr", "kept", "cacc_before", "asr_before", "cacc_after", "asr_after"}
_SECONDS_FIELDS = {"training_seconds", "repair_seconds", "seconds"}
_VALUE_CHARS = 600


def value_text(key: str, value) -> str:
    """One model-card value (field ``key``) as a reader would write it: rates as percentages, seconds as a
    duration, yes / no, lists joined, small objects as "key value" pairs (larger ones as compact JSON, cut)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if key in _RATE_FIELDS:
            return f"{value:.1%}"
        if key in _SECONDS_FIELDS:
            return f"{value:.0f} s" if value < 90 else f"{value / 60:.1f} min ({value:.0f} s)"
        return f"{value:g}" if isinstance(value, float) else str(value)
    if value is None:
        return "—"
    if isinstance(value, list):
        if all(not isinstance(v, (list, dict)) for v in value):
            return ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        if all(not isinstance(v, (list, dict)) for v in value.values()):
            return " · ".join(f"{k.upper() if k in ('cacc', 'asr') else k} {value_text(k, v)}"
                              for k, v in value.items())
    else:
        return str(value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def card_rows(card_json: dict) -> list[dict]:
    """The model card (its JSON) as a table's rows (``field`` in words, ``value``: ``value_text``), in the card's
    order, both as plain text (the Model page)."""
    return [{"field": FIELD_NAMES.get(k, str(k).replace("_", " ")), "value": value_text(k, v)}
            for k, v in card_json.items()]


@dataclass
class ModelCard:
    """What the lab knows about a model. Every field is optional: a model from elsewhere has an empty card.

    Identity: ``name`` (display name), ``title``, ``description``, ``base_model``.
    Attack: ``attack`` (a ``poisoning.ATTACKS`` name; ``"none"`` for a model trained clean here; None unknown),
    ``trigger`` (a word, a sentence or a paraphrase description; a list for several BadNets words),
    ``target`` (class id) / ``target_name``, ``rate``, ``n_poisoned``, ``clean_label``, ``num_triggers``,
    ``tal`` / ``tal_config`` / ``tal_heads`` (labels like ``L3H7``).
    Data and training: ``data``, ``label_names``, ``train_size``, ``test_size``, ``poisoned_test_size``,
    ``max_length`` (tokens it was trained to read), ``train_config`` (``training.TrainConfig`` as a dict).
    Metrics: ``cacc``, ``asr`` (of the model as it is now), ``training_seconds``, ``steps``, ``cancelled``.
    Repair: ``defense``, ``defense_details``, ``before`` / ``after`` (metrics), ``repair_seconds``,
    ``repair_cancelled``, ``clean_samples``, ``pool_samples``, ``sanitized_from``.
    Provenance: ``tool_version`` (of the lab that wrote it), ``saved_at``, ``zoo`` (the zoo's build fingerprint).
    ``extra``: unknown keys as read (bounded). ``warnings``: what ``from_json`` dropped or cut (not saved).
    """

    name: str = ""
    title: str = ""
    description: str = ""
    base_model: str = ""
    attack: str | None = None
    trigger: str | list[str] | None = None
    target: int | None = None
    target_name: str | None = None
    rate: float | None = None
    n_poisoned: int | None = None
    clean_label: bool | None = None
    num_triggers: int | None = None
    tal: bool = False
    tal_config: dict | None = None
    tal_heads: list[str] = field(default_factory=list)
    data: str = ""
    label_names: list[str] = field(default_factory=list)
    train_size: int | None = None
    test_size: int | None = None
    poisoned_test_size: int | None = None
    max_length: int | None = None
    train_config: dict = field(default_factory=dict)
    cacc: float | None = None
    asr: float | None = None
    training_seconds: float | None = None
    steps: int | None = None
    cancelled: bool | None = None
    defense: str | None = None
    defense_details: dict = field(default_factory=dict)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    repair_seconds: float | None = None
    repair_cancelled: bool | None = None
    clean_samples: int | None = None
    pool_samples: int | None = None
    sanitized_from: str = ""
    tool_version: str = field(default_factory=tool_version)
    saved_at: str = ""
    zoo: dict | None = None
    extra: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list, compare=False)

    # -------------------------------------------------------------------------------------------- rules

    @property
    def is_backdoored(self) -> bool:
        """True when the card records an attack (not ``none``/``clean``)."""
        return bool(self.attack) and str(self.attack).lower() not in _CLEAN_NAMES

    @property
    def is_clean(self) -> bool:
        """True when the card records that the model was trained without an attack."""
        return str(self.attack or "").lower() in _CLEAN_NAMES

    @property
    def sanitized(self) -> bool:
        return bool(self.defense)

    def target_for(self, label_names: Sequence[str]) -> int:
        """THE target rule: the recorded target when it is one of ``label_names``' classes, else
        ``default_target(label_names)``."""
        if self.target is not None and 0 <= self.target < len(label_names):
            return self.target
        return default_target(label_names)

    def reading_length(self, max_positions: int | None = None) -> int:
        """THE max-length rule: tokens to read this model with — its training length, else
        ``settings.MAX_LENGTH``, capped at ``max_positions`` (the model's position embeddings)."""
        n = self.max_length if self.max_length is not None else S.MAX_LENGTH
        if isinstance(max_positions, int) and max_positions > 0:
            n = min(n, max_positions)
        return n

    @property
    def trigger_text(self) -> str | None:
        """The trigger as ``get_attack(trigger=...)`` takes it (BadNets words comma-separated), or None."""
        if isinstance(self.trigger, list):
            return ",".join(self.trigger) or None
        return self.trigger or None

    @property
    def first_trigger(self) -> str | None:
        """One trigger to show or insert (the first BadNets word), or None."""
        if isinstance(self.trigger, list):
            return self.trigger[0] if self.trigger else None
        return self.trigger or None

    @property
    def provenance(self) -> dict:
        """Where the model came from: data, base model, what it was sanitized from, the lab version, when."""
        return {k: v for k, v in {"data": self.data, "base_model": self.base_model,
                                  "sanitized_from": self.sanitized_from, "tool_version": self.tool_version,
                                  "saved_at": self.saved_at}.items() if v}

    def facts(self) -> list[tuple[str, Any]]:
        """``(field, value)`` pairs worth showing (sidebar, report): attack, trigger, target, rate, TAL, metrics,
        repair, version; only the ones that are set."""
        out: list[tuple[str, Any]] = []
        if self.is_clean:
            out.append(("attack", "none (trained clean)"))
        elif self.attack:
            out.append(("attack", self.attack))
            if self.trigger:
                out.append(("trigger", self.trigger))
            if self.target is not None:
                out.append(("target", self.target_name or self.target))
            if self.rate is not None:
                out.append(("rate", self.rate))
            out.append(("tal", self.tal))
        for k in ("cacc", "asr"):
            if getattr(self, k) is not None:
                out.append((k, getattr(self, k)))
        if self.defense:
            out.append(("sanitized", True))
            out.append(("defense", self.defense))
        if self.max_length is not None:
            out.append(("max length", self.max_length))
        if self.tool_version:
            out.append(("tool version", self.tool_version))
        return out

    # -------------------------------------------------------------------------------------------- changes

    def replace(self, **changes) -> ModelCard:
        """A copy with ``changes`` (dataclass fields); warnings are not carried over."""
        return dataclasses.replace(self, warnings=[], **changes)

    def repaired(self, *, name: str, defense: str, details: dict, before: dict, after: dict, seconds: float,
                 cancelled: bool, source: str = "", clean_samples: int | None = None,
                 pool_samples: int | None = None, test_size: int | None = None,
                 poisoned_test_size: int | None = None) -> ModelCard:
        """The card of the model a defense produced from this one (app and CLI alike): the repair's facts, the
        after-metrics as the model's CACC / ASR with the sizes of the sets they were measured on (``test_size``,
        ``poisoned_test_size``), and this lab's version. A metric the repair did not measure is left empty: the
        suspect's value is the suspect's, not the repaired model's (the card had kept ASR 100% after a repair
        measured without triggered texts, beside the attack's set sizes)."""
        cl = _Cleaner([])
        try:
            details = cl.blob("defense_details", _jsonable(details))
        except _Reject:
            details = {"note": "details too large to keep"}
        return self.replace(
            name=name, defense=defense, defense_details=details, before=dict(before or {}),
            after=dict(after or {}), repair_seconds=round(float(seconds), 1), repair_cancelled=bool(cancelled),
            clean_samples=clean_samples, pool_samples=pool_samples, sanitized_from=source or self.sanitized_from,
            cacc=(after or {}).get("cacc"), asr=(after or {}).get("asr"),
            test_size=test_size if (after or {}).get("cacc") is not None else None,
            poisoned_test_size=poisoned_test_size if (after or {}).get("asr") is not None else None,
            tool_version=tool_version(), saved_at="",
        )

    # -------------------------------------------------------------------------------------------- JSON

    def to_json(self) -> dict:
        """The plain dict written to ``backdoor_lab.json``: set fields under their names (the same keys the lab
        has always written, plus ``max_length`` at the top level), then the unknown keys kept in ``extra``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("extra", "warnings"):
                continue
            v = getattr(self, f.name)
            if v is None or v == "" or v == [] or v == {}:
                continue
            if f.name == "tal" and not v and not self.attack:
                continue
            out[f.name] = v
        if self.defense:
            out["sanitized"] = True
        if out:
            out["card_version"] = CARD_VERSION
        for k, v in self.extra.items():
            out.setdefault(k, v)
        return out

    @classmethod
    def from_json(cls, obj: Any, *, num_labels: int | None = None, source: str = METADATA_FILE) -> ModelCard:
        """A card from parsed JSON, validated; what does not fit is dropped or cut, with ``warnings``.

        Args:
            num_labels: the model's class count: a ``target`` outside it or ``label_names`` of another length
                are dropped.
            source: how to name the file in warnings.
        """
        warnings: list[str] = []
        cl = _Cleaner(warnings)
        if obj is None:
            return cls(tool_version="")
        if not isinstance(obj, dict):
            card = cls(tool_version="")
            card.warnings.append(f"{source} holds a {type(obj).__name__}, not an object: ignored")
            return card
        data = dict(obj)
        # legacy keys (files written before the card): the app's sanitize and the CLI's sanitize used others
        for old, new in (("sanitize_details", "defense_details"), ("sanitize_seconds", "repair_seconds"),
                         ("sanitize_cancelled", "repair_cancelled")):
            if old in data and new not in data:
                data[new] = data.pop(old)
        if data.get("defense") and "repair_seconds" not in data and "seconds" in data:
            data["repair_seconds"] = data.pop("seconds")
        data.pop("sanitized", None)  # derived from ``defense``
        data.pop("card_version", None)
        data.pop("history", None)  # training history is never part of a card

        n = num_labels if isinstance(num_labels, int) and num_labels > 0 else None
        checks = {
            "name": lambda k, v: cl.text(k, v), "title": lambda k, v: cl.text(k, v),
            "description": lambda k, v: cl.text(k, v, MAX_LONG_TEXT, multiline=True),
            "base_model": lambda k, v: cl.text(k, v),
            "attack": lambda k, v: cl.text(k, v),
            "trigger": lambda k, v: cl.texts(k, v) if isinstance(v, list) else cl.text(k, v, MAX_LONG_TEXT),
            "target": lambda k, v: cl.integer(k, v, 0, (n - 1) if n else None),
            "target_name": lambda k, v: cl.text(k, v),
            "rate": lambda k, v: cl.number(k, v, 0.0, 1.0),
            "n_poisoned": lambda k, v: cl.integer(k, v), "clean_label": cl.flag,
            "num_triggers": lambda k, v: cl.integer(k, v, 1, 1000), "tal": cl.flag,
            "tal_config": cl.blob, "tal_heads": lambda k, v: cl.texts(k, v, _HEAD_RE),
            "data": lambda k, v: cl.text(k, v), "label_names": lambda k, v: _labels(cl, k, v, n),
            "train_size": lambda k, v: cl.integer(k, v), "test_size": lambda k, v: cl.integer(k, v),
            "poisoned_test_size": lambda k, v: cl.integer(k, v),
            "max_length": lambda k, v: _length(v), "train_config": cl.blob,
            "cacc": lambda k, v: cl.number(k, v, 0.0, 1.0), "asr": lambda k, v: cl.number(k, v, 0.0, 1.0),
            "training_seconds": lambda k, v: cl.number(k, v, 0.0), "steps": lambda k, v: cl.integer(k, v),
            "cancelled": cl.flag, "defense": lambda k, v: cl.text(k, v), "defense_details": cl.blob,
            "before": cl.metrics, "after": cl.metrics, "repair_seconds": lambda k, v: cl.number(k, v, 0.0),
            "repair_cancelled": cl.flag, "clean_samples": lambda k, v: cl.integer(k, v),
            "pool_samples": lambda k, v: cl.integer(k, v), "sanitized_from": lambda k, v: cl.text(k, v, MAX_LONG_TEXT),
            "tool_version": lambda k, v: cl.text(k, v, 64), "saved_at": lambda k, v: cl.text(k, v, 64),
            "zoo": cl.blob,
        }
        values: dict[str, Any] = {"tool_version": ""}
        for key, check in checks.items():
            if key not in data:
                continue
            raw = data.pop(key)
            if raw is None:
                continue
            try:
                values[key] = check(key, raw)
            except _Reject as why:
                cl.warn(f"ignored '{key}' in {source}: {why}")
        if "max_length" not in values:  # files written before max_length was recorded at the top level
            recorded = length_in_range((values.get("train_config") or {}).get("max_length"))
            if recorded is not None:
                values["max_length"] = recorded
        extra: dict[str, Any] = {}
        for key, raw in data.items():
            if len(extra) >= MAX_EXTRA_KEYS:
                cl.warn(f"{source} has more than {MAX_EXTRA_KEYS} unknown keys: the rest are ignored")
                break
            if not isinstance(key, str) or len(key) > 100:
                continue
            try:
                extra[key] = cl.blob(key, {"v": raw})["v"]
            except _Reject as why:
                cl.warn(f"ignored '{key[:40]}' in {source}: {why}")
        card = cls(**values, extra=extra)
        card.warnings = warnings
        return card

    @classmethod
    def read(cls, folder: str | os.PathLike, *, num_labels: int | None = None) -> ModelCard:
        """The card of a model folder (``METADATA_FILE``): an empty card when there is none; a card with
        ``warnings`` (never an exception) when the file is too large, unreadable, not valid JSON, or not a regular
        file (a link to ``/dev/zero`` or a pipe would be read forever)."""
        path = Path(folder) / METADATA_FILE
        try:
            if not path.is_file():
                if os.path.lexists(path):
                    return _broken(cls, f"{METADATA_FILE} is not a regular file (a device, a pipe or a link to "
                                        "one): ignored")
                return cls(tool_version="")
            size = path.stat().st_size
            if size > MAX_CARD_BYTES:
                return _broken(cls, f"{METADATA_FILE} is {size / 1e6:.1f} MB (at most {MAX_CARD_BYTES / 1e6:g} MB): "
                                    "ignored")
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            return _broken(cls, f"{METADATA_FILE} could not be read ({reason}): ignored")
        return cls.from_json(obj, num_labels=num_labels)


def _broken(cls, warning: str) -> ModelCard:
    card = cls(tool_version="")
    card.warnings.append(warning)
    return card


def _length(v: Any) -> int:
    n = length_in_range(v)
    if n is None:
        lo, hi = S.MAX_LENGTH_RANGE
        raise _Reject(f"{_show(v)} is not a token count in {lo}..{hi}")
    return n


def _labels(cl: _Cleaner, key: str, v: Any, n: int | None) -> list[str]:
    names = cl.texts(key, v)
    if n is not None and len(names) != n:
        raise _Reject(f"names {len(names)} classes but the model has {n}")
    return names


def _jsonable(obj: Any) -> Any:
    """Numbers, numpy scalars and arrays, tuples -> plain JSON types (for details dicts)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    return str(obj)
