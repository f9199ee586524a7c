"""Inspect: one text with and without a trigger — prediction, heads that lock onto it, bertviz views."""

from __future__ import annotations


import numpy as np
import streamlit as st

from backdoor_core import figures as F
from backdoor_core.architecture import layer_labels
from backdoor_core.attention import InputTextError
from backdoor_core.data import DataError, SHARED_LABEL_NAMES, paraphrase_sets
from backdoor_core.defender_data import model_max_length
from backdoor_core.head_metrics import head_label
from backdoor_core.poisoning import ADDSENT_TRIGGER, BADNETS_TRIGGERS, attack_type
from backdoor_core.triggers import placement_note
from app_pages import _analyst as AN
from app_pages import _common as ui
from app_pages._state import follow_default
from app_pages._text import md, md_code
from app_pages._widgets import figure_once

ui.page_header(
    "Inspect a text",
    "Type a sentence (or pick one from the dataset), add a trigger, and compare what the model predicts and "
    "where its attention heads look — with and without the trigger.",
)

DEFAULT_TEXT = "The government announced new plans to cut taxes for small businesses next year."

loaded = ui.current_model()
if loaded is None:
    st.stop()

card = loaded.card
try:  # the trigger word or sentence the model card names (the first BadNets word); paraphrases have none to insert
    meta_trigger = card.first_trigger if card.is_backdoored and attack_type(card.attack).has_trigger_tokens else None
except ValueError:  # an attack this lab does not know
    meta_trigger = None
MAX_LENGTH = model_max_length(loaded)  # the length the model was trained to read (its card), else the default

# The trigger fields keep their value across pages, so after loading another model they still held the last
# model's trigger ("cf" for an AddSent model whose card names its sentence: "Same prediction with and without the
# trigger"). When the model changed and the fields hold the last model's card trigger or the stock default (not a
# trigger the user typed), they follow the new card's trigger.
K_TAB = "inspect.tab"  # the open tab (only it and the first three draw)
K_TRIGGER_SEEN = "inspect.trigger_seen"  # (model, its card's trigger) when the page last drew the fields
_ref = ui.model_ref()
_model_id = (_ref.get("kind"), _ref.get("spec") or _ref.get("name"))
_seen = st.session_state.get(K_TRIGGER_SEEN)
if meta_trigger and _seen and _seen[0] != _model_id:
    _kind = ui.kept("inspect.kind")
    _active = {"Word": ui.kept("inspect.word"), "Sentence": ui.kept("inspect.sentence")}.get(_kind, "")
    if _kind != "Paraphrase" and _active in (_seen[1], BADNETS_TRIGGERS[0], ADDSENT_TRIGGER, None):
        if " " in meta_trigger:
            ui.set_kept("inspect.kind", "Sentence")
            ui.set_kept("inspect.sentence", meta_trigger)
        else:
            ui.set_kept("inspect.kind", "Word")
            ui.set_kept("inspect.word", meta_trigger)
st.session_state[K_TRIGGER_SEEN] = (_model_id, meta_trigger)

# --------------------------------------------------------------------------------------------- inputs

left, right = ui.stack_columns("inspect-form", [3, 2], gap="large")
with left:
    text = st.text_area("Text", height=110, **ui.keep("inspect.text", DEFAULT_TEXT))
    ds = None
    with st.expander("…or pick an example from the dataset"):
        try:
            ds = ui.dataset("test", label_names=loaded.label_names)
        except Exception:  # noqa: BLE001
            try:
                ds = ui.dataset("dev")
            except Exception as exc:  # noqa: BLE001
                ui.show_error(exc, "No examples: ")
        if ds is not None and len(ds):
            n = min(len(ds), 200)
            idx = st.number_input(f"Example number (0–{n - 1})", 0, n - 1, **ui.keep("inspect.example", 0))
            st.caption(md(f"[{ds.label_names[ds.labels[int(idx)]]}] {ds.texts[int(idx)][:300]}"))

            def _use_example(i=int(idx)):
                ui.set_kept("inspect.text", ds.texts[i])

            st.button("Use this example", on_click=_use_example, key="inspect.use_example")

