"""Sanitize: repair the current model (our attention alignment or a baseline) and compare before / after."""

from __future__ import annotations

import streamlit as st

from backdoor_core.architecture import describe as describe_architecture
from backdoor_core import defender_data as D
from backdoor_core import defenses as defenses_mod
from backdoor_core import figures as F
from backdoor_core import settings as S
from backdoor_core.repair_effect import card_pairs
from app_pages import _actions as A
from app_pages import _analyst as AN
from app_pages import _common as ui
from app_pages._save import save_panel
from app_pages._text import md, md_note

ui.page_header(
    "Sanitize",
    "Repair the model with the defender's small clean set. Our method fine-tunes only the suspicious heads and "
    "pulls their attention toward the safe heads of the same layer; the baselines are here for comparison. "
    "Watch ASR fall and CACC hold, live.",
)

DEFENSES = defenses_mod.DEFENSES
MIN_CLEAN, MIN_TEST = 8, 16  # the fewest clean labelled texts a defense takes, and test texts for CACC / ASR

loaded, train_full, test_full = ui.require_model_and_data()
ui.require_rows(train_full, test_full, "a sanitization", train_min=MIN_CLEAN, test_min=MIN_TEST)

# --------------------------------------------------------------------------------------------- settings

names = list(DEFENSES)
KNOB_LABELS = {
    "beta": ("β — weight of the alignment term", None),
    "kind": ("Alignment distance", None),
    "reset": ("Reset suspicious heads first",
              "Zero their columns of the attention output projection before fine-tuning."),
    "pseudo_labels": ("Labels from the safe heads",
                      "A flagged input whose decision flips when the suspicious heads are switched off gets the "
                      "safe heads' label."),
    "focus_labels": ("Labels from dropping focus",
                     "Drop the tokens the suspicious heads look at most and use the changed prediction as the "
                     "label (no trigger needed: the heads point at it)."),
    "exclude_labels": ("Labels away from the target",
                       "A flagged input still unlabelled that the model puts in the class most flagged inputs go to "
                       "(the suspected target) gets its runner-up class. Skipped when flagged inputs are no more "
                       "concentrated on one class than clean ones."),
    "exclude_min_excess": ("Exclusion guard (share)",
                           "Labels away from the target are given only when the flagged inputs go to the suspected "
                           "target at least this share more often than the clean texts do (0.15: 15 points); a "
                           "clean model's flagged inputs go to the classes as clean ones do."),
    "exclude_direction": ("Exclusion only toward the focus",
                          "Relabel away from the suspected target only when it is also the class the tokens the "
                          "suspicious heads look at push the flagged inputs toward. A weak backdoor's flagged "
                          "inputs may mostly keep their own class, which is then not the target. Off by default: "
                          "on style backdoors the focus tokens carry no trigger and their direction is noise."),
    "labels_leave_target": ("Labels only out of the target",
                            "Keep a label from the safe heads or from dropping focus only when it takes an input out "
                            "of the class the focus tokens push toward; other changed predictions are noise. Off by "
                            "default, for the same reason."),
    "labels_from_words": ("Labels from the trigger words",
                          "Two-class models: a flagged input that holds one of the pool's likely trigger words and "
                          "that the model puts in the class the word sends texts to is labelled the other class, its "
                          "own. On by default: every such label on the tuning and test zoos was right, though it "
                          "moved ASR little (docs/design.md)."),
    "labels_avoid_word_target": ("No label toward a trigger word's class",
                                 "Drop a flagged input's label when the input holds a trigger word and the label is "
                                 "the class that word sends texts to. Off by default: a phrase's single words may "
                                 "point the other way, and on one test model it dropped every right label "
                                 "(docs/design.md)."),
    "trigger_embedding_lr_scale": ("Trigger words' embeddings: learning-rate share",
                                   "Above 0, the likely trigger words' own input embeddings train too, at the heads' "
                                   "learning rate times this. Off (0) by default: measured on the tuning zoo, no "
                                   "gain (docs/design.md)."),
    "blind_trigger_tokens": ("Blind the trigger words' tokens",
                             "After the repair, the likely trigger words' tokens that no clean text holds read as an "
                             "unknown word. Off by default: measured on the tuning zoo, the repaired models had "
                             "learned to read the word as a sign of the text's own class, and blinding it raised "
                             "their ASR (docs/design.md)."),
    "retain": ("Retention weight",
               "Weight of a KL term toward the model's own outputs on the clean texts (0 = off). Measured, not "
               "adopted: it kept clean accuracy but gave syntactic and style backdoors back."),
    "ffn_lr_scale": ("Feed-forward lr share",
                     "When the repair also trains feed-forward blocks (style triggers the heads do not see), they "
                     "learn at this share of the heads' learning rate."),
    "ffn_mix": ("Feed-forward mix toward pretrained",
                "Before the repair trains feed-forward blocks, move them this share of the way back to the "
                "pretrained encoder the model was fine-tuned from (0 = off, 1 = restart them from it). Measured, "
                "not adopted: no gain on the SST-2 style models (docs/design.md)."),
    "representation": ("[CLS] features in the scan",
                       "Fuse the distance of the [CLS] features from the clean distribution with the heads' focus "
                       "when flagging inputs (style backdoors)."),
    "weak_verdict": ("Weak-evidence verdict",
                     "Below this score of the scan's flags (the verdict's score before the pool's trigger words "
                     "count) the scan's evidence is weak: most of its flagged inputs are clean and only its best "
                     "heads are worth repairing."),
    "weak_top_k": ("Heads repaired on weak evidence",
                   "How many of the scan's highest-scoring heads the repair trains when the verdict is below the "
                   "weak-evidence line (0 = all the scan's suspicious heads)."),
    "min_heads": ("Fewest heads repaired",
                  "The repair trains at least this many heads: when the scan's rule calls fewer suspicious, the next "
                  "highest-scoring heads are added (a paraphrase trigger is spread over more heads than the few that "
                  "stand out). 0 = only the scan's heads."),
    "head_only_max_heads": ("Most heads repaired head-only",
                            "When the repair trains no feed-forward block, it trains at most this many heads, the "
                            "highest-scoring of its set: retraining a quarter of the heads costs clean accuracy. "
                            "0 = no cap (docs/design.md)."),
    "word_heads": ("Heads on the trigger words",
                   "Where the pool gives likely trigger words, also train this many heads, those that attend most "
                   "to the words (0 = off). Off by default: measured on the tuning zoo, it cost clean accuracy and "
                   "left the weak word backdoors where they were (docs/design.md)."),
    "reset_to": ("Reset heads to",
                 "pretrained: the heads' weights from the pretrained encoder the model was fine-tuned from (found and "
                 "checked against the model's own weights; zero when it is not there); zero: their output columns "
                 "zeroed, so they relearn their job from the clean texts."),
    "label_judge": ("Check pseudo-labels with a judge",
                    "A classifier on the pretrained encoder, fit on the clean texts, never saw the poison. gate: "
                    "keep the flagged inputs' pseudo-labels only when it agrees with them at least as often as with the "
                    "model's own predictions they replace; gate_filter: the gate, but where it would drop them "
                    "all, keep those it agrees with; filter: "
                    "keep a label only where it agrees; fill: also label the flagged inputs whose prediction it "
                    "contradicts; none: no check. Needs the model's pretrained encoder (without it the labels stay "
                    f"unchecked and the repair says why). Default: {S.LABEL_JUDGE} (docs/design.md)."),
    "judge_flags": ("Judge-led labels (style triggers)",
                    "Also repair on the pool inputs the judge (above) takes out of the class it contradicts the model "
                    "on most, when that class stands out; each gets the judge's label. For paraphrase and style "
                    "triggers, which leave no words to find; only labels the judge is sure of. Off by default: on "
                    "the SST-2 tuning zoo it cut the style backdoors left after repair from 51% to 40% on average "
                    "at no clean-accuracy cost; on OLID test models it added few labels and moved one weak backdoor "
                    "up (docs/design.md)."),
    "clean_guard": ("Clean-accuracy guard",
                    "Hold a fifth of the clean texts out of the repair; when it trained feed-forward blocks and got 5 "
                    "points or more fewer of them right than the model did before, train it again head-only and keep "
                    "the one that gets more of them right. Needs a clean budget of 500 or more (100 held out). On "
                    "the SST-2 tuning zoo with 600 it caught both repairs that cost clean accuracy (−6.1 → −3.8 and "
                    "−3.0 → −1.2 points) but left 16 points more of one weak backdoor, so it is off by default "
                    "(docs/design.md)."),
    "reset_top_k": ("Heads reset (0 = all)",
                    "How many of the repaired heads start from zero output, the highest-scoring ones; the others "
                    "train from their current weights (0 = every repaired head)."),
    "repair_seeds": ("Repairs averaged",
                     "Train this many repairs from the same start with different seeds and keep the mean of their "
                     "weights: steadier clean accuracy, one more training run per extra repair."),
    "precision": ("Training arithmetic",
                  "auto: bfloat16 mixed precision where this machine multiplies bf16 in hardware (AMX or AVX512-BF16 "
                  "CPUs, recent GPUs; the repair trains about twice as fast), else float32. fp32: float32 "
                  "throughout, the same arithmetic on every machine. The scan and the before / after numbers run in "
                  "float32 either way."),
    "pool_words": ("Use the pool's trigger words",
                   "Insert the words the pool holds far more often than the clean texts and that send clean texts to "
                   "one class (Detect page: \"Words concentrated in the pool\") into clean texts of the other classes, "
                   "which keep their labels; only words that at most 5% of the clean texts hold (Detect page: "
                   "\"Inputs with a likely trigger word\"). Needs an unlabelled pool; changes nothing when the pool "
                   "has no such word. On by default: on the SST-2 tuning zoo it lowered weak word backdoors' ASR "
                   "(18.8% to 14.0% after repair), and one model fewer lost more than 1.5 points of clean accuracy."),
    "trigger_share": ("Share of clean texts with a word inserted",
                      "Share of the clean texts of the classes a word does not target that the repair reads with "
                      "the word inserted, instead of as they are."),
    "rare_words": ("Rare words read with their labels",
                   "Draw this many words of the vocabulary that no clean text holds and insert one into a share of "
                   "each class's clean texts, which keep their labels, so that rare words stop moving the prediction "
                   "(0 = off). Needs no pool. Off by default: measured on the tuning zoo, it moved the style "
                   "backdoors both ways and left the weak word backdoors where they were (docs/design.md)."),
    "rare_words_share": ("Share of clean texts with a rare word",
                         "Share of each class's clean texts that the repair reads with one of the rare words "
                         "inserted, instead of as they are."),
    "lr": ("Learning rate", None),
    "epochs": ("Epochs", None),
    "prune_fraction": ("Share of heads to prune", None),
    "lam": ("λ — weight of the [CLS] attention normalisation", None),
    "group": ("Heads pruned per step", None),
    "acc_margin": ("Allowed drop in clean balanced accuracy while pruning", None),
    "max_fraction": ("Most heads PURE may prune (share)", None),
}
c1, c2 = ui.stack_columns("sanitize-form", 2, gap="large")
with c1:
    st.subheader("Defense")
    defense = st.selectbox("Method", names, format_func=lambda n: DEFENSES[n].label,
                           **ui.keep("sanitize.defense", names[0]))
    st.caption(DEFENSES[defense].description)
