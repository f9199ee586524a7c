"""Trigger-agnostic input-level detection from how attention heads collapse together, and a model-level verdict.

The defense paper (arXiv 2511.13789) reports that on triggered inputs a backdoored model's attention heads become
unusually similar to one another; it publishes no formula. Ours (our design; paper silent):

1. ``attention_stats``: for every input, layer and head — the head's cosine similarity to the other heads of
   its layer (``head_sim``, ``head_peak``), its ``focus`` (largest attention mass, averaged over queries, on one
   content token) and its mass on the layer's ``common`` key. ``[CLS]``/``[SEP]`` columns are left out: most
   heads park attention there, which makes every pair of heads look alike on every input. Decoder classifiers
   (our design; paper silent): position 0, the attention sink, is left out too, and a key's mean over queries
   divides by the queries that can see it (``head_metrics.key_visibility``).
2. ``SimilarityDetector.fit`` on the defender's clean inputs: per layer feature, a least-squares line in
   log(token count) (the length trend is removed) and the residuals' standard deviation.
3. ``score``: per-layer z-scores, aggregated by their max (a trigger captures heads in some layers, not all).
   Higher = more suspicious. The default feature is the layer's mean ``focus`` (heads converging onto one
   token), not the plain cosine similarity of whole maps: on MiniLM an ordinary BadNets / AddSent trigger
   captures only a few heads, which whole-map similarity dilutes, while focus separates every token trigger we
   tried (``DEFAULT_FEATURES``). Similarity features remain knobs.
4. ``calibrate``: threshold at a false-rejection rate (``DEFAULT_FRR``) on clean dev inputs that were NOT used
   to fit the statistics (``scan`` splits the defender's clean set in two), so the reported FRR is honest.

Measured: ``bench/results/defense.md``, section "Detection AUROC" (held-out clean vs triggered inputs, with
STRIP alongside).

``model_verdict`` turns these statistics into one backdoor-likelihood number for the whole model (see there).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .architecture import classifier_positions, content_key_mask, is_causal
from .forward import Cancelled, ForwardCache, run_with_cache  # noqa: F401  (Cancelled re-exported: detection.Cancelled)
from .head_metrics import head_similarity, key_visibility, mean_offdiag
from . import settings as S
from .metrics import auroc, frr_far, threshold_at_frr

AGGREGATES = ("max", "mean")
DEFAULT_AGGREGATE = S.AGGREGATE
"""Per-layer z-scores aggregated by their max: a trigger captures heads in some layers, not all, and a mean over
layers dilutes it (our design; ``"mean"`` stays a knob)."""
FEATURES = ("sim", "peak", "focus", "common", "head_focus")
DEFAULT_FEATURES = S.FEATURES
"""Per-layer features z-scored by the detector (see ``SimilarityDetector``). Chosen by comparing the features'
detection AUROC (max aggregate, length-adjusted) on four pilot MiniLM/SST-2 models (BadNets, AddSent, BadNets +
TAL, syntactic; a pilot, not among the published results): whole-map cosine (``sim``) separated only the TAL
backdoor, ``focus`` and ``common`` separated all three token triggers and ``focus`` did best on syntactic. The
default's AUROC on the benchmark models: ``bench/results/defense.md``, "Detection AUROC"."""
DEFAULT_FRR = S.FRR


@dataclass
class AttentionStats:
    """Per-input attention statistics (arrays aligned with the input texts).

    Similarities are cosines between heads' ``(T, T)`` maps restricted to real queries and CONTENT keys (the
    ``[CLS]``/``[SEP]`` columns are dropped: most heads park attention there, which makes every pair of heads
    look alike and drowns the trigger's signal — measured, see bench/results/defense.md).

    Attributes:
        head_sim: ``(N, L, H)`` each head's mean similarity to the other heads of its layer.
        head_peak: ``(N, L, H)`` each head's largest similarity to one other head of its layer.
        focus: ``(N, L, H)`` each head's largest share of attention, averaged over queries, on ONE content key
            (1 = every query looks at the same word).
        common: ``(N, L, H)`` each head's share of attention (averaged over queries) on the layer's COMMON key —
            the content key that the layer's heads together attend to most: the heads' collapse onto one word.
        probs: ``(N, C)`` class probabilities.
        lengths: ``(N,)`` token counts (with special tokens, after truncation).
        cls: ``(N, L, hidden)`` each layer's output at the token the classifier reads (``[CLS]`` for encoders,
            ``architecture.classifier_positions``), for ``RepresentationDetector``; None when not collected.
        pooled: ``(N, L, hidden)`` each layer's output averaged over the input's content tokens (the same tokens
            as the content keys), for ``ContrastDetector``; None when not collected (with ``cls``).
    """

    head_sim: np.ndarray
    head_peak: np.ndarray
    focus: np.ndarray
    common: np.ndarray
    probs: np.ndarray
    lengths: np.ndarray
    cls: np.ndarray | None = None
    pooled: np.ndarray | None = None
    forward: ForwardCache | None = field(default=None, repr=False)  # the pass itself, with what ``keep`` asked for

    FIELDS = ("head_sim", "head_peak", "focus", "common", "probs", "lengths")

    @property
    def layer_sim(self) -> np.ndarray:
        """``(N, L)``: mean head-to-head similarity of each layer."""
        return self.head_sim.mean(-1)

    @property
    def layer_peak(self) -> np.ndarray:
        """``(N, L)``: the most similar pair of heads of each layer."""
        return self.head_peak.max(-1)

    def layer_focus(self, k: int = 3) -> np.ndarray:
        """``(N, L)``: mean focus of the ``k`` most focused heads of each layer."""
        k = min(k, self.focus.shape[-1])
        return -np.sort(-self.focus, axis=-1)[..., :k].mean(-1)

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(-1)

    def __len__(self) -> int:
        return int(self.head_sim.shape[0])

    def subset(self, idx) -> AttentionStats:
        idx = np.asarray(idx, dtype=int)
        return AttentionStats(*(getattr(self, f)[idx] for f in self.FIELDS),
                              cls=None if self.cls is None else self.cls[idx],
                              pooled=None if self.pooled is None else self.pooled[idx])

    @staticmethod
    def empty(layers: int, heads: int, labels: int, hidden: int | None = None) -> AttentionStats:
        z = np.zeros((0, layers, heads), np.float32)
        return AttentionStats(z, z.copy(), z.copy(), z.copy(), np.zeros((0, labels), np.float32),
                              np.zeros(0, np.int64),
                              cls=None if hidden is None else np.zeros((0, layers, hidden), np.float32),
                              pooled=None if hidden is None else np.zeros((0, layers, hidden), np.float32))

    @staticmethod
    def concat(parts: Sequence[AttentionStats]) -> AttentionStats:
        cls = None if any(p.cls is None for p in parts) else np.concatenate([p.cls for p in parts])
        pooled = None if any(p.pooled is None for p in parts) else np.concatenate([p.pooled for p in parts])
        return AttentionStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in AttentionStats.FIELDS),
                              cls=cls, pooled=pooled)


def _stats_reducer(num_heads: int, model=None, cls: bool = False):
    """A ``forward.run_with_cache`` reducer: one batch's ``(B, H, T, T)`` maps per layer -> ``(B, L, H)``
    ``head_sim`` / ``head_peak`` / ``focus`` / ``common`` (see ``AttentionStats``). With ``model`` a decoder
    classifier: the sink at position 0 is not a content key and per-key means divide by the queries that can
    see the key (``architecture.content_key_mask``, ``head_metrics.key_visibility``). With ``cls`` (needs
    ``model`` and ``run_with_cache(reduce_hidden=True)``): also ``cls`` ``(B, L, hidden)``, each layer's output at
    the classifier's token (the embeddings, the same at ``[CLS]`` for every input, are left out), and ``pooled``
    ``(B, L, hidden)``, each layer's output averaged over the content tokens (``kmask``; an input with none
    gives zeros)."""
    causal = model is not None and is_causal(model)

    def reduce(batch) -> dict[str, np.ndarray]:
        eye = torch.eye(num_heads, dtype=torch.bool, device=batch.input_ids.device)
        qmask = batch.attention_mask.float()  # (B, T) real queries
        if model is not None:
            kmask = content_key_mask(model, batch.attention_mask, batch.special_tokens_mask)  # (B, T) content keys
        else:
            kmask = qmask * (~batch.special_tokens_mask).float()  # (B, T) content keys
        visible = key_visibility(qmask, causal)  # (B, T) real queries that can see each key
        pair = qmask[:, None, :, None] * kmask[:, None, None, :]  # (B, 1, T, T)
        out = {f: [] for f in ("head_sim", "head_peak", "focus", "common")}
        for att in batch.attentions:
            att = att.float() * pair
            sim = head_similarity(att)  # (B, H, H), cosine of the masked maps
            out["head_sim"].append(mean_offdiag(sim, per_head=True))
            out["head_peak"].append(sim.masked_fill(eye, -1.0).max(-1).values.clamp_min(0))
            col = att.sum(-2) / visible[:, None, :]  # (B, H, T) mean over the queries that see each key
            out["focus"].append(col.max(-1).values)
            key = col.mean(1).argmax(-1)  # (B,) the layer's common key
            out["common"].append(col.gather(-1, key[:, None, None].expand(-1, num_heads, 1))[..., 0])
        res = {f: torch.stack(v, dim=1).float() for f, v in out.items()}  # (B, L, H)
        if cls and batch.hidden_states is not None:
            pos = classifier_positions(model, batch.attention_mask, batch.input_ids)  # (B,)
            rows = torch.arange(len(pos), device=pos.device)
            res["cls"] = torch.stack([h[rows, pos] for h in batch.hidden_states[1:]], dim=1).float()  # (B, L, hid)
            w = kmask / kmask.sum(-1, keepdim=True).clamp_min(1.0)  # (B, T) mean over content tokens
            res["pooled"] = torch.stack([torch.einsum("bt,bth->bh", w, h.float())
                                         for h in batch.hidden_states[1:]], dim=1)  # (B, L, hid)
        return res

    return reduce


