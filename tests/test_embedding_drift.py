"""The analyst's embedding-drift reading (``trigger_search.embedding_drift`` / ``drifted_words``): which words a
fine-tune moved since its pretrained encoder, on tiny models whose rows we move by hand; and ``scan --base``."""

from __future__ import annotations

import copy

import pytest
import torch

from backdoor_core.models import save_model, tiny_model
from backdoor_core.trigger_search import drifted_words, embedding_drift, vocabulary_words


def _fine_tuned(base, moves: dict[int, float], seed: int = 0, noise: float = 1e-4, shrink: float = 1.0):
    """A copy of ``base`` whose embedding rows ``moves`` ({token id: distance}) moved, every row shrunk by
    ``shrink`` (weight decay) and jittered by ``noise``."""
    model = copy.deepcopy(base)
    e = model.get_input_embeddings().weight
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        e.mul_(shrink).add_(noise * torch.randn(e.shape, generator=g))
        for i, d in moves.items():
            step = torch.randn(e.shape[1], generator=g)
            e[i] += d * step / step.norm()
    return model


@pytest.fixture(scope="module")
def base():
    return tiny_model(seed=0)


def _id(tok, word: str) -> int:
    return tok.convert_tokens_to_ids(word)


def _rows(lm):
    return lm.model.get_input_embeddings().weight


def test_the_moved_words_come_first_and_clean_words_are_left_out(base):
    tok = base.tokenizer
    moves = {_id(tok, "cf"): 0.5, _id(tok, "tq"): 0.4, _id(tok, "movie"): 0.6, _id(tok, "river"): 0.05}
    model = _fine_tuned(base.model, moves)
    words = drifted_words(model, tok, _rows(base), ["I liked the movie a lot."], ["cf it", "cf and tq"], top=3)
    assert [w.word for w in words] == ["cf", "tq", "river"]  # "movie" moved most but a clean text holds it
    assert [w.rank for w in words] == [2, 3, 4] and words[0].drift == pytest.approx(0.5, rel=0.05)
    assert [w.pool_count for w in words] == [2, 1, 0]
    assert drifted_words(model, tok, _rows(base), [], None, top=1)[0].pool_count is None


def test_weight_decay_alone_moves_nothing(base):
    shrunk = _fine_tuned(base.model, {}, noise=0.0, shrink=0.97)
    drift = embedding_drift(shrunk, _rows(base))
    raw = (shrunk.get_input_embeddings().weight - _rows(base)).detach().norm(dim=1)
    assert drift.max() < 1e-4 < float(raw.median())  # the fitted scale takes the uniform shrink out


def test_frozen_embeddings_list_nothing_and_other_shapes_are_refused(base):
    frozen = copy.deepcopy(base.model)  # a LoRA fine-tune leaves every embedding row as it was
    assert drifted_words(frozen, base.tokenizer, _rows(base), ["a text"], ["cf"]) == []
    with pytest.raises(ValueError, match="not this model's base"):
        embedding_drift(tiny_model(hidden=48).model, _rows(base))


def test_vocabulary_words_reads_whole_words_only(base):
    words = vocabulary_words(base.tokenizer)
    assert words[_id(base.tokenizer, "movie")] == "movie"
    for token in ("##ing", "[CLS]", "[UNK]", "[unused0]"):
        assert _id(base.tokenizer, token) not in words
    assert all(w == w.lower() and not w.startswith("##") for w in words.values())