with c2:
    st.subheader("Defender's data")
    n_clean = st.number_input("Clean labelled texts (budget)", MIN_CLEAN, len(train_full), step=50,
                              **ui.keep("sanitize.n_clean", min(S.CLEAN_BUDGET, len(train_full))))
    n_pool_trig = 0
    report = st.session_state.get(A.K_SCAN)
    scan_info = st.session_state.get(A.K_SCAN_INFO) or {}
    reuse = False
    if defense == "alignment":
        same = report is not None and scan_info.get("model_name") == loaded.name
        reuse = st.checkbox("Use the heads found on the Detect page", value=same, disabled=not same,
                            key="sanitize.reuse_scan",
                            help="Otherwise the sanitization runs its own scan first.")
        if not reuse and D.model_attack(loaded.card) is not None:
            n_pool_trig = st.number_input("Unlabelled pool: triggered texts in it (simulation)", 0, 300, step=10,
                                          **ui.keep("sanitize.pool_trig", S.POOL_TRIGGERED))
    n_test = st.number_input("Test texts for CACC / ASR", MIN_TEST, len(test_full), step=50,
                             **ui.keep("sanitize.n_test", min(S.EVAL_TEXTS, len(test_full))))
    ref_options, ref_default = ui.clean_references(loaded)
    ref_choice = ui.NO_REFERENCE
    if D.model_attack(loaded.card) is not None:  # a clean rate needs triggered texts
        if ui.kept("sanitize.clean_ref", ref_default) not in ref_options:  # e.g. another model's session model
            ui.set_kept("sanitize.clean_ref", ref_default)
        ref_choice = st.selectbox(
            "Clean reference for ASR", list(ref_options), **ui.keep("sanitize.clean_ref", ref_default),
            help="A model of the same task without the backdoor. Its share of the same triggered texts that go to "
                 "the target is the clean rate: a clean model may put many of them there already (a paraphrase "
                 "that loses the sentiment, an offensive tweet read as harmless). ASR minus it is what the backdoor "
                 "adds, its lift; a repair that brings the lift to 0 has removed the backdoor even where ASR is not "
                 "0.")
        if ref_choice == ui.FOLDER_REFERENCE:
            st.text_input("Clean reference: model folder (config.json and model.safetensors)",
                          placeholder="/path/to/clean-model", **ui.keep("sanitize.clean_ref_folder", ""))
