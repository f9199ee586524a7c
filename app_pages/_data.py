"""The dataset of this session (cached, read-only) and uploaded files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from app_pages._state import DEFAULT_DATA, K_DATA, ss
from app_pages._widgets import show_error


@st.cache_resource(show_spinner=False, max_entries=16)
def _load_dataset(spec: str, split: str, seed: int):
    from backdoor_core.data import load_dataset

    return load_dataset(spec, split=split, seed=seed)


def data_spec() -> str:
    if K_DATA not in ss():
        ss()[K_DATA] = DEFAULT_DATA
    return ss()[K_DATA]


def set_data_spec(spec: str) -> None:
    ss()[K_DATA] = spec


def dataset(split: str = "train", spec: str | None = None, seed: int = 0):
    """The dataset (cached, read-only). Raises ``DataError`` with a readable message."""
    spec = spec or data_spec()
    with st.spinner(f"Loading {spec} ({split})…"):
        return _load_dataset(spec, split, seed)


def dataset_or_none(split: str = "train"):
    from backdoor_core.data import DataError

    try:
        return dataset(split)
    except (DataError, OSError, ValueError) as exc:
        show_error(exc, f"Dataset '{data_spec()}' ({split}): ")
        return None


def save_upload(uploaded, subdir: str) -> Path:
    """Write an uploaded file into a private temp folder and return its path."""
    folder = Path(tempfile.mkdtemp(prefix=f"backdoor-lab-{subdir}-"))
    path = folder / Path(uploaded.name).name
    path.write_bytes(uploaded.getvalue())
    return path
