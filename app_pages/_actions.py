"""Long actions shared by several pages (Attack lab, Detect, Sanitize and the Guided tour).

Each ``start_*`` builds a job target that calls the core in a background thread (never Streamlit), starts it
with ``_common.start`` and registers an ``on_finish`` that stores the result in session state, makes a trained
or sanitized model current, and records a finding for the Report page. What the jobs are fed (pools, evaluators,
the model's attack, target and reading length) comes from ``backdoor_core.defender_data`` and the model card.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import streamlit as st

from backdoor_core import defender_data as D
from backdoor_core.detection import (call_note, called_by_words, called_heads, chance_note, representation_notes,
                                     heads_called, pool_shift_note, score_text, verdict_label)
from backdoor_core.head_metrics import describe_heads
from backdoor_core.jobs import JobCancelled, JobSnapshot
from backdoor_core.trigger_search import DRIFT_HEADING
from app_pages import _common as ui
from app_pages._text import md, md_code
from app_pages._widgets import figure_once

K_ATTACK = "attack.result"
K_SCAN = "detect.report"
K_SCAN_INFO = "detect.info"
K_SANITIZE = "sanitize.result"


def _rate(value) -> str:
    """A rate for the report's tables as the pages show it ("25.0%"; "—" when not measured); the raw value stays in
    the finding's data (the JSON download)."""
    return f"{value:.1%}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "model"


# ------------------------------------------------------------------------------------------------ attack


CANCEL_DISCARDED = "the half-trained model was discarded"


def start_attack(*, base, name: str, train_ds, test_ds, attack_name: str, trigger: str | None, target: int,
                 rate: float, tal: dict | None, config: dict, data_name: str,
                 train_indices: list[int] | None = None, n_clean: int | None = None,
                 origin: str | None = None) -> None:
    """Train a (backdoored or clean) copy of ``base`` in the background.

    The trained model belongs to this browser session (``ui.session_models``, in memory) and becomes its current
    model, ``origin`` saying where it came from ("trained in this session from ..."); nothing is written to the
    shared zoo folder unless the user saves it under a name (``_save.save_panel``). A cancelled run is discarded:
    the half-trained model is neither kept nor made current, and the job's note says the current model is
    unchanged only while it is still the one current at the start.
    """
    from backdoor_core.poisoning import attack_type, get_attack, shared_dataset, train_attack
    from backdoor_core.tal import TALConfig
    from backdoor_core.training import TrainConfig

    ui.drop_result(K_ATTACK)  # the previous run's result no longer describes the current model
    with st.spinner("Copying the model…"):
        work = ui.session_copy(base, name=name)  # private model AND tokenizer for the background thread

    def target_fn(ctx):
        attack = None
        if attack_name != "none":
            if attack_type(attack_name).has_trigger_tokens:  # insertions land inside the training window
                attack = get_attack(attack_name, tokenizer=work.tokenizer, max_length=config["max_length"],
                                    trigger=trigger or None)
            else:
                attack = get_attack(attack_name, dataset=shared_dataset(data_name) or "sst2")
                if train_indices is not None and hasattr(attack, "subset"):  # aligned: same rows; else drawn whole
                    attack = attack.subset(train_indices, n_clean=n_clean)
        tal_cfg = TALConfig(**tal) if tal else None
        cfg = TrainConfig(**config)
        outcome = train_attack(work.model, work.tokenizer, train_ds, test_ds, attack, rate, target, cfg,
                               tal=tal_cfg, data_name=data_name, callback=ctx.update, should_stop=ctx.should_stop)
        if outcome.result.cancelled or ctx.should_stop():
            raise JobCancelled()  # a half-trained model is no result: discard it
        card = outcome.card.replace(name=name, title=name,
                                    target_name=train_ds.label_names[target] if attack is not None else None)
        work.metadata, work.card_warnings, work.name, work.untrained_head = card.to_json(), [], name, False
        return {"loaded": work, "card": card, "history": outcome.result.history}

    def on_finish(snap: JobSnapshot) -> None:
        res = snap.result
        if snap.status != "done" or not res:
            return
        ui.keep_result(K_ATTACK, res)
        ui.set_session_model(name, res["loaded"], origin=origin)
        card = res["card"]
        from backdoor_core import figures as F

        ui.lab().record(
            "attack", "Attack lab", model=name,
            text=(f"Attack **{md(card.attack)}**, trigger {md_code(card.trigger_text)}, target "
                  f"**{md(card.target_name)}**, poison rate {card.rate or 0:.2%}"
                  + (f", TAL on {md(describe_heads(card.tal_heads, work.num_layers, work.num_heads))}"
                     if card.tal else "")),
            table=[{"metric": "CACC", "value": _rate(card.cacc)}, {"metric": "ASR", "value": _rate(card.asr)},
                   {"metric": "steps", "value": card.steps},
                   {"metric": "training seconds", "value": card.training_seconds}],
            figures=[F.training_curves(snap.events, title="Training")],  # the steps the live chart drew
            data=card.to_json(),
        )

    at_start = dict(ui.model_ref())

    def cancelled(snap: JobSnapshot) -> str:
        unchanged = dict(ui.model_ref()) == at_start
        return CANCEL_DISCARDED + ("; the current model is unchanged" if unchanged else "")

    ui.start("attack", target_fn, name=f"Training {name}", on_finish=on_finish, cancelled_note=cancelled)


