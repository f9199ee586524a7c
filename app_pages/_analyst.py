"""Streamlit views for the analyst's questions (issue 14): candidate triggers, head ablation, saliency, PCA,
model comparison. Thin: every number comes from the core (``trigger_search``, ``analysis``); every figure from
``backdoor_core.figures``. Untrusted text goes through ``st.dataframe`` / plotly figures that escape it."""

from __future__ import annotations

import numpy as np
import streamlit as st

from backdoor_core import figures as F
from app_pages import _common as ui
from app_pages._state import follow_default
from app_pages._text import md
from app_pages._widgets import figure_once


def trigger_candidates(report, key: str = "detect.triggers") -> None:
    """The scan's candidate triggers: a table and the flip-rate bars (or why there are none)."""
    from backdoor_core.detection import heads_noun
    from backdoor_core.trigger_search import DISPLAY_COLUMNS, display_rows

    st.subheader("Candidate triggers")
    ts = getattr(report, "triggers", None)
    if ts is None or not ts.candidates:
        st.caption("No candidate triggers: the scan flagged no input or named no suspicious head.")
        return
    data = ts.to_dict(limit=20)
    st.caption(f"The words and phrases the {heads_noun(report.verdict)} focus on in {data['n_flagged']} flagged "
               "inputs, ranked after a check: each is inserted into clean texts (does the prediction flip to the "
               f"suspected target '{md(data['target_name'])}'?) and removed from the flagged inputs (does it flip "
               "away?). Clean texts "
               f"already predicted '{md(data['target_name'])}': "
               f"{0 if data['baseline_target_rate'] is None else data['baseline_target_rate']:.0%}.")
    if not any(c["insert_flip_rate"] is not None for c in data["candidates"]):
        st.caption("Not verified: every clean text is already predicted as the suspected target, so there is "
                   "nothing to insert into.")
    st.dataframe(display_rows(data, 10), hide_index=True, column_order=DISPLAY_COLUMNS)
    ui.plot(F.trigger_candidates_bar(data["candidates"], data["target_name"]), key=key)


def pool_words(report) -> None:
    """Words the pool holds far more often than the clean texts, and what inserting each into clean texts does."""
    from backdoor_core import settings as S
    from backdoor_core.trigger_search import (POOL_WORD_COLUMNS, pool_word_bar_note, pool_word_display,
                                              pool_word_rows)

    st.subheader("Words concentrated in the pool")
    words = getattr(report, "pool_words", None)
    rows = pool_word_rows(words, marking=list(getattr(report, "marking_words", None) or [])) if words else []
    if not rows:
        st.caption("No word is concentrated in the pool beyond chance (or no pool was scanned).")
        return
    st.caption(f"Read from the pool alone, so it works even when the scan flags nothing: words in at least "
               f"{S.POOL_WORD_MIN_COUNT} pool inputs that are this unlikely (p) to be so much rarer in the clean texts "
               f"by chance. Each is inserted into clean texts; a word that sends at least "
               f"{S.POOL_WORD_MIN_FLIP:.0%} of them to one class, and that the clean labels do not already tie to "
               f"that class, is a likely trigger. In a pool drawn like the clean texts, a word no clean text holds "
               f"that sends some clean texts the same way as a likely trigger rare in the clean texts is its "
               f"companion: BadNets poisons with several rare words, and a weak backdoor learns some below that "
               f"bar. Both mark inputs.")
    bar_note = pool_word_bar_note(rows)
    if bar_note:
        st.caption(bar_note)
    st.dataframe(pool_word_display(rows, report.label_names), hide_index=True, column_order=POOL_WORD_COLUMNS)


