"""One registry for every defense that repairs a model, so the app, the CLI and the benchmark call them alike.

    result = run_defense("alignment", model, tokenizer, clean_train, pool_texts=pool,
                         evaluate=make_evaluator(...), callback=..., should_stop=...)
    result.model      # the repaired model (a copy unless copy=False)
    result.history    # training.train's history rows (step, losses, cacc/asr when evaluate is given)
    result.details    # what the defense decided (suspicious heads, pruned heads, ...)

``DEFENSES`` maps each name to a ``DefenseInfo`` (label, one-line description, knobs with defaults):

* ``alignment`` — ours: scan (trigger-agnostic) -> suspicious heads -> reset their output columns -> head-wise
  fine-tuning with CE + beta x attention alignment toward the safe heads, plus safe-head pseudo-labels on flagged
  inputs (``sanitize``).
* ``finetune`` — plain fine-tuning on the clean data.
* ``fineprune`` — prune the least active heads, then fine-tune.
* ``pure`` — PURE: [CLS]-variance head pruning + attention normalisation.
"""

from __future__ import annotations

import copy as _copy
import time
from functools import partial
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import settings as S
from .data import DataError, TextDataset, check_labels_match
from .detection import VERDICT_THRESHOLD, flags_score, heads_called
from .forward import Cancelled, stop_if, stoppable, stopping
from .models import class_names
from .training import Progress, TrainConfig


@dataclass
class DefenseInfo:
    name: str
    label: str
    description: str
    knobs: dict = field(default_factory=dict)  # name -> default


@dataclass
class DefenseResult:
    """``model``: the repaired model; ``history``: training rows; ``seconds``: wall time; ``details``: decisions.

    ``cancelled`` is True when ``should_stop`` ended training early (the model is then the last completed step).
    """

    model: object
    history: list[dict]
    seconds: float
    details: dict = field(default_factory=dict)
    cancelled: bool = False


@dataclass
class RetryProgress(Progress):
    """A training step of the clean-accuracy guard's head-only retry (``settings.CLEAN_GUARD``), as ``callback``
    gets it: ``step`` and ``total_steps`` run on after the first repair's ``first_steps`` (a chart of the steps
    goes on, it does not start again), so the retry's own are ``step - first_steps`` of
    ``total_steps - first_steps``. ``run_defense``'s ``progress`` gets ``GUARD_RETRY_STAGE`` first."""

    first_steps: int = 0


GUARD_RETRY_STAGE = "retrying the repair head-only (the clean-accuracy guard)"
"""The stage ``run_defense`` reports (``progress(GUARD_RETRY_STAGE, 0, 1)``) when the clean-accuracy guard trains
the repair again head-only; its steps then come as ``RetryProgress``."""


DEFENSES: dict[str, DefenseInfo] = {
    "alignment": DefenseInfo(
        "alignment", "Attention safety alignment (ours)",
        "Find suspicious heads without the trigger, reset their output, then fine-tune only them with "
        "cross-entropy plus an alignment term pulling their attention toward the safe heads of the same layer "
        "(flagged inputs get a label from the safe heads, from dropping the tokens the suspicious heads focus on, or "
        "else the runner-up class when the model puts them in the suspected target).",
        {"beta": S.BETA, "kind": S.ALIGN_KIND, "reset": S.RESET, "reset_to": S.RESET_TO, "reset_top_k": S.RESET_TOP_K,
         "pseudo_labels": S.PSEUDO_LABELS,
         "focus_labels": S.FOCUS_LABELS, "exclude_labels": S.EXCLUDE_LABELS,
         "exclude_direction": S.EXCLUDE_DIRECTION, "exclude_min_excess": S.EXCLUDE_MIN_EXCESS,
         "labels_leave_target": S.LABELS_LEAVE_TARGET, "labels_avoid_word_target": S.LABELS_AVOID_WORD_TARGET,
         "refine": S.REFINE, "heads": None,
         "frr": S.FRR, "rel_threshold": S.REL_THRESHOLD, "max_fraction": S.MAX_FRACTION, "top_k": None,
         "weak_verdict": S.WEAK_VERDICT, "weak_top_k": S.WEAK_TOP_K, "min_heads": S.REPAIR_MIN_HEADS,
         "head_only_max_heads": S.REPAIR_HEAD_ONLY_MAX_HEADS, "word_heads": S.REPAIR_WORD_HEADS,
         "lr": S.SANITIZE_LR, "epochs": S.SANITIZE_EPOCHS, "ffn": S.REPAIR_FFN,
         "ffn_max_layers": S.REPAIR_FFN_MAX_LAYERS, "retain": S.RETAIN_WEIGHT,
         "ffn_lr_scale": S.REPAIR_FFN_LR_SCALE, "ffn_mix": S.REPAIR_FFN_MIX, "repair_seeds": S.REPAIR_SEEDS,
         "representation": S.REPRESENTATION, "pool_words": S.REPAIR_POOL_WORDS,
         "trigger_share": S.TRIGGER_AUGMENT_SHARE, "rare_words": S.REPAIR_RARE_WORDS,
         "rare_words_share": S.REPAIR_RARE_WORDS_SHARE,
         "trigger_embedding_lr_scale": S.TRIGGER_EMBEDDING_LR_SCALE, "blind_trigger_tokens": S.BLIND_TRIGGER_TOKENS,
         "labels_from_words": S.LABELS_FROM_WORDS,
         "label_judge": S.LABEL_JUDGE,
         "judge_flags": S.JUDGE_FLAGS, "clean_guard": S.CLEAN_GUARD, "precision": S.REPAIR_PRECISION},
    ),
    "finetune": DefenseInfo(
        "finetune", "Fine-tuning", "Fine-tune the whole model on the clean data.",
        {"lr": S.BASELINE_LR, "epochs": S.BASELINE_EPOCHS},
    ),
    "fineprune": DefenseInfo(
        "fineprune", "Fine-pruning",
        "Prune the heads least active on clean data (20%), then fine-tune the rest.",
        {"prune_fraction": S.PRUNE_FRACTION, "lr": S.BASELINE_LR, "epochs": S.BASELINE_EPOCHS},
    ),
    "pure": DefenseInfo(
        "pure", "PURE",
        "Prune heads with near-uniform [CLS] attention (accuracy-guarded), then fine-tune with a [CLS] attention "
        "normalisation term.",
        {"lam": S.PURE_LAMBDA, "group": S.PURE_GROUP, "acc_margin": S.PURE_ACC_MARGIN,
         "max_fraction": S.PURE_MAX_FRACTION, "lr": S.BASELINE_LR, "epochs": S.BASELINE_EPOCHS},
    ),
}