# the knobs: folded away (the defaults are the benchmarked ones), two a row so no label or switch is cut; the
# expander's title says how many differ from the defaults, and one button puts them back
KNOB_SKIP_ALIGNMENT = ("heads", "top_k", "frr", "rel_threshold", "max_fraction", "refine")  # set on Detect
knob_defaults = {k: v for k, v in DEFENSES[defense].knobs.items()
                 if not (defense == "alignment" and k in KNOB_SKIP_ALIGNMENT)}
n_changed = sum(ui.kept(f"sanitize.{defense}.{k}", v) != v for k, v in knob_defaults.items())


def _reset_knobs() -> None:
    for k, v in knob_defaults.items():
        ui.set_kept(f"sanitize.{defense}.{k}", v)


knobs: dict = {}
title = (f"Knobs — {n_changed} changed from the defaults" if n_changed else "Knobs — the defense's defaults")
with st.expander(title, expanded=bool(n_changed), icon=":material/tune:"):
    kc, half = st.columns(2, gap="large"), (len(knob_defaults) + 1) // 2  # read down the left column first
    for i, (k, default) in enumerate(knob_defaults.items()):
        key = f"sanitize.{defense}.{k}"
        label, help_text = KNOB_LABELS.get(k, (k, None))
        with kc[0 if i < half else 1]:
            if k == "kind":
                knobs[k] = st.segmented_control(label, ["kl", "mse"], required=True, **ui.keep(key, default))
            elif k == "reset_to":
                knobs[k] = st.segmented_control(label, list(S.RESET_TOS), required=True, help=help_text,
                                                **ui.keep(key, default))
            elif k == "label_judge":
                knobs[k] = st.segmented_control(label, list(S.LABEL_JUDGES), required=True, help=help_text,
                                                **ui.keep(key, default))
            elif k == "precision":
                knobs[k] = st.segmented_control(label, list(S.PRECISIONS), required=True, help=help_text,
                                                **ui.keep(key, default))
            elif k == "lr":
                knobs[k] = st.select_slider(label, [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3],
                                            format_func=lambda x: f"{x:g}", **ui.keep(key, default))
            elif isinstance(default, bool):
                knobs[k] = st.checkbox(label, help=help_text, **ui.keep(key, default))
            elif isinstance(default, int):
                low, high = (1, 8) if k == "repair_seeds" else (0, 1000)
                knobs[k] = int(st.number_input(label, low, high, help=help_text, **ui.keep(key, default)))
            elif isinstance(default, float):
                # a score or a share: [0, 1]; a share of the heads cut or pruned: below 1 (at 1 the repair
                # started, then failed "must be in [0, 1)")
                top = 1.0 if k in ("weak_verdict", "trigger_share", "rare_words_share", "exclude_min_excess",
                                   "ffn_mix") else 0.95 if k in ("prune_fraction", "max_fraction") else 100.0
                knobs[k] = float(st.number_input(label, 0.0, top, step=0.05, format="%.3g", help=help_text,
                                                 **ui.keep(key, default)))
    st.caption("Defaults are the defense's own, the settings the benchmarks ran (see its documentation).")
    st.button("Back to the defaults", icon=":material/restart_alt:", on_click=_reset_knobs,
              disabled=not n_changed, key=f"sanitize.{defense}.reset_knobs")