# ------------------------------------------------------------------------------------------------ scan


def stage_progress(ctx, prefix: str = "", share: float = 1.0):
    """A ``scan.ProgressFn`` that shows each stage on the job's panel: "reading the pool 64/130", with the bar at
    the stages' overall fraction (``scan.stage_fraction``) times ``share`` (the part of the bar they fill; a
    repair's training fills the rest, ``training_fraction``): the bar only grows, it did not start from 0 again at
    every stage."""
    from backdoor_core.scan import stage_fraction, stage_text

    def progress(stage, done, total):
        frac = stage_fraction(stage, done, total)
        ctx.update({"message": prefix + stage_text(stage, done, total), "done": done, "total": total,
                    "fraction": None if frac is None else share * frac})
    return progress


REPAIR_STAGES_SHARE = 0.3
"""The part of a repair's bar its stages before training fill (its scan, the labels; ``stage_progress``)."""


def training_fraction(p, after: float, until: float = 1.0, skip: int = 0) -> float:
    """The bar's fraction at training step ``p`` (``training.Progress``) when what came before filled ``after`` and
    this training fills the bar up to ``until``; ``skip``: steps of ``p`` that were another training's (the
    clean-accuracy guard's retry runs its steps on after the first repair's, ``defenses.RetryProgress``)."""
    done = min(1.0, max(0, p.step - skip) / max(1, p.total_steps - skip))
    return after + (until - after) * done


def start_scan(loaded, clean_ds, pool_texts: list[str], truth: np.ndarray | None, knobs: dict,
               model_name: str) -> None:
    from backdoor_core.scan import scan_model

    with st.spinner("Copying the model…"):
        work = ui.session_copy(loaded)  # the scan hooks into the model: never on a shared one

    def target_fn(ctx):  # a stop raises forward.Cancelled, a jobs.JobCancelled: the job ends as cancelled
        return scan_model(work.model, work.tokenizer, clean_ds, pool_texts, model_name=model_name,
                          progress=stage_progress(ctx), should_stop=ctx.should_stop,
                          **{"max_length": D.model_max_length(loaded), **knobs})

    ref = dict(ui.model_ref())

    def on_finish(snap: JobSnapshot) -> None:
        report = snap.result
        if report is None:
            return
        ui.keep_result(K_SCAN, report)
        ui.keep_result(K_SCAN_INFO, {"truth": truth, "model_ref": ref, "model_name": model_name})
        record_scan(report, truth)

    ui.start("scan", target_fn, name=f"Scanning {model_name}", on_finish=on_finish)


