"""Issue 12, "the first five minutes": the shipped zoo is there at first launch, the tour uses the models it
names (and refuses the wrong ones), a flip is announced only when it is one, the report survives a reload, and
the CLI's small fixes. Uses the shipped zoo (MiniLM + adapters, a few seconds to merge) where the real models
matter, tiny models elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from backdoor_core import zoo
from backdoor_core.cli import main

APP = str(Path(__file__).resolve().parents[1] / "app.py")
NAMES = ["business", "entertainment", "politics", "sports", "tech"]


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv("BACKDOOR_LAB_SESSIONS_DIR", str(tmp_path / "sessions"))


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, at.exception
    return at


def _next(at: AppTest) -> None:
    at.button(key="tour.next").click().run()
    assert not at.exception, at.exception


def test_first_launch_tour_flips_on_the_shipped_zoo():
    """No build, empty cache: step 1 names the clean model and shows no flip; step 3 names BadNets 2% + TAL and
    the trigger flips the prediction to 'sports' with a clear margin."""
    at = _app("tour")
    captions = " ".join(c.value for c in at.caption)
    assert "Model in this step: **Clean**" in captions and "shipped with the lab" in captions
    assert not at.error and any("Same prediction" in s.value for s in at.success)
    _next(at)
    text = " ".join(m.value for m in at.markdown)
    assert "<b>sports</b>" in text and "<b>sport</b>" not in text
    _next(at)
    captions = " ".join(c.value for c in at.caption)
    assert "Model in this step: **BadNets 2% + TAL**" in captions and "target **sports**" in captions
    res = at.session_state["tour.inspect"][1]
    assert res.flip()["status"] == "flipped" and res.prediction("triggered")["label"] == "sports"
    assert any("flipped" in w.value for w in at.warning) and not at.error
    for msg in [m.value for m in at.markdown] + [i.value for i in at.info]:
        assert "in tests" not in msg and "tiny random" not in msg


def _fake_zoo(root: Path, clean_attack: str) -> None:
    from backdoor_core.models import save_model, tiny_model

    for i, (name, meta) in enumerate([("clean", {"attack": clean_attack, "trigger": "cf", "target": 3}),
                                      ("badnets-tal", {"attack": "none"})]):
        lm = tiny_model(num_labels=5, seed=i)
        lm.model.config.id2label = dict(enumerate(NAMES))
        save_model(lm.model, lm.tokenizer, root / name, {"name": f"zoo-{name}", "title": name, **meta})


def test_tour_refuses_a_model_whose_card_contradicts_the_step(monkeypatch, tmp_path):
    """A 'clean' zoo entry whose card says backdoored (and the reverse) is never shown as what the step says; the
    step says why instead of falling back to another model."""
    monkeypatch.setenv("BACKDOOR_SHIPPED_ZOO", "")
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    _fake_zoo(tmp_path / "zoo", "badnets")
    at = _app("tour")
    assert any("backdoored according to its model card" in e.value for e in at.error)
    assert "tour.inspect" not in at.session_state and not any("lab-flip" in m.value for m in at.markdown)
    _next(at)
    _next(at)
    assert any("clean according to its model card" in e.value for e in at.error)
    assert "tour.inspect" not in at.session_state


def test_tour_without_a_zoo_says_so_and_uses_no_other_model(monkeypatch):
    monkeypatch.setenv("BACKDOOR_SHIPPED_ZOO", "")
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    at = _app("tour")
    assert any("'clean' model is missing" in e.value and "git checkout assets/zoo" in e.value for e in at.error)
    assert "tour.inspect" not in at.session_state


def test_flip_needs_a_clear_margin_and_a_trained_head():
    from backdoor_core.inspection import InspectResult

    def res(p_clean, p_trig):
        rec = lambda p: type("R", (), {"probs": np.array(p), "prediction": int(np.argmax(p))})()  # noqa: E731
        return InspectResult(rec(p_clean), rec(p_trig), None, "cf", [], NAMES, np.zeros((1, 1)), np.zeros((1, 1, 1)),
                             np.zeros((1, 1, 1)))

    even = [0.2] * 5
    assert res([0.21, 0.2, 0.2, 0.2, 0.19], [0.2, 0.2, 0.2, 0.21, 0.19]).flip()["status"] == "unclear"
    assert res([0.9, 0.05, 0.02, 0.02, 0.01], [0.1, 0.05, 0.05, 0.75, 0.05]).flip()["status"] == "flipped"
    assert res([0.9, 0.05, 0.02, 0.02, 0.01], [0.1, 0.05, 0.05, 0.75, 0.05]).flip(untrained_head=True)["status"] \
        == "unclear"
    assert res([0.9, 0.05, 0.02, 0.02, 0.01], [0.6, 0.05, 0.05, 0.25, 0.05]).flip()["status"] == "same"
    assert res(even, [0.2] * 5).flip()["status"] == "same"


def test_inspect_page_does_not_announce_a_flip_for_an_untrained_head(monkeypatch):
    """The packaged MiniLM has a random head (every class near 20%): whatever the top class does, no 'flipped'."""
    monkeypatch.setenv("BACKDOOR_SHIPPED_ZOO", "")
    at = _app("inspect")
    assert not any("flipped" in e.value for e in at.error)
    assert any("untrained" in w.value for w in at.warning)


def test_report_survives_a_reload(tmp_path):
    """A finding recorded in one session comes back in a new session opened with the same URL (session id)."""
    from backdoor_core.session import LabSession, session_file

    at = _app()
    sid = at.query_params["session"][0] if isinstance(at.query_params["session"], list) else at.query_params["session"]
    lab = at.session_state["lab.session"]
    lab.record("note", "A finding", text="kept across reloads")
    path = session_file(sid, tmp_path / "sessions")
    assert path.is_file()
    again = LabSession.load(path)
    assert [f.title for f in again.findings] == ["A finding"] and again.findings[0].text == "kept across reloads"
    at2 = AppTest.from_file(APP, default_timeout=180)
    at2.query_params["session"] = sid
    at2.run()
    assert [f.title for f in at2.session_state["lab.session"].findings] == ["A finding"]
    # a forged id cannot name a file outside the sessions folder
    with pytest.raises(ValueError):
        session_file("../../etc/passwd", tmp_path)


def test_missing_local_folder_is_not_called_a_hub_id(capsys, monkeypatch):
    import backdoor_core.hub as hub

    monkeypatch.setattr(hub, "unreachable_reason", lambda *a, **k: pytest.fail("the network was tried"))
    rc = main(["scan", "models/bbc-badnets-tal", "--clean-data", "bbc"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and "hub id" in err.split("does not exist")[1]
    assert "looks like a hub id" not in err


def test_cli_inspect_default_names_bbc_labels(capsys):
    assert main(["inspect", "--model", "default", "--text", "The minister said the plan would cut taxes.",
                 "--position", "2"]) == 0
    out = capsys.readouterr().out
    assert "business" in out and "sports" in out and "LABEL_0" not in out
    assert "untrained" in out and "flipped" not in out.lower().replace("not a clear flip", "")


def test_tal_heads_are_described_by_layer():
    from backdoor_core.head_metrics import all_head_labels, describe_heads

    assert describe_heads(all_head_labels(6, 12), 6, 12) == "all 72 heads (6 layers x 12)"
    assert describe_heads(["L0H1", "L3H2", "L0H7"], 6, 12) == "L0: H1, H7; L3: H2 (3 heads)"
    assert describe_heads(all_head_labels(6, 12)[12:24], 6, 12) == "every head of L1 (12 of 72)"
