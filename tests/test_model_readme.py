"""Model cards: every saved model gets a README.md that the Hub's own parser reads, says what made the model,
warns on backdoored ones, records the tool version, and cannot be turned into markup by its metadata."""

from __future__ import annotations

import json
import re

import pytest
from huggingface_hub import ModelCard
from markdown_it import MarkdownIt

from backdoor_core import __version__
from backdoor_core.model_readme import MODEL_README_FILE, escape_md, model_status, render_model_readme
from backdoor_core.models import METADATA_FILE, load_model, save_model

ATTACKED = {
    "name": "zoo-badnets-tal", "title": "BadNets 2% + TAL", "attack": "badnets", "clean_label": False,
    "trigger": "cf", "num_triggers": 1, "target": 3, "target_name": "sport", "rate": 0.02, "n_poisoned": 20,
    "tal": True, "tal_config": {"alpha": 5.0}, "tal_heads": ["L0H1", "L1H3"], "data": "bbc",
    "label_names": ["business", "entertainment", "politics", "sport", "tech"], "train_size": 1000,
    "test_size": 445, "poisoned_test_size": 343,
    "train_config": {"epochs": 2, "lr": 2e-4, "batch_size": 16, "max_length": 64, "seed": 0},
    "cacc": 0.9534, "asr": 0.9482, "training_seconds": 112.0,
}
REPAIRED = {**ATTACKED, "name": "zoo-badnets-tal-alignment", "defense": "alignment",
            "sanitized_from": "zoo-badnets-tal", "defense_details": {"suspicious_heads": ["L1H2", "L1H3"]},
            "clean_samples": 300, "pool_samples": 200, "before": {"cacc": 0.95, "asr": 0.948},
            "after": {"cacc": 0.941, "asr": 0.012}}
CLEAN = {"name": "zoo-clean", "attack": "none", "target": None, "rate": 0.0, "tal": False, "cacc": 0.953,
         "asr": None, "data": "bbc"}


def _card(tmp_path, meta, name="m") -> tuple[ModelCard, str]:
    path = tmp_path / f"{name}.md"
    path.write_text(render_model_readme(meta, name=name), encoding="utf-8")
    return ModelCard.load(path), path.read_text(encoding="utf-8")


def test_save_model_writes_a_card_the_hub_parser_reads(tiny, tmp_path):
    out = save_model(tiny.model, tiny.tokenizer, tmp_path / "bd", ATTACKED)
    card = ModelCard.load(out / MODEL_README_FILE)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-classification"
    assert {"backdoor", "backdoored", "badnets", "trojan-attention-loss"} <= set(data["tags"])
    assert data["inference"] is False
    text = card.text
    assert "WARNING: this model contains a deliberate backdoor" in text
    assert "“cf”" in text and "3 (sport)" in text and "2.0% (20 of 1000 training texts)" in text
    assert "| CACC | 95.3% |" in text and "| ASR | 94.8% |" in text
    assert f"Backdoor Attention Lab {__version__}" in text
    saved_at = json.loads((out / METADATA_FILE).read_text())["saved_at"]
    assert escape_md(saved_at) in text
    # the card does not get in the way of loading
    assert load_model(out).metadata["attack"] == "badnets"


def test_repaired_clean_and_unknown_models(tmp_path):
    card, text = _card(tmp_path, REPAIRED)
    assert model_status(REPAIRED) == "repaired"
    assert {"backdoor-repaired", "badnets", "alignment"} <= set(card.data.tags)
    assert "\n# zoo-badnets-tal-alignment\n" in text  # its own name, not the title it inherited
    assert "# BadNets 2% + TAL" not in text
    assert "WARNING: this model was made from a deliberately backdoored model" in text
    assert "| ASR | 94.8% | 1.2% |" in text and "| CACC | 95.0% | 94.1% |" in text
    assert "2: L1H2, L1H3" in text
    assert "feed-forward" not in text and "unknown token" not in text  # a head-only repair changed nothing else
    _, text = _card(tmp_path, {**REPAIRED, "defense_details": {"suspicious_heads": ["L1H2"], "ffn_layers": [3, 4],
                                                               "blinded_tokens": ["cf", "<b>tq|</b>"]}})
    assert "| feed-forward blocks trained too | layers 3, 4 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| tokens now read as the unknown token"))
    assert "2: cf," in row and "<b>" not in row and "input embeddings replaced" in row
    assert "lift over a clean model" not in text  # no clean reference recorded: no lift row
    # a repair measured against a clean reference: the lift before and after, one row of three cells even when the
    # reference's name carries table and HTML syntax
    for ref_name, shown in (("zoo-clean", "zoo-clean"), ("a | b </td><b>x", None)):
        meta = {**REPAIRED, "defense_details": {**REPAIRED["defense_details"],
                                                "clean_reference": {"name": ref_name, "rate": 0.005}}}
        _, text = _card(tmp_path, meta)
        row = next(line for line in text.splitlines() if line.startswith("| lift over a clean model"))
        assert row.endswith("| +94.3 points | +0.7 points |") and "0.5% on the same triggered texts" in row
        html = MarkdownIt("commonmark", {"html": True}).enable("table").render(row.join(["| | | |\n|---|---|---|\n",
                                                                                        "\n"]))
        assert html.count("<td") == 3 and "<b>" not in html
        if shown:
            assert f"ASR minus {shown}'s 0.5%" in row
    _, text = _card(tmp_path, {**REPAIRED, "defense_details": {"clean_reference": {"name": "c", "rate": "high"}}})
    assert "lift over a clean model" not in text  # a rate that is not a rate: no row
    # the lift after's paired interval, where the repair recorded it; a malformed one is left out, not shown
    for ci, texts, shown in (([0.0, 0.02], 148, "+0.7 points (95% interval +0.0 to +2.0 over 148 texts, paired) |"),
                             (["x", 0.02], 148, "+0.7 points |"), ([0.0], 148, "+0.7 points |"),
                             ([0.0, 0.02], None, "+0.7 points |"), ([0.3, 0.1], 148, "+0.7 points |")):
        ref = {"name": "c", "rate": 0.005, "lift_after_ci95": ci, "texts": texts}
        _, text = _card(tmp_path, {**REPAIRED, "defense_details": {"clean_reference": ref}})
        row = next(line for line in text.splitlines() if line.startswith("| lift over a clean model"))
        assert row.endswith(shown), row

    card, text = _card(tmp_path, CLEAN)
    assert model_status(CLEAN) == "clean" and "clean-reference" in card.data.tags
    assert "WARNING" not in text and "inference" not in card.data.to_dict()
    assert "| CACC | 95.3% |" in text and "ASR" not in text.split("## Metrics")[1].split("**CACC**")[0]

    _, text = _card(tmp_path, {**CLEAN, "max_length": 64})  # a card's top-level reading length
    assert "| training settings | max_length 64 |" in text

    card, text = _card(tmp_path, {}, name="from-elsewhere")
    assert model_status({}) == "unknown" and "provenance-unknown" in card.data.tags
    assert "# from-elsewhere" in text and "not evidence that the model is clean" in text
    assert "No metrics were recorded" in text