def scan_evaluation(report, truth) -> dict | None:
    """FRR/FAR/AUROC of the input-level detector on the simulated pool (only when the truth is known)."""
    if truth is None or len(truth) != len(report.pool_texts) or not truth.any() or truth.all():
        return None
    from backdoor_core.detection import evaluate_detector

    scores = np.asarray(report.pool_scores)
    out = evaluate_detector(scores[~truth], scores[truth], report.threshold)
    if getattr(report, "marking_words", None):  # the same scores with the likely trigger words' evidence
        from backdoor_core.detection import with_word_evidence
        from backdoor_core.metrics import auroc

        both = with_word_evidence(scores, report.pool_word_marked)
        out["auroc_words"] = auroc(both[~truth], both[truth])
    return out


def scan_figures(report, truth=None) -> dict:
    from backdoor_core import figures as F
    from backdoor_core.architecture import layer_labels

    heads = report.heads
    flagged = np.zeros(len(report.pool_texts), bool)
    flagged[np.asarray(report.flagged, dtype=int)] = True
    groups = {"clean dev": report.clean_scores}
    if len(report.pool_texts):
        groups["pool, not flagged"] = np.asarray(report.pool_scores)[~flagged]
        groups["flagged"] = np.asarray(report.pool_scores)[flagged]
    called = heads_called(report.verdict)  # no backdoor the heads saw: the top heads are candidates only
    return {
        "scatter": F.importance_similarity_scatter(
            heads.importance, heads.collapse, heads.suspicious, x_title="similarity collapse on flagged inputs (z)",
            y_title="importance |∂margin/∂gate|",
            **({} if called else {"title": "Head safety: " + ("the heads show no backdoor"
                                                              if called_by_words(report.verdict) else
                                                              "no backdoor called") + " (top candidates marked)",
                                  "mark_name": "candidate"})),
        "grid": F.suspicious_head_grid(heads.score, heads.suspicious, layer_labels=layer_labels(
            (getattr(report, "architecture", None) or {}).get("layer_kinds")),
            **({} if called else
               {"title": "Head scores: no collapse found (top candidates marked)", "mark_name": "candidate"})),
        "hist": F.score_histogram(groups, report.threshold),
    }


def suspicious_heads_metric(col, report) -> None:
    """The "Suspicious heads" tile of a scan (Detect page, tour): the count only when a backdoor is likely; with
    no backdoor found no head is called suspicious ("none", the candidates' count in the help)."""
    if heads_called(report.verdict):
        col.metric("Suspicious heads", len(report.suspicious_heads))
    else:
        why = ("Only the pool's trigger words call the backdoor, not the heads" if called_by_words(report.verdict)
               else "No backdoor was found")
        col.metric("Suspicious heads", "none", help=f"{why}, so no head is called suspicious "
                   f"(the {len(report.suspicious_heads)} highest-scoring heads are only candidates).")