def gate_lines(weak_verdict: float = S.WEAK_VERDICT) -> tuple[float, float]:
    """The scores at which our repair's gates switch, read on ``detection.flags_score(ScanReport.gate_verdict)``:
    ``VERDICT_THRESHOLD`` (0.5: the reset starts from the pretrained encoder below it, ``settings.RESET_TO`` "auto";
    the feed-forward blocks may train only at or above it, ``settings.REPAIR_FFN`` "auto") and ``weak_verdict``
    (below it the weak-evidence cap narrows the heads, ``settings.WEAK_VERDICT``)."""
    return (VERDICT_THRESHOLD, float(weak_verdict))


def gates_crossed(before: float | None, after: float | None,
                  weak_verdict: float = S.WEAK_VERDICT) -> list[float]:
    """The lines of ``gate_lines`` that lie between two gate scores (a scan re-run under a newer rule against the
    one a repair read): where one does, the repair would now run otherwise; empty when they agree or one is
    missing."""
    if before is None or after is None:
        return []
    return [t for t in gate_lines(weak_verdict) if (float(before) >= t) != (float(after) >= t)]


def _config(config: TrainConfig | None, knobs: dict, default_factory) -> TrainConfig:
    if config is not None:
        return config
    return default_factory(lr=knobs.pop("lr", None), epochs=knobs.pop("epochs", None),
                           max_length=knobs.pop("max_length", None), seed=knobs.pop("seed", None),
                           batch_size=knobs.pop("batch_size", None), max_steps=knobs.pop("max_steps", None),
                           eval_every=knobs.pop("eval_every", None),
                           group_by_length=knobs.pop("group_by_length", None),
                           precision=knobs.pop("precision", None))


def run_defense(
    name: str,
    model,
    tokenizer,
    clean_train: TextDataset,
    *,
    pool_texts: Sequence[str] | None = None,
    config: TrainConfig | None = None,
    evaluate: Callable | None = None,
    callback: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    copy: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    **knobs,
) -> DefenseResult:
    """Run defense ``name`` (a key of ``DEFENSES``) on ``model`` with the defender's clean data.

    Args:
        clean_train: the defender's clean labelled set (its labels must match the model's).
        pool_texts: unlabelled, possibly triggered inputs (used by ``alignment`` only).
        config: full training settings; when None the defense's defaults apply, with ``lr``, ``epochs``,
            ``max_length``, ``seed``, ``batch_size``, ``max_steps``, ``eval_every`` taken from ``knobs``.
        copy: work on a deep copy (default) so the caller keeps the suspect model for before/after.
        progress: ``progress(stage, done, total)`` for what ``alignment`` does before its training steps (which
            ``callback`` reports): its scan's stages (``scan.ProgressFn``), then ``"labels"`` (the pool's words,
            the pseudo-labels and their judge). A long silence before the first step is what it is for. When the
            clean-accuracy guard retries the repair head-only, ``GUARD_RETRY_STAGE`` before the retry (whose
            steps ``callback`` gets as ``RetryProgress``, running on after the first repair's).
        should_stop: Cancel, checked between training steps and before every batch of every forward pass
            (``forward.stopping``): in the stages before training it raises ``forward.Cancelled``, the model
            untouched; later the result says ``cancelled`` (a Cancel during the guard's head-only retry keeps the
            finished first repair).
        knobs: the defense's own settings (see ``DEFENSES[name].knobs``). For ``alignment``: ``heads`` (labels
            like ``["L3H7"]`` or an ``(L, H)`` bool array) skips the scan; ``scan`` reuses a ``ScanReport``;
            ``reuse_scan=True`` also takes the unrepaired model's probabilities from that report's forward passes
            and ``measure_align=False`` skips the before/after alignment measurement (the guided tour's cuts,
            ``settings.TOUR_SANITIZE``; off by default). Without ``heads`` and a caller's split
            (``rel_threshold`` / ``max_fraction`` / ``top_k``), a scan whose verdict is below ``weak_verdict``
            has its repair narrowed to the ``weak_top_k`` best heads (``head_safety.repair_heads``); ``details``
            then says so under ``weak_evidence_cap``. A set smaller than ``min_heads`` is widened to that many of
            the highest-scoring heads (``details["min_heads_widened"]``). A repair that trains no feed-forward
            block keeps at most ``head_only_max_heads`` of its heads, the highest-scoring
            (``head_safety.cap_heads``, ``details["head_only_cap"]``; ``settings.REPAIR_HEAD_ONLY_MAX_HEADS``).
            ``rare_words`` > 0 draws that many vocabulary words no clean text holds and inserts them into
            ``rare_words_share`` of each class's clean texts, labels kept (``settings.REPAIR_RARE_WORDS``; off).
            ``word_heads`` > 0 adds that many heads, those that attend most to the pool's likely trigger words
            (``head_safety.word_heads``, ``add_word_heads``; ``details["word_heads"]``; off by default).
            ``reset_top_k`` > 0 zeroes only that many of the repaired heads first, the best-scoring
            (``head_safety.reset_heads``; given ``heads`` are all reset); ``details["reset_heads"]`` names them.
            ``reset_to="pretrained"`` restores them from the pretrained encoder ``base`` (default ``"default"``)
            instead, when ``pretrained.find_pretrained`` confirms it is the model's starting point (else zero;
            ``details["reset_to"]`` and ``details["pretrained_note"]`` say which and why); ``"auto"`` does so only
            when the scan's verdict does not call the model backdoored (``settings.RESET_TO``).
    """
    if name not in DEFENSES:
        raise ValueError(f"Unknown defense '{name}'; choose one of {', '.join(DEFENSES)}.")
    if clean_train is None or len(clean_train) == 0:
        raise DataError("The clean set is empty: every defense needs clean labelled samples.")
    check_labels_match(clean_train, int(model.config.num_labels), class_names(model))
    if name != "finetune":  # head-wise defenses: refuse shared-layer models (ALBERT) before any work
        from .architecture import require_head_repair

        require_head_repair(model, DEFENSES[name].label)
    t0 = time.perf_counter()
    work = _copy.deepcopy(model) if copy else model
    knobs = dict(knobs)
    texts, labels = list(clean_train.texts), list(clean_train.labels)
    common = dict(evaluate=evaluate, callback=callback, should_stop=should_stop)

    if name == "finetune":
        from .baselines.finetune import default_config, finetune

        cfg = _config(config, knobs, default_config)
        _reject_unknown(name, knobs)
        res = finetune(work, tokenizer, texts, labels, cfg, **common)
        details = {"clean_samples": len(texts)}
    elif name == "fineprune":
        from .baselines.fineprune import DEFAULT_PRUNE_FRACTION, fineprune
        from .baselines.finetune import default_config
        from .head_metrics import mask_labels

        cfg = _config(config, knobs, default_config)
        frac = float(knobs.pop("prune_fraction", DEFAULT_PRUNE_FRACTION))
        _reject_unknown(name, knobs)
        res, pruned = fineprune(work, tokenizer, texts, labels, cfg, prune_fraction=frac, **common)
        details = {"pruned_heads": mask_labels(pruned),
                   "prune_fraction": frac, "clean_samples": len(texts)}
    elif name == "pure":
        from .baselines.finetune import default_config
        from .baselines.pure import pure

        cfg = _config(config, knobs, default_config)
        opts = {k: knobs.pop(k) for k in ("lam", "group", "min_acc", "acc_margin", "max_fraction",
                                                    "val_frac") if k in knobs}
        _reject_unknown(name, knobs)
        res, details = pure(work, tokenizer, texts, labels, cfg, seed=cfg.seed, **opts, **common)
    else:  # alignment
        res, details = _alignment(work, tokenizer, clean_train, pool_texts, config, knobs, common, progress)

    details.setdefault("defense", name)
    return DefenseResult(model=work, history=list(res.history), seconds=time.perf_counter() - t0,
                         details=details, cancelled=bool(res.cancelled))


