"""bertviz head view and model view as self-contained HTML that renders with no network.

bertviz's ``head_view(..., html_action="return")`` and ``model_view(...)`` emit HTML that loads
require.js from a CDN and whose JavaScript starts with ``require.config({paths: {d3: <CDN>, jquery:
<CDN>}})`` followed by ``requirejs(['jquery', 'd3'], function ($, d3) {...})``. Offline that page stays blank.

This module calls bertviz's own Python functions, then post-processes their HTML:

* the CDN ``<script src=...require.min.js>`` tag and the ``require.config({...});`` block are removed;
* d3 v5.7.0 (the version bertviz asks for; package data of ``mpld3``) and jQuery 3.7.1 (package data of
  ``xstatic-jquery``) are inlined as ``<script>`` blocks, so they define the globals ``d3`` and ``jQuery``;
* a small ``require``/``requirejs``/``define`` shim then hands those globals to bertviz's
  ``requirejs([...], callback)``, calling the callback at once.

The result is one complete HTML document (a string), usable as a standalone ``.html`` file, in an iframe
``srcdoc`` or with Streamlit's ``st.iframe(html)``. A Content-Security-Policy ``<meta>`` tag forbids every
network fetch, so the page cannot reach a CDN even by accident.

Shapes (``L`` layers, ``H`` heads, ``T`` tokens), for ONE input with padding removed:

* ``attention``: ``(L, H, T, T)``, numpy array or torch tensor; row ``i`` of ``attention[l, h]`` holds the
  weights with which token ``i`` attends to every token (rows normally sum to 1);
* ``tokens``: ``T`` word-piece strings.

bertviz itself wants a tuple of ``L`` tensors shaped ``(1, H, T, T)``; the conversion happens here.
"""

from __future__ import annotations

import functools
import html
import importlib.util
import operator
import re
from pathlib import Path
from typing import Any, Sequence

MAX_TOKENS = 512
# Attention values serialised into the page (layers x heads x T x T, doubled with a sentence pair).
# 5 million values are roughly 35 MB of HTML; beyond that browsers and Streamlit struggle.
MAX_VALUES = 5_000_000
# Values are rounded before serialisation: opacity differences below 1e-4 are invisible and the page
# shrinks about threefold.
_DECIMALS = 4

# Forbid every fetch; allow only the inline scripts and styles the page carries itself.
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"

_CDN_SCRIPT_RE = re.compile(r"<script\s+src=\"[^\"]*require[^\"]*\.js\"\s*>\s*</script>", re.IGNORECASE)
_JS_OPEN = '<script type="text/javascript">'
_REQUIRE_CONFIG_RE = re.compile(r"require\.config\(\s*\{.*?\}\s*\);", re.DOTALL)

# Hands the inlined globals to bertviz's requirejs(['jquery', 'd3'], cb). It deliberately sets no
# `define.amd`, so UMD bundles loaded after it would still register globals instead of calling define.
_SHIM_JS = """\
(function (w) {
  "use strict";
  var modules = {jquery: w.jQuery, d3: w.d3};
  function lookup(name) {
    if (!Object.prototype.hasOwnProperty.call(modules, name) || !modules[name]) {
      throw new Error("bertviz_offline: module '" + name + "' is not inlined in this page");
    }
    return modules[name];
  }
  function require(deps, callback) {
    if (typeof deps === "string") { return lookup(deps); }
    var args = deps.map(lookup);
    if (typeof callback === "function") { return callback.apply(w, args); }
  }
  require.config = function () { return require; };
  function define(name, deps, factory) {
    if (typeof name !== "string") { return; }  // anonymous modules are not supported
    if (typeof deps === "function" || !Array.isArray(deps)) { factory = deps; deps = []; }
    modules[name] = typeof factory === "function" ? factory.apply(w, deps.map(lookup)) : factory;
  }
  w.require = w.requirejs = require;
  w.define = define;
})(window);
"""