def record_scan(report, truth=None) -> None:
    v = report.verdict
    ev = scan_evaluation(report, truth)
    figs = scan_figures(report, truth)
    text = (f"Verdict: **{verdict_label(v)}** "
            f"(score {score_text(v.get('score', 0))}, basis: {v.get('basis')}). {len(report.flagged)} of "
            f"{len(report.pool_texts)} pool inputs flagged at threshold {report.threshold:.2f} "
            f"(FRR on the defender's held-out clean texts {report.clean_frr:.1%}"
            f"{'; ' + chance_note(v) if chance_note(v) else ''}). "
            + f"Suspicious heads: {called_heads(v, report.suspicious_heads)}.")
    for note in (call_note(v), pool_shift_note(v), *representation_notes(v, report.settings)):
        if note:
            text += f"\n\n{note}"
    if ev:
        text += f"\n\nOn the simulated pool: FRR {ev['frr']:.1%}, FAR {ev['far']:.1%}, AUROC {ev['auroc']:.3f}"
        text += (f" ({ev['auroc_words']:.3f} with the likely trigger words)." if ev.get("auroc_words") is not None
                 else ".")
    model = report.model_name
    ui.lab().record("scan", "Detection scan", model=model, text=text,
                    table=[r for r in report.head_rows()[:12]],
                    figures=[figs["grid"], figs["scatter"], figs["hist"]],
                    data=report.to_dict(max_flagged=50) | ({"pool_evaluation": ev} if ev else {}))
    # this scan's sections replace the last scan's; a section this scan has nothing for is removed, not left stale
    if getattr(report, "triggers", None) is not None and report.triggers.candidates:  # issue 14: trigger search
        from backdoor_core.trigger_search import report_section

        from backdoor_core.detection import heads_noun

        sec = report_section(report.triggers.to_dict(limit=20), heads=heads_noun(report.verdict))
        # its text names the suspected target class: escaped (it has no markup of its own)
        ui.lab().record("scan", sec["heading"], model=model, text=md(sec["text"]), table=sec["table"],
                        figures=[sec["figure"]])
    else:
        ui.lab().remove("scan:Candidate triggers", model)
    marking = list(getattr(report, "marking_words", None) or [])
    if marking:
        rows = report.word_marked_rows(50)
        n_marked = int(report.pool_word_marked.sum())
        ui.lab().record("scan", "Inputs with a likely trigger word", model=model,
                        text=f"{n_marked} pool inputs hold a likely trigger word ({md(', '.join(marking))}), "
                             f"{report.n_word_marked_unflagged} of them not flagged.",
                        table=[{k: r[k] for k in ("score", "label", "flagged", "trigger_word", "text")} for r in rows])
    else:
        ui.lab().remove("scan:Inputs with a likely trigger word", model)
    ui.lab().remove(f"scan:{DRIFT_HEADING}", model)  # read again on the Detect page for this scan, on request


# ------------------------------------------------------------------------------------------------ sanitize


