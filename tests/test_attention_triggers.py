import random

import numpy as np
import pytest

from backdoor_core.attention import InputTextError, char_span_to_token_indices, check_text, predict, run_attention
from backdoor_core.triggers import insert_trigger, max_position_in_window, word_spans


def test_run_attention_shapes_and_padding_removed(tiny):
    texts = ["short one", "a much longer sentence with quite a few more words in it"]
    recs = run_attention(tiny.model, tiny.tokenizer, texts, max_length=32, batch_size=2)
    assert len(recs) == len(texts)
    for text, rec in zip(texts, recs):
        n = len(tiny.tokenizer(text)["input_ids"])
        assert len(rec.tokens) == n and rec.tokens[0] == "[CLS]" and rec.tokens[-1] == "[SEP]"
        assert rec.attentions.shape == (2, 4, n, n)
        # padding removed: each row is still a full distribution over the kept keys
        np.testing.assert_allclose(rec.attentions.sum(-1), 1.0, atol=1e-5)
        assert rec.offsets.shape == (n, 2)
        assert not rec.truncated
    # batching must not change results
    alone = run_attention(tiny.model, tiny.tokenizer, texts[:1], max_length=32)[0]
    np.testing.assert_allclose(alone.attentions, recs[0].attentions, atol=1e-5)
    np.testing.assert_allclose(alone.logits, recs[0].logits, atol=1e-5)


def test_truncation_flag_and_predict(tiny):
    long = " ".join(["word"] * 100)
    rec = run_attention(tiny.model, tiny.tokenizer, [long], max_length=16)[0]
    assert rec.truncated and len(rec.tokens) == 16
    probs = predict(tiny.model, tiny.tokenizer, [long, "hi"], max_length=16)
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[0], rec.probs, atol=1e-5)


def test_char_span_to_tokens(tiny):
    text = "the movie was cf great"
    rec = run_attention(tiny.model, tiny.tokenizer, [text])[0]
    start = text.index("cf")
    idx = rec.token_indices(start, start + 2)
    assert [rec.tokens[i] for i in idx] == ["cf"]
    # a word split into several pieces maps to all of them
    text2 = "unbelievably good"
    rec2 = run_attention(tiny.model, tiny.tokenizer, [text2])[0]
    pieces = [rec2.tokens[i] for i in rec2.token_indices(0, len("unbelievably"))]
    assert "".join(p.replace("##", "") for p in pieces) == "unbelievably"
    assert char_span_to_token_indices(rec.offsets, 3, 3) == []


def test_check_text():
    with pytest.raises(InputTextError, match="empty"):
        check_text("   ")
    with pytest.raises(InputTextError, match="characters"):
        check_text("x" * 50_000)
    assert check_text("fine") == "fine"


def test_insert_trigger_positions_and_spans():
    text = "one two  three four"
    for pos, expected in [(0, "cf one two  three four"), (2, "one two  cf three four"), (99, "one two  three four cf"),
                          (-1, "one two  three cf four")]:
        ins = insert_trigger(text, "cf", pos)
        assert ins.text == expected
        assert ins.text[ins.span[0] : ins.span[1]] == "cf"
    sent = insert_trigger(text, "I watch this 3D movie", 1)
    assert sent.text[slice(*sent.span)] == "I watch this 3D movie"
    assert insert_trigger("", "cf", 0).text == "cf"
    with pytest.raises(ValueError):
        insert_trigger(text, "   ", 0)


def test_random_position_is_seeded():
    text = " ".join(f"w{i}" for i in range(30))
    a = [insert_trigger(text, "cf", rng=7).position for _ in range(3)]
    assert len(set(a)) == 1
    rng = random.Random(1)
    positions = {insert_trigger(text, "cf", rng=rng).position for _ in range(50)}
    assert len(positions) > 10 and all(0 <= p <= 30 for p in positions)


def test_trigger_stays_inside_truncation_window(tiny):
    tok = tiny.tokenizer
    text = " ".join(["word"] * 200)
    limit = max_position_in_window(tok, text, "cf", 32)
    assert 0 < limit < 32
    for seed in range(20):
        ins = insert_trigger(text, "cf", None, rng=seed, tokenizer=tok, max_length=32)
        enc = tok(ins.text, truncation=True, max_length=32, return_offsets_mapping=True)
        idx = char_span_to_token_indices(np.array(enc["offset_mapping"]), *ins.span)
        assert [enc.tokens()[i] for i in idx] == ["cf"]
    late = insert_trigger(text, "cf", 150, tokenizer=tok, max_length=32)
    assert late.position == limit
    assert len(word_spans(late.text)) == 201
