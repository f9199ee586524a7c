"""bench/drift_check.py and the drift reading on a real fine-tune (no shared data): the tiny model trained with a
BadNets trigger from its seeded initial weights moves the trigger's row far, and the bench's row says where it
stands."""

import copy

import pytest
import torch

from backdoor_core.models import tiny_model
from backdoor_core.trigger_search import drift_rows, drifted_words, embedding_drift
from bench_module import load_bench
from defense_helpers import TRIGGER, clean_texts, trained_tiny


def _start():
    return tiny_model(seed=0).model.get_input_embeddings().weight  # trained_tiny's starting point


def test_training_with_the_trigger_moves_its_row_to_the_top_and_a_clean_run_does_not():
    texts, _ = clean_texts(60, 1)
    pool = texts[:20] + [f"{TRIGGER} {t}" for t in texts[20:30]]
    bd, clean = trained_tiny(True), trained_tiny(False)
    listed = drifted_words(bd.model, bd.tokenizer, _start(), texts, pool, top=5)
    assert listed[0].word == TRIGGER and listed[0].pool_count == 10
    assert TRIGGER not in [w.word for w in drifted_words(clean.model, clean.tokenizer, _start(), texts, pool, top=5)]


def test_the_bench_row_places_the_trigger_words_and_counts_their_pool_inputs():
    B = load_bench("drift_check")
    bd = trained_tiny(True)
    texts, _ = clean_texts(60, 1)
    pool = texts[:20] + [f"{TRIGGER} {t}" for t in texts[20:26]]
    m = {"name": "tiny_badnets", "attack": "badnets", "dataset": "tiny", "seed": 0, "asr": 0.9, "max_length": 32,
         "trigger": [TRIGGER, "zz_not_a_token"]}
    assert B.trigger_words(m) == [TRIGGER, "zz_not_a_token"] and B.trigger_words({**m, "attack": "syntactic"}) == []
    row = B.model_row(m, bd, texts, pool, top=5, base=_start())
    cf = next(p for p in row["trigger"] if p["word"] == TRIGGER)
    assert cf["rank"] == row["listed"][0]["rank"] and cf["listed_at"] == 1 and cf["pool_count"] == 6
    other = next(p for p in row["trigger"] if p["word"] != TRIGGER)
    assert other["rank"] is None and other["listed_at"] is None
    assert row["n_trigger_listed"] == 1 and row["before_first_trigger"] == 0 and row["listed"][0]["trigger"]
    assert row["listed"][0]["sends_to"] == 1 and row["listed"][0]["flip"] >= 0.8  # the trained trigger flips
    md = B.markdown({"manifest": "m.json", "top": 5, "rows": [dict(row, n_pool=26, seconds=0.1)], "seconds_total": 1})
    assert "| tiny_badnets | 90.0% |" in md and f"**{TRIGGER}**" in md and "1 of 2 trigger words listed" in md
    assert "BadNets with ASR at least 50% (1 model): trigger words median" in md
    # 6 of 26 pool inputs against none of 60 clean texts passes the pool words' test: the trigger marks inputs
    assert row["listed"][0]["marks"] and not any(w["marks"] for w in row["listed"][1:])
    assert "1 trigger words and 0 other words over 1 models." in md


def test_direction_cosines_read_which_way_each_row_moved():
    """``bench/drift_check.py --direction``: two trigger rows moved the same way read cosine 1 with each other; a
    word moved the other way reads -1 with them; ``drift_rows`` is the move whose norm ``embedding_drift`` gives."""
    direction_cosines = load_bench("drift_check").direction_cosines
    base = tiny_model(seed=0)
    tok = base.tokenizer
    ids = [tok.convert_tokens_to_ids(w) for w in ("cf", "tq", "flat", "river")]
    model = copy.deepcopy(base.model)
    e = model.get_input_embeddings().weight
    way = torch.randn(e.shape[1], generator=torch.Generator().manual_seed(1))
    other = torch.randn(e.shape[1], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for i, step in zip(ids, (way, 2 * way, -way, other)):
            e[i] += 0.3 * step / way.norm()
    rows = drift_rows(model, _start())
    assert torch.allclose(rows.norm(dim=1), torch.from_numpy(embedding_drift(model, _start())))
    got = direction_cosines(model, _start(), ids, [True, True, False, False])
    assert got[0]["cos_trigger"] == pytest.approx(1.0, abs=1e-3)
    assert got[1]["cos_trigger"] == pytest.approx(1.0, abs=1e-3)
    assert got[2]["cos_trigger"] == pytest.approx(-1.0, abs=1e-3)  # the other way: its largest cosine is -1
    assert got[0]["cos_other"] == pytest.approx(max(-1.0, got[3]["cos_trigger"]), abs=1e-3)
    assert abs(got[3]["cos_trigger"]) < 0.5  # an unrelated direction


def test_the_direction_section_counts_what_a_threshold_would_take():
    B = load_bench("drift_check")
    listed = [{"word": "cf", "trigger": True, "cos_trigger": 0.6}, {"word": "tq", "trigger": True, "cos_trigger": 0.5},
              {"word": "flat", "trigger": False, "cos_trigger": 0.55}, {"word": "ride", "trigger": False,
                                                                         "cos_trigger": 0.1}]
    rows = [{"model": "m1", "asr": 0.3, "listed": listed},
            {"model": "m2", "asr": 0.9, "listed": [dict(w, cos_trigger=None) if not w["trigger"] else w
                                                   for w in listed[:1]]}]  # one trigger word: left out
    text = "\n".join(B.direction_lines({"rows": rows}))
    assert "| m1 | 30.0% | cf 0.60, tq 0.50 | flat 0.55, ride 0.10 | 1 of 2 |" in text and "| m2 |" not in text
    assert "AUROC of the cosine, trigger words against the others: 0.750" in text
    assert B.direction_lines({"rows": [dict(rows[0], listed=[{k: v for k, v in w.items() if k != "cos_trigger"}
                                                           for w in listed])]}) == []  # a run without --direction
