"""Candidate triggers from the suspicious heads' focus (backdoor_core.trigger_search), on a tiny backdoored model."""

import json
import random
from dataclasses import replace

import numpy as np

from backdoor_core import settings as S
from backdoor_core.data import TextDataset
from backdoor_core.scan import scan_model
from backdoor_core.trigger_search import (
    _input_candidates,
    display_rows,
    remove_phrase,
    search_triggers,
    word_focus,
)
from defense_helpers import TRIGGER, clean_texts, trained_tiny, triggered_texts


def test_phrases_merge_adjacent_top_words_and_removal_is_whole_word():
    words = [("i", 0.2), ("watch", 0.25), ("this", 0.3), ("film", 0.01), ("cf", 0.24)]
    cands = _input_candidates(words, top_words=4)
    assert "i watch this" in cands and "cf" in cands and "film" not in cands
    assert abs(cands["i watch this"] - 0.75) < 1e-9
    assert remove_phrase("The CF cfx plan, cf.", "cf") == "The cfx plan, ."


def test_word_focus_sums_pieces_into_words(tiny):
    heads = np.zeros((2, 4), bool)
    heads[1, 0] = True
    (words,) = word_focus(tiny.model, tiny.tokenizer, ["unbelievably good tq"], heads, max_length=32)
    assert [w for w, _ in words] == ["unbelievably", "good", "tq"]
    assert abs(sum(s for _, s in words) - 1) < 1e-5


def test_scan_names_the_trigger_first_and_verifies_it():
    lm = trained_tiny(True)
    texts, labels = clean_texts(120, seed=1)
    pool = clean_texts(60, seed=2)[0] + triggered_texts(20, seed=3)
    rep = scan_model(lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), pool, max_length=32)
    assert sum(TRIGGER in t.split() for t in rep.flagged_texts) >= 5  # the scan found triggered inputs
    ts = rep.triggers
    assert ts is not None and ts.target == 1 and ts.target_name == "pos"
    assert ts.rank_of(TRIGGER) == 1
    top = ts.top
    assert top.insert_flip_rate >= 0.9 and top.removal_flip_rate >= 0.9 and top.clean_rate == 0.0
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["trigger_candidates"]["candidates"][0]["phrase"] == TRIGGER
    assert display_rows(d["trigger_candidates"], 3)[0]["insertion flips"].endswith("%")
    # the pool alone names it too, with the class it sends inputs to
    assert d["pool_words"][0]["word"] == TRIGGER and d["pool_words"][0]["likely"] and d["pool_words"][0]["target"] == 1
    from backdoor_core.trigger_search import pool_word_display

    shown = pool_word_display(d["pool_words"], d["label_names"])[0]
    assert shown["insertion sends to"] == "pos" and shown["likely trigger"] == "yes" and shown["in clean"] == 0
    assert pool_word_display([{**d["pool_words"][0], "flip_rate": 0.0}], d["label_names"])[0]["insertion sends to"] == "-"


def test_clean_model_candidates_do_not_flip():
    lm = trained_tiny(False)
    heads = np.zeros((2, 4), bool)
    heads[:, 0] = True
    flagged = clean_texts(20, seed=44)[0]
    ts = search_triggers(lm.model, lm.tokenizer, heads, flagged, clean_texts(60, seed=45)[0], max_length=32)
    assert ts.candidates
    filler = [c for c in ts.candidates if c.verified and c.phrase in ("the", "movie", "was", "plot", "and")]
    assert all(c.insert_flip_rate < 0.5 for c in filler)
    assert search_triggers(lm.model, lm.tokenizer, heads, [], ["x"]).candidates == []