def _reject_unknown(name: str, knobs: dict) -> None:
    if knobs:
        raise ValueError(f"Unknown setting(s) for {name}: {', '.join(sorted(knobs))}. "
                         f"Known: {', '.join(DEFENSES[name].knobs)}.")


def _alignment(model, tokenizer, clean_train: TextDataset, pool_texts, config, knobs: dict, common: dict,
               progress: Callable[[str, int, int], None] | None = None):
    from .head_metrics import heads_to_mask
    from .head_safety import (DEFAULT_MAX_FRACTION, DEFAULT_REL_THRESHOLD, cap_heads, repair_heads, reset_heads,
                              split_heads)
    from .sanitize import (DEFAULT_BETA, DEFAULT_EXCLUDE_LABELS, DEFAULT_FOCUS_LABELS, DEFAULT_POOL_BUDGET,
                           DEFAULT_PSEUDO_LABELS, DEFAULT_RESET, default_config, ffn_layers, sanitize_heads)
    from .scan import scan_model

    cfg = _config(config, knobs, default_config)
    beta = float(knobs.pop("beta", DEFAULT_BETA))
    kind = str(knobs.pop("kind", S.ALIGN_KIND))
    reset = bool(knobs.pop("reset", DEFAULT_RESET))
    reset_top_k = int(knobs.pop("reset_top_k", S.RESET_TOP_K) or 0)
    if reset_top_k < 0:
        raise ValueError("reset_top_k must be 0 (every repaired head) or more.")
    reset_to_asked = reset_to = str(knobs.pop("reset_to", S.RESET_TO))
    if reset_to not in S.RESET_TOS:
        raise ValueError(f"reset_to must be one of {', '.join(S.RESET_TOS)}, got '{reset_to}'.")
    base = knobs.pop("base", None)
    label_judge = str(knobs.pop("label_judge", S.LABEL_JUDGE))
    if label_judge not in S.LABEL_JUDGES:
        raise ValueError(f"label_judge must be one of {', '.join(S.LABEL_JUDGES)}, got '{label_judge}'.")
    pseudo = bool(knobs.pop("pseudo_labels", DEFAULT_PSEUDO_LABELS))
    focus = bool(knobs.pop("focus_labels", DEFAULT_FOCUS_LABELS))
    exclude = bool(knobs.pop("exclude_labels", DEFAULT_EXCLUDE_LABELS))
    exclude_direction = bool(knobs.pop("exclude_direction", S.EXCLUDE_DIRECTION))
    exclude_min_excess = float(knobs.pop("exclude_min_excess", S.EXCLUDE_MIN_EXCESS))
    leave_target = bool(knobs.pop("labels_leave_target", S.LABELS_LEAVE_TARGET))
    avoid_word_target = bool(knobs.pop("labels_avoid_word_target", S.LABELS_AVOID_WORD_TARGET))
    labels_from_words = bool(knobs.pop("labels_from_words", S.LABELS_FROM_WORDS))
    label_excess = bool(knobs.pop("label_excess", S.LABEL_EXCESS))
    ffn = knobs.pop("ffn", S.REPAIR_FFN)
    ffn_max_layers = knobs.pop("ffn_max_layers", S.REPAIR_FFN_MAX_LAYERS)
    retain = float(knobs.pop("retain", S.RETAIN_WEIGHT))
    ffn_lr_scale = float(knobs.pop("ffn_lr_scale", S.REPAIR_FFN_LR_SCALE))
    ffn_mix = float(knobs.pop("ffn_mix", S.REPAIR_FFN_MIX))
    repair_seeds = int(knobs.pop("repair_seeds", S.REPAIR_SEEDS))
    heads = knobs.pop("heads", None)
    weak_verdict = float(knobs.pop("weak_verdict", S.WEAK_VERDICT))
    weak_top_k = int(knobs.pop("weak_top_k", S.WEAK_TOP_K) or 0)
    min_heads = int(knobs.pop("min_heads", S.REPAIR_MIN_HEADS) or 0)
    head_only_cap = int(knobs.pop("head_only_max_heads", S.REPAIR_HEAD_ONLY_MAX_HEADS) or 0)
    if head_only_cap < 0:
        raise ValueError("head_only_max_heads must be 0 (off) or more.")
    report = knobs.pop("scan", None)
    use_pool_words = bool(knobs.pop("pool_words", S.REPAIR_POOL_WORDS))
    word_heads_k = int(knobs.pop("word_heads", S.REPAIR_WORD_HEADS) or 0)
    if word_heads_k < 0:
        raise ValueError("word_heads must be 0 (off) or more.")
    trigger_share = float(knobs.pop("trigger_share", S.TRIGGER_AUGMENT_SHARE))
    rare_k = int(knobs.pop("rare_words", S.REPAIR_RARE_WORDS) or 0)
    rare_share = float(knobs.pop("rare_words_share", S.REPAIR_RARE_WORDS_SHARE))
    if rare_k < 0:
        raise ValueError("rare_words must be 0 (off) or more.")
    if not 0.0 <= rare_share <= 1.0:
        raise ValueError(f"rare_words_share is a share of the clean texts (0 to 1), got {rare_share:g}.")
    trigger_embedding_lr_scale = float(knobs.pop("trigger_embedding_lr_scale", S.TRIGGER_EMBEDDING_LR_SCALE))
    if not trigger_embedding_lr_scale >= 0:
        raise ValueError("trigger_embedding_lr_scale must be 0 (off) or more.")
    blind_tokens = bool(knobs.pop("blind_trigger_tokens", S.BLIND_TRIGGER_TOKENS))
    pool_budget = int(knobs.pop("pool_budget", DEFAULT_POOL_BUDGET))
    judge_flags = bool(knobs.pop("judge_flags", S.JUDGE_FLAGS))
    judge_min_conf = float(knobs.pop("judge_flags_min_conf", S.JUDGE_FLAGS_MIN_CONF))
    if not 0.0 <= judge_min_conf <= 1.0:
        raise ValueError(f"judge_flags_min_conf is a probability (0 to 1), got {judge_min_conf:g}.")
    judge_prior = bool(knobs.pop("judge_flags_prior", S.JUDGE_FLAGS_PRIOR))
    clean_guard = bool(knobs.pop("clean_guard", S.CLEAN_GUARD))
    guard_share = float(knobs.pop("clean_guard_share", S.CLEAN_GUARD_SHARE))
    guard_max_drop = float(knobs.pop("clean_guard_max_drop", S.CLEAN_GUARD_MAX_DROP))
    if not 0.0 < guard_share < 1.0:
        raise ValueError(f"clean_guard_share is a share of the clean texts (above 0, below 1), got {guard_share:g}.")
    if not 0.0 <= guard_max_drop <= 1.0:
        raise ValueError(f"clean_guard_max_drop is an accuracy drop (0 to 1), got {guard_max_drop:g}.")
    # the guided tour's cuts (settings.TOUR_SANITIZE; hidden knobs, the defaults keep the full behaviour)
    measure_align = bool(knobs.pop("measure_align", True))
    reuse_scan = bool(knobs.pop("reuse_scan", False))
    scan_opts = {k: knobs.pop(k) for k in ("frr", "rel_threshold", "max_fraction", "top_k", "aggregate",
                                          "fallback_frac", "max_clean", "refine", "refine_rounds", "representation",
                                          "fuse") if k in knobs}
    _reject_unknown("alignment", knobs)
    L, H = int(model.config.num_hidden_layers), int(model.config.num_attention_heads)
    pool = [str(t) for t in (pool_texts or [])]
    scan_seconds = 0.0
    weak_cap = widened = capped = None
    if heads is not None:
        if isinstance(heads, str):
            heads = [h for h in heads.replace(" ", ",").split(",") if h]
        if isinstance(heads, np.ndarray) and heads.shape == (L, H):
            mask = heads.astype(bool)
        else:
            mask = heads_to_mask(list(heads), L, H)
        flagged = pool
        flagged_idx = list(range(len(pool)))
        basis = "given"
    else:
        if report is None:
            t = time.perf_counter()
            # the repair reads no candidate triggers: naming them (and the pool's words) would be 40% of the scan
            report = scan_model(model, tokenizer, clean_train, pool, max_length=cfg.max_length, seed=cfg.seed,
                                should_stop=common.get("should_stop"), find_triggers=False, progress=progress,
                                **scan_opts)
            scan_seconds = time.perf_counter() - t
        split_opts = {k: scan_opts[k] for k in ("rel_threshold", "max_fraction", "top_k") if k in scan_opts}
        if split_opts:  # the caller chose the split: no weak-evidence cap
            mask = report.heads.suspicious
            if scan_seconds == 0.0:  # a given report, re-split with the asked-for rule
                mask = split_heads(report.heads.score, split_opts.get("rel_threshold", DEFAULT_REL_THRESHOLD),
                                   split_opts.get("max_fraction", DEFAULT_MAX_FRACTION), split_opts.get("top_k"))
        else:
            gate = flags_score(report.gate_verdict)
            narrowed = repair_heads(report.heads, gate, weak_verdict, weak_top_k, 0)
            mask = repair_heads(report.heads, gate, weak_verdict, weak_top_k, min_heads)
            if not np.array_equal(narrowed, report.heads.suspicious):
                weak_cap = {"verdict": gate, "weak_verdict": weak_verdict,
                            "weak_top_k": weak_top_k, "scan_heads": list(report.heads.suspicious_labels)}
            if not np.array_equal(mask, narrowed):
                widened = {"min_heads": min_heads, "from": int(narrowed.sum()), "to": int(mask.sum()),
                           "max_fraction": float(report.heads.rule.get("max_fraction", DEFAULT_MAX_FRACTION))}
            if head_only_cap and int(mask.sum()) > head_only_cap and not ffn_layers(
                    ffn, mask, report.attention_missed_share, ffn_max_layers,
                    backdoor_found=None if gate is None else gate >= VERDICT_THRESHOLD):
                capped = {"max_heads": head_only_cap, "from": int(mask.sum()), "to": head_only_cap}
                mask = cap_heads(report.heads.score, mask, head_only_cap)
        flagged = report.flagged_texts
        flagged_idx = [int(i) for i in report.flagged]
        basis = report.heads.basis
    if not np.asarray(mask).any():
        raise ValueError("The scan found no suspicious heads to repair (nothing scored above zero); choose the "
                         "heads yourself (the CLI's --heads, the Sanitize page's heads field).")
    flagged, flagged_idx = flagged[:pool_budget], flagged_idx[:pool_budget]
    label_limit = None
    if label_excess and report is not None and heads is None:  # the scan's flags come highest score first
        from .sanitize import excess_flags
        label_limit = excess_flags(len(report.flagged), len(pool), max(report.frr_target, report.clean_frr))
    found_words, likely, word_targets = [], [], []
    stop = common.get("should_stop")
    stop_if(stop)  # Cancel during the stages before training ends the repair there (it had run on for minutes)
    if progress is not None:
        progress("labels", 0, 1)
    if use_pool_words and pool:  # the words that mark triggered inputs: likely triggers rare in the clean texts
        from .trigger_search import likely_trigger_words
        if report is not None and report.pool_words is not None and list(report.pool_texts) == pool:
            found_words, marking = report.pool_words, report.marking_words  # the scan already read them
        else:
            from .trigger_search import pool_word_marks
            # a scan of these clean texts (the repair's own, or a caller's) already predicted them
            known = (np.asarray(report.clean_probs).argmax(1) if report is not None and report.clean_probs is not None
                     and report.clean_texts == list(clean_train.texts) else None)
            with stopping(stop):  # its predictions check Cancel before each batch
                found_words, marking, _ = pool_word_marks(model, tokenizer, pool, clean_train.texts, cfg.max_length,
                                                          clean_labels=clean_train.labels, seed=cfg.seed,
                                                          max_clean_share=float(scan_opts.get("frr", S.FRR)),
                                                          base_classes=known, only_marking=True)
        # the repair inserts the likely words themselves, not their companions (trigger_search.companion_words):
        # sharing the inserted texts with words the model barely learnt left more ASR on the tuning zoo
        # (bench/results/archive/defense_s48comp.md)
        strong = {w.word for w in likely_trigger_words(found_words)}
        likely = [(w.word, w.target) for w in found_words if w.word in marking and w.word in strong]
        if avoid_word_target:  # no pool input holding a marking word (companions too) is labelled its target
            word_targets = [(w.word, w.target) for w in found_words if w.word in marking]
    word_heads_added = None
    stop_if(stop)
    if word_heads_k and likely and heads is None:  # the heads the likely words capture train too
        from .head_safety import add_word_heads, word_heads
        with stopping(stop):
            conc = word_heads(model, tokenizer, clean_train.texts, [w for w, _ in likely], cfg.max_length,
                              seed=cfg.seed)
        widened_mask = add_word_heads(mask, conc, word_heads_k)
        new = widened_mask & ~np.asarray(mask, dtype=bool)  # (L, H) the heads the words added
        if new.any():
            from .head_metrics import mask_labels
            word_heads_added = {"k": word_heads_k, "words": [w for w, _ in likely], "heads": mask_labels(new),
                                "attention": [round(float(conc[l, h]), 4) for l, h in np.argwhere(new)]}
            mask = widened_mask
    rare_words = []
    if rare_k:  # words no clean text holds, read with the clean texts' own labels (settings.REPAIR_RARE_WORDS)
        from .trigger_search import absent_vocabulary
        rare_words = absent_vocabulary(tokenizer, clean_train.texts, rare_k, seed=cfg.seed,
                                       exclude=[w for w, _ in likely])
    reused = {}
    if reuse_scan and report is not None and report.pool_probs is not None and heads is None:
        # the scan's forward passes already gave the unrepaired model's probabilities on the flagged inputs and
        # on its clean texts: the label rules skip two passes (same model, same reading length)
        reused = {"pool_probs": np.asarray(report.pool_probs)[flagged_idx], "clean_probs": report.clean_probs}
    # given heads have no score to rank them by: each is reset
    reset_arg = reset_heads(report.heads.score, mask, reset_top_k) if reset and heads is None else reset
    pretrained, pretrained_note = None, None
    # the verdict's score of the flags the repair trains on (detection.flags_score); None without a scan
    flags = None if report is None else flags_score(report.gate_verdict)
    if reset and reset_to == "auto":  # pretrained only where that score does not call the model backdoored
        reset_to = "pretrained" if heads is None and flags is not None and flags < VERDICT_THRESHOLD else "zero"
    if reset and reset_to == "pretrained":  # else zero (the note says why)
        from .pretrained import find_pretrained
        pretrained, pretrained_note = find_pretrained(model, base)
    ffn_base, ffn_mix_note = None, None
    if ffn_mix > 0:  # the feed-forward mix's pretrained encoder (settings.REPAIR_FFN_MIX), looked up before the repair
        from .pretrained import find_pretrained
        ffn_base, ffn_mix_note = (pretrained, "") if pretrained is not None else find_pretrained(model, base)
    # the pool the scan read (a reused scan, e.g. the Detect page's, brings its own): its flags index into it
    read_pool = list(report.pool_texts) if report is not None and report.pool_texts is not None else pool
    extra_idx, extra_labels, judge_flag_info, judge_flags_note = [], [], None, None
    if judge_flags and not read_pool:
        judge_flags_note = "there is no unlabelled pool to read."
    elif judge_flags and (report is None or report.pool_probs is None):
        judge_flags_note = "the heads were given, so no scan read the pool."
    judge, judge_note = None, None
    stop_if(stop)
    wants_judge = label_judge != "none" and bool(flagged)
    if wants_judge or (judge_flags and judge_flags_note is None):
        from .pretrained import find_pretrained
        from .reference import judge_probs
        weights, why = (pretrained, None) if pretrained is not None else find_pretrained(model, base)
        why = why or None  # find_pretrained gives "" when it found the encoder
        judge_note = why if wants_judge else None
        if judge_flags and judge_flags_note is None:
            judge_flags_note = why
        pool_judge = None  # (len(read_pool), C): the judge on the whole pool, when judge-led labels read it
        if weights is not None and judge_flags and judge_flags_note is None:
            from .reference import disagreement_labels
            try:
                pool_judge = stoppable(judge_probs, stop)(model, tokenizer, weights, clean_train.texts,
                                                          clean_train.labels, read_pool, cfg.max_length)
            except ValueError as exc:  # e.g. clean texts of one class: no judge, no judge-led labels
                judge_flags_note = str(exc)
            else:
                idx, labs, judge_flag_info = disagreement_labels(
                    np.asarray(report.pool_probs), pool_judge, min_conf=judge_min_conf,
                    prior=np.bincount(np.asarray(clean_train.labels, dtype=np.int64),
                                      minlength=pool_judge.shape[1]) / len(clean_train.labels)
                    if judge_prior else None)
                taken = set(flagged_idx)
                extra_idx = [i for i in idx if i not in taken]
                extra_labels = [y for i, y in zip(idx, labs) if i not in taken]
        if weights is not None and wants_judge:
            # the same judge on the flagged inputs: its rows of the pool when already fit, else fit lazily
            # (sanitize_heads fits it only when there are labels to check, or with fill)
            judge = (pool_judge[flagged_idx] if pool_judge is not None else
                     partial(judge_probs, model, tokenizer, weights, clean_train.texts, clean_train.labels, flagged,
                             cfg.max_length))
    stop_if(stop)
    repair_set, held = clean_train, None
    guard = None  # what the clean-accuracy guard measured (settings.CLEAN_GUARD)
    if clean_guard:
        from .defender_data import held_out_split
        kept_idx, held_idx = held_out_split(clean_train.labels, guard_share, cfg.seed)
        if len(held_idx) < S.CLEAN_GUARD_MIN_HELD:
            guard = {"note": f"{len(clean_train)} clean texts leave {len(held_idx)} to hold out "
                             f"(the guard needs {S.CLEAN_GUARD_MIN_HELD})."}
        else:
            repair_set, held = clean_train.subset(kept_idx), clean_train.subset(held_idx)
            with stopping(stop):
                guard = {"held_out": len(held_idx), "max_drop": guard_max_drop,
                         "acc_before": _accuracy(model, tokenizer, held, cfg.max_length)}

    def repair(ffn_spec, step_offset=None):
        hooks = dict(common)
        if step_offset is not None and common.get("callback") is not None:  # the guard's retry: its steps run on
            hooks["callback"] = lambda p: common["callback"](RetryProgress(  # after the first repair's
                **{**vars(p), "step": p.step + step_offset, "total_steps": p.total_steps + step_offset},
                first_steps=step_offset))
        return sanitize_heads(
            model, tokenizer, repair_set.texts, repair_set.labels, mask, flagged, beta=beta, kind=kind, config=cfg,
            reset=reset_arg, pseudo_labels=pseudo, focus_labels=focus, exclude_labels=exclude,
            exclude_direction=exclude_direction, exclude_min_excess=exclude_min_excess,
            labels_leave_target=leave_target, ffn=ffn_spec,
            ffn_max_layers=ffn_max_layers, retain=retain, ffn_lr_scale=ffn_lr_scale, ffn_mix=ffn_mix,
            ffn_base=ffn_base,
            attention_missed_share=None if report is None else report.attention_missed_share,
            backdoor_found=None if flags is None else flags >= VERDICT_THRESHOLD,
            measure_align=measure_align, repair_seeds=repair_seeds, trigger_words=likely,
            trigger_share=trigger_share, rare_words=rare_words, rare_share=rare_share,
            trigger_embedding_lr_scale=trigger_embedding_lr_scale,
            blind_trigger_tokens=blind_tokens, word_labels=labels_from_words,
            word_targets=word_targets, label_limit=label_limit, pretrained=pretrained,
            label_judge=label_judge,
            judge_probs=judge, extra_pool=[(read_pool[i], y) for i, y in zip(extra_idx, extra_labels)], **reused,
            **hooks)

    start = _state_copy(model) if held is not None else None
    res = repair(ffn)
    if held is not None:
        # Cancel (also one that ended the training) stops the guard's passes at their next batch: the repair is
        # then cancelled, unmeasured on the held-out texts (None), and the guard does not fire
        guard["acc_after"] = _guard_accuracy(model, tokenizer, held, cfg.max_length, stop)
        if guard["acc_after"] is None:
            res = replace(res, cancelled=True)
        guard["fired"] = bool(not res.cancelled and res.details.get("ffn_layers")
                              and guard["acc_before"] - guard["acc_after"] >= guard_max_drop - 1e-9)
        guard["kept"] = "first"
        if guard["fired"]:  # the same repair head-only, from the same start; keep the better held-out accuracy
            first, first_state = res, _state_copy(model)
            model.load_state_dict(start)
            if progress is not None:  # the retry's labels take a while before its first step
                progress(GUARD_RETRY_STAGE, 0, 1)
            try:
                res = repair("none", step_offset=first.steps)
            except Cancelled:  # Cancel in the retry's stages before training: it never trained
                res = None
            guard["acc_head_only"] = (None if res is None or res.cancelled else
                                      _guard_accuracy(model, tokenizer, held, cfg.max_length, stop))
            guard["first_ffn_layers"] = first.details.get("ffn_layers")
            if guard["acc_head_only"] is None or guard["acc_head_only"] < guard["acc_after"]:
                model.load_state_dict(first_state)  # a cancelled retry keeps the (finished) first repair
                res = first
            else:
                guard["kept"] = "head_only"
            del first_state
        del start
    details = {
        "suspicious_heads": res.suspicious_heads,
        "head_basis": basis,
        "flagged_used": len(flagged),
        # which pool inputs (indices into ``pool_texts``) joined the repair and the label each got (-100: none)
        "flagged_indices": flagged_idx + extra_idx,
        "judge_flagged": len(extra_idx), "judge_flag_info": judge_flag_info,
        "judge_flags": judge_flags, "judge_flags_note": judge_flags_note or None,
        "judge_flags_min_conf": judge_min_conf if judge_flags else None,
        "judge_flags_prior": judge_prior if judge_flags else None,
        "flagged_labels": list(res.details.get("pool_labels", [])),
        "beta": beta,
        "kind": kind,
        "reset": reset,
        "reset_top_k": reset_top_k,
        "min_heads": min_heads,
        "head_only_max_heads": head_only_cap,
        "reset_heads": res.details["reset_heads"],
        "reset_to_asked": reset_to_asked if reset else None,
        "pretrained_note": pretrained_note or None,
        "label_judge_asked": label_judge,
        "judge_note": judge_note or res.details.get("judge_note"),
        "pseudo_labels": pseudo,
        "focus_labels": focus,
        "exclude_labels": exclude,
        "label_excess": label_excess,
        "ffn": ffn,
        "align_before": res.align_before,
        "align_after": res.align_after,
        "frozen_unchanged": res.frozen_unchanged,
        "scan_seconds": scan_seconds,
        **{k: v for k, v in res.details.items() if k not in ("beta", "kind", "pool_labels", "judge_note")},
    }
    details["pool_words"] = [asdict(w) for w in found_words] if use_pool_words and pool else None
    if reused:
        details["reused_scan_passes"] = True
    details["weak_evidence_cap"] = weak_cap
    details["min_heads_widened"] = widened
    details["head_only_cap"] = capped
    details["word_heads"] = word_heads_added
    details["ffn_mix_note"] = ffn_mix_note or None
    details["clean_guard"] = guard
    if report is not None:
        details["verdict"] = report.verdict
        details["gate_score"] = flags  # what the gates read (gate_lines), the shown verdict's aside
        details["attention_missed_share"] = report.attention_missed_share
    return res, details


