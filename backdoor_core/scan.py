"""One entry point for the whole trigger-agnostic scan: ``scan_model`` -> ``ScanReport``.

What the analyst has: the suspicious model, a small clean labelled set, and optionally a pool of unlabelled
inputs that may contain triggered ones. No trigger, no clean reference model.

Steps:

1. Split the clean set (seeded) into a *fit* half (statistics of head similarity) and a *dev* half (threshold
   at the chosen FRR, and the FRR we report) — ``detection``.
2. Score the pool; inputs above the threshold are *flagged*.
3. Rate every head (collapse x importance) on the flagged inputs and split suspicious / safe — ``head_safety``.
   With no pool (or nothing flagged) the top-scoring clean inputs stand in (``basis = "clean fallback"``).
4. Refined passes (``refine=True``, our design; paper silent): score the pool again, now by the focus of the
   suspicious heads only (``detection.head_focus_detector``: each suspicious head's focus z-scored against the
   same clean fit half, averaged; threshold at the same FRR on the same clean dev half), and flag by that. The
   first pass averages over all heads of a layer, where a backdoor that captured a few heads is diluted by the
   others; once those heads are known, looking at them alone finds more of the triggered inputs. Then
   (``refine_rounds``, default ``DEFAULT_REFINE_ROUNDS``) the heads are rated again on the refined flags (more
   triggered inputs, so a cleaner collapse estimate) and the pool is flagged once more by the new suspicious
   heads; these heads are the report's. The first pass's numbers (its heads and verdict too) stay in
   ``ScanReport.first_pass``.
   Representation fusion (``representation=True``, ``settings.REPRESENTATION``; our design, paper silent): in
   every pass the attention score is fused (``detection.FusedDetector``) with the distance of the input's
   intermediate ``[CLS]`` states from the clean ones (``detection.RepresentationDetector``, fitted on the same
   clean fit half, calibrated on the same dev half; the states come from the same forward pass), so triggers
   that capture no head (style paraphrases) are flagged too; ``representation=False`` is the paper's
   attention-only scan. Measured: ``bench/results/style_ablation.md``. The representation part is chosen by
   ``rep_method`` (``settings.REP_METHOD``, ``detection.representation_detector``): that distance, a
   cross-fitted pool-vs-clean classifier on the layers' states (``detection.ContrastDetector``, which needs the
   pool, so the pool is read before any detector is fitted), or both summed (the default). A pool that the first
   pass, fused with the distance alone, reads as another source than the clean texts is scanned with the distance
   alone (``contrast_gate``, ``settings.CONTRAST_SOURCE_GATE``): there the contrast would learn the source.
5. A model-level verdict (``detection.model_verdict``) from the final pass's clean dev scores, pool scores and
   flags (where the flags' representation part holds the pool contrast, from the final pass's heads fused with the
   distance alone instead, ``verdict_without_contrast``, ``settings.VERDICT_WITHOUT_CONTRAST``: the contrast was trained
   on this very pool; ``ScanReport.verdict_scores``; the flags' own verdict stays beside it, ``flags_verdict``, and the
   repair's gates read that one, ``gate_verdict``), and whether the pool reads as drawn from another source than the
   clean texts (``pool_unlike_clean``; the views add ``detection.pool_shift_note``, and the verdict then reads the pool
   where its bulk sits, ``settings.VERDICT_SHIFT_ADJUST``). Where the pool's words are read (step 6), the verdict also
   carries the likely trigger words (``trigger_words``): with them a verdict the flags do not call reads "likely"
   (``settings.VERDICT_WORDS``: the words score, ``detection.with_trigger_words``), else "possible"
   (``detection.verdict_call``).

Measured on the defense benchmark's SST-2 models: ``bench/results/defense.md``, section "Model-level verdict"
(verdict score, pool inputs flagged by the first and by the final pass, suspicious heads, per model; the verdict's
AUROC over all models) and "Detection AUROC" (``head_similarity`` = first pass, ``head_similarity_2pass`` =
refined); ``bench/results/defense_seed1.md`` repeats it on another draw of the data, one refine round against two.

6. Candidate triggers (``find_triggers=True``): the words and phrases the suspicious heads focus on in the
   flagged inputs, verified by insertion into the clean texts and removal from the flagged ones
   (``trigger_search``); and, from the pool alone, the words it holds far more often than the clean texts do,
   with what inserting each does (``trigger_search.pool_words``; read even when nothing was flagged).
   The likely trigger words that at most ``frr`` of the clean texts hold mark the pool inputs that hold them
   (``trigger_search.marking_words``; our design, papers silent): a weak word backdoor flips few of its inputs, so
   the heads and the representation miss most of them, but each still holds the word. The marks are reported
   beside the flags (``pool_word_marked``), and ``scores_with_words`` ranks any inputs by the scan's final score
   with them (``detection.with_word_evidence``); they change neither the flags nor the heads, only the verdict
   (step 5). With a base checkpoint (``base``, ``settings.SCAN_BASE``: the packaged MiniLM, read only where it is
   the model's starting point) the scan also reads the moved words that mark pool inputs
   (``trigger_search.moved_marking``: words the fine-tune moved among the most of the vocabulary, in no clean text,
   concentrated in the pool; ``moved_words``): they make the verdict "possible", or with
   ``settings.VERDICT_MOVED`` score as the likely trigger words do (``detection.with_moved_words``).

``ScanReport.to_dict()`` is JSON-ready (lists, floats, strings only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .architecture import describe
from .data import DataError, TextDataset, check_labels_match
from . import settings as S
from .detection import (
    DEFAULT_AGGREGATE,
    DEFAULT_FRR,
    FIRST_PASSES,
    AttentionStats,
    REP_METHODS,
    ContrastDetector,
    RepresentationDetector,
    SummedDetector,
    representation_detector,
    SimilarityDetector,
    attention_stats,
    first_pass_detector,
    flags_score,
    fused_detector,
    head_focus_detector,
    VERDICT_RULES,
    model_verdict,
    distance_part,
    split_clean,
    verdict_call,
    with_moved_words,
    with_trigger_words,
)
from .head_safety import (
    DEFAULT_FALLBACK_FRAC,
    DEFAULT_MAX_FRACTION,
    DEFAULT_REL_THRESHOLD,
    HeadSafety,
    evaluate_heads,
)
from .head_metrics import head_label
from .forward import stop_if, stopping
from .models import class_names

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: "clean", "pool", "heads", "triggers", "done"."""

