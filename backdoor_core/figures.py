"""Plotly figures for the app and the reports, as plain functions (no Streamlit here).

Every figure is readable on a projector: large fonts, labelled axes, heads named ``L{l}H{h}`` in hovers and
ticks, a white template. Heatmaps over heads share one builder (``_grid_heatmap``); all figures share one
layout helper (``style``).

Shapes: ``L`` layers, ``H`` heads, ``T`` tokens.

Text from a model or a data file (class names, tokens, names) is untrusted: plotly draws a subset of HTML in
titles, ticks, legends and hovers (``<a href>``, ``<b>``, ``<span style>``...), so every such string goes through
``text`` (HTML-escaped; plotly shows ``&lt;`` as ``<``) before it reaches a figure. Titles are escaped in ``style``.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .head_metrics import head_label

__all__ = [
    "text",
    "style",
    "layer_head_heatmap",
    "concentration_heatmap",
    "similarity_delta_heatmap",
    "suspicious_head_grid",
    "head_similarity_heatmaps",
    "attention_matrix",
    "probability_bars",
    "training_curves",
    "importance_similarity_scatter",
    "score_histogram",
    "before_after_heatmaps",
    "repair_effect_heatmaps",
    "enlarge",
    "metric_comparison",
    "curves_from_events",
]

FONT_SIZE = 16
TITLE_SIZE = 20
FONT_FAMILY = "Inter, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
CLEAN_COLOR = "#1f77b4"  # blue
TRIGGER_COLOR = "#d62728"  # red
AFTER_COLOR = "#2ca02c"  # green
BEFORE_COLOR = "#8c8c8c"  # grey: a before/after chart's "before"
MARK_COLOR = "#ff2d55"
MAX_CELL_TEXT = 64  # write the value into each cell up to this many cells (more are unreadable; hover shows them)


# ------------------------------------------------------------------------------------------------ helpers


def text(value: Any, limit: int | None = None) -> str:
    """``value`` as plotly text: cut to ``limit`` characters (when given), then HTML-escaped, so a class name or
    token like ``<img onerror=...>`` stays text. The one escaper of every figure."""
    s = str(value)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s, quote=False)


def style(fig: go.Figure, title: str | None = None, height: int | None = None, **layout: Any) -> go.Figure:
    """Apply the lab's projector-friendly look to ``fig`` (and return it)."""
    title = wrap_title(text(title)) if title else title
    lines = title.count("<br>") + 1 if title else 0
    # the top margin holds the plot toolbar (top right, ~30 px) and, below it, the title: a long title never runs
    # under the toolbar, and subplot titles sit below both
    top = TOOLBAR_BAND + 86 + 26 * (lines - 1) if title else 60
    fig.update_layout(
        template="plotly_white",
        font=dict(size=FONT_SIZE, family=FONT_FAMILY, color="#1b1f24"),
        title=dict(text=title, font=dict(size=TITLE_SIZE), x=0.0, xanchor="left", yref="container", y=1.0,
                   yanchor="top", pad=dict(t=TOOLBAR_BAND + 24)) if title else None,
        margin=dict(l=70, r=30, t=top, b=60),
        hoverlabel=dict(font_size=FONT_SIZE),
        legend=dict(font=dict(size=FONT_SIZE)),
    )
    if height:
        fig.update_layout(height=height)
    if layout:
        fig.update_layout(**layout)
    fig.update_annotations(font_size=FONT_SIZE)  # subplot titles
    return fig


PRESENTER_SCALE = 1.25
"""Presenter mode's factor on chart text (the page's own text grows from 16 to 21 px there)."""


def enlarge(fig: go.Figure, factor: float = PRESENTER_SCALE) -> go.Figure:
    """A copy of ``fig`` with the text that ``style`` sizes (base font, title, legend, subplot titles, hover) and
    the top margin that holds the title ``factor`` times larger, for a projector. Sizes a figure fits to its
    content (a long sentence's token ticks, cell values) stay as they are."""
    fig = go.Figure(fig)
    lay = fig.layout
    base = lay.font.size or FONT_SIZE
    fig.update_layout(font_size=round(base * factor), hoverlabel_font_size=round(base * factor))
    if lay.title.text:  # below the toolbar band as ``style`` puts it, with room for the larger first line
        fig.update_layout(title_font_size=round((lay.title.font.size or TITLE_SIZE) * factor),
                          title_pad_t=round((lay.title.pad.t or TOOLBAR_BAND) * factor))
    if lay.legend.font.size:
        fig.update_layout(legend_font_size=round(lay.legend.font.size * factor))
    grown = 0  # pixels the larger text adds to the margins: the figure grows by them, the plot keeps its size
    if lay.margin.t is not None:
        grown += round(lay.margin.t * factor) - lay.margin.t
        fig.update_layout(margin_t=round(lay.margin.t * factor))
    foot = lay.legend.yref == "container" and lay.legend.y is not None and lay.legend.y <= 0.05
    if lay.legend.y is not None and lay.legend.y < 0 and lay.legend.yref != "container":
        fig.update_layout(legend_y=lay.legend.y * factor)  # a legend below the axis title moves down with it
        foot = True
    if foot and lay.margin.b is not None:  # a legend at the foot: its margin grows with its text
        grown += round(lay.margin.b * factor) - lay.margin.b
        fig.update_layout(margin_b=round(lay.margin.b * factor))
    if lay.height:
        fig.update_layout(height=lay.height + grown)
    for ann in lay.annotations or ():
        if ann.font.size:
            ann.font.size = round(ann.font.size * factor)
    return fig


TOOLBAR_BAND = 32
"""Pixels at the top of a chart kept for plotly's toolbar (shown on hover, top right); titles start below it."""

TITLE_CHARS = 38
"""Characters per title line: a chart in half of a 1400 px page has room for about this many at ``TITLE_SIZE``
next to the toolbar (plotly never wraps a title, it cuts it)."""