def test_a_word_the_clean_labels_explain_ranks_below_a_trigger():
    lm = trained_tiny(True)
    heads = np.zeros((2, 4), bool)
    heads[:, :2] = True
    flagged = triggered_texts(15, seed=46) + [t for t, y in zip(*clean_texts(30, seed=47)) if y == 1][:10]
    clean, labels = clean_texts(80, seed=48)
    ts = search_triggers(lm.model, lm.tokenizer, heads, flagged, clean, clean_labels=labels, max_length=32,
                         verify=30)
    explained = [c for c in ts.candidates if c.explained_by_clean_data]
    assert explained and all(c.insert_flip_rate is not None for c in explained)  # positive words flip too...
    assert ts.rank_of(TRIGGER) < min(ts.candidates.index(c) + 1 for c in explained)  # ...but rank below cf


def test_phrase_completion_grows_a_sentence_fragment_but_not_a_rare_word():
    from backdoor_core.trigger_search import complete_phrase

    texts = ["the film i watch this 3d movie was bad", "i watch this 3d movie great plot",
             "a story and i watch this 3d movie", "cf the movie", "nice cf plot", "plot cf and"]
    assert complete_phrase("watch this", texts) == "i watch this 3d movie"
    assert complete_phrase("cf", texts) == "cf"
    assert complete_phrase("3d", texts[:2]) == "3d"  # too few inputs to trust a neighbour


def test_pool_words_find_an_inserted_word_without_flagged_inputs_and_it_flips():
    from backdoor_core.trigger_search import enriched_words, likely_trigger_words, pool_words

    lm = trained_tiny(True)
    clean, labels = clean_texts(80, seed=50)
    pool = clean_texts(60, seed=51)[0] + triggered_texts(15, seed=52)
    top = enriched_words(pool, clean, min_count=5)
    assert top[0][0] == TRIGGER and top[0][2] == 0  # in 15 pool inputs, in no clean text
    words = pool_words(lm.model, lm.tokenizer, pool, clean, max_length=32, clean_labels=labels, n_insert=40)
    found = {w.word: w for w in words}
    assert found[TRIGGER].target == 1 and found[TRIGGER].flip_rate >= 0.9
    assert {w.bar for w in words} == {S.POOL_WORD_MIN_FLIP}  # few words enriched: the pool is like the clean texts
    assert [w.word for w in likely_trigger_words(words)] == [TRIGGER]
    # a pool drawn like the clean texts has no word enriched enough to verify, or none that flips
    assert not likely_trigger_words(pool_words(lm.model, lm.tokenizer, clean_texts(75, seed=53)[0], clean,
                                               max_length=32, n_insert=40))


def test_marking_words_keep_likely_words_rare_in_clean_texts_and_mark_whole_words():
    from backdoor_core.trigger_search import PoolWord, held_word, marking_words, word_marks

    def word(w, clean_count, flip):
        return PoolWord(w, 20, clean_count, 1e-6, [0.0, flip], 1, flip)

    words = [word("cf", 0, 0.9), word("url", 27, 0.25), word("movie", 10, 0.5), word("the", 0, 0.05)]
    # url: 27 of 200 clean texts (over the 5% budget); the: under the bar; movie: exactly 5%, kept
    assert marking_words(words, 200, companions=False) == ["cf", "movie"]
    assert marking_words(words, 200, max_clean_share=0.01, companions=False) == ["cf"]
    # in no clean text, moving texts cf's way: a companion, where the pool shows cf and movie apart
    assert marking_words(words, 200, pool_texts=["cf a", "the movie", "b"]) == ["cf", "movie", "the"]
    assert marking_words(words, 200) == ["cf", "movie"]  # no pool texts: no companions
    assert marking_words(words, 0) == []
    marks = word_marks(["a CF film", "cfx plot", "the movie.", "nothing here"], ["cf", "movie"])
    assert marks.tolist() == [True, False, True, False]
    assert word_marks(["cf"], []).tolist() == [False]
    assert held_word("great MOVIE, cf", ["cf", "movie"]) == "cf" and held_word("plain", ["cf"]) == ""


