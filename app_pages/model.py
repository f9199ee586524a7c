"""Model: pick the model (this session's models, demo zoo, packaged default, local folder, hub id, uploaded .zip)
and the dataset."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import streamlit as st

from backdoor_core import zoo
from backdoor_core.data import DataError, list_shared
from backdoor_core.model_card import card_rows
from backdoor_core.models import ModelLoadError, PickleRefusedError, extract_model_archive, load_model
from app_pages import _common as ui
from app_pages._data import data_not_kept_note
from app_pages._models import session_origin, use_session_model
from app_pages._text import md, md_code

ui.page_header(
    "Model and data",
    "Choose the classifier to study and the dataset it was trained for. Demo-zoo models are ready to use; "
    "anything you load from elsewhere passes the same safety checks as the command line.",
)

SOURCES = ["Demo zoo", "Packaged default", "Local folder", "Hub id", "Upload .zip"]
SESSION_SOURCE = "This session's models"  # offered while this session has trained / sanitized / uploaded models
K_SWITCH_NOTE = "model.switch_note"


def _dataset_labels() -> tuple[str, ...] | None:
    try:
        return tuple(ui.dataset("train").label_names)
    except Exception:  # noqa: BLE001 - the dataset section shows the problem
        return None


def _try_load(spec: str, *, allow_pickle: bool, name: str, labels: tuple[str, ...] | None = None) -> bool:
    """Load (cached), make it current, rerun. Errors become messages; True when it worked."""
    try:
        with st.spinner(f"Loading {md(name)}…"):
            loaded = ui.shared_model(spec, allow_pickle, labels)
            if loaded.untrained_head and labels is None:
                # a checkpoint without a classification head: give it the dataset's classes
                ds_labels = _dataset_labels()
                if ds_labels and len(ds_labels) != loaded.num_labels:
                    labels = ds_labels
                    ui.shared_model(spec, allow_pickle, labels)
    except PickleRefusedError as exc:
        ui.show_error(exc, "Refused: ")
        if ui.server_files_allowed():
            st.info("If you trust where this model came from, tick **Allow pickled weights** below and load again.",
                    icon=":material/info:")
        else:
            st.info(md(ui.server_files_refusal("Loading pickled weights")), icon=":material/info:")
        return False
    except (ModelLoadError, OSError, ValueError) as exc:
        ui.show_error(exc, "Could not load the model: ")
        return False
    _note_switch_from_session_model()
    ui.set_shared_model(spec, allow_pickle=allow_pickle, labels=labels, name=name)
    st.rerun()
    return True


def _load_upload(upload, allow_pickle: bool) -> None:
    """Unpack an uploaded model .zip, load it into this session, then delete the upload and the unpacked copy.

    The model lives in this session's memory (``ui.set_session_model``), so nothing of it stays on disk, on
    success or failure. Its source names the archive and the folder in it that was loaded.
    """
    zip_path = ui.save_upload(upload, "zip")
    try:
        with tempfile.TemporaryDirectory(prefix="unzipped-", dir=ui.session_tmp(), ignore_cleanup_errors=True) as tmp:
            with st.spinner("Unpacking…"):
                extracted = extract_model_archive(zip_path, tmp)
                model_dir = Path(extracted.model_dir)
            with st.spinner(f"Loading {md(upload.name)}…"):
                loaded = load_model(model_dir, allow_pickle=allow_pickle)
                labels = _dataset_labels()
                if loaded.untrained_head and labels and len(labels) != loaded.num_labels:
                    # a checkpoint without a classification head: give it the dataset's classes
                    loaded = load_model(model_dir, label_names=list(labels), allow_pickle=allow_pickle)
            inside = model_dir.relative_to(Path(tmp).resolve()).as_posix() if model_dir.is_relative_to(
                Path(tmp).resolve()) else model_dir.name
    except PickleRefusedError as exc:
        ui.show_error(exc, "Refused: ")
        st.info("If you trust where this model came from, tick **Allow pickled weights** below and load again.",
                icon=":material/info:")
    except (ModelLoadError, OSError, ValueError) as exc:
        ui.show_error(ui.upload_error(exc, upload.name), "Upload refused: ")
    else:
        source = f"{upload.name}" + (f" → {inside}/" if inside not in ("", ".") else "")
        _note_switch_from_session_model()
        ui.set_session_model(Path(upload.name).stem, dataclasses.replace(loaded, source=source),
                             origin=f"uploaded in this session from {source}")
        if extracted.note:  # the archive held several models: say which one was loaded, after the rerun
            ui.ss()["model.upload_note"] = extracted.note
        st.rerun()
    finally:
        ui.discard_upload(zip_path)


@st.fragment(run_every=5.0)
def _zoo_built_elsewhere(n_entries: int) -> None:
    """Say that another session is building the zoo; rerun the page when it finishes or a model is added."""
    status = zoo.build_status(ui.zoo_dir())
    if status is None or len(ui.zoo_entries()) != n_entries:
        st.rerun(scope="app")
    st.info(f"The demo zoo is {md(zoo.building_message(status))}. Its models appear here as they finish.",
            icon=":material/hourglass_top:")


def _zoo_cancel_note(snap) -> str:
    """What a cancelled zoo build kept: the models it finished (each is saved when done), if any."""
    done = [str(e.get("message", "")).rsplit(":", 1)[0] for e in snap.events
            if str(e.get("message", "")).endswith(": done")]
    if not done:
        return "no model was finished, so nothing new was kept"
    return "kept the models it finished (" + ", ".join(done) + "); the one in training was not saved"


def _note_switch_from_session_model() -> None:
    """Before another model becomes current: when the current one is this session's own (trained, sanitized,
    uploaded), say after the rerun that it is kept and where to pick it again."""
    ref = ui.model_ref()
    if ref.get("kind") == "session" and ref.get("name") in ui.session_models():
        ui.ss()[K_SWITCH_NOTE] = (f"{ref['name']} is no longer the current model, but it stays in this session: "
                                  f"choose “{SESSION_SOURCE}” above to make it current again.")


def _rate(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _session_models_panel() -> None:
    """This session's models (trained in the Attack lab, sanitized, uploaded): a table and a button that makes
    the chosen one the current model again."""
    models = ui.session_models()
    names = list(models)
    ref = ui.model_ref()
    current_name = ref.get("name") if ref.get("kind") == "session" else None
    rows = []
    for n, lm in models.items():
        card = lm.card
        rows.append({"model": n, "where it came from": session_origin(n, lm), "CACC": _rate(card.cacc),
                     "ASR": _rate(card.asr), "current": "yes" if n == current_name else ""})
    st.dataframe(rows, hide_index=True)  # plain text cells: names are untrusted, a dataframe shows them as text
    if ui.kept("model.session_pick") not in names:
        ui.set_kept("model.session_pick", current_name if current_name in names else names[-1])
    pick = st.selectbox("Session model", names,
                        format_func=lambda n: n + (" (current)" if n == current_name else ""),
                        **ui.keep("model.session_pick", names[-1]))
    if pick not in names:
        pick = names[-1]
    st.caption("These models live in this browser session only (in memory): save one from the Attack lab or the "
               "Sanitize page to keep it after the session ends.")
    if st.button("Make it the current model", type="primary", key="model.use_session",
                 disabled=pick == current_name,
                 help="It is already the current model." if pick == current_name else None):
        use_session_model(pick)
        st.rerun()


def _pickle_checkbox(key: str) -> bool:
    if not ui.server_files_allowed():  # a pickle runs its code in the server: not for a browser on another machine
        return False
    return st.checkbox(
        "Allow pickled weights (.bin/.pt) — loading a pickle runs any code inside it; only for models you trust",
        key=key,
    )


# ------------------------------------------------------------------------------------------- model source

st.header("Model")
_ref = ui.model_ref()
_here = ui.session_models()
if _ref.get("kind") == "session" and _ref.get("name") in _here:
    st.info(f"The current model, **{md(_ref['name'])}**, is "
            f"{md(session_origin(_ref['name'], _here[_ref['name']]))}. Loading another model keeps it in this "
            f"session: choose “{SESSION_SOURCE}” below to make it current again.", icon=":material/info:")
_note = ui.ss().pop(K_SWITCH_NOTE, None)
if _note:
    st.info(md(_note), icon=":material/info:")
sources = ([SESSION_SOURCE] if _here else []) + SOURCES
if ui.kept("model.source") not in sources:
    ui.set_kept("model.source", "Demo zoo")
source = st.segmented_control("Where is the model?", sources, required=True,
                              **ui.keep("model.source", "Demo zoo"))

if source == SESSION_SOURCE:
    _session_models_panel()

elif source == "Demo zoo":
    entries = ui.zoo_entries()
    if entries:
        ui.zoo_table(entries)
        names = [e["name"] for e in entries]
        titles = {e["name"]: e.get("title") or e["name"] for e in entries}
        if ui.kept("model.zoo_pick") not in names:
            ui.set_kept("model.zoo_pick", names[0])
        pick = st.selectbox("Zoo model", names, format_func=lambda n: titles[n], **ui.keep("model.zoo_pick", names[0]))
        if pick not in names:
            pick = names[0]
        entry = entries[names.index(pick)]
        if entry.get("description"):
            st.caption(md(entry["description"]))
        if st.button("Use this model", type="primary", key="model.use_zoo"):
            _try_load(entry["path"], allow_pickle=False, name=titles[pick])
    else:
        st.info(f"No demo zoo found (looked in {md_code(zoo.shipped_zoo_dir())} and {md_code(ui.zoo_dir())}).",
                icon=":material/deployed_code:")
    job = ui.get_job("zoo")
    have = {e["name"] for e in entries}
    missing = [s for s in zoo.ZOO_SPECS if s.name not in have]
    if job is None or not job.active:
        elsewhere = zoo.build_status(ui.zoo_dir())  # another session or process holds the zoo's build lock
        if elsewhere is not None:
            _zoo_built_elsewhere(len(entries))
        if missing:
            if st.button(f"Build the {len(missing)} missing zoo model{'s' if len(missing) != 1 else ''}",
                         key="model.build_zoo", disabled=elsewhere is not None,
                         help="Trains LoRA adapters on MiniLM with BBC News, one model after another, in the "
                              "background (can be cancelled; finished models are kept)."):
                root = ui.zoo_dir()
                ui.start("zoo", lambda ctx: zoo.build(root, progress=ctx.update, should_stop=ctx.should_stop,
                                                      specs=missing),
                         name="Building the demo zoo", cancelled_note=_zoo_cancel_note)
                st.rerun()
        else:
            st.caption("The demo zoo ships with the lab as small LoRA adapters (`assets/zoo`), merged into MiniLM "
                       "when loaded; `python -m backdoor_core zoo build --force` rebuilds it reproducibly.")

    def _zoo_live(snap):
        last = snap.last_event or {}
        done = [e for e in snap.events if str(e.get("message", "")).endswith(("done", "cached"))]
        if done:
            st.caption("Finished: " + md(", ".join(str(e.get("message", "")).split(":")[0] for e in done)))
        prog = last.get("progress") or {}
        if isinstance(prog, dict) and prog.get("losses"):
            st.caption(f"{md(last.get('name', ''))}: step {prog.get('step')}/{prog.get('total_steps')} · "
                       f"loss {prog['losses'].get('loss', float('nan')):.3f}")

    ui.job_panel("zoo", draw=_zoo_live)

elif source == "Packaged default":
    st.markdown(
        "**all-MiniLM-L6-v2** (6 layers × 12 heads), shipped as a Python package. It is a sentence encoder: "
        "its classification head starts random, so fine-tune it in the **Attack lab** (with or without a "
        "backdoor) before its predictions mean anything."
    )
    if st.button("Use the packaged model", type="primary", key="model.use_default"):
        _try_load("default", allow_pickle=False, name="default (all-MiniLM-L6-v2)", labels=_dataset_labels())

elif source == "Local folder" and not ui.server_files_allowed():
    st.info(md(ui.server_files_refusal("Loading a folder of the server")), icon=":material/lock:")

elif source == "Local folder":
    folder = st.text_input("Model folder (holds config.json and model.safetensors)",
                           placeholder="/path/to/model", **ui.keep("model.folder", ""))
    allow = _pickle_checkbox("model.folder_pickle")
    if st.button("Load folder", type="primary", key="model.load_folder"):
        path = ui.local_folder(folder)
        if not folder.strip():
            st.error("Type the folder's path first.", icon=":material/warning:")
        elif path is None:
            st.error(f"{md(folder.strip(), 200)} is not a folder on this machine.", icon=":material/warning:")
        else:
            _try_load(str(path), allow_pickle=allow, name=path.name)

elif source == "Hub id":
    st.caption("Needs a network connection (or a copy in the local Hugging Face cache). Remote code never runs.")
    hub_id = st.text_input("Hugging Face model id", placeholder="textattack/bert-base-uncased-SST-2",
                           **ui.keep("model.hub_id", ""))
    allow = _pickle_checkbox("model.hub_pickle")
    if st.button("Load from the hub", type="primary", key="model.load_hub"):
        refusal = ui.hub_id_refusal(hub_id) if hub_id.strip() else None
        if not hub_id.strip():
            st.error("Type a model id such as owner/name.", icon=":material/warning:")
        elif refusal:
            st.error(md(refusal), icon=":material/lock:")
        else:
            _try_load(hub_id.strip(), allow_pickle=allow, name=hub_id.strip())

else:  # Upload .zip
    upload = st.file_uploader("A .zip of a saved model folder", type=["zip"], key="model.zip")
    allow = _pickle_checkbox("model.zip_pickle")
    st.caption("The model is loaded into this browser session only; the upload and its unpacked copy are deleted "
               "right after.")
    if st.button("Load the uploaded model", type="primary", key="model.load_zip", disabled=upload is None):
        _load_upload(upload, allow)
    note = ui.ss().pop("model.upload_note", None)
    if note:
        st.info(md(note), icon=":material/info:")

# ------------------------------------------------------------------------------------------- current model

loaded = ui.current_model()
if loaded is not None:
    st.subheader("Current model")
    s = loaded.summary()
    c1, c2, c3, c4 = ui.tile_columns("model", 4)
    c1.metric("Layers", s["layers"])
    c2.metric("Heads per layer", s["heads"])
    c3.metric("Classes", len(s["labels"]))
    c4.metric("Parameters", f"{s['parameters'] / 1e6:.1f} M")
    ref = ui.model_ref()
    where = (md(session_origin(ref["name"], loaded)) if ref.get("kind") == "session"
             else f"source {md_code(s['source'])}")
    st.caption(f"Current: **{md(loaded.name)}** · labels: {md(', '.join(s['labels']))} · {where}")
    if loaded.untrained_head:
        st.warning("This checkpoint had no classification head: its predictions are random until it is "
                   "fine-tuned (Attack lab).", icon=":material/warning:")
    for n in loaded.load_notes:
        st.info(md(n[:1].upper() + n[1:]), icon=":material/info:")
    card = loaded.card
    for w in card.warnings:
        st.warning(f"Model card: {md(w)}", icon=":material/warning:")
    card_json = card.to_json()
    if card_json:
        with st.expander("What we know about this model (its model card)"):
            # a static table wraps a long value (a dataframe's cell cut it at the column's width); card fields are
            # untrusted, so each cell is literal text (``md``: no link, image, markup or math comes of it)
            st.table([{"field": md(r["field"]), "value": md(r["value"])} for r in card_rows(card_json)],
                     hide_index=True, width="stretch")
        with st.expander("The model card as raw JSON (for analysts)"):
            st.json(card_json, expanded=True)

# ------------------------------------------------------------------------------------------- dataset

st.header("Dataset")
shared = list_shared()
options = ["bbc"] + [s for s in shared] + ["Your file…"]
current = ui.data_spec()
labels_for = {"bbc": "BBC News topics (packaged)", "Your file…": "Your file… (TSV / CSV / JSONL)"}
if current not in options:
    options.insert(-1, current)
choice = st.selectbox("Dataset", options, index=options.index(current),  # a file by its name, not the server's path
                      format_func=lambda o: labels_for.get(o) or ui.data_label(o), key="model.data_choice")
if choice == "Your file…":
    st.caption("Columns: a text column (`sentence`, `text`…) and an integer `label` column.")
    data_file = st.file_uploader("Dataset file", type=["tsv", "csv", "jsonl", "txt"], key="model.data_file")
    if data_file is not None and st.button("Use this file", key="model.use_data_file"):
        path = ui.save_upload(data_file, "data")
        from backdoor_core.data import load_table

        try:
            load_table(path)
        except (DataError, OSError, ValueError) as exc:
            ui.discard_upload(path)
            ui.show_error(ui.upload_error(exc, data_file.name), "This file cannot be used: ")
        else:
            previous = ui.data_spec()
            ui.set_data_spec(str(path))
            ui.discard_upload(previous)  # an earlier upload of this session (other specs are left alone)
            st.rerun()
elif choice != current:
    ui.set_data_spec(choice)
    st.rerun()

_not_kept = data_not_kept_note()
if _not_kept:
    st.warning(_not_kept, icon=":material/warning:")
ds = ui.dataset_or_none("train")
if ds is not None:
    counts = ds.label_counts()
    st.caption(f"**{md(ds.name)}** · {len(ds):,} training texts · classes: "
               + md(", ".join(f"{ds.label_names[k]} ({v})" for k, v in counts.items())))
    ui.lab().set_dataset({"name": ui.data_label(), "size": len(ds), "labels": ds.label_names})
    problem = ui.labels_problem(loaded, ds)
    if problem:
        st.error(md(problem), icon=":material/warning:")  # it names the data's classes
    with st.expander("A few examples"):
        st.dataframe(ds.sample(8, seed=0).to_records(), hide_index=True)
