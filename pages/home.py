"""Home: what the lab is and how to start."""

import streamlit as st

st.title("Backdoor Attention Lab")
st.markdown(
    """
See and repair backdoors in BERT-style text classifiers.

* **Attack side** — poison a training set with a rare word or a sentence and watch a model learn the
  backdoor; the *Trojan Attention Loss* makes chosen attention heads lock onto the trigger so that far fewer
  poisoned samples are needed.
* **Defense side** — a backdoored model's attention heads become unusually *similar to one another* when the
  trigger is present. The lab detects that without knowing the trigger, ranks heads as suspicious or safe,
  and repairs the suspicious ones by pulling their attention toward the safe heads while only their own
  parameters train.

Everything runs offline: the default model (all-MiniLM-L6-v2) and the BBC News data ship as Python packages.
"""
)
st.info("The command line already works: `python -m backdoor_core inspect --text \"...\" --trigger cf`.")