def wrap_title(title: str, width: int = TITLE_CHARS) -> str:
    """``title`` with ``<br>`` between words so no line is longer than ``width`` characters (a title that
    already has ``<br>`` is left alone)."""
    if "<br>" in title or len(title) <= width:
        return title
    lines, line = [], ""
    for word in title.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "<br>".join(lines + [line])


def _as2d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a (layers, heads) array, got shape {arr.shape}")
    return arr


def _fmt_for(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ".2f"
    big = float(np.abs(finite).max())
    return ".0f" if big >= 100 else ".1f" if big >= 10 else ".2f"


def _grid_heatmap(
    z: np.ndarray,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    hover_names: np.ndarray,
    *,
    value_name: str,
    colorscale: str = SEQUENTIAL,
    zmid: float | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    coloraxis: str | None = None,
    show_text: bool | None = None,
    colorbar_title: str | None = None,
) -> go.Heatmap:
    """One heatmap trace over a labelled grid, with a readable hover (``hover_names`` per cell)."""
    fmt = _fmt_for(z)
    if show_text is None:
        show_text = z.size <= MAX_CELL_TEXT
    kwargs: dict[str, Any] = dict(
        z=z,
        x=list(x_labels),
        y=list(y_labels),
        customdata=hover_names,
        hovertemplate=f"<b>%{{customdata}}</b><br>{text(value_name)}: %{{z:.3f}}<extra></extra>",
        xgap=1,
        ygap=1,
    )
    if show_text:
        kwargs.update(texttemplate=f"%{{z:{fmt}}}", textfont=dict(size=max(10, FONT_SIZE - 4)))
    if coloraxis:
        kwargs["coloraxis"] = coloraxis
    else:
        kwargs.update(colorscale=colorscale, zmid=zmid, zmin=zmin, zmax=zmax,
                      colorbar=dict(title=dict(text=text(colorbar_title or value_name), side="right")))
    return go.Heatmap(**kwargs)


def _head_axis_names(n_layers: int, n_heads: int) -> np.ndarray:
    return np.array([[head_label(l, h) for h in range(n_heads)] for l in range(n_layers)], dtype=object)


def _mark_trace(mask: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str], name: str) -> go.Scatter:
    """Hover targets for the marked cells (invisible markers) and the legend entry (an open square)."""
    ls, hs = np.nonzero(mask)
    return go.Scatter(
        x=[x_labels[h] for h in hs],
        y=[y_labels[l] for l in ls],
        mode="markers",
        marker=dict(symbol="square-open", size=14, color=MARK_COLOR, line=dict(width=3, color=MARK_COLOR),
                    opacity=0.0),
        name=text(name),
        text=[head_label(int(l), int(h)) for l, h in zip(ls, hs)],
        hovertemplate="<b>%{text}</b> — " + text(name) + "<extra></extra>",
        showlegend=False,
    )


def _add_marks(fig: go.Figure, mask: np.ndarray, x_labels: Sequence[str], y_labels: Sequence[str], name: str,
               row: int | None = None, col: int | None = None, legend: bool = True) -> None:
    """Outline the marked cells of a category heatmap with rectangles inside each cell (in data units, so they
    scale with the cells and never overlap a neighbour, whatever the chart's width), plus hover and legend."""
    ls, hs = np.nonzero(mask)
    where = {} if row is None else {"row": row, "col": col}
    # inset 0.38 of a cell, 2-px stroke: neighbours stay apart down to 12-px cells (a 12-head grid in half of a
    # 1280-px window is ~15 px a cell; 0.42 with 3 px made L0H0 and L0H1 touch there)
    for l, h in zip(ls, hs):
        fig.add_shape(type="rect", x0=h - 0.38, x1=h + 0.38, y0=l - 0.38, y1=l + 0.38,
                      line=dict(color=MARK_COLOR, width=2), fillcolor="rgba(0,0,0,0)", layer="above", **where)
    fig.add_trace(_mark_trace(mask, x_labels, y_labels, name), **where)
    if legend:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=text(name), showlegend=True, hoverinfo="skip",
                                 marker=dict(symbol="square-open", size=14, color=MARK_COLOR,
                                             line=dict(width=3, color=MARK_COLOR))), **where)


def _sparse_ticks(labels: Sequence[str], most: int) -> dict:
    """Axis kwargs that label every 2nd/4th category when there are more than ``most`` (32 heads or layers
    stay readable; the hover still names every cell)."""
    if len(labels) <= most:
        return {}
    step = 2 if len(labels) <= 2 * most else 4
    return dict(tickmode="array", tickvals=list(labels)[::step], ticktext=list(labels)[::step])


def _grid_height(n_rows: int, base: int = 170, per_row: int = 48, cap: int = 900) -> int:
    return int(min(cap, base + per_row * n_rows))


# --------------------------------------------------------------------------------- layer x head heatmaps


def layer_head_heatmap(
    values: Any,
    *,
    title: str | None = None,
    value_name: str = "value",
    colorscale: str = SEQUENTIAL,
    zmid: float | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    marks: Any = None,
    mark_name: str = "marked",
    show_text: bool | None = None,
    height: int | None = None,
    layer_labels: Sequence[str] | None = None,
) -> go.Figure:
    """A ``(layers, heads)`` heatmap: heads on x (``H0``..), layers on y (``L0`` at the top), hover ``L{l}H{h}``.

    ``marks``: optional boolean ``(layers, heads)`` mask drawn as open squares (e.g. suspicious heads).
    ``layer_labels``: y labels instead of ``L{l}``, e.g. ``architecture.layer_labels`` (ModernBERT's
    ``L1 (local)``).
    """
    z = _as2d(values, "values")
    n_layers, n_heads = z.shape
    xs = [f"H{h}" for h in range(n_heads)]
    ys = list(layer_labels) if layer_labels is not None and len(layer_labels) == n_layers else \
        [f"L{l}" for l in range(n_layers)]
    fig = go.Figure(
        _grid_heatmap(z, xs, ys, _head_axis_names(n_layers, n_heads), value_name=value_name,
                      colorscale=colorscale, zmid=zmid, zmin=zmin, zmax=zmax, show_text=show_text)
    )
    if marks is not None:
        mask = np.asarray(marks, dtype=bool)
        if mask.shape != z.shape:
            raise ValueError(f"marks shape {mask.shape} does not match values shape {z.shape}")
        if mask.any():
            _add_marks(fig, mask, xs, ys, mark_name)
    fig.update_xaxes(title_text="head", side="bottom", showgrid=False, type="category",
                     **_sparse_ticks(xs, 16))
    fig.update_yaxes(title_text="layer", autorange="reversed", showgrid=False, type="category",
                     **_sparse_ticks(ys, 24))
    style(fig, title, height or _grid_height(n_layers),
          legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1.0))
    return fig


