"""Audit of the Report page and what it exports (fifth round): hostile and broken session files, the JSON and
HTML of ticked findings only, the stated size of the charts, unwritable figures, very long names."""

from __future__ import annotations

import json
import math
import re
import secrets
import sys
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from backdoor_core.report import html_report, json_report, uniform_columns
from backdoor_core.session import LabSession

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_pages import _test_env, errors, goto, new_app  # noqa: E402,F401  (_test_env: the tiny model)

NOW = time.time()
EVIL = "<script>alert(1)</script>"


def _finding(title: str, **kw) -> dict:
    return {"kind": "scan", "title": title, "key": f"scan:{title}", "created": NOW, **kw}


def _write_session(path: Path, findings, model=None) -> Path:
    path.write_text(json.dumps({"version": 1, "model": model or {}, "dataset": {}, "findings": findings}),
                    encoding="utf-8")
    return path


def _hostile_findings() -> list:
    chart = go.Figure(go.Bar(x=["a", "b"], y=[1, 2])).to_json()
    return [
        _finding("far future", created=1e20, table=[1, 2]),  # time.localtime overflowed; a table of non-records
        _finding("not a table", table={"a": 1}),
        _finding("twice", text="first"), _finding("twice", text="second"),  # one key twice: the later is kept
        {"kind": "scan", "title": "no key"}, {"kind": "scan", "title": "no key either"},
        _finding("fragment", html=f"<p>hi</p>{EVIL}"),  # not a document: its script would run in the export
        _finding("broken chart", figures=["{not json", chart]),
        _finding("huge number", table=[{"n": 10**30}, {"n": 1}]),  # Arrow (the preview's table) refused it
        _finding("lone \ud800 surrogate", text="\udfff"),  # JSON allows it, UTF-8 does not: page and download failed
        {**_finding("one heading", figures=[chart]), "key": "a"},  # two keys, one heading: the preview's
        {**_finding("one heading", figures=[chart]), "key": "b"},  # chart keys were made of the heading
        "not a finding",
        {"title": "no kind"},
    ]


def test_a_hostile_session_file_loads_what_it_can_and_says_what_it_left_out(tmp_path):
    """One broken part of a saved report threw away the whole report (a chart plotly could not read), or loaded
    and then broke the Report page (a 'created' past year 3000, a table of numbers) or the export (raw HTML)."""
    lab = LabSession.load(_write_session(tmp_path / "s.json", _hostile_findings()))
    titles = [f.title for f in lab.findings]
    assert titles == ["far future", "not a table", "twice", "no key", "no key either", "fragment", "broken chart",
                      "huge number", "lone \ufffd surrogate", "one heading", "one heading"]
    by_title = {f.title: f for f in lab.findings}
    assert by_title["twice"].text == "second"
    assert len({f.key for f in lab.findings}) == len(lab.findings)  # the page keys its checkboxes by them
    assert by_title["far future"].table is None and by_title["not a table"].table is None
    assert abs(by_title["far future"].created - time.time()) < 60
    assert uniform_columns(by_title["huge number"].table) == [{"n": str(10**30)}, {"n": "1"}]
    assert by_title["fragment"].html is None
    assert len(by_title["broken chart"].figures) == 1  # the readable chart stays
    assert len(lab.dropped) == 3 and "broken chart" in lab.dropped[0] and "chart 1" in lab.dropped[0]
    assert "not a finding" not in titles and "no kind" not in titles
    lab.to_dict()  # time.localtime of every finding
    doc = html_report("t", lab.sections())
    assert EVIL not in doc and "<p>hi</p>" not in doc
    doc.encode("utf-8")  # what the download does
    json_report("t", lab.sections(), extra={"session": lab.to_dict()}).encode("utf-8")


def test_a_saved_model_summary_of_the_wrong_types_still_makes_the_model_section():
    """A reloaded summary kept while the current model has its name and source (or fails to load) failed the
    Report page: parameters as text, labels as a number, card warnings as a number."""
    for bad in ({"parameters": "many"}, {"parameters": None}, {"labels": 5}, {"card_warnings": 5}):
        rows = {r["field"]: r["value"] for r in LabSession(model={"name": "m", **bad}).sections()[0]["table"]}
        assert rows["model"] == "m"
    section = LabSession(model={"parameters": "many", "labels": ["a", 1]}).sections()[0]
    rows = {r["field"]: r["value"] for r in section["table"]}
    assert rows["parameters"] == "many" and rows["labels"] == "a, 1"


