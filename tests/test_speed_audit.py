"""Speed audit: what a speaker waits for. Not timed tests: each one asserts the behaviour that makes a step fast
(work done once, not at every rerun or every save) and that the result shown is the one computed the slow way.

* a reload of a tab with a large report read every chart's whole plotly template anew (3.4 s for 200 findings);
* every save (one a record) wrote every chart of every finding as JSON anew (1.1 s for 200 findings);
* the Inspect page recorded its finding (two more charts and a save of the whole report) at every rerun.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backdoor_core import figures as F  # noqa: E402
from backdoor_core.session import LabSession  # noqa: E402

LABELS = ["business", "entertainment", "politics", "sport", "tech"]


def _session(n: int = 3) -> LabSession:
    rng = np.random.default_rng(0)
    lab = LabSession(model={"name": "m", "labels": LABELS})
    for i in range(n):
        lab.record("inspect", f"Inspection {i}", key=f"inspect:{i}", model="m", text=f"text {i}",
                   figures=[F.probability_bars(LABELS, rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))),
                            F.concentration_heatmap(rng.random((6, 12)))])
    return lab


@pytest.fixture()
def to_json_calls(monkeypatch):
    from plotly.basedatatypes import BaseFigure

    calls = []
    original = BaseFigure.to_json

    def spy(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BaseFigure, "to_json", spy)
    return calls


def test_a_save_writes_each_chart_as_json_once(tmp_path, to_json_calls):
    """``record`` already wrote each chart as JSON; a save (every record autosaves) wrote all of them again."""
    lab = _session()
    expected = [[f.to_json() for f in finding.figures] for finding in lab.findings]
    to_json_calls.clear()
    lab.save(tmp_path / "a.json")
    lab.save(tmp_path / "b.json")
    assert to_json_calls == []
    saved = json.loads((tmp_path / "b.json").read_text())
    assert [f["figures"] for f in saved["findings"]] == expected  # the same text as before
    lab.findings[0].figures = lab.findings[0].figures[:1]  # a finding whose charts changed is written anew
    lab.save(tmp_path / "c.json")
    assert len(to_json_calls) == 1
    assert json.loads((tmp_path / "c.json").read_text())["findings"][0]["figures"] == expected[0][:1]


def test_a_reload_does_not_check_the_lab_template_of_every_chart(tmp_path, monkeypatch):
    """Every lab chart carries the whole plotly_white template; plotly checked it anew for each chart (three
    quarters of a reload). The charts read back are the ones plotly reads the slow way."""
    from _plotly_utils.basevalidators import BaseTemplateValidator

    lab = _session()
    lab.save(tmp_path / "s.json")
    texts = [x for f in json.loads((tmp_path / "s.json").read_text())["findings"] for x in f["figures"]]
    checked = []
    original = BaseTemplateValidator.validate_coerce

    def spy(self, v, *args, **kwargs):
        if isinstance(v, dict) and v.get("data"):
            checked.append(v)
        return original(self, v, *args, **kwargs)

    monkeypatch.setattr(BaseTemplateValidator, "validate_coerce", spy)
    again = LabSession.load(tmp_path / "s.json")
    assert checked == []
    monkeypatch.undo()
    read = [fig for f in again.findings for fig in f.figures]
    assert len(read) == len(texts) == 6
    for fig, text in zip(read, texts):
        slow = pio.from_json(text)
        assert fig.to_plotly_json() == slow.to_plotly_json()
        assert json.loads(fig.to_json()) == json.loads(slow.to_json())


def test_a_chart_with_another_template_or_a_wrong_property_is_still_checked(tmp_path):
    lab = _session(1)
    lab.save(tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())
    good, heat = (json.loads(x) for x in data["findings"][0]["figures"])
    heat["layout"]["not_a_property"] = 1  # beside the lab template: plotly refuses it
    other = dict(good, layout=dict(good["layout"], template={"layout": {"font": {"size": 9}}}))
    data["findings"][0]["figures"] = [json.dumps(heat), json.dumps(other)]
    (tmp_path / "s.json").write_text(json.dumps(data))
    again = LabSession.load(tmp_path / "s.json")
    assert len(again.findings[0].figures) == 1 and "chart 1" in again.dropped[0]
    assert again.findings[0].figures[0].layout.template.layout.font.size == 9


# ------------------------------------------------------------------------------------------------ pages


def test_inspect_records_its_finding_once_per_inspection(monkeypatch, tmp_path_factory):
    """A rerun that shows the same inspection (a head picked, a radio moved) records nothing; a new text, a
    removed finding or another report records it again."""
    from test_app_pages import goto, new_app, open_tab

    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))
    recorded = []
    original = LabSession.record

    def spy(self, kind, title, **kwargs):
        recorded.append(kwargs.get("key"))
        return original(self, kind, title, **kwargs)

    monkeypatch.setattr(LabSession, "record", spy)
    at = goto(new_app(), "inspect")
    open_tab(at, "Saliency")
    assert recorded.count("inspect:latest") == 1 and recorded.count("inspect:saliency") == 1
    recorded.clear()
    at.run()
    at.radio(key="inspect.head_text").set_value("clean").run()
    assert recorded == []
    lab = at.session_state["lab.session"]
    finding = next(f for f in lab.findings if f.key.startswith("inspect:latest@"))
    at.text_area(key="inspect.text").input("Shares of the bank rose sharply after the results.").run()
    assert recorded.count("inspect:latest") == 1
    now = next(f for f in lab.findings if f.key.startswith("inspect:latest@"))
    assert now is not finding and "Shares of the bank" in now.text
    recorded.clear()
    lab.remove("inspect:latest", now.model)  # gone from the report: the next run puts it back
    at.run()
    assert recorded == ["inspect:latest"]
    assert any(f.key.startswith("inspect:latest@") for f in lab.findings)


def test_compare_records_its_finding_once_per_comparison(monkeypatch, tmp_path_factory):
    from test_app_pages import goto, new_app

    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))
    recorded = []
    original = LabSession.record

    def spy(self, kind, title, **kwargs):
        recorded.append(kwargs.get("key"))
        return original(self, kind, title, **kwargs)

    monkeypatch.setattr(LabSession, "record", spy)
    at = goto(new_app(), "compare")
    assert recorded.count("compare:latest") == 1
    recorded.clear()
    at.run()
    at.run()
    assert recorded == []
    assert any(f.key.startswith("compare:latest@") for f in at.session_state["lab.session"].findings)


def _specs(at) -> dict:
    """The charts drawn, by their keys (an element id ends with its key)."""
    return {c.proto.id.rsplit("-", 1)[-1]: c.proto.spec for c in at.get("plotly_chart")}


def _count_builds(monkeypatch) -> list:
    from backdoor_core import figures

    built = []
    for name in ("probability_bars", "concentration_heatmap", "similarity_delta_heatmap", "head_similarity_heatmaps",
                 "attention_matrix", "layer_head_heatmap", "saliency_strip", "difference_heatmap"):
        original = getattr(figures, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            built.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(figures, name, spy)
    return built


def test_an_inspect_rerun_draws_the_charts_it_drew_without_building_them(monkeypatch, tmp_path_factory):
    """A rerun with the same inspection (a radio moved) built every chart anew, ~50 ms each; now only the chart
    whose input changed is built, and every chart drawn is the one built before."""
    from test_app_pages import goto, new_app, open_tab

    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))
    built = _count_builds(monkeypatch)
    at = open_tab(goto(new_app(), "inspect"), "Saliency")
    first = _specs(at)
    assert len(first) >= 6
    built.clear()
    at.run()
    assert built == [] and _specs(at) == first
    at.radio(key="inspect.head_text").set_value("clean").run()  # the one-head matrix of the clean text
    assert built == ["attention_matrix"]
    changed = [k for k, v in _specs(at).items() if v != first[k]]
    assert changed == ["inspect.matrix"]
    at.radio(key="inspect.head_text").set_value("with trigger").run()
    assert _specs(at) == first  # the chart of the first run again, built anew
    built.clear()
    at.text_area(key="inspect.text").input("Shares of the bank rose sharply after the results.").run()
    assert {"probability_bars", "concentration_heatmap", "attention_matrix", "saliency_strip"} <= set(built)
    assert all(_specs(at)[k] != first[k] for k in ("inspect.probs", "inspect.matrix"))


def test_a_compare_rerun_draws_the_charts_it_drew_without_building_them(monkeypatch, tmp_path_factory):
    from test_app_pages import goto, new_app

    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))
    built = _count_builds(monkeypatch)
    at = goto(new_app(), "compare")
    first = _specs(at)
    assert len(first) >= 2
    built.clear()
    at.run()
    assert built == [] and _specs(at) == first


def test_the_report_preview_draws_a_sections_charts_only_while_its_box_is_open(monkeypatch, tmp_path_factory):
    """Every rerun of the Report page drew all charts of all findings inside the closed preview boxes (400 charts
    with 200 findings, ~0.6 s and megabytes to the browser each time); an open box draws the same charts."""
    from test_app_pages import goto, new_app, open_tab

    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))
    at = goto(open_tab(goto(new_app(), "inspect"), "Saliency"), "report")  # the inspection and its saliency
    assert at.get("plotly_chart") == [] and len(at.expander) == 3
    sections = at.session_state["lab.session"].sections(keys=[f.key for f in at.session_state["lab.session"].ordered()])
    figures = [fig for s in sections for fig in s.get("figures") or []]
    assert len(figures) == 3
    for n, s in enumerate(sections):
        if s.get("figures"):
            at.session_state[f"report.open.{n}"] = True
    at.run()
    drawn = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert drawn == [json.loads(pio.to_json(fig, validate=False)) for fig in figures]


def test_a_detect_rerun_draws_the_scan_charts_it_drew_without_building_them(monkeypatch, tmp_path_factory):
    """The scatter, grid and histogram of a scan were built at every rerun of the Detect page; a new report (a
    copy, as another scan or a reload gives) builds them anew."""
    import copy

    from test_app_pages import goto, new_app, wait_job

    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))
    at = goto(new_app(), "detect")
    at.number_input(key="detect.n_clean").set_value(16)
    at.number_input(key="detect.pool_clean").set_value(12)
    at.run()
    at.button(key="detect.run").click().run()
    assert wait_job(at, "scan").status == "done"
    first = _specs(at)
    assert {"detect.scatter", "detect.grid", "detect.hist"} <= set(first)
    built = _count_builds(monkeypatch)
    from backdoor_core import figures

    for name in ("importance_similarity_scatter", "suspicious_head_grid", "score_histogram"):
        original = getattr(figures, name)
        monkeypatch.setattr(figures, name, lambda *a, _n=name, _o=original, **k: (built.append(_n), _o(*a, **k))[1])
    at.run()
    assert built == [] and _specs(at) == first
    at.session_state["detect.report"] = copy.copy(at.session_state["detect.report"])
    at.run()
    assert {"importance_similarity_scatter", "suspicious_head_grid", "score_histogram"} <= set(built)
    assert _specs(at) == first


def test_the_report_states_its_chart_size_from_the_json_the_save_wrote(monkeypatch, tmp_path_factory, to_json_calls):
    """The Report page wrote every chart as JSON again to state what the charts add; the JSON each record (or the
    first save after a reload) wrote is measured instead: the same number."""
    from backdoor_core.report import chart_bytes, plotly_js_bytes
    from test_app_pages import goto, new_app

    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))
    at = goto(new_app(), "inspect")
    to_json_calls.clear()
    goto(at, "report")
    assert to_json_calls == []
    lab = at.session_state["lab.session"]
    stated = (plotly_js_bytes() + sum(chart_bytes(f.figures) for f in lab.findings if f.figures)) / 1e6
    assert at.toggle(key="report.figures").label == f"Interactive charts (adds about {stated:.1f} MB)"


def _training_chart_builds(monkeypatch) -> list:
    from backdoor_core import figures

    built = []
    original = figures.training_curves
    monkeypatch.setattr(figures, "training_curves", lambda *a, **k: (built.append(1), original(*a, **k))[1])
    return built


def test_a_finished_jobs_training_chart_is_built_once(monkeypatch, tmp_path_factory):
    """The Attack and Sanitize pages built a finished job's training chart at every rerun (and the job panel at
    every poll while it ran, with or without a new event); the chart drawn is the one built before."""
    from test_app_pages import _small_attack, goto, new_app, quick_finetune_repair, wait_job

    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))
    at = goto(new_app(), "attack")
    _small_attack(at)
    at.button(key="attack.train").click().run()
    assert wait_job(at, "attack").status == "done"
    first = _specs(at)
    assert "attack.live.done" in first
    built = _training_chart_builds(monkeypatch)
    at.run()
    at.run()
    assert built == [] and _specs(at) == first
    goto(at, "sanitize")
    quick_finetune_repair(at)
    first = _specs(at)
    assert "sanitize.live.done" in first
    built.clear()
    at.run()
    assert built == [] and _specs(at) == first