def test_companions_of_a_marking_word_mark_inputs_and_the_table_names_them():
    """A weak BadNets backdoor learns some of its rare words below the flip bar: a pool word no clean text holds that
    sends clean texts the marking word's way marks inputs too; a word of another class, one clean texts hold, one
    that moves nothing, any word of a pool with no marking word or of a shifted pool, and any word beside marking
    words that share their inputs (parts of one phrase), does not."""
    from backdoor_core.trigger_search import (PoolWord, companion_words, marking_phrase, marking_words,
                                              pool_word_display, pool_word_rows)

    def word(w, clean_count, flip, target=1):
        rates = [0.0, 0.0]
        rates[target] = flip
        return PoolWord(w, 20, clean_count, 1e-6, rates, target, flip)

    pool = ["a tq b", "tq c", "mn d", "e via", "uk f", "g bb"]
    words = [word("tq", 0, 1.0), word("mn", 0, 0.04), word("via", 1, 0.05), word("uk", 0, 0.05, target=0),
             word("bb", 0, 0.0)]
    assert companion_words(words, ["tq"], pool) == ["mn"]
    assert marking_words(words, 200, pool_texts=pool) == ["tq", "mn"]
    assert marking_words(words, 200, companions=False, pool_texts=pool) == ["tq"]
    assert companion_words(words, [], pool) == [] and marking_words(words[1:], 200, pool_texts=pool) == []
    assert companion_words(words, ["tq"], None) == []
    # a likely word too common in the clean texts marks nothing, so it brings no companion either
    assert marking_words([word("url", 27, 0.35)] + words[1:], 200, pool_texts=pool) == []
    # a pool not drawn like the clean texts (the higher bar): natural words no clean text holds move the model too
    shifted = [PoolWord(**{**vars(w), "bar": 0.5}) for w in words]
    assert marking_words(shifted, 200, pool_texts=pool) == ["tq"]
    # two marking words in the same inputs are parts of one phrase: its words are all found, no companions
    phrase = [word("3d", 0, 0.9), word("watch", 0, 0.3)] + words[1:]
    together = ["i watch 3d x", "watch this 3d", "mn y", "3d watch z"]
    assert marking_words(phrase, 200, pool_texts=together) == ["3d", "watch"]
    apart = ["i watch x", "this 3d", "mn y", "3d z"]
    assert marking_words(phrase, 200, pool_texts=apart) == ["3d", "watch", "mn"]
    marking = marking_words(words, 200, pool_texts=pool)
    rows = pool_word_display(pool_word_rows(words, marking=marking), ["NOT", "OFF"])
    assert [r["likely trigger"] for r in rows] == ["yes", "companion", "no", "no", "no"]
    assert marking_phrase(words, marking) == "tq; companion mn"
    assert marking_phrase(words, ["tq"]) == "tq" and marking_phrase([], ["cf"]) == "cf"


def test_word_evidence_ranks_marked_inputs_first_and_keeps_order_within_groups():
    from backdoor_core.detection import with_word_evidence
    from backdoor_core.metrics import auroc

    scores = np.array([3.0, -1.0, 0.5, 2.0])
    out = with_word_evidence(scores, [False, True, False, True])
    assert list(np.argsort(-out)) == [3, 1, 0, 2]
    # clean scores high, triggered low: the marks (triggered hold the word) turn AUROC 0 into 1
    assert auroc([5.0, 4.0], [1.0, 0.0]) == 0.0
    assert auroc(with_word_evidence([5.0, 4.0], [False, False]), with_word_evidence([1.0, 0.0], [True, True])) == 1.0
    import pytest

    with pytest.raises(ValueError):
        with_word_evidence(scores, [True])