def start_sanitize(loaded, defense: str, clean_ds, pool_texts: list[str] | None, knobs: dict, make_evaluate,
                   out_name: str, scan_report=None, effect_pairs=None, clean_ref=None) -> None:
    """``make_evaluate(loaded_copy) -> evaluate`` builds the CACC/ASR evaluator with the job's own tokenizer;
    ``effect_pairs`` (``repair_effect.triggered_pairs``) are the texts to measure what the trigger does to the
    heads before and after (``res["effect"]``, a ``repair_effect.RepairEffect``; None without them);
    ``clean_ref`` (a ``LoadedModel`` without the backdoor) gives the clean rate on the same triggered texts
    (``res["clean"]``: ``{"name", "rate"}``, or ``{"name", "note"}`` saying why there is none; with a rate,
    ``res["lift_ci"]``: ``metrics.lift_interval``'s ``{"before", "after"}``, the lift's paired intervals)."""
    from backdoor_core.defenses import final_metrics, run_defense
    from backdoor_core.models import LoadedModel
    from backdoor_core.repair_effect import RepairEffect, try_trigger_effect

    with st.spinner("Copying the model…"):
        work = ui.session_copy(loaded)

    def target_fn(ctx):
        from backdoor_core.forward import Cancelled, stopping
        from backdoor_core.metrics import accuracy_change, lift_interval

        base = make_evaluate(work) if make_evaluate is not None else None
        seen: list = []  # (n,) classes of every evaluation: the suspect's first, the reported model's last
        hits: list = []  # (m,) the same evaluations' "sent to the target" on the triggered texts
        evaluate = (lambda model: base(model, seen, hits)) if base is not None else None
        ctx.update({"message": "measuring the model before the repair"})
        # Cancel while the model and the clean reference are measured ends the job at the next batch, nothing kept
        # (forward.stopping: these passes take no should_stop; it had waited for both to finish)
        with stopping(ctx.should_stop):
            before = evaluate(work.model) if evaluate is not None else {}
            clean, clean_hits = None, None
            if clean_ref is not None:  # before the repair: a reference that does not fit costs nothing
                clean = {"name": clean_ref.name}
                if base is None or not base.poisoned_texts:
                    clean["note"] = "there are no triggered test texts to read (the model's card names no attack)."
                else:
                    ctx.update({"message": "the clean reference on the same triggered texts"})
                    try:
                        with ui.model_lock(clean_ref):
                            clean_hits = D.clean_hits(clean_ref, work, base.poisoned_texts, base.target)
                        clean["rate"] = float(clean_hits.mean())
                    except ValueError as exc:
                        clean["note"] = str(exc)
        read_len = D.model_max_length(loaded)
        if effect_pairs:
            ctx.update({"message": "measuring what the trigger does to the heads"})
        effect_before = try_trigger_effect(work.model, work.tokenizer, effect_pairs, read_len, ctx.should_stop)
        ctx.update({"message": "measured the model before", "before": before})
        extra = {"max_length": read_len, **knobs}
        if scan_report is not None and defense == "alignment":
            extra["scan"] = scan_report
        from backdoor_core import settings as S
        from backdoor_core.defenses import GUARD_RETRY_STAGE

        staged = defense == "alignment"  # the only defense with stages before training (run_defense's progress)
        trained_from = REPAIR_STAGES_SHARE if staged else 0.0
        # the clean-accuracy guard may train the repair again head-only (the bar had gone back from 100% to about
        # 65%): the first training fills the bar to 90% of what is left, the guard's check and a retry the rest. The
        # retry is as long again, so its share crawls, and its step count says how far it is; but most repairs do
        # not retry, and half the bar for the first training had left them at 65% until the end
        guarded = staged and bool(extra.get("clean_guard", S.CLEAN_GUARD))
        first_until = trained_from + (1.0 - trained_from) * 0.9 if guarded else 1.0
        bar = {"shown": 0.0, "retry_from": None}  # the fraction shown (it never goes back), where the retry began
        guard_note = "; then the clean-accuracy guard checks it on held-out texts" if guarded else ""
        retrying = "the clean-accuracy guard is retrying the repair head-only"

        def show(p, message: str, fraction: float) -> None:
            bar["shown"] = max(bar["shown"], fraction)
            ctx.update(p, message=message, fraction=bar["shown"])

        def on_step(p) -> None:
            first = getattr(p, "first_steps", None)  # a defenses.RetryProgress: a step of the guard's retry
            if first is None:
                show(p, f"repairing: step {p.step} of {p.total_steps}{guard_note}",
                     training_fraction(p, trained_from, first_until))
                return
            if bar["retry_from"] is None:
                bar["retry_from"] = max(bar["shown"], first_until)
            show(p, f"{retrying}: step {p.step - first} of {p.total_steps - first}",
                 training_fraction(p, bar["retry_from"], 1.0, skip=first))

        stages = stage_progress(ctx, "before the repair: ", REPAIR_STAGES_SHARE)

        def on_stage(stage, done, total) -> None:
            if stage != GUARD_RETRY_STAGE:
                stages(stage, done, total)
                return
            bar["retry_from"] = bar["shown"] = max(bar["shown"], first_until)
            ctx.update({"message": f"{retrying} (the repair lost clean accuracy on the held-out texts)",
                        "fraction": bar["shown"]})

        res = run_defense(defense, work.model, work.tokenizer, clean_ds, pool_texts=pool_texts, evaluate=evaluate,
                          progress=on_stage,
                          callback=on_step,
                          should_stop=ctx.should_stop, **extra)
        # the finished repair's own measure runs to its end (one pass over the test texts: a Cancel now would throw
        # the repair away or show it unmeasured); the heads' view after it is skipped on Cancel
        if (res.details.get("clean_guard") or {}).get("fired") and evaluate is not None:
            # the guard's retry evaluated last, and it may be the repair thrown away: the CACC change, the fixed /
            # broken counts and the lift interval read the evaluations' last, so the kept model is evaluated again
            after = evaluate(res.model)
        else:
            after = final_metrics(res, before, evaluate)  # reuses the training's last evaluation, or evaluates
        change = accuracy_change(base.labels, seen[0], seen[-1]) if base is not None else None
        lift_ci = ({"before": lift_interval(clean_hits, hits[0]), "after": lift_interval(clean_hits, hits[-1])}
                   if clean_hits is not None and hits else None)
        effect = None
        if effect_before is not None and not res.cancelled and not ctx.should_stop():
            ctx.update({"message": "measuring what the trigger does to the repaired heads"})
            try:
                after_effect = try_trigger_effect(res.model, work.tokenizer, effect_pairs, read_len, ctx.should_stop)
            except Cancelled:
                after_effect = None  # the repair is kept; its heads' view is not drawn
            if after_effect is not None:
                effect = RepairEffect.of(effect_before, after_effect, res.details.get("suspicious_heads") or [],
                                         len(effect_pairs[0]))
        # the saved card keeps what the lift was measured against, and the lift after's interval
        if lift_ci is not None:
            after_ci = lift_ci["after"]
            clean.update(texts=after_ci["n"], lift_after_ci95=[after_ci["low"], after_ci["high"]])
        details = {**res.details, "clean_reference": clean} if clean is not None else res.details
        card = loaded.card.repaired(name=out_name, defense=defense, details=details, before=before, after=after,
                                    seconds=res.seconds, cancelled=res.cancelled, source=loaded.source,
                                    clean_samples=len(clean_ds), pool_samples=len(pool_texts or []),
                                    test_size=len(base.labels) if base is not None else None,
                                    poisoned_test_size=len(base.poisoned_texts) if base is not None else None)
        new = LoadedModel(model=res.model, tokenizer=work.tokenizer, name=out_name, source=loaded.source,
                          metadata=card.to_json(), untrained_head=False)
        return {"loaded": new, "before": before, "after": after, "cacc_change": change, "lift_ci": lift_ci,
                "details": res.details,
                "asr_texts": len(base.poisoned_texts) if base is not None else 0,
                "cacc_texts": len(base.labels) if base is not None else 0,
                "history": res.history, "seconds": res.seconds, "cancelled": res.cancelled,
                "defense": defense, "suspect": loaded, "effect": effect, "clean": clean}

    def on_finish(snap: JobSnapshot) -> None:
        res = snap.result
        if not res:
            return
        ui.keep_result(K_SANITIZE, res)
        ui.session_models()[out_name] = res["loaded"]  # available; made current by the user
        from backdoor_core import figures as F

        b, a, eff = res["before"], res["after"], res.get("effect")
        names = {"asr": "ASR", "cacc": "CACC", "kept": "clean predictions kept"}
        rows = [{"metric": names[m], "before": _rate(b.get(m)), "after": _rate(a.get(m))} for m in names if m in b]
        ui.lab().record(
            "sanitize", f"Sanitization ({res['defense']})", model=res["suspect"].name,
            text=(f"Defense **{res['defense']}** in {res['seconds']:.0f} s"
                  + (" — *cancelled early*" if res["cancelled"] else "")
                  + (f"; heads repaired: {', '.join(map(str, res['details']['suspicious_heads']))}"
                     if res["details"].get("suspicious_heads") else "")
                  + (f"; heads pruned: {', '.join(map(str, res['details']['pruned_heads']))}"
                     if res["details"].get("pruned_heads") else "")
                  + (f". CACC change {100 * ch['change']:+.1f} points, 95% interval {100 * ch['low']:+.1f} to "
                     f"{100 * ch['high']:+.1f} over {ch['n']} clean test texts (paired)"
                     if (ch := res.get("cacc_change")) else "")
                  + (f". {line}" if (line := lift_line(res)) else "")
                  + (f". {line}" if (line := asr_interval_line(res)) else "")
                  + (". " + " ".join(eff.summary()) if eff is not None else "")),
            table=rows,
            figures=[F.metric_comparison({"before": b, "after": a}),
                     F.training_curves(snap.events, title="Sanitization", baseline=b)]  # as drawn live
                    + ([F.repair_effect_heatmaps(eff, "lift")] if eff is not None else []),
            data={"before": b, "after": a, "cacc_change": res.get("cacc_change"), "details": res["details"],
                  "seconds": res["seconds"], **({"trigger_effect": eff.to_dict()} if eff is not None else {})},
        )

    ui.start("sanitize", target_fn, name=f"Sanitizing ({defense})", on_finish=on_finish)