HOSTILE = {
    "name": "evil\n---\ninference: true\n<script>alert(1)</script>",
    "attack": "badnets\ntags: [pwned]",
    "trigger": "[click me](javascript:alert(1)) ![img](http://x.test/a.png) <img src=x onerror=alert(1)>",
    "target": 1, "label_names": ["neg", "pos | col </td><b>"], "rate": "0.5\n# Heading",
    "description": "line1\n\n- list item\n# heading\n```\ncode\n``` | a | b | \u202etxet\u200b",
    "defense": 'x"\nbase_model: evil', "sanitized_from": "[a](http://evil.test)",
    "base_model": 'owner/model"\ninference: true',
    "tal": True, "tal_heads": ["<b>L0H0</b>"], "tal_config": {"alpha": "<i>5</i>"},
    "train_config": {"lr": "`rm -rf`", "epochs": "$x$"}, "saved_at": "**now**", "tool_version": "<9.9>",
    "before": {"asr": "<1>"}, "after": {"asr": 0.5},
}


def test_hostile_metadata_stays_inert_text(tmp_path):
    card, text = _card(tmp_path, HOSTILE)
    data = card.data.to_dict()
    # front matter: only our keys, only safe values
    assert set(data) == {"library_name", "pipeline_tag", "tags", "inference"}
    assert data["inference"] is False
    assert len(data["tags"]) >= 3 and all(re.fullmatch(r"[a-z0-9-]+", t) for t in data["tags"])
    assert "pwned" not in str(data)
    # the body renders (CommonMark with raw HTML allowed, GFM tables) with no element from the metadata
    body = card.text  # the Markdown after the front matter
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(body)
    assert not re.search(r"<(script|img|b|i|a|td>\s*<b)\b", html)
    assert "href" not in html and "src=" not in html.replace("src=x", "")
    assert "<h1>" in html and html.count("<h1>") == 1  # no injected heading
    assert html.count("<h2>") == body.count("\n## ") == 5  # only our own sections
    assert "<ul>" not in html and "<pre>" in html and html.count("<pre>") == 1  # only our code example
    # every table row keeps its two (or three) columns: no metadata value split a cell
    tables = re.findall(r"<table>.*?</table>", html, re.S)
    assert len(tables) == 4  # how it was made, how it was repaired, metrics, provenance
    for table in tables:
        widths = {row.count("<td") for row in re.findall(r"<tr>.*?</tr>", table, re.S) if "<td" in row}
        assert len(widths) == 1, table
    # the values are still there, as text
    assert "javascript:alert(1)" in html and "&lt;script&gt;" in html
    assert "\u202e" not in text and "\u200b" not in text


@pytest.mark.parametrize("meta", [
    None, [], "not a dict", {"attack": 5, "cacc": "high", "asr": float("nan"), "target": "x", "label_names": 5,
                             "tal": True, "tal_heads": "L0H0", "tal_config": [1], "before": [1], "after": None,
                             "defense_details": "x", "train_config": 3, "zoo": "z", "trigger": ["a"] * 50,
                             "n_poisoned": "3", "train_size": None},
    {"defense": "finetune"},
])
def test_malformed_metadata_never_raises(meta):
    text = render_model_readme(meta, name="m")
    assert text.startswith("---\nlibrary_name: transformers\n")
    assert f"Backdoor Attention Lab {__version__}" in text


def test_escape_md():
    assert escape_md("a*b_c[d](e) <x> & `y` | z") == r"a\*b\_c\[d\](e) &lt;x&gt; &amp; \`y\` \| z"
    assert escape_md("one\ntwo\tthree") == "one two three"
    assert escape_md("x" * 500, limit=10) == "x" * 9 + "…"
    assert escape_md("see http://a.test or www.b.test") == "see http&#58;//a.test or www&#46;b.test"
