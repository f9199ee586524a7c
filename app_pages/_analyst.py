"""Streamlit views for the analyst's questions (issue 14): candidate triggers, head ablation, saliency, PCA,
model comparison. Thin: every number comes from the core (``trigger_search``, ``analysis``); every figure from
``backdoor_core.figures``. Untrusted text goes through ``st.dataframe`` / plotly figures that escape it."""

from __future__ import annotations

import streamlit as st

from backdoor_core import figures as F
from app_pages import _common as ui


def trigger_candidates(report, key: str = "detect.triggers") -> None:
    """The scan's candidate triggers: a table and the flip-rate bars (or why there are none)."""
    from backdoor_core.trigger_search import DISPLAY_COLUMNS, display_rows

    st.subheader("Candidate triggers")
    ts = getattr(report, "triggers", None)
    if ts is None or not ts.candidates:
        st.caption("No candidate triggers: the scan flagged no input or named no suspicious head.")
        return
    data = ts.to_dict(limit=20)
    st.caption(f"The words and phrases the suspicious heads focus on in {data['n_flagged']} flagged inputs, ranked "
               f"after a check: each is inserted into clean texts (does the prediction flip to the suspected target "
               f"'{data['target_name']}'?) and removed from the flagged inputs (does it flip away?). Clean texts "
               f"already predicted '{data['target_name']}': "
               f"{0 if data['baseline_target_rate'] is None else data['baseline_target_rate']:.0%}.")
    c1, c2 = st.columns([1, 1], gap="medium")
    with c1:
        st.dataframe(display_rows(data, 10), hide_index=True, column_order=DISPLAY_COLUMNS)
    with c2:
        ui.plot(F.trigger_candidates_bar(data["candidates"], data["target_name"]), key=key)