def drifted_words(loaded, report, max_length: int, same_model: bool = True) -> None:
    """Detect: the words no clean text holds whose input embeddings moved most since the pretrained encoder
    (``trigger_search.drift_reading``), on request; recorded for the Report page."""
    from backdoor_core.trigger_search import (DRIFT_COLUMNS, DRIFT_FROZEN, DRIFT_HEADING, DRIFT_NOTE, drift_display,
                                              drift_marking_note, drift_reading, drift_section, held_word)

    st.subheader(DRIFT_HEADING)
    if not same_model:
        st.caption("The scan above is of another model: load it again (Model page) to read its embeddings.")
        return
    base = st.text_input("Base checkpoint (the pretrained encoder this model was fine-tuned from)",
                         key="detect.drift_base", value="default",
                         help="'default' is the packaged all-MiniLM-L6-v2; or a folder or a hub id (offline: only "
                              "what is cached). Loaded as safely as any model, and checked against this model's own "
                              "weights.")
    if not st.toggle("Compare the input embeddings with it", key="detect.drift", value=False):
        return
    refusal = ui.hub_id_refusal(base.strip() or "default")
    if refusal:
        st.error(md(refusal), icon=":material/lock:")
        return
    ck = ("drift", id(loaded.model), id(report), base.strip())
    cached = st.session_state.get("detect.drift_cache")
    if cached is not None and cached[0] == ck:
        reading = cached[1]
    else:
        with st.spinner("Reading the base checkpoint…"), ui.model_lock(loaded):
            reading = drift_reading(loaded.model, loaded.tokenizer, base.strip() or "default", report.clean_texts,
                                    report.pool_texts, max_length=max_length, seed=int(report.settings.get("seed", 0)))
        st.session_state["detect.drift_cache"] = (ck, reading)
        sec = drift_section(reading, report.label_names)  # its text names the typed base and its error: escaped
        ui.lab().record("scan", sec["heading"], model=loaded.name, text=md(sec["text"]), table=sec["table"],
                        data=reading)
    if "error" in reading:
        st.warning(f"Not read: {md(reading['error'])}", icon=":material/warning:")
    elif not reading["words"]:
        st.info(DRIFT_FROZEN, icon=":material/info:")
    else:
        st.caption(DRIFT_NOTE)
        rows = drift_display(reading["words"], report.label_names)
        st.dataframe(rows, hide_index=True, column_order=DRIFT_COLUMNS,
                     height=(len(rows) + 1) * 36 + 4)  # every listed word, no inner scroll
        note = drift_marking_note(reading)
        if note:
            st.warning(note, icon=":material/flag:")
            marked = [{"#": i, "word": held_word(report.pool_texts[i], reading["marking"]),
                       "input": report.pool_texts[i]} for i in reading["marked"]]
            with st.expander(f"The {len(marked)} pool inputs they mark"):
                st.dataframe(marked, hide_index=True)
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        pick = c1.selectbox("Try a listed word on the Inspect page", [r["word"] for r in rows], key="detect.drift_pick")
        if c2.button("Open it on Inspect", key="detect.drift_open", icon=":material/search:"):
            ui.set_kept("inspect.kind", "Word")  # the Inspect page's trigger widgets, set before it draws them
            ui.set_kept("inspect.word", pick)
            st.switch_page("app_pages/inspect.py")


K_INSPECT_HEADS_OFF = "inspect.heads_off"  # {"model": name, "heads": [...]}: the heads the Inspect page switched off


def _scan_suspicious(loaded):
    """The last scan's suspicious-head mask when it was of this model (same layers x heads), else None."""
    from app_pages import _actions as A

    report = st.session_state.get(A.K_SCAN)
    info = st.session_state.get(A.K_SCAN_INFO) or {}
    if report is None or info.get("model_name") != loaded.name:
        return None
    mask = report.heads.suspicious
    return mask if mask.any() else None


def ablation_tab(loaded, result, max_length: int) -> None:
    """Inspect: pick heads (or the scan's suspicious heads), see the prediction and heatmaps with them off."""
    from backdoor_core.ablation import ablate_result, parse_heads
    from backdoor_core.head_metrics import head_label, mask_labels

    L, H = result.concentration.shape
    names = [head_label(l, h) for l in range(L) for h in range(H)]
    suspicious = _scan_suspicious(loaded)
    c1, c2 = st.columns([3, 1], gap="medium")
    with c2:
        use_scan = st.toggle("The scan's suspicious heads", value=False, key="inspect.ablate_scan",
                             persist_state="session",
                             disabled=suspicious is None,
                             help="Run a scan on the Detect page first." if suspicious is None else
                             f"{len(mask_labels(suspicious))} heads from the last scan of this model.")
    with c1:
        if use_scan and suspicious is not None:
            chosen = mask_labels(suspicious)
            st.caption("Switched off: " + ", ".join(chosen))
        else:
            if any(n not in names for n in st.session_state.get("inspect.ablate_heads", [])):
                st.session_state.pop("inspect.ablate_heads")
            # the two top heads of this text and trigger, unless the user chose
            follow_default("inspect.ablate_heads", [r["head"] for r in result.top_heads(2)])
            chosen = st.multiselect("Heads to switch off", names, key="inspect.ablate_heads", persist_state="session",
                                    help="Each chosen head's output is multiplied by 0 (its weights are untouched).")
    # the Compare page starts from these (a widget's own value is gone once the browser leaves the page)
    st.session_state[K_INSPECT_HEADS_OFF] = {"model": loaded.name, "heads": list(chosen)}
    if not chosen:
        st.caption("Pick at least one head.")
        return
    mask = parse_heads(chosen, L, H)
    cache_key = ("ablate", id(result), tuple(chosen))
    cached = st.session_state.get("inspect.ablate_cache")
    if cached is not None and cached[0] == cache_key:
        res = cached[1]
    else:
        with st.spinner("Running the model with the heads off…"), ui.model_lock(loaded):
            res = ablate_result(loaded.model, loaded.tokenizer, result, mask, max_length)
        st.session_state["inspect.ablate_cache"] = (cache_key, res)
    a = res.ablated
    before, after = res.full.prediction("triggered"), a.prediction("triggered")
    clean_after = a.prediction("clean")
    m1, m2, m3 = st.columns(3)
    # a metric's value is markdown too: the class names escaped
    m1.metric("With the trigger, all heads", f"{md(before['label'])} · {max(before['probs'].values()):.0%}")
    m2.metric(f"With the trigger, {len(chosen)} heads off",
              f"{md(after['label'])} · {max(after['probs'].values()):.0%}")
    m3.metric(f"Clean text, {len(chosen)} heads off",
              f"{md(clean_after['label'])} · {max(clean_after['probs'].values()):.0%}")
    if res.to_dict()["flip_undone"]:
        st.success("With these heads off the trigger no longer flips the prediction.", icon=":material/check_circle:")
    c1, c2 = ui.stack_columns("ablate")
    with c1:
        ui.plot(figure_once("inspect.ablate_probs", lambda: F.probability_bars(
            result.label_names, res.full.triggered.probs, a.triggered.probs,
            title="Triggered text: class probabilities", names=("all heads", "heads off")), (result, res)),
            key="inspect.ablate_probs")
    with c2:
        ui.plot(figure_once("inspect.ablate_conc", lambda: F.layer_head_heatmap(
            a.concentration, title="Trigger concentration with the heads off", value_name="attention on trigger",
            zmin=0.0, zmax=max(1e-6, float(np.nanmax(result.concentration))), marks=mask,
            mark_name="switched off"), (result, res), (tuple(chosen),)), key="inspect.ablate_conc")
    st.caption("A switched-off head's own attention map does not change (its queries and keys still run); "
               "later layers' maps and the prediction do.")