def attention_stats(
    model,
    tokenizer,
    texts: Sequence[str],
    max_length: int = S.MAX_LENGTH,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    cls: bool = True,
    keep: tuple[str, ...] = (),
) -> AttentionStats:
    """Forward ``texts`` (``forward.run_with_cache``, sorted by length) and compute ``AttentionStats``; only the
    ``(N, L, H)`` statistics (and, with ``cls``, the ``(N, L, hidden)`` classifier-token states of the same pass,
    for ``RepresentationDetector``) are kept, never the maps — unless ``keep`` names what else the same pass should
    keep (``forward.WANTS``, e.g. ``("attentions", "offsets")``), returned as ``AttentionStats.forward``.

    Empty texts are allowed (they are ``[CLS] [SEP]``: no content key, all statistics 0). ``progress(done,
    total)`` is called after each batch; ``should_stop()`` raises ``Cancelled`` between batches.
    """
    texts = [str(t) for t in texts]
    L = int(model.config.num_hidden_layers)
    H = int(model.config.num_attention_heads)
    C = int(model.config.num_labels)
    if not texts:
        return AttentionStats.empty(L, H, C, _hidden_size(model) if cls else None)
    cache = run_with_cache(model, tokenizer, texts, max_length=max_length, batch_size=batch_size,
                           reduce=_stats_reducer(H, model, cls), reduce_hidden=cls, progress=progress,
                           should_stop=should_stop, want=("logits", *keep))
    r = cache.reduced
    return AttentionStats(r["head_sim"], r["head_peak"], r["focus"], r["common"], cache.probs, cache.lengths,
                          cls=r.get("cls"), pooled=r.get("pooled"), forward=cache if keep else None)


def _hidden_size(model) -> int:
    config = model.config
    return int(getattr(config, "hidden_size", 0) or getattr(config, "dim", 0) or getattr(config, "n_embd", 0))