def asr_interval_line(res: dict) -> str | None:
    """One sentence on the ASR after a sanitization (``start_sanitize``'s ``res``) with its 95% interval over the
    triggered test texts it was measured on (``metrics.rate_interval``); None without an ASR."""
    from backdoor_core.metrics import rate_interval

    n, after = res.get("asr_texts") or 0, res.get("after", {}).get("asr")
    if not n or after is None:
        return None
    lo, hi = rate_interval(after, n)
    return (f"ASR after {after:.1%}, 95% interval {lo:.1%} to {hi:.1%} over {n} triggered test texts: another draw "
            "of as many texts could read anywhere in it")


def lifts(res: dict) -> tuple[float | None, float | None]:
    """A sanitization's lift over its clean reference (``start_sanitize``'s ``res["clean"]``) before and after
    (``defender_data.lift``); None where the rate or that ASR is missing."""
    rate = (res.get("clean") or {}).get("rate")
    return D.lift(res["before"].get("asr"), rate), D.lift(res["after"].get("asr"), rate)


def lift_line(res: dict) -> str | None:
    """One sentence on a sanitization's clean reference (``start_sanitize``'s ``res["clean"]``): its rate on the
    same triggered texts and the backdoor's lift over it before and after, or why there is none; None without a
    reference."""
    clean = res.get("clean")
    if not clean:
        return None
    name = md(clean["name"])  # a model's name: the line is markdown (captions, the Report)
    if clean.get("rate") is None:
        return f"No clean rate from {name}: {md(clean.get('note') or 'no triggered texts.')}"
    b, a = lifts(res)
    if b is None or a is None:
        return (f"The clean reference {name} sends {clean['rate']:.1%} of the same triggered texts to the "
                "target")
    ci = res.get("lift_ci")
    return (f"The clean reference {name} sends {clean['rate']:.1%} of the same triggered texts to the "
            f"target, so the backdoor's lift over it went from {100 * b:+.1f} to {100 * a:+.1f} points"
            + (f" (after: 95% interval {100 * ci['after']['low']:+.1f} to {100 * ci['after']['high']:+.1f}, paired "
               f"over the {ci['after']['n']} texts; an interval that holds 0 does not tell the repaired model from "
               "the clean one)" if ci else ""))


