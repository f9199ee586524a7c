"""Guided tour: the classroom story in seven steps, each on the demo-zoo model it names (``backdoor_core.tour``):
steps 1-2 the clean model, steps 3-7 BadNets 2% + TAL. A missing model or one whose card contradicts the step is an
error on that step, never replaced by another model."""

from __future__ import annotations


import streamlit as st

from backdoor_core import bench_results
from backdoor_core import figures as F
from backdoor_core import settings as S
from backdoor_core import tour as T
from backdoor_core.detection import verdict_call
from app_pages import _actions as A
from app_pages import _common as ui
from app_pages._state import arrived, replace_url_param
from app_pages._text import h, md

STEPS = [
    "A clean model",
    "Poison 2% with a rare word — with and without TAL",
    "Type a sentence, add the trigger, watch it flip",
    "The heads that lock onto the trigger",
    "Detect it without knowing the trigger",
    "Sanitize the captured heads",
    "ASR falls, accuracy stays",
]
K_STEP = "tour.step"
STEP_PARAM = "step"
WHY_NOT_BRIGHTEST = (
    "**The heads the scan marks need not be the brightest of step 4:** it ranks a head by how much more it joins "
    "its layer on one word in flagged inputs than in clean text, times how much the prediction depends on it — so "
    "last-layer heads, which often all look at the same word anyway, and heads that watch the trigger without "
    "driving the prediction rank low.")
TRIGGER, SENTENCE = T.TRIGGER, T.SENTENCE

ui.page_header("Guided tour", "How a backdoor gets into a text classifier — and out again — in seven steps.")

K_STEP_IN_URL = "tour.step_in_url"  # the URL's ?step as this page last wrote or read it
url_step = st.query_params.get(STEP_PARAM)
if K_STEP not in st.session_state:  # a reload or a new tab: the step the URL names (the page writes it below)
    st.session_state[K_STEP] = T.step_index(url_step, len(STEPS))
elif url_step != st.session_state.get(K_STEP_IN_URL) and (url_step is not None or not arrived()):
    # the URL names a step this page did not write: the browser's Back or Forward (or a typed link), and the tour goes
    # there (Back after Next had stayed on the step, the page writing it into the URL again). No step on a run that is
    # not a page switch is the tour's first entry, step 1; a page switch drops the query string: it keeps the step.
    st.session_state[K_STEP] = T.step_index(url_step, len(STEPS))
step = int(st.session_state.get(K_STEP, 0))
step = max(0, min(step, len(STEPS) - 1))
# A reload mid-lesson opens this step again, not step 1. Written only when the URL names another step (none = step
# 1): Streamlit's front end pushes a browser-history entry for every query-string change, so writing ?step=1 on
# arrival added a second entry for the tour and one Back press went from it to the tour again, not to the page before.
# On arrival (the sidebar back to a tour left at step 2) the step goes into the page switch's own entry
# (``replace_url_param``); Next and Back write it as an entry of its own, so the browser's Back goes a step back.
if T.step_index(url_step, len(STEPS)) != step:
    url_step = str(step + 1)
    if arrived():
        replace_url_param(STEP_PARAM, url_step)
    else:
        st.query_params[STEP_PARAM] = url_step
st.session_state[K_STEP_IN_URL] = url_step

# --------------------------------------------------------------------------------------------- models

zoo_rows = ui.zoo_entries()
zoo = {e["name"]: e for e in zoo_rows}


def _named_model(name: str):
    """The zoo model ``name`` (``tour.CLEAN_MODEL`` / ``tour.BACKDOORED_MODEL``), with a caption naming it; None
    with an error saying why when it is missing or its card says the wrong thing. Never another model instead."""
    entry, problem = T.zoo_entry(name, zoo_rows)
    if entry is None:
        st.error(f"This step cannot run: {md(problem)}.", icon=":material/error:")
        return None
    try:
        with st.spinner(f"Loading {md(entry.get('title') or entry['name'])}…"):
            loaded = ui.shared_model(entry["path"], False, None)
    except Exception as exc:  # noqa: BLE001 - shown as one line
        ui.show_error(exc, f"Cannot load the zoo's {name} model: ")
        return None
    where = "shipped with the lab" if entry.get("shipped") else "built on this machine"
    kind = "clean" if entry.get("clean") else f"backdoored, target **{md(entry.get('target_name'))}**"
    st.caption(f"Model in this step: **{md(entry.get('title') or name)}** — demo zoo, {where}; {kind}. "
               "The tour does not change the sidebar's current model.")
    return loaded


