"""Home: what the lab is and where to start."""

import streamlit as st

from app_pages._common import page_header, stack_columns

page_header(
    "Backdoor Attention Lab",
    "See and repair backdoors in BERT-style text classifiers — offline, on a laptop.",
)

# one column a row below 1200 px (and in presenter mode below 1600): side by side on a 1024-px projector in presenter
# mode each was 220 px wide, three words a line, "Where to start" on two lines
left, right = stack_columns("home", 2, gap="large")
with left:
    st.markdown(
        """
**Attack side.** Poison a training set with a rare word or a sentence and watch a model learn the backdoor.
The *Trojan Attention Loss* (TAL) makes chosen attention heads lock onto the trigger, so far fewer poisoned
samples are needed.

**Defense side.** When the trigger is present, a backdoored model's attention heads become unusually
*similar to one another*. The lab detects that without knowing the trigger, ranks heads as suspicious or
safe, and repairs the suspicious ones by pulling their attention toward the safe heads while only their own
parameters train.
"""
    )
with right:
    st.markdown("#### Where to start")
    st.page_link("app_pages/tour.py", label="Guided tour — the whole story in seven steps", icon=":material/explore:")
    st.page_link("app_pages/model.py", label="Model — pick a demo model, a folder, a hub id or a .zip", icon=":material/deployed_code:")
    st.page_link("app_pages/inspect.py", label="Inspect — type a sentence, add a trigger, watch the heads", icon=":material/search:")
    st.page_link("app_pages/compare.py", label="Compare models — one text through two models, or without some heads", icon=":material/compare:")
    st.page_link("app_pages/attack.py", label="Attack lab — train a backdoor, live", icon=":material/science:")
    st.page_link("app_pages/detect.py", label="Detect — find captured heads without the trigger", icon=":material/radar:")
    st.page_link("app_pages/sanitize.py", label="Sanitize — repair the heads, keep the accuracy", icon=":material/healing:")
    st.page_link("app_pages/report.py", label="Report — one offline HTML file of what you found", icon=":material/description:")

st.info(
    "Everything runs offline: the default model (all-MiniLM-L6-v2) and the BBC News data ship as Python "
    "packages, and the bertviz views carry their own JavaScript. The command line works too: "
    "`python -m backdoor_core inspect --text \"...\" --trigger cf`.",
    icon=":material/wifi_off:",
)
