"""bench/drift_check.py and the drift reading on a real fine-tune (no shared data): the tiny model trained with a
BadNets trigger from its seeded initial weights moves the trigger's row far, and the bench's row says where it
stands."""

from backdoor_core.models import tiny_model
from backdoor_core.trigger_search import drifted_words
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