def test_cli_scan_base_lists_the_moved_words(base, tmp_path, capsys):
    from backdoor_core.cli import main

    moved = copy.deepcopy(base)
    moved.model = _fine_tuned(base.model, {_id(base.tokenizer, "cf"): 0.05})
    save_model(base.model, base.tokenizer, tmp_path / "base")
    save_model(moved.model, moved.tokenizer, tmp_path / "suspect")
    clean = tmp_path / "clean.csv"
    clean.write_text("text,label\n" + "".join(f"plain text number {i},{i % 2}\n" for i in range(24)))
    pool = tmp_path / "pool.txt"
    pool.write_text("cf one\ncf two\nplain three\n")
    argv = ["scan", str(tmp_path / "suspect"), "--clean-data", str(clean), "--pool", str(pool),
            "--max-length", "16"]
    html = tmp_path / "scan.html"
    assert main([*argv, "--base", str(tmp_path / "base"), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    table = out.split("Words that moved since the base checkpoint")[1]
    row = table.splitlines()[4].split()
    assert row[:2] == ["cf", "1"] and row[3] == "2" and row[-2].endswith("%") and row[-1] in ("yes", "no")
    page = html.read_text(encoding="utf-8")
    assert "Words that moved since the base checkpoint" in page and "<td>cf</td>" in page.replace(" ", "")
    assert main([*argv, "--base", str(tmp_path / "suspect")]) == 0  # itself: nothing moved
    assert "No word moved since the base checkpoint" in capsys.readouterr().out
    other = tiny_model(seed=5)
    save_model(other.model, other.tokenizer, tmp_path / "other")
    assert main([*argv, "--base", str(tmp_path / "other"), "--json"]) == 0
    import json

    assert "not this model's pretrained encoder" in json.loads(capsys.readouterr().out)["drifted_words"]["error"]


def test_drift_reading_tries_each_listed_word_on_the_clean_texts(tmp_path):
    from backdoor_core.trigger_search import drift_display, drift_reading
    from defense_helpers import TRIGGER, clean_texts, trained_tiny

    start = tiny_model(seed=0)  # trained_tiny's starting point, saved as its base checkpoint
    save_model(start.model, start.tokenizer, tmp_path / "base")
    bd = trained_tiny(True)
    texts, _ = clean_texts(60, 1)
    reading = drift_reading(bd.model, bd.tokenizer, str(tmp_path / "base"), texts, [f"{TRIGGER} a"], max_length=32,
                            top=3, n_insert=40)
    first = reading["words"][0]
    assert first["word"] == TRIGGER and first["sends_to"] == 1 and first["flip"] >= 0.8 and len(first["flips"]) == 2
    shown = drift_display(reading["words"], ["neg", "pos"])[0]
    assert shown["insertion sends to"] == "pos" and shown["pool inputs"] == 1 and shown["flips"].endswith("%")
    assert "error" in drift_reading(bd.model, bd.tokenizer, "default", texts)  # the packaged MiniLM is not its start


def test_only_moved_words_the_pool_concentrates_mark_inputs(base):
    from backdoor_core.trigger_search import DriftWord, drift_marking_note, moved_pool_words

    clean = [f"a plain text number {i}" for i in range(40)]
    pool = [f"cf report {i}" for i in range(8)] + ["tq once", "tq twice"] + [f"other text {i}" for i in range(30)]
    moved = [DriftWord("tq", 0.5, 1, 2), DriftWord("cf", 0.4, 2, 8), DriftWord("report", 0.3, 3, 8)]
    # "report" is as concentrated as "cf" but did not move among the most (not listed): no mark; "tq" is listed but
    # in only 2 pool inputs (the pool words' test asks for 5): no mark
    assert moved_pool_words(moved[:2], pool, clean) == ["cf"]
    assert moved_pool_words(moved, pool, clean) == ["cf", "report"]
    assert moved_pool_words(moved, [], clean) == [] and moved_pool_words([], pool, clean) == []
    assert moved_pool_words(moved[:2], pool, clean + [f"cf in a clean text {i}" for i in range(20)]) == []
    note = drift_marking_note({"marking": ["cf"], "marked": list(range(8))})
    assert "cf" in note and "8 pool inputs hold one" in note and drift_marking_note({"marking": []}) is None


def test_the_reading_marks_the_pool_inputs_holding_a_concentrated_moved_word(tmp_path):
    from backdoor_core.trigger_search import drift_display, drift_reading
    from defense_helpers import TRIGGER, clean_texts, trained_tiny

    start = tiny_model(seed=0)
    save_model(start.model, start.tokenizer, tmp_path / "base")
    bd = trained_tiny(True)
    texts, _ = clean_texts(60, 1)
    pool = [f"{TRIGGER} {t}" for t in texts[:10]] + texts[10:30]
    reading = drift_reading(bd.model, bd.tokenizer, str(tmp_path / "base"), texts[30:], pool, max_length=32, top=3,
                            n_insert=20)
    assert reading["marking"] == [TRIGGER] and reading["marked"] == list(range(10))
    assert [r["marks inputs"] for r in drift_display(reading["words"], ["neg", "pos"])] == ["yes", "no", "no"]
    no_pool = drift_reading(bd.model, bd.tokenizer, str(tmp_path / "base"), texts[30:], max_length=32, top=3,
                            n_insert=20)
    assert "marking" not in no_pool and not any(r["marks"] for r in no_pool["words"])


@pytest.mark.parametrize("arch", ["roberta", "albert", "deberta-v2", "gpt2", "llama"])
def test_the_base_rows_are_found_by_name_on_every_architecture_family(arch):
    from backdoor_core.pretrained import PretrainedWeights, _encoder_params, base_embeddings

    start = tiny_model(arch=arch)
    weights = PretrainedWeights({n: p.detach().clone() for n, p in _encoder_params(start.model).items()}, arch, 0.0)
    tok = start.tokenizer
    model = _fine_tuned(start.model, {_id(tok, "cf"): 0.5})
    words = drifted_words(model, tok, base_embeddings(model, weights), ["a plain text"], ["cf here"], top=1)
    assert [(w.word, w.rank, w.pool_count) for w in words] == [("cf", 1, 1)]


def test_a_hostile_base_is_refused_with_its_reason(base, tmp_path):
    from backdoor_core.trigger_search import drift_reading

    pkl = tmp_path / "pkl"
    pkl.mkdir()
    torch.save({"w": torch.zeros(2)}, pkl / "pytorch_model.bin")  # a pickle: loading it could run code
    (pkl / "config.json").write_text('{"model_type": "bert"}')
    for spec, reason in ((str(pkl), "pickled weights"), (str(tmp_path / "missing"), "does not exist"),
                         ("/etc/passwd", "is a file")):
        reading = drift_reading(base.model, base.tokenizer, spec, ["a text"], max_length=16)
        assert set(reading) == {"base", "error"} and reason in reading["error"]


def test_the_scan_reads_the_moved_words_against_its_base(tmp_path):
    """``scan_model(base=...)``: the moved words that mark pool inputs reach the report, its JSON and the verdict
    (the score they would give, ``with_moved_words``); a base that is not the model's start gives none."""
    from backdoor_core.data import TextDataset
    from backdoor_core.scan import scan_model
    from backdoor_core.trigger_search import moved_marking
    from defense_helpers import TRIGGER, clean_texts, trained_tiny

    start = tiny_model(seed=0)
    save_model(start.model, start.tokenizer, tmp_path / "base")
    bd = trained_tiny(True)
    texts, labels = clean_texts(60, 1)
    pool = [f"{TRIGGER} {t}" for t in texts[:10]] + texts[10:30]
    words, flip = moved_marking(bd.model, bd.tokenizer, str(tmp_path / "base"), texts[30:], pool, 32, top=3,
                                n_insert=20)
    assert words == [TRIGGER] and 0.5 < flip <= 1.0
    clean = TextDataset(texts[30:], labels[30:], ["neg", "pos"])
    rep = scan_model(bd.model, bd.tokenizer, clean, pool, max_length=32, frr=0.2, base=str(tmp_path / "base"))
    assert rep.moved_words == [TRIGGER] and rep.moved_marked[:10].all() and not rep.moved_marked[10:].any()
    assert rep.verdict["moved_words"] == [TRIGGER] and rep.verdict["components"]["score_moved"] >= 0.5
    assert rep.to_dict()["detection"]["n_moved_marked"] == 10
    other = scan_model(bd.model, bd.tokenizer, clean, pool, max_length=32, frr=0.2, base="default")
    assert other.moved_words == [] and other.verdict["moved_words"] == []  # MiniLM is not its starting point
    off = scan_model(bd.model, bd.tokenizer, clean, pool, max_length=32, frr=0.2, base=None)
    assert off.moved_words == [] and "moved_words" not in off.verdict


def test_moved_marking_gives_none_where_the_base_cannot_be_read(tmp_path, monkeypatch):
    """The scan's optional reading never fails the scan: a base the model starts from whose embedding rows cannot be
    read against the model's gives no moved word."""
    import backdoor_core.pretrained as pretrained
    from backdoor_core.trigger_search import moved_marking

    start = tiny_model(seed=0)
    save_model(start.model, start.tokenizer, tmp_path / "base")
    moved = _fine_tuned(start.model, {_id(start.tokenizer, "cf"): 0.5})
    pool = [f"cf text {i}" for i in range(10)] + [f"plain {i}" for i in range(10)]
    clean = [f"a clean text {i}" for i in range(20)]
    words, flip = moved_marking(moved, start.tokenizer, str(tmp_path / "base"), clean, pool, 16, top=3, n_insert=10)
    assert words == ["cf"]

    def unreadable(model, weights):
        raise ValueError("no input embeddings named as the model's")

    monkeypatch.setattr(pretrained, "base_embeddings", unreadable)
    assert moved_marking(moved, start.tokenizer, str(tmp_path / "base"), clean, pool, 16, top=3) == ([], 0.0)