def head_view_html(
    attention: Any,
    tokens: Sequence[str],
    *,
    layer: int | None = None,
    heads: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    sentence_b_start: int | None = None,
    prettify_tokens: bool = True,
    height: int | None = None,
) -> str:
    """bertviz head view (one layer at a time, lines from each token to the tokens it attends to).

    Args:
        attention: ``(L, H, T, T)`` array or tensor for one input, padding removed.
        tokens: the ``T`` word-piece strings.
        layer: layer shown first (index into the full ``L``); defaults to the first of ``layers``.
        heads: heads selected at first (the others can still be switched on in the page); default all.
        layers: layers included in the page's layer drop-down (indices into ``L``); default all.
            Fewer layers make a smaller page.
        sentence_b_start: index of the first token of sentence B for a sentence pair; adds bertviz's
            "Sentence A -> Sentence B" etc. filter drop-down.
        prettify_tokens: strip ``Ġ``/``▁``/``</w>`` markers as bertviz does.
        height: if given, the view sits in a box of this many CSS pixels that scrolls.

    Returns:
        A complete HTML document that needs no network.

    Raises:
        ValueError: bad shapes, indices or sizes (see ``MAX_TOKENS`` and ``MAX_VALUES``).
    """
    return _render(
        "head_view",
        attention,
        tokens,
        layers=layers,
        heads=None,
        sentence_b_start=sentence_b_start,
        prettify_tokens=prettify_tokens,
        height=height,
        layer=layer,
        initial_heads=heads,
    )


def model_view_html(
    attention: Any,
    tokens: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    sentence_b_start: int | None = None,
    display_mode: str = "dark",
    prettify_tokens: bool = True,
    height: int | None = None,
) -> str:
    """bertviz model view (a grid of thumbnails, one per layer and head; click one to enlarge it).

    Args:
        attention: ``(L, H, T, T)`` array or tensor for one input, padding removed.
        tokens: the ``T`` word-piece strings.
        layers: layers drawn (indices into ``L``); default all.
        heads: heads drawn (indices into ``H``); default all. The grid has ``len(layers) * len(heads)`` cells.
        sentence_b_start: index of the first token of sentence B for a sentence pair.
        display_mode: ``"dark"`` (bertviz's default) or ``"light"``.
        prettify_tokens: strip ``Ġ``/``▁``/``</w>`` markers as bertviz does.
        height: if given, the view sits in a box of this many CSS pixels that scrolls.

    Returns:
        A complete HTML document that needs no network.

    Raises:
        ValueError: bad shapes, indices or sizes (see ``MAX_TOKENS`` and ``MAX_VALUES``).
    """
    if display_mode not in ("dark", "light"):
        raise ValueError(f"display_mode must be 'dark' or 'light', got {display_mode!r}")
    return _render(
        "model_view",
        attention,
        tokens,
        layers=layers,
        heads=heads,
        sentence_b_start=sentence_b_start,
        prettify_tokens=prettify_tokens,
        height=height,
        display_mode=display_mode,
    )


# --------------------------------------------------------------------------------------------------
# shared implementation


