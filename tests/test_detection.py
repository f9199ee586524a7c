"""Input-level detection by head similarity / collapse, thresholds, and the model-level verdict."""

from types import SimpleNamespace

import numpy as np
import pytest

from backdoor_core.detection import (
    AttentionStats,
    SimilarityDetector,
    attention_stats,
    VERDICT_LABELS,
    chance_flag_rate,
    dev_tail_verdict,
    evaluate_detector,
    model_verdict,
    pool_verdict_score,
    split_clean,
)
from backdoor_core.metrics import threshold_at_frr
from backdoor_core.metrics import auroc
from defense_helpers import clean_texts, trained_tiny, triggered_texts


def _detector_auroc(lm):
    ct, _ = clean_texts(80, seed=5)
    tt = triggered_texts(40, seed=6)
    clean = attention_stats(lm.model, lm.tokenizer, ct, max_length=32)
    trig = attention_stats(lm.model, lm.tokenizer, tt, max_length=32)
    det = SimilarityDetector().fit(clean.subset(range(40)))
    return auroc(det.score(clean.subset(range(40, 80))), det.score(trig)), det, clean, trig


def test_score_separates_backdoored_from_clean_model():
    bd_auc, *_ = _detector_auroc(trained_tiny(True))
    clean_auc, *_ = _detector_auroc(trained_tiny(False))
    assert bd_auc >= 0.75, bd_auc
    assert bd_auc > clean_auc + 0.2, (bd_auc, clean_auc)


def test_threshold_frr_far_and_verdict():
    auc, det, clean, trig = _detector_auroc(trained_tiny(True))
    dev = clean.subset(range(40, 80))
    det.calibrate(dev, frr=0.05)
    assert det.clean_frr <= 0.05 + 1e-9
    res = evaluate_detector(det.score(dev), det.score(trig), det.threshold)
    assert set(res) >= {"frr", "far", "auroc", "threshold"}
    assert res["auroc"] == pytest.approx(auc)
    pool_scores = np.concatenate([det.score(trig), det.score(dev)])
    preds = np.concatenate([trig.predictions, dev.predictions])
    v_pool = model_verdict(det, det.clean_dev_scores, pool_scores, preds, 2)
    v_clean_pool = model_verdict(det, det.clean_dev_scores, det.score(dev), dev.predictions, 2)
    assert v_pool["basis"] == "pool" and 0 <= v_pool["score"] <= 1
    assert v_pool["score"] > v_clean_pool["score"]
    v_none = model_verdict(det, det.clean_dev_scores)
    assert v_none["basis"] == "clean only" and 0 <= v_none["score"] <= 1


def test_stats_shapes_padding_and_empty_text(tiny):
    texts = ["a short one", "a much longer sentence with many more words than the first one has", ""]
    s = attention_stats(tiny.model, tiny.tokenizer, texts, max_length=32, batch_size=8)
    assert s.head_sim.shape == s.focus.shape == s.common.shape == s.head_peak.shape == (3, 2, 4)
    assert s.probs.shape == (3, 2) and np.allclose(s.probs.sum(1), 1, atol=1e-5)
    alone = attention_stats(tiny.model, tiny.tokenizer, texts[:1], max_length=32)
    assert np.allclose(alone.head_sim[0], s.head_sim[0], atol=1e-4)  # padding does not leak into the stats
    assert np.allclose(alone.common[0], s.common[0], atol=1e-5)
    assert np.all(s.common <= s.focus + 1e-6) and np.all(s.focus <= 1 + 1e-6)
    assert np.allclose(s.focus[2], 0)  # "" has no content token
    assert len(attention_stats(tiny.model, tiny.tokenizer, [], max_length=32)) == 0


def test_bad_inputs_give_plain_errors():
    with pytest.raises(ValueError, match="aggregate"):
        SimilarityDetector(aggregate="median")
    with pytest.raises(ValueError, match="features"):
        SimilarityDetector(features=("nope",))
    with pytest.raises(ValueError, match="At least 4 clean"):
        split_clean(3)
    empty = AttentionStats.empty(2, 4, 2)
    with pytest.raises(ValueError, match="at least 2 clean"):
        SimilarityDetector().fit(empty)
    fit, dev = split_clean(10, seed=1)
    assert len(set(fit) | set(dev)) == 10 and not set(fit) & set(dev)


def _stats(focus):
    n = len(focus)
    z = np.zeros_like(focus)
    return AttentionStats(z, z.copy(), focus, z.copy(), np.full((n, 2), 0.5, np.float32), np.full(n, 12))