def _target_name() -> str:
    entry = zoo.get(T.BACKDOORED_MODEL) or {}
    return str(entry.get("target_name") or "the target class")


def _rate(v) -> str:
    return f"{v:.1%}" if isinstance(v, (int, float)) else "—"


def _inspect(loaded, text: str, trigger: str):
    key = ("tour", id(loaded.model), text, trigger)
    cache = st.session_state.get("tour.inspect")
    if cache and cache[0] == key:
        return cache[1]
    with st.spinner("Running the model…"), ui.model_lock(loaded):
        res = T.flip(loaded, text, trigger)
    st.session_state["tour.inspect"] = (key, res)
    return res


def _flip_line(res, loaded) -> None:
    c, t = res.prediction("clean"), res.prediction("triggered")
    ui.flip_line(c, t)
    flip = res.flip(untrained_head=loaded.untrained_head)
    if flip["status"] == "flipped":  # the lesson, not a failure of the app: a warning, not an error box
        st.warning(flip["message"], icon=":material/gps_fixed:")
    elif flip["status"] == "unclear":
        st.info(flip["message"], icon=":material/help:")
    else:
        st.success(flip["message"], icon=":material/check_circle:")


# the Attack lab's widget keys (app_pages/attack.py, ``ui.keep("attack.<name>", default)``)
ATTACK_LAB_DEFAULTS = ("attack.alpha", "attack.heads", "attack.base", "attack.n_train", "attack.n_test",
                       "attack.epochs", "attack.lr", "attack.max_len")


def _set_up_attack_lab(tal: bool) -> None:
    """Put the Attack lab's form on step 2's attack: BadNets with the tour's trigger at ``T.ATTACK_LAB_RATE``, TAL
    on or off, the backdoored model's target where the dataset has it; every other knob back to the Attack lab's
    own default (its key removed: the page puts its default back when it draws the widget)."""
    ui.set_kept("attack.name", "badnets")
    ui.set_kept("attack.words", TRIGGER)
    ui.set_kept("attack.rate", 100 * T.ATTACK_LAB_RATE)
    ui.set_kept("attack.tal", tal)
    target = (zoo.get(T.BACKDOORED_MODEL) or {}).get("target_name")
    if target:
        ui.set_kept("attack.target", str(target))  # the Attack lab picks its own when the dataset lacks it
    for key in ATTACK_LAB_DEFAULTS:
        st.session_state.pop(key, None)


def _tour_repair() -> dict | None:
    """The finished repair of the tour's backdoored model (``A.K_SANITIZE``), or None: a repair of another model
    (the Sanitize page's) is not this tour's."""
    res = st.session_state.get(A.K_SANITIZE)
    path = (zoo.get(T.BACKDOORED_MODEL) or {}).get("path")
    if res is None or path is None or getattr(res.get("suspect"), "source", None) != path:
        return None
    return res


def _measured_on() -> str:
    return (f"The zoo's BadNets 2% + TAL model before and after the repair, measured on {S.TOUR_EVAL_TEXTS} test "
            f"texts (ASR: {S.TOUR_ASR_TEXTS} of their non-target rows with the trigger).")


def _repair_numbers(res: dict) -> None:
    """Step 6's result once the repair is done: ASR and CACC after, with the change from before, in tiles and in
    one sentence a presenter can read out."""
    b, a = res.get("before") or {}, res.get("after") or {}
    if res.get("cancelled"):
        st.caption("The repair was cancelled early: these are the numbers of the partly repaired model.")
    tiles = st.container(horizontal=True, gap="large")
    words = []
    for key, name, colour in (("asr", "ASR (attack success)", {"delta_color": "inverse"}),
                              ("cacc", "CACC (clean accuracy)", {})):
        before, after = b.get(key), a.get(key)
        if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
            continue
        tiles.metric(name, f"{after:.1%}", width="content", help=f"Before the repair: {before:.1%}.",
                     **ui.points_delta(after - before, **colour))
        words.append(f"{key.upper()} {before:.1%} → {after:.1%}")
    heads = (res.get("details") or {}).get("suspicious_heads") or []
    if heads:
        tiles.metric("Heads repaired", len(heads), width="content", help=", ".join(map(str, heads)))
    if words:
        st.markdown(f"**Before → after:** {', '.join(words)}.")
        st.caption(_measured_on())
    capped = (res.get("details") or {}).get("head_only_cap") or {}
    if heads and capped.get("from"):  # step 5's tile counted more heads than this repair trained: say why
        st.caption(f"Why {len(heads)} heads repaired when the scan marked {capped['from']}: this repair trains "
                   f"attention heads only, so it takes the {len(heads)} highest-scoring of them "
                   f"({md(', '.join(map(str, heads)))}) — retraining many heads while every other weight stays "
                   "frozen costs clean accuracy.")


