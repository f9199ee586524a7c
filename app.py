"""Backdoor Attention Lab — the Streamlit entry point. It only sets up the page and navigates."""

import streamlit as st

st.set_page_config(page_title="Backdoor Attention Lab", page_icon="🔬", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon="🏠", default=True),
]
st.navigation(pages).run()