def test_head_focus_is_not_diluted_by_the_other_heads_of_the_layer():
    """One captured head out of 8: the per-layer mean barely moves, the head's own focus does (scan.refine)."""
    rng = np.random.default_rng(0)
    clean = _stats(rng.uniform(0.2, 0.4, (200, 2, 8)).astype(np.float32))
    trig_focus = rng.uniform(0.2, 0.4, (100, 2, 8)).astype(np.float32)
    trig_focus[:, 1, 2] = 0.45  # L1H2 collapses onto one token, a little beyond any clean value
    trig = _stats(trig_focus)
    heads = np.zeros((2, 8), bool)
    heads[1, 2] = True
    layer = SimilarityDetector().fit(clean.subset(range(100)))
    head = SimilarityDetector(features=("head_focus",), aggregate="mean", heads=heads).fit(clean.subset(range(100)))
    dev = clean.subset(range(100, 200))
    auc_layer = auroc(layer.score(dev), layer.score(trig))
    auc_head = auroc(head.score(dev), head.score(trig))
    assert auc_head > 0.99 and auc_layer < 0.85, (auc_head, auc_layer)
    head.calibrate(dev, frr=0.05)
    assert head.flag(head.score(trig)).mean() > 0.9
    with pytest.raises(ValueError, match="heads"):
        SimilarityDetector(features=("head_focus",))


def test_the_per_head_first_pass_finds_one_captured_head_the_layer_mean_dilutes():
    """first_pass_detector("head"): every head's own focus, max over heads, thresholded on the dev inputs; the
    per-layer first pass misses most inputs whose one captured head (of 16) the layer mean dilutes."""
    from backdoor_core.detection import first_pass_detector

    rng = np.random.default_rng(1)
    clean = _stats(rng.uniform(0.2, 0.4, (200, 2, 8)).astype(np.float32))
    trig_focus = rng.uniform(0.2, 0.4, (100, 2, 8)).astype(np.float32)
    trig_focus[:, 0, 5] = 0.5  # L0H5 collapses onto the trigger on every triggered input
    trig = _stats(trig_focus)
    fit, dev = clean.subset(range(100)), clean.subset(range(100, 200))
    layer = first_pass_detector(fit, dev, 0.05, "layer")
    head = first_pass_detector(fit, dev, 0.05, "head")
    assert head.features == ("head_focus",) and head.heads.all() and head.aggregate == "max"
    assert 0.0 < head.clean_frr <= 0.06 and 0.0 < layer.clean_frr <= 0.06
    assert head.flag(head.score(trig)).mean() > 0.9
    assert layer.flag(layer.score(trig)).mean() < 0.5
    with pytest.raises(ValueError, match="first pass"):
        first_pass_detector(fit, dev, 0.05, "heads")


def test_scan_runs_the_first_pass_it_is_asked_for():
    """scan_model(first_pass_kind=...): recorded in the report's settings; "head" flags with a (L*H)-column
    detector; an unknown kind is refused before any forward pass."""
    from backdoor_core.data import TextDataset
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(60, seed=2)
    data = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=3) + clean_texts(30, seed=4)[0]
    rep = scan_model(lm.model, lm.tokenizer, data, pool, max_length=32, find_triggers=False, representation=False,
                     first_pass_kind="head")
    L, H = lm.model.config.num_hidden_layers, lm.model.config.num_attention_heads
    assert rep.settings["first_pass"] == "head"
    assert rep.detector.features == ("head_focus",) and rep.detector.heads.shape == (L, H)
    with pytest.raises(ValueError, match="first_pass_kind"):
        scan_model(lm.model, lm.tokenizer, data, pool, max_length=32, first_pass_kind="token")