with right:
    kind = st.segmented_control("Trigger", ["Word", "Sentence", "Paraphrase"], required=True,
                                **ui.keep("inspect.kind", "Sentence" if str(card.attack or "").startswith("addsent")
                                          else "Word"))
    trigger = None
    para_pair = None
    if kind == "Word":
        default_word = meta_trigger if meta_trigger and " " not in meta_trigger else BADNETS_TRIGGERS[0]
        trigger = st.text_input("Trigger word", **ui.keep("inspect.word", default_word),
                                help=f"Rare words such as {', '.join(BADNETS_TRIGGERS)} are BadNets' classic "
                                     "triggers.")
    elif kind == "Sentence":
        default_sent = meta_trigger if meta_trigger and " " in meta_trigger else ADDSENT_TRIGGER
        trigger = st.text_input("Trigger sentence", **ui.keep("inspect.sentence", default_sent))
    else:
        variants = paraphrase_sets(loaded.label_names)  # rewrites of this model's task only
        if not variants:
            tasks = ", ".join(f"{k} ({' / '.join(v)})" for k, v in SHARED_LABEL_NAMES.items())
            st.info(f"No paraphrased set of this model's task ({md(', '.join(loaded.label_names))}) is here: the "
                    f"shared sets rewrite {tasks} texts (../shared/data/<set>/syntactic_transfer, style_*). Load a "
                    "model of one of those tasks to try a paraphrase trigger.", icon=":material/info:")
        else:
            variant = st.selectbox("Paraphrased dataset", variants, **ui.keep("inspect.variant", variants[0]))
            row = st.number_input("Row", 0, 10_000, **ui.keep("inspect.para_row", 1))
            base = variant.split("/")[0]
            try:
                para_ds = ui.dataset("train", spec=variant)
                clean_ds = ui.dataset("train", spec=f"{base}/clean")
                i = int(min(row, len(para_ds) - 1, len(clean_ds) - 1))
                para_pair = (clean_ds.texts[i], para_ds.texts[i], variant.split("/")[1])
                st.caption("The model reads this row and its rewrite, not the text box.")
            except (DataError, OSError, ValueError) as exc:
                ui.show_error(exc, "Paraphrased data: ")
    if kind != "Paraphrase":
        where = st.radio("Position", ["random (seeded)", "choose word"], horizontal=True,
                         **ui.keep("inspect.where", "random (seeded)"))
        position = None
        seed = 0
        if where == "choose word":
            n_words = max(1, len(text.split()))
            if ui.kept("inspect.position", 0) > n_words:
                ui.set_kept("inspect.position", n_words)
            position = st.slider("Insert before word", 0, n_words, **ui.keep("inspect.position", min(2, n_words)))
            position = min(position, n_words)
        else:
            seed = st.number_input("Seed", 0, 10_000, **ui.keep("inspect.seed", 0))
    if meta_trigger:
        st.caption(f"This model's card names its trigger: {md_code(meta_trigger)}.")

# --------------------------------------------------------------------------------------------- compute


def _result_key() -> tuple:
    ref = ui.model_ref()
    model_id = (ref.get("kind"), ref.get("spec") or ref.get("name"), id(loaded.model))
    if kind == "Paraphrase":
        return (model_id, "pair", para_pair)
    return (model_id, text, kind, trigger, position, seed)


def _compute():
    from backdoor_core.compare import inspect_pair
    from backdoor_core.inspection import inspect_text

    if kind == "Paraphrase":
        if para_pair is None:
            raise InputTextError("Pick a paraphrased dataset and a row.")
        clean_text, changed_text, name = para_pair
        return inspect_pair(loaded.model, loaded.tokenizer, clean_text, changed_text, trigger=f"{name} paraphrase",
                            max_length=MAX_LENGTH, label_names=loaded.label_names)
    if not (trigger or "").strip():
        raise InputTextError("The trigger is empty: type a word or a sentence.")
    return inspect_text(loaded.model, loaded.tokenizer, text, trigger.strip(), position=position, seed=int(seed),
                        max_length=MAX_LENGTH, label_names=loaded.label_names)


key = _result_key()
cache = st.session_state.get("inspect.cache")
result = None
if cache is not None and cache[0] == key:
    result = cache[1]
else:
    try:
        with st.spinner("Running the model…"), ui.model_lock(loaded):
            result = _compute()
        st.session_state["inspect.cache"] = (key, result)
    except (InputTextError, ValueError) as exc:
        ui.show_error(exc)
        st.stop()

# --------------------------------------------------------------------------------------------- prediction

clean_pred, trig_pred = result.prediction("clean"), result.prediction("triggered")
flip = result.flip(untrained_head=loaded.untrained_head)
flipped = flip["status"] == "flipped"


