"""Offline HTML and JSON reports: pure-Python checks, then one real-browser check with the network blocked."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from backdoor_core.report import html_report, json_report, markdown_to_html, table_html

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import BROWSER_MISSING_REASON, block_network, browser_available, launch_browser  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _sections(with_html: bool = True):
    fig = go.Figure(go.Heatmap(z=np.arange(6).reshape(2, 3), x=["H0", "H1", "H2"], y=["L0", "L1"]))
    fig.update_layout(title="Concentration")
    sections = [
        {"heading": "Model", "text": "A **backdoored** model with `cf` trigger.\n\n- one\n- two <b>x</b>"},
        {"heading": "Suspicious heads", "table": [{"head": "L1H2", "score": np.float32(0.91234), "n": np.int64(3)}]},
        {"heading": "Heatmap", "figure": fig},
    ]
    if with_html:
        sections.append({"heading": "View", "html": "<!DOCTYPE html><html><body><p id='x'>inner</p></body></html>"})
    return sections


def test_html_is_self_contained_and_has_everything():
    doc = html_report("Scan of <model>", _sections())
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    assert "Scan of &lt;model&gt;" in doc
    assert doc.count("plotly.js v") == 1, "plotly.js inlined exactly once"
    # outside plotly.js itself (whose source mentions its CDN for optional map data) nothing points online
    lowered = re.sub(r"<script[^>]*>\s*/\*\*\s*\* plotly\.js v.*?</script>", "", doc, flags=re.S).lower()
    assert "plotly.js v" not in lowered
    assert not re.search(r"<script[^>]*\bsrc\s*=", lowered), "no external scripts"
    assert "cdn.plot.ly" not in lowered and "cdnjs" not in lowered and "https://" not in lowered
    assert "Content-Security-Policy" in doc
    assert "<strong>backdoored</strong>" in doc and "<code>cf</code>" in doc
    assert "<li>two &lt;b&gt;x&lt;/b&gt;</li>" in doc, "markdown text is escaped"
    assert "L1H2" in doc and "0.9123" in doc
    assert 'srcdoc="&lt;!DOCTYPE html&gt;' in doc, "documents go into an iframe srcdoc"
    assert "Plotly.newPlot" in doc


def test_no_plotly_when_no_figures():
    doc = html_report("Plain", [{"heading": "A", "text": "hello"}])
    assert "plotly.js v" not in doc and len(doc) < 20_000


def test_two_figures_share_one_plotly_copy():
    f = go.Figure(go.Bar(x=[1, 2], y=[3, 4]))
    doc = html_report("Two", [{"heading": "a", "figure": f}, {"heading": "b", "figures": [f, f.to_dict()]}])
    assert doc.count("plotly.js v") == 1 and doc.count("Plotly.newPlot") == 3


def test_bad_sections_are_rejected_clearly():
    with pytest.raises(ValueError, match="unknown keys"):
        html_report("x", [{"heading": "a", "tabel": []}])
    with pytest.raises(TypeError, match="list of dicts"):
        html_report("x", [{"heading": "a", "table": [[1, 2]]}])
    with pytest.raises(TypeError):
        html_report("x", ["not a dict"])


def test_markdown_and_table_helpers():
    out = markdown_to_html("### Title\nline one\nline two\n\n1. a\n2. b\n\n*it* and 3*4*5")
    assert "<h4>Title</h4>" in out and "<ol><li>a</li><li>b</li></ol>" in out
    assert "<em>it</em>" in out and "line one<br>line two" in out
    assert "<em>4</em>" not in out  # arithmetic is not italic
    t = table_html([{"a": 1, "b": [1, 2]}, {"c": float("nan"), "a": True}])
    assert "<th>a</th><th>b</th><th>c</th>" in t and "1, 2" in t and "yes" in t
    assert table_html([]) == "<p><em>(empty table)</em></p>"


def test_json_report_roundtrips():
    text = json_report("Scan", _sections(), extra={"verdict": {"score": np.float64(0.7)}})
    doc = json.loads(text)
    assert doc["title"] == "Scan" and doc["verdict"]["score"] == pytest.approx(0.7)
    assert doc["sections"][1]["table"][0] == {"head": "L1H2", "score": pytest.approx(0.91234, rel=1e-5), "n": 3}
    assert doc["sections"][2]["figures"][0]["data"][0]["type"] == "heatmap"
    assert doc["sections"][3]["html_chars"] > 0 and "html" not in doc["sections"][3]
    slim = json.loads(json_report("Scan", _sections(), include_figures=False))
    assert slim["sections"][2]["figures_omitted"] == 1


@pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)
def test_report_renders_offline_in_chromium(tmp_path):
    from backdoor_core.bertviz_offline import head_view_html

    rng = np.random.default_rng(0)
    att = rng.random((2, 2, 4, 4))
    att /= att.sum(-1, keepdims=True)
    sections = _sections(with_html=False) + [
        {"heading": "bertviz", "html": head_view_html(att, ["[CLS]", "a", "cf", "[SEP]"]), "html_height": 420}
    ]
    path = tmp_path / "report.html"
    path.write_text(html_report("Offline report", sections), encoding="utf-8")
    with launch_browser() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 1900})
        blocked = block_network(page, allow_hosts=())
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_selector(".js-plotly-plot svg.main-svg", timeout=30_000)
        frame = page.frame_locator("iframe.embed")
        frame.locator("svg").first.wait_for(timeout=30_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report_offline.png"), full_page=True)
        assert blocked == [] and errors == []


def test_lab_session_findings_become_report_sections():
    from backdoor_core.session import LabSession

    lab = LabSession()
    lab.set_model({"name": "m", "source": "/x", "layers": 2, "heads": 4, "labels": ["a", "b"], "parameters": 10**6,
                   "metadata": {"attack": "badnets", "trigger": ["cf", "mn"], "asr": 0.98, "tal": True}})
    lab.record("scan", "Scan", text="first")
    lab.record("inspect", "Inspection", table=[{"head": "L0H1"}], figures=[go.Figure()])
    lab.record("scan", "Scan", text="second")  # same key: replaces
    sections = lab.sections()
    assert [s["heading"] for s in sections] == ["Model and data", "Inspection", "Scan"]
    assert sections[2]["text"] == "second"
    model_rows = {r["field"]: r["value"] for r in sections[0]["table"]}
    assert model_rows["trigger"] == "cf, mn" and model_rows["tal"] == "yes" and model_rows["asr"] == "98.0%"
    assert [s["heading"] for s in lab.sections(keys=["scan:Scan"])] == ["Model and data", "Scan"]
    assert "figures" not in lab.sections(include_figures=False)[1]
    d = lab.to_dict()
    assert d["findings"][1]["text"] == "second" and json.dumps(d)
    assert "Scan" in html_report("t", sections)


def test_reports_record_the_tool_version():
    from backdoor_core import __version__

    tool = f"Backdoor Attention Lab {__version__}"
    doc = html_report("Scan", _sections(with_html=False), subtitle="a caller's own subtitle")
    assert f'<meta name="generator" content="{tool}">' in doc
    assert re.search(rf'<footer class="meta">{re.escape(tool)} · generated \d{{4}}-\d\d-\d\d', doc)
    assert f"{tool} · generated" in html_report("Scan", [{"heading": "x", "text": "y"}]).split("<h1>")[1]
    data = json.loads(json_report("Scan", _sections(), include_figures=False))
    assert data["tool"] == "Backdoor Attention Lab" and data["tool_version"] == __version__


def test_an_autosaved_session_forgets_a_removed_finding(tmp_path):
    from backdoor_core.session import LabSession

    path = tmp_path / "session.json"
    lab = LabSession(autosave=str(path))
    lab.record("scan", "Detection scan", text="verdict")
    lab.record("scan", "Inputs with a likely trigger word", text="15 pool inputs")
    assert [f.title for f in LabSession.load(path).findings] == ["Detection scan", "Inputs with a likely trigger word"]
    lab.remove("scan:Inputs with a likely trigger word")
    assert [f.title for f in LabSession.load(path).findings] == ["Detection scan"]
    lab.remove("scan:nothing")  # no such finding: nothing changes
    assert [f.title for f in LabSession.load(path).findings] == ["Detection scan"]


def test_findings_name_their_model_and_one_models_scan_never_replaces_anothers(tmp_path):
    """A scan of a backdoored model, then the current model switched to a clean one and scanned too: the report
    kept only the last scan and showed the first one's verdict under the clean model's "Model and data"."""
    from backdoor_core.session import LabSession

    lab = LabSession()
    lab.set_model({"name": "zoo-clean", "labels": ["a", "b"]})
    lab.record("scan", "Detection scan", model="zoo-badnets-tal", text="Verdict: **likely backdoored**")
    lab.record("scan", "Detection scan", model="zoo-clean", text="Verdict: **no backdoor evidence**")
    lab.record("scan", "Detection scan", model="zoo-clean", text="Verdict: **no backdoor evidence** (again)")
    headings = [s["heading"] for s in lab.sections()]
    assert headings == ["Model and data", "Detection scan — zoo-badnets-tal", "Detection scan — zoo-clean"]
    assert lab.sections()[2]["text"].endswith("(again)")  # the same model's rerun replaced its own scan
    lab.remove("scan:Detection scan", "zoo-clean")
    assert [f.model for f in lab.findings] == ["zoo-badnets-tal"]
    lab.save(tmp_path / "s.json")
    again = LabSession.load(tmp_path / "s.json")
    assert again.findings[0].heading == "Detection scan — zoo-badnets-tal"
    assert again.to_dict()["findings"][0]["model"] == "zoo-badnets-tal"


def test_uniform_columns_makes_a_mixed_column_text():
    from backdoor_core.report import uniform_columns

    rows = [{"metric": "CACC", "value": "94.7%"}, {"metric": "steps", "value": 120}, {"metric": "x", "value": None}]
    fixed = uniform_columns(rows)  # Arrow (st.dataframe) refused the mixed "value" column
    assert [r["value"] for r in fixed] == ["94.7%", "120", None] and [r["metric"] for r in fixed] == ["CACC", "steps", "x"]
    numbers = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]
    assert uniform_columns(numbers) == numbers  # a column of one type is left as it is