def test_a_nan_time_and_a_too_deep_file(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text('{"version": 1, "findings": [{"kind": "scan", "title": "x", "created": NaN}]}')
    lab = LabSession.load(path)
    assert math.isfinite(lab.findings[0].created) and lab.to_dict()["findings"][0]["created"]
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # a RecursionError, which no caller caught: every page failed
    with pytest.raises(ValueError, match="nested too deeply"):
        LabSession.load(deep)


def test_a_figure_that_cannot_be_written_does_not_stop_later_saves(tmp_path):
    """A figure plotly cannot write made every later autosave fail (silently): a reload lost all the findings
    recorded after it; it also failed the Report page. A figure given as a dict broke ``record`` itself
    (AttributeError), for good. Now such a figure is left out, in memory as in the file."""

    class Opaque:
        pass

    path = tmp_path / "s.json"
    lab = LabSession(autosave=str(path))
    lab.record("scan", "first", text="a")
    bad = go.Figure(go.Bar(y=[1]))
    bad.layout.meta = Opaque()
    lab.record("scan", "bad chart", figures=[bad, go.Figure(go.Bar(y=[2]))])
    lab.record("scan", "dict chart", figures=[{"data": [{"type": "bar", "y": [3]}]}])
    lab.record("scan", "after", text="c")
    again = LabSession.load(path)
    assert [f.title for f in again.findings] == ["first", "bad chart", "dict chart", "after"]
    assert [len(f.figures) for f in again.findings] == [0, 1, 1, 0]
    assert [len(f.figures) for f in lab.findings] == [0, 1, 1, 0]
    html_report("t", lab.sections())  # the export (and the page's preview) meet no unwritable chart
    lab.findings[0].figures.append(bad)  # one put in place behind record's back: the file is still written
    lab.record("scan", "last", text="d")
    assert [f.title for f in LabSession.load(path).findings][-1] == "last"


def test_the_report_page_survives_a_chart_that_cannot_be_written():
    class Opaque:
        pass

    at = goto(new_app(), "report")
    bad = go.Figure(go.Bar(y=[1]))
    bad.layout.meta = Opaque()
    at.session_state["lab.session"].record("scan", "Bad chart", figures=[bad, go.Figure(go.Bar(y=[2]))])
    at.run()
    assert not at.exception and any("Bad chart" in c.label for c in at.checkbox)


def test_the_json_summary_holds_only_the_ticked_findings():
    lab = LabSession()
    lab.record("scan", "kept", text="shown")
    lab.record("note", "private", text="never exported", data={"secret": np.float32(1)})
    summary = lab.to_dict(keys=["scan:kept"])
    assert [f["title"] for f in summary["findings"]] == ["kept"]
    assert "never exported" not in json.dumps(summary)
    assert [f["title"] for f in lab.to_dict()["findings"]] == ["kept", "private"]


def test_the_stated_chart_size_is_what_the_charts_add():
    """The toggle said "adds about 5 MB" whatever the findings: 200 inspections' charts added 8.6 MB."""
    from backdoor_core.report import chart_bytes, plotly_js_bytes

    rng = np.random.default_rng(0)
    figs = [go.Figure(go.Heatmap(z=rng.random((60, 60)))) for _ in range(40)]
    with_charts = len(html_report("x", [{"heading": "a", "figures": figs}]).encode())
    without = len(html_report("x", [{"heading": "a"}]).encode())
    stated = plotly_js_bytes() + chart_bytes(figs)
    assert abs(stated - (with_charts - without)) < 0.02 * (with_charts - without)
    assert with_charts - without > 5.5e6  # more than the fixed "about 5 MB" said


def test_long_names_wrap_in_the_exported_page():
    doc = html_report("x" * 3000, [{"heading": "y" * 3000, "table": [{"cell": "z" * 3000}]}])
    css = doc.split("<style>")[1].split("</style>")[0]
    rule = re.search(r"([^{}]*)\{[^}]*overflow-wrap:\s*anywhere", css)
    assert rule and {"h1", "h2", "td", "li"} <= set(re.findall(r"[\w.]+", rule.group(1)))


# ----------------------------------------------------------------------------------------------- the page


@pytest.fixture()
def downloads(monkeypatch):
    """The callables the page gives its download buttons (``data=build_json``), by the buttons' file ids."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    calls: dict = {}
    original = MediaFileManager.add_deferred

    def spy(self, data_callable, *args, **kwargs):
        file_id = original(self, data_callable, *args, **kwargs)
        calls[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)
    return calls


def _download(at, calls: dict, label: str) -> str:
    button = next(b for b in at.get("download_button") if b.proto.label == label)
    return calls[button.proto.deferred_file_id]()


def test_a_hostile_saved_report_opens_on_the_report_page_with_a_warning(monkeypatch, tmp_path):
    """A reload read back a report with one key twice (or two findings without a key) and the Report page failed
    with Streamlit's duplicate-key error; a 'created' past year 3000 failed it with an OverflowError."""
    from app_pages import _state

    monkeypatch.setenv(_state.SESSIONS_ENV, str(tmp_path))
    sid = secrets.token_hex(16)
    _write_session(tmp_path / f"{sid}.json", _hostile_findings())
    at = goto(new_app(sid), "report")
    assert not errors(at)
    labels = [c.label for c in at.checkbox]
    assert sum("twice" in x for x in labels) == 1 and any("far future" in x for x in labels)
    assert any("could not be read back" in w.value and "broken chart" in w.value for w in at.warning)


@pytest.mark.parametrize("content", ['{"version": 1, "findings": [{"kind": "inspect", "ti', "not json at all"])
def test_a_saved_report_that_cannot_be_read_is_kept_aside_and_said(monkeypatch, tmp_path, content):
    """A truncated or non-JSON saved report: the reload started an empty report without a word, and its first
    autosave wrote over the file, so nothing could be recovered. Now the file is renamed beside it
    (``<id>.json.broken-<time>``) and the Report page says so."""
    from app_pages import _state

    monkeypatch.setenv(_state.SESSIONS_ENV, str(tmp_path))
    sid = secrets.token_hex(16)
    (tmp_path / f"{sid}.json").write_text(content, encoding="utf-8")
    at = goto(new_app(sid), "report")
    assert not errors(at) and at.session_state["lab.session_id"] == sid
    kept = list(tmp_path.glob(f"{sid}.json.broken-*"))
    assert len(kept) == 1 and kept[0].read_text(encoding="utf-8") == content
    assert any("could not be read" in w.value and kept[0].name in w.value for w in at.warning), \
        [w.value for w in at.warning]
    goto(at, "inspect")  # a new finding is saved as the tab's report; the broken file stays as it was
    assert kept[0].read_text(encoding="utf-8") == content


def test_a_saved_report_too_large_to_be_one_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from backdoor_core import session as S

    path = tmp_path / "big.json"
    path.write_text('{"version": 1, "findings": []}' + " " * 2000, encoding="utf-8")
    monkeypatch.setattr(S, "MAX_SESSION_BYTES", 1000)
    with pytest.raises(ValueError, match="more than a saved lab session holds"):
        S.LabSession.load(path)


def test_unticked_findings_stay_out_of_both_files_and_a_blank_title_gets_the_default(downloads):
    at = goto(new_app(), "inspect")
    at.session_state["lab.session"].record("note", "Private note", text="do not export me")
    goto(at, "report")
    assert any("Private note" in c.label for c in at.checkbox)
    at.checkbox(key="report.inc.note:Private note").uncheck().run()
    at.text_input(key="report.title").input("   ").run()
    doc = json.loads(_download(at, downloads, "JSON"))
    assert "do not export me" not in json.dumps(doc) and "Private note" not in json.dumps(doc)
    assert doc["title"] == "Backdoor Attention Lab — findings"
    titles = [f["title"] for f in doc["session"]["findings"]]
    assert "Inspection" in titles and "Private note" not in titles
    page = _download(at, downloads, "HTML report (offline)")
    assert "do not export me" not in page and "<title>Backdoor Attention Lab — findings</title>" in page


def test_the_chart_toggle_states_the_size_of_the_ticked_findings_charts():
    at = goto(new_app(), "report")
    lab = at.session_state["lab.session"]
    lab.record("note", "Words only", text="no chart")
    at.run()
    assert [t.label for t in at.toggle][0] == "Interactive charts (none in the ticked findings)"
    fig = go.Figure(go.Heatmap(z=np.random.default_rng(0).random((60, 60))))
    for i in range(30):
        lab.record("inspect", f"Chart {i}", figures=[fig, fig])
    at.run()
    label = at.toggle[0].label
    mb = float(label.split("about ")[1].split(" MB")[0])
    doc = html_report("t", lab.sections())
    without = html_report("t", lab.sections(include_figures=False))
    assert abs(mb - (len(doc.encode()) - len(without.encode())) / 1e6) < 0.2
    assert mb > 6  # the fixed label said "about 5 MB"


def test_bidirectional_controls_in_names_show_instead_of_reordering_the_text():
    """A right-to-left override (U+202E) in a model or finding name reversed the rest of its heading in the exported
    report and on the pages ("evil" read as "live"). Now such controls show as ``‹U+202E›``; right-to-left text
    itself keeps its direction."""
    from app_pages._text import h, md, md_code

    rlo, hebrew = "\u202e", "\u05e9\u05dc\u05d5\u05dd"
    lab = LabSession()
    lab.record("inspect", f"Model {rlo}live", text=f"trigger {rlo}cf and {hebrew}", table=[{"name": f"a{rlo}b"}])
    doc = html_report(f"report {rlo}x", lab.sections())
    assert rlo not in doc and doc.count("\u2039U+202E\u203a") >= 4
    assert hebrew in doc
    for shown in (md(f"x{rlo}y"), h(f"x{rlo}y"), md_code(f"x{rlo}y"), md("\u2066a\u2069")):
        assert not re.search("[\u202a-\u202e\u2066-\u2069]", shown) and "U+" in shown, shown
    assert md(hebrew) == hebrew