STAGE_TEXT = {"clean": "reading the clean texts", "pool": "reading the pool", "heads": "rating the heads",
              "triggers": "naming candidate triggers", "done": "scan done",
              "labels": "labelling the flagged inputs"}  # the last: ``defenses.run_defense``'s, after its scan
"""What each stage of ``ProgressFn`` (and the repair's ``"labels"``) is doing, for a progress line."""


def stage_text(stage: str, done: int, total: int) -> str:
    """``"reading the pool 64/130"``: one progress line for ``progress(stage, done, total)`` (no count for a
    one-step stage)."""
    text = STAGE_TEXT.get(stage, stage)
    return f"{text} {done}/{total}" if total > 1 else text


STAGE_SHARES = {"clean": 0.15, "pool": 0.4, "heads": 0.3, "triggers": 0.1, "done": 0.0, "labels": 0.05}
"""Each stage's rough share of the time before a repair trains (``ProgressFn``'s order, then the repair's
``"labels"``): a progress bar's layout only, no result depends on it."""


def stage_fraction(stage: str, done: int, total: int) -> float | None:
    """The share of the stages in ``STAGE_SHARES`` done when ``progress(stage, done, total)`` is reported: it only
    grows as the stages run in their order (a stage's own ``done / total`` fills its slice), so one bar can show a
    whole scan, not each stage from 0 again; None for a stage not listed there."""
    order = list(STAGE_SHARES)
    if stage not in STAGE_SHARES:
        return None
    start = sum(STAGE_SHARES[s] for s in order[: order.index(stage)])
    part = min(1.0, max(0.0, done / total)) if total > 0 else 0.0
    return min(1.0, start + STAGE_SHARES[stage] * part)

MAX_FLAGGED_LISTED = 200
DEFAULT_REFINE = S.REFINE
DEFAULT_REFINE_ROUNDS = S.REFINE_ROUNDS