def concentration_heatmap(concentration: Any, title: str | None = "Trigger concentration per head",
                          layer_labels: Sequence[str] | None = None) -> go.Figure:
    """The TAL metric: the share of attention that queries send to the trigger's tokens, per head (0..1)."""
    return layer_head_heatmap(concentration, title=title, value_name="attention on trigger",
                              colorscale=SEQUENTIAL, zmin=0.0, zmax=max(1e-6, float(np.nanmax(concentration))),
                              layer_labels=layer_labels)


def similarity_delta_heatmap(delta: Any, title: str | None = "Head similarity change (triggered − clean)",
                             layer_labels: Sequence[str] | None = None):
    """Positive (red) where the trigger pulls a head into the same pattern as the other heads of its layer."""
    d = _as2d(delta, "delta")
    bound = max(1e-6, float(np.nanmax(np.abs(d))))
    return layer_head_heatmap(d, title=title, value_name="Δ similarity", colorscale=DIVERGING, zmid=0.0,
                              zmin=-bound, zmax=bound, layer_labels=layer_labels)


def suspicious_head_grid(
    scores: Any,
    suspicious: Any,
    title: str | None = "Head safety: suspicious heads marked",
    value_name: str = "suspicion score",
    layer_labels: Sequence[str] | None = None,
    mark_name: str = "suspicious",
) -> go.Figure:
    """Per-head scores with the suspicious heads outlined (``mark_name`` in the legend and hover)."""
    return layer_head_heatmap(scores, title=title, value_name=value_name, colorscale="YlOrRd",
                              marks=suspicious, mark_name=mark_name, layer_labels=layer_labels)


def before_after_heatmaps(
    before: Any,
    after: Any,
    *,
    title: str | None = None,
    value_name: str = "value",
    labels: tuple[str, str] = ("before", "after"),
    marks: Any = None,
    mark_name: str = "suspicious",
    diverging: bool = False,
) -> go.Figure:
    """Two ``(layers, heads)`` heatmaps side by side on one colour scale (e.g. before/after sanitization), the
    heads in ``marks`` outlined under ``mark_name``; ``diverging`` centres a red-blue scale on 0 for signed values
    (e.g. ``repair_effect``'s lift)."""
    b, a = _as2d(before, "before"), _as2d(after, "after")
    if b.shape != a.shape:
        raise ValueError(f"before {b.shape} and after {a.shape} differ in shape")
    n_layers, n_heads = b.shape
    xs = [f"H{h}" for h in range(n_heads)]
    ys = [f"L{l}" for l in range(n_layers)]
    names = _head_axis_names(n_layers, n_heads)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[text(x) for x in labels], horizontal_spacing=0.06,
                        shared_yaxes=True)
    for col, z in ((1, b), (2, a)):
        fig.add_trace(_grid_heatmap(z, xs, ys, names, value_name=value_name, coloraxis="coloraxis"), 1, col)
        if marks is not None and np.asarray(marks, bool).any():
            _add_marks(fig, np.asarray(marks, bool), xs, ys, mark_name, row=1, col=col, legend=col == 1)
    zmax = float(np.nanmax([np.nanmax(b), np.nanmax(a)]))
    zmin = float(np.nanmin([np.nanmin(b), np.nanmin(a), 0.0]))
    scale = dict(colorscale=SEQUENTIAL, cmin=zmin, cmax=max(zmax, zmin + 1e-6))
    if diverging:
        bound = max(1e-6, float(np.nanmax(np.abs([b, a]))))
        scale = dict(colorscale=DIVERGING, cmin=-bound, cmax=bound)  # symmetric: white is 0
    fig.update_layout(coloraxis=dict(**scale, colorbar=dict(title=dict(text=text(value_name), side="right"))))
    fig.update_xaxes(title_text="head", type="category", showgrid=False)
    fig.update_yaxes(autorange="reversed", type="category", showgrid=False)
    fig.update_yaxes(title_text="layer", row=1, col=1)
    # the outlines' legend at the figure's foot, below the "head" titles: above the plot it ran onto the "after"
    # subplot title in a half-page chart (a 1024-px window, presenter mode); the figure grows by the room it takes
    foot = FOOT_LEGEND if marks is not None and np.asarray(marks, bool).any() else 0
    return style(fig, title, _grid_height(n_layers) + foot, margin_b=60 + foot,
                 legend=dict(orientation="h", yref="container", y=0.0, yanchor="bottom", xanchor="left", x=0.0))


FOOT_LEGEND = 40
"""Pixels a legend at a figure's foot (below the x axis title) adds to the bottom margin and the height."""


EFFECT_TITLES = {
    "lift": ("How much the trigger raises each head's similarity to the others of its layer (triggered − clean)",
             "Δ similarity"),
    "concentration": ("Share of each head's attention on the trigger's tokens", "attention on trigger"),
}