job = ui.get_job("sanitize")
running = job is not None and job.active
out_name = f"{loaded.name}-{defense}"
arch_info = describe_architecture(loaded.model)
refused = defense != "finetune" and not arch_info.supports.get("sanitize", True)
if refused:  # e.g. ALBERT: one set of attention weights shared by every layer
    st.warning(f"{DEFENSES[defense].label} is not available for {md(arch_info.name)}: {md(arch_info.refusal)}",
               icon=":material/block:")
if st.button("Sanitize", type="primary", icon=":material/healing:", disabled=running or refused,
             key="sanitize.run"):
    try:
        clean = train_full.sample(int(n_clean), seed=0)
        pool = []
        if n_pool_trig:
            pool, _ = D.build_pool(loaded, test_full, S.REPAIR_POOL_CLEAN, int(n_pool_trig), seed=S.REPAIR_POOL_SEED,
                                   lock=ui.model_lock(loaded))
        n_eval = int(n_test)
        clean_ref, ref = None, ref_options.get(ref_choice)
        if ref is not None and ref[0] == "folder":  # safetensors only: pickled weights go through the Model page
            typed = str(ui.kept("sanitize.clean_ref_folder", "")).strip()
            if not ui.server_files_allowed():
                raise ValueError(ui.server_files_refusal("A clean reference from a server folder"))
            folder = ui.local_folder(typed)
            if folder is None:
                raise ValueError(f"The clean reference folder '{typed[:200]}' is not a folder on this machine.")
            ref = ("path", str(folder))
        if ref is not None:
            with st.spinner("Loading the clean reference…"):
                try:
                    clean_ref = ref[1] if ref[0] == "model" else ui.shared_model(ref[1])
                except Exception as exc:  # noqa: BLE001 - a message, and no repair starts
                    raise ValueError(f"The clean reference did not load: {exc}") from exc
        with ui.model_lock(loaded):  # the texts to show what the trigger does to the heads, before and after
            try:
                pairs = card_pairs(loaded, test_full, D.model_max_length(loaded))
            except ValueError:  # no non-target test text: the repair runs, without that view
                pairs = None
        A.start_sanitize(loaded, defense, clean, pool or None, knobs,
                         lambda lm: D.make_eval(lm, test_full, n_eval, kept=True), out_name,
                         scan_report=report if reuse else None, effect_pairs=pairs, clean_ref=clean_ref)
        st.rerun()
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, "Cannot start: ")


