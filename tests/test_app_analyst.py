"""AppTest for the analyst views (issue 14) with the tiny model injected: head ablation in Inspect, candidate
triggers in Detect, saliency, PCA and the Compare page. Plotly is drawn only by tests/test_e2e_browser.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(autouse=True)
def _test_env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, f"{page}: {at.exception}"
    return at


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def test_inspect_switch_heads_off():
    at = goto(new_app(), "inspect")
    at.multiselect(key="inspect.ablate_heads").set_value(["L0H1", "L1H3"]).run()
    assert not at.exception and not at.error
    key, res = at.session_state["inspect.ablate_cache"]
    assert res.labels == ["L0H1", "L1H3"]
    labels = [m.label for m in at.metric]
    assert any("2 heads off" in lab for lab in labels)
    assert at.toggle(key="inspect.ablate_scan").disabled  # no scan yet


def test_inspect_token_saliency_and_report_finding():
    at = goto(new_app(), "inspect")
    assert not at.exception
    key, pair = at.session_state["inspect.sal_cache"]
    assert pair.triggered.method == "ig" and "cf" in pair.triggered.tokens
    at.radio(key="inspect.sal_method").set_value("gxi").run()
    assert at.session_state["inspect.sal_cache"][1].triggered.method == "gxi"
    assert any(f.key == "inspect:saliency" for f in at.session_state["lab.session"].findings)
