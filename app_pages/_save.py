"""Keeping a model this session made: save it into the shared zoo folder under a name, never over another silently.

A model trained (Attack lab) or sanitized (Sanitize) in the app lives in its browser session only
(``_common.session_models``); other sessions never see it. ``save_panel`` writes it to ``<zoo>/user-<name>``
through ``zoo.save_user_model`` when the user asks; when that folder exists (another session's model, or an
earlier one of this session) the Save button stays disabled until the user ticks "Replace it".
"""

from __future__ import annotations

import streamlit as st

from backdoor_core import zoo
from app_pages import _common as ui
from app_pages._text import md, md_code


def save_panel(loaded, key: str) -> None:
    """A name box, the Save button, and the overwrite confirmation for ``loaded`` (a session model)."""
    name = st.text_input("Save as", value=loaded.name, key=f"{key}.save_name",
                         help="Saved models go into the zoo folder and appear under Model → Demo zoo for every "
                              "session on this machine.")
    try:
        target = zoo.user_model_dir(ui.zoo_dir(), name)
    except ValueError as exc:
        ui.show_error(exc)
        return
    exists = target.exists()
    replace = False
    mine = st.session_state.get(f"{key}.saved") == str(target)
    if exists:
        whose = "this session saved it" if mine else "maybe another session's"
        st.warning(f"A model is already saved as {md_code(target.name)} ({whose}). Saving replaces it.",
                   icon=":material/warning:")
        replace = st.checkbox(f"Replace {md(target.name)}", key=f"{key}.replace_{target.name}")
    if st.button("Save into the zoo folder", key=f"{key}.save", icon=":material/save:",
                 disabled=exists and not replace):
        try:
            with st.spinner("Saving…"):
                path = zoo.save_user_model(loaded.model, loaded.tokenizer, ui.zoo_dir(), name, loaded.card,
                                           overwrite=replace)
        except zoo.ModelExistsError:  # appeared since this page was drawn
            st.warning(f"{md_code(target.name)} was saved by someone else a moment ago; tick Replace to replace it.",
                       icon=":material/warning:")
        except (OSError, ValueError) as exc:
            ui.show_error(exc, "Could not save: ")
        else:
            st.session_state[f"{key}.saved"] = str(path)
            st.success(f"Saved as {md_code(path.name)} in the zoo folder.", icon=":material/check_circle:")