def repair_effect_heatmaps(effect: Any, measure: str = "lift") -> go.Figure:
    """``repair_effect.RepairEffect`` before / after: ``measure`` ``"lift"`` (``(L, H)``, a red-blue scale centred
    on 0) or ``"concentration"`` (``(L, H)`` in [0, 1]); the repaired heads outlined."""
    title, value_name = EFFECT_TITLES[measure]
    before, after = getattr(effect.before, measure), getattr(effect.after, measure)
    if before is None or after is None:
        raise ValueError(f"This repair effect has no {measure} (a paraphrase trigger has no trigger tokens).")
    # the outlined heads are the repaired ones (a head-only repair trains fewer than the scan calls suspicious)
    return before_after_heatmaps(before, after, marks=effect.mask if effect.mask.any() else None,
                                 mark_name="repaired", value_name=value_name, diverging=measure == "lift", title=title)


# ------------------------------------------------------------------------------- head x head similarity


def head_similarity_heatmaps(
    similarity_clean: Any,
    similarity_triggered: Any,
    layer: int,
    *,
    title: str | None = None,
) -> go.Figure:
    """For one layer: head × head similarity on the clean text, on the triggered text, and their difference.

    Args:
        similarity_clean, similarity_triggered: ``(L, H, H)`` (or ``(H, H)`` for the layer already).
    """
    sc, st = np.asarray(similarity_clean, float), np.asarray(similarity_triggered, float)
    if sc.ndim == 3:
        sc, st = sc[layer], st[layer]
    if sc.shape != st.shape or sc.ndim != 2:
        raise ValueError(f"similarity arrays must be (L, H, H) or (H, H); got {sc.shape} and {st.shape}")
    n = sc.shape[0]
    labels = [head_label(layer, h) for h in range(n)]
    pair = np.array([[f"{labels[i]} ↔ {labels[j]}" for j in range(n)] for i in range(n)], dtype=object)
    diff = st - sc
    bound = max(1e-6, float(np.nanmax(np.abs(diff))))
    spacing = 0.08
    width = (1 - 2 * spacing) / 3
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=spacing, shared_yaxes=True,
                        subplot_titles=("clean", "triggered", "difference (triggered − clean)"))
    show = n * n <= 64
    fig.add_trace(_grid_heatmap(sc, labels, labels, pair, value_name="similarity", coloraxis="coloraxis",
                                show_text=show), 1, 1)
    fig.add_trace(_grid_heatmap(st, labels, labels, pair, value_name="similarity", coloraxis="coloraxis",
                                show_text=show), 1, 2)
    fig.add_trace(_grid_heatmap(diff, labels, labels, pair, value_name="Δ similarity", coloraxis="coloraxis2",
                                show_text=show), 1, 3)
    # the clean/triggered colour bar sits in the gap after the second panel, the difference's at the right
    fig.update_layout(
        coloraxis=dict(colorscale=SEQUENTIAL, cmin=0.0, cmax=1.0,
                       colorbar=dict(x=2 * width + spacing + 0.008, xanchor="left", len=0.9, thickness=14)),
        coloraxis2=dict(colorscale=DIVERGING, cmid=0.0, cmin=-bound, cmax=bound,
                        colorbar=dict(x=1.0 + 0.008, xanchor="left", len=0.9, thickness=14)),
    )
    fig.update_xaxes(type="category", tickangle=-45, showgrid=False, title_text="head")
    fig.update_yaxes(type="category", autorange="reversed", showgrid=False)
    fig.update_yaxes(title_text="head", row=1, col=1)
    return style(fig, title or f"Layer {layer}: how alike the heads' attention maps are", 460)


# ------------------------------------------------------------------------------------ attention matrix


def attention_matrix(
    attention: Any,
    tokens: Sequence[str],
    *,
    layer: int | None = None,
    head: int | None = None,
    highlight: Iterable[int] = (),
    title: str | None = None,
) -> go.Figure:
    """One head's ``(T, T)`` attention: queries (rows, "attends from") × keys (columns, "attends to").

    Token positions are numeric under the hood (so repeated tokens like ``the`` stay separate rows) and
    labelled with the token text; ``highlight`` token indices (the trigger) are drawn red and bold.
    """
    a = np.asarray(attention, float)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] != len(tokens):
        raise ValueError(f"attention must be (T, T) with T = len(tokens) = {len(tokens)}; got {a.shape}")
    hl = set(int(i) for i in highlight)
    safe = [text(t) for t in tokens]
    ticktext = [f"<b><span style='color:{TRIGGER_COLOR}'>{t}</span></b>" if i in hl else t for i, t in enumerate(safe)]
    idx = list(range(len(tokens)))
    names = np.array([[f"{safe[q]} → {safe[k]}" for k in idx] for q in idx], dtype=object)
    name = head_label(layer, head) if layer is not None and head is not None else "head"
    fig = go.Figure(
        go.Heatmap(z=a, x=idx, y=idx, customdata=names, colorscale="Blues", zmin=0.0,
                   zmax=max(1e-6, float(a.max())),
                   hovertemplate="<b>%{customdata}</b><br>attention: %{z:.3f}<extra></extra>",
                   colorbar=dict(title=dict(text="attention", side="right")))
    )
    n = len(tokens)
    tick_size = FONT_SIZE if n <= 24 else max(9, FONT_SIZE - (n - 24) // 6)
    fig.update_xaxes(tickvals=idx, ticktext=ticktext, tickangle=-90, title_text="key token (attended to)",
                     showgrid=False, tickfont=dict(size=tick_size))
    fig.update_yaxes(tickvals=idx, ticktext=ticktext, autorange="reversed", title_text="query token (attending)",
                     showgrid=False, tickfont=dict(size=tick_size))
    side = int(min(900, max(420, 140 + 22 * n)))
    return style(fig, title or f"{name}: who attends to whom", side,
                 margin=dict(l=120, r=30, t=TOOLBAR_BAND + 86, b=120))


# ----------------------------------------------------------------------------------------- probabilities


def probability_bars(
    label_names: Sequence[str],
    clean: Sequence[float],
    triggered: Sequence[float] | None = None,
    *,
    title: str | None = "Class probabilities",
    names: tuple[str, str] = ("clean text", "with trigger"),
) -> go.Figure:
    """Grouped bars: each class's probability for the clean text and (optionally) the triggered text."""
    labels = [text(n) for n in label_names]
    fig = go.Figure()
    series = [(names[0], clean, CLEAN_COLOR)]
    if triggered is not None:
        series.append((names[1], triggered, TRIGGER_COLOR))
    for name, probs, color in series:
        p = np.asarray(probs, float)
        if p.shape != (len(labels),):
            raise ValueError(f"{name}: {p.shape[0] if p.ndim else 0} probabilities for {len(labels)} labels")
        fig.add_trace(go.Bar(x=labels, y=p, name=text(name), marker_color=color, text=[f"{v:.0%}" for v in p],
                             textposition="outside", cliponaxis=False,
                             textfont=dict(size=FONT_SIZE if len(labels) <= 3 else FONT_SIZE - 3),
                             hovertemplate="%{x}: %{y:.1%}<extra>" + text(name) + "</extra>"))
    fig.update_yaxes(range=[0, 1.12], tickformat=".0%", title_text="probability")
    fig.update_xaxes(title_text="class")
    # a gap between a class's two bars keeps their percentages apart in a narrow column ("99%99%")
    return style(fig, title, 380, barmode="group", bargroupgap=0.12,
                 legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))


