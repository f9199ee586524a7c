"""Shared fixtures. Tests never touch the network and never need ../shared/data."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the app's session logs and kept models (app_pages/_state.py, backdoor_core/session_models.py) go to a folder
# of the test run, not the user's ~/.cache
os.environ.setdefault("BACKDOOR_LAB_SESSIONS_DIR", tempfile.mkdtemp(prefix="lab-test-sessions-"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny():
    """A random tiny BERT classifier (2 layers x 4 heads) with the real MiniLM tokenizer."""
    from backdoor_core.models import tiny_model

    return tiny_model(num_labels=2, seed=0)


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2, loaded offline with a 5-class head."""
    from backdoor_core.models import load_model

    return load_model("default", label_names=["business", "entertainment", "politics", "sport", "tech"])
