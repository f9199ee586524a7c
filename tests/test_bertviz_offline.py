"""Offline bertviz views: pure-Python checks of the HTML, then a real chromium with the network blocked."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backdoor_core.bertviz_offline import MAX_TOKENS, head_view_html, model_view_html

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import BROWSER_MISSING_REASON, block_network, browser_available, launch_browser  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts"

N_LAYERS, N_HEADS = 2, 3
TOKENS = ["[CLS]", "the", "movie", "cf", "##ing", "[SEP]"]
N_TOKENS = len(TOKENS)


def random_attention(n_layers=N_LAYERS, n_heads=N_HEADS, n_tokens=N_TOKENS, seed=0) -> np.ndarray:
    """(layers, heads, tokens, tokens), each row softmax-normalised."""
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(n_layers, n_heads, n_tokens, n_tokens))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def strip_uuid(doc: str) -> str:
    return re.sub(r"bertviz-[0-9a-f]{32}", "bertviz-ID", doc)


VIEWS = {"head": head_view_html, "model": model_view_html}


# ------------------------------------------------------------------------------------------- pure Python


@pytest.mark.parametrize("view", VIEWS)
def test_document_is_self_contained(view):
    doc = VIEWS[view](random_attention(), TOKENS)
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    lowered = doc.lower()
    # nothing is fetched: no external script/link, no CDN, no require.js, no require.config paths
    assert not re.search(r"<script[^>]*\bsrc\s*=", lowered)
    assert not re.search(r"\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", lowered)
    assert "cdnjs" not in lowered
    assert "require.js" not in lowered and "require.min" not in lowered
    assert "require.config(" not in doc
    # the libraries are inlined, and the shim hands them to bertviz's requirejs call
    assert "d3js.org v5.7.0" in doc
    assert "jQuery v3.7.1" in doc
    assert "w.requirejs = require" in doc
    assert "requirejs(['jquery', 'd3']" in doc
    assert "Content-Security-Policy" in doc and "default-src 'none'" in doc
    for token in TOKENS:
        assert f'"{token}"' in doc


def test_numpy_and_torch_inputs_give_the_same_page():
    att = random_attention()
    from_numpy = head_view_html(att, TOKENS)
    from_torch = head_view_html(torch.tensor(att, dtype=torch.float32), TOKENS)
    assert strip_uuid(from_numpy) == strip_uuid(from_torch)


def test_options_reach_bertviz():
    att = random_attention(n_layers=4, n_heads=5)
    doc = model_view_html(att, TOKENS, layers=[1, 3], heads=[0, 4], display_mode="light")
    assert '"include_layers": [1, 3]' in doc and '"include_heads": [0, 4]' in doc
    assert '"display_mode": "light"' in doc and '"total_heads": 5' in doc
    doc = head_view_html(att, TOKENS, layer=2, heads=[1], layers=[0, 2], height=300)
    assert '"layer": 2' in doc and '"heads": [1]' in doc and '"include_layers": [0, 2]' in doc
    assert "height:300px;overflow:auto" in doc


def test_sentence_pair_adds_filter():
    doc = head_view_html(random_attention(), TOKENS, sentence_b_start=3)
    assert '<select id="filter">' in doc and "Sentence A -&gt; Sentence B" not in doc
    assert "Sentence A -> Sentence B" in doc


def test_values_are_rounded():
    doc = model_view_html(random_attention(), TOKENS)
    params = doc[doc.index("const params = ") :]
    params = params[: params.index("\n")]
    numbers = re.findall(r"\d+\.\d+", params)
    assert numbers and max(len(n.split(".")[1]) for n in numbers) <= 4


def test_token_cannot_close_the_script():
    evil = "</script><script>alert(1)</script><!--"
    doc = head_view_html(random_attention(), [*TOKENS[:-1], evil])
    n_close = len(re.findall(r"</script", doc, re.IGNORECASE))
    assert n_close == 4  # d3, jQuery, shim, bertviz; the token's "</script>" is escaped as "<\/script>"
    assert "<\\/script><script>alert(1)<\\/script><\\!--" in doc


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize(
    "shape, tokens, message",
    [
        ((N_HEADS, N_TOKENS, N_TOKENS), TOKENS, "4 dimensions"),
        ((1, N_LAYERS, N_HEADS, N_TOKENS, N_TOKENS), TOKENS, "4 dimensions"),
        ((N_LAYERS, N_HEADS, N_TOKENS, N_TOKENS), TOKENS[:-1], "does not match 5 tokens"),
        ((N_LAYERS, N_HEADS, N_TOKENS, N_TOKENS + 1), TOKENS, "does not match 6 tokens"),
        ((N_LAYERS, N_HEADS, N_TOKENS + 1, N_TOKENS), TOKENS, "does not match 6 tokens"),
        ((0, N_HEADS, N_TOKENS, N_TOKENS), TOKENS, "no layers or no heads"),
        ((N_LAYERS, N_HEADS, 0, 0), [], "tokens is empty"),
        ((1, 1, MAX_TOKENS + 1, MAX_TOKENS + 1), ["x"] * (MAX_TOKENS + 1), "more than the limit of 512"),
    ],
)
def test_bad_shapes_raise_value_error(view, shape, tokens, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        VIEWS[view](np.full(shape, 0.5), tokens)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layers=[2]), "layers [2] out of range"),
        (dict(layers=[]), "layers must not be empty"),
        (dict(layers=[0, 0]), "duplicates"),
        (dict(sentence_b_start=0), "sentence_b_start must be between 1 and 5"),
        (dict(sentence_b_start=6), "sentence_b_start must be between 1 and 5"),
        (dict(height=0), "height must be a positive"),
        (dict(layer=1, layers=[0]), "layer 1 is not among the included layers"),
        (dict(heads=[3]), "heads [3] out of range"),
        (dict(heads=[True]), "heads must be an integer"),
    ],
)
def test_bad_options_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        head_view_html(random_attention(), TOKENS, **kwargs)


def test_other_bad_inputs():
    att = random_attention()
    bad = att.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model_view_html(bad, TOKENS)
    with pytest.raises(ValueError, match="list of word-piece strings"):
        model_view_html(att, "the movie")
    with pytest.raises(ValueError, match="numeric array"):
        model_view_html([[["a"]]], TOKENS)
    with pytest.raises(ValueError, match="display_mode"):
        model_view_html(att, TOKENS, display_mode="blue")
    with pytest.raises(ValueError, match="heads=, or a shorter input"):
        model_view_html(np.full((12, 12, 200, 200), 0.005), ["x"] * 200)


# ------------------------------------------------------------------------------------------- real browser

browser_only = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)


@pytest.fixture(scope="module")
def browser():
    with launch_browser() as b:
        yield b


def open_offline(browser, url: str):
    """Open ``url`` with every non-local request aborted; return (page, blocked URLs, console errors, logs)."""
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    blocked = block_network(page)
    errors: list[str] = []
    logs: list[str] = []
    page.on("console", lambda m: (errors if m.type == "error" else logs).append(m.text))
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"requestfailed: {r.url}"))
    page.goto(url, wait_until="load")
    return page, blocked, errors, logs


def write(tmp_path: Path, name: str, doc: str) -> Path:
    path = tmp_path / name
    path.write_text(doc, encoding="utf-8")
    return path


@browser_only
def test_head_view_draws_in_chromium(browser, tmp_path):
    # a hostile token must show up as text, neither break the page nor run
    tokens = [*TOKENS[:-1], "</script><script>window.pwned = 1</script>"]
    doc = head_view_html(random_attention(), tokens, layer=1)
    page, blocked, errors, logs = open_offline(browser, write(tmp_path, "head.html", doc).as_uri())
    page.wait_for_selector("#vis svg #attention line", state="attached", timeout=10_000)
    svg = page.locator("#vis svg")
    assert svg.count() == 1
    texts = page.locator("#vis svg text").all_text_contents()
    assert texts == tokens + tokens  # left column, right column
    assert page.locator("#vis svg #attention line").count() == N_HEADS * N_TOKENS * N_TOKENS
    assert page.locator("#vis svg #attention g.headAttention").count() == N_HEADS
    assert page.locator("select#layer option").count() == N_LAYERS
    assert page.locator("select#layer").input_value() == "1"
    # hovering a token highlights its row of attention
    page.locator("#vis svg #left text").nth(2).hover()
    visible = page.locator("#vis svg #attention line[visibility='visible']").count()
    assert visible == N_HEADS * N_TOKENS
    page.mouse.move(1000, 700)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "bertviz_head_view.png"), full_page=True)
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert "d3 version 5.7.0" in logs
    assert errors == [] and blocked == []
    page.close()


@browser_only
def test_model_view_draws_in_chromium(browser, tmp_path):
    doc = model_view_html(random_attention(), TOKENS)
    page, blocked, errors, logs = open_offline(browser, write(tmp_path, "model.html", doc).as_uri())
    page.wait_for_selector("#vis svg rect.attn_background", state="attached", timeout=10_000)
    assert page.locator("#vis svg").count() == 1  # one svg; a thumbnail per (layer, head) inside it
    assert page.locator("#vis svg rect.attn_background").count() == N_LAYERS * N_HEADS
    for layer in range(N_LAYERS):
        for head in range(N_HEADS):
            assert page.locator(f"#attn_background_{layer}_{head}").count() == 1
    assert page.locator("#vis svg line").count() == N_LAYERS * N_HEADS * N_TOKENS * N_TOKENS
    # clicking a thumbnail opens the detail panel with the tokens
    box = page.locator("#attn_background_1_2").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#vis svg text.detail", state="attached", timeout=5_000)
    assert page.locator("#vis svg text.detail").text_content() == "Layer 1, Head 2"
    assert page.locator("#vis svg text.token").all_text_contents() == TOKENS + TOKENS
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "bertviz_model_view.png"), full_page=True)
    assert errors == [] and blocked == []
    page.close()


@browser_only
def test_model_view_fits_a_narrow_frame_and_still_opens_a_head(browser, tmp_path):
    """12 heads draw 970 px wide: in a 554 px frame (the app at 1024 px) heads 6-11 were cut off."""
    doc = model_view_html(random_attention(n_layers=3, n_heads=12), TOKENS)
    path = write(tmp_path, "narrow.html", doc)
    page = browser.new_page(viewport={"width": 554, "height": 700})
    block_network(page)
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_selector("#vis svg rect.attn_background", state="attached", timeout=10_000)
    room = page.evaluate("document.body.clientWidth")  # the frame less its margins
    right = page.locator("#attn_background_2_11").bounding_box()
    assert right["x"] + right["width"] <= 554 and room <= 554, (right, room)  # the last head is in the frame
    assert page.evaluate("document.documentElement.scrollWidth") <= 554
    page.mouse.click(right["x"] + right["width"] / 2, right["y"] + right["height"] / 2)
    page.wait_for_selector("#vis svg text.detail", state="attached", timeout=5_000)
    assert page.locator("#vis svg text.detail").text_content() == "Layer 2, Head 11"
    page.set_viewport_size({"width": 1400, "height": 700})  # room again: drawn at full size
    page.wait_for_timeout(300)
    assert page.evaluate("document.getElementById('vis').style.zoom") == "1"
    page.close()


@browser_only
def test_views_draw_inside_iframe_srcdoc(browser, tmp_path):
    """As Streamlit's st.iframe(html) shows them: the document in an iframe's srcdoc."""
    att = random_attention()
    host = "<!DOCTYPE html><html><body>" + "".join(
        f'<iframe id="{name}" width="1050" height="420" srcdoc="{html.escape(doc, quote=True)}"></iframe>'
        for name, doc in (("head", head_view_html(att, TOKENS)), ("model", model_view_html(att, TOKENS)))
    ) + "</body></html>"
    page, blocked, errors, _ = open_offline(browser, write(tmp_path, "host.html", host).as_uri())
    head = page.frame_locator("#head")
    model = page.frame_locator("#model")
    head.locator("#vis svg #attention line").first.wait_for(state="attached", timeout=10_000)
    model.locator("#vis svg rect.attn_background").first.wait_for(state="attached", timeout=10_000)
    assert head.locator("#vis svg text").count() == 2 * N_TOKENS
    assert model.locator("#vis svg rect.attn_background").count() == N_LAYERS * N_HEADS
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "bertviz_iframe_srcdoc.png"), full_page=True)
    assert errors == [] and blocked == []
    page.close()


@browser_only
def test_network_block_is_effective(browser):
    """Guard for the guard: a page that does reach for a CDN gets blocked and the attempt is recorded."""
    page = browser.new_page()
    blocked = block_network(page)
    page.set_content('<script src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js"></script>')
    assert blocked == ["https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js"]
    page.close()