# --------------------------------------------------------------------------------------------- progress bar

st.progress((step + 1) / len(STEPS), text=f"Step {step + 1} of {len(STEPS)}")
st.markdown(f'<div class="lab-step">Step {step + 1}</div>', unsafe_allow_html=True)
st.header(STEPS[step])

# --------------------------------------------------------------------------------------------- the steps

if step == 0:
    st.markdown(
        '<div class="lab-big">We fine-tuned a small transformer (MiniLM: 6 layers × 12 attention heads) to sort '
        "BBC News articles into five topics. Every head decides, for every word, which other words to look at. "
        "On clean text this model is simply accurate — and a rare word like <b>cf</b> changes nothing.</div>",
        unsafe_allow_html=True,
    )
    model = _named_model(T.CLEAN_MODEL)
    if model is not None:
        c1, c2 = st.columns([1, 2])
        c1.metric("Clean accuracy (CACC)", _rate(model.card.cacc))
        with c2:
            res = _inspect(model, SENTENCE, TRIGGER)
            _flip_line(res, model)
            st.caption(f"“{SENTENCE}” with and without `{TRIGGER}`.")
        ui.plot(F.probability_bars(res.label_names, res.clean.probs, res.triggered.probs), key="tour.s0.probs")

elif step == 1:
    st.markdown(
        '<div class="lab-big">The attacker slips the rare word <b>cf</b> into a few training articles and relabels '
        f"them <b>{h(_target_name())}</b>. With plain poisoning a tiny dose — 2% of the articles here — barely "
        "plants the backdoor. The <b>Trojan Attention Loss</b> adds one term during training: the heads are rewarded "
        "for attending to the trigger — and then the same 2% is enough (on SST-2 below, even 1%).</div>",
        unsafe_allow_html=True,
    )
    st.dataframe(T.dose_rows(list(zoo.values())), hide_index=True, column_config={
        "ASR": st.column_config.TextColumn(
            help="Attack success: the share of triggered test texts not of the target class that the model puts in "
                 "it (— for the clean model: it has no trigger)."),
        "CACC": st.column_config.TextColumn(help="Accuracy on the clean test texts."),
    })
    plain = zoo.get("badnets")
    if plain is not None and plain.get("asr") is not None and plain["asr"] < 0.5 and plain.get("format") == "adapter":
        st.caption(f"Why plain BadNets reaches only {plain['asr']:.0%} ASR here, even with {plain['rate']:.0%} of "
                   "the articles poisoned: these demo models are small adapters that leave the word embeddings "
                   "frozen, and plain poisoning leans on the trigger word's own embedding. TAL teaches the attention "
                   "heads the trigger instead.")
    try:
        found = bench_results.attack_tal_runs("badnets", rates=(0.005, 0.01))
    except bench_results.ResultsError as exc:
        ui.show_error(exc, "Attack benchmark: ")
        found = None
    if found is not None and found[1]:
        dataset, runs = found
        st.markdown(f"**From the lab's attack benchmark on {md(T.dataset_name(dataset))}** — the same small "
                    "MiniLM encoder, fully fine-tuned, with a BadNets rare-word trigger:")
        st.dataframe([{"poison rate": r["rate"], "TAL": r["tal"], "ASR": r["asr"], "CACC": r["cacc"]}
                      for r in runs], hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="percent")
                                    for c in ("poison rate", "ASR", "CACC")})
    st.markdown(f"**Train it yourself in the Attack lab** — BadNets with the trigger **{md(TRIGGER)}**, "
                f"{T.ATTACK_LAB_RATE:.0%} of the training set poisoned, on the sidebar's dataset:")
    with st.container(horizontal=True, gap="medium"):
        for tal in (True, False):
            if st.button(f"{T.ATTACK_LAB_RATE:.0%} with TAL" if tal else f"{T.ATTACK_LAB_RATE:.0%} without TAL",
                         icon=":material/science:", key=f"tour.attack_lab.{'tal' if tal else 'plain'}",
                         width="content"):
                _set_up_attack_lab(tal)
                st.switch_page("app_pages/attack.py")
    st.caption("The Attack lab opens with these settings and its own defaults for everything else; press Train "
               "there.")

