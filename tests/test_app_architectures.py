"""The app with other architectures (AppTest, tiny random models loaded from folders): a decoder's Inspect page
shows the decoder notes; ALBERT's Sanitize page refuses head-wise repair with the reason; the sidebar names the
architecture and offers the device choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(autouse=True)
def _test_env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))


def _load_folder(tmp_path: Path, arch: str) -> AppTest:
    from backdoor_core.models import save_model, tiny_model

    folder = save_model(*(lambda lm: (lm.model, lm.tokenizer))(tiny_model(num_labels=5, arch=arch)),
                        tmp_path / f"tiny-{arch}")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="lab.device").value == "auto"
    at.switch_page("app_pages/model.py").run()
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(folder))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and not [e.value for e in at.error]
    assert at.session_state["lab.model_ref"]["spec"] == str(folder)
    return at


def test_decoder_inspect_page_shows_the_decoder_notes(tmp_path):
    at = _load_folder(tmp_path, "gpt2")
    at.switch_page("app_pages/inspect.py").run()
    assert not at.exception
    assert all("flipped" in e.value for e in at.error), [e.value for e in at.error]  # only the verdict banner
    assert at.session_state["inspect.cache"][1].architecture["causal"]
    captions = " ".join(c.value for c in at.caption)
    assert "Decoder: only the queries at or after the trigger" in captions
    assert "attention sink" in captions


def test_albert_sanitize_page_refuses_head_wise_repair(tmp_path):
    at = _load_folder(tmp_path, "albert")
    at.switch_page("app_pages/sanitize.py").run()
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "not available for ALBERT" in warnings and "shares one set of attention weights" in warnings
    assert at.button(key="sanitize.run").disabled
    at.selectbox(key="sanitize.defense").set_value("finetune").run()  # plain fine-tuning is not head-wise
    assert not at.button(key="sanitize.run").disabled