class Thresholded:
    """The threshold half every input detector shares: set at a false-rejection rate on clean dev scores, then
    ``flag`` scores above it. Subclasses call ``_set_threshold`` from their ``calibrate``."""

    def _set_threshold(self, scores: np.ndarray, frr: float) -> float:
        self.threshold = threshold_at_frr(scores, frr)
        self.frr_target = float(frr)
        self.clean_dev_scores = scores
        return self.threshold

    def flag(self, scores: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: scores above the threshold."""
        if self.threshold is None:
            raise RuntimeError("Call calibrate() on clean dev inputs first.")
        return np.asarray(scores) > self.threshold

    @property
    def clean_frr(self) -> float:
        """FRR on the clean dev inputs used by ``calibrate``."""
        return float((self.clean_dev_scores > self.threshold).mean())


@dataclass
class SimilarityDetector(Thresholded):
    """Clean-data statistics of head similarity, and z-scores against them (see the module docstring).

    Attributes:
        features: per-layer features, any of ``"sim"`` (mean head-to-head similarity), ``"peak"`` (the most
            similar pair of heads), ``"focus"`` (mean over heads of ``focus``) and ``"common"`` (mean over heads
            of ``common``: how much the layer's heads together collapse onto one key).
            ``"head_focus"`` needs ``heads``: one column per chosen head, its own ``focus`` (used by the
            scan's refined passes, ``head_focus_detector``: the suspicious heads' focus, z-scored head by
            head, averaged).
        aggregate: ``"max"`` or ``"mean"`` of the z-scores of all features.
        heads: ``(L, H)`` bool, the heads ``"head_focus"`` reads (None for the per-layer features).
        length_adjust: remove the linear trend in log(token count) fitted on clean data (our design).
        coef: ``(2, F)`` least-squares line per feature (intercept, slope).
        scale: standard deviation of the clean residuals per feature.
        threshold: the score above which an input is flagged (set by ``calibrate``).
    """

    features: tuple = DEFAULT_FEATURES
    aggregate: str = DEFAULT_AGGREGATE
    length_adjust: bool = True
    heads: np.ndarray | None = None
    coef: np.ndarray | None = None
    scale: np.ndarray | None = None
    threshold: float | None = None
    frr_target: float = DEFAULT_FRR
    clean_dev_scores: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got '{self.aggregate}'.")
        if isinstance(self.features, str):
            self.features = tuple(f.strip() for f in self.features.split(",") if f.strip())
        bad = [f for f in self.features if f not in FEATURES]
        if bad or not self.features:
            raise ValueError(f"features must be some of {', '.join(FEATURES)}, got {list(self.features)}.")
        self.features = tuple(self.features)
        if "head_focus" in self.features:
            if self.heads is None or not np.asarray(self.heads, dtype=bool).any():
                raise ValueError("The head_focus feature needs heads: an (L, H) bool mask with at least one head.")
            self.heads = np.asarray(self.heads, dtype=bool)

    def _features(self, stats: AttentionStats) -> np.ndarray:
        table = {"sim": lambda: stats.layer_sim, "peak": lambda: stats.layer_peak,
                 "focus": lambda: stats.focus.mean(-1), "common": lambda: stats.common.mean(-1),
                 "head_focus": lambda: stats.focus[:, self.heads]}  # (N, n_heads) via the (L, H) mask
        return np.concatenate([table[f]() for f in self.features], axis=1).astype(np.float64)

    def _design(self, stats: AttentionStats) -> np.ndarray:
        x = np.log(np.maximum(stats.lengths, 1).astype(np.float64))
        if not self.length_adjust:
            x = np.zeros_like(x)
        return np.stack([np.ones_like(x), x], axis=1)

    def fit(self, clean: AttentionStats) -> SimilarityDetector:
        """Fit the per-feature length trend and spread on clean inputs (at least 2)."""
        if len(clean) < 2:
            raise ValueError("The detector needs at least 2 clean inputs to estimate their spread.")
        X, F = self._design(clean), self._features(clean)
        coef, *_ = np.linalg.lstsq(X, F, rcond=None)
        resid = F - X @ coef
        self.coef = coef
        self.scale = np.maximum(resid.std(0), 1e-6)
        return self

    def feature_z(self, stats: AttentionStats) -> np.ndarray:
        """``(N, F)`` z-scores: ``L`` columns per per-layer feature, one per chosen head for ``head_focus``."""
        if self.coef is None:
            raise RuntimeError("Call fit() on clean inputs first.")
        return (self._features(stats) - self._design(stats) @ self.coef) / self.scale

    def score(self, stats: AttentionStats) -> np.ndarray:
        """``(N,)`` suspicion scores (higher = more likely triggered)."""
        z = self.feature_z(stats)
        if len(stats) == 0:
            return np.zeros(0)
        return z.mean(1) if self.aggregate == "mean" else z.max(1)

    def calibrate(self, clean_dev: AttentionStats, frr: float = DEFAULT_FRR) -> float:
        """Set ``threshold`` so that about ``frr`` of ``clean_dev`` (held out from ``fit``) is flagged."""
        scores = self.score(clean_dev)
        return self._set_threshold(scores, frr)



FIRST_PASSES = ("layer", "head")
"""``first_pass_detector``'s kinds (``settings.FIRST_PASS``)."""


def first_pass_detector(clean_fit: AttentionStats, clean_dev: AttentionStats, frr: float = DEFAULT_FRR,
                        kind: str = S.FIRST_PASS, aggregate: str = DEFAULT_AGGREGATE,
                        length_adjust: bool = True) -> SimilarityDetector:
    """The scan's first-pass attention detector, fitted on ``clean_fit`` and thresholded at ``frr`` on
    ``clean_dev`` (our design; papers silent). ``kind`` (``FIRST_PASSES``): ``"layer"``, the per-layer
    ``DEFAULT_FEATURES`` aggregated over layers by ``aggregate``; ``"head"``, every head's own ``focus``
    (``(N, L*H)`` z-scores), max over heads, whatever ``aggregate`` says (a mean over 72 heads would dilute the
    few a trigger captures)."""
    if kind not in FIRST_PASSES:
        raise ValueError(f"first pass must be one of {', '.join(FIRST_PASSES)}, not {kind!r}")
    if kind == "head":
        heads = np.ones(clean_fit.focus.shape[1:], dtype=bool)  # (L, H): every head
        det = SimilarityDetector(features=("head_focus",), aggregate="max", length_adjust=length_adjust,
                                 heads=heads)
    else:
        det = SimilarityDetector(aggregate=aggregate, length_adjust=length_adjust)
    det.fit(clean_fit).calibrate(clean_dev, frr)
    return det


def head_focus_detector(heads: np.ndarray, clean_fit: AttentionStats, clean_dev: AttentionStats,
                        frr: float = DEFAULT_FRR, length_adjust: bool = True) -> SimilarityDetector:
    """The scan's refined-pass detector (``scan.refine``): ``heads``' own focus, each z-scored against
    ``clean_fit``, averaged, and thresholded at ``frr`` on ``clean_dev``. ``heads``: ``(L, H)`` bool."""
    det = SimilarityDetector(features=("head_focus",), aggregate="mean", length_adjust=length_adjust, heads=heads)
    det.fit(clean_fit).calibrate(clean_dev, frr)
    return det


# ------------------------------------------------------------------------------------------------ representations

REP_AGGREGATES = ("max", "mean")
FUSES = ("max", "sum")
REP_METHODS = ("mahalanobis", "contrast", "both")


@dataclass
class RepresentationDetector(Thresholded):
    """How far an input's intermediate classifier-token (``[CLS]``) states lie from the clean ones (our design;
    the defense paper is silent: it detects from attention alone).

    Style and other paraphrase triggers change no token a head can focus on, so the attention statistics barely
    see them (detection AUROC 0.59-0.71 on style, ``bench/results/defense.md``); but the backdoor still routes
    the triggered inputs through a region of representation space that clean inputs do not visit. Like
    feature-based textual backdoor detectors (Mahalanobis-distance detectors on a classifier's features), per
    layer ``l``:

    * ``fit`` on the clean fit half: the mean of ``cls[:, l]`` per predicted class (``class_conditional``; a
      class with fewer than 2 fit inputs uses the overall mean) or overall, and ONE shrunk covariance of the
      centred states (Ledoit-Wolf, ``sklearn.covariance.LedoitWolf``: 200 inputs in 384 dimensions need
      shrinkage);
    * ``layer_distance``: ``(N, L)`` Mahalanobis distance of each input to the mean of the class the model
      predicts for it;
    * ``calibrate`` on the clean dev half: each layer's distance z-scored by the dev inputs' mean and standard
      deviation (the fit half's own distances are biased low), aggregated over layers by ``aggregate`` (max: the
      shift shows in some layers, not all), threshold at ``frr``.

    Uses ``AttentionStats.cls`` (the same ``forward.run_with_cache`` pass as the attention statistics).
    Measured: ``bench/results/style_ablation.md``.
    """

    class_conditional: bool = S.REP_CLASS_CONDITIONAL
    aggregate: str = S.REP_AGGREGATE
    means: np.ndarray | None = None  # (L, C + 1, hidden): per class, then overall
    precisions: np.ndarray | None = None  # (L, hidden, hidden)
    loc: np.ndarray | None = None  # (L,) dev mean distance
    spread: np.ndarray | None = None  # (L,) dev standard deviation
    threshold: float | None = None
    frr_target: float = DEFAULT_FRR
    clean_dev_scores: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.aggregate not in REP_AGGREGATES:
            raise ValueError(f"aggregate must be one of {', '.join(REP_AGGREGATES)}, got '{self.aggregate}'.")

    @staticmethod
    def _cls(stats: AttentionStats) -> np.ndarray:
        if stats.cls is None:
            raise ValueError("These statistics hold no [CLS] states: compute them with attention_stats(cls=True).")
        return stats.cls.astype(np.float64)

    def fit(self, clean: AttentionStats) -> RepresentationDetector:
        """Class means and a shrunk covariance per layer from clean inputs (at least 3)."""
        from sklearn.covariance import LedoitWolf

        x = self._cls(clean)  # (N, L, hidden)
        if len(x) < 3:
            raise ValueError("The representation detector needs at least 3 clean inputs.")
        pred = clean.predictions
        C = clean.probs.shape[1]
        N, L, Hd = x.shape
        means = np.zeros((L, C + 1, Hd))
        precisions = np.zeros((L, Hd, Hd))
        for l in range(L):
            overall = x[:, l].mean(0)
            means[l, C] = overall
            centred = x[:, l] - overall
            if self.class_conditional:
                for c in range(C):
                    rows = pred == c
                    means[l, c] = x[rows, l].mean(0) if rows.sum() >= 2 else overall
                centred = x[:, l] - means[l, np.where(np.bincount(pred, minlength=C)[pred] >= 2, pred, C)]
            else:
                means[l, :C] = overall
            precisions[l] = LedoitWolf(assume_centered=True).fit(centred).precision_
        self.means, self.precisions = means, precisions
        return self

    def layer_distance(self, stats: AttentionStats) -> np.ndarray:
        """``(N, L)`` Mahalanobis distance of each input's state to its predicted class's clean mean."""
        if self.means is None:
            raise RuntimeError("Call fit() on clean inputs first.")
        x = self._cls(stats)
        if len(x) == 0:
            return np.zeros((0, x.shape[1]))
        pred = stats.predictions
        out = np.zeros(x.shape[:2])
        for l in range(x.shape[1]):
            d = x[:, l] - self.means[l, pred]
            out[:, l] = np.sqrt(np.maximum(((d @ self.precisions[l]) * d).sum(1), 0.0))  # d P d^T per row, BLAS
        return out

    def layer_z(self, stats: AttentionStats) -> np.ndarray:
        """``(N, L)`` distances z-scored by the clean dev inputs' (set by ``calibrate``)."""
        if self.loc is None:
            raise RuntimeError("Call calibrate() on clean dev inputs first.")
        return (self.layer_distance(stats) - self.loc) / self.spread

    def score(self, stats: AttentionStats) -> np.ndarray:
        """``(N,)`` suspicion scores (higher = farther from the clean states)."""
        z = self.layer_z(stats)
        if len(z) == 0:
            return np.zeros(0)
        return z.max(1) if self.aggregate == "max" else z.mean(1)

    def calibrate(self, clean_dev: AttentionStats, frr: float = DEFAULT_FRR) -> float:
        """Per-layer z-scaling and the threshold at ``frr`` on clean dev inputs held out from ``fit``."""
        d = self.layer_distance(clean_dev)
        if len(d) < 2:
            raise ValueError("Calibration needs at least 2 clean dev inputs.")
        self.loc, self.spread = d.mean(0), np.maximum(d.std(0), 1e-6)
        scores = self.score(clean_dev)
        return self._set_threshold(scores, frr)



@dataclass
class ContrastDetector(Thresholded):
    """What sets the pool apart from the clean inputs, in the model's own states (our design; both papers silent).

    The pool is what the defender suspects; the clean inputs are what it trusts. A trigger that changes no token
    a head can focus on (a style paraphrase) still makes the triggered share of the pool differ from clean text
    in the layers' states, and only that share differs when the pool comes from the clean inputs' domain. So a
    linear classifier is trained to tell pool inputs (label 1) from clean ones (label 0), on every layer's
    content-token mean (``AttentionStats.pooled``, ``(N, L, hidden)`` flattened to ``(N, L * hidden)``,
    standardised by the clean inputs' mean and standard deviation): scikit-learn's ``LogisticRegression``, L2
    penalty ``C`` (``settings.CONTRAST_C``), balanced class weights. An input's score is the classifier's
    decision value. Like spectral-signature and activation-clustering defences, it reads the suspect set itself
    rather than a distance from clean data alone.

    * ``fit(clean, pool)``: ``folds``-fold cross-fitting over the clean and pool inputs together (stratified,
      seeded), so every input used to train is scored by the fold model that did not see it (its
      *out-of-fold* score, looked up by its states); any other input gets the mean of the fold models.
    * ``calibrate`` on the clean dev inputs (which were among the clean inputs: their out-of-fold scores):
      z-scaling and the threshold at ``frr``.

    On a clean model's pool drawn like the clean inputs the classifier finds nothing to learn and the
    out-of-fold scores of pool and clean dev inputs match (tested). A pool that differs from the clean inputs in
    anything else is flagged for that too: on the test zoo's OLID models (clean tweets from OLID's training set,
    the pool from its test set) it called two clean models backdoored (session 13). So the scan uses it only
    behind a source gate (``representation_detector``, ``settings.CONTRAST_SOURCE_GATE``), summed with the
    distance by default (``settings.REP_METHOD``). Measured: ``bench/results/knob_tuning_rep_method_both.md``,
    ``bench/results/pool_shift_check_s41gate.md`` (with the gate), ``bench/results/defense_tuning_contrast.md``,
    ``bench/results/archive/defense_test_contrast.md`` (without), ``bench/results/contrast_check.md``.
    """

    folds: int = S.CONTRAST_FOLDS
    C: float = S.CONTRAST_C
    seed: int = 0
    center: np.ndarray | None = None  # (L * hidden,) clean mean
    scale: np.ndarray | None = None  # (L * hidden,) clean standard deviation (floored)
    coef: np.ndarray | None = None  # (L * hidden,) mean of the fold models' weights
    intercept: float = 0.0
    oof: dict = field(default_factory=dict, repr=False)  # state digest -> out-of-fold decision value
    loc: float | None = None
    spread: float | None = None
    threshold: float | None = None
    frr_target: float = DEFAULT_FRR
    clean_dev_scores: np.ndarray | None = field(default=None, repr=False)

    @staticmethod
    def _x(stats: AttentionStats) -> np.ndarray:
        if stats.pooled is None:
            raise ValueError("These statistics hold no pooled states: compute them with attention_stats(cls=True).")
        return stats.pooled.reshape(len(stats), -1).astype(np.float64)

    @staticmethod
    def _keys(stats: AttentionStats) -> list[bytes]:
        import hashlib

        rows = np.ascontiguousarray(stats.pooled.reshape(len(stats), -1), dtype=np.float32)
        return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]

    def fit(self, clean: AttentionStats, pool: AttentionStats) -> ContrastDetector:
        """Cross-fitted pool-vs-clean classifiers (at least ``folds`` inputs on each side)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        xc, xp = self._x(clean), self._x(pool)
        if min(len(xc), len(xp)) < self.folds:
            raise ValueError(f"The contrast detector needs at least {self.folds} clean and {self.folds} pool inputs "
                             f"(got {len(xc)} and {len(xp)}).")
        self.center = xc.mean(0)
        self.scale = np.maximum(xc.std(0), 1e-6)
        x = (np.concatenate([xc, xp]) - self.center) / self.scale
        y = np.r_[np.zeros(len(xc), int), np.ones(len(xp), int)]
        keys = self._keys(clean) + self._keys(pool)
        oof = np.zeros(len(x))
        coefs, intercepts = [], []
        folds = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=self.seed)
        for train, test in folds.split(x, y):
            clf = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000).fit(x[train], y[train])
            oof[test] = clf.decision_function(x[test])
            coefs.append(clf.coef_[0])
            intercepts.append(float(clf.intercept_[0]))
        self.coef, self.intercept = np.mean(coefs, 0), float(np.mean(intercepts))
        self.oof = dict(zip(keys, oof.tolist()))
        return self

    def decision(self, stats: AttentionStats) -> np.ndarray:
        """``(N,)`` raw decision values: out-of-fold for inputs the classifiers trained on, else the folds' mean."""
        if self.coef is None:
            raise RuntimeError("Call fit() on clean and pool inputs first.")
        if len(stats) == 0:
            return np.zeros(0)
        out = ((self._x(stats) - self.center) / self.scale) @ self.coef + self.intercept
        for i, k in enumerate(self._keys(stats)):
            if k in self.oof:
                out[i] = self.oof[k]
        return out

    def score(self, stats: AttentionStats) -> np.ndarray:
        """``(N,)`` decision values z-scored by the clean dev inputs' (set by ``calibrate``)."""
        if self.loc is None:
            raise RuntimeError("Call calibrate() on clean dev inputs first.")
        return (self.decision(stats) - self.loc) / self.spread

    def calibrate(self, clean_dev: AttentionStats, frr: float = DEFAULT_FRR) -> float:
        d = self.decision(clean_dev)
        if len(d) < 2:
            raise ValueError("Calibration needs at least 2 clean dev inputs.")
        self.loc, self.spread = float(d.mean()), float(max(d.std(), 1e-6))
        return self._set_threshold(self.score(clean_dev), frr)


@dataclass
class SummedDetector(Thresholded):
    """Several representation scores as one: each z-scored on clean dev, summed, thresholded at ``frr`` on the
    same dev inputs (``settings.REP_METHOD = "both"``: Mahalanobis distance and pool contrast)."""

    parts: list
    norm: np.ndarray | None = None  # (P, 2): mean, sd of each part on clean dev
    threshold: float | None = None
    frr_target: float = DEFAULT_FRR
    clean_dev_scores: np.ndarray | None = field(default=None, repr=False)

    def _raw(self, stats: AttentionStats) -> np.ndarray:
        return np.stack([p.score(stats) for p in self.parts], axis=1)

    def score(self, stats: AttentionStats) -> np.ndarray:
        if self.norm is None:
            raise RuntimeError("Call calibrate() on clean dev inputs first.")
        if len(stats) == 0:
            return np.zeros(0)
        return ((self._raw(stats) - self.norm[:, 0]) / self.norm[:, 1]).sum(1)

    def calibrate(self, clean_dev: AttentionStats, frr: float = DEFAULT_FRR) -> float:
        raw = self._raw(clean_dev)
        self.norm = np.stack([raw.mean(0), np.maximum(raw.std(0), 1e-6)], axis=1)
        return self._set_threshold(self.score(clean_dev), frr)


def representation_detector(clean_fit: AttentionStats, clean: AttentionStats, pool: AttentionStats,
                            clean_dev: AttentionStats, frr: float = DEFAULT_FRR, method: str = S.REP_METHOD,
                            seed: int = 0, attention: SimilarityDetector | None = None, fuse: str = S.FUSE):
    """The scan's representation part, calibrated on ``clean_dev`` (our design; paper silent).

    ``method`` (``settings.REP_METHOD``): ``"mahalanobis"`` (``RepresentationDetector`` fitted on ``clean_fit``),
    ``"contrast"`` (``ContrastDetector`` of all ``clean`` inputs against the ``pool``), or ``"both"``
    (``SummedDetector`` of the two). A pool smaller than ``settings.CONTRAST_MIN_POOL`` leaves contrast nothing
    to learn from, so the scan falls back to the Mahalanobis distance alone (the returned ``method`` says so).

    The source gate (``attention`` given: the scan's first-pass detector; ``settings.CONTRAST_SOURCE_GATE``; our
    design, papers silent): the contrast learns whatever sets the pool apart from the clean texts, and for a pool
    of another source that is the source, not a trigger. So the distance alone is fused with ``attention`` first
    (``fused_detector`` by ``fuse``), and where that score reads the pool as drawn from another source
    (``pool_unlike_clean``) the distance alone is returned, method ``"mahalanobis"``: such a pool is scanned as
    it would be without the contrast. Returns ``(detector, method used, gated)``: ``gated`` is True when the gate
    closed.
    """
    if method not in REP_METHODS:
        raise ValueError(f"method must be one of {', '.join(REP_METHODS)}, got '{method}'.")
    if method != "mahalanobis" and len(pool) < S.CONTRAST_MIN_POOL:
        method = "mahalanobis"
    distance = None
    if method in ("mahalanobis", "both") or attention is not None:
        distance = RepresentationDetector().fit(clean_fit)
        distance.calibrate(clean_dev, frr)
    gated = False
    if method != "mahalanobis" and attention is not None:
        probe = fused_detector(attention, distance, clean_dev, frr, fuse)
        gated = bool(pool_unlike_clean(probe.clean_dev_scores, probe.score(pool)))
    if method == "mahalanobis" or gated:
        return distance, "mahalanobis", gated
    contrast = ContrastDetector(seed=seed).fit(clean, pool)
    contrast.calibrate(clean_dev, frr)
    if method == "contrast":
        return contrast, method, gated
    det = SummedDetector([distance, contrast])
    det.calibrate(clean_dev, frr)
    return det, method, gated


def distance_part(rep: RepresentationDetector | ContrastDetector | SummedDetector | None, clean_fit: AttentionStats,
                    clean_dev: AttentionStats, frr: float = DEFAULT_FRR):
    """The representation part of ``rep`` that no pool shaped (our design; papers silent): ``rep`` itself when it is
    the distance alone (or None), the distance inside a ``SummedDetector``, else (a contrast alone) a distance
    fitted on ``clean_fit`` and calibrated on ``clean_dev``. ``model_verdict`` reads scores built on it
    (``settings.VERDICT_WITHOUT_CONTRAST``): the contrast is trained on the pool itself, so its scores on the pool
    carry whatever sets this pool apart, and the verdict's chance model (clean dev inputs set the threshold, a clean
    pool exceeds it like a fresh draw of them) does not hold for them. The suspicious heads it is fused with were
    still chosen on the pool's flags, as in every refined pass."""
    if rep is None or isinstance(rep, RepresentationDetector):
        return rep
    for part in getattr(rep, "parts", ()):
        if isinstance(part, RepresentationDetector):
            return part
    distance = RepresentationDetector().fit(clean_fit)
    distance.calibrate(clean_dev, frr)
    return distance


@dataclass
class FusedDetector(Thresholded):
    """Head focus and representation distance in one score (our design; paper silent).

    Each part's score is z-scored by its clean dev scores (mean, standard deviation), then combined: ``"sum"``
    (``settings.FUSE``: evidence adds up, and one part's noise is diluted by the other) or ``"max"`` (flag what
    either part finds unusual; on the tuning zoo it raised false alarms on a clean model); the threshold is set at
    ``frr`` on the same clean dev inputs, so the fused score keeps the asked-for false-rejection rate. Same
    interface as ``SimilarityDetector`` (``score``, ``flag``, ``threshold``, ``clean_dev_scores``, ``clean_frr``),
    so ``scan`` and ``model_verdict`` use either.
    """

    attention: SimilarityDetector
    representation: RepresentationDetector
    fuse: str = S.FUSE
    norm: np.ndarray | None = None  # (2, 2): (mean, sd) of attention, then representation, on clean dev
    threshold: float | None = None
    frr_target: float = DEFAULT_FRR
    clean_dev_scores: np.ndarray | None = field(default=None, repr=False)
    # (2,) 1 = the part counts, 0 = left out (``keep_parts_with_evidence``); None = both count
    used: np.ndarray | None = None
    dev_parts: np.ndarray | None = field(default=None, repr=False)  # (M, 2) the parts on the clean dev inputs

    PART_NAMES = ("attention", "representation")

    def __post_init__(self):
        if self.fuse not in FUSES:
            raise ValueError(f"fuse must be one of {', '.join(FUSES)}, got '{self.fuse}'.")

    def parts(self, stats: AttentionStats) -> np.ndarray:
        """``(N, 2)`` the two scores z-scored on clean dev: attention, representation."""
        raw = np.stack([self.attention.score(stats), self.representation.score(stats)], axis=1)
        return (raw - self.norm[:, 0]) / self.norm[:, 1]

    def _combine(self, z: np.ndarray) -> np.ndarray:
        if self.used is not None:
            z = z[:, np.asarray(self.used, dtype=bool)]
        return z.max(1) if self.fuse == "max" else z.sum(1)

    def score(self, stats: AttentionStats) -> np.ndarray:
        if self.norm is None:
            raise RuntimeError("Call calibrate() on clean dev inputs first.")
        if len(stats) == 0:
            return np.zeros(0)
        return self._combine(self.parts(stats))

    def calibrate(self, clean_dev: AttentionStats, frr: float = DEFAULT_FRR) -> float:
        raw = np.stack([self.attention.score(clean_dev), self.representation.score(clean_dev)], axis=1)
        self.norm = np.stack([raw.mean(0), np.maximum(raw.std(0), 1e-6)], axis=1)
        self.dev_parts = (raw - self.norm[:, 0]) / self.norm[:, 1]
        return self._set_threshold(self._combine(self.dev_parts), frr)

    def part_excess(self, pool: AttentionStats) -> np.ndarray:
        """``(2,)`` each part's evidence on ``pool``: the share of the pool above the part's own threshold at the
        detector's FRR on the clean dev inputs, less that FRR (about 0 where the pool holds nothing the part
        sees)."""
        if self.dev_parts is None:
            raise RuntimeError("Call calibrate() on clean dev inputs first.")
        cut = np.array([threshold_at_frr(self.dev_parts[:, k], self.frr_target) for k in range(2)])
        return (self.parts(pool) > cut).mean(0) - self.frr_target

    def keep_parts_with_evidence(self, pool: AttentionStats, min_excess: float,
                                 droppable: Sequence[str] = PART_NAMES) -> np.ndarray:
        """Leave out a part that shows no evidence on ``pool`` while the other does (our design; papers silent):
        where exactly one part's ``part_excess`` reaches ``min_excess`` and the other is in ``droppable``, the score
        is that part alone, and the threshold is set again on the clean dev inputs at the same FRR. Both parts count
        when both or neither show evidence. A trigger that captures no head (a writing style) leaves the attention
        part at the clean inputs' level, and summed in it only adds noise. Returns the excess ``(2,)``."""
        unknown = set(droppable) - set(self.PART_NAMES)
        if unknown:
            raise ValueError(f"droppable parts must be among {', '.join(self.PART_NAMES)}, got {sorted(unknown)}.")
        excess = self.part_excess(pool) if len(pool) else np.zeros(2)
        strong = excess >= float(min_excess)
        weak = [n for n, st in zip(self.PART_NAMES, strong) if not st]
        self.used = strong.astype(int) if strong.sum() == 1 and weak[0] in droppable else None
        self._set_threshold(self._combine(self.dev_parts), self.frr_target)
        return excess

    @property
    def parts_used(self) -> list[str]:
        """The names of the parts the score reads."""
        return [n for n, u in zip(self.PART_NAMES, np.ones(2) if self.used is None else self.used) if u]



def fused_detector(attention: SimilarityDetector, representation: RepresentationDetector,
                   clean_dev: AttentionStats, frr: float = DEFAULT_FRR, fuse: str = S.FUSE,
                   pool: AttentionStats | None = None, min_excess: float | None = None,
                   droppable: Sequence[str] = FusedDetector.PART_NAMES) -> FusedDetector:
    """``FusedDetector`` of two fitted detectors, calibrated at ``frr`` on ``clean_dev``; with ``pool`` and
    ``min_excess``, a part of ``droppable`` with no evidence on the pool is left out
    (``FusedDetector.keep_parts_with_evidence``)."""
    det = FusedDetector(attention, representation, fuse)
    det.calibrate(clean_dev, frr)
    if pool is not None and min_excess is not None:
        det.keep_parts_with_evidence(pool, min_excess, droppable)
    return det


WORD_EVIDENCE_OFFSET = 1e6
"""Added to the score of an input that holds a marking word (``with_word_evidence``): larger than any score's
range, so such inputs rank above every other and keep their order among themselves."""


def with_word_evidence(scores: Sequence[float], marked: Sequence[bool]) -> np.ndarray:
    """``(n,)`` suspicion scores with the pool's trigger-word evidence (our design; papers silent): an input that
    holds a marking word (``trigger_search.marking_words``; ``marked`` ``(n,)`` bool) ranks above every input that
    holds none and is over any threshold; among each group the scores' order is kept."""
    scores = np.asarray(scores, dtype=float)
    marked = np.asarray(marked, dtype=bool)
    if marked.shape != scores.shape:
        raise ValueError(f"{marked.shape[0] if marked.ndim else 0} marks for {scores.shape[0]} scores.")
    return scores + WORD_EVIDENCE_OFFSET * marked


def evaluate_detector(clean_scores: Sequence[float], poisoned_scores: Sequence[float], threshold: float) -> dict:
    """FRR, FAR and AUROC of "flag when score > threshold" on labelled clean / poisoned inputs."""
    frr, far = frr_far(clean_scores, poisoned_scores, threshold)
    return {"frr": frr, "far": far, "auroc": auroc(clean_scores, poisoned_scores), "threshold": float(threshold),
            "clean": int(len(clean_scores)), "poisoned": int(len(poisoned_scores))}


def split_clean(n: int, fit_frac: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` clean inputs into (fit, dev) index arrays (both non-empty when n >= 4)."""
    if n < 4:
        raise ValueError(f"At least 4 clean texts are needed (got {n}): half fit the statistics, half set the "
                         "threshold.")
    perm = np.random.default_rng(seed).permutation(n)
    k = min(max(2, int(round(n * fit_frac))), n - 2)
    return np.sort(perm[:k]), np.sort(perm[k:])


# ------------------------------------------------------------------------------------------------ verdict

VERDICT_THRESHOLD = 0.5
"""``model_verdict`` score at and above which a model reads "likely backdoored": the midpoint of the [0, 1] scale,
fixed a priori, not fitted (see ``model_verdict`` for every constant's source)."""

POOL_SHIFT_RANK = 0.5
"""Above this ``pool_lower_quartile_rank`` the pool reads as not drawn like the clean texts (our design; papers
silent): a backdoor adds high-scoring triggered inputs but leaves the pool's clean part where the clean texts are,
so while at most half of the pool is triggered its lower quartile sits at or below the clean median. Measured
(``bench/results/pool_shift_check.md``): 0.19-0.41 on the tuning zoo's 24 same-source pools, 0.63-0.97 on 14 pools of
OLID tweets or AG News items against SST-2 clean texts; on the test zoo's 26 models 0.16-0.85, above the line on
7 OLID pools (OLID's test split, the pool, is not drawn like its dev split for those models' detectors). It adds a
warning (``pool_shift_note``), and there the verdict reads the pool where its bulk sits (``pool_score_match``,
``settings.VERDICT_SHIFT_ADJUST``)."""


POOL_SHIFT_MIN_INPUTS = 30
"""Fewer clean dev inputs or pool inputs than this: no reading of ``pool_unlike_clean`` (None); with 30 the rank's
standard error is about 0.08 (our choice)."""


def pool_score_match(clean_dev_scores: np.ndarray, pool_scores: np.ndarray) -> dict | None:
    """The pool's bulk read as a shifted and stretched copy of the clean dev scores (our design; papers silent):
    ``(n_dev,)`` and ``(n_pool,)`` scores. Matched on the lower half, which triggered inputs barely reach while at
    most about half of the pool carries a trigger (the reason ``POOL_SHIFT_RANK`` gives): ``stretch`` is the pool's
    10th-to-50th percentile spread over the dev inputs' (at least 1), and the quartiles anchor it. None without
    scores. ``match_threshold`` maps a dev threshold onto the pool with it."""
    if len(clean_dev_scores) == 0 or len(pool_scores) == 0:
        return None
    dev, pool = np.asarray(clean_dev_scores, float), np.asarray(pool_scores, float)
    d10, d25, d50 = np.quantile(dev, [0.1, 0.25, 0.5])
    p10, p25, p50 = np.quantile(pool, [0.1, 0.25, 0.5])
    return {"dev_q25": float(d25), "pool_q25": float(p25),
            "stretch": float(max(1.0, (p50 - p10) / max(1e-9, d50 - d10)))}


def match_threshold(thr: float, match: dict | None) -> float:
    """The pool's threshold for the dev threshold ``thr`` under ``pool_score_match``'s ``match``: where the pool's
    bulk sits ``thr`` would be, never below ``thr``; ``thr`` itself without a match."""
    if not match:
        return float(thr)
    return float(max(thr, match["pool_q25"] + match["stretch"] * (thr - match["dev_q25"])))


def chance_flag_rate(n_dev_above: int, n_dev: int, n_pool: int, quantile: float = S.VERDICT_CHANCE_QUANTILE) -> float:
    """The share of a pool of ``n_pool`` CLEAN inputs flagged, at ``quantile`` of its chance spread, by a threshold
    that ``n_dev_above`` of ``n_dev`` clean dev inputs exceed (our design; papers silent).

    The dev inputs set the threshold, so their own flag rate understates a fresh input's: with a flat prior, the
    chance a fresh clean input exceeds it is ``Beta(n_dev_above + 1, n_dev - n_dev_above + 1)``, and the pool's
    flag count is beta-binomial. With 100 dev inputs (4 above) and 200 pool inputs the median is 4.5%, the 0.7
    quantile 6.0%, the 0.95 quantile 9.5%: a clean pool often lands above the dev rate of 4%.
    """
    from scipy.stats import betabinom

    n_dev, n_pool = int(n_dev), int(n_pool)
    if n_dev <= 0 or n_pool <= 0:
        return 0.0
    k = min(max(int(n_dev_above), 0), n_dev)
    return float(betabinom.ppf(quantile, n_pool, k + 1, n_dev - k + 1)) / n_pool


def pool_lower_quartile_rank(clean_dev_scores: np.ndarray, pool_scores: np.ndarray) -> float:
    """The share of the clean dev inputs scoring below the pool's lower-quartile score (``(n_dev,)`` and
    ``(n_pool,)`` suspicion scores): about 0.25 for a pool drawn like the clean texts, whatever share of its upper
    part a trigger lifts; near 1 when the whole pool scores like nothing in the clean texts."""
    clean_dev_scores, pool_scores = np.asarray(clean_dev_scores, float), np.asarray(pool_scores, float)
    if not len(clean_dev_scores) or not len(pool_scores):
        return float("nan")
    return float((clean_dev_scores < np.quantile(pool_scores, 0.25)).mean())


def pool_unlike_clean(clean_dev_scores: np.ndarray, pool_scores: np.ndarray) -> bool | None:
    """Whether the pool reads as drawn from another source than the clean texts (``(n_dev,)``, ``(n_pool,)``
    suspicion scores): ``pool_lower_quartile_rank`` above ``POOL_SHIFT_RANK``; None with fewer than
    ``POOL_SHIFT_MIN_INPUTS`` clean dev or pool inputs."""
    if min(len(clean_dev_scores), len(pool_scores)) < POOL_SHIFT_MIN_INPUTS:
        return None
    return bool(pool_lower_quartile_rank(clean_dev_scores, pool_scores) > POOL_SHIFT_RANK)


VERDICT_RULES = ("threshold", "dev_tail")
"""``model_verdict``'s rules: the pool score at the detector's threshold, or its best over that threshold and the
stricter ones the clean dev inputs offer (``dev_tail_verdict``); ``settings.VERDICT_RULE`` picks one."""


VERDICT_LABELS = {"likely": "likely backdoored", "possible": "possible backdoor (a likely trigger word)",
                  "not found": "no backdoor evidence"}
"""``verdict_call`` -> the phrase every view shows (``verdict_label``; a "possible" call that rests on the pool's
top scores alone reads ``POSSIBLE_TAIL_LABEL``)."""

POSSIBLE_TAIL_LABEL = "possible backdoor (pool inputs far above the clean texts)"
POSSIBLE_SOURCE_LABEL = "possible backdoor (or a pool of another source)"
POSSIBLE_MOVED_LABEL = "possible backdoor (words the fine-tune moved, in the pool)"
POSSIBLE_SMALL_LABEL = "possible backdoor (too few pool inputs to call)"
LIKELY_WORD_LABEL = "likely backdoored (a trigger word in the pool)"


def word_score(words: Sequence[str], flip: float) -> float:
    """The pool's marking trigger words' verdict score (``with_trigger_words``): ``VERDICT_THRESHOLD + (1 -
    VERDICT_THRESHOLD) x flip`` for the strongest word's insertion flip rate ``flip``; 0 without words."""
    return VERDICT_THRESHOLD + (1 - VERDICT_THRESHOLD) * float(np.clip(flip, 0, 1)) if words else 0.0


def word_flip(score_words: float) -> float:
    """The strongest marking word's insertion flip rate behind a ``word_score`` of ``score_words`` (its inverse; 0
    for a score at or below ``VERDICT_THRESHOLD``)."""
    return float(np.clip((score_words - VERDICT_THRESHOLD) / (1 - VERDICT_THRESHOLD), 0, 1))


def _raised_by_words(verdict: dict, score: float) -> dict:
    """``verdict`` with its score raised to a words' ``score`` where that is higher (``with_trigger_words``,
    ``with_moved_words``): it calls the model at ``VERDICT_THRESHOLD``, and ``called_by`` reads ``"words"`` where the
    flags did not call it already."""
    if score > verdict["score"]:
        verdict.update(score=score, likely_backdoored=score >= VERDICT_THRESHOLD,
                       called_by="words" if not verdict.get("likely_backdoored") else verdict.get("called_by", "flags"))
    return verdict


def with_trigger_words(verdict: dict, words: Sequence[str], flip: float = 0.0, lift: bool | None = None,
                       phrase: str | None = None) -> dict:
    """``verdict`` (``model_verdict``) carrying the pool's likely trigger words (our design; papers silent).

    ``words``: the marking words (``trigger_search.marking_words``: rare in the clean texts, enriched in the pool,
    sending at least ``settings.POOL_WORD_MIN_FLIP`` of the clean texts to one class when inserted); ``flip``: the
    largest of their insertion flip rates. They go to ``verdict["trigger_words"]``. With ``lift`` (None:
    ``settings.VERDICT_WORDS``) they also score (``word_score``: 0.5 + half ``flip``), and the verdict's score
    is the larger of that and the flags' score, so a marking word calls the model. ``components["score_words"]``
    records it, and ``called_by`` reads ``"words"`` where only the words call it. The flags' own score
    (``flags_score``) stays, and with it every decision read from the flags (the repair's gates; ``called_heads``
    lists no head as suspicious). Without ``lift`` such a verdict reads "possible" (``possible_reasons``).
    ``phrase``: the words for the notes' sentences, companions named apart (``trigger_search.marking_phrase``;
    ``verdict["trigger_phrase"]``)."""
    out = {**verdict, "trigger_words": [str(w) for w in words]}
    if phrase:
        out["trigger_phrase"] = str(phrase)
    if not (S.VERDICT_WORDS if lift is None else lift) or out.get("basis") != "pool" or "components" not in out:
        return out
    words_score = word_score(words, flip)
    out["components"] = {**out["components"], "score_words": words_score}
    return _raised_by_words(out, words_score)


def with_moved_words(verdict: dict, words: Sequence[str], flip: float = 0.0, lift: bool | None = None) -> dict:
    """``verdict`` carrying the moved words that mark pool inputs (our design; papers silent).

    ``words``: ``trigger_search.moved_marking``'s words, which the fine-tune moved among the most of the vocabulary
    since its base checkpoint, which no clean text holds and which the pool concentrates (``moved_pool_words``: the
    pool words' own enrichment test, no insertion bar); ``flip``: the largest of their insertion flip rates. They go
    to ``verdict["moved_words"]``, and the score they would give (``word_score``, as the pool's likely trigger words
    score) to ``components["score_moved"]`` (``["moved_flip"]``: ``flip``). With ``lift`` (None:
    ``settings.VERDICT_MOVED``; ``components["moved_lift"]``) the verdict's score is the larger of that and its own,
    and ``called_by`` reads ``"words"`` where only words call it. Without ``lift`` such a verdict reads "possible"
    (``possible_reasons``: ``"moved"``). The flags' own score (``flags_score``) stays."""
    out = {**verdict, "moved_words": [str(w) for w in words]}
    if not words or out.get("basis") != "pool" or "components" not in out:
        return out
    moved_score, lift = word_score(words, flip), bool(S.VERDICT_MOVED if lift is None else lift)
    out["components"] = {**out["components"], "score_moved": moved_score, "moved_flip": float(flip), "moved_lift": lift}
    return _raised_by_words(out, moved_score) if lift else out


def _moved_phrase(verdict: dict) -> str:
    return ", ".join(verdict.get("moved_words") or [])


def _trigger_phrase(verdict: dict) -> str:
    return verdict.get("trigger_phrase") or ", ".join(verdict.get("trigger_words") or [])


def called_by_words(verdict: dict) -> bool:
    """Only the pool's trigger words call the model (``with_trigger_words``): its flags do not."""
    return bool(verdict.get("likely_backdoored")) and verdict.get("called_by") == "words"


def heads_called(verdict: dict) -> bool:
    """The verdict calls a backdoor that the heads saw: likely, and not by the pool's trigger words alone
    (``called_by_words``). Only then are the scan's suspicious heads called suspicious in the views
    (``called_heads``); otherwise they are candidates."""
    return bool(verdict.get("likely_backdoored")) and not called_by_words(verdict)


def possible_reasons(verdict: dict) -> list[str]:
    """What below the score's call makes a verdict ``"possible"`` (our design; papers silent):

    * ``"word"``: the pool holds a likely trigger word (``verdict["trigger_words"]``, set by ``scan.scan_model``
      when it reads the pool's words: a word rare in the clean texts, enriched in the pool, that sends a large
      share of the clean texts to one class when inserted). A weak word backdoor looks like this: it flips few of
      its triggered inputs, so the heads barely move.
    * ``"moved"``: words the fine-tune moved far since its base checkpoint mark pool inputs
      (``verdict["moved_words"]``, ``with_moved_words``; with ``settings.VERDICT_MOVED`` off): no clean text holds
      them and the pool concentrates them, as a weak word backdoor's words too rare in the pool to test are.
    * ``"dev_tail"`` (only with ``settings.VERDICT_TAIL_POSSIBLE``, off: measured, not adopted, see there): the
      verdict's rule is ``"threshold"``, yet the dev-tail rule (``dev_tail_verdict``, recorded
      as ``components["score_dev_tail"]``) calls it: above the clean texts' highest scores the pool holds more
      inputs than chance explains. A pool in which few inputs carry the trigger looks like
      this: at the threshold chance flags about as many clean inputs as the trigger.
    * ``"source"``: the pool reads as another source than the clean texts (``pool_unlike_clean``) and the score,
      read where the pool's bulk sits (``settings.VERDICT_SHIFT_ADJUST``), does not call it, but read at the
      threshold itself (``components["score_unadjusted"]``) it would: the flags may come from the source or from a
      trigger, which only texts of the pool's own source can tell apart.
    * ``"small"``: the score calls it, but the pool holds fewer than ``settings.VERDICT_MIN_POOL`` inputs
      (``verdict["small_pool"]``): one unusual input saturates so small a pool's score.
    """
    reasons = []
    if verdict.get("small_pool") and verdict.get("score", 0.0) >= VERDICT_THRESHOLD:
        reasons.append("small")
    if verdict.get("trigger_words"):
        reasons.append("word")
    if verdict.get("moved_words"):
        reasons.append("moved")
    if (S.VERDICT_TAIL_POSSIBLE and verdict.get("rule", "threshold") == "threshold"
            and (verdict.get("components") or {}).get("score_dev_tail", 0.0) >= VERDICT_THRESHOLD):
        reasons.append("dev_tail")
    c = verdict.get("components") or {}
    if verdict.get("pool_unlike_clean") and c.get("pool_threshold_raised", 0) > 0 and c.get(
            "score_unadjusted", 0.0) >= VERDICT_THRESHOLD:
        reasons.append("source")
    return reasons


def verdict_call(verdict: dict) -> str:
    """The verdict in a word; every view words it from here (our design; papers silent):

    * ``"likely"``: the score calls it (``likely_backdoored``; with ``settings.VERDICT_WORDS`` the score counts the
      pool's likely trigger words too, ``with_trigger_words``);
    * ``"possible"``: the score does not, but ``possible_reasons`` gives one (a likely trigger word in the pool,
      the pool's inputs far above the clean texts, or a pool of another source whose flags at the threshold itself
      would call it; ``call_note`` words it). The score and
      ``likely_backdoored`` stay as they are, and with them every decision taken from them.
    * ``"not found"``: neither.
    """
    if verdict.get("likely_backdoored"):
        return "likely"
    return "possible" if possible_reasons(verdict) else "not found"


def verdict_label(verdict: dict) -> str:
    """``verdict_call`` as a phrase (``VERDICT_LABELS``, ``POSSIBLE_TAIL_LABEL``, ``POSSIBLE_SOURCE_LABEL``,
    ``POSSIBLE_MOVED_LABEL``, ``POSSIBLE_SMALL_LABEL``, ``LIKELY_WORD_LABEL``)."""
    call = verdict_call(verdict)
    if called_by_words(verdict):
        return LIKELY_WORD_LABEL
    reasons = possible_reasons(verdict) if call == "possible" else []
    if reasons == ["small"]:
        return POSSIBLE_SMALL_LABEL
    if "moved" in reasons and "word" not in reasons:
        return POSSIBLE_MOVED_LABEL
    if reasons and "word" not in reasons:
        return POSSIBLE_TAIL_LABEL if "dev_tail" in reasons else POSSIBLE_SOURCE_LABEL
    return VERDICT_LABELS[call]


def flags_score(verdict: dict) -> float | None:
    """The verdict's score of the flags at the detector's threshold, the ones the views list and the repair trains
    on: ``components["score_unadjusted"]`` where the pool was read where its bulk sits
    (``settings.VERDICT_SHIFT_ADJUST``), else the score itself; None without a score. The repair's gates (how
    many heads, which reset, whether the feed-forward blocks train) read this one of ``ScanReport.gate_verdict``
    (the flags' own verdict, with the pool contrast where the shown one reads the distance alone), so a pool of
    another source or the verdict's reading changes the call, not the repair (our design; papers silent: those
    gates were measured on the flags' score)."""
    score = verdict.get("score")
    return None if score is None else float((verdict.get("components") or {}).get("score_unadjusted", score))


def heads_noun(verdict: dict) -> str:
    """What a view calls the scan's top heads: ``"suspicious heads"`` where the verdict calls a backdoor the heads
    saw (``heads_called``), else ``"candidate heads"`` (as ``called_heads`` lists them)."""
    return "suspicious heads" if heads_called(verdict) else "candidate heads"


def called_heads(verdict: dict, labels: Sequence[str], limit: int = 12) -> str:
    """The scan's suspicious heads ``labels`` (``L{layer}H{head}``) as every view names them: listed where the
    score calls a backdoor; otherwise none is suspicious and the top ``limit`` are only candidates. Where only the
    pool's trigger words call it (``called_by_words``) the heads saw no backdoor, so they are candidates too."""
    if heads_called(verdict):
        return ", ".join(labels) or "none"
    why = "the call rests on the pool's trigger words" if called_by_words(verdict) else "no backdoor called"
    return f"none ({why}; top candidates: {', '.join(list(labels)[:limit]) or 'none'})"


def score_text(score: float) -> str:
    """A verdict score as the app, the CLI and the report write it: two decimals, but a score under the line never
    reads as the line (0.497 is "0.497", not "0.50", which sat beside "not found" as "0.50 is below the line at
    0.50")."""
    score = float(score)
    text = f"{score:.2f}"
    if score < VERDICT_THRESHOLD and float(text) >= VERDICT_THRESHOLD:
        return f"{math.floor(score * 1000) / 1000:.3f}"
    return text


def call_note(verdict: dict) -> str | None:
    """What a call the flags' score does not make rests on: a ``"possible"`` call (``verdict_call``), one
    sentence per reason (``possible_reasons``), or a likely one that only the pool's trigger words make
    (``called_by_words``); None otherwise."""
    if called_by_words(verdict):
        c, flags = verdict["components"], flags_score(verdict)
        head = (f"The heads show no backdoor at this threshold (flags' score {score_text(flags)})"
                if flags < VERDICT_THRESHOLD
                else "The pool reads as another source, and read where its bulk sits its flags call no backdoor (at "
                     f"the threshold itself {flags:.2f}, which the source may explain)")
        if c.get("moved_lift") and c.get("score_moved", 0.0) > c.get("score_words", 0.0):
            return (f"{head}, but words the fine-tune moved far since its base checkpoint mark pool inputs "
                    f"({_moved_phrase(verdict)}): no clean text holds them, the pool holds them far more often than "
                    f"chance, and inserted into the clean texts they send up to {c['moved_flip']:.0%} of them to one "
                    "class. That calls the model (score 0.5 + half that share), as a likely trigger word would. A weak "
                    "word backdoor moves its words' embeddings and flips few of the inputs that carry them; the flags "
                    "listed are mostly chance.")
        return (f"{head}, but the pool "
                f"holds a likely trigger word ({_trigger_phrase(verdict)}): rare in the clean texts, and "
                f"inserted into them it sends up to {word_flip(c['score_words']):.0%} of them to one class, as a "
                "trigger does. That calls the model (score 0.5 + half that share). The heads miss a weak word "
                "backdoor, which flips few of the inputs that carry its word; the flags listed are mostly chance.")
    if verdict_call(verdict) != "possible":
        return None
    reasons, notes = possible_reasons(verdict), []
    head = f"The heads show no backdoor at this threshold (score {score_text(verdict.get('score', 0))})"
    if "word" in reasons:
        notes.append(f"{head}, but the pool holds a likely trigger word ({_trigger_phrase(verdict)}): rare "
                     "in the clean texts, and inserted into them it sends a large share of them to one class, as a "
                     "trigger does. The heads miss a weak word backdoor, which flips few of the inputs that carry "
                     "its word.")
    if "moved" in reasons and "word" not in reasons:
        notes.append(f"{head}, but words the fine-tune moved far since its base checkpoint mark pool inputs "
                     f"({_moved_phrase(verdict)}): no clean text holds them and the pool holds them far more often "
                     "than chance, as a weak word backdoor's words are.")
    if "dev_tail" in reasons:
        c = verdict["components"]
        above = c.get("dev_tail_dev_above", 0)
        where = ("above the highest clean score" if above == 0 else
                 f"above all but the {above} highest clean score{'s' if above > 1 else ''}")
        notes.append(("The pool's top scores say more" if notes else head + ", but the pool's top scores say more")
                     + f": {where}, {c.get('dev_tail_flag_rate', 0):.1%} of the pool is flagged where chance "
                     f"explains up to {c.get('dev_tail_chance', 0):.1%} (score {c['score_dev_tail']:.2f} read "
                     "there). A trigger that few of the pool's inputs carry looks "
                     "like this: at the threshold chance flags about as many clean inputs as the trigger does.")
    if "small" in reasons:
        notes.append(f"The flags' score would call it ({verdict.get('score', 0):.2f}), but the pool holds fewer than "
                     f"{S.VERDICT_MIN_POOL} inputs: in so small a pool one unusual input (a text unlike the clean "
                     "ones, a trigger or not) is enough for that score. Scan with a larger pool to call it; the "
                     "flagged inputs below are still the ones to read.")
    if "source" in reasons:
        c = verdict["components"]
        notes.append((f"{head}, read where the pool's bulk sits" if not notes else "Read")
                     + f" at the threshold itself its flags would call one (score {c['score_unadjusted']:.2f}), but "
                     "the pool reads as another source than the clean texts, and such a pool is flagged for its "
                     "source too: the flags may hold a trigger or only the source. Scan with clean labelled texts "
                     "of the pool's own source to tell.")
    return " ".join(notes)


def chance_note(verdict: dict) -> str | None:
    """How many flags chance alone explains (``components["chance_flag_rate"]``), as every view words it; None
    without a pool."""
    chance = verdict.get("components", {}).get("chance_flag_rate")
    if chance is None:
        return None
    return (f"chance alone flags up to {chance:.1%} of a clean pool this size; the verdict counts the flags "
            "beyond that")


def pool_shift_note(verdict: dict) -> str | None:
    """What a pool unlike the clean texts (``verdict["pool_unlike_clean"]``) means for the scan; None otherwise."""
    if not verdict.get("pool_unlike_clean"):
        return None
    components = verdict.get("components", {})
    rank = components.get("pool_lower_quartile_rank", float("nan"))
    raised = components.get("pool_threshold_raised") or 0.0
    verdict_part = (f"The verdict allows for that: it counts only the pool's flags above the threshold moved to "
                    f"where the pool's bulk sits ({raised:+.2f}), which triggered inputs clear and a pool of another "
                    "source mostly does not; the flags listed are still those at the threshold, so many may come "
                    "from the source rather than a trigger." if raised > 0 else
                    "Many flags, and the verdict built on them, may come from the source rather than a trigger: a "
                    "clean model scanned with such a pool can read as backdoored.")
    return (f"The pool may not be drawn like the clean texts: its lower quarter scores above {rank:.0%} of the "
            f"clean inputs, where a pool of the same source sits near 25% however many of its inputs carry a "
            f"trigger (above {POOL_SHIFT_RANK:.0%} reads as another source). Inputs from another source look "
            f"unusual to the heads too. {verdict_part} Scan with clean labelled texts from the pool's own source "
            "to be sure. The pool's likely trigger words do not depend on this.")


def contrast_gate_note(gated: bool | None) -> str | None:
    """What the contrast's source gate did (``ScanReport.settings["contrast_gated"]``): a note when it closed;
    None otherwise (``representation_detector``, ``settings.CONTRAST_SOURCE_GATE``)."""
    if not gated:
        return None
    return ("The pool read as drawn from another source than the clean texts before the scan fitted its pool "
            "contrast, so the scan left the contrast out (it would have learned the source, not a trigger) and "
            "scored the inputs by the heads and the distance of the states the classifier reads ([CLS], or a "
            "decoder's last token) from the clean ones.")


def fused_parts_note(parts: Sequence[str] | None) -> str | None:
    """What the final pass's score read when one part was left out (``ScanReport.settings["fused_parts"]``,
    ``FusedDetector.keep_parts_with_evidence``); None when both parts counted (or no fused score)."""
    if not parts or len(parts) != 1:
        return None
    other = "attention" if parts[0] == "representation" else "representation"
    how = ("the distance of their [CLS] states from the clean ones" if parts[0] == "representation"
           else "the suspicious heads' focus")
    return (f"The scan scored the pool by {how} alone: its {other} part flagged no more of the pool than of the "
            f"clean texts, while the {parts[0]} part did, so summed in it would only have added noise.")


def verdict_basis_note(verdict: dict, settings: dict) -> str | None:
    """What the verdict read when it is not the flags' score (``settings["verdict_rep_method"]`` differs from
    ``settings["rep_method"]``: ``settings.VERDICT_WITHOUT_CONTRAST``), with the share of the pool its own score flags;
    None otherwise."""
    used = settings.get("verdict_rep_method")
    if used is None or used == settings.get("rep_method"):
        return None
    rate = verdict.get("components", {}).get("flag_rate")
    share = "" if rate is None else f" Read that way, {rate:.1%} of the pool is flagged."
    return ("The verdict reads the final heads and the distance of the classified token's states ([CLS], or a "
            "decoder's last token) only, without the pool contrast that "
            "helped pick the flagged inputs: the contrast is trained on this very pool, so its flags cannot be "
            f"weighed against chance.{share}")


def representation_notes(verdict: dict, settings: dict) -> list[str]:
    """The scan's notes on its representation part, as every view shows them under the verdict: the source gate's
    (``contrast_gate_note``), the verdict's basis (``verdict_basis_note``) and a part left out of the final pass
    (``fused_parts_note``); ``settings``: ``ScanReport.settings`` (or the saved report's)."""
    return [n for n in (contrast_gate_note(settings.get("contrast_gated")), verdict_basis_note(verdict, settings),
                        fused_parts_note(settings.get("fused_parts"))) if n]


def pool_verdict_score(flag_rate: float, chance: float, tail: float, purity: float,
                       n_pool: int | None = None) -> float:
    """``model_verdict``'s score from its pool components (see there): the excess of ``flag_rate`` over ``chance``
    (``chance_flag_rate``), softened at 5% of the pool and, with ``n_pool``, at least
    ``settings.VERDICT_EXCESS_INPUTS`` inputs (the same for pools of 100 or more), times the ``tail`` and ``purity``
    factors."""
    excess = max(0.0, (flag_rate - chance) / max(1e-9, 1 - chance))
    scale = max(0.05, S.VERDICT_EXCESS_INPUTS / n_pool) if n_pool else 0.05
    return float(min(1.0, excess / scale) * (0.5 + 0.5 * tail) * (0.5 + 0.5 * purity))


def _pool_components(clean_dev_scores: np.ndarray, pool_scores: np.ndarray, pool_predictions, num_labels: int,
                     thr: float, chance_quantile: float, match: dict | None = None) -> dict:
    """``model_verdict``'s pool components at threshold ``thr`` (see there); ``(n_dev,)`` and ``(n_pool,)`` scores.
    ``match`` (``pool_score_match``; None = none) raises the pool's threshold, not the dev inputs': chance stays
    what ``thr`` flags among the clean dev inputs."""
    pool_thr = match_threshold(thr, match)
    flagged = pool_scores > pool_thr
    rate = float(flagged.mean())
    chance = chance_flag_rate(int((clean_dev_scores > thr).sum()), len(clean_dev_scores), len(pool_scores),
                              chance_quantile)
    tail = float(1 - np.exp(-max(0.0, pool_scores[flagged].mean() - pool_thr) / 2.0)) if flagged.any() else 0.0
    purity = 0.0
    if flagged.any() and pool_predictions is not None:
        preds = np.asarray(pool_predictions)[flagged]
        share = np.bincount(preds, minlength=num_labels).max() / len(preds)
        purity = float(max(0.0, (share - 1.0 / num_labels) / (1 - 1.0 / num_labels)))
    return {"flag_rate": rate, "chance_flag_rate": chance,
            "excess": max(0.0, (rate - chance) / max(1e-9, 1 - chance)), "tail": tail, "purity": purity,
            "score": pool_verdict_score(rate, chance, tail, purity, len(pool_scores))}


def dev_tail_verdict(clean_dev_scores: np.ndarray, pool_scores: np.ndarray, pool_predictions, num_labels: int,
                     thr: float, chance_quantile: float = S.VERDICT_CHANCE_QUANTILE, match: dict | None = None) -> dict:
    """The verdict's pool score read at the detector's threshold ``thr`` and at every stricter threshold the clean
    dev inputs offer, keeping the highest (our design; papers silent): ``(n_dev,)`` and ``(n_pool,)`` scores.

    The stricter thresholds are the dev scores above ``thr``: at the one ``k`` dev inputs exceed, ``chance_flag_rate
    (k, ...)`` is the flag rate a clean pool reaches by chance, and each threshold's score is
    ``pool_verdict_score`` of its own flag rate, chance, tail and purity. Where few of the pool's inputs carry the
    trigger, chance flags about as many clean inputs as the trigger at ``thr`` and the excess vanishes; above the
    highest dev score chance flags about ``n_pool / n_dev`` inputs, while the triggered ones, which sit far above
    the clean spread, stay. Returns the best threshold's components plus ``"dev_above"`` (its ``k``) and
    ``"threshold"``. ``match`` raises every pool threshold as in ``_pool_components``. Measured on the SST-2 tuning
    zoo: bench/results/pool_share_verdict_rules.md, verdict_chance_dev_tail.md.
    """
    clean_dev_scores = np.asarray(clean_dev_scores, float)
    pool_scores = np.asarray(pool_scores, float)
    above = np.sort(clean_dev_scores[clean_dev_scores > thr])  # the stricter thresholds, loosest first
    best = None
    for t in (thr, *above):
        c = _pool_components(clean_dev_scores, pool_scores, pool_predictions, num_labels, float(t), chance_quantile,
                             match)
        if best is None or c["score"] > best["score"] + 1e-12:
            best = {**c, "dev_above": int((clean_dev_scores > t).sum()), "threshold": float(t)}
    return best


def model_verdict(
    detector: SimilarityDetector,
    clean_dev_scores: np.ndarray,
    pool_scores: np.ndarray | None = None,
    pool_predictions: np.ndarray | None = None,
    num_labels: int = 2,
    chance_quantile: float = S.VERDICT_CHANCE_QUANTILE,
    rule: str = S.VERDICT_RULE,
    shift_adjust: bool = S.VERDICT_SHIFT_ADJUST,
) -> dict:
    """A backdoor-likelihood score for the whole model, in [0, 1] (our design; paper silent).

    With a pool of unlabelled inputs: a backdoored model's triggered pool inputs stand out from the clean dev
    inputs AND are all pushed to one class. The score multiplies

    * ``excess``: the share of the pool flagged above what chance explains, ``(flag_rate - chance) / (1 -
      chance)`` clipped to [0, 1], turned into a soft number by ``min(1, excess / scale)``: ``scale`` is 5% of the
      pool and at least ``settings.VERDICT_EXCESS_INPUTS`` inputs (the same from 100 inputs on). ``chance`` is ``chance_flag_rate`` at ``settings.VERDICT_CHANCE_QUANTILE``: the rate a pool of
      clean inputs reaches by chance, given how many dev inputs set the threshold (the dev inputs' own rate, used
      before session 31, called clean models backdoored in 7 of 64 pool draws: bench/results/verdict_chance.md),
    * ``tail``: how far the flagged inputs sit above the threshold, ``1 - exp(-(mean flagged z - threshold) /
      2)``, and
    * ``purity``: how concentrated the flagged inputs' predictions are on one class, rescaled so that the
      class mix expected by chance is 0 and a single class is 1.

    A pool of fewer than ``settings.VERDICT_MIN_POOL`` inputs is too small to call (``small_pool``): the score is
    kept, ``likely_backdoored`` is False, and a score that would call it reads "possible" (``possible_reasons``).

    With a pool, ``pool_unlike_clean`` says whether the pool reads as drawn from another source than the clean
    texts (``pool_lower_quartile_rank`` above ``POOL_SHIFT_RANK``; None with fewer than ``POOL_SHIFT_MIN_INPUTS``
    clean dev or pool inputs): the views then add ``pool_shift_note``, and with ``shift_adjust``
    (``settings.VERDICT_SHIFT_ADJUST``) every component above is read with the pool's threshold moved to where the
    pool's bulk sits (``pool_score_match``, ``match_threshold``), chance still from the dev inputs at the threshold.

    Without a pool only the clean dev tail is available: ``tail`` of the top 5% clean dev inputs relative to
    the rest; this is weak (it cannot see the trigger) and is reported as such (``basis: "clean only"``).

    Where the constants come from (our design; paper silent): they were fixed a priori, when the verdict was
    written, and have not been tuned on the benchmark since, but for ``chance_quantile`` (chosen on the tuning
    zoo, ``settings.VERDICT_CHANCE_QUANTILE``). ``0.05`` (``excess`` saturates once 5% of the pool
    is flagged beyond chance) mirrors ``DEFAULT_FRR``: an excess as large as the false alarms we accept is
    already strong evidence. The ``tail`` scale of 2 z-units and the clean-only offset of 2 standard
    deviations are "clearly above the threshold / the clean spread" in z terms. The ``0.5 + 0.5 x`` floors keep
    one weak component from vetoing the others: a large excess alone gives at least 0.25. ``VERDICT_THRESHOLD``
    0.5 is the midpoint of the scale, not a fitted cut. How well this separates clean from backdoored models is
    measured, not assumed: ``bench/results/defense.md``, "Model-level verdict" (AUROC over the benchmark models
    and the score of each), ``bench/results/defense_seed1.md`` on another data draw.
    """
    clean_dev_scores = np.asarray(clean_dev_scores, dtype=float)
    thr = float(detector.threshold)
    frr = float((clean_dev_scores > thr).mean())
    if pool_scores is None or len(pool_scores) == 0:
        top = np.sort(clean_dev_scores)[-max(1, len(clean_dev_scores) // 20):]
        spread = float(np.std(clean_dev_scores)) or 1.0
        tail = float(1 - np.exp(-max(0.0, (top.mean() - np.median(clean_dev_scores)) / spread - 2.0) / 2.0))
        return {"score": tail, "likely_backdoored": tail >= VERDICT_THRESHOLD, "basis": "clean only",
                "components": {"tail": tail}}
    if rule not in VERDICT_RULES:
        raise ValueError(f"rule must be one of {VERDICT_RULES}, not {rule!r}")
    pool_scores = np.asarray(pool_scores, dtype=float)
    rank = pool_lower_quartile_rank(clean_dev_scores, pool_scores)
    unlike = pool_unlike_clean(clean_dev_scores, pool_scores)
    match = pool_score_match(clean_dev_scores, pool_scores) if shift_adjust and unlike else None
    at_thr = _pool_components(clean_dev_scores, pool_scores, pool_predictions, num_labels, thr, chance_quantile,
                              match)
    strict = dev_tail_verdict(clean_dev_scores, pool_scores, pool_predictions, num_labels, thr, chance_quantile,
                              match)
    score = strict["score"] if rule == "dev_tail" else at_thr["score"]
    small = len(pool_scores) < S.VERDICT_MIN_POOL  # too few to call (settings.VERDICT_MIN_POOL): "possible" at most
    unadjusted = score
    if match is not None:  # the rule's score with the pool read at the threshold itself (possible_reasons)
        unadjusted = (dev_tail_verdict(clean_dev_scores, pool_scores, pool_predictions, num_labels, thr,
                                       chance_quantile)["score"] if rule == "dev_tail" else
                      _pool_components(clean_dev_scores, pool_scores, pool_predictions, num_labels, thr,
                                       chance_quantile)["score"])
    return {
        "score": score,
        "likely_backdoored": score >= VERDICT_THRESHOLD and not small,
        "basis": "pool",
        "rule": rule,
        "small_pool": small,
        "pool_unlike_clean": unlike,
        "components": {**{k: at_thr[k] for k in ("flag_rate", "chance_flag_rate", "excess", "tail", "purity")},
                       "clean_frr": frr, "pool_lower_quartile_rank": rank,
                       # how far the pool's threshold was raised (pool_score_match; 0 = not) and the stretch
                       # it read (1 = none)
                       "pool_threshold_raised": match_threshold(thr, match) - thr,
                       "pool_stretch": match["stretch"] if match else 1.0, "score_unadjusted": unadjusted,
                       # both rules' scores, whichever is the verdict's (settings.VERDICT_RULE)
                       "score_threshold": at_thr["score"], "score_dev_tail": strict["score"],
                       "dev_tail_dev_above": strict["dev_above"], "dev_tail_flag_rate": strict["flag_rate"],
                       "dev_tail_chance": strict["chance_flag_rate"]},
    }