def _render(
    view: str,
    attention: Any,
    tokens: Sequence[str],
    *,
    layers: Sequence[int] | None,
    heads: Sequence[int] | None,
    sentence_b_start: int | None,
    prettify_tokens: bool,
    height: int | None,
    layer: int | None = None,
    initial_heads: Sequence[int] | None = None,
    display_mode: str | None = None,
) -> str:
    """Validate, convert to bertviz's format, call bertviz, and make the result offline."""
    import bertviz

    att, tokens = _as_attention(attention, tokens)
    n_layers, n_heads, n_tokens, _ = att.shape
    layers = _indices(layers, n_layers, "layers")
    heads = _indices(heads, n_heads, "heads")
    if initial_heads is not None:
        initial_heads = _indices(initial_heads, n_heads, "heads")
    if layer is not None:
        layer = _index(layer, "layer")
        if layer not in layers:
            raise ValueError(f"layer {layer} is not among the included layers {layers}")
    if sentence_b_start is not None:
        sentence_b_start = _index(sentence_b_start, "sentence_b_start")
        if not 0 < sentence_b_start < n_tokens:
            raise ValueError(
                f"sentence_b_start must be between 1 and {n_tokens - 1} (both sentences non-empty), "
                f"got {sentence_b_start}"
            )
    if height is not None:
        height = _index(height, "height")
        if height <= 0:
            raise ValueError(f"height must be a positive number of pixels, got {height}")
    n_values = len(layers) * len(heads) * n_tokens * n_tokens * (2 if sentence_b_start is not None else 1)
    if n_values > MAX_VALUES:
        raise ValueError(
            f"this view would carry {n_values:,} attention values ({len(layers)} layers x {len(heads)} heads x "
            f"{n_tokens}x{n_tokens} tokens), more than the limit of {MAX_VALUES:,}; pass fewer layers= or "
            f"heads=, or a shorter input"
        )

    # bertviz's format: a tuple of L tensors shaped (1, H, T, T). It selects include_layers/include_heads
    # itself; float64 rounded to _DECIMALS serialises as short JSON numbers.
    per_layer = tuple(att[i].unsqueeze(0) for i in range(n_layers))
    kwargs: dict[str, Any] = dict(
        attention=per_layer,
        tokens=list(tokens),
        sentence_b_start=sentence_b_start,
        prettify_tokens=prettify_tokens,
        include_layers=layers,
        html_action="return",
    )
    if view == "head_view":
        kwargs.update(layer=layer, heads=initial_heads)
    else:
        kwargs.update(include_heads=heads, display_mode=display_mode)
    raw = getattr(bertviz, view)(**kwargs).data
    return _offline_document(raw, title=f"bertviz {view.replace('_', ' ')}", height=height,
                             fit_width=view == "model_view")