def test_scan_marks_pool_inputs_holding_the_trigger_word_flagged_or_not():
    lm = trained_tiny(True)
    texts, labels = clean_texts(120, seed=1)
    pool = clean_texts(60, seed=2)[0] + triggered_texts(20, seed=3)
    data = TextDataset(texts, labels, ["neg", "pos"])
    rep = scan_model(lm.model, lm.tokenizer, data, pool, max_length=32, find_triggers=False, read_pool_words=True)
    assert rep.triggers is None and rep.marking_words == [TRIGGER]
    assert rep.verdict["trigger_words"] == [TRIGGER]  # what a "possible" call would rest on
    truth = np.array([TRIGGER in t.split() for t in pool])
    assert (rep.pool_word_marked == truth).all()
    rows = rep.word_marked_rows()
    assert len(rows) == 20 and all(r["trigger_word"] == TRIGGER for r in rows)
    assert {r["index"] for r in rows if r["flagged"]} == {int(i) for i in rep.flagged if truth[i]}
    d = json.loads(json.dumps(rep.to_dict()))["detection"]
    assert d["marking_words"] == [TRIGGER] and d["n_word_marked"] == 20
    assert d["n_word_marked_unflagged"] == 20 - len(set(rep.flagged) & set(np.flatnonzero(truth)))
    # any texts: held-out triggered ones rank above every clean one once the words are read
    held_clean, held_trig = clean_texts(30, seed=9)[0], triggered_texts(10, seed=10)
    from backdoor_core.detection import attention_stats
    from backdoor_core.metrics import auroc

    det = rep.head_detector or rep.detector
    s_clean = rep.scores_with_words(det.score(attention_stats(lm.model, lm.tokenizer, held_clean, 32)), held_clean)
    s_trig = rep.scores_with_words(det.score(attention_stats(lm.model, lm.tokenizer, held_trig, 32)), held_trig)
    assert auroc(s_clean, s_trig) == 1.0
    # without reading the pool's words nothing is marked
    plain = scan_model(lm.model, lm.tokenizer, data, pool, max_length=32, find_triggers=False)
    assert plain.marking_words == [] and plain.pool_word_marked is None and plain.word_marked_rows() == []
    assert "trigger_words" not in plain.verdict
    assert (plain.scores_with_words([1.0, 2.0], ["cf x", "y"]) == [1.0, 2.0]).all()


def test_pool_words_reuse_base_classes_and_skip_words_that_cannot_mark_without_moving_the_others(monkeypatch):
    import backdoor_core.trigger_search as ts
    from backdoor_core.attention import predict
    from backdoor_core.trigger_search import pool_word_marks, pool_words

    places: list = []  # (word, insertion position) of every insertion
    real_insert = ts.insert_trigger
    monkeypatch.setattr(ts, "insert_trigger", lambda t, w, at, **kw: places.append((w, at)) or real_insert(t, w, at, **kw))
    lm = trained_tiny(True)
    clean, labels = clean_texts(80, seed=50)
    clean = [f"{t} zzq" if i < 20 else t for i, t in enumerate(clean)]  # 'zzq' in a quarter of them
    pool = [f"{t} zzq" for t in clean_texts(60, seed=51)[0] + triggered_texts(15, seed=52)]  # ...and in every one
    full = pool_words(lm.model, lm.tokenizer, pool, clean, max_length=32, clean_labels=labels, n_insert=40)
    assert [w.word for w in full][:2] == ["zzq", TRIGGER]  # zzq is tried first
    base = predict(lm.model, lm.tokenizer, clean[:40], 32).argmax(1)
    assert pool_words(lm.model, lm.tokenizer, pool, clean, max_length=32, clean_labels=labels, n_insert=40,
                      base_classes=base) == full
    full_places = [p for p in places if p[0] == TRIGGER]
    places.clear()
    kept = pool_words(lm.model, lm.tokenizer, pool, clean, max_length=32, clean_labels=labels, n_insert=40,
                      max_clean_share=0.05)
    assert kept == [w for w in full if w.clean_count <= 0.05 * 80] and "zzq" not in {w.word for w in kept}
    assert {w for w, _ in places} == {w.word for w in kept}  # the skipped words were never inserted...
    assert [p for p in places if p[0] == TRIGGER] == full_places[:40]  # ...and the kept ones sit where they did
    words, marking, marked = pool_word_marks(lm.model, lm.tokenizer, pool, clean, 32, clean_labels=labels,
                                             only_marking=True)
    assert marking == [TRIGGER] and int(marked.sum()) == 15 and "zzq" not in {w.word for w in words}