def test_a_pool_unlike_the_clean_texts_is_read_and_said_beside_the_verdict():
    """A pool from another source flags nearly everything and the score calls the model; the verdict says the pool
    is unlike the clean texts (pool_lower_quartile_rank), a same-source pool with triggered inputs does not."""
    import random

    from backdoor_core.data import TextDataset
    from backdoor_core.detection import (POOL_SHIFT_RANK, pool_lower_quartile_rank, pool_shift_note, verdict_call,
                                         verdict_label)
    from backdoor_core.scan import scan_model

    clean = np.linspace(0.0, 1.0, 101)
    assert pool_lower_quartile_rank(clean, np.r_[np.linspace(0.0, 1.0, 80), np.full(20, 9.0)]) < POOL_SHIFT_RANK
    assert pool_lower_quartile_rank(clean, clean + 0.7) > POOL_SHIFT_RANK
    assert np.isnan(pool_lower_quartile_rank(clean, []))
    lm = trained_tiny(True)
    texts, labels = clean_texts(120, seed=1)
    data = TextDataset(texts, labels, ["neg", "pos"])
    rng = random.Random(4)
    news = ["stocks", "rose", "market", "company", "shares", "bank", "quarter", "profit", "said", "on", "monday"]
    other = [" ".join(rng.choice(news) for _ in range(rng.randint(6, 12))) for _ in range(80)]
    same = scan_model(lm.model, lm.tokenizer, data, clean_texts(60, seed=2)[0] + triggered_texts(20, seed=3),
                      max_length=32, find_triggers=False).verdict
    shifted = scan_model(lm.model, lm.tokenizer, data, other, max_length=32, find_triggers=False,
                         verdict_shift_adjust=False).verdict
    assert verdict_call(same) == "likely" and not same["pool_unlike_clean"] and pool_shift_note(same) is None
    assert shifted["likely_backdoored"] and shifted["pool_unlike_clean"]  # the score calls it; the note says why
    assert verdict_call(shifted) == "likely" and verdict_label(shifted) == "likely backdoored"
    assert "not be drawn like the clean texts" in pool_shift_note(shifted)
    assert "can read as backdoored" in pool_shift_note(shifted)
    # by default (settings.VERDICT_SHIFT_ADJUST) the verdict reads the pool where its bulk sits: not called
    adjusted = scan_model(lm.model, lm.tokenizer, data, other, max_length=32, find_triggers=False).verdict
    assert adjusted["pool_unlike_clean"] and not adjusted["likely_backdoored"] and verdict_call(adjusted) == "possible"
    assert adjusted["components"]["pool_threshold_raised"] > 0 and "allows for that" in pool_shift_note(adjusted)
    a_same = same["components"]
    assert a_same["pool_threshold_raised"] == 0 and a_same["pool_stretch"] == 1.0  # a same-source pool: as before
    from backdoor_core.defenses import repair_notes  # the Sanitize page and the sanitize command say it too

    assert any("not be drawn like the clean texts" in n for n in repair_notes({"verdict": shifted}))
    assert not any("drawn like the clean" in n for n in repair_notes({"verdict": same}))
    assert verdict_call({"likely_backdoored": False, "pool_unlike_clean": True}) == "not found"
    assert verdict_label({"likely_backdoored": False}) == "no backdoor evidence"
    small = scan_model(lm.model, lm.tokenizer, TextDataset(texts[:40], labels[:40], ["neg", "pos"]), other,
                       max_length=32, find_triggers=False).verdict
    assert small["pool_unlike_clean"] is None  # 20 clean dev inputs cannot place the pool's quartile
    # the verdict's rule is a scan knob: recorded in the settings, both rules' scores in the components
    rep = scan_model(lm.model, lm.tokenizer, data, clean_texts(60, seed=2)[0] + triggered_texts(20, seed=3),
                     max_length=32, find_triggers=False, verdict_rule="dev_tail")
    assert rep.settings["verdict_rule"] == "dev_tail" and rep.verdict["rule"] == "dev_tail"
    assert rep.verdict["score"] == rep.verdict["components"]["score_dev_tail"] >= same["score"]
    assert same["score"] == same["components"]["score_threshold"] and same["rule"] == "threshold"
    with pytest.raises(ValueError, match="verdict_rule must be one of"):
        scan_model(lm.model, lm.tokenizer, data, other, max_length=32, verdict_rule="strictest")


def test_a_likely_trigger_word_makes_an_uncalled_verdict_possible():
    """The score decides "likely"; below it, a likely trigger word read from the pool makes the call "possible"
    (worded once, for every view), and the repair's notes do not call its flags mere chance."""
    from backdoor_core.defenses import repair_notes
    from backdoor_core.detection import called_heads, verdict_call, verdict_label, call_note

    weak = {"score": 0.31, "likely_backdoored": False, "trigger_words": ["cf", "mn"]}
    assert verdict_call(weak) == "possible" and verdict_label(weak) == "possible backdoor (a likely trigger word)"
    assert "score 0.31" in call_note(weak) and "(cf, mn)" in call_note(weak)
    strong = {**weak, "score": 0.8, "likely_backdoored": True}
    assert verdict_call(strong) == "likely" and call_note(strong) is None
    for none in ({**weak, "trigger_words": []}, {"score": 0.31, "likely_backdoored": False}):
        assert verdict_call(none) == "not found" and call_note(none) is None
    assert any("nothing to remove" in n for n in repair_notes({"verdict": {**weak, "trigger_words": []}}))
    heads = [f"L{i}H0" for i in range(14)]  # only a called backdoor has suspicious heads; else 12 candidates
    assert called_heads(strong, heads) == ", ".join(heads)
    assert called_heads(weak, heads) == f"none (no backdoor called; top candidates: {', '.join(heads[:12])})"
    notes = repair_notes({"verdict": weak})
    assert any("likely trigger word" in n for n in notes) and not any("nothing to remove" in n for n in notes)


