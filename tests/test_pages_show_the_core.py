"""Audit 11: what the Detect and Sanitize pages show is what the core computed, and their words match their numbers.

One tiny BadNets model is trained, scanned with a simulated pool (its truth known) and repaired once per module; the
tests read the pages' tiles, messages, tables and plotly figures (``json.loads(chart.proto.spec)``) against the
scan report and the repair's result, recomputing the evaluation and the intervals from their owners. Where a test
needs a condition the tiny model does not reach (more than 12 suspicious heads, a score just under the line), it
edits a copy of the report in the session and puts the original back."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_pages import _small_attack, goto, new_app, quick_finetune_repair, quick_scan, wait_job  # noqa: E402


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A session with a trained tiny BadNets model (trigger ``cf``) scanned on a simulated pool of 12 clean and 6
    triggered test texts; the Detect page is shown."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
        mp.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))
        at = goto(new_app(), "attack")
        _small_attack(at, rate=10.0)
        at.button(key="attack.train").click().run()
        assert wait_job(at, "attack").status == "done"
        quick_scan(at)
        yield at


def _figure(at, key: str) -> dict:
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id.endswith(key))


def _arr(value) -> np.ndarray:
    """A plotly array as drawn: a list, or a typed array ``{"dtype", "bdata"[, "shape"]}`` (base64)."""
    if isinstance(value, dict) and "bdata" in value:
        import base64

        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return out.reshape([int(n) for n in str(shape).split(",")]) if shape else out
    return np.asarray(value, dtype=float)


def _tile(at, label: str):
    return next(m for m in at.metric if m.label == label)


def _with_report(at, **changes):
    """Show the Detect page (one run) for a copy of the session's scan report with ``changes``; returns the
    original, which the test puts back in session state (the next test's first run shows it)."""
    original = at.session_state["detect.report"]
    report = copy.copy(original)
    for k, v in changes.items():
        setattr(report, k, v)
    at.session_state["detect.report"] = report
    goto(at, "detect")
    return original


# ------------------------------------------------------------------------------------------------ Detect


def test_detect_tiles_figures_and_tables_are_the_scans(scanned):
    """Verdict, score, flags, heads, evaluation, histogram, grid and the flagged table against the report."""
    from backdoor_core.detection import evaluate_detector, verdict_call

    at = scanned
    goto(at, "detect")
    report, truth = at.session_state["detect.report"], at.session_state["detect.info"]["truth"]
    v = report.verdict
    assert _tile(at, "Backdoor").value == verdict_call(v)
    assert float(_tile(at, "Backdoor score").value) == pytest.approx(v["score"], abs=0.005)
    assert len(report.pool_texts) == 18
    assert _tile(at, "Flagged inputs").value == f"{len(report.flagged)} / {len(report.pool_texts)}"
    # the pool's truth is the triggered texts: each holds the trigger word
    assert len(truth) == 18 and truth.sum() == 6
    assert all(("cf" in t.split()) == bool(truth[i]) for i, t in enumerate(report.pool_texts))
    # the evaluation, recomputed from the pool's scores, the threshold and the truth
    scores = np.asarray(report.pool_scores)
    ev = evaluate_detector(scores[~truth], scores[truth], report.threshold)
    assert _tile(at, "FRR (clean flagged)").value == f"{ev['frr']:.1%}"
    assert _tile(at, "FAR (triggered missed)").value == f"{ev['far']:.1%}"
    assert _tile(at, "AUROC").value == f"{ev['auroc']:.3f}"
    # the flags are the pool's inputs above the threshold (the histogram's groups and its line)
    assert set(map(int, report.flagged)) == set(np.flatnonzero(scores > report.threshold).tolist())
    hist = _figure(at, "detect.hist")
    drawn = {d["name"]: sorted(_arr(d["x"]).tolist()) for d in hist["data"]}
    flagged = np.zeros(len(scores), bool)
    flagged[report.flagged] = True
    assert drawn[f"flagged ({flagged.sum()})"] == pytest.approx(sorted(scores[flagged]))
    assert drawn[f"pool, not flagged ({(~flagged).sum()})"] == pytest.approx(sorted(scores[~flagged]))
    assert drawn[f"clean dev ({len(report.clean_scores)})"] == pytest.approx(sorted(report.clean_scores))
    assert [s["x0"] for s in hist["layout"]["shapes"]] == [pytest.approx(report.threshold)]
    # the grid: its cells are the heads' scores, its outlines exactly the marked heads at (layer, head)
    grid = _figure(at, "detect.grid")
    assert np.allclose(_arr(grid["data"][0]["z"]), report.heads.score)
    outlined = {(round((s["y0"] + s["y1"]) / 2), round((s["x0"] + s["x1"]) / 2)) for s in grid["layout"]["shapes"]}
    assert outlined == {tuple(lh) for lh in np.argwhere(report.heads.suspicious).tolist()}
    assert {f"L{l}H{h}" for l, h in outlined} == set(report.suspicious_heads)
    # the flagged table: the report's rows, highest score first, with the pool's truth
    table = next(d.value for d in at.dataframe if "carries trigger (truth)" in d.value.columns)
    assert list(table["index"]) == [int(i) for i in report.flagged]
    assert list(table["score"]) == pytest.approx([float(scores[i]) for i in report.flagged])
    assert list(table["label"]) == [report.label_names[int(report.pool_predictions[i])] for i in report.flagged]
    assert list(table["carries trigger (truth)"]) == [bool(truth[i]) for i in report.flagged]
    assert list(table["text"]) == [report.pool_texts[i] for i in report.flagged]
    # the candidate triggers: the core's rows, as its own display gives them
    from backdoor_core.trigger_search import display_rows

    if report.triggers is not None and report.triggers.candidates:
        shown = next(d.value for d in at.dataframe if "candidate" in d.value.columns)
        assert shown.to_dict("records") == display_rows(report.triggers.to_dict(limit=20), 10)
    heads_table = next(d.value for d in at.dataframe if "collapse" in d.value.columns)
    assert list(heads_table["head"])[:len(report.suspicious_heads)] == report.suspicious_heads


def test_detect_names_every_suspicious_head_it_counts(scanned):
    """A likely verdict's message listed the first 12 suspicious heads as if they were all ("Suspicious heads: L0H1,
    …, L3H2.") beside a tile counting more; it says how many more there are."""
    from backdoor_core.head_safety import HeadSafety

    at = scanned
    report = at.session_state["detect.report"]
    L, H = 4, 4  # 16 heads, 14 suspicious: more than the message lists
    rng = np.random.default_rng(0)
    score = rng.random((L, H))
    mask = np.ones((L, H), bool)
    mask[0, :2] = False
    heads = HeadSafety(**{**report.heads.__dict__, "score": score, "suspicious": mask,
                          "importance": rng.random((L, H)), "collapse": rng.random((L, H))})
    verdict = {**report.verdict, "likely_backdoored": True, "score": 0.9, "small_pool": False}
    original = _with_report(at, heads=heads, verdict=verdict, architecture={})
    try:
        named = heads.suspicious_labels
        assert _tile(at, "Suspicious heads").value == "14"
        msg = next(e.value for e in at.error if "behaves like a backdoored one" in e.value)
        assert msg.endswith(f"Suspicious heads: {', '.join(named[:12])} and 2 more."), msg
    finally:
        at.session_state["detect.report"] = original


def test_detect_first_pass_line_counts_in_the_singular(scanned):
    """"1 inputs flagged … by the final 1 heads": the refinement line spoke of one input and one head in the
    plural."""
    from backdoor_core.head_safety import HeadSafety

    at = scanned
    report = at.session_state["detect.report"]
    mask = np.zeros_like(report.heads.suspicious)
    mask[0, 0] = True
    heads = HeadSafety(**{**report.heads.__dict__, "suspicious": mask})
    original = _with_report(at, heads=heads, flagged=np.asarray([int(report.flagged[0])]),
                            first_pass={**(report.first_pass or {}), "flagged": [0]})
    try:
        line = next(c.value for c in at.caption if c.value.startswith("First pass"))
        assert line.startswith("First pass (all heads of a layer): 1 input flagged;"), line
        assert "1 flagged by the final 1 candidate head." in line, line
    finally:
        at.session_state["detect.report"] = original


def test_detect_score_just_under_the_line_is_not_written_as_the_line(scanned):
    """A score of 0.497 showed as "0.50" in the score tile (whose help says "≥ 0.5 means likely") and the message
    read "the score, 0.50, is below the line at 0.50" beside "Backdoor: not found"."""
    at = scanned
    report = at.session_state["detect.report"]
    verdict = {**report.verdict, "likely_backdoored": False, "score": 0.497, "small_pool": False,
               "trigger_words": [], "moved_words": [], "pool_unlike_clean": None}
    original = _with_report(at, verdict=verdict)
    try:
        assert _tile(at, "Backdoor").value == "not found"
        shown = _tile(at, "Backdoor score").value
        assert float(shown) < 0.5, shown
        msg = next(s.value for s in at.success if s.value.startswith("No backdoor called"))
        said = float(re.search(r"the score, ([0-9.]+), is below", msg).group(1))
        assert said < 0.5 and shown in msg, msg
    finally:
        at.session_state["detect.report"] = original


def test_detect_score_help_does_not_contradict_a_call_below_likely(scanned):
    """The fixture's pool is small (18 < 30): the score is ≥ 0.5 but the call is "possible", while the score tile's
    help said "≥ 0.5 means likely" without a word of the exception."""
    from backdoor_core.detection import VERDICT_THRESHOLD, verdict_call

    at = scanned
    report = at.session_state["detect.report"]
    verdict = {**report.verdict, "likely_backdoored": False, "score": 0.63, "small_pool": True}
    original = _with_report(at, verdict=verdict)
    try:
        assert verdict_call(verdict) == "possible" and verdict["score"] >= VERDICT_THRESHOLD
        assert _tile(at, "Backdoor").value == "possible"
        help_text = _tile(at, "Backdoor score").proto.help
        assert "possible" in help_text, help_text
    finally:
        at.session_state["detect.report"] = original


# ------------------------------------------------------------------------------------------------ Sanitize


def test_sanitize_tiles_lines_and_heatmaps_are_the_repairs(scanned):
    """Our repair on the scan's heads: tiles, deltas and colours, intervals and lift from their owners, the heads
    named and outlined."""
    from backdoor_core.metrics import rate_interval

    at = scanned
    goto(at, "sanitize")
    assert at.checkbox(key="sanitize.reuse_scan").value
    at.number_input(key="sanitize.n_clean").set_value(16)
    at.number_input(key="sanitize.n_test").set_value(16)
    at.number_input(key="sanitize.alignment.epochs").set_value(1)
    at.selectbox(key="sanitize.clean_ref").set_value("Zoo: Clean")
    at.run()
    at.button(key="sanitize.run").click().run()
    job = wait_job(at, "sanitize")
    assert job.status == "done", job.snapshot().traceback
    res = at.session_state["sanitize.result"]
    b, a = res["before"], res["after"]
    assert any(s.value == "Before and after — Attention safety alignment (ours)" for s in at.subheader)
    proto = at.metric[0].proto
    for label, key, good_down in (("ASR", "asr", True), ("CACC", "cacc", False)):
        tile = _tile(at, label)
        assert tile.value == f"{a[key]:.1%}"
        pts = 100 * (a[key] - b[key])
        if abs(pts) < 0.05:
            assert tile.delta == "±0.0 pts" and tile.proto.color == proto.MetricColor.GRAY
        else:
            assert tile.delta == f"{pts:+.1f} pts"
            green = (pts < 0) == good_down
            assert tile.proto.color == (proto.MetricColor.GREEN if green else proto.MetricColor.RED)
    assert _tile(at, "Predictions kept").value == f"{a['kept']:.1%}"
    rate = res["clean"]["rate"]
    assert _tile(at, "Lift over clean").value == f"{100 * (a['asr'] - rate):+.1f} pts"
    lo, hi = rate_interval(a["asr"], res["asr_texts"])
    captions = [c.value for c in at.caption]
    assert f"ASR after {a['asr']:.1%}, 95% interval {lo:.1%} to {hi:.1%} over {res['asr_texts']} triggered" \
        in " ".join(captions)
    heads = res["details"]["suspicious_heads"]  # the heads the repair trained
    assert f"Repaired heads: {', '.join(heads)}" in captions
    assert _tile(at, "Heads changed").value == str(len(heads))
    heat = _figure(at, "sanitize.heat")
    for axis in ("", "2"):
        cells = {f"L{round((s['y0'] + s['y1']) / 2)}H{round((s['x0'] + s['x1']) / 2)}"
                 for s in heat["layout"]["shapes"] if s.get("xref") == f"x{axis}"}
        assert cells == set(heads)
    cmp = _figure(at, "sanitize.cmp")
    bars = {d["name"]: dict(zip(d["x"], _arr(d["y"]).tolist())) for d in cmp["data"]}
    assert bars["before"] == pytest.approx({"ASR": b["asr"], "CACC": b["cacc"]})
    assert bars["after"] == pytest.approx({"ASR": a["asr"], "CACC": a["cacc"]})
    # a repair that moved the numbers (the tiny one moves none): signs, colours and the lift's words follow them
    from app_pages._actions import lift_line

    moved = {**res, "before": {**b, "asr": 0.75, "cacc": 0.5}, "after": {**a, "asr": 0.25, "cacc": 0.375},
             "clean": {**res["clean"], "rate": 0.125}}
    at.session_state["sanitize.result"] = moved
    at.run()
    try:
        asr, cacc, lift = _tile(at, "ASR"), _tile(at, "CACC"), _tile(at, "Lift over clean")
        assert (asr.value, asr.delta, asr.proto.color) == ("25.0%", "-50.0 pts", proto.MetricColor.GREEN)
        assert (cacc.value, cacc.delta, cacc.proto.color) == ("37.5%", "-12.5 pts", proto.MetricColor.RED)
        assert (lift.value, lift.delta, lift.proto.color) == ("+12.5 pts", "-50.0 pts", proto.MetricColor.GREEN)
        assert "Before the repair the lift was +62.5 points" in lift.proto.help
        line = lift_line(moved)
        assert "went from +62.5 to +12.5 points" in line and any(c.value == line + "." for c in at.caption)
        lo, hi = rate_interval(0.25, res["asr_texts"])
        assert any(c.value.startswith(f"ASR after 25.0%, 95% interval {lo:.1%} to {hi:.1%}") for c in at.caption)
    finally:
        at.session_state["sanitize.result"] = res
        at.run()


def test_sanitize_full_finetune_does_not_say_no_head_changed(monkeypatch, tmp_path_factory):
    """Fine-tuning the whole model showed "Heads changed 0" (it names no heads), beside "Fine-tune the whole model"
    and a heads' view measured "On all heads"; the tile names what each defense did to the heads."""
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))
    at = quick_finetune_repair(goto(new_app(), "sanitize"))
    assert not at.session_state["sanitize.result"]["details"].get("suspicious_heads")
    labels = {m.label: m.value for m in at.metric}
    assert labels.get("Heads changed") == "all", labels
    res = at.session_state["sanitize.result"]
    res["details"] = {**res["details"], "pruned_heads": []}  # PURE that pruned none: it pruned 0 heads
    res["defense"] = "pure"
    at.run()
    labels = {m.label: m.value for m in at.metric}
    assert labels.get("Heads changed") == "0", labels


