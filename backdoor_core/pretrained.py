"""The pretrained weights a fine-tuned classifier started from, for resetting repaired heads to them (our design;
papers silent).

A backdoor enters while a pretrained encoder is fine-tuned on poisoned data; the pretrained weights themselves
hold no trigger. Our repair resets the suspicious heads before it fine-tunes them (``sanitize``). Zeroing their
output columns removes what they learnt and also their clean job, which they must relearn from the defender's
few clean texts; restoring the heads' slices from the pretrained encoder removes only what fine-tuning added (the
idea of Fine-mixing, Zhang et al., Findings of EMNLP 2022, which mixes a whole model back toward its pretrained
weights; here only the repaired heads' slices are restored). Measured: docs/design.md.

``find_pretrained(model, base)`` loads a candidate (``base``: a folder, a hub id or ``"default"``, the packaged
all-MiniLM-L6-v2, through the lab's safe loader ``models.load_model``) and keeps it only when it IS the model's
starting point: every encoder tensor the model has (``config.model_type``'s base model, the pooler left out) must
be there with the same shape, and the relative distance ``||theta_model - theta_base|| / ||theta_base||`` over
them must stay under ``settings.PRETRAINED_MAX_DISTANCE``. Fine-tuning moves an encoder by a few percent (0.02-0.03
on our zoos' models); two independently initialised models of the same shapes are 1.2 apart. Anything else returns
``None`` and a one-line reason, and the repair falls back to zeroing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import settings as S


@dataclass
class PretrainedWeights:
    """``state``: ``{parameter name: tensor}`` of the encoder, named as in the fine-tuned model; ``source``: what
    was loaded; ``distance``: the fine-tuned model's relative distance from it."""

    state: dict[str, torch.Tensor]
    source: str
    distance: float


_CACHE: dict[str, dict[str, torch.Tensor]] = {}


def _encoder_params(model) -> dict[str, torch.Tensor]:
    """The model's encoder parameters by name (``base_model_prefix.*``, the pooler left out)."""
    prefix = f"{getattr(model, 'base_model_prefix', '')}."
    return {n: p for n, p in model.named_parameters()
            if n.startswith(prefix) and ".pooler." not in f".{n[len(prefix):]}"}


def _load_state(base: str) -> dict[str, torch.Tensor]:
    """The candidate's weights by name (its own classification head, if any, is never used)."""
    key = str(base)
    state = _CACHE.get(key)
    if state is None:  # a local reference: another thread's clear() cannot take it away mid-use
        from .models import load_model

        lm = load_model(base, device="cpu")
        state = {k: v.detach().float() for k, v in lm.model.state_dict().items()}
        _CACHE.clear()  # one candidate at a time: an encoder's weights are not small
        _CACHE[key] = state
    return state


def find_pretrained(model, base: str | None = None,
                    max_distance: float = S.PRETRAINED_MAX_DISTANCE) -> tuple[PretrainedWeights | None, str]:
    """``(weights, "")`` when ``base`` (default ``"default"``) is the encoder ``model`` was fine-tuned from, else
    ``(None, reason)`` (see the module docstring)."""
    from .models import ModelLoadError

    base = str(base or "default")
    name = "the packaged all-MiniLM-L6-v2" if base == "default" else f"'{base}'"
    own = _encoder_params(model)
    if not own:
        return None, f"{type(model).__name__} has no encoder parameters to compare."
    try:
        state = _load_state(base)
    except (ModelLoadError, OSError, ValueError) as exc:
        return None, f"the pretrained model {name} could not be loaded ({str(exc).splitlines()[0]})."
    missing = [n for n, p in own.items() if n not in state or tuple(state[n].shape) != tuple(p.shape)]
    if missing:
        return None, (f"{name} is not this model's pretrained encoder: {len(missing)} of its {len(own)} encoder "
                      f"tensors are missing or differ in shape (e.g. {missing[0]}).")
    num = den = 0.0
    with torch.no_grad():
        for n, p in own.items():
            b = state[n]
            num += float((p.detach().float().cpu() - b).pow(2).sum())
            den += float(b.pow(2).sum())
    distance = (num / den) ** 0.5 if den > 0 else float("inf")
    if not distance <= max_distance:
        return None, (f"{name} is not this model's pretrained encoder: the weights are {distance:.2f} apart "
                      f"(relative), more than fine-tuning moves them ({max_distance:g}).")
    return PretrainedWeights({n: state[n] for n in own}, base, float(distance)), ""


def base_embeddings(model, weights: PretrainedWeights) -> torch.Tensor:
    """``(vocab, hidden)``: the pretrained rows of ``model``'s input embedding matrix, for the analyst's drift
    table (``trigger_search.drifted_words``). ``ValueError`` when ``weights`` lacks it."""
    table = model.get_input_embeddings().weight
    name = next((n for n, p in model.named_parameters() if p is table), None)
    if name is None or name not in weights.state:
        raise ValueError(f"{weights.source} has no input embeddings named as the model's ({name}).")
    return weights.state[name]


def restore(model, masks: dict[str, torch.Tensor], weights: PretrainedWeights, share: float = 1.0) -> int:
    """Move ``model``'s entries where ``masks`` (``{parameter name: bool mask}``) is True to ``weights`` in place:
    ``share`` 1 copies them, a share in (0, 1) interpolates, ``(1 - share) x own + share x pretrained`` (the
    feed-forward mix, ``settings.REPAIR_FFN_MIX``). Returns how many entries moved. Parameters outside the encoder
    are left alone."""
    if not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}.")
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            m = masks.get(name)
            if m is None or name not in weights.state:
                continue
            src = weights.state[name].to(device=p.device, dtype=p.dtype)
            p[m] = src[m] if share == 1.0 else torch.lerp(p[m], src[m], float(share))
            n += int(m.sum())
    return n
