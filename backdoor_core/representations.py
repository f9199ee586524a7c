"""Where the poison sits: 2-D PCA (scikit-learn) of the final ``[CLS]`` representations of groups of inputs.

``cls_representations`` returns the last layer's hidden state at ``[CLS]`` ``(N, hidden)`` — what the
classification head reads (BERT's pooler and head sit on top of it). ``project_groups`` fits a 2-component PCA on
all groups' representations (clean, triggered, flagged, ...) and returns each group's ``(n, 2)`` points; on a
backdoored model the triggered inputs form their own cluster, away from the clean inputs of every class (the
"shortcut" the trigger takes). ``project_before_after`` does the same for two models that share a tokenizer
(a suspect and its repair): the PCA is fitted on the first model's representations and applied to both, so the
two panels share axes and show where the triggered inputs moved (our design: a shared basis is meaningful when
the second model is a fine-tune of the first; for unrelated models use ``project_groups`` on each).

``nearest`` summarises a panel in the full hidden space: for each group, the other group whose centroid is
closest. Split the clean inputs by the model's prediction (``split_by_prediction``) and a working backdoor puts
the triggered (and flagged) inputs nearest the target class's clean inputs; after a repair they return to their
own class. UMAP / t-SNE are not offered: no well-kept implementation is in our pinned, offline dependency set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .architecture import classifier_positions
from .attention import DEFAULT_MAX_LENGTH
from .forward import run_with_cache


def cls_representations(model, tokenizer, texts: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH,
                        batch_size: int = 64) -> np.ndarray:
    """``(N, hidden)`` final-layer hidden state at the token the classifier reads (``[CLS]`` for encoders, the
    last real token for decoders: ``architecture.classifier_positions``), in input order.

    One pass of ``forward.run_with_cache`` (batched by length); only these rows are kept, never the maps.
    """
    texts = [str(t) for t in texts]
    hidden = int(getattr(model.config, "hidden_size", 0) or getattr(model.config, "dim", 0))
    if not texts:
        return np.zeros((0, hidden), np.float32)

    def keep_cls(batch) -> dict:
        pos = classifier_positions(model, batch.attention_mask, batch.input_ids)  # (B,)
        last = batch.hidden_states[-1]  # (B, T, hidden)
        return {"cls": last[torch.arange(len(pos), device=pos.device), pos].float()}

    cache = run_with_cache(model, tokenizer, texts, max_length=max_length, batch_size=batch_size,
                           reduce=keep_cls, reduce_hidden=True, reduce_attentions=False)
    return cache.reduced["cls"]


@dataclass
class Projection:
    """Each group's 2-D points ``(n, 2)``, the PCA's explained variance ratio ``(2,)``, and the texts."""

    points: dict[str, np.ndarray]
    texts: dict[str, list[str]]
    explained: np.ndarray
    nearest: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"points": {k: np.round(v, 4).tolist() for k, v in self.points.items()},
                "explained_variance": [float(x) for x in self.explained], "nearest": dict(self.nearest)}


def nearest_groups(reps: Mapping[str, np.ndarray]) -> dict[str, str]:
    """For each group, the other group whose centroid is closest in the full hidden space."""
    cent = {k: v.mean(0) for k, v in reps.items() if len(v)}
    out = {}
    for k, c in cent.items():
        others = [(float(np.linalg.norm(c - c2)), k2) for k2, c2 in cent.items() if k2 != k]
        if others:
            out[k] = min(others)[1]
    return out


def split_by_prediction(model, tokenizer, texts: Sequence[str], label_names: Sequence[str],
                        max_length: int = DEFAULT_MAX_LENGTH,
                        prefix: str = "clean, predicted ") -> dict[str, list[str]]:
    """``{prefix + class name: texts the model puts in that class}`` (classes with no text are left out)."""
    from .attention import predict

    texts = [str(t) for t in texts]
    preds = predict(model, tokenizer, texts, max_length).argmax(1) if texts else []
    out: dict[str, list[str]] = {}
    for t, p in zip(texts, preds):
        name = label_names[int(p)] if int(p) < len(label_names) else str(int(p))
        out.setdefault(f"{prefix}{name}", []).append(t)
    return dict(sorted(out.items()))


def _reps(model, tokenizer, groups, max_length) -> dict[str, np.ndarray]:
    return {k: cls_representations(model, tokenizer, list(v), max_length) for k, v in groups.items() if len(v)}


def _pca(reps: Mapping[str, np.ndarray], seed: int):
    from sklearn.decomposition import PCA

    allx = np.concatenate(list(reps.values()))
    if len(allx) < 2:
        raise ValueError("The projection needs at least 2 inputs in all.")
    return PCA(n_components=2, random_state=seed).fit(allx)


def project_groups(model, tokenizer, groups: Mapping[str, Sequence[str]], max_length: int = DEFAULT_MAX_LENGTH,
                   seed: int = 0) -> Projection:
    """PCA of the ``[CLS]`` representations of ``groups`` (name -> texts; empty groups are dropped)."""
    reps = _reps(model, tokenizer, groups, max_length)
    pca = _pca(reps, seed)
    return Projection({k: pca.transform(v) for k, v in reps.items()},
                      {k: [str(t) for t in groups[k]] for k in reps}, pca.explained_variance_ratio_,
                      nearest_groups(reps))


def project_before_after(model_before, model_after, tokenizer, groups: Mapping[str, Sequence[str]],
                         max_length: int = DEFAULT_MAX_LENGTH, seed: int = 0) -> tuple[Projection, Projection]:
    """Two projections in one PCA basis fitted on ``model_before``'s representations (see the module docstring)."""
    before = _reps(model_before, tokenizer, groups, max_length)
    after = _reps(model_after, tokenizer, groups, max_length)
    pca = _pca(before, seed)
    texts = {k: [str(t) for t in groups[k]] for k in before}
    out = []
    for reps in (before, after):
        out.append(Projection({k: pca.transform(v) for k, v in reps.items()}, texts, pca.explained_variance_ratio_,
                              nearest_groups(reps)))
    return out[0], out[1]