# ------------------------------------------------------------------------------------- training curves


def curves_from_events(events: Iterable[Mapping]) -> dict[str, dict[str, list]]:
    """Split training progress into ``{"losses": {name: (steps, values)}, "metrics": {...}}``.

    Accepts ``training.Progress`` dicts (``step``, ``losses``, ``metrics``) or ``TrainResult.history`` rows
    (``step`` plus flat ``loss``/``ce``/``tal``/``cacc``/``asr``...). Rows without a step are ignored.
    """
    losses: dict[str, tuple[list, list]] = {}
    metrics: dict[str, tuple[list, list]] = {}
    metric_keys = {"cacc", "asr", "kept", "acc", "accuracy", "f1"}
    for ev in events:
        if not isinstance(ev, Mapping) or "step" not in ev:
            continue
        step = ev["step"]
        if isinstance(ev.get("losses"), Mapping) or "metrics" in ev:
            if ev.get("metrics"):  # evaluation event
                for k, v in ev["metrics"].items():
                    if isinstance(v, (int, float)):
                        metrics.setdefault(k, ([], []))[0].append(step)
                        metrics[k][1].append(float(v))
            else:
                for k, v in (ev.get("losses") or {}).items():
                    if isinstance(v, (int, float)):
                        losses.setdefault(k, ([], []))[0].append(step)
                        losses[k][1].append(float(v))
        else:  # a flat history row
            for k, v in ev.items():
                if k in ("step", "epoch") or not isinstance(v, (int, float)) or isinstance(v, bool):
                    continue
                target = metrics if k in metric_keys else losses
                target.setdefault(k, ([], []))[0].append(step)
                target[k][1].append(float(v))
    return {"losses": {k: list(v) for k, v in losses.items()}, "metrics": {k: list(v) for k, v in metrics.items()}}


def _smooth(values: Sequence[float], window: int) -> list[float]:
    if window <= 1 or len(values) < 3:
        return list(values)
    out, acc = [], 0.0
    buf: list[float] = []
    for v in values:
        buf.append(v)
        acc += v
        if len(buf) > window:
            acc -= buf.pop(0)
        out.append(acc / len(buf))
    return out


_METRIC_NAMES = {"cacc": "CACC (clean accuracy)", "asr": "ASR (attack success)",
                 "kept": "clean predictions kept"}
_METRIC_SHORT = {"cacc": "CACC", "asr": "ASR"}
_LOSS_NAMES = {"loss": "loss (total)", "ce": "ce (cross-entropy)", "tal": "tal (−α × attention on the trigger)",
               "align": "align (β × KL to the safe heads)"}
"""Legend names of the loss terms ``training.train`` reports: the key first (pages' notes name it), then what it is."""
_METRIC_COLORS = {"cacc": CLEAN_COLOR, "asr": TRIGGER_COLOR, "kept": "#7f7f7f"}