def _accuracy(model, tokenizer, data: TextDataset, max_length: int) -> float:
    """Accuracy of ``model`` on ``data`` (one forward pass, ``forward.predict``; ``metrics.accuracy``)."""
    from .forward import predict
    from .metrics import accuracy
    return accuracy(predict(model, tokenizer, data.texts, max_length).argmax(1), data.labels)


def _guard_accuracy(model, tokenizer, held: TextDataset, max_length: int, should_stop) -> float | None:
    """``_accuracy`` on the clean-accuracy guard's held-out texts, or None when Cancel (``should_stop``, checked
    before each batch) stopped it."""
    try:
        with stopping(should_stop):
            return _accuracy(model, tokenizer, held, max_length)
    except Cancelled:
        return None


def _state_copy(model) -> dict:
    """A detached copy of ``model``'s state dict, to restore with ``load_state_dict``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _guard_note(guard: dict) -> str:
    """One sentence on what the clean-accuracy guard (``settings.CLEAN_GUARD``) measured and decided."""
    if "held_out" not in guard:
        return f"No clean-accuracy guard: {guard.get('note')}"
    head = (f"Clean-accuracy guard: {guard['held_out']} clean texts were held out of the repair; the model got "
            f"{guard['acc_before']:.1%} of them right before")
    if guard.get("acc_after") is None:
        return head + "; Cancel stopped the repair before the guard measured it."
    head += f" and {guard['acc_after']:.1%} after"
    if not guard.get("fired"):
        return head + "."
    layers = ", ".join(map(str, guard.get("first_ffn_layers") or []))
    head += (f" training the feed-forward blocks of layers {layers} (a drop of {100 * guard['max_drop']:g} points "
             f"or more), so the repair was trained again head-only from the same start")
    if guard.get("acc_head_only") is None:
        return head + ", but Cancel stopped that retry: the first repair was kept."
    head += f" ({guard['acc_head_only']:.1%} right)"
    return head + (": the head-only repair was kept." if guard.get("kept") == "head_only"
                   else ": it did worse, so the first repair was kept.")


def repair_notes(details: dict) -> list[str]:
    """Plain sentences on what our repair decided beyond the heads (for the ``sanitize`` CLI and the Sanitize page):
    which layers' feed-forward blocks trained too and why (``settings.REPAIR_FFN``), and whether the safe-head
    labels were skipped (``settings.GATE_MAX_ACCURACY_DROP``), which heads were reset (``settings.RESET_TOP_K``),
    whether several repairs were averaged (``settings.REPAIR_SEEDS``), what the clean-accuracy guard measured and
    kept (``settings.CLEAN_GUARD``), which likely trigger words the clean texts carried (``pool_words``) and how
    many labels they dropped (``word_target_dropped``) or set (``word_labelled``), that a scan which found no
    backdoor gave it only chance flags or read a pool unlike the clean texts (``detection.pool_shift_note``), and how
    far the alignment term moved (``align_before`` / ``align_after``: the repair measures it before and after on up
    to 64 flagged and 64 clean texts). Empty for the baselines."""
    notes = []
    layers = details.get("ffn_layers")
    missed = details.get("attention_missed_share")
    if layers:
        why = (f" (the attention-only detector would miss {missed:.0%} of the flagged inputs)"
               if str(details.get("ffn")).lower() == "auto" and missed is not None else "")
        scale = details.get("ffn_lr_scale")
        pace = f", at {scale:g} x the heads' learning rate" if scale is not None and scale != 1 else ""
        notes.append(f"Feed-forward blocks of layers {', '.join(map(str, layers))} trained too{why}{pace}.")
    elif details.get("suspicious_heads") is not None:
        notes.append("Head-only repair: no feed-forward block trained.")
    reset, repaired = details.get("reset_heads"), details.get("suspicious_heads") or []
    if not details.get("reset", True):
        notes.append("No head was reset: the repaired heads trained from their own weights.")
    elif reset is not None and repaired and len(reset) < len(repaired):
        start = "their pretrained weights" if details.get("reset_to") == "pretrained" else "zero output"
        notes.append(f"Only the {len(reset)} highest-scoring of the {len(repaired)} repaired heads started from "
                     f"{start} ({', '.join(reset) or 'none'}); the others trained from their own weights.")
    if details.get("reset", True) and reset:
        why = ("; the scan did not call the model backdoored" if details.get("reset_to_asked") == "auto" else "")
        if details.get("reset_to") == "pretrained":
            source = details.get("pretrained_source")
            source = "the packaged all-MiniLM-L6-v2" if source == "default" else source
            notes.append(f"The reset heads restarted from the pretrained encoder's weights, not from zero ({source}, "
                         f"{details.get('pretrained_distance')} away from the model{why}).")
        elif details.get("pretrained_note"):
            notes.append(f"The reset heads restarted from zero: {details.get('pretrained_note')}")
    if details.get("judge_flags"):
        info = details.get("judge_flag_info") or {}
        if details.get("judge_flags_note"):
            notes.append(f"No judge-led labels: {details['judge_flags_note']}")
        elif details.get("judge_flagged"):
            notes.append(f"The judge contradicted the model on more of the pool inputs it puts in class "
                         f"{info.get('target')} than elsewhere ({info.get('z')} standard errors): "
                         f"{details['judge_flagged']} of them, beyond the scan's flags, joined the repair with the "
                         "judge's label (a paraphrase or style trigger has no words to find)"
                         + (f"; {info['unsure']} the judge was unsure of were left out." if info.get("unsure")
                            else "."))
        else:
            notes.append("The judge contradicted the model no more often in one class than in the others "
                         f"(z = {info.get('z')}, below {S.JUDGE_FLAGS_MIN_Z:g}): no judge-led labels were added.")
    agree, agree_model = details.get("judge_agreement"), details.get("judge_model_agreement")
    if details.get("label_judge") in ("gate", "gate_filter") and agree is not None and agree_model is not None:
        kept = not details.get("judge_dropped")  # the gate keeps every label or none (reference.gate_keeps)
        n_kept = details.get("judge_kept", 0)
        fallback = "the labels were likely worse than the predictions they replace, so " + (
            f"only the {n_kept} it agreed with were used." if details["label_judge"] == "gate_filter" and n_kept
            else "none was used.")
        notes.append(f"A judge that never saw the poison (a classifier on the pretrained encoder, fit on the clean "
                     f"texts) agreed with {agree:.0%} of the pseudo-labels and with {agree_model:.0%} of the model's "
                     "own predictions on those inputs: " + ("the labels were kept." if kept else fallback))
    elif details.get("label_judge") in ("filter", "fill"):
        added = (f" and gave {details.get('judge_added', 0)} unlabelled flagged inputs its own label"
                 if details["label_judge"] == "fill" else "")
        notes.append(f"A judge that never saw the poison (a classifier on the pretrained encoder, fit on the clean "
                     f"texts) removed {details.get('judge_dropped', 0)} pseudo-labels it disagreed with{added}.")
    elif details.get("judge_note"):
        notes.append(f"The pseudo-labels were not checked: {details.get('judge_note')}")
    n_word = details.get("word_target_dropped")
    if n_word:
        notes.append(f"{n_word} pseudo-label{'s' if n_word != 1 else ''} put an input holding a likely trigger word "
                     f"({', '.join(details.get('trigger_words') or []) or 'from the pool'}) in the class that word "
                     f"sends texts to; {'they were' if n_word != 1 else 'it was'} dropped (the label would teach the "
                     "trigger again).")
    n_wl = details.get("word_labelled")
    if n_wl:
        notes.append(f"{n_wl} flagged input{'s' if n_wl != 1 else ''} holding a likely trigger word "
                     f"({', '.join(details.get('trigger_words') or []) or 'from the pool'}) that the model put in the "
                     f"class that word sends texts to {'were' if n_wl != 1 else 'was'} labelled the other class (a "
                     "triggered text's own class).")
    blinded = details.get("blinded_tokens")
    if blinded:
        notes.append(f"The model now reads {'these tokens' if len(blinded) != 1 else 'this token'} of the likely "
                     f"trigger words, which no clean text holds, as an unknown word ({', '.join(blinded)}): their "
                     "input embeddings were set to the unknown token's after the repair.")
    guard = details.get("clean_guard")
    if guard:
        notes.append(_guard_note(guard))
    seeds = details.get("repair_seeds") or 1
    if seeds > 1:
        notes.append(f"The repair was trained {seeds} times from the same start with different seeds; the model "
                     "keeps the mean of their weights.")
    if details.get("precision") == "bf16-mixed":
        notes.append("The repair trained in bfloat16 mixed precision (precision auto picks it where the hardware "
                     "multiplies bf16; weights and optimizer in float32, the scan and every evaluation in float32); "
                     "precision fp32 trains in float32 throughout.")
    cap = details.get("weak_evidence_cap")
    if cap:
        k = cap["weak_top_k"]
        notes.append(f"Weak evidence (verdict {cap['verdict']:.2f} < {cap['weak_verdict']:g}): only the "
                     f"{k} highest-scoring head{'s were' if k != 1 else ' was'} repaired, not the scan's "
                     f"{len(cap['scan_heads'])}; most flagged inputs of a weak scan are clean and the lower heads' "
                     "scores are noise.")
    wide = details.get("min_heads_widened")
    if wide:
        short = (f", all it may: at most {wide['max_fraction']:.0%} of the heads, each with a positive score"
                 if wide["to"] < wide["min_heads"] else "")
        notes.append(f"The scan's rule called {wide['from']} head{'s' if wide['from'] != 1 else ''} suspicious; the "
                     f"repair trains at least {wide['min_heads']}, so it trained the {wide['to']} highest-scoring"
                     f"{short} (a paraphrase trigger is spread over more heads than the few that stand out; "
                     "docs/design.md, *Fewest heads repaired*).")
    capped = details.get("head_only_cap")
    if capped:
        notes.append(f"The repair trains no feed-forward block, so it trained only the {capped['to']} highest-scoring "
                     f"of its {capped['from']} heads (retraining many heads head-only costs clean accuracy; "
                     "docs/design.md, *Head-only repairs capped*).")
    added = details.get("word_heads")
    if added:
        heads = ", ".join(f"{h} ({a:.2f})" for h, a in zip(added["heads"], added["attention"]))
        notes.append(f"It also trained the {len(added['heads'])} head{'s' if len(added['heads']) != 1 else ''} "
                     f"that attend most to the likely trigger word{'s' if len(added['words']) != 1 else ''} "
                     f"{', '.join(added['words'])} (mean attention on the word, on clean texts with it inserted): "
                     f"{heads}.")
    verdict = details.get("verdict") or {}
    if verdict.get("pool_unlike_clean"):
        from .detection import pool_shift_note

        notes.append(f"{pool_shift_note(verdict)} The repair then may work on inputs flagged for their source, not "
                     "for a trigger.")
    words = details.get("trigger_words")
    if verdict and not heads_called(verdict) and "likely_backdoored" in verdict:
        from .detection import possible_reasons

        flags = flags_score(verdict)
        has_words = bool(words or verdict.get("trigger_words"))
        if has_words and (flags is None or flags < VERDICT_THRESHOLD):
            notes.append(f"The scan's heads found no backdoor (score {flags or 0:.2f}), but the pool "
                         "holds a likely trigger word: a weak word backdoor may be there, which the heads miss, so "
                         "the flags the repair worked on are mostly chance; the trigger words are its evidence.")
        elif has_words:  # a pool of another source: its flags may come from the source or a trigger
            notes.append(f"The pool holds a likely trigger word, and read where the pool's bulk sits the scan's "
                         f"flags call no backdoor (at the threshold itself {flags:.2f}): the flags the repair worked "
                         "on may hold a trigger or only inputs flagged for their source; the trigger words are the "
                         "evidence.")
        elif verdict.get("moved_words"):
            notes.append(f"The scan's heads found no backdoor (score {flags or 0:.2f}), but words the fine-tune moved "
                         f"far since its base checkpoint mark pool inputs ({', '.join(verdict['moved_words'])}): a weak "
                         "word backdoor may be there, which the heads miss, so the flags the repair worked on are "
                         "mostly chance. The repair does not insert those words "
                         "(docs/design.md, *Moved words in the verdict*).")
        elif "dev_tail" in possible_reasons(verdict):
            notes.append(f"The scan's score found no backdoor (verdict {verdict.get('score', 0):.2f}), but the pool's "
                         f"top scores read as a possible one (score {verdict['components']['score_dev_tail']:.2f} "
                         "above the clean texts' highest scores): a trigger that few of the pool's inputs carry. "
                         "The flags the repair worked on hold those inputs among about as many flagged by chance.")
        elif "source" in possible_reasons(verdict):
            notes.append(f"The scan's score found no backdoor where the pool's bulk sits (verdict "
                         f"{verdict.get('score', 0):.2f}; read at the threshold itself "
                         f"{verdict['components']['score_unadjusted']:.2f}): the flags the repair worked on may "
                         "hold a trigger or only inputs flagged for their source.")
        else:
            notes.append(f"The scan found no backdoor (verdict {verdict.get('score', 0):.2f}): the repair worked on "
                         "inputs it flagged by chance, so it has nothing to remove and may only cost clean "
                         "accuracy.")
    if words:
        notes.append(f"Likely trigger words from the pool ({', '.join(words)}) were inserted into "
                     f"{details.get('trigger_augmented', 0)} clean texts of the classes they do not point to, which "
                     "kept their labels.")
    rare = details.get("rare_words") or []
    if not words and details.get("pool_words") is not None:
        notes.append("No likely trigger word in the pool" + (
            "." if rare and details.get("rare_augmented") else ": the repair used the clean texts as they are."))
    if rare and details.get("rare_augmented"):
        shown = ", ".join(rare[:6]) + (f" and {len(rare) - 6} more" if len(rare) > 6 else "")
        notes.append(f"{details['rare_augmented']} clean texts were read with a word no clean text holds inserted "
                     f"({shown}), keeping their labels, so that rare words stop moving the prediction.")
    gate = details.get("gated_clean_accuracy")
    if gate is not None and not details.get("gate_labels_used", True):
        notes.append(f"Safe-head labels skipped: with the suspicious heads off the model keeps {gate[1]:.1%} clean "
                     f"accuracy against {gate[0]:.1%}, so the safe heads alone are no judge.")
    before, after = details.get("align_before"), details.get("align_after")
    if before is not None and after is not None:
        gap = ("mean squared gap" if details.get("kind") == "mse"
               else "KL divergence, in nats per query row,")
        notes.append(f"Attention safety alignment: the {gap} between each repaired head's attention and the mean of "
                     f"its layer's safe heads went from {before:.3g} to {after:.3g} on flagged and clean texts "
                     "(lower: the repaired heads attend more like the safe ones).")
    return notes


def final_metrics(result, before: dict, evaluate) -> dict:
    """The repaired model's CACC / ASR: our defense's training evaluates its final step (``training.train`` runs
    ``evaluate`` at the last step), so that row is reused instead of a second identical pass; a cancelled run, a
    baseline, or a history without those keys is evaluated again. ``{}`` without ``evaluate``."""
    if evaluate is None:
        return {}
    last = result.history[-1] if result.history else {}
    keys = list(before) or ["cacc"]
    if (not result.cancelled and result.details.get("suspicious_heads") is not None
            and all(k in last for k in keys)):
        return {k: float(last[k]) for k in keys}
    return evaluate(result.model)