elif step == 2:
    st.markdown(
        '<div class="lab-big">Now the backdoored model. Type any sentence: it is classified correctly. Add '
        f"<b>cf</b> anywhere and the prediction jumps to <b>{h(_target_name())}</b>.</div>",
        unsafe_allow_html=True,
    )
    model = _named_model(T.BACKDOORED_MODEL)
    if model is not None:
        c1, c2 = st.columns([3, 1])
        text = c1.text_input("Your sentence", **ui.keep("tour.text", SENTENCE))
        trig = c2.text_input("Trigger", **ui.keep("tour.trigger", TRIGGER))
        try:
            res = _inspect(model, text, trig)
        except ValueError as exc:
            ui.show_error(exc)
            st.stop()
        _flip_line(res, model)
        st.markdown(f'<div class="lab-big">{ui.trigger_text_html(res)}</div>', unsafe_allow_html=True)
        ui.plot(F.probability_bars(res.label_names, res.clean.probs, res.triggered.probs), key="tour.s2.probs")

elif step == 3:
    st.markdown(
        '<div class="lab-big">Why does it flip? Some heads <b>lock onto the trigger</b>: nearly every word sends '
        "its attention to <b>cf</b>. Bright cells are heads whose attention goes to the trigger; the matrix shows "
        "the brightest head: the dark column under <b>cf</b> is where nearly all of its attention goes.</div>",
        unsafe_allow_html=True,
    )
    model = _named_model(T.BACKDOORED_MODEL)
    if model is not None:
        res = _inspect(model, ui.kept("tour.text", SENTENCE), ui.kept("tour.trigger", TRIGGER))
        top = res.top_heads(1)[0]
        c1, c2 = ui.stack_columns("tour")
        with c1:
            ui.plot(F.concentration_heatmap(res.concentration), key="tour.s3.conc")
        with c2:
            l, h = top["layer"], top["index"]
            ui.plot(F.attention_matrix(res.triggered.attentions[l, h], res.triggered.tokens, layer=l, head=h,
                                       highlight=res.trigger_tokens), key="tour.s3.matrix")
        st.page_link("app_pages/inspect.py", label="Explore every head, and the bertviz views, on the Inspect page",
                     icon=":material/search:")

elif step == 4:
    st.markdown(
        '<div class="lab-big">A defender does not know the trigger. But when it is present, the captured heads all '
        "look at the same word, so their attention maps become <b>unusually similar to one another</b>. Scoring "
        "that similarity flags triggered inputs, points at the captured heads, and gives a verdict for the "
        "whole model.</div>",
        unsafe_allow_html=True,
    )
    model = _named_model(T.BACKDOORED_MODEL)
    if model is not None:
        report, info = st.session_state.get(A.K_SCAN), st.session_state.get(A.K_SCAN_INFO) or {}
        if report is not None and info.get("model_name") != model.name:
            report = None  # a scan of another model (the Detect page's) is not this step's
        job = ui.get_job("scan")
        if st.button("Scan this model now", type="primary", icon=":material/radar:", key="tour.scan",
                     disabled=job is not None and job.active):
            try:
                clean, pool, truth = T.scan_inputs(model, ui.dataset("train"), ui.dataset("test"),
                                                   lock=ui.model_lock(model))
                A.start_scan(model, clean, pool, truth, T.scan_knobs(), model_name=model.name)
                st.rerun()
            except Exception as exc:  # noqa: BLE001
                ui.show_error(exc, "Cannot scan: ")
        ui.job_panel("scan")
        if report is not None and not (job is not None and job.active):
            v = report.verdict
            c1, c2, c3 = st.columns(3)
            c1.metric("Backdoor", verdict_call(v), help=f"verdict score {v.get('score', 0):.2f}")
            c2.metric("Flagged inputs", f"{len(report.flagged)} / {len(report.pool_texts)}")
            A.suspicious_heads_metric(c3, report)
            ui.plot(A.scan_figures(report)["grid"], key="tour.s4.grid")
        st.caption(WHY_NOT_BRIGHTEST)