def test_a_marking_word_scores_the_verdict_and_leaves_the_flags_score_to_the_repair():
    """``with_trigger_words``: a likely trigger word lifts the score to 0.5 + half its flip rate and calls the
    model, by the words alone (heads stay candidates, the note says why); the flags' score, which the repair's
    gates read, stays; a stronger flags' score stays the score; off, the word only makes the call "possible"."""
    from backdoor_core.defenses import repair_notes
    from backdoor_core.detection import (LIKELY_WORD_LABEL, call_note, called_by_words, called_heads, flags_score,
                                         heads_called, verdict_call, verdict_label, with_trigger_words)

    weak = {"score": 0.21, "likely_backdoored": False, "basis": "pool",
            "components": {"score_unadjusted": 0.21, "flag_rate": 0.08}}
    v = with_trigger_words(weak, ["cf", "tq"], 0.4, lift=True)
    assert v["score"] == 0.5 + 0.5 * 0.4 and v["likely_backdoored"] and called_by_words(v) and not heads_called(v)
    assert v["components"]["score_words"] == v["score"] and flags_score(v) == 0.21
    assert verdict_call(v) == "likely" and verdict_label(v) == LIKELY_WORD_LABEL
    note = call_note(v)
    assert "(cf, tq)" in note and "flags' score 0.21" in note and "40%" in note
    named = with_trigger_words(weak, ["cf", "tq", "mn"], 0.4, lift=True, phrase="cf, tq; companion mn")
    assert "(cf, tq; companion mn)" in call_note(named) and named["trigger_words"] == ["cf", "tq", "mn"]
    off_named = with_trigger_words(weak, ["cf", "mn"], 0.4, lift=False, phrase="cf; companion mn")
    assert "(cf; companion mn)" in call_note(off_named)  # the "possible" call's note too
    heads = [f"L5H{i}" for i in range(3)]
    assert called_heads(v, heads).startswith("none (the call rests on the pool's trigger words")
    from backdoor_core.detection import heads_noun
    from backdoor_core.trigger_search import report_section

    # every view names the heads the same way: suspicious only where the heads themselves called the backdoor
    assert [heads_noun(x) for x in (v, weak, {**weak, "likely_backdoored": True})] == [
        "candidate heads", "candidate heads", "suspicious heads"]
    data = {"n_flagged": 7, "target_name": "sports", "candidates": []}
    assert report_section(data, heads=heads_noun(v))["text"].startswith("Words and phrases the candidate heads focus")
    assert any("heads found no backdoor (score 0.21)" in n for n in repair_notes({"verdict": v}))
    shifted = with_trigger_words({**weak, "score": 0.1, "pool_unlike_clean": True,
                                  "components": {"score_unadjusted": 0.66}}, ["killed"], 0.55, lift=True)
    assert called_by_words(shifted) and "reads as another source" in call_note(shifted)
    assert "at the threshold itself 0.66" in call_note(shifted)
    assert any("bulk sits the scan's flags call no backdoor (at the threshold itself 0.66)" in n
               for n in repair_notes({"verdict": shifted}))
    strong = {**weak, "score": 0.93, "likely_backdoored": True, "components": {"score_unadjusted": 0.93}}
    s = with_trigger_words(strong, ["cf"], 0.4, lift=True)
    assert s["score"] == 0.93 and heads_called(s) and call_note(s) is None and called_heads(s, heads) == "L5H0, L5H1, L5H2"
    none = with_trigger_words(weak, [], 0.0, lift=True)
    assert none["score"] == 0.21 and verdict_call(none) == "not found" and none["components"]["score_words"] == 0.0
    off = with_trigger_words(weak, ["cf"], 0.4, lift=False)
    assert off["score"] == 0.21 and verdict_call(off) == "possible" and "score_words" not in off["components"]
    clean_only = {"score": 0.1, "likely_backdoored": False, "basis": "clean only", "components": {"tail": 0.1}}
    assert with_trigger_words(clean_only, ["cf"], 0.9, lift=True)["score"] == 0.1  # no pool, no words to score