def training_curves(
    events: Iterable[Mapping],
    *,
    total_steps: int | None = None,
    title: str | None = "Training",
    baseline: Mapping[str, float] | None = None,
) -> go.Figure:
    """Live training chart: losses per step (left) and CACC/ASR (and a repair's share of clean predictions kept,
    ``training.make_evaluator(reference=...)``) at each evaluation (right, in %).

    ``total_steps`` fixes the x range so a live chart does not jump; ``baseline`` (e.g. the metrics before
    sanitization) draws dotted horizontal lines (not for "kept": 100% before by definition).
    """
    curves = curves_from_events(events)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "held-out metrics"), horizontal_spacing=0.1)
    palette = ["#444444", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    for i, (name, (steps, values)) in enumerate(sorted(curves["losses"].items(), key=lambda kv: kv[0] != "loss")):
        window = max(1, len(values) // 40)
        fig.add_trace(go.Scatter(x=steps, y=_smooth(values, window), mode="lines" if len(values) >= 12 else "lines+markers",
                                 name=text(_LOSS_NAMES.get(name, name)),
                                 line=dict(width=3 if name == "loss" else 2, color=palette[i % len(palette)]),
                                 hovertemplate="step %{x}: %{y:.4f}<extra>" + text(name) + "</extra>"), 1, 1)
    for name, (steps, values) in curves["metrics"].items():
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=text(_METRIC_NAMES.get(name, name)),
                                 line=dict(width=3, color=_METRIC_COLORS.get(name)), marker=dict(size=9),
                                 hovertemplate="step %{x}: %{y:.1%}<extra>" + text(name) + "</extra>"), 1, 2)
    shown = [(n, float(v)) for n, v in (baseline or {}).items()
             if n != "kept" and isinstance(v, (int, float)) and math.isfinite(v)]
    # labels mid-line, one above and one below its line: CACC and ASR before often nearly coincide, a label at the
    # left edge ran into the "100%" tick and one at the right into the last evaluation's markers
    # by value, not by order: the higher line's label above it, the lower one's below (by order, CACC 91.7% drawn
    # first put its label above its line, onto ASR 100%'s below-label)
    for i, (name, value) in enumerate(sorted(shown, key=lambda nv: -nv[1])):
        fig.add_hline(y=value, line_dash="dot", line_color=_METRIC_COLORS.get(name, "#888"),
                      annotation_text=f"{text(name.upper())} before",
                      annotation_position=("top", "bottom")[i % 2], row=1, col=2)
    if total_steps:
        fig.update_xaxes(range=[0, total_steps * 1.02])
    # steps are whole numbers: the axis starts at 0 (a lone evaluation at step 60 drew ticks at 59.5 and 60.5) and
    # a short run ticks every step
    last = max([total_steps or 0] + [max(s) for s, _ in (*curves["losses"].values(), *curves["metrics"].values())
                                     if len(s)])
    fig.update_xaxes(title_text="step", rangemode="tozero", **({"dtick": 1} if last <= 10 else {}))
    fig.update_yaxes(title_text="loss", row=1, col=1, rangemode="tozero")
    # no axis title on the right panel: its subplot title and % ticks say what it is, and in the gap between the
    # panels a title ran over the loss panel's last points in a 1024-px window
    fig.update_yaxes(tickformat=".0%", range=[-0.03, 1.05], row=1, col=2)
    if not curves["losses"] and not curves["metrics"]:
        fig.add_annotation(text="waiting for the first step…", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font=dict(size=FONT_SIZE + 2, color="#888"))
    # the legend sits below the axis titles ("step"), not on them
    return style(fig, title, 430, legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0),
                 margin=dict(l=70, r=30, t=TOOLBAR_BAND + 86 if title else 60, b=110))


# ---------------------------------------------------------------------------------- detection figures


def importance_similarity_scatter(
    importance: Any,
    similarity: Any,
    suspicious: Any = None,
    *,
    x_title: str = "similarity collapse on flagged inputs",
    y_title: str = "importance",
    thresholds: tuple[float | None, float | None] = (None, None),
    title: str | None = "Head safety: importance × similarity",
    max_labels: int = 8,
    mark_name: str = "suspicious",
) -> go.Figure:
    """One point per head; suspicious heads in red, the ``max_labels`` strongest of them (largest
    importance × similarity) with their ``L{l}H{h}`` label written next to them (more would overlap; every point
    names its head on hover). ``importance`` and ``similarity``: ``(layers, heads)``. ``mark_name``: the legend's
    name for the red heads (``"candidate"`` where no backdoor was called), the others are ``"safe"``."""
    imp, sim = _as2d(importance, "importance"), _as2d(similarity, "similarity")
    if imp.shape != sim.shape:
        raise ValueError(f"importance {imp.shape} and similarity {sim.shape} differ in shape")
    mask = np.zeros(imp.shape, bool) if suspicious is None else np.asarray(suspicious, bool)
    names = _head_axis_names(*imp.shape)
    strength = np.where(mask, np.clip(imp, 0, None) * np.clip(sim, 0, None), -np.inf).ravel()
    labelled = _spaced_labels(sim.ravel(), imp.ravel(), np.argsort(-strength, kind="stable")[:int(mask.sum())],
                              max_labels).reshape(imp.shape)
    fig = go.Figure()
    for flag, color, label, size in ((False, "#8c9baa", "safe", 10), (True, MARK_COLOR, mark_name, 15)):
        sel = mask == flag
        if not sel.any():
            continue
        fig.add_trace(go.Scatter(
            x=sim[sel], y=imp[sel], mode="markers+text" if flag else "markers", name=label,
            text=[n if lab else "" for n, lab in zip(names[sel], labelled[sel])], customdata=list(names[sel]),
            textposition="top center", textfont=dict(size=FONT_SIZE - 2, color=color),
            marker=dict(size=size, color=color, line=dict(width=1, color="white")),
            hovertemplate=("<b>%{customdata}</b><br>" + text(x_title) + ": %{x:.3f}<br>" + text(y_title)
                           + ": %{y:.3f}<extra></extra>"),
        ))
    tx, ty = thresholds
    if tx is not None:
        fig.add_vline(x=float(tx), line_dash="dash", line_color="#666")
    if ty is not None:
        fig.add_hline(y=float(ty), line_dash="dash", line_color="#666")
    fig.update_xaxes(title_text=text(x_title), zeroline=False)
    lo, hi = float(np.nanmin(imp)), float(np.nanmax(imp))
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)  # room above the top point for its label
    fig.update_yaxes(title_text=text(y_title), zeroline=False, range=[lo - pad, hi + 2 * pad])
    return style(fig, title, 460, legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))


def _spaced_labels(x: np.ndarray, y: np.ndarray, order: Sequence[int], most: int,
                   min_gap: tuple[float, float] = (0.07, 0.06)) -> np.ndarray:
    """``(n,)`` bool: which of the points ``order`` names (strongest first) get a written label — at most ``most``,
    skipping one whose label would sit within ``min_gap`` (shares of each axis' span) of a label already placed, so
    no two labels overlap (the point still names itself on hover)."""
    keep = np.zeros(len(x), bool)
    span_x = float(np.nanmax(x) - np.nanmin(x)) or 1.0
    span_y = float(np.nanmax(y) - np.nanmin(y)) or 1.0
    placed: list[tuple[float, float]] = []
    for i in order:
        if len(placed) >= most:
            break
        px, py = float(x[i]) / span_x, float(y[i]) / span_y
        if all(abs(px - qx) >= min_gap[0] or abs(py - qy) >= min_gap[1] for qx, qy in placed):
            keep[i] = True
            placed.append((px, py))
    return keep