def saliency_tab(loaded, result, max_length: int) -> None:
    """Inspect: token saliency (Captum) of the clean and the triggered text toward the triggered prediction."""
    from backdoor_core.saliency import METHODS, compare_saliency

    method = st.radio("Attribution", list(METHODS), format_func=METHODS.get, horizontal=True,
                      key="inspect.sal_method", persist_state="session",
                      help="Integrated gradients (32 steps from an all-[PAD] text) or gradient × input, both on the "
                           "word embeddings, computed with Captum.")
    cache_key = ("sal", id(result), method)
    cached = st.session_state.get("inspect.sal_cache")
    if cached is not None and cached[0] == cache_key:
        pair = cached[1]
    else:
        with st.spinner("Attributing…"), ui.model_lock(loaded):
            pair = compare_saliency(loaded.model, loaded.tokenizer, result.clean.text, result.triggered.text, method,
                                    result.label_names, max_length=max_length)
        st.session_state["inspect.sal_cache"] = (cache_key, pair)
    fig = figure_once("inspect.saliency", lambda: F.saliency_strip(
        [("clean text", pair.clean.tokens, pair.clean.scores),
         ("with the trigger", pair.triggered.tokens, pair.triggered.scores)],
        title=f"Which tokens push toward '{pair.target_name}' ({METHODS[method]})"), (pair,), (method,))
    ui.plot(fig, key="inspect.saliency")
    top = pair.triggered.top(3)
    st.caption("Red tokens push the model toward the class predicted on the triggered text, blue ones away; one "
               "colour scale for both strips. Strongest on the triggered text: "
               + md(", ".join(f"{t['token']} ({t['score']:+.3g})" for t in top)) + ".")
    reference = pair.triggered.reference_note(pair.target_name)
    if reference:  # integrated gradients: what their scores are measured from (the all-[PAD] text)
        st.caption(md(reference))
    if not_recorded("inspect.sal_recorded", (pair,), "inspect:saliency", loaded.name, (method,)):
        ui.lab().record("inspect", "Token saliency", key="inspect:saliency", model=loaded.name,
                        text=f"{METHODS[method].capitalize()} toward **{md(pair.target_name)}**, clean vs triggered "
                             "text.",
                        table=[{"text": "triggered", **t} for t in top], figures=[fig], data=pair.to_dict())


def not_recorded(mark: str, objects: tuple, key: str, model: str, values: tuple = ()) -> bool:
    """Whether a page's finding ``key`` about ``model`` is still to be recorded for ``objects`` (what it is made
    from, compared by identity) and ``values`` (compared by equality); marks it recorded. A rerun that shows the
    same result records nothing: each record wrote the whole report to disk (1.1 s with 200 findings). The finding
    is recorded again where this tab's report lost it (removed, or another report) or where anything changed."""
    from backdoor_core.session import finding_key

    lab = ui.lab()
    seen = st.session_state.get(mark)
    now = ((lab, *objects), (model, *values))
    done = (seen is not None and len(seen[0]) == len(now[0]) and all(a is b for a, b in zip(seen[0], now[0]))
            and seen[1] == now[1] and any(f.key == finding_key(key, model) for f in lab.findings))
    st.session_state[mark] = now
    return not done