@dataclass
class ScanReport:
    """Everything ``scan_model`` found. Arrays are numpy; ``to_dict`` converts them.

    Attributes:
        verdict: ``detection.model_verdict`` output (score in [0, 1], likely_backdoored, basis, components).
        threshold: detection threshold on the suspicion score.
        frr_target / clean_frr: the asked-for FRR and the one measured on the held-out clean dev inputs.
        clean_scores: ``(n_dev,)`` suspicion scores of the clean dev inputs.
        pool_texts / pool_scores / pool_predictions: the pool, its scores and predicted labels.
        flagged: indices into the pool of the flagged inputs, highest score first.
        first_pass: when the refined passes ran (``refine``): the first pass's ``threshold``, ``clean_frr``,
            ``clean_scores``, ``pool_scores``, ``flagged`` and ``verdict``; the fields above (verdict included)
            are the final pass's. Else None.
        heads: ``head_safety.HeadSafety``.
        layer_sim_clean / layer_sim_flagged: ``(L,)`` mean head-to-head similarity per layer.
        head_sim_clean / head_sim_flagged: ``(L, H)`` each head's mean similarity to its layer's others.
        detector: the first pass's ``detection.SimilarityDetector`` (``detection.first_pass_detector``: per-layer
            or per-head features, ``settings["first_pass"]``; fitted on the clean fit half, threshold at
            ``frr_target`` on the clean dev half): score any other inputs with it.
        head_detector: the final pass's ``detection.head_focus_detector`` for the final suspicious heads (same
            clean halves; its threshold is ``threshold``); None when the refined passes did not run.
        clean_fit_texts / clean_dev_texts: the clean texts that fitted the statistics / set the thresholds.
        pool_probs / clean_probs: the scanned model's class probabilities on the pool ``(n_pool, C)`` and on the
            clean texts used ``(n_clean, C)``, from the scan's own forward passes (a repair reuses them:
            ``defenses.run_defense(..., reuse_scan=True)``).
        representation_detector: the representation part (``detection.RepresentationDetector``,
            ``ContrastDetector`` or their ``SummedDetector``, by ``settings["rep_method"]``) fused into ``detector`` and
            ``head_detector`` (None for an attention-only scan); ``attention_detector`` /
            ``attention_head_detector``: their attention-only parts (the same objects as ``detector`` /
            ``head_detector`` in an attention-only scan).
        representation_share: in a fused scan, the share of the final pass's flagged inputs whose
            representation z-score (on clean dev) exceeds their attention z-score: a diagnostic (it is high for
            TAL backdoors too, whose flags stand out in both; bench/results/repair_rules_tuning.md); None for an
            attention-only scan or when nothing is flagged.
        marking_words / pool_word_marked: the likely trigger words that mark an input (step 6 of the module
            docstring; empty when none or the pool's words were not read) and ``(n_pool,)`` bool, the pool inputs
            holding one (None when the words were not read).
        moved_words: the moved words that mark pool inputs (``trigger_search.moved_marking`` against ``base``; step 6
            of the module docstring; empty when none, without a base or when the pool's words were not read).
        attention_missed_share: in a fused scan, the share of the final pass's flagged inputs that its
            attention-only part (``attention_head_detector``, else ``attention_detector``, at its own threshold)
            would not flag: a trigger the heads do not see (``sanitize`` trains feed-forward blocks when it is high
            and the verdict found a backdoor, ``settings.REPAIR_FFN="auto"``); None like ``representation_share``.
    """

    model_name: str
    num_layers: int
    num_heads: int
    label_names: list[str]
    verdict: dict
    aggregate: str
    threshold: float
    frr_target: float
    clean_frr: float
    n_clean_fit: int
    n_clean_dev: int
    clean_scores: np.ndarray
    pool_texts: list[str]
    pool_scores: np.ndarray
    pool_predictions: np.ndarray
    flagged: np.ndarray
    heads: HeadSafety
    first_pass: dict | None
    layer_sim_clean: np.ndarray
    layer_sim_flagged: np.ndarray | None
    head_sim_clean: np.ndarray
    head_sim_flagged: np.ndarray | None
    seconds: float
    settings: dict = field(default_factory=dict)
    architecture: dict = field(default_factory=dict)  # architecture.describe(model).to_dict(): kinds, notes
    detector: SimilarityDetector | None = field(default=None, repr=False)
    head_detector: SimilarityDetector | None = field(default=None, repr=False)
    representation_detector: RepresentationDetector | ContrastDetector | SummedDetector | None = field(
        default=None, repr=False)
    representation_share: float | None = None
    attention_missed_share: float | None = None
    attention_detector: SimilarityDetector | None = field(default=None, repr=False)
    attention_head_detector: SimilarityDetector | None = field(default=None, repr=False)
    clean_fit_texts: list[str] = field(default_factory=list, repr=False)
    clean_dev_texts: list[str] = field(default_factory=list, repr=False)
    triggers: object | None = None  # trigger_search.TriggerSearch: candidate triggers (None = not searched)
    pool_words: list | None = None  # trigger_search.PoolWord list: pool-enriched words (None = not searched)
    pool_probs: np.ndarray | None = field(default=None, repr=False)  # (n_pool, C) the scanned model's
    clean_probs: np.ndarray | None = field(default=None, repr=False)  # (n_clean, C) probabilities of clean_texts
    clean_texts: list[str] = field(default_factory=list, repr=False)  # the clean texts scanned, clean_probs' order
    marking_words: list[str] = field(default_factory=list)
    pool_word_marked: np.ndarray | None = field(default=None, repr=False)
    moved_words: list[str] = field(default_factory=list)
    # what the verdict read when not the flags' scores (settings.VERDICT_WITHOUT_CONTRAST): clean dev (n_dev,) and pool
    # (n_pool,) scores and the threshold; None = clean_scores, pool_scores, threshold
    verdict_inputs: dict | None = field(default=None, repr=False)
    # the verdict of the flags' own scores (the pool contrast in them) where the verdict read the distance alone
    # (settings.VERDICT_WITHOUT_CONTRAST); None = ``verdict``. The repair's gates read it (``gate_verdict``).
    flags_verdict: dict | None = field(default=None, repr=False)

    @property
    def gate_verdict(self) -> dict:
        """The verdict the repair's gates read (``detection.flags_score`` of it: the reset's start, the feed-forward
        rule, the weak-evidence cap): the flags' own verdict, so the verdict's reading without the pool contrast
        moves the call, not the repair (our design; papers silent)."""
        return self.verdict if self.flags_verdict is None else self.flags_verdict

    @property
    def verdict_scores(self) -> tuple[np.ndarray, np.ndarray, float]:
        """The final verdict's inputs: clean dev scores ``(n_dev,)``, pool scores ``(n_pool,)`` and threshold (the
        flags' own unless the verdict read the distance alone, ``settings.VERDICT_WITHOUT_CONTRAST``)."""
        v = self.verdict_inputs
        if v is None:
            return np.asarray(self.clean_scores), np.asarray(self.pool_scores), float(self.threshold)
        return np.asarray(v["clean_dev_scores"]), np.asarray(v["pool_scores"]), float(v["threshold"])

    @property
    def suspicious_heads(self) -> list[str]:
        return self.heads.suspicious_labels

    @property
    def flagged_texts(self) -> list[str]:
        return [self.pool_texts[i] for i in self.flagged]

    def flagged_rows(self, limit: int | None = MAX_FLAGGED_LISTED) -> list[dict]:
        """The flagged pool inputs, highest score first: index, score, prediction, label, the marking word it
        holds (``""``: none) and text."""
        return [self._pool_row(i) for i in self.flagged[:limit]]

    def word_marked_rows(self, limit: int | None = MAX_FLAGGED_LISTED) -> list[dict]:
        """The pool inputs that hold a marking word, flagged or not (``flagged``), highest score first."""
        if self.pool_word_marked is None:
            return []
        idx = np.flatnonzero(self.pool_word_marked)
        idx = idx[np.argsort(-np.asarray(self.pool_scores)[idx], kind="stable")]
        flagged = set(int(i) for i in self.flagged)
        return [{**self._pool_row(i), "flagged": int(i) in flagged} for i in idx[:limit]]

    def _pool_row(self, i) -> dict:
        from .trigger_search import held_word

        pred = int(self.pool_predictions[i])
        return {"index": int(i), "score": float(self.pool_scores[i]), "prediction": pred,
                "label": self.label_names[pred] if pred < len(self.label_names) else str(pred),
                "trigger_word": held_word(self.pool_texts[i], self.marking_words), "text": self.pool_texts[i]}

    @property
    def marking_phrase(self) -> str:
        """The marking words for a sentence, companions named apart (``trigger_search.marking_phrase``)."""
        from .trigger_search import marking_phrase

        return marking_phrase(self.pool_words or [], self.marking_words)

    @property
    def n_word_marked_unflagged(self) -> int | None:
        """Pool inputs that hold a marking word but were not flagged (None when the words were not read)."""
        if self.pool_word_marked is None:
            return None
        return int(self.pool_word_marked.sum() - self.pool_word_marked[np.asarray(self.flagged, dtype=int)].sum())

    @property
    def moved_marked(self) -> np.ndarray:
        """``(n_pool,)`` bool: the pool inputs holding a moved word that marks inputs (``moved_words``)."""
        from .trigger_search import word_marks

        return word_marks(self.pool_texts, self.moved_words)

    def word_marks(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts),)`` bool: the text holds a marking word (``trigger_search.word_marks``)."""
        from .trigger_search import word_marks

        return word_marks(texts, self.marking_words)

    def scores_with_words(self, scores: Sequence[float], texts: Sequence[str]) -> np.ndarray:
        """``(n,)`` the final pass's ``scores`` of ``texts`` with the marking words' evidence
        (``detection.with_word_evidence``): what the scan ranks inputs by once the pool's words are read."""
        from .detection import with_word_evidence

        return with_word_evidence(scores, self.word_marks(texts))

    def head_rows(self) -> list[dict]:
        """One row per head (for tables), highest score first."""
        rows = []
        for l in range(self.num_layers):
            for h in range(self.num_heads):
                rows.append({"head": head_label(l, h), "score": float(self.heads.score[l, h]),
                             "collapse": float(self.heads.collapse[l, h]),
                             "importance": float(self.heads.importance[l, h]),
                             "suspicious": bool(self.heads.suspicious[l, h])})
        return sorted(rows, key=lambda r: -r["score"])

    def to_dict(self, max_flagged: int | None = MAX_FLAGGED_LISTED) -> dict:
        def arr(x):
            return None if x is None else np.asarray(x, dtype=float).round(5).tolist()

        return {
            "model": self.model_name,
            "layers": self.num_layers,
            "heads": self.num_heads,
            "label_names": list(self.label_names),
            "verdict": {**_plain(self.verdict), "call": verdict_call(self.verdict)},  # likely / possible / not found
            # the flags' own verdict where the shown one read the distance alone (else None), and the score of it
            # the repair's gates read (defenses.gate_lines): a saved scan says what a repair from it would do
            "flags_verdict": None if self.flags_verdict is None else _plain(self.flags_verdict),
            "repair_gate_score": flags_score(self.gate_verdict),
            "detection": {
                "method": "head_similarity" + (" + representation" if self.representation_detector else ""),
                "pass": "second (suspicious heads' focus)" if self.first_pass else "first",
                "aggregate": self.aggregate,
                "threshold": float(self.threshold),
                "frr_target": float(self.frr_target),
                "clean_frr": float(self.clean_frr),
                "n_clean_fit": self.n_clean_fit,
                "n_clean_dev": self.n_clean_dev,
                "n_pool": len(self.pool_texts),
                "n_flagged": int(len(self.flagged)),
                "flag_rate": float(len(self.flagged) / max(1, len(self.pool_texts))),
                "representation_method": self.settings.get("rep_method"),
                "contrast_gated": self.settings.get("contrast_gated"),
                # what the verdict's scores were fused with (settings.VERDICT_WITHOUT_CONTRAST): the flags' own
                # representation, or the distance alone when the flags' holds the pool contrast
                "verdict_representation_method": self.settings.get("verdict_rep_method"),
                "representation_share": self.representation_share,
                "attention_missed_share": self.attention_missed_share,
                "marking_words": list(self.marking_words),
                "marking_phrase": self.marking_phrase,
                "n_word_marked": None if self.pool_word_marked is None else int(self.pool_word_marked.sum()),
                "n_word_marked_unflagged": self.n_word_marked_unflagged,
                "moved_words": list(self.moved_words),
                "n_moved_marked": int(self.moved_marked.sum()),
            },
            "suspicious_heads": self.suspicious_heads,
            "head_safety": self.heads.to_dict(),
            "per_head": {
                "similarity_clean": arr(self.head_sim_clean),
                "similarity_flagged": arr(self.head_sim_flagged),
            },
            "per_layer": {
                "similarity_clean": arr(self.layer_sim_clean),
                "similarity_flagged": arr(self.layer_sim_flagged),
            },
            "flagged": self.flagged_rows(max_flagged),
            "clean_dev_scores": arr(self.clean_scores),
            "pool_scores": arr(self.pool_scores),
            "first_pass": None if not self.first_pass else {
                "threshold": float(self.first_pass["threshold"]), "clean_frr": float(self.first_pass["clean_frr"]),
                "n_flagged": int(len(self.first_pass["flagged"])),
                "verdict_score": float(self.first_pass["verdict"]["score"]),
                "suspicious_heads": list(self.first_pass.get("heads", [])),
                "clean_dev_scores": arr(self.first_pass["clean_scores"]),
                "pool_scores": arr(self.first_pass["pool_scores"])},
            "seconds": float(self.seconds),
            "settings": _plain(self.settings),
            "architecture": _plain(self.architecture),
            "trigger_candidates": None if self.triggers is None else _plain(self.triggers.to_dict(limit=20)),
            "pool_words": None if self.pool_words is None else _pool_word_rows(self.pool_words, self.marking_words),
        }