def _as_attention(attention: Any, tokens: Sequence[str]):
    """Return ``(attention as a float64 torch tensor (L, H, T, T) rounded, tokens as list[str])``."""
    import numpy as np
    import torch

    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise ValueError("tokens must be a list of word-piece strings")
    tokens = [str(t) for t in tokens]
    if isinstance(attention, torch.Tensor):
        att = attention.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            att = torch.from_numpy(np.array(attention, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"attention must be a numeric array or tensor: {exc}") from None
    if att.ndim != 4:
        raise ValueError(
            f"attention must have 4 dimensions (layers, heads, tokens, tokens) for one input, "
            f"got shape {tuple(att.shape)}"
        )
    n_layers, n_heads, rows, cols = att.shape
    if n_layers == 0 or n_heads == 0:
        raise ValueError(f"attention has no layers or no heads: shape {tuple(att.shape)}")
    if not tokens:
        raise ValueError("tokens is empty")
    if len(tokens) > MAX_TOKENS:
        raise ValueError(f"{len(tokens)} tokens is more than the limit of {MAX_TOKENS}; use a shorter input")
    if rows != len(tokens) or cols != len(tokens):
        raise ValueError(
            f"attention shape {tuple(att.shape)} does not match {len(tokens)} tokens: the last two dimensions "
            f"must both equal len(tokens) (remove padding first)"
        )
    if not bool(torch.isfinite(att).all()):
        raise ValueError("attention contains NaN or infinite values")
    return torch.round(att, decimals=_DECIMALS), tokens


def _index(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _indices(values: Sequence[int] | None, size: int, name: str) -> list[int]:
    """Validate a list of distinct indices into ``range(size)``; ``None`` means all of them."""
    if values is None:
        return list(range(size))
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a list of integers, got {values!r}")
    out = [_index(v, name) for v in values]
    if not out:
        raise ValueError(f"{name} must not be empty (pass None for all)")
    bad = [v for v in out if not 0 <= v < size]
    if bad:
        raise ValueError(f"{name} {bad} out of range: there are {size} (indices 0..{size - 1})")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} contains duplicates: {out}")
    return out


# The model view draws one fixed-size SVG (12 heads: 970 px): in a narrower frame its right-hand heads were cut
# off. This zooms the drawing down to the page's width (never up), on load and on every resize; bertviz's
# clicks and hovers keep working (the browser maps them through the zoom). Our design.
_FIT_WIDTH_JS = """(function () {
  function fit() {
    var vis = document.getElementById("vis"), svg = vis && vis.querySelector("svg");
    if (!svg) { return; }
    vis.style.zoom = 1;
    var wide = svg.getBoundingClientRect().width, room = document.body.clientWidth;
    vis.style.zoom = wide > room ? (room / wide).toFixed(4) : 1;
  }
  window.addEventListener("load", fit);
  window.addEventListener("resize", fit);
})();
"""


def _offline_document(raw: str, *, title: str, height: int | None, fit_width: bool = False) -> str:
    """Turn bertviz's ``html_action='return'`` HTML into a complete offline document; ``fit_width``: zoom the
    drawing down to the page's width (``_FIT_WIDTH_JS``)."""
    body, n_cdn = _CDN_SCRIPT_RE.subn("", raw)
    start = body.find(_JS_OPEN)
    end = body.rfind("</script>")  # the last one: tokens inside the JSON may themselves contain "</script>"
    if n_cdn != 1 or start < 0 or end < start:
        raise RuntimeError("unexpected bertviz HTML layout; bertviz_offline supports bertviz 1.4.x")
    vis_html, js = body[:start], body[start + len(_JS_OPEN) : end]
    js, n_config = _REQUIRE_CONFIG_RE.subn("", js, count=1)
    if n_config != 1:
        raise RuntimeError("bertviz's require.config block was not found; bertviz_offline supports bertviz 1.4.x")
    # Token text lives in JSON string literals, where "<\/" and "<\!" mean "</" and "<!": the escape keeps a
    # token such as "</script>" from ending the script element (bertviz's own JS contains neither sequence).
    js = js.replace("</", "<\\/").replace("<!--", "<\\!--")
    if height is not None:
        vis_html = f'<div style="height:{height}px;overflow:auto">{vis_html}</div>'
    d3_js, jquery_js = _libraries()
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>{html.escape(title)}</title>\n"
        "<style>body{margin:8px;background:#fff;}</style>\n"
        f"<script>\n{d3_js}\n</script>\n"
        f"<script>\n{jquery_js}\n</script>\n"
        f"<script>\n{_SHIM_JS}</script>\n"
        "</head>\n<body>\n"
        f"{vis_html.strip()}\n"
        f"<script>\n{js.strip()}\n</script>\n"
        + (f"<script>\n{_FIT_WIDTH_JS}</script>\n" if fit_width else "")
        + "</body>\n</html>\n"
    )


@functools.lru_cache(maxsize=1)
def _libraries() -> tuple[str, str]:
    """(d3 v5 from mpld3's package data, jQuery from xstatic-jquery's), read once."""
    d3_js = _package_file("mpld3", "js", "d3.v5.min.js")
    jquery_js = _package_file("xstatic.pkg.jquery", "data", "jquery.min.js")
    for name, text in (("d3", d3_js), ("jQuery", jquery_js)):
        if re.search(r"</script|<!--", text, re.IGNORECASE):
            raise RuntimeError(f"the packaged {name} contains a sequence that cannot be inlined in <script>")
    return d3_js, jquery_js


def _package_file(package: str, *parts: str) -> str:
    """Read a data file shipped inside an installed package, without importing the package itself
    (importing mpld3 would pull in matplotlib)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed; it provides {'/'.join(parts)} for offline bertviz")
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*parts)
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise RuntimeError(f"{'/'.join(parts)} not found in package {package!r}")