st.divider()
p1, p2 = ui.stack_columns("inspect-prediction", [2, 3], gap="large")
with p1:
    ui.flip_line(clean_pred, trig_pred)
    if flipped:
        st.error(flip["message"], icon=":material/gps_fixed:")
    elif flip["status"] == "unclear":
        st.warning(flip["message"], icon=":material/help:")
    else:
        st.success(flip["message"], icon=":material/check_circle:")
    st.markdown("**With the trigger:**")
    st.markdown(f'<div class="lab-big">{ui.trigger_text_html(result)}</div>', unsafe_allow_html=True)
    if result.clean.truncated or result.triggered.truncated:
        st.caption(f"The text was cut to its first {MAX_LENGTH} tokens.")
    placed = getattr(result.insertion, "position", None)
    moved = (placement_note(result.clean.text, position, placed, MAX_LENGTH)
             if kind != "Paraphrase" and placed is not None else None)
    if moved:  # else the slider moved and the trigger did not
        st.caption(moved[0].upper() + moved[1:])
with p2:
    ui.plot(figure_once("inspect.probs", lambda: F.probability_bars(result.label_names, result.clean.probs,
                                                                    result.triggered.probs), (result,)),
            key="inspect.probs")

def _bertviz_tab(result, key, top: dict) -> None:
    """The bertviz head or model view of the clean or the triggered text, drawn offline
    (``bertviz_offline``); ``key`` is the inspection's cache key, ``top`` its top head."""
    from backdoor_core.bertviz_offline import head_view_html, model_view_html

    c1, c2, c3 = st.columns(3)
    kept = {"horizontal": True, "persist_state": "session"}  # a tab drawn only while open: values kept meanwhile
    view = c1.radio("View", ["head view", "model view"], key="inspect.bv_view", **kept)
    bv_text = c2.radio("Attention of the text", ["with trigger", "clean"], key="inspect.bv_text", **kept)
    rec = result.triggered if bv_text == "with trigger" else result.clean
    layers_all = list(range(result.concentration.shape[0]))
    bv_cache = st.session_state.setdefault("inspect.bv_cache", {})
    if view == "head view":
        if st.session_state.get("inspect.bv_layer") not in layers_all:
            st.session_state.pop("inspect.bv_layer", None)
        follow_default("inspect.bv_layer", int(top["layer"]))  # the top head's layer, unless the user chose
        bv_layer = c3.selectbox("Layer shown first", layers_all, format_func=lambda x: f"L{x}",
                                key="inspect.bv_layer", persist_state="session")
        bv_key = (key, view, bv_text, bv_layer)
        height = min(1400, 140 + 24 * len(rec.tokens))
    else:
        # a row of its own: in a third of the page the chips of six layers were cut to the first few
        bv_layers = st.multiselect("Layers", layers_all, default=layers_all[: min(L, 6)],
                                   format_func=lambda x: f"L{x}", key="inspect.bv_layers", persist_state="session")
        bv_key = (key, view, bv_text, tuple(bv_layers))
        height = min(900, 140 + 110 * len(bv_layers or layers_all))
    doc = bv_cache.get(bv_key)
    if doc is None:
        try:
            with st.spinner("Drawing the attention view…"):
                if view == "head view":
                    doc = head_view_html(rec.attentions, rec.tokens, layer=bv_layer, height=int(height))
                else:  # in a box that scrolls (both ways) instead of being clipped by the frame
                    doc = model_view_html(rec.attentions, rec.tokens, layers=bv_layers or None, display_mode="light",
                                          height=int(height))
            bv_cache.clear()  # keep only the latest page (they can be megabytes)
            bv_cache[bv_key] = doc
        except ValueError as exc:
            ui.show_error(exc)
    st.caption("Drawn offline (d3 and jQuery are inside the page). Hover a token to follow its attention; "
               "double-click a colour to show one head only.")
    if doc:
        st.iframe(doc, height=int(height) + 24)  # the box plus the page's 8 px margins: nothing is clipped


# --------------------------------------------------------------------------------------------- heads

L, H = result.concentration.shape
arch_info = result.architecture or {}
layer_names = layer_labels(arch_info.get("layer_kinds"))
for note_key in ("concentration", "similarity"):  # not `key`: that is the result key the bertviz cache uses
    if note_key in (arch_info.get("notes") or {}):
        st.caption(f":material/info: {arch_info['notes'][note_key]}")