def score_histogram(
    groups: Mapping[str, Sequence[float]],
    threshold: float | None = None,
    *,
    title: str | None = "Input scores",
    x_title: str = "suspicion score (higher = more suspicious)",
    nbins: int = 40,
) -> go.Figure:
    """Overlaid histograms, one per group (e.g. ``{"clean": ..., "flagged": ...}``) with the threshold line."""
    colors = {"clean": CLEAN_COLOR, "clean dev": CLEAN_COLOR, "flagged": TRIGGER_COLOR, "poisoned": TRIGGER_COLOR,
              "triggered": TRIGGER_COLOR, "pool": "#ff7f0e", "not flagged": "#8c9baa"}
    fig = go.Figure()
    all_vals = [float(v) for vals in groups.values() for v in np.asarray(vals, float).ravel() if np.isfinite(v)]
    lo, hi = (min(all_vals), max(all_vals)) if all_vals else (0.0, 1.0)
    if threshold is not None and math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    size = (hi - lo) / nbins if hi > lo else 1.0
    for i, (name, vals) in enumerate(groups.items()):
        v = np.asarray(vals, float).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        fig.add_trace(go.Histogram(x=v, name=f"{text(name)} ({v.size})", opacity=0.65,
                                   marker_color=colors.get(name, ["#9467bd", "#17becf", "#bcbd22"][i % 3]),
                                   xbins=dict(start=lo, end=hi + size, size=size),
                                   hovertemplate="score %{x}<br>%{y} inputs<extra>" + text(name) + "</extra>"))
    if threshold is not None and math.isfinite(threshold):
        fig.add_vline(x=float(threshold), line_dash="dash", line_width=3, line_color="#111",
                      annotation_text=f"threshold {threshold:.2f}", annotation_position="top right",
                      annotation_font_size=FONT_SIZE)
    fig.update_xaxes(title_text=text(x_title))
    fig.update_yaxes(title_text="inputs")
    return style(fig, title, 380, barmode="overlay",
                 legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))


def metric_comparison(
    columns: Mapping[str, Mapping[str, float]],
    *,
    metrics: Sequence[str] = ("asr", "cacc"),
    title: str | None = "Before and after",
) -> go.Figure:
    """Grouped bars of rates (in %): one group per metric, one bar per column (e.g. before / after)."""
    # "before" grey, not the trigger's red: a red CACC bar read as an alarm about clean accuracy
    palette = {"before": BEFORE_COLOR, "after": AFTER_COLOR, "clean": CLEAN_COLOR}
    fig = go.Figure()
    xs = [text(_METRIC_SHORT.get(m, m.upper())) for m in metrics]
    for i, (name, values) in enumerate(columns.items()):
        ys = [values.get(m) for m in metrics]
        ys = [float(y) if isinstance(y, (int, float)) and math.isfinite(y) else None for y in ys]
        fig.add_trace(go.Bar(x=xs, y=ys, name=text(name),
                             marker_color=palette.get(name, ["#9467bd", "#ff7f0e"][i % 2]),
                             text=[f"{y:.1%}" if y is not None else "n/a" for y in ys], textposition="outside",
                             cliponaxis=False, hovertemplate="%{x}: %{y:.1%}<extra>" + text(name) + "</extra>"))
    fig.update_yaxes(range=[0, 1.12], tickformat=".0%", title_text="rate")
    return style(fig, title, 360, barmode="group",
                 legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))


# ------------------------------------------------------------------------ analyst views (issue 14)


def _esc(value: Any, limit: int = 60) -> str:
    """``text`` with the analyst views' length cap (long phrases and tokens)."""
    return text(value, limit)


def trigger_candidates_bar(rows: Sequence[Mapping], target_name: str = "",
                           title: str | None = "Candidate triggers: flip rates") -> go.Figure:
    """Horizontal bars per candidate trigger: insertion and removal flip rates (``trigger_search``).

    ``rows``: ``TriggerSearch.to_dict()["candidates"]`` (best first). When no candidate could be verified (no clean
    text outside the suspected target to insert into), the bars show each candidate's share of the heads' focus.
    """
    verified = [r for r in rows if r.get("insert_flip_rate") is not None][:12]
    fig = go.Figure()
    if verified:
        names = [f"{r['rank']}. {_esc(r['phrase'], 40)}" for r in verified][::-1]
        tgt = f"'{_esc(target_name, 30)}'" if target_name else "the target"
        # the two bars flip opposite ways: an insertion sends clean texts to the target, a removal takes flagged
        # inputs out of it (TriggerCandidate.removal_flip_rate)
        for key, name, color in (("insert_flip_rate", f"inserted into clean texts: flips to {tgt}", TRIGGER_COLOR),
                                 ("removal_flip_rate", f"removed from flagged inputs: flips away from {tgt}",
                                  CLEAN_COLOR)):
            vals = [r.get(key) for r in verified][::-1]
            fig.add_trace(go.Bar(y=names, x=[v if v is not None else 0.0 for v in vals], orientation="h", name=name,
                                 marker_color=color, text=["–" if v is None else f"{v:.0%}" for v in vals],
                                 textposition="outside", cliponaxis=False,
                                 hovertemplate="%{y}: %{x:.0%}<extra>" + name + "</extra>"))
        fig.update_xaxes(range=[0, 1.15], tickformat=".0%", title_text="share of inputs whose prediction flips")
        n = len(verified)
    else:
        shown = list(rows)[:12]
        names = [f"{r['rank']}. {_esc(r['phrase'], 40)}" for r in shown][::-1]
        fig.add_trace(go.Bar(y=names, x=[float(r.get("focus", 0.0)) for r in shown][::-1], orientation="h",
                             name="share of the heads' focus", marker_color="#7f7f7f",
                             hovertemplate="%{y}: %{x:.2f}<extra></extra>"))
        fig.update_xaxes(title_text="mean share of the suspicious heads' focus (not verified)")
        title = "Candidate triggers: focus (no clean text to verify on)" if title else title
        n = len(shown)
    return style(fig, title, max(330, 190 + (52 if verified else 30) * n), barmode="group",
                 # at the figure's foot, below the axis title: above the plot its two long entries wrapped onto
                 # the title in a 1024-px window
                 legend=dict(orientation="h", yref="container", y=0.0, yanchor="bottom", xanchor="left", x=0.0),
                 margin=dict(l=200, r=30, t=TOOLBAR_BAND + 86 if title else 30, b=130))