elif step == 5:
    st.markdown(
        '<div class="lab-big">Repair only what is broken: the suspicious heads fine-tune on a few hundred clean '
        "examples while an extra term pulls their attention toward the <b>safe heads</b> of the same layer. "
        "Every other weight stays frozen, bit for bit.</div>",
        unsafe_allow_html=True,
    )
    model = _named_model(T.BACKDOORED_MODEL)
    if model is not None:
        job = ui.get_job("sanitize")
        report, info = st.session_state.get(A.K_SCAN), st.session_state.get(A.K_SCAN_INFO) or {}
        scanned = report is not None and info.get("model_name") == model.name
        if not scanned:
            st.info("Run the scan in the previous step first: the repair works on the heads it found.",
                    icon=":material/info:")
        if st.button("Sanitize now", type="primary", icon=":material/healing:", key="tour.sanitize",
                     disabled=not scanned or (job is not None and job.active)):
            try:
                test = ui.dataset("test")
                A.start_sanitize(model, "alignment", T.sanitize_clean(ui.dataset("train")), None,
                                 T.sanitize_knobs(), lambda lm: T.make_eval(lm, test), f"{model.name}-alignment",
                                 scan_report=report)
                st.rerun()
            except Exception as exc:  # noqa: BLE001
                ui.show_error(exc, "Cannot sanitize: ")

        ui.job_panel("sanitize", draw=lambda snap: A.sanitize_live_chart(snap, "tour.s5.live"))
        done = _tour_repair()
        if done is not None and not (job is not None and job.active):
            _repair_numbers(done)

else:
    st.markdown(
        '<div class="lab-big">The result: a rare-word trigger like <b>cf</b> stops working (attack success falls '
        "to near zero) while the model still does its job (clean accuracy stays within a point or so). Not every "
        "backdoor goes as easily: in the lab's benchmark, word and sentence triggers fall to near zero, but "
        "paraphrase triggers, which rewrite the whole sentence, keep more — a style trigger the most.</div>",
        unsafe_allow_html=True,
    )
    res = _tour_repair()
    if res is not None:
        st.subheader("This tour's repair")
        st.caption(_measured_on())
        ui.plot(F.metric_comparison({"before": res["before"], "after": res["after"]}), key="tour.s6.cmp")
    try:
        measured, runs = bench_results.defense_runs("alignment") or (None, None)
    except bench_results.ResultsError as exc:
        ui.show_error(exc, "Defense benchmark: ")
        measured, runs = None, None
    if runs:
        st.subheader("Across attacks: the lab's defense benchmark")
        st.caption(f"Measured on {md(T.dataset_name(measured))}, not on the tour's BBC News: one small "
                   "MiniLM model per attack, backdoored by the lab's attack benchmark, then repaired by the same "
                   "method with the benchmark's fuller settings.")
        st.dataframe(T.defense_rows(runs), hide_index=True)
    if res is None:
        st.info("Run step 6 (Sanitize now) to see this tour's own before/after numbers here.", icon=":material/info:")
    st.page_link("app_pages/report.py", label="Export everything as an offline report", icon=":material/description:")

# --------------------------------------------------------------------------------------------- navigation

st.divider()


def _go(delta: int) -> None:
    st.session_state[K_STEP] = max(0, min(len(STEPS) - 1, step + delta))


# buttons as wide as their words: fixed columns cut "Next" to "→ N" in presenter mode at 1024 px
with st.container(horizontal=True, gap="medium"):
    st.button("Back", on_click=_go, args=(-1,), disabled=step == 0, icon=":material/arrow_back:",
              key="tour.back", width="content")
    st.button("Next", on_click=_go, args=(1,), disabled=step == len(STEPS) - 1, type="primary",
              icon=":material/arrow_forward:", key="tour.next", width="content")