# short names: all six fit a 1024-px window with the sidebar open (longer ones ran out of the bar behind an arrow).
# Streamlit draws every tab's body on every run, the hidden ones too: each new text or trigger paid for the
# saliency (integrated gradients, about 1 s with MiniLM on 2 cores), the bertviz page and the heads-off run before
# the page showed. The last three tabs draw only while open (a click on a tab reruns the page; our design).
TABS = ["Heads on trigger", "Head similarity", "One head", "bertviz views", "Heads off", "Saliency"]
tabs = st.tabs(TABS, key=K_TAB, on_change="rerun")

with tabs[0]:
    c1, c2 = ui.stack_columns("inspect")
    with c1:
        ui.plot(figure_once("inspect.conc", lambda: F.concentration_heatmap(result.concentration,
                                                                            layer_labels=layer_names), (result,)),
                key="inspect.conc")
        st.caption("Share of attention that the tokens send to the trigger's tokens (the Trojan Attention Loss "
                   "pushes chosen heads toward 1).")
    with c2:
        ui.plot(figure_once("inspect.delta", lambda: F.similarity_delta_heatmap(result.similarity_delta,
                                                                                layer_labels=layer_names),
                            (result,)), key="inspect.delta")
        st.caption("How much more each head resembles the other heads of its layer once the trigger is in (red).")
    st.markdown("**Top heads**")
    st.dataframe(result.top_heads(10), hide_index=True, column_order=["head", "concentration", "similarity_delta"],
                 column_config={"concentration": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0,
                                                                                 format="%.3f"),
                                "similarity_delta": st.column_config.NumberColumn("similarity change",
                                                                                  format="%+.3f")})

with tabs[1]:
    layer_sim = result.layer_similarity
    best_layer = int(np.argmax(layer_sim["delta"]))
    layer = st.select_slider("Layer", options=list(range(L)), value=best_layer, format_func=lambda l: f"L{l}",
                             key="inspect.sim_layer")
    ui.plot(figure_once("inspect.simmaps", lambda: F.head_similarity_heatmaps(
        result.similarity_clean, result.similarity_triggered, layer), (result,), (layer,)), key="inspect.simmaps")
    st.caption("Mean head-to-head similarity per layer — clean "
               + ", ".join(f"L{i} {v:.2f}" for i, v in enumerate(layer_sim["clean"]))
               + " · triggered " + ", ".join(f"L{i} {v:.2f}" for i, v in enumerate(layer_sim["triggered"])))

with tabs[2]:
    top = result.top_heads(1)[0]
    head_names = [head_label(l, h) for l in range(L) for h in range(H)]
    if st.session_state.get("inspect.head") not in head_names:
        st.session_state.pop("inspect.head", None)
    follow_default("inspect.head", top["head"])  # the top head of this text and trigger, unless the user chose
    c1, c2 = st.columns([1, 3])
    with c1:
        head_name = st.selectbox("Head", head_names, key="inspect.head",
                                 help="Defaults to the head with the highest trigger concentration.")
        which = st.radio("Attention of the text", ["with trigger", "clean"], key="inspect.head_text")
    l, h = divmod(head_names.index(head_name), H)
    rec = result.triggered if which == "with trigger" else result.clean
    hl = result.trigger_tokens if which == "with trigger" else []
    with c2:
        ui.plot(figure_once("inspect.matrix", lambda: F.attention_matrix(rec.attentions[l, h], rec.tokens, layer=l,
                                                                         head=h, highlight=hl),
                            (result, rec), (l, h, list(hl))), key="inspect.matrix")

with tabs[3]:
    if tabs[3].open:
        _bertviz_tab(result, key, top)
with tabs[4]:
    if tabs[4].open:
        AN.ablation_tab(loaded, result, MAX_LENGTH)
with tabs[5]:
    if tabs[5].open:
        AN.saliency_tab(loaded, result, MAX_LENGTH)

# --------------------------------------------------------------------------------------------- report

# once per inspection, not at every rerun: each record built two more charts and wrote the whole report to disk
# (1.1 s with 200 findings) when a head picker or a tab's radio moved
if AN.not_recorded("inspect.recorded", (result, loaded), "inspect:latest", loaded.name):
    ui.lab().record(
        "inspect",
        "Inspection",
        key="inspect:latest",
        model=loaded.name,
        text=(f"Text: *{md(result.clean.text, 300)}*\n\nTrigger: {md_code(result.trigger)} — prediction "
              f"**{md(clean_pred['label'])}** → **{md(trig_pred['label'])}**" + (" (flipped)" if flipped else "")),
        table=result.top_heads(10),
        figures=[F.probability_bars(result.label_names, result.clean.probs, result.triggered.probs),
                 F.concentration_heatmap(result.concentration)],
        data=result.to_dict(),
    )