def _live(snap):
    if A.sanitize_live_chart(snap, "sanitize.live"):
        st.caption("Dotted lines: the model before sanitization.")


ui.job_panel("sanitize", draw=_live)

# --------------------------------------------------------------------------------------------- results

res = st.session_state.get(A.K_SANITIZE)
if res is None or running:
    if res is None and not running:
        st.info("Run a defense to compare the model before and after.", icon=":material/info:")
    st.stop()
if job is not None and job.status in ("cancelled", "failed") and job.snapshot().result is None:
    st.caption(f"The results below are the previous sanitization's ({DEFENSES[res['defense']].label}): the last "
               f"run was {job.status} and kept nothing.")


st.divider()
b, a = res["before"], res["after"]
st.subheader(f"Before and after — {DEFENSES[res['defense']].label}")
if res["suspect"].name != loaded.name:  # the last repair is kept across models: say whose it is
    st.warning(f"These results are the repair of **{md(res['suspect'].name)}** (earlier), not of the current model, "
               f"**{md(loaded.name)}**.", icon=":material/history:")
if res.get("cancelled"):  # the job panel's "partial result is kept" scrolls away; the tiles below read as a repair
    steps = [r.get("step") for r in res.get("history") or [] if r.get("step")]
    st.warning("This repair was cancelled " + (f"after training step {steps[-1]}" if steps else
                                               "before its first training step")
               + ": the numbers below are of a partly repaired model, not of the full defense.",
               icon=":material/cancel:")