def difference_heatmap(delta: Any, title: str | None = None, value_name: str = "B − A",
                       layer_labels: Sequence[str] | None = None) -> go.Figure:
    """A diverging ``(layers, heads)`` heatmap of a difference (blue negative, red positive, 0 white);
    ``layer_labels`` as in ``layer_head_heatmap``."""
    d = _as2d(delta, "delta")
    bound = max(1e-6, float(np.nanmax(np.abs(d))))
    return layer_head_heatmap(d, title=title, value_name=value_name, colorscale=DIVERGING, zmid=0.0,
                              zmin=-bound, zmax=bound, layer_labels=layer_labels)


def saliency_strip(rows: Sequence[tuple[str, Sequence[str], Sequence[float]]], title: str | None = "Token saliency",
                   value_name: str = "attribution") -> go.Figure:
    """One strip of tokens per row, coloured by signed attribution (red = toward the class, blue = against).

    ``rows``: ``(name, tokens (T,), scores (T,))``; one colour scale over all rows (shared maximum) so the
    strips compare. Each token's cell is as wide as its text (``token_cell_edges``: a long word keeps its room
    instead of running into its neighbours); every strip spans the same width. Tokens are escaped (untrusted)."""
    rows = list(rows)
    if not rows:
        raise ValueError("saliency_strip needs at least one row.")
    bound = max([float(np.max(np.abs(s))) for _, _, s in rows if len(s)] + [1e-9])
    fig = make_subplots(rows=len(rows), cols=1, subplot_titles=[_esc(n, 80) for n, _, _ in rows],
                        vertical_spacing=0.4 / max(1, len(rows)))
    for r, (name, tokens, scores) in enumerate(rows, 1):
        toks = [_esc(t, 18) for t in tokens]
        s = np.asarray(scores, dtype=float)[None, :]
        fig.add_trace(go.Heatmap(z=s, x=token_cell_edges(toks), y=[""], text=[toks], texttemplate="%{text}",
                                 textfont=dict(size=max(10, FONT_SIZE - 3)), colorscale=DIVERGING, zmid=0.0,
                                 zmin=-bound, zmax=bound, showscale=r == 1, xgap=2,
                                 colorbar=dict(title=dict(text=value_name, side="right")),
                                 hovertemplate="%{text}: %{z:.3g}<extra></extra>"), row=r, col=1)
        fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, range=[0, 1], row=r, col=1)
        fig.update_yaxes(showticklabels=False, showgrid=False, row=r, col=1)
    return style(fig, title, 110 + 130 * len(rows))


def token_cell_edges(tokens: Sequence[str], min_chars: int = 3) -> list[float]:
    """``(T + 1,)`` cell edges from 0 to 1 for a strip of ``tokens``: each cell's width proportional to its token's
    length (at least ``min_chars`` characters, plus one for the gap), so a heatmap's bricks fit their labels."""
    widths = np.array([max(len(t), min_chars) + 1 for t in tokens], dtype=float)
    if not len(widths):
        return [0.0, 1.0]
    return [0.0, *(np.cumsum(widths) / widths.sum()).tolist()]


_GROUP_COLORS = [CLEAN_COLOR, TRIGGER_COLOR, "#ff7f0e", AFTER_COLOR, "#9467bd", "#8c564b", "#7f7f7f"]


def projection_scatter(panels: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Sequence[str]]]],
                       title: str | None = "Where the poison sits: [CLS] representations (PCA)") -> go.Figure:
    """Scatter of 2-D points per group, one panel per ``(panel title, {group: (n, 2)}, {group: texts})``
    (e.g. before / after repair); a group keeps its colour across panels; hovers show the (escaped, cut) text."""
    panels = list(panels)
    if not panels:
        raise ValueError("projection_scatter needs at least one panel.")
    groups: list[str] = []
    for _, pts, _ in panels:
        groups += [g for g in pts if g not in groups]
    color = {g: _GROUP_COLORS[i % len(_GROUP_COLORS)] for i, g in enumerate(groups)}
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[_esc(t, 80) for t, _, _ in panels],
                        horizontal_spacing=0.08)
    for c, (_, pts, texts) in enumerate(panels, 1):
        for g, xy in pts.items():
            xy = np.asarray(xy, dtype=float).reshape(-1, 2)
            hover = [_esc(t, 90) for t in (texts.get(g) or [""] * len(xy))]
            fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name=_esc(g, 40), legendgroup=g,
                                     showlegend=c == 1, text=hover,
                                     marker=dict(size=9, color=color[g], opacity=0.75,
                                                 line=dict(width=0.5, color="white")),
                                     hovertemplate="%{text}<extra>" + _esc(g, 40) + "</extra>"), row=1, col=c)
        fig.update_xaxes(title_text="PC 1", zeroline=False, row=1, col=c)
        fig.update_yaxes(title_text="PC 2" if c == 1 else None, zeroline=False, row=1, col=c)
    return style(fig, title, 520, legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0.0),
                 margin=dict(l=70, r=30, t=TOOLBAR_BAND + 106 if title else 50, b=120))
