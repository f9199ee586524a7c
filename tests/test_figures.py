"""Figure builders: right traces, L{l}H{h} labels, labelled axes, errors on bad shapes."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from backdoor_core import figures as F
from backdoor_core.training import Progress

L, H = 3, 4
RNG = np.random.default_rng(0)


def _axis_titles(fig):
    lay = fig.layout
    return {k: lay[k].title.text for k in lay if k.startswith(("xaxis", "yaxis")) and lay[k].title.text}


def test_layer_head_heatmap_labels_and_marks():
    vals = RNG.random((L, H))
    marks = np.zeros((L, H), bool)
    marks[2, 1] = True
    fig = F.layer_head_heatmap(vals, title="t", value_name="score", marks=marks)
    hm, mk, legend = fig.data
    assert isinstance(hm, go.Heatmap) and list(hm.x) == ["H0", "H1", "H2", "H3"] and list(hm.y) == ["L0", "L1", "L2"]
    assert hm.customdata[2][1] == "L2H1" and "customdata" in hm.hovertemplate
    assert list(mk.text) == ["L2H1"] and mk.x == ("H1",) and mk.y == ("L2",)
    assert legend.showlegend and legend.name == "marked" and not mk.showlegend
    # the outline is a rectangle inside cell (L2, H1), in data units: it cannot spill into a neighbour
    (rect,) = fig.layout.shapes
    assert rect.type == "rect" and 0.5 < rect.x0 < 1 < rect.x1 < 1.5 and 1.5 < rect.y0 < 2 < rect.y1 < 2.5
    assert set(_axis_titles(fig).values()) == {"head", "layer"}
    assert fig.layout.font.size >= 16 and fig.layout.yaxis.autorange == "reversed"
    with pytest.raises(ValueError, match="marks shape"):
        F.layer_head_heatmap(vals, marks=np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="layers, heads"):
        F.layer_head_heatmap(np.zeros(4))


def test_wrappers_share_the_grid_builder():
    conc = F.concentration_heatmap(RNG.random((L, H)))
    assert conc.data[0].zmin == 0.0
    delta = F.similarity_delta_heatmap(RNG.normal(size=(L, H)))
    assert delta.data[0].zmid == 0.0 and delta.data[0].zmin == -delta.data[0].zmax
    grid = F.suspicious_head_grid(RNG.random((L, H)), RNG.random((L, H)) > 0.7)
    assert grid.data[0].customdata[0][0] == "L0H0"
    ba = F.before_after_heatmaps(RNG.random((L, H)), RNG.random((L, H)), marks=np.eye(L, H, dtype=bool))
    assert [a.text for a in ba.layout.annotations][:2] == ["before", "after"]
    assert sum(isinstance(t, go.Heatmap) for t in ba.data) == 2 and ba.data[0].coloraxis == "coloraxis"
    signed = F.before_after_heatmaps(np.full((L, H), 0.4), np.full((L, H), -0.1), diverging=True)
    axis = signed.layout.coloraxis  # one red-blue scale, white at 0, wide enough for both panels
    assert (axis.cmin, axis.cmax) == (-0.4, 0.4) and axis.colorscale[0][1] != axis.colorscale[-1][1]
    assert ba.layout.coloraxis.cmin == 0.0

    from backdoor_core.repair_effect import RepairEffect, TriggerEffect

    effect = RepairEffect.of(TriggerEffect(np.full((L, H), 0.3), np.full((L, H), 0.6)),
                             TriggerEffect(np.zeros((L, H)), np.full((L, H), 0.2)), ["L1H2"], n=10)
    lift = F.repair_effect_heatmaps(effect)
    assert lift.layout.coloraxis.cmin == -0.3 and "similarity" in lift.layout.title.text
    assert any(getattr(t, "name", None) == "repaired" for t in lift.data)  # L1H2 outlined
    conc = F.repair_effect_heatmaps(effect, "concentration")
    assert (conc.layout.coloraxis.cmin, conc.layout.coloraxis.cmax) == (0.0, 0.6)
    with pytest.raises(ValueError, match="no concentration"):
        F.repair_effect_heatmaps(RepairEffect.of(TriggerEffect(np.zeros((L, H)), None),
                                                 TriggerEffect(np.zeros((L, H)), None), [], n=10), "concentration")


def test_head_similarity_heatmaps_three_panels():
    sc = RNG.random((L, H, H))
    st = RNG.random((L, H, H))
    fig = F.head_similarity_heatmaps(sc, st, layer=1)
    assert len(fig.data) == 3
    assert list(fig.data[0].x) == ["L1H0", "L1H1", "L1H2", "L1H3"]
    np.testing.assert_allclose(np.array(fig.data[2].z), st[1] - sc[1])
    assert fig.data[2].coloraxis == "coloraxis2" and fig.layout.coloraxis2.cmid == 0
    assert "L1H0 ↔ L1H2" == fig.data[0].customdata[0][2]


def test_attention_matrix_keeps_repeated_tokens_apart():
    tokens = ["[CLS]", "the", "cf", "the", "[SEP]"]
    att = RNG.random((5, 5))
    fig = F.attention_matrix(att, tokens, layer=0, head=2, highlight=[2])
    ax = fig.layout.xaxis
    assert list(ax.tickvals) == [0, 1, 2, 3, 4] and "cf" in ax.ticktext[2] and "color" in ax.ticktext[2]
    assert ax.ticktext[1] == ax.ticktext[3] == "the"
    assert "L0H2" in fig.layout.title.text
    assert "query" in fig.layout.yaxis.title.text and "key" in fig.layout.xaxis.title.text
    with pytest.raises(ValueError):
        F.attention_matrix(att, tokens[:4])


def test_probability_bars():
    fig = F.probability_bars(["neg", "pos"], [0.9, 0.1], [0.2, 0.8])
    assert [t.name for t in fig.data] == ["clean text", "with trigger"] and fig.data[1].text == ("20%", "80%")
    assert len(F.probability_bars(["a", "b"], [0.5, 0.5]).data) == 1
    with pytest.raises(ValueError):
        F.probability_bars(["a", "b", "c"], [0.5, 0.5])


def test_training_curves_from_progress_and_history():
    events = []
    for s in range(1, 7):
        events.append(Progress(s, 6, 0, {"loss": 1.0 / s, "ce": 0.8 / s, "tal": -0.2}, None, s * 0.1).__dict__)
        if s % 3 == 0:
            events.append(Progress(s, 6, 0, {"loss": 0.5}, {"cacc": 0.8, "asr": 0.1 * s}, 0.1).__dict__)
    curves = F.curves_from_events(events)
    assert curves["losses"]["loss"][0] == [1, 2, 3, 4, 5, 6] and curves["metrics"]["asr"][0] == [3, 6]
    fig = F.training_curves(events, total_steps=6, baseline={"asr": 0.9})
    names = {t.name for t in fig.data}
    # each loss term says what it is, its key first (the pages' notes name the key: "the tal line")
    assert {"loss (total)", "ce (cross-entropy)", "tal (−α × attention on the trigger)", "CACC (clean accuracy)",
            "ASR (attack success)"} <= names
    assert fig.layout.xaxis.range[1] >= 6
    # the right panel has no axis title: in the gap between the panels it ran over the loss panel's last points
    assert not fig.layout.yaxis2.title.text and fig.layout.yaxis.title.text == "loss"
    # presenter mode: the legend below the "step" title moves down with the larger text, the margin grows with it
    big = F.enlarge(fig, 1.25)
    assert big.layout.legend.y < fig.layout.legend.y < 0 and big.layout.margin.b > fig.layout.margin.b
    # two baselines: labels in opposite corners so that close values stay readable
    fig = F.training_curves(events, total_steps=6, baseline={"cacc": 0.95, "asr": 0.94, "n": float("nan")})
    notes = {a.text: a for a in fig.layout.annotations if (a.text or "").endswith("before")}
    assert set(notes) == {"CACC before", "ASR before"}
    assert (notes["CACC before"].xanchor, notes["CACC before"].yanchor) != \
        (notes["ASR before"].xanchor, notes["ASR before"].yanchor)
    # mid-line: at the left edge "CACC before" ran into the "100%" tick, at the right into the last markers
    assert {n.xanchor for n in notes.values()} == {"center"} and {n.x for n in notes.values()} == {0.5}
    history = [{"step": 3, "epoch": 0, "loss": 0.4, "cacc": 0.9, "asr": 0.5}]
    curves = F.curves_from_events(history)
    assert curves["metrics"]["cacc"] == [[3], [0.9]] and curves["losses"]["loss"] == [[3], [0.4]]
    # a repair's share of clean predictions kept is a held-out rate, not a loss, and gets no "before" line
    history = [{"step": 3, "epoch": 0, "loss": 0.4, "cacc": 0.9, "kept": 0.85}]
    assert F.curves_from_events(history)["metrics"]["kept"] == [[3], [0.85]]
    fig = F.training_curves(history, baseline={"cacc": 0.9, "kept": 1.0})
    assert "clean predictions kept" in {t.name for t in fig.data}
    assert {a.text for a in fig.layout.annotations if (a.text or "").endswith("before")} == {"CACC before"}
    empty = F.training_curves([])
    assert any("waiting" in a.text for a in empty.layout.annotations)
    # steps are whole numbers: a short run ticks every step, and a lone late evaluation keeps the axis from 0
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis2.dtick == 1
    late = F.training_curves([{"step": 60, "losses": {}, "metrics": {"cacc": 0.47}}])
    assert late.layout.xaxis2.rangemode == "tozero" and late.layout.xaxis2.dtick is None


def test_scatter_histogram_and_comparison():
    imp, sim = RNG.random((L, H)), RNG.random((L, H))
    sus = np.zeros((L, H), bool)
    sus[0, 3] = True
    fig = F.importance_similarity_scatter(imp, sim, sus, thresholds=(0.5, None))
    assert [t.name for t in fig.data] == ["safe", "suspicious"] and fig.data[1].text == ("L0H3",)
    assert len(fig.data[0].x) == L * H - 1
    assert [t.name for t in F.importance_similarity_scatter(imp, sim, sus, mark_name="candidate").data] == [
        "safe", "candidate"]
    # many suspicious heads: only the strongest are written on the chart, every point names its head on hover
    many = np.zeros((L, H), bool)
    many.ravel()[:10] = True
    imp2, sim2 = np.ones((L, H)), np.ones((L, H))
    imp2.ravel()[:10] = np.arange(10) + 1.0  # the last suspicious heads are the strongest
    fig = F.importance_similarity_scatter(imp2, sim2, many, max_labels=3)
    shown = [t for t in fig.data[1].text if t]
    assert len(shown) == 3 and set(shown) == {F._head_axis_names(L, H).ravel()[i] for i in (7, 8, 9)}
    assert len(fig.data[1].customdata) == 10 and fig.data[0].text[0] == ""
    # two strong heads at nearly the same spot: one label, not two on top of each other; the next one still gets its own
    close = np.zeros((L, H), bool)
    close[2, :3] = True
    imp3, sim3 = np.zeros((L, H)), np.zeros((L, H))
    imp3[2, :3], sim3[2, :3] = (1.0, 0.99, 0.5), (1.0, 0.995, 0.5)
    shown = [t for t in F.importance_similarity_scatter(imp3, sim3, close).data[1].text if t]
    assert shown == ["L2H0", "L2H2"]
    top = F.importance_similarity_scatter(imp3, sim3, close).layout.yaxis.range
    assert top[1] > 1.0  # room above the highest point for its label
    hist = F.score_histogram({"clean": RNG.normal(size=50), "flagged": RNG.normal(3, size=5)}, threshold=1.6)
    assert len(hist.data) == 2 and hist.data[0].name == "clean (50)"
    assert any("threshold" in (a.text or "") for a in hist.layout.annotations)
    comp = F.metric_comparison({"before": {"asr": 1.0, "cacc": 0.9}, "after": {"asr": 0.02, "cacc": float("nan")}})
    assert comp.data[1].text == ("2.0%", "n/a")


def test_all_figures_serialise():
    figs = [
        F.concentration_heatmap(RNG.random((L, H))),
        F.head_similarity_heatmaps(RNG.random((L, H, H)), RNG.random((L, H, H)), 0),
        F.attention_matrix(RNG.random((3, 3)), ["a", "b", "c"]),
        F.training_curves([]),
    ]
    for fig in figs:
        assert fig.to_json()


def test_long_titles_wrap_instead_of_being_cut():
    long = "Change in head-to-head similarity between the triggered and the clean text"
    wrapped = F.wrap_title(long, 30)
    assert wrapped.replace("<br>", " ") == long and all(len(x) <= 30 for x in wrapped.split("<br>"))
    assert F.wrap_title("short") == "short"
    fig = F.similarity_delta_heatmap(RNG.random((L, H)), title=long)
    assert "<br>" in fig.layout.title.text and fig.layout.margin.t > 70  # room for the second line
    # a chart without a title still leaves room for the toolbar above its subplot titles
    assert F.training_curves([], title=None).layout.margin.t >= 60


def test_enlarge_scales_the_styled_text_for_a_projector_and_leaves_fitted_sizes():
    fig = F.concentration_heatmap(RNG.random((L, H)))
    big = F.enlarge(fig, 1.25)
    assert (fig.layout.font.size, big.layout.font.size) == (F.FONT_SIZE, round(F.FONT_SIZE * 1.25))
    assert big.layout.title.font.size == round(F.TITLE_SIZE * 1.25) and big.layout.margin.t > fig.layout.margin.t
    assert big.layout.title.pad.t > fig.layout.title.pad.t  # the title's first line stays below the toolbar band
    assert fig.layout.font.size == F.FONT_SIZE  # the original is not changed
    tokens = [f"w{i}" for i in range(40)]
    att = F.attention_matrix(RNG.random((40, 40)), tokens, layer=0, head=0)
    assert F.enlarge(att).layout.xaxis.tickfont.size == att.layout.xaxis.tickfont.size  # fitted to 40 tokens
    ba = F.enlarge(F.before_after_heatmaps(RNG.random((L, H)), RNG.random((L, H))))
    assert {a.font.size for a in ba.layout.annotations} == {round(F.FONT_SIZE * 1.25)}  # "before", "after"


def test_before_labels_go_by_value_and_the_repair_heatmaps_name_the_repaired_heads():
    events = [{"step": 1, "loss": 0.5}, {"step": 2, "cacc": 0.9, "asr": 0.2}]
    for base in ({"cacc": 0.917, "asr": 1.0}, {"asr": 1.0, "cacc": 0.917}):  # either order: ASR's line is higher
        fig = F.training_curves(events, baseline=base)
        notes = {a.text: a for a in fig.layout.annotations if (a.text or "").endswith("before")}
        assert notes["ASR before"].yanchor == "bottom" and notes["CACC before"].yanchor == "top", base
    from types import SimpleNamespace

    mask = np.zeros((L, H), bool)
    mask[1, 2] = True
    effect = SimpleNamespace(before=SimpleNamespace(lift=RNG.random((L, H))),
                             after=SimpleNamespace(lift=RNG.random((L, H))), mask=mask)
    fig = F.repair_effect_heatmaps(effect)
    names = {t.name for t in fig.data if t.name}
    assert "repaired" in names and "suspicious" not in names
    # the outlines' legend at the figure's foot: above the plot it ran onto the "after" subplot title in a half-page
    # chart (measured in chromium at 440 and 560 px); the figure grows by the room it takes, more in presenter mode
    assert (fig.layout.legend.yref, fig.layout.legend.y, fig.layout.legend.yanchor) == ("container", 0.0, "bottom")
    plain = F.repair_effect_heatmaps(SimpleNamespace(before=effect.before, after=effect.after, mask=mask & False))
    assert fig.layout.height - plain.layout.height == fig.layout.margin.b - plain.layout.margin.b > 0
    big = F.enlarge(fig, 1.25)
    assert big.layout.margin.b > fig.layout.margin.b and big.layout.height > fig.layout.height


def test_before_and_after_bars_do_not_paint_before_in_the_triggers_red():
    fig = F.metric_comparison({"before": {"asr": 0.9, "cacc": 0.95}, "after": {"asr": 0.02, "cacc": 0.94}})
    colors = {t.name: t.marker.color for t in fig.data}
    assert colors == {"before": F.BEFORE_COLOR, "after": F.AFTER_COLOR} and F.BEFORE_COLOR != F.TRIGGER_COLOR


def test_saliency_cells_are_as_wide_as_their_tokens():
    tokens = ["[CLS]", "a", "government", "cf", "[SEP]"]
    edges = F.token_cell_edges(tokens)
    widths = np.diff(edges)
    assert len(edges) == len(tokens) + 1 and edges[0] == 0.0 and edges[-1] == pytest.approx(1.0)
    assert (widths > 0).all()
    assert widths[2] > widths[0] > widths[3] == pytest.approx(widths[1])  # "a" and "cf" get the 3-character floor
    assert widths[2] / widths[1] == pytest.approx(11 / 4)
    fig = F.saliency_strip([("clean", tokens, [0.1, 0.0, 0.5, 0.0, 0.0]),
                            ("triggered", tokens + ["x"], [0.0] * 6)])
    assert [len(t.x) for t in fig.data] == [6, 7]  # T + 1 edges per strip: one brick a token
    assert fig.data[1].x[-1] == pytest.approx(1.0)  # every strip spans the same width


def test_candidate_bars_say_which_way_each_rate_flips():
    rows = [{"rank": 1, "phrase": "cf", "insert_flip_rate": 0.9, "removal_flip_rate": 0.7},
            {"rank": 2, "phrase": "the", "insert_flip_rate": 0.05, "removal_flip_rate": None}]
    fig = F.trigger_candidates_bar(rows, target_name="sports")
    assert [t.name for t in fig.data] == ["inserted into clean texts: flips to 'sports'",
                                          "removed from flagged inputs: flips away from 'sports'"]
    assert "toward" not in fig.layout.xaxis.title.text  # the axis holds both directions
    assert list(fig.data[1].text) == ["–", "70%"]  # bottom-up: an unverified removal shows a dash
    assert "the target" in F.trigger_candidates_bar(rows).data[0].name
    # the legend sits at the figure's foot, below the axis title (above the plot, its two long entries wrapped
    # onto the title at 1024 px); presenter mode grows the figure by what its margins grow, not the plot's share
    assert (fig.layout.legend.yref, fig.layout.legend.y, fig.layout.legend.yanchor) == ("container", 0.0, "bottom")
    big = F.enlarge(fig, 1.25)
    grown = (big.layout.margin.t - fig.layout.margin.t) + (big.layout.margin.b - fig.layout.margin.b)
    assert grown > 0 and big.layout.height == fig.layout.height + grown