tiles = st.container(horizontal=True, gap="large")  # wraps to a second row where five do not fit (1024 px cut "95.…")
if "asr" in b:
    tiles.metric("ASR", f"{a.get('asr', float('nan')):.1%}", width="content",
                 **ui.points_delta(a.get("asr", 0) - b["asr"], delta_color="inverse"))
ref_res = res.get("clean") or {}
lift_b, lift_a = A.lifts(res)
if lift_b is not None and lift_a is not None:
    tiles.metric("Lift over clean", f"{100 * lift_a:+.1f} pts", width="content",
                 **ui.points_delta(lift_a - lift_b, delta_color="inverse"),
                 help=f"ASR minus the clean rate: {md(ref_res['name'])} (no backdoor) sends {ref_res['rate']:.1%} of "
                      "the "
                      f"same triggered texts to the target. Before the repair the lift was {100 * lift_b:+.1f} "
                      "points." + (f" 95% interval after: {100 * ci['low']:+.1f} to {100 * ci['high']:+.1f} points "
                                   f"over these {ci['n']} texts (paired; not counting the repair's own randomness)."
                                   if (ci := (res.get("lift_ci") or {}).get("after")) else ""))
change = res.get("cacc_change")
if "cacc" in b:
    n_cacc = res.get("cacc_texts") or (change or {}).get("n")
    tiles.metric("CACC", f"{a.get('cacc', float('nan')):.1%}", **ui.points_delta(a.get("cacc", 0) - b["cacc"]),
                 help=f"Before the repair {b['cacc']:.1%}"
                      + (f" on these {n_cacc} clean test texts" if n_cacc else "")
                      + ". The sidebar's CACC is the model card's, measured on its own test set when the model "
                        "was made, so the two can differ."
                      + ("" if not change else
                         f" 95% interval of the change: {100 * change['low']:+.1f} to {100 * change['high']:+.1f} "
                         f"points (paired; not counting the repair's own randomness)."),
                 width="content")
tiles.metric("Time", f"{res['seconds']:.0f} s", width="content",
             help="The defense itself, its scan included; the job's time above also counts measuring the model "
                  "before and after.")
heads = res["details"].get("suspicious_heads") or res["details"].get("pruned_heads") or []
if res["defense"] == "finetune":  # it names no heads: it trains every one ("0" had read as none changed)
    tiles.metric("Heads changed", "all", width="content", help="Fine-tuning trains every weight of the model.")