def _pool_word_rows(words, marking) -> list[dict]:
    from .trigger_search import pool_word_rows

    return _plain(pool_word_rows(words, marking=marking))


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def check_clean_set(clean: TextDataset, num_labels: int, minimum: int = 8,
                    model_names: Sequence[str] | None = None) -> None:
    """Plain errors (``DataError``) for an empty or too small clean set, or one whose labels do not fit a model
    with ``num_labels`` classes (named ``model_names``, when known: ``data.label_mismatch``)."""
    if clean is None or len(clean) == 0:
        raise DataError("The clean set is empty: the scan needs a few dozen clean labelled texts (200+ is "
                        "better).")
    check_labels_match(clean, num_labels, model_names)
    if len(clean) < minimum:
        raise DataError(f"The clean set has {len(clean)} texts; the scan needs at least {minimum} (half fit the "
                        "statistics, half set the threshold).")


FUSE_DROPS = {"attention": ("attention",), "either": ("attention", "representation")}
"""``scan_model(fuse_drop=...)``: the parts of the fused score a pass may leave out (``settings.FUSE_DROP``)."""


def scan_model(
    model,
    tokenizer,
    clean: TextDataset,
    pool_texts: Sequence[str] | None = None,
    *,
    frr: float = DEFAULT_FRR,
    aggregate: str = DEFAULT_AGGREGATE,
    length_adjust: bool = True,
    fit_frac: float = 0.5,
    max_clean: int | None = 400,
    rel_threshold: float = DEFAULT_REL_THRESHOLD,
    max_fraction: float = DEFAULT_MAX_FRACTION,
    top_k: int | None = None,
    fallback_frac: float = DEFAULT_FALLBACK_FRAC,
    importance_inputs: int = 64,
    first_pass_kind: str = S.FIRST_PASS,
    refine: bool = DEFAULT_REFINE,
    refine_rounds: int = DEFAULT_REFINE_ROUNDS,
    representation: bool = S.REPRESENTATION,
    rep_method: str = S.REP_METHOD,
    contrast_gate: bool = S.CONTRAST_SOURCE_GATE,
    verdict_without_contrast: bool = S.VERDICT_WITHOUT_CONTRAST,
    fuse: str = S.FUSE,
    fuse_min_excess: float | None = S.FUSE_MIN_EXCESS,
    fuse_drop: str = S.FUSE_DROP,
    verdict_rule: str = S.VERDICT_RULE,
    verdict_shift_adjust: bool = S.VERDICT_SHIFT_ADJUST,
    max_length: int = S.MAX_LENGTH,
    batch_size: int = 32,
    seed: int = 0,
    find_triggers: bool = True,
    read_pool_words: bool | None = None,
    base: str | None = S.SCAN_BASE,
    model_name: str = "model",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ScanReport:
    """Scan ``model`` for a backdoor without knowing the trigger (see the module docstring).

    Args:
        clean: the defender's clean labelled set (at least 8 texts; its labels must match the model's).
        pool_texts: unlabelled inputs that may contain triggered ones (optional).
        frr: false-rejection rate for the threshold (default ``detection.DEFAULT_FRR``).
        aggregate, length_adjust: see ``detection.SimilarityDetector``.
        max_clean: use at most this many clean texts (a seeded sample), None = all.
        rel_threshold, max_fraction, top_k, fallback_frac, importance_inputs: see ``head_safety``.
        first_pass_kind: what the first pass z-scores, per layer or per head (``detection.first_pass_detector``;
            ``settings.FIRST_PASS``).
        refine, refine_rounds: re-flag the pool by the suspicious heads' focus, ``refine_rounds`` times, the
            heads re-rated on the new flags between rounds (step 4 of the module docstring).
        representation, fuse: fuse every pass's attention score with the ``[CLS]`` representation distance
            (``detection.FusedDetector``, combined by ``fuse``); False = attention only (the paper's method).
            Needs at least ``settings.REP_MIN_FIT`` clean fit inputs; with fewer the scan stays attention-only
            and ``settings["representation_skipped"]`` says why.
        fuse_min_excess: with a pool, a pass's part (attention or representation) that shows no evidence on it
            while the other shows at least this much is left out of that pass's score
            (``detection.FusedDetector.keep_parts_with_evidence``; ``settings.FUSE_MIN_EXCESS``; None = both
            parts always; ``settings["fused_parts"]``: the final pass's parts). ``fuse_drop``
            (``settings.FUSE_DROP``): which part may be left out, ``"attention"`` or ``"either"``.
        rep_method, contrast_gate: the representation part (``settings.REP_METHOD``); with a contrast in it and
            ``contrast_gate`` (``settings.CONTRAST_SOURCE_GATE``), a pool that reads as another source than the
            clean texts under the distance alone is scanned with the distance alone (``settings["rep_method"]``,
            ``settings["contrast_gated"]``; ``detection.representation_detector``).
        verdict_without_contrast: with a contrast in the representation part, the verdicts (first pass and final) read
            the pass's attention score fused with the distance alone (``detection.distance_part``;
            ``settings.VERDICT_WITHOUT_CONTRAST``; ``settings["verdict_rep_method"]``); the flags keep the contrast.
        verdict_rule: how the model verdict reads the pool (``detection.VERDICT_RULES``; ``settings.VERDICT_RULE``).
        verdict_shift_adjust: where the pool reads as another source, the verdict counts its flags above the
            threshold moved to where the pool's bulk sits (``settings.VERDICT_SHIFT_ADJUST``).
        find_triggers: name candidate triggers from the suspicious heads' focus on the flagged inputs and verify
            them on the clean texts (``trigger_search.search_triggers``; step 6 of the module docstring).
        read_pool_words: read the pool's enriched words and mark the inputs holding a likely trigger word
            (``pool_words``, ``marking_words``, ``pool_word_marked``); None = as ``find_triggers``.
        base: with the pool's words, also read the moved words against this checkpoint (``moved_words``;
            ``settings.SCAN_BASE``; None = off); ignored where it is not the model's starting point.
        progress: ``progress(stage, done, total)``.
        should_stop: checked between batches of every forward pass (the trigger search's and the pool words' too,
            ``forward.stopping``); raises ``forward.Cancelled``: a scan asked to stop returns no report.
    """
    t0 = time.perf_counter()
    num_labels = int(model.config.num_labels)
    check_clean_set(clean, num_labels, model_names=class_names(model))
    if not 0.0 < frr < 1.0:
        raise ValueError(f"frr must be between 0 and 1 (exclusive), got {frr}.")
    if verdict_rule not in VERDICT_RULES:
        raise ValueError(f"verdict_rule must be one of {', '.join(VERDICT_RULES)}, got '{verdict_rule}'.")
    if first_pass_kind not in FIRST_PASSES:
        raise ValueError(f"first_pass_kind must be one of {', '.join(FIRST_PASSES)}, got '{first_pass_kind}'.")
    if rep_method not in REP_METHODS:
        raise ValueError(f"rep_method must be one of {', '.join(REP_METHODS)}, got '{rep_method}'.")
    if fuse_drop not in FUSE_DROPS:
        raise ValueError(f"fuse_drop must be one of {', '.join(FUSE_DROPS)}, got '{fuse_drop}'.")
    if fuse_min_excess is not None and not 0.0 <= float(fuse_min_excess) <= 1.0:
        raise ValueError(f"fuse_min_excess must be a share of the pool in [0, 1] (None: off), got {fuse_min_excess}.")
    if max_clean is not None and len(clean) > max_clean:
        clean = clean.sample(max_clean, seed=seed)
    pool = [str(t) for t in (pool_texts or [])]

    def prog(stage):
        return None if progress is None else (lambda d, t: progress(stage, d, t))

    fit_idx, dev_idx = split_clean(len(clean), fit_frac, seed)
    asked_representation = bool(representation)
    representation = asked_representation and len(fit_idx) >= S.REP_MIN_FIT
    clean_stats = attention_stats(model, tokenizer, clean.texts, max_length, batch_size, prog("clean"),
                                  should_stop, cls=representation)
    dev_stats = clean_stats.subset(dev_idx)
    det = first_pass_detector(clean_stats.subset(fit_idx), dev_stats, frr, first_pass_kind, aggregate, length_adjust)
    att_first = att_final = det
    if pool:
        pool_stats = attention_stats(model, tokenizer, pool, max_length, batch_size, prog("pool"), should_stop,
                                     cls=representation)
    else:
        pool_stats = AttentionStats.empty(int(model.config.num_hidden_layers),
                                          int(model.config.num_attention_heads), num_labels,
                                          clean_stats.cls.shape[-1] if representation else None)
    rep_det = rep_used = None
    gated = False
    # (pool statistics, least excess) for fused_detector: a part without evidence on the pool is left out
    evidence = ((pool_stats, fuse_min_excess, FUSE_DROPS[fuse_drop]) if pool and fuse_min_excess is not None
                else (None, None))
    if representation:
        rep_det, rep_used, gated = representation_detector(clean_stats.subset(fit_idx), clean_stats, pool_stats,
                                                           dev_stats, frr, rep_method, seed,
                                                           att_first if contrast_gate else None, fuse)
        det = fused_detector(att_first, rep_det, dev_stats, frr, fuse, *evidence)
    verdict_rep = rep_det
    if rep_det is not None and verdict_without_contrast and rep_used != "mahalanobis":
        verdict_rep = distance_part(rep_det, clean_stats.subset(fit_idx), dev_stats, frr)

    def verdict_of(att, scan_det, scan_pool_scores):
        """The pass's verdict and, where it did not read the pass's own scores (``verdict_without_contrast``: ``att``
        fused with the distance alone), the inputs it read (``ScanReport.verdict_inputs``) and the verdict of the
        pass's own scores (``ScanReport.flags_verdict``); else None for both."""
        def verdict_from(d, scores):
            return model_verdict(d, d.clean_dev_scores, scores, pool_stats.predictions if pool else None, num_labels,
                                 rule=verdict_rule, shift_adjust=verdict_shift_adjust)

        if verdict_rep is rep_det:
            return verdict_from(scan_det, scan_pool_scores), None, None
        own = verdict_from(scan_det, scan_pool_scores)
        scan_det = fused_detector(att, verdict_rep, dev_stats, frr, fuse, *evidence)
        scan_pool_scores = scan_det.score(pool_stats) if pool else None
        inputs = {"clean_dev_scores": scan_det.clean_dev_scores, "threshold": float(scan_det.threshold),
                  "pool_scores": np.zeros(0) if scan_pool_scores is None else scan_pool_scores}
        return verdict_from(scan_det, scan_pool_scores), inputs, own

    clean_scores = det.score(clean_stats)
    pool_scores = det.score(pool_stats) if pool else np.zeros(0)
    flagged_mask = det.flag(pool_scores) if pool else np.zeros(0, bool)
    flagged = np.flatnonzero(flagged_mask)
    flagged = flagged[np.argsort(-pool_scores[flagged], kind="stable")]
    rounds = int(refine_rounds) if refine and pool else 0
    ratings = max(1, rounds)  # rate_heads runs at most this often: the first pass, then every round after the first
    rated = 0

    def rate_heads(flagged):
        nonlocal rated
        k, rated = min(rated, ratings - 1), rated + 1

        def heads_progress(done, total):  # the k-th rating fills the k-th part of the stage: the bar only grows
            progress("heads", k * total + done, ratings * total)

        if progress is not None and k == 0:
            progress("heads", 0, 1)  # the stage's start: "rating the heads"
        return evaluate_heads(
            model, tokenizer, clean.texts, [pool[i] for i in flagged],
            clean_stats=clean_stats, flagged_stats=pool_stats.subset(flagged) if len(flagged) else None,
            clean_scores=clean_scores, rel_threshold=rel_threshold, max_fraction=max_fraction, top_k=top_k,
            fallback_frac=fallback_frac, importance_inputs=importance_inputs, max_length=max_length,
            batch_size=batch_size, seed=seed, should_stop=should_stop,
            progress=heads_progress if progress is not None else None,
        )

    heads = rate_heads(flagged)
    first_det, head_det = det, None
    first_pass = None
    for r in range(rounds):
        if not heads.suspicious.any():
            break
        if r > 0:  # re-rate the heads on the richer flagged set, then re-flag with them
            if not len(flagged):
                break
            rerated = rate_heads(flagged)
            if not rerated.suspicious.any():
                break  # keep the heads we had
            heads = rerated
        det_r = att_final = head_focus_detector(heads.suspicious, clean_stats.subset(fit_idx), dev_stats, frr,
                                                length_adjust)
        if rep_det is not None:
            det_r = fused_detector(det_r, rep_det, dev_stats, frr, fuse, *evidence)
        if first_pass is None:
            first_pass = {"threshold": float(det.threshold), "clean_frr": det.clean_frr,
                          "clean_scores": det.clean_dev_scores, "pool_scores": pool_scores, "flagged": flagged,
                          "heads": list(heads.suspicious_labels),
                          "verdict": verdict_of(att_first, det, pool_scores)[0]}
        det = head_det = det_r
        pool_scores = det.score(pool_stats)
        flagged = np.flatnonzero(det.flag(pool_scores))
        flagged = flagged[np.argsort(-pool_scores[flagged], kind="stable")]
    verdict, verdict_inputs, flags_verdict = verdict_of(att_final, det, pool_scores if pool else None)
    # the trigger search's and the pool words' predictions take no should_stop of their own: every forward pass in
    # this block checks it (Cancel there had run on to the end of the scan, and the scan had returned a report)
    with stopping(should_stop):
        triggers = None
        if find_triggers and pool and len(flagged) and heads.suspicious.any():
            from .trigger_search import search_triggers

            if progress is not None:
                progress("triggers", 0, 1)
            triggers = search_triggers(model, tokenizer, heads.suspicious, [pool[i] for i in flagged], clean.texts,
                                       clean_labels=clean.labels, label_names=clean.label_names,
                                       max_length=max_length, seed=seed,
                                       should_stop=should_stop)
        words, marking, marked, moved = None, [], None, []
        if (find_triggers if read_pool_words is None else read_pool_words) and pool:
            from .trigger_search import marking_flip, marking_phrase, pool_word_marks

            words, marking, marked = pool_word_marks(model, tokenizer, pool, clean.texts, max_length,
                                                     clean_labels=clean.labels, seed=seed, max_clean_share=frr)
            flip, phrase = marking_flip(words, marking), marking_phrase(words, marking)
            verdict = with_trigger_words(verdict, marking, flip, phrase=phrase)  # the words' score and call
            if flags_verdict is not None:
                flags_verdict = with_trigger_words(flags_verdict, marking, flip, phrase=phrase)
            if first_pass is not None:
                first_pass["verdict"] = with_trigger_words(first_pass["verdict"], marking, flip, phrase=phrase)
            if base:
                from .trigger_search import moved_marking

                moved, moved_flip = moved_marking(model, tokenizer, base, clean.texts, pool, max_length, seed=seed)
                verdict = with_moved_words(verdict, moved, moved_flip)
                if flags_verdict is not None:
                    flags_verdict = with_moved_words(flags_verdict, moved, moved_flip)
                if first_pass is not None:
                    first_pass["verdict"] = with_moved_words(first_pass["verdict"], moved, moved_flip)
    stop_if(should_stop)  # a scan asked to stop gives no report
    if progress is not None:
        progress("done", 1, 1)
    flagged_stats = pool_stats.subset(flagged) if len(flagged) else None
    rep_share = att_missed_share = None
    if rep_det is not None and flagged_stats is not None:
        parts = det.parts(flagged_stats)  # (n_flagged, 2): attention, representation z on clean dev
        rep_share = float((parts[:, 1] > parts[:, 0]).mean())
        att_missed_share = float((~att_final.flag(att_final.score(flagged_stats))).mean())
    return ScanReport(
        model_name=model_name,
        num_layers=int(model.config.num_hidden_layers),
        num_heads=int(model.config.num_attention_heads),
        label_names=list(clean.label_names),
        verdict=verdict,
        aggregate=aggregate,
        threshold=float(det.threshold),
        frr_target=float(frr),
        clean_frr=det.clean_frr,
        n_clean_fit=len(fit_idx),
        n_clean_dev=len(dev_idx),
        clean_scores=det.clean_dev_scores,
        pool_texts=pool,
        pool_scores=pool_scores,
        pool_predictions=pool_stats.predictions if pool else np.zeros(0, int),
        flagged=flagged,
        heads=heads,
        first_pass=first_pass,
        layer_sim_clean=clean_stats.layer_sim.mean(0),
        layer_sim_flagged=None if flagged_stats is None else flagged_stats.layer_sim.mean(0),
        head_sim_clean=clean_stats.head_sim.mean(0),
        head_sim_flagged=None if flagged_stats is None else flagged_stats.head_sim.mean(0),
        seconds=time.perf_counter() - t0,
        settings={"frr": frr, "first_pass": first_pass_kind, "aggregate": aggregate, "length_adjust": length_adjust,
                  "fit_frac": fit_frac, "max_clean": max_clean, "seed": seed, "max_length": max_length,
                  "refine": first_pass is not None,
                  "refine_rounds": rounds, "representation": bool(representation),
                  "fuse": fuse if representation else None, "rep_method": rep_used,
                  "fuse_min_excess": fuse_min_excess if representation else None,
                  "fuse_drop": fuse_drop if representation and fuse_min_excess is not None else None,
                  "fused_parts": getattr(det, "parts_used", None),
                  "contrast_gated": gated,
                  "verdict_rep_method": ("mahalanobis" if verdict_rep is not rep_det else rep_used),
                  "verdict_rule": verdict_rule,
                  "verdict_shift_adjust": bool(verdict_shift_adjust),
                  "representation_skipped": (f"{len(fit_idx)} clean fit inputs < {S.REP_MIN_FIT}"
                                             if asked_representation and not representation else None),
                  **heads.rule},
        architecture=describe(model).to_dict(),
        detector=first_det,
        head_detector=head_det,
        representation_detector=rep_det,
        representation_share=rep_share,
        attention_missed_share=att_missed_share,
        attention_detector=att_first,
        attention_head_detector=att_final if head_det is not None else None,
        clean_fit_texts=[clean.texts[i] for i in fit_idx],
        clean_dev_texts=[clean.texts[i] for i in dev_idx],
        triggers=triggers,
        pool_words=words,
        marking_words=marking,
        pool_word_marked=marked,
        moved_words=moved,
        pool_probs=pool_stats.probs if pool else None,
        clean_probs=clean_stats.probs,
        clean_texts=list(clean.texts),
        verdict_inputs=verdict_inputs,
        flags_verdict=flags_verdict,
    )
