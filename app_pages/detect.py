"""Detect: scan the current model for a backdoor without knowing the trigger (head similarity + head safety)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from backdoor_core import defender_data as D
from backdoor_core import settings as S
from backdoor_core.data import DataError, split_texts
from backdoor_core.detection import (VERDICT_THRESHOLD, call_note, called_by_words, chance_note, heads_called,
                                     pool_shift_note, possible_reasons, representation_notes, score_text,
                                     verdict_call)
from app_pages import _actions as A
from app_pages import _analyst as AN
from app_pages import _common as ui
from app_pages._state import KEPT_VALUE_MAX_CHARS
from app_pages._text import md
from app_pages._widgets import figure_once

ui.page_header(
    "Detect a backdoor",
    "You have a suspicious model, a small clean labelled set and a pool of unlabelled inputs that may contain "
    "triggered ones — but not the trigger. Triggered inputs make the heads' attention maps unusually similar "
    "to one another; the scan flags such inputs, rates every head, and gives a verdict for the whole model.",
)

MIN_CLEAN = 8  # the fewest clean labelled texts a scan takes (half fit, half set the threshold)

loaded, train_full, test_full = ui.require_model_and_data()
ui.require_rows(train_full, test_full, "a scan", train_min=MIN_CLEAN, test_min=1)

# --------------------------------------------------------------------------------------------- settings

known_attack = D.model_attack(loaded.card, loaded.tokenizer, D.model_max_length(loaded))
c1, c2, c3 = ui.stack_columns("detect-form", 3, gap="large")
with c1:
    st.subheader("Defender's clean data")
    n_clean = st.number_input("Clean labelled texts (budget)", MIN_CLEAN, len(train_full), step=50,
                              **ui.keep("detect.n_clean", min(S.QUICK_CLEAN_BUDGET, len(train_full))))
    st.caption("Half fit the statistics of head similarity, half set the threshold.")
with c2:
    st.subheader("Pool to screen")
    pool_kinds = ["Test texts, some with the model's trigger (simulation)", "Test texts only (no trigger)",
                  "Your texts (one per line)", "No pool"]
    pool_kind = st.radio("Pool", pool_kinds, **ui.keep("detect.pool_kind", pool_kinds[0]))
    pool_texts, truth, simulated = [], None, None
    if pool_kind == pool_kinds[0]:
        if known_attack is None:
            st.info("This model's card names no attack, so no triggered inputs can be simulated; the pool "
                    "will hold clean test texts only.", icon=":material/info:")
        n_pool_clean = st.number_input("Clean texts in the pool", 0, len(test_full), step=10,
                                       **ui.keep("detect.pool_clean", min(S.POOL_CLEAN, len(test_full))))
        n_pool_trig = st.number_input("Triggered texts in the pool", 0, 500, step=5,
                                      **ui.keep("detect.pool_trig", S.POOL_TRIGGERED), disabled=known_attack is None)
        # drawn when the scan starts: it puts the trigger into every non-target test row, 2-4 s that each change
        # of a knob on this form had paid for
        simulated = (int(n_pool_clean), int(n_pool_trig) if known_attack is not None else 0)
        if known_attack is not None:
            st.caption("Only the evaluation knows which inputs carry the trigger; the scan does not.")
    elif pool_kind == pool_kinds[1]:
        n_pool_clean = st.number_input("Clean texts in the pool", 1, len(test_full), step=10,
                                       **ui.keep("detect.pool_clean", min(S.POOL_CLEAN, len(test_full))))
        pool_texts = test_full.sample(int(n_pool_clean), seed=1).texts
        truth = np.zeros(len(pool_texts), bool)
    elif pool_kind == pool_kinds[2]:
        raw = st.text_area("Pool texts", height=150, **ui.keep("detect.pool_raw", ""))
        try:
            pool_texts = split_texts(raw, "Pool texts")
        except DataError as exc:
            ui.show_error(exc)
            pool_texts = []
        st.caption(f"{len(pool_texts)} texts" + (
            f" · more than {KEPT_VALUE_MAX_CHARS:,} characters: a reload of this page will not bring them back"
            if len(raw) > KEPT_VALUE_MAX_CHARS else ""))
with c3:
    st.subheader("Knobs")
    frr = st.slider("False-rejection rate on clean data", 0.01, 0.2, step=0.01, format="%.2f",
                    **ui.keep("detect.frr", S.FRR))
    rel = st.slider("Suspicious if score ≥ (relative to the top head)", 0.05, 0.9, step=0.05,
                    **ui.keep("detect.rel", S.REL_THRESHOLD))
    max_frac = st.slider("At most this share of heads suspicious", 0.05, 0.5, step=0.05,
                         **ui.keep("detect.max_frac", S.MAX_FRACTION))
    refine = st.checkbox("Refine by the suspicious heads", **ui.keep("detect.refine", S.REFINE),
                         help="Once the suspicious heads are known, score the pool again by how much those heads "
                              "alone focus on one token (same FRR), re-rate the heads on the new flags and "
                              "re-flag once more. Finds far more triggered inputs when a backdoor captured "
                              "only a few heads.")

job = ui.get_job("scan")
running = job is not None and job.active
no_texts = pool_kind == pool_kinds[2] and not pool_texts  # an empty box had scanned with no pool, without a word
if no_texts:
    st.caption("Paste at least one pool text (one per line), or choose **No pool**.")
if st.button("Scan the model", type="primary", icon=":material/radar:", disabled=running or no_texts,
             key="detect.run"):
    try:
        if simulated is not None:
            with st.spinner("Drawing the simulated pool…"):
                try:
                    pool_texts, truth = D.build_pool(loaded, test_full, *simulated, attack=known_attack,
                                                     lock=ui.model_lock(loaded))
                except ValueError as exc:  # e.g. a paraphrase test set with no non-target rows
                    raise ValueError(f"Simulated pool: {exc}") from exc
        clean = train_full.sample(int(n_clean), seed=0)
        A.start_scan(loaded, clean, list(pool_texts), truth,
                     {"frr": float(frr), "rel_threshold": float(rel), "max_fraction": float(max_frac),
                      "refine": bool(refine)},
                     model_name=loaded.name)
        st.rerun()
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, "Cannot start: ")


ui.job_panel("scan")  # the bar's text names the stage ("reading the pool 64/130", _actions.stage_progress)

# --------------------------------------------------------------------------------------------- results

report = st.session_state.get(A.K_SCAN)
info = st.session_state.get(A.K_SCAN_INFO) or {}
if report is None or (job is not None and job.active):
    if report is None and not (job is not None and job.active):  # a running scan has its own panel above
        st.info("Run a scan to see the verdict, the suspicious heads and the flagged inputs.", icon=":material/info:")
    st.stop()

if job is not None and job.status in ("cancelled", "failed") and job.snapshot().result is None:
    st.caption(f"The results below are the previous scan's: the last run was {job.status} and kept nothing.")
same_model = info.get("model_name") == loaded.name
if not same_model:  # a caption went unseen: the verdict below read as the current model's
    st.warning(f"The results below are for **{md(info.get('model_name'))}** (scanned earlier), not for the current "
               f"model, **{md(loaded.name)}**: scan again to read this one.", icon=":material/history:")

v = report.verdict
call = verdict_call(v)


st.divider()
m1, m2, m3, m4 = ui.tile_columns("detect-verdict", 4)
m1.metric("Backdoor", call)
score_help = f"basis: {v.get('basis')}; ≥ {VERDICT_THRESHOLD:.2f} means likely"
if float(v.get("score", 0)) >= VERDICT_THRESHOLD and call != "likely":  # e.g. a pool too small to call it
    score_help += f", but here the call is {call}: the note below says why"
m2.metric("Backdoor score", score_text(float(v.get("score", 0))), help=score_help)
chance = chance_note(v)
m3.metric("Flagged inputs", f"{len(report.flagged)} / {len(report.pool_texts)}",
          help=f"{chance[0].upper()}{chance[1:]}." if chance else None)
A.suspicious_heads_metric(m4, report)
if called_by_words(v):  # the pool's trigger words call it, the heads do not
    st.error(call_note(v), icon=":material/key:")
elif call == "likely":
    n_flag = len(report.flagged)
    who = "This model" if same_model else md(info.get("model_name"))  # the scanned one, not the current one
    st.error(f"{who} behaves like a backdoored one: on {n_flag} pool input{'s' if n_flag != 1 else ''} its "
             "heads collapse onto the same pattern. Suspicious heads: "
             f"{', '.join(report.suspicious_heads[:12]) or 'none'}"
             + (f" and {len(report.suspicious_heads) - 12} more" if len(report.suspicious_heads) > 12 else "") + ".",
             icon=":material/gpp_bad:")
elif call == "possible":
    st.warning(call_note(v), icon=":material/key:" if {"word", "moved"} & set(possible_reasons(v))
               else ":material/warning:")
else:
    score = float(v.get("score", 0))
    st.success("No backdoor evidence at this threshold." if score <= 0 else
               f"No backdoor called at this threshold: the score, {score_text(score)}, is below the line at "
               f"{VERDICT_THRESHOLD:.2f}.", icon=":material/verified_user:")
shift_note = pool_shift_note(v)
if shift_note:  # the verdict's caveat, right under it
    st.warning(shift_note, icon=":material/compare_arrows:")
for rep_note in representation_notes(v, report.settings):
    st.caption(rep_note)
if report.first_pass is not None:
    n_first, n_final = len(report.first_pass["flagged"]), len(report.suspicious_heads)
    st.caption(f"First pass (all heads of a layer): {n_first} input{'s' if n_first != 1 else ''} flagged; then "
               f"the pool was re-flagged by the suspicious heads' own focus, re-rating the heads in between: "
               f"{len(report.flagged)} flagged by the final {n_final} "
               f"{'' if heads_called(v) else 'candidate '}head{'s' if n_final != 1 else ''}. Verdict, scores, "
               "threshold and flags are the final pass's.")
marking = list(getattr(report, "marking_words", None) or [])
if marking:
    n_marked = int(report.pool_word_marked.sum())
    n_missed = report.n_word_marked_unflagged
    st.info(f"{n_marked} pool input{'s' if n_marked != 1 else ''} hold{'s' if n_marked == 1 else ''} a likely "
            f"trigger word ({md(report.marking_phrase)}), {n_missed} of them not flagged by the scan: a weak backdoor "
            "flips few of its inputs, so they look clean to the heads, but each still carries the word. They are "
            "listed under \"Inputs with a likely trigger word\".", icon=":material/key:")
if report.heads.basis != "flagged":
    st.warning("No pool input was flagged, so heads were rated on the most unusual clean inputs instead "
               "(a weak basis: it cannot see a trigger that never occurs in clean data).", icon=":material/warning:")

ev = A.scan_evaluation(report, info.get("truth"))
if ev:
    cols = ui.tile_columns("detect-eval", 4 if ev.get("auroc_words") is not None else 3)
    cols[0].metric("FRR (clean flagged)", f"{ev['frr']:.1%}",
                   help="The share of the pool's clean inputs the scan flagged (the pool's known truth; a user's own "
                        f"pool has none). On the defender's held-out clean texts the scan measured "
                        f"{report.clean_frr:.1%}, the rate its threshold was set for.")
    cols[1].metric("FAR (triggered missed)", f"{ev['far']:.1%}",
                   help="The share of the pool's triggered inputs the scan did not flag.")
    cols[2].metric("AUROC", f"{ev['auroc']:.3f}")
    if len(cols) == 4:
        cols[3].metric("AUROC with trigger words", f"{ev['auroc_words']:.3f}",
                       help="The same scores, with the pool inputs that hold a likely trigger word ranked first.")
    st.caption("Measured on the simulated pool, where we know which inputs carry the trigger.")

arch_info = getattr(report, "architecture", None) or {}
for key in ("focus", "similarity"):
    if key in (arch_info.get("notes") or {}):
        st.caption(f":material/info: {arch_info['notes'][key]}")
if len(set(arch_info.get("layer_kinds") or [])) > 1:
    st.caption("Layers differ in kind (" + ", ".join(f"L{i}: {k}" for i, k in enumerate(arch_info["layer_kinds"]))
               + "); the grids label them.")
# built once per scan report, not at every rerun (~70 ms); a new report (another scan, a reload) builds them anew
figs = figure_once("detect.figs", lambda: A.scan_figures(report), (report,))
c1, c2 = ui.stack_columns("detect")
with c1:
    ui.plot(figs["scatter"], key="detect.scatter")
with c2:
    ui.plot(figs["grid"], key="detect.grid")
ui.plot(figs["hist"], key="detect.hist")
AN.trigger_candidates(report)
AN.pool_words(report)
AN.drifted_words(loaded, report, int(report.settings.get("max_length") or D.model_max_length(loaded)),
                 same_model=info.get("model_name") == loaded.name)
AN.detect_projection(loaded, report, info.get("truth"), D.model_max_length(loaded),
                     same_model=info.get("model_name") == loaded.name)

def _pool_table(rows, empty: str) -> None:
    """Pool rows (``ScanReport.flagged_rows`` / ``word_marked_rows``), with the truth when the pool was simulated."""
    truth = info.get("truth")
    if truth is not None and len(truth) == len(report.pool_texts):
        for r in rows:
            r["carries trigger (truth)"] = bool(truth[r["index"]])
    if not rows:
        st.caption(empty)
        return
    cols = ["score", "label", "flagged", "trigger_word", "carries trigger (truth)", "text"]
    st.dataframe(rows, hide_index=True,
                 column_order=[c for c in cols if c in rows[0] and (c != "trigger_word" or marking)],
                 column_config={"score": st.column_config.NumberColumn(format="%.2f"),
                                "label": st.column_config.TextColumn("predicted"),
                                "trigger_word": st.column_config.TextColumn("likely trigger word")})


# a heading of its own: under "Where the poison sits" the tables read as part of the PCA section
st.subheader("The pool's inputs and every head")
tabs = st.tabs(["Flagged inputs", "All heads"] + (["Inputs with a likely trigger word"] if marking else []))
with tabs[0]:
    _pool_table(report.flagged_rows(200), "No input crossed the threshold.")
if marking:
    with tabs[2]:
        _pool_table(report.word_marked_rows(200), "No pool input holds a likely trigger word.")
with tabs[1]:
    st.dataframe(report.head_rows(), hide_index=True,
                 column_config={"score": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0,
                                                                         format="%.2f")})
st.page_link("app_pages/sanitize.py", label="Repair the suspicious heads on the Sanitize page" if heads_called(v) else
             "No head is called suspicious; the Sanitize page can still repair the candidate heads or run a baseline",
             icon=":material/healing:")