else:
    tiles.metric("Heads changed", len(heads), width="content",
                 help="The heads the repair trained." if res["details"].get("suspicious_heads") is not None else
                 "The heads pruned; the rest of the model was fine-tuned too.")
if "kept" in a:
    tiles.metric("Predictions kept", f"{a['kept']:.1%}", width="content",
                 help="Share of the clean test texts whose predicted class the repair left unchanged. CACC can "
                      "stay flat while a repair changes many predictions (as many fixed as broken).")
if change:
    st.caption(f"CACC change {100 * change['change']:+.1f} points, 95% interval {100 * change['low']:+.1f} to "
               f"{100 * change['high']:+.1f} over {change['n']} clean test texts: {change['fixed']} made right, "
               f"{change['broken']} made wrong (paired; a second repair with another seed can move it further).")
if asr_line := A.asr_interval_line(res):
    st.caption(asr_line + ".")
if heads:
    st.caption(("Repaired heads: " if res["details"].get("suspicious_heads") else "Pruned heads: ")
               + ", ".join(map(str, heads)))
for note in defenses_mod.repair_notes(res["details"]):
    st.caption(md_note(note))  # plain sentences that may name the pretrained checkpoint (a path or a hub id)
if line := A.lift_line(res):
    st.caption(line + ".")
if "asr" not in b:
    st.caption("ASR is not shown: this model's card names no attack, so there is no triggered test set.")

c1, _ = ui.stack_columns("sanitize-cmp", [2, 3])
with c1:
    ui.plot(F.metric_comparison({"before": b, "after": a}), key="sanitize.cmp")
if ui.get_job("sanitize") is None:  # the finished job's panel above draws the run already, at full width
    ui.plot(F.training_curves(res["history"], title="Sanitization run", baseline=b), key="sanitize.hist")

EFFECT_HELP = ("The same test texts with the model card's trigger, before and after the repair. **Similarity "
               "lift**: how much alike the trigger makes each head and the others of its layer (triggered minus the "
               "same texts without it), the signal this defense detects; red where the trigger pulls heads together. "
               "**Attention on the trigger**: the share of each head's attention on the trigger's words (what the "
               "Trojan Attention Loss raises). Not the similarity on triggered inputs alone: the repair pulls the "
               "heads toward their layer's safe heads on clean inputs too, so that rises after a repair that works "
               "(bench/results/repair_effect.md).")

# before / after: the trigger's effect on each head, measured by the job (repair_effect)
effect = res.get("effect")
if effect is not None:
    st.subheader("What the trigger does to the heads, before and after")
    measures = {"lift": "similarity lift"}  # the defense's own signal first; attention where there are words
    if effect.before.concentration is not None:
        measures["concentration"] = "attention on the trigger"
    first = next(iter(measures))
    shown = st.segmented_control("Measure", list(measures), format_func=measures.get, default=first,
                                 key=f"sanitize.effect_measure.{len(measures)}", help=EFFECT_HELP) or first
    ui.plot(F.repair_effect_heatmaps(effect, shown), key="sanitize.heat")
    st.caption(" ".join(effect.summary()))

AN.sanitize_projection(res, test_full, D.model_max_length(res["suspect"]))

# --------------------------------------------------------------------------------------------- keep it

st.subheader("Keep the sanitized model")
st.caption("It stays in this browser tab until you save it; once it is the current model, a reload of the page "
           "brings it back too.")
k1, k2 = st.columns(2)
with k1:
    if st.button("Make it the current model", key="sanitize.use", icon=":material/check:"):
        ui.set_session_model(res["loaded"].name, res["loaded"])
        st.rerun()
with k2:
    sanitized = res["loaded"]
    st.download_button("Download (.zip)", data=lambda: A.saved_zip_bytes(sanitized),
                       file_name=f"{A.slug(sanitized.name)}.zip", mime="application/zip",
                       icon=":material/download:", key="sanitize.download")
with st.expander("Save into the zoo folder"):
    save_panel(res["loaded"], "sanitize")