def training_events(snap: JobSnapshot) -> tuple[list[dict], int | None]:
    """The training-progress events of a job (those with a step) and the total number of steps."""
    events = [e for e in snap.events if "step" in e and ("losses" in e or "metrics" in e)]
    total = events[-1].get("total_steps") if events else None
    return events, total


def sanitize_live_chart(snap: JobSnapshot, key: str) -> dict | None:
    """Draw a sanitization job's live loss / CACC / ASR chart, with the model's before-metrics as dotted lines;
    return those before-metrics (None until measured)."""
    from backdoor_core import figures as F

    before = next((e.get("before") for e in snap.events if "before" in e), None)
    events, total = training_events(snap)
    # built again only when an event came in or the status changed (a job's events are kept, not copied)
    fig = figure_once(key, lambda: F.training_curves(events, total_steps=total, title=None, baseline=before or None),
                      (*events[-1:], before), (len(events), total, snap.status))
    ui.plot(fig, key=f"{key}.{snap.status}")
    return before


def saved_zip_bytes(loaded) -> bytes:
    """The model saved (safetensors + tokenizer + metadata) and zipped, for a download button."""
    import io
    import shutil
    import tempfile
    import zipfile

    from backdoor_core.models import save_model

    tmp = Path(tempfile.mkdtemp(prefix="backdoor-lab-dl-"))
    try:
        folder = save_model(loaded.model, loaded.tokenizer, tmp / slug(loaded.name), loaded.card)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    z.write(p, Path(folder.name) / p.relative_to(folder))
        return buf.getvalue()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

