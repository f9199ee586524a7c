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

# Two torch threads in each parallel worker too (pytest.ini: `-n auto`): on 2 cores, one thread a worker ran the
# suite no faster (1335 s against 1304 s) and left a core idle while the other worker waited on a browser.
torch.set_num_threads(min(2, torch.get_num_threads()))

MAX_WORKERS = 4  # each worker holds its own models and, for the browser tests, a Streamlit server and a Chromium


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core this process may use (a container's or ``taskset``'s limit, not the
    machine's), at most MAX_WORKERS; PYTEST_XDIST_AUTO_NUM_WORKERS overrides it."""
    env = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if env:
        return int(env)
    from backdoor_core.device import usable_cores

    return max(1, min(MAX_WORKERS, usable_cores()))


FILE_SECONDS = "lab/file_seconds"  # pytest's cache: {test file: seconds its tests took in the last run}


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items):
    """The slowest test files first, so that the two workers do not end on one long browser scenario each in turn
    while the other waits (``--dist loadfile`` with ``--no-loadscope-reorder``, pytest.ini: xdist hands out files in
    this order; its own order, most tests first, had put the browser scenarios, two or three tests each, last).
    The order: each file's seconds in the last run (pytest's cache), else files that start a browser or an app
    server before the others, then the files with more tests. Every worker computes the same order."""
    cache = getattr(config, "cache", None)
    seconds = cache.get(FILE_SECONDS, {}) if cache is not None else {}
    count: dict[str, int] = {}
    served: dict[str, bool] = {}
    for item in items:
        f = _file_of(item.nodeid)
        count[f] = count.get(f, 0) + 1
        module = getattr(item, "module", None)
        served[f] = served.get(f, False) or any(hasattr(module, n) for n in ("launch_browser", "streamlit_app"))
    rank = {f: (-float(seconds.get(f, 0.0)), not served[f], -count[f], f) for f in count}
    items.sort(key=lambda item: rank[_file_of(item.nodeid)])  # stable: a file's tests keep their order


_SPENT: dict[str, float] = {}


def pytest_runtest_logreport(report):
    f = _file_of(report.nodeid)
    _SPENT[f] = _SPENT.get(f, 0.0) + report.duration


def pytest_sessionfinish(session):
    """Keep each file's seconds for the next run's order (the controller's, or a run without workers)."""
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _SPENT:
        return
    cache.set(FILE_SECONDS, {**cache.get(FILE_SECONDS, {}), **{f: round(t, 1) for f, t in _SPENT.items()}})


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
