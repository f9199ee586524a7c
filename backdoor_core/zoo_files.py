"""The demo zoo's files on disk: its ``manifest.json`` and the adapter file each model ships as.

A zoo folder holds one sub-folder per model (``adapter.safetensors`` + model card) and ``manifest.json``:
``{"version", "models": {name: {"file", "sha256", "bytes"}}}``. An adapter file is safetensors: the LoRA
matrices (``lora.py``) and, under ``full.<name>``, tensors stored whole (the classifier head), with the facts a
load needs in one metadata entry (``ADAPTER_META_KEY``: base, rank, alpha, label names).

This module reads and writes those files and applies an adapter to a model; it builds no model itself
(``models.load_adapter_model`` picks the base and returns the loaded model; ``zoo.build`` writes the files).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import write_text
from .lora import merge_state

ZOO_VERSION = 2  # 2: LoRA adapters + head (``adapter.safetensors``); 1 was full fine-tuned model folders
ADAPTER_FILE = "adapter.safetensors"
MANIFEST = "manifest.json"
ADAPTER_META_KEY = "backdoor_lab_zoo"


class AdapterFileError(ValueError):
    """An adapter file that is missing from its manifest, does not match its hash, or cannot be read."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(root: Path) -> dict:
    """``<zoo>/manifest.json``: ``{"version", "models": {name: {"file", "sha256", "bytes"}}}`` ({} when absent)."""
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest_entry(root: Path, name: str, file: Path) -> None:
    """Record model ``name``'s adapter ``file`` (its sha256 and size) in ``<root>/manifest.json``, atomically."""
    data = read_manifest(root) or {"version": ZOO_VERSION, "models": {}}
    data.setdefault("models", {})[name] = {"file": f"{name}/{ADAPTER_FILE}", "sha256": sha256_file(file),
                                           "bytes": file.stat().st_size}
    write_text(root / MANIFEST, json.dumps(data, indent=2) + "\n")


def write_adapter(path: Path, tensors: dict, *, base: str, rank: int, alpha: float, label_names: list[str]) -> None:
    """Write adapters + head to ``path`` (safetensors). The facts a load needs go in ONE metadata entry (sorted
    JSON): safetensors stores metadata in a hash map whose order changes from run to run, so several entries would
    make two identical builds differ in bytes."""
    from safetensors.torch import save_file

    meta = {"format": "backdoor-lab-zoo-lora", "base": base, "rank": int(rank), "alpha": float(alpha),
            "label_names": list(label_names)}
    save_file(tensors, str(path), metadata={ADAPTER_META_KEY: json.dumps(meta, sort_keys=True)})


@dataclass
class Adapter:
    """One model's adapter file, read and checked: the base it starts from (``"default"`` or ``"tiny"``), its
    label names, the LoRA ``scale`` (alpha / rank) and the tensors (LoRA matrices; ``full.<name>`` whole)."""

    file: Path
    base: str
    label_names: list[str]
    scale: float
    tensors: dict


def unrecorded(folder: Path) -> str | None:
    """Why ``<folder>/adapter.safetensors`` is not the file the zoo's ``manifest.json`` records (missing, not
    listed, another sha256: a truncated copy, a Git LFS pointer, an edited file, or a build killed between writing
    the model and its manifest entry), or None when it is. ``read_adapter`` refuses such a file and ``zoo.build``
    rebuilds it (it is not taken as cached)."""
    file = folder / ADAPTER_FILE
    if not file.is_file():
        return f"{file} is missing; rebuild it with `python -m backdoor_core zoo build`."
    manifest = folder.parent / MANIFEST
    data = read_manifest(folder.parent)
    if not data:  # a missing or broken manifest is named as such: "not listed" sent the user after the adapter
        why = "is missing" if not manifest.exists() else "cannot be read as the zoo's JSON manifest"
        return (f"{manifest} {why} (it records each model's sha256); restore it (git checkout) or rebuild the zoo "
                "with `python -m backdoor_core zoo build --force`.")
    models = data.get("models")
    entry = models.get(folder.name) if isinstance(models, dict) else None
    if not isinstance(entry, dict) or "sha256" not in entry:
        return (f"{file} is not listed in {folder.parent / MANIFEST}; rebuild it with "
                "`python -m backdoor_core zoo build`.")
    digest = sha256_file(file)
    if digest != entry["sha256"]:
        return (f"{file} does not match its recorded sha256 in {folder.parent / MANIFEST} "
                f"({digest[:12]}… instead of {str(entry['sha256'])[:12]}…): the file is damaged or "
                "changed; restore it (git checkout) or rebuild the zoo.")
    return None


def read_adapter(folder: Path) -> Adapter:
    """Read ``<folder>/adapter.safetensors`` once its sha256 matches the zoo's ``manifest.json`` (``unrecorded``:
    a truncated copy, a Git LFS pointer or an edited file is refused before anything loads). Raises
    ``AdapterFileError``."""
    from safetensors import safe_open

    file = folder / ADAPTER_FILE
    reason = unrecorded(folder)
    if reason:
        raise AdapterFileError(reason)
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[ADAPTER_META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        names = [str(x) for x in meta["label_names"]]
        rank, alpha, base = int(meta["rank"]), float(meta["alpha"]), str(meta.get("base", "default"))
        if rank <= 0:
            raise ValueError(f"rank {rank}")
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise AdapterFileError(f"{file} is not a zoo adapter file: {exc}") from exc
    return Adapter(file=file, base=base, label_names=names, scale=alpha / rank, tensors=tensors)


def apply_adapter(model: torch.nn.Module, adapter: Adapter) -> None:
    """Merge ``adapter``'s LoRA matrices into ``model`` (``lora.merge_state``) and copy its whole tensors in.
    Raises ``AdapterFileError`` where a tensor does not fit the model."""
    try:
        merge_state(model, {k: v for k, v in adapter.tensors.items() if not k.startswith("full.")}, adapter.scale)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key, value in adapter.tensors.items():
                if key.startswith("full."):
                    p = params.get(key[5:])
                    if p is None or p.shape != value.shape:
                        raise ValueError(f"tensor '{key[5:]}' does not fit the base model")
                    p.copy_(value)
    except ValueError as exc:
        raise AdapterFileError(f"{adapter.file}: {exc}") from exc
