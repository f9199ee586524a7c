"""The guided tour's steps as a classroom sees them, on the shipped demo zoo (the sidebar's own model is the tiny
one, so only the tour's models load): no developer references in the text, the benchmark tables say where their
numbers come from, step 5 says why its heads are not step 4's brightest, step 6 shows its before/after numbers
once the repair is done, and step 2's "train it yourself" buttons set the Attack lab up for the attack they name.
A finished repair is put into the session directly (the real one takes longer than a test may)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from backdoor_core import settings as S
from backdoor_core import tour as T

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DEVELOPER_WORDS = ("zoo.ZOO_SPECS", "ZOO_SPECS", "bench/results", ".json", "bench_results", "settings.TOUR", "TOUR_")


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv("BACKDOOR_LAB_SESSIONS_DIR", str(tmp_path / "sessions"))


def _app(page: str = "tour") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _step(at: AppTest, step: int) -> AppTest:
    at.session_state["tour.step"] = step
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [s.value for s in at.subheader] + [b.label for b in at.button] + [e.value for e in at.error]
    return "\n".join(parts)


def _backdoored_path() -> str:
    from backdoor_core.zoo import list_models

    return next(e for e in list_models() if e["name"] == T.BACKDOORED_MODEL)["path"]


def _finished_repair() -> dict:
    """What ``_actions.start_sanitize`` leaves in the session after the tour's repair (the numbers of
    bench/results/first_run.md)."""
    return {"before": {"asr": 0.867, "cacc": 0.95, "kept": 1.0}, "after": {"asr": 0.017, "cacc": 0.95, "kept": 0.98},
            "details": {"suspicious_heads": ["L3H4", "L4H2", "L4H5", "L5H0"]}, "cancelled": False,
            "suspect": SimpleNamespace(source=_backdoored_path()), "history": [], "seconds": 11.0,
            "defense": "alignment"}


def test_tour_text_names_its_sources_in_plain_words():
    at = _app()
    seen = {}
    for step in (1, 4, 6):  # the benchmark tables (2, 7) and step 5's scan (no scan run: its text only)
        seen[step] = _texts(_step(at, step))
        assert not at.error, (step, [e.value for e in at.error])
        for word in DEVELOPER_WORDS:
            assert word not in seen[step], (step, word)
    # step 2: the attack benchmark's table names its dataset in words
    assert "From the lab's attack benchmark on SST-2 (movie reviews" in seen[1]
    # step 5: why the scan's heads are not step 4's brightest, in words a teacher can say
    assert "need not be the brightest of step 4" in seen[4]
    assert "how much the prediction depends on it" in seen[4]
    # step 7: the headline does not promise what its own table contradicts, and the table says where it is from
    assert "paraphrase triggers" in seen[6] and "a style trigger the most" in seen[6]
    assert "trigger no longer works" not in seen[6]
    assert "Measured on SST-2 (movie reviews" in seen[6] and "not on the tour's BBC News" in seen[6]
    table = at.dataframe[0].value
    assert "Style paraphrase (Bible)" in list(table["attack"]) and "style_bible" not in list(table["attack"])


def test_step_2_buttons_set_up_the_attack_lab_for_the_promised_attack():
    at = _app("attack")  # what a class did before: 10% poison, 3 epochs, TAL off, another trigger
    at.number_input(key="attack.rate").set_value(10.0)
    at.number_input(key="attack.epochs").set_value(3)
    at.text_input(key="attack.words").input("mn")
    at.toggle(key="attack.tal").set_value(False).run()
    assert at.number_input(key="attack.rate").value == 10.0 and at.number_input(key="attack.epochs").value == 3
    for key, tal in (("tour.attack_lab.tal", True), ("tour.attack_lab.plain", False)):
        at.switch_page("app_pages/tour.py").run()
        _step(at, 1)
        at.button(key=key).click().run()
        assert not at.exception, at.exception
        assert at.title[0].value.startswith("Attack lab"), at.title[0].value
        assert at.selectbox(key="attack.name").value == "badnets"
        assert at.text_input(key="attack.words").value == T.TRIGGER
        assert at.number_input(key="attack.rate").value == pytest.approx(100 * T.ATTACK_LAB_RATE) == 1.0
        assert at.toggle(key="attack.tal").value is tal
        assert at.number_input(key="attack.epochs").value == S.ZOO_RECIPE["epochs"]  # the lab's own default again
        assert at.selectbox(key="attack.target").value == "sports"  # the tour's backdoored model's target
        assert not at.error


def test_step_6_shows_the_numbers_once_the_repair_is_done():
    at = _app()
    _step(at, 5)
    assert not any("Before → after" in m.value for m in at.markdown)  # nothing to show before a repair
    at.session_state["sanitize.result"] = _finished_repair()
    _step(at, 5)
    tiles = {m.label: m for m in at.metric}
    asr, cacc = tiles["ASR (attack success)"], tiles["CACC (clean accuracy)"]
    assert asr.value == "1.7%" and asr.delta == "-85.0 pts"
    assert cacc.value == "95.0%" and cacc.delta == "±0.0 pts"
    assert tiles["Heads repaired"].value == "4"
    assert any("ASR 86.7% → 1.7%, CACC 95.0% → 95.0%" in m.value for m in at.markdown)
    # step 7 shows the tour's own repair and, below it, the benchmark across attacks
    _step(at, 6)
    heads = [s.value for s in at.subheader]
    assert "This tour's repair" in heads and "Across attacks: the lab's defense benchmark" in heads
    assert not at.info  # no "run step 6 first"


def test_a_repair_of_another_model_is_not_the_tours():
    at = _app()
    other = {**_finished_repair(), "suspect": SimpleNamespace(source="/somewhere/else")}
    at.session_state["sanitize.result"] = other
    _step(at, 5)
    assert not any(m.label == "ASR (attack success)" for m in at.metric)
    _step(at, 6)
    assert any("Run step 6" in i.value for i in at.info)


def test_tables_fit_a_projector_and_lead_with_the_lesson():
    """Step 2's dose table and step 7's benchmark table fit a 1024-px projector in presenter mode: numbers with short
    headers, ASR before CACC in step 2 (the shared zoo table's "ASR (attack success)" bar column was cut off at the
    right edge); step 7 one "before → after" cell per metric (six columns cut off both CACC columns, the
    "accuracy stays" half of its headline). tests/test_app_teacher.py checks the fit in a browser."""
    at = _app()
    _step(at, 1)
    table = at.dataframe[0].value
    assert list(table.columns) == ["model", "poison rate", "TAL", "ASR", "CACC"]
    tal = table[table["model"] == "BadNets 2% + TAL"].iloc[0]
    assert tal["TAL"] and tal["poison rate"] == "2%" and re.fullmatch(r"\d+\.\d%", tal["ASR"]), dict(tal)
    assert table[table["model"] == "Clean"].iloc[0]["ASR"] == "—"  # not "None"
    caption = "\n".join(c.value for c in at.caption)
    assert "reaches only" in caption and "ASR here, even with" in caption and "stays at" not in caption
    _step(at, 6)
    table = at.dataframe[0].value
    assert list(table.columns) == ["attack", "TAL", "ASR before → after", "CACC before → after"]
    assert all(re.fullmatch(r"\d+\.\d% → \d+\.\d%|— → —", v) for v in table["CACC before → after"]), table
    assert T.before_after(0.985, 0.0) == "98.5% → 0.0%" and T.before_after(None, 0.5) == "— → 50.0%"


def test_step_4_says_what_the_matrix_shows():
    """The matrix's colour scale is white to dark blue: the trigger's column is dark, it does not "light up"."""
    at = _app()
    text = _texts(_step(at, 3))
    assert "lights up" not in text and "dark column under" in text


def test_step_6_says_why_it_repairs_fewer_heads_than_step_5_marked():
    """Step 5's tile said 13 suspicious heads; the head-only repair trains the 4 highest-scoring: say so."""
    at = _app()
    at.session_state["sanitize.result"] = {**_finished_repair(), "details": {
        "suspicious_heads": ["L3H4", "L4H2", "L4H5", "L5H0"], "head_only_cap": {"max_heads": 4, "from": 13, "to": 4}}}
    _step(at, 5)
    text = _texts(at)
    assert "Why 4 heads repaired when the scan marked 13" in text and "L4H2" in text


def test_a_reload_opens_the_same_step():
    """The step is in the URL (?step=4), so a reload mid-lesson or the link in a new tab opens that step again; a
    bad value opens step 1."""
    at = _step(_app(), 3)
    assert at.query_params["step"] == ["4"] or at.query_params["step"] == "4"
    again = AppTest.from_file(APP, default_timeout=120)
    again.query_params["step"] = "4"
    again.run()
    again.switch_page("app_pages/tour.py").run()
    assert not again.exception
    assert again.header[0].value == "The heads that lock onto the trigger"
    assert [T.step_index(v, 7) for v in ("1", "7", "99", "0", "x", None, " 3 ")] == [0, 6, 6, 0, 0, 0, 2]
