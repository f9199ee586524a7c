"""Compare two models on the same text: the suspect vs a clean reference, before vs after repair, or the model vs
itself with heads switched off (``backdoor_core.model_compare``)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from backdoor_core import figures as F
from backdoor_core.attention import InputTextError
from backdoor_core.architecture import layer_labels
from backdoor_core.defender_data import model_max_length
from app_pages import _actions as A
from app_pages import _analyst as AN
from app_pages import _common as ui
from app_pages._text import cut_middle, md
from app_pages._widgets import figure_once

ui.page_header(
    "Compare two models",
    "The same text, with and without a trigger, through two models side by side: a suspect and a clean "
    "reference, the model before and after a repair, or the model with some heads switched off.",
)

DEFAULT_TEXT = "The government announced new plans to cut taxes for small businesses next year."
HEADS_OFF = "This model with heads switched off"

loaded = ui.current_model()
if loaded is None:
    st.stop()
# the length model A was trained to read, as the Inspect page reads it (a fixed 128 gave other probabilities than
# Inspect for the same text once it was longer than a zoo model's 64 tokens)
MAX_LENGTH = model_max_length(loaded)

# --------------------------------------------------------------------------------------------- model B

options: dict[str, object] = {HEADS_OFF: None}
san = st.session_state.get(A.K_SANITIZE)
if san is not None:
    options[f"Before the last repair ({san['suspect'].name})"] = ("model", san["suspect"])
    options[f"After the last repair ({san['loaded'].name})"] = ("model", san["loaded"])
listed = [opt[1] for opt in options.values() if opt is not None]
for name, lm in ui.session_models().items():
    if lm is not loaded and not any(lm is other for other in listed):  # the last repair's is listed already
        options.setdefault(f"Session model: {name}", ("model", lm))
for entry in ui.zoo_entries():
    if entry.get("path") and str(entry["path"]) != str(getattr(loaded, "source", "")):
        options.setdefault(f"Zoo: {entry.get('title') or entry.get('name')}", ("zoo", str(entry["path"])))

c1, c2 = ui.stack_columns("compare-form", [2, 3], gap="large")
with c1:
    st.markdown(f"**Model A** (current): {md(loaded.name)}")
    choice = st.selectbox("Model B", list(options), key="compare.b")
    heads_off = None
    L, H = loaded.num_layers, loaded.num_heads
    if choice == HEADS_OFF:
        from backdoor_core.head_metrics import head_label

        names = [head_label(l, h) for l in range(L) for h in range(H)]
        scan = st.session_state.get(A.K_SCAN)
        scanned = [n for n in (scan.suspicious_heads if scan is not None and
                               (st.session_state.get(A.K_SCAN_INFO) or {}).get("model_name") == loaded.name
                               else []) if n in names]
        off = st.session_state.get(AN.K_INSPECT_HEADS_OFF) or {}
        inspected = [n for n in off.get("heads") or [] if n in names] if off.get("model") == loaded.name else []
        if any(n not in names for n in ui.kept("compare.heads", [])):  # another model's grid: start again
            st.session_state.pop("compare.heads")
        # the user's choice is kept across pages; a first visit starts from the last scan's heads
        chosen = st.multiselect("Heads switched off in B", names,
                                **ui.keep("compare.heads", scanned or inspected or names[:1]),
                                help="Starts from the last scan's suspicious heads of this model (or the heads "
                                     "switched off on the Inspect page); your choice is kept across pages.")
        from backdoor_core.ablation import parse_heads

        heads_off = parse_heads(chosen, L, H) if chosen else np.zeros((L, H), bool)
        if len(chosen) > 3:  # the field shows only the first few chips of a long list
            st.caption(f"{len(chosen)} heads switched off: " + ", ".join(chosen))
with c2:
    text = st.text_area("Text", height=90, **ui.keep("compare.text", DEFAULT_TEXT))
    meta_trigger = loaded.card.first_trigger  # None when the card names no word/sentence trigger
    # after another model is loaded, a trigger still holding the last model's card trigger (or the stock "cf")
    # follows the new card's, as on the Inspect page; a typed trigger is kept
    ref = ui.model_ref()
    model_id = (ref.get("kind"), ref.get("spec") or ref.get("name"))
    seen = st.session_state.get("compare.trigger_seen")
    if meta_trigger and seen and seen[0] != model_id and ui.kept("compare.trigger") in (seen[1], "cf", None):
        ui.set_kept("compare.trigger", meta_trigger)
    st.session_state["compare.trigger_seen"] = (model_id, meta_trigger)
    trigger = st.text_input("Trigger (word or sentence)", **ui.keep("compare.trigger", meta_trigger or "cf"))
    seed = st.number_input("Seed of the insertion position", 0, 10_000, **ui.keep("compare.seed", 0))

# --------------------------------------------------------------------------------------------- compute

opt = options[choice]
if opt is None:
    n_off = int(heads_off.sum())
    model_b, name_b = loaded, f"{loaded.name} without {n_off} head{'s' if n_off != 1 else ''}"
elif opt[0] == "model":
    model_b, name_b = opt[1], opt[1].name
else:
    try:
        model_b = ui.shared_model(opt[1])
        name_b = model_b.name
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, "Model B: ")
        st.stop()

key = (id(loaded.model), id(model_b.model), text, trigger, int(seed),
       None if heads_off is None else tuple(map(tuple, heads_off)))
cache = st.session_state.get("compare.cache")
if cache is not None and cache[0] == key:
    cmp = cache[1]
else:
    from backdoor_core.model_compare import compare_models

    try:
        with st.spinner("Running both models…"), ui.model_lock(loaded), ui.model_lock(model_b):
            cmp = compare_models(loaded.model, loaded.tokenizer, model_b.model, model_b.tokenizer, text,
                                 trigger.strip(), seed=int(seed), max_length=MAX_LENGTH,
                                 max_length_b=model_max_length(model_b), name_a=loaded.name,
                                 name_b=name_b, label_names_a=loaded.label_names,
                                 label_names_b=model_b.label_names, heads_off_b=heads_off)
        st.session_state["compare.cache"] = (key, cmp)
    except (InputTextError, ValueError) as exc:
        ui.show_error(exc)
        st.stop()

# --------------------------------------------------------------------------------------------- results

st.divider()
m = st.columns(2, gap="medium")
for col, who, res, name in ((m[0], "A", cmp.a, cmp.name_a), (m[1], "B", cmp.b, cmp.name_b)):
    with col:
        st.markdown(f"**{who}: {md(cut_middle(name, 80))}**")
        ui.flip_line(res.prediction("clean"), res.prediction("triggered"))
# cut: by either model's tokenizer (a B that splits words finer is cut where A is not)
cut = [who for who, r in (("A", cmp.a), ("B", cmp.b)) if r.clean.truncated or r.triggered.truncated]
lengths = (("A", MAX_LENGTH), ("B", model_max_length(model_b)))
st.caption(f"Each line: the prediction on the clean text → with the trigger. Both models read: "
           f"“{md(cmp.a.triggered.text, 200)}”"
           + (f" — cut to its first {lengths[0][1]} tokens." if len(cut) == 2 and lengths[0][1] == lengths[1][1]
              else " — cut to its first "
              + ", ".join(f"{n} tokens by {w}'s tokenizer" for w, n in lengths if w in cut) + "." if cut else "")
           + (f" A reads {lengths[0][1]} tokens, B {lengths[1][1]}: each the length it was trained at."
              if lengths[0][1] != lengths[1][1] else ""))
if list(cmp.a.label_names) != list(cmp.b.label_names):  # each side's lines and bars name its own model's classes
    st.caption(f"The two models have different classes — A: {md(', '.join(map(str, cmp.a.label_names)), 200)}; "
               f"B: {md(', '.join(map(str, cmp.b.label_names)), 200)}. Each side names its own model's classes.")

p1, p2 = ui.stack_columns("compare-probs")
with p1:
    ui.plot(figure_once("compare.probs_a", lambda: F.probability_bars(
        cmp.a.label_names, cmp.a.clean.probs, cmp.a.triggered.probs, title=f"A: {cut_middle(cmp.name_a, 40)}"),
        (cmp,)), key="compare.probs_a")
with p2:
    ui.plot(figure_once("compare.probs_b", lambda: F.probability_bars(
        cmp.b.label_names, cmp.b.clean.probs, cmp.b.triggered.probs, title=f"B: {cut_middle(cmp.name_b, 40)}"),
        (cmp,)), key="compare.probs_b")

if cmp.same_shape:
    bound = max(1e-6, float(max(np.nanmax(cmp.a.concentration), np.nanmax(cmp.b.concentration))))
    # each grid's layers as Inspect names them (ModernBERT's "L1 (local)"); the differences' where A's and B's agree
    names_a, names_b = (layer_labels((r.architecture or {}).get("layer_kinds")) for r in (cmp.a, cmp.b))
    names_ab = names_a if names_a == names_b else None
    # two charts a row: three 12-head grids side by side in a 1280-px window cut the colorbars' labels
    g1, g2 = ui.stack_columns("compare-conc")
    with g1:
        ui.plot(figure_once("compare.conc_a", lambda: F.layer_head_heatmap(
            cmp.a.concentration, title="A: trigger concentration", zmin=0.0, zmax=bound,
            value_name="attention on trigger", layer_labels=names_a), (cmp,)), key="compare.conc_a")
    with g2:
        ui.plot(figure_once("compare.conc_b", lambda: F.layer_head_heatmap(
            cmp.b.concentration, title="B: trigger concentration", zmin=0.0, zmax=bound,
            value_name="attention on trigger", marks=heads_off, mark_name="switched off", layer_labels=names_b),
            (cmp,), (None if heads_off is None else np.asarray(heads_off).tolist(),)), key="compare.conc_b")
    g3, g4 = ui.stack_columns("compare-diff")
    with g3:
        ui.plot(figure_once("compare.conc_diff", lambda: F.difference_heatmap(
            cmp.concentration_delta, title="B − A: trigger concentration", value_name="Δ attention on trigger",
            layer_labels=names_ab), (cmp,)), key="compare.conc_diff")
    with g4:
        ui.plot(figure_once("compare.sim_diff", lambda: F.difference_heatmap(
            cmp.similarity_delta_delta, title="B − A: change in head-to-head similarity (triggered − clean)",
            value_name="Δ similarity change", layer_labels=names_ab), (cmp,)), key="compare.sim_diff")
    st.caption("Blue cells in the difference grids: heads that lock onto the trigger (or collapse together with "
               "it) less in B than in A.")
else:
    st.info("The two models have different layer × head grids, so only their predictions are compared.",
            icon=":material/info:")

# once per comparison, not at every rerun (each record wrote the whole report to disk)
if AN.not_recorded("compare.recorded", (cmp,), "compare:latest", loaded.name):
    ui.lab().record("inspect", "Model comparison", key="compare:latest", model=loaded.name,
                    # markdown on the Report page and in the HTML report: names and text escaped here
                    text=f"A = {md(cmp.name_a)}, B = {md(cmp.name_b)}; text *{md(cmp.a.triggered.text[:200])}*",
                    table=[{"model": side["model"], "clean": side["clean"]["label"],
                            "with trigger": side["triggered"]["label"]} for side in (cmp.to_dict()["a"],
                                                                                     cmp.to_dict()["b"])],
                    figures=[F.difference_heatmap(cmp.concentration_delta, title="B − A: trigger concentration",
                                                  value_name="Δ attention on trigger")]
                    if cmp.same_shape else [], data=cmp.to_dict())