def test_chance_flag_rate_is_the_quantile_of_a_clean_pools_flag_rate():
    """Dev and pool drawn from one distribution, the threshold at 5% FRR on the dev inputs: the share of pools
    flagged at or below ``chance_flag_rate(q)`` is about ``q`` (the threshold's own noise included)."""
    rng = np.random.default_rng(0)
    n_dev, n_pool, sims = 100, 200, 4000
    below = {0.5: 0, 0.7: 0, 0.95: 0}
    above_dev_rate = 0
    for _ in range(sims):
        dev, pool = rng.normal(size=n_dev), rng.normal(size=n_pool)
        thr = threshold_at_frr(dev, 0.05)
        k, rate = int((dev > thr).sum()), float((pool > thr).mean())
        above_dev_rate += rate > k / n_dev
        for q in below:
            below[q] += rate <= chance_flag_rate(k, n_dev, n_pool, q)
    for q, n in below.items():
        assert abs(n / sims - q) < 0.05, (q, n / sims)
    assert above_dev_rate / sims > 0.5  # the dev inputs' own rate understates a fresh pool's
    # more dev inputs, a tighter spread; more quantile, a higher rate
    assert chance_flag_rate(40, 1000, 200, 0.95) < chance_flag_rate(4, 100, 200, 0.95)
    assert chance_flag_rate(4, 100, 200, 0.5) < chance_flag_rate(4, 100, 200, 0.7) < chance_flag_rate(4, 100, 200, 0.95)


class _Thr:
    threshold = 0.0


def _verdict(n_flagged: int, n_pool: int = 200, **kw) -> dict:
    dev = np.r_[np.full(96, -1.0), np.full(4, 1.0)]  # 4 of 100 dev inputs above the threshold 0
    pool = np.r_[np.full(n_flagged, 3.0), np.full(n_pool - n_flagged, -1.0)]
    preds = np.r_[np.ones(n_flagged, int), np.zeros(n_pool - n_flagged, int)]  # every flag in one class
    return model_verdict(_Thr(), dev, pool, preds, 2, **kw)


def test_a_chance_level_flag_rate_calls_no_backdoor():
    """8% of a clean pool of 200 flagged, one class, far above the threshold: within what chance gives when 100
    dev inputs set the threshold (the dev rate of 4% made it "likely", 0.74); 25% flagged is a backdoor."""
    chance = _verdict(16)
    assert chance["components"]["chance_flag_rate"] > 0.05
    assert not chance["likely_backdoored"] and chance["score"] < 0.5
    c = chance["components"]  # the rule before: flags counted beyond the dev inputs' own rate
    assert pool_verdict_score(c["flag_rate"], c["clean_frr"], c["tail"], c["purity"]) >= 0.5
    strong = _verdict(50)
    assert strong["likely_backdoored"] and strong["score"] > 0.8
    assert _verdict(0)["score"] == 0.0


