"""The sidebar on every page: current model (name, layers x heads, labels, its model card), dataset, running
jobs."""

from __future__ import annotations

from typing import Any

import streamlit as st

from backdoor_core import settings as S

from app_pages._data import data_label, data_spec, dataset, restore_kept_data
from app_pages._jobs import adopt_orphaned_jobs, handle_finished_jobs, jobs, restore_results
from app_pages._models import (K_DEVICE, current_model, labels_problem, model_ref, restore_session_models,
                                session_origin_short)
from app_pages._state import (K_PAGE, K_PANELS, K_PRESENTER, SIDEBAR_POLL_SECONDS, keep, keep_presenter_in_url, lab,
                              note_page, presenter, ss)
from app_pages._text import md, md_code


# ------------------------------------------------------------------------------------------------ sidebar


def _fmt_rate(v: Any) -> str:
    return f"{float(v):.1%}" if isinstance(v, (int, float)) else str(v)


K_PANELS_AT = "lab.panels_at"  # {page path: the job kinds whose panel that page drew on its last run there}
PANELS_FIRST = {"attack": {"attack"}, "detect": {"scan"}, "sanitize": {"sanitize"}}
"""The job panels a page draws, on a first visit in the session (later: what it drew on its last run)."""


def sidebar_jobs(slot, page_path: str = "") -> None:
    """Running jobs with live progress in the sidebar's slot (polls while any runs; a finished job triggers a full
    rerun). A job whose own panel this page drew on its last run (``job_panel``) is left out, so one poller, not
    two, reruns while the user watches it; each rerun costs the job's CPU time on a 2-core machine (README, *Live
    progress*). Called before the page runs: after it, a page's ``st.stop()`` (Detect or Sanitize before a result)
    had ended the run and the list was never drawn: no progress, and a job of another page that ended there was
    handled only at the user's next click."""
    drawn = ss().get(K_PANELS_AT) or {}
    shown = drawn[page_path] if page_path in drawn else PANELS_FIRST.get(page_path, set())
    if not any(j.active and kind not in shown for kind, j in jobs().items()):
        return

    @st.fragment(run_every=SIDEBAR_POLL_SECONDS)
    def _jobs() -> None:
        current = jobs()
        if any(not j.active and not j.meta.get("handled") for j in current.values()):
            st.rerun(scope="app")
        running = [j for kind, j in current.items() if j.active and kind not in shown]
        if running:
            st.markdown("### Running")
        for j in running:
            snap = j.snapshot()
            if snap.status == "pending":  # queued behind the server's other jobs (``jobs.JobSlots``): say why
                st.progress(0.0, text=f"{md(j.name)} · {md(snap.message or 'waiting to start')}")
            else:
                st.progress(snap.fraction or 0.0, text=f"{md(j.name)} · {snap.elapsed:.0f} s")

    with slot:
        _jobs()


def sidebar(page_path: str = ""):
    """The sidebar: current model (name, layers x heads, labels, attack metadata) and dataset. Returns the empty
    slot for the running jobs, which ``sidebar_jobs`` fills (before the page runs). ``page_path``: the page this
    run draws (``_state.arrived``)."""
    before = ss().get(K_PAGE)
    if before and before[1] is not None:  # the panels the last full run's page drew
        ss().setdefault(K_PANELS_AT, {})[before[1]] = set(ss().get(K_PANELS, set()))
    note_page(page_path)
    lab()  # this tab's report log; keeps its session id in the URL on every page
    restore_results()  # after a reload: the verdict, charts and repair this tab showed
    adopt_orphaned_jobs()  # after a reload: the jobs this tab's page had running
    handle_finished_jobs()
    ss()[K_PANELS] = set()  # the kinds whose job panel this run's page draws (``job_panel`` adds them)
    restore_session_models()  # after a reload: the models this tab trained, repaired or uploaded, and the current
    restore_kept_data()  # and the data file it had uploaded
    with st.sidebar:
        from backdoor_core.device import DEVICE_CHOICES, available_devices

        st.selectbox("Device", DEVICE_CHOICES, **keep(K_DEVICE, S.DEVICE),
                     help="Where models run: auto picks a CUDA GPU, else Apple MPS, else the CPU. Available here: "
                          + ", ".join(available_devices()) + ".")
        st.markdown("### Current model")
        loaded = current_model(show_errors=False)
        if loaded is None:
            st.error(md(ss().get("lab.model_error") or "No model loaded."), icon=":material/warning:")
        else:
            ref = model_ref()
            st.markdown(f"**{md(loaded.name)}**" + (f" · *{md(session_origin_short(ref['name'], loaded))}*"
                                                    if ref["kind"] == "session" else ""))
            st.caption(md(f"{loaded.summary().get('architecture', '')} · "
                          f"{loaded.num_layers} layers × {loaded.num_heads} heads · labels: "
                          + ", ".join(loaded.label_names)))
            card = loaded.card
            bits = []
            if card.is_clean:
                bits.append("clean (no attack)")
            elif card.attack:
                trig = ", ".join(card.trigger) if isinstance(card.trigger, list) else card.trigger
                bits.append(f"attack **{md(card.attack)}**" + (f" · trigger {md_code(trig)}" if trig else ""))
                if card.target is not None:
                    bits.append(f"target {md(card.target_name or card.target)}")
                if card.rate is not None:
                    bits.append(f"ρ {md(_fmt_rate(card.rate))}")
                if card.tal:
                    bits.append("TAL")
            for k, v in (("cacc", card.cacc), ("asr", card.asr)):
                if v is not None:
                    bits.append(f"{k.upper()} {md(_fmt_rate(v))}")  # a card's value: maybe a string
            if card.defense:
                bits.append(f"sanitized ({md(card.defense)})")
            if bits:
                st.caption(" · ".join(bits))
            if card.warnings:
                st.caption(f":material/warning: its model card had {len(card.warnings)} bad field(s), ignored "
                           "(see the Model page)")
            if loaded.untrained_head:
                st.caption(":material/warning: classification head untrained: predictions are random until fine-tuned")
        st.markdown("### Dataset")
        spec = data_spec()
        try:
            ds = dataset("train")
            st.caption(f"**{md(data_label(spec))}** · {len(ds):,} training texts · {ds.num_labels} labels")
            problem = labels_problem(loaded, ds)
            if problem:
                st.warning(md(problem), icon=":material/warning:")
        except Exception as exc:  # noqa: BLE001 - shown, never raised
            st.error(md(f"{spec}: {exc}"), icon=":material/warning:")
        slot = st.container()  # filled by sidebar_jobs()
        if lab().unsaved:  # a full or read-only sessions folder: noticed on every page, not only on Report
            st.warning("This tab's findings are not saved on the server (a reload would lose them): download the "
                       "report on the Report page.", icon=":material/warning:")
        st.divider()
        st.toggle("Presenter mode (larger text)", **keep(K_PRESENTER, presenter()))
        keep_presenter_in_url()  # a reload keeps it
    return slot