def _projection_caption(proj, name: str) -> str:
    near = {g: n for g, n in proj.nearest.items() if not g.startswith("clean, predicted")}
    parts = [f"{md(g)} → nearest: {md(n)}" for g, n in near.items()]  # groups and centroids name classes
    return (f"{name}: " + ("; ".join(parts) if parts else "—")
            + f" (PCA keeps {proj.explained.sum():.0%} of the variance).")


def detect_projection(loaded, report, truth, max_length: int, same_model: bool = True) -> None:
    """Detect: PCA of [CLS] representations of the defender's clean inputs (by predicted class) and the pool."""
    from backdoor_core.representations import project_groups, split_by_prediction

    st.subheader("Where the poison sits")
    if not same_model:
        st.caption("The scan above is of another model: load it again (Model page) to see its representations.")
        return
    if not st.toggle("Show the [CLS] representations (PCA)", key="detect.pca", value=False,
                     help="One forward pass over the clean inputs and the pool; the last layer's [CLS] vectors, "
                          "projected to 2-D."):
        return
    cached = st.session_state.get("detect.pca_cache")  # (report, projection): the report is kept, so ``is`` is safe
    if cached is not None and cached[0] is report:
        proj = cached[1]
    else:
        flagged = set(int(i) for i in report.flagged)
        pool = list(report.pool_texts)[:300]
        with ui.model_lock(loaded):  # a forward of the shared model: not while another tab has heads switched off
            groups = split_by_prediction(loaded.model, loaded.tokenizer, report.clean_dev_texts[:150],
                                         report.label_names, max_length)
        if truth is not None and len(truth) == len(report.pool_texts):
            for name, keep in (("pool: triggered, flagged", lambda i: truth[i] and i in flagged),
                               ("pool: triggered, missed", lambda i: truth[i] and i not in flagged),
                               ("pool: clean, flagged", lambda i: not truth[i] and i in flagged),
                               ("pool: clean", lambda i: not truth[i] and i not in flagged)):
                groups[name] = [t for i, t in enumerate(pool) if keep(i)]
        else:
            groups["pool: flagged"] = [t for i, t in enumerate(pool) if i in flagged]
            groups["pool: not flagged"] = [t for i, t in enumerate(pool) if i not in flagged]
        with st.spinner("Projecting the representations…"), ui.model_lock(loaded):
            proj = project_groups(loaded.model, loaded.tokenizer, groups, max_length)
        st.session_state["detect.pca_cache"] = (report, proj)
    ui.plot(F.projection_scatter([("this model", proj.points, proj.texts)]), key="detect.pca_fig")
    st.caption("Each dot is one input's final [CLS] vector. Clean inputs are grouped by the class the model "
               "predicts; a working backdoor puts triggered inputs beside the target class. "
               + _projection_caption(proj, "Centroids in the full space"))


def sanitize_projection(res, test_ds, max_length: int) -> None:
    """Sanitize: the same PCA basis before and after the repair, on clean and triggered test inputs."""
    from backdoor_core import defender_data as D
    from backdoor_core.representations import project_before_after, split_by_prediction

    suspect = res["suspect"]
    attack = D.model_attack(suspect.card, suspect.tokenizer, max_length)
    target = suspect.card.target_for(test_ds.label_names) if attack is not None else None
    st.subheader("Where the poison sits, before and after")
    if not st.toggle("Show the [CLS] representations (PCA)", key="sanitize.pca", value=False):
        return
    cached = st.session_state.get("sanitize.pca_cache")  # (result, projections), compared by identity (kept)
    if cached is not None and cached[0] is res:
        before, after = cached[1]
    else:
        repaired = res["loaded"]
        sample = test_ds.sample(min(80, len(test_ds)), seed=7)
        with st.spinner("Projecting the representations…"), ui.model_lock(suspect):
            groups = split_by_prediction(suspect.model, suspect.tokenizer, sample.texts[:60],
                                         list(sample.label_names), max_length)
            if attack is not None and target is not None:
                groups["triggered"] = list(attack.poison_test(sample, target, 0).texts)[:40]
            with ui.model_lock(repaired):
                before, after = project_before_after(suspect.model, repaired.model, suspect.tokenizer, groups,
                                                     max_length)
        st.session_state["sanitize.pca_cache"] = (res, (before, after))
    ui.plot(F.projection_scatter([("before", before.points, before.texts), ("after", after.points, after.texts)]),
            key="sanitize.pca_fig")
    st.caption("One PCA basis, fitted on the model before the repair, for both panels; clean inputs grouped by the "
               "suspect's prediction. " + _projection_caption(before, "Before") + " "
               + _projection_caption(after, "After"))