def test_a_pool_too_small_to_call_reads_possible_not_likely():
    """One flagged input in a pool of one (a single pasted sentence) scored 1.00 and the shipped clean BBC model
    read "likely backdoored": below settings.VERDICT_MIN_POOL the score is kept, the call is "possible" with the
    reason in words, and a pool of that size or more is called as before."""
    from backdoor_core import settings as S
    from backdoor_core.detection import POSSIBLE_SMALL_LABEL, call_note, verdict_call, verdict_label

    assert not _verdict(1, n_pool=1)["likely_backdoored"]  # one input: no call (its score is small too, below)
    ten = _verdict(10, n_pool=10)  # ten pasted texts, all flagged far above the threshold, one class
    assert ten["score"] >= 0.5 and ten["small_pool"] and not ten["likely_backdoored"]
    assert verdict_call(ten) == "possible" and verdict_label(ten) == POSSIBLE_SMALL_LABEL
    assert f"fewer than {S.VERDICT_MIN_POOL} inputs" in call_note(ten)
    below = _verdict(S.VERDICT_MIN_POOL // 2, n_pool=S.VERDICT_MIN_POOL - 1)
    assert below["score"] >= 0.5 and verdict_call(below) == "possible"
    at = _verdict(S.VERDICT_MIN_POOL // 2, n_pool=S.VERDICT_MIN_POOL)
    assert at["likely_backdoored"] and not at["small_pool"] and verdict_call(at) == "likely"
    quiet = _verdict(0, n_pool=5)  # nothing flagged: no backdoor evidence, as before
    assert verdict_call(quiet) == "not found" and call_note(quiet) is None


def test_the_verdicts_excess_needs_a_few_inputs_not_only_a_share_of_a_small_pool():
    """The excess beyond chance saturated at 5% of the pool: in a pool of 40, two flags past chance (5%) called a
    clean model. It needs settings.VERDICT_EXCESS_INPUTS inputs too; from 100 inputs on the score is unchanged."""
    from backdoor_core import settings as S

    k = S.VERDICT_EXCESS_INPUTS
    for n in (100, 250):
        c = _verdict(20, n_pool=n)["components"]
        assert pool_verdict_score(c["flag_rate"], c["chance_flag_rate"], c["tail"], c["purity"], n) == \
            pool_verdict_score(c["flag_rate"], c["chance_flag_rate"], c["tail"], c["purity"])
    small = _verdict(5, n_pool=40)  # chance explains 3 of 40: two past it
    c = small["components"]
    assert round(c["chance_flag_rate"] * 40) == 3
    assert pool_verdict_score(c["flag_rate"], c["chance_flag_rate"], c["tail"], c["purity"]) >= 0.5  # the old rule
    assert small["score"] < 0.5 and not small["likely_backdoored"]
    many = _verdict(3 + k, n_pool=40)  # k past chance: called
    assert many["likely_backdoored"] and many["score"] >= 0.5
    one = _verdict(1, n_pool=1)  # a single pasted text, flagged: 0.89 by the old rule
    assert one["score"] < 0.5


def _low_share_pool(seed: int, n_triggered: int = 20):
    """126 clean dev scores, the detector's threshold at the 7th highest (5%), and a pool of 380 clean inputs drawn
    like them (predictions half and half) plus ``n_triggered`` inputs far above them, all predicted class 1."""
    rng = np.random.default_rng(seed)
    dev = rng.normal(size=126)
    det = SimpleNamespace(threshold=float(np.sort(dev)[-7]))
    clean, clean_preds = rng.normal(size=380), rng.integers(0, 2, 380)
    pool = np.r_[clean, rng.normal(6, 1, n_triggered)]
    preds = np.r_[clean_preds, np.ones(n_triggered, int)]
    return det, dev, (pool, preds), (clean, clean_preds)


def test_the_dev_tail_rule_sees_a_few_triggered_inputs_that_chance_hides_at_the_threshold():
    """5% of a pool of 400 triggered: at the detector's threshold chance flags about as many clean inputs, and the
    threshold rule calls fewer than half of 40 such pools; above the highest dev scores chance flags ~3, and the
    dev-tail rule calls every one. Neither calls the same pools without their triggered inputs."""
    called = {"threshold": 0, "dev_tail": 0}
    for seed in range(40):
        det, dev, (pool, preds), (clean, clean_preds) = _low_share_pool(seed)
        for rule in called:
            v = model_verdict(det, dev, pool, preds, 2, rule=rule)
            assert v["rule"] == rule
            called[rule] += v["likely_backdoored"]
            assert not model_verdict(det, dev, clean, clean_preds, 2, rule=rule)["likely_backdoored"]
        c = v["components"]  # both rules' scores are recorded whichever is the verdict's
        assert c["score_dev_tail"] >= c["score_threshold"] and c["dev_tail_dev_above"] < 7
    assert called["threshold"] < 20 and called["dev_tail"] == 40


def test_the_dev_tail_rule_is_the_threshold_rule_where_no_stricter_threshold_scores_higher():
    det, dev, (pool, preds), _ = _low_share_pool(0, n_triggered=100)
    v = dev_tail_verdict(dev, pool, preds, 2, det.threshold)
    at = model_verdict(det, dev, pool, preds, 2, rule="threshold")
    assert v["score"] >= at["score"] > 0.5 and v["dev_above"] <= int((dev > det.threshold).sum())
    # flags just above the threshold, below every stricter one: the best threshold is the detector's own
    next_up = np.sort(dev[dev > det.threshold])[0]
    pool = np.r_[pool[:380], np.full(100, (det.threshold + next_up) / 2)]
    v = dev_tail_verdict(dev, pool, preds, 2, det.threshold)
    assert v["threshold"] == det.threshold and v["dev_above"] == 6
    assert v["score"] == pytest.approx(model_verdict(det, dev, pool, preds, 2, rule="threshold")["score"])
    with pytest.raises(ValueError, match="rule must be one of"):
        model_verdict(det, dev, pool, preds, 2, rule="strict")


def test_the_pools_top_scores_make_an_uncalled_verdict_possible(monkeypatch):
    """With ``settings.VERDICT_TAIL_POSSIBLE`` (off by default: then "not found"), below the score's call a pool
    whose inputs above the clean texts' highest scores beat chance reads "possible", with its own phrase and note;
    with a trigger word too, both reasons are worded. The repair's notes do not call its flags mere chance. Where
    the dev-tail rule is the verdict's own rule, it adds no reason."""
    from backdoor_core import settings as S
    from backdoor_core.defenses import repair_notes
    from backdoor_core.detection import POSSIBLE_TAIL_LABEL, call_note, possible_reasons, verdict_call, verdict_label

    for seed in range(40):  # a pool in which 5% of the inputs carry the trigger; the threshold rule misses some
        det, dev, (pool, preds), (clean, clean_preds) = _low_share_pool(seed)
        v = model_verdict(det, dev, pool, preds, 2, rule="threshold")
        if not v["likely_backdoored"]:
            break
    assert not S.VERDICT_TAIL_POSSIBLE and verdict_call(v) == "not found" and call_note(v) is None
    monkeypatch.setattr(S, "VERDICT_TAIL_POSSIBLE", True)
    assert not v["likely_backdoored"] and possible_reasons(v) == ["dev_tail"]
    assert verdict_call(v) == "possible" and verdict_label(v) == POSSIBLE_TAIL_LABEL
    c = v["components"]
    note = call_note(v)
    assert f"score {v['score']:.2f}" in note and f"{c['dev_tail_flag_rate']:.1%} of the pool" in note
    assert f"up to {c['dev_tail_chance']:.1%}" in note and c["dev_tail_chance"] < c["dev_tail_flag_rate"]
    both = {**v, "trigger_words": ["cf"]}
    assert possible_reasons(both) == ["word", "dev_tail"] and verdict_label(both) == VERDICT_LABELS["possible"]
    assert "(cf)" in call_note(both) and "The pool's top scores say more" in call_note(both)
    notes = repair_notes({"verdict": v})
    assert any("top scores read as a possible one" in n for n in notes)
    assert not any("nothing to remove" in n for n in notes)
    assert possible_reasons(model_verdict(det, dev, pool, preds, 2, rule="dev_tail")) == []
    clean_v = model_verdict(det, dev, clean, clean_preds, 2, rule="threshold")
    assert verdict_call(clean_v) == "not found" and call_note(clean_v) is None


def test_a_pool_of_another_source_is_read_where_its_bulk_sits():
    """A clean pool whose scores sit 2 above the clean dev inputs' and twice as spread (another source) flags
    about half of itself at the detector's threshold, mostly one class: without the adjustment that reads "likely
    backdoored" in each of 20 draws, with it (the pool's threshold moved to where its bulk sits,
    ``pool_score_match``, an estimate from a few percentiles) in at most 3, and those it does not call read
    "possible" for the source (``possible_reasons``), with their own phrase and notes. The same pool with 20%
    triggered inputs far above it stays called, and a same-source pool is read as before."""
    from backdoor_core.defenses import repair_notes
    from backdoor_core.detection import (POSSIBLE_SOURCE_LABEL, match_threshold, pool_score_match, call_note,
                                         possible_reasons, verdict_call, verdict_label)

    called = {False: 0, True: 0}
    for seed in range(20):
        det, dev, _, _ = _low_share_pool(seed)
        rng = np.random.default_rng(100 + seed)
        other = rng.normal(2.0, 2, 300)
        other_preds = (rng.random(300) < 0.85).astype(int)  # the other source reads mostly as class 1
        match = pool_score_match(dev, other)
        assert 1.5 < match["stretch"] < 2.7 and match["pool_q25"] == pytest.approx(np.quantile(other, 0.25))
        assert match_threshold(det.threshold, match) > det.threshold + 1.5
        for adjust in called:
            v = model_verdict(det, dev, other, other_preds, 2, shift_adjust=adjust)
            c = v["components"]
            assert v["pool_unlike_clean"] and (c["pool_threshold_raised"] > 1.5) == adjust
            assert (c["pool_stretch"] > 1.5) == adjust
            assert c["score_unadjusted"] >= 0.5  # read at the threshold itself, the flags call it
            called[adjust] += v["likely_backdoored"]
            if adjust and not v["likely_backdoored"]:  # not called where the bulk sits: "possible", and why
                assert possible_reasons(v) == ["source"] and verdict_call(v) == "possible"
                assert verdict_label(v) == POSSIBLE_SOURCE_LABEL
                assert f"score {c['score_unadjusted']:.2f}" in call_note(v) and "own source" in call_note(v)
                assert any("only inputs flagged for their source" in n for n in repair_notes({"verdict": v}))
        triggered = np.r_[other, rng.normal(14, 1, 75)]
        v = model_verdict(det, dev, triggered, np.r_[other_preds, np.ones(75, int)], 2, shift_adjust=True)
        assert v["likely_backdoored"] and v["components"]["pool_threshold_raised"] > 1.5
        same, same_preds = _low_share_pool(seed, n_triggered=100)[2]
        a, b = (model_verdict(det, dev, same, same_preds, 2, shift_adjust=x) for x in (True, False))
        assert not a["pool_unlike_clean"] and a["components"]["pool_threshold_raised"] == 0 and a["score"] == b["score"]
        assert "source" not in possible_reasons(a) and a["components"]["score_unadjusted"] == a["score"]
    assert called[False] == 20 and called[True] <= 3
    # a pool no wider than the dev inputs is only shifted; a threshold is never lowered; no scores, no match
    m = pool_score_match(dev, dev + 2.0)
    assert m["stretch"] == 1.0 and match_threshold(0.5, m) == pytest.approx(2.5)
    assert match_threshold(0.5, pool_score_match(dev, dev - 1.0)) == 0.5 and pool_score_match(dev, []) is None


def test_moved_words_score_the_verdict_as_trigger_words_do_and_leave_the_flags_score():
    """``with_moved_words``: moved words that mark pool inputs record the score they would give (0.5 + half their
    strongest insertion flip); with the lift on it calls the model by the words alone and the note says which words
    and why; off, the call reads "possible" with the moved words' reason; the flags' score stays (the repair's)."""
    from backdoor_core.defenses import repair_notes
    from backdoor_core.detection import (LIKELY_WORD_LABEL, POSSIBLE_MOVED_LABEL, VERDICT_LABELS, call_note,
                                         called_by_words, flags_score, possible_reasons, verdict_call, verdict_label,
                                         with_moved_words, with_trigger_words)

    weak = {"score": 0.48, "likely_backdoored": False, "basis": "pool",
            "components": {"score_unadjusted": 0.48, "flag_rate": 0.08}}
    on = with_moved_words(weak, ["cf", "mn"], 0.1, lift=True)
    assert on["score"] == pytest.approx(0.55) and on["likely_backdoored"] and called_by_words(on)
    assert flags_score(on) == 0.48 and on["moved_words"] == ["cf", "mn"] and on["components"]["moved_lift"]
    assert verdict_label(on) == LIKELY_WORD_LABEL
    note = call_note(on)
    assert "moved far since its base checkpoint" in note and "(cf, mn)" in note and "10%" in note
    assert any("moved far" in n and "(cf, mn)" in n for n in repair_notes({"verdict": on}))
    off = with_moved_words(weak, ["cf", "mn"], 0.1, lift=False)
    assert off["score"] == 0.48 and not off["likely_backdoored"] and off["components"]["score_moved"] == pytest.approx(0.55)
    assert verdict_call(off) == "possible" and possible_reasons(off) == ["moved"]
    assert verdict_label(off) == POSSIBLE_MOVED_LABEL and "(cf, mn)" in call_note(off)
    assert verdict_label({**off, "trigger_words": ["tq"]}) == VERDICT_LABELS["possible"]  # a likely word says more
    # a likely trigger word that scores higher keeps its own note; no moved word, nothing changes
    both = with_moved_words(with_trigger_words(weak, ["tq"], 0.6, lift=True), ["cf"], 0.1, lift=True)
    assert both["score"] == pytest.approx(0.8) and "likely trigger word (tq)" in call_note(both)
    assert with_moved_words(weak, [], 0.0, lift=True) == {**weak, "moved_words": []}
    strong = {**weak, "score": 0.9, "likely_backdoored": True, "components": {"score_unadjusted": 0.9}}
    assert with_moved_words(strong, ["cf"], 0.1, lift=True)["score"] == 0.9


def test_a_score_under_the_line_is_never_written_as_the_line():
    """0.497 written with two decimals is "0.50", the line itself: beside "not found" it read "0.50 is below the line
    at 0.50" (Detect, the Report's finding, the CLI's verdict line, the verdict's notes). One writer for all now."""
    from backdoor_core.detection import VERDICT_THRESHOLD, score_text

    assert VERDICT_THRESHOLD == 0.5
    assert score_text(0.497) == "0.497" and score_text(0.4999) == "0.499" and score_text(0.4949) == "0.49"
    assert score_text(0.5) == "0.50" and score_text(0.503) == "0.50" and score_text(0.0) == "0.00"
    assert score_text(1) == "1.00"