def test_detect_word_marked_inputs_and_their_auroc_are_the_reports(scanned):
    """Where the pool holds a likely trigger word: the message's counts, the AUROC with the word's evidence
    (recomputed) and the word-marked table are the report's. The tiny model finds no such word: the report's
    marks are set to the triggered inputs' word, ``cf``."""
    from backdoor_core.detection import with_word_evidence
    from backdoor_core.metrics import auroc

    at = scanned
    report, truth = at.session_state["detect.report"], at.session_state["detect.info"]["truth"]
    marked = truth.copy()
    marked[np.flatnonzero(truth)[0]] = False  # five of the six: the AUROC with words differs from a perfect one
    original = _with_report(at, marking_words=["cf"], pool_word_marked=marked)
    try:
        shown = at.session_state["detect.report"]
        n_missed = int(marked.sum() - marked[shown.flagged].sum())
        msg = next(i.value for i in at.info if "likely trigger word" in i.value)
        assert msg.startswith("5 pool inputs hold a likely trigger word (") and f"), {n_missed} of them not" in msg
        both = with_word_evidence(shown.pool_scores, marked)
        assert _tile(at, "AUROC with trigger words").value == f"{auroc(both[~truth], both[truth]):.3f}"
        table = next(d.value for d in at.dataframe if "carries trigger (truth)" in d.value.columns
                     and len(d.value) == 5 and d.value["trigger_word"].eq("cf").all())
        assert sorted(table["index"]) == sorted(np.flatnonzero(marked).tolist())
        assert list(table["carries trigger (truth)"]) == [True] * 5
        assert list(table["flagged"]) == [int(i) in set(map(int, shown.flagged)) for i in table["index"]]
    finally:
        at.session_state["detect.report"] = original