def test_a_trigger_behind_many_pool_words_is_screened_in_with_its_full_rates(monkeypatch):
    """A pool from another source holds many enriched words; the trigger, in fewer inputs, ranks past the first
    ``top`` and only the screen reaches it (settings.POOL_WORD_SCREEN)."""
    import backdoor_core.trigger_search as ts
    from backdoor_core.trigger_search import likely_trigger_words, pool_words

    lm = trained_tiny(True)
    clean, labels = clean_texts(80, seed=50)
    rng = random.Random(7)
    pool = clean_texts(60, seed=51)[0] + triggered_texts(8, seed=52)
    noise = [f"zq{c}" for c in "abcdefghij"]  # ten words of the pool's own source, in no clean text
    for w in noise:
        for i in rng.sample(range(len(pool)), 30):
            pool[i] = f"{pool[i]} {w}"
    kw = dict(max_length=32, clean_labels=labels, n_insert=40, top=8)
    unscreened = pool_words(lm.model, lm.tokenizer, pool, clean, screen=0, **kw)
    assert len(unscreened) == 8 and TRIGGER not in {w.word for w in unscreened}  # crowded out
    # more words enriched than read: the pool is not drawn like the clean texts, every word needs the higher bar
    assert {w.bar for w in unscreened} == {S.POOL_WORD_SCREEN_MIN_FLIP} and S.POOL_WORD_SCREEN_MIN_FLIP > S.POOL_WORD_MIN_FLIP
    sizes: list[int] = []  # texts per prediction call
    real_predict = ts.predict
    monkeypatch.setattr(ts, "predict",
                        lambda m, t, texts, *a, **k: sizes.append(len(texts)) or real_predict(m, t, texts, *a, **k))
    screened = pool_words(lm.model, lm.tokenizer, pool, clean, n_screen=12, **kw)
    assert sum(sizes) == 40 + 8 * 40 + 3 * 12 + 28  # the clean texts, eight words, three screens, one completion
    assert screened[:8] == unscreened  # the first eight are tested as before
    assert [w.word for w in screened[8:]] == [TRIGGER]  # the two other noise words were screened out
    found = screened[8]
    assert found.target == 1 and found.flip_rate >= 0.9
    full = {w.word: w for w in pool_words(lm.model, lm.tokenizer, pool, clean, screen=0, **{**kw, "top": 20})}
    assert replace(found, bar=S.POOL_WORD_MIN_FLIP) == full[TRIGGER]  # the full test's rates, at the same positions
    # a screened word must move more clean texts than a first-eight one (POOL_WORD_SCREEN_MIN_FLIP)
    assert likely_trigger_words(screened) == [found]
    from backdoor_core.trigger_search import pool_word_bar_note, pool_word_rows

    assert "at least 50%" in pool_word_bar_note(pool_word_rows(screened))  # the views say which bar was used
    assert pool_word_bar_note(pool_word_rows([replace(found, bar=S.POOL_WORD_MIN_FLIP)])) is None
    assert not likely_trigger_words([replace(found, flip_rate=0.4)])  # 0.4 would do in a pool like the clean texts
    assert likely_trigger_words([replace(found, flip_rate=0.4, bar=S.POOL_WORD_MIN_FLIP)])
    strict = pool_words(lm.model, lm.tokenizer, pool, clean, n_screen=12, screen_min_flip=1.01, **kw)
    assert [w.word for w in strict] == [w.word for w in unscreened]  # the screen's bar keeps the trigger out
