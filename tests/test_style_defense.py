"""Representation-level detection fused with head focus, and feed-forward repair (style backdoors; our design)."""

import copy

import numpy as np
import pytest
import torch

from backdoor_core import settings as S
from backdoor_core.architecture import ffn_parameter_masks, head_parameter_masks
from backdoor_core.detection import (AttentionStats, RepresentationDetector, SimilarityDetector, attention_stats,
                                     fused_detector)
from backdoor_core.metrics import auroc
from backdoor_core.sanitize import ffn_layers, sanitize_heads
from backdoor_core.training import TrainConfig
from defense_helpers import clean_texts, trained_tiny, triggered_texts

L, H, HID = 3, 4, 24


def _stats(n, rng, shift_layer=None, shift=0.0, focus_shift=0.0):
    """Synthetic ``AttentionStats``: random focus ``(n, L, H)``, two predicted classes, and ``cls`` ``(n, L, HID)``
    drawn around a class mean; ``shift`` moves layer ``shift_layer``'s states along one direction."""
    probs = rng.dirichlet([1, 1], size=n).astype(np.float32)
    pred = probs.argmax(1)
    centres = np.stack([np.full(HID, -1.0), np.full(HID, 1.0)])  # class means, the same in every layer
    cls = centres[pred][:, None, :] + rng.normal(size=(n, L, HID)) * np.linspace(0.5, 2.0, HID)
    if shift_layer is not None:
        direction = np.zeros(HID)
        direction[3] = 1.0
        cls[:, shift_layer] += shift * direction * 2.0
    focus = np.clip(rng.normal(0.4, 0.05, size=(n, L, H)) + focus_shift, 0, 1)
    z = np.zeros((n, L, H), np.float32)
    return AttentionStats(z, z.copy(), focus.astype(np.float32), z.copy(), probs,
                          rng.integers(8, 40, size=n), cls=cls.astype(np.float32))


def _fitted(rng, n_fit=300, n_dev=400, frr=S.FRR):
    fit, dev = _stats(n_fit, rng), _stats(n_dev, rng)
    rep = RepresentationDetector().fit(fit)
    rep.calibrate(dev, frr)
    att = SimilarityDetector().fit(fit)
    att.calibrate(dev, frr)
    return rep, att, dev


def test_representation_score_separates_shifted_cls_states():
    rng = np.random.default_rng(0)
    rep, att, _ = _fitted(rng)
    clean = _stats(300, rng)
    shifted = _stats(300, rng, shift_layer=1, shift=3.0)  # only layer 1's states move, along one direction
    assert auroc(rep.score(clean), rep.score(shifted)) > 0.95
    assert rep.flag(rep.score(shifted)).mean() > 0.8
    # the attention statistics are identical in distribution: the attention score cannot see the shift
    assert auroc(att.score(clean), att.score(shifted)) < 0.6
    # the distance that moved is layer 1's, not the others'
    gap = rep.layer_z(shifted).mean(0) - rep.layer_z(clean).mean(0)
    assert gap.argmax() == 1 and gap[1] > 2 and abs(gap[0]) < 0.5 and abs(gap[2]) < 0.5


def test_class_conditional_distance_uses_the_predicted_class():
    rng = np.random.default_rng(1)
    fit = _stats(300, rng)
    cond = RepresentationDetector(class_conditional=True).fit(fit)
    agn = RepresentationDetector(class_conditional=False).fit(fit)
    probe = _stats(200, rng)
    # states sitting at the OTHER class's mean: far for the class-conditional distance, near for the overall one
    swapped = AttentionStats(*(getattr(probe, f) for f in AttentionStats.FIELDS[:4]), probe.probs[:, ::-1].copy(),
                             probe.lengths, cls=probe.cls)
    assert cond.layer_distance(swapped).mean() > 1.5 * cond.layer_distance(probe).mean()
    assert np.allclose(agn.layer_distance(swapped), agn.layer_distance(probe))


def test_fused_score_is_calibrated_on_clean_dev_and_flags_either_kind_of_shift():
    rng = np.random.default_rng(2)
    rep, att, dev = _fitted(rng)
    fused = fused_detector(att, rep, dev, S.FRR, "max")
    assert abs(fused.clean_frr - S.FRR) <= 0.01  # on the dev inputs it was calibrated on
    fresh = _stats(3000, rng)  # held-out clean inputs: the false-rejection rate stays near the asked-for one
    assert abs(fused.flag(fused.score(fresh)).mean() - S.FRR) < 0.025
    rep_shift = _stats(300, rng, shift_layer=2, shift=3.0)
    att_shift = _stats(300, rng, focus_shift=0.2)
    assert fused.flag(fused.score(rep_shift)).mean() > 0.8  # seen through the representations
    assert fused.flag(fused.score(att_shift)).mean() > 0.8  # seen through the heads
    assert att.flag(att.score(rep_shift)).mean() < 0.15 and rep.flag(rep.score(att_shift)).mean() < 0.15
    summed = fused_detector(att, rep, dev, S.FRR, "sum")
    assert abs(summed.flag(summed.score(fresh)).mean() - S.FRR) < 0.025
    with pytest.raises(ValueError, match="fuse"):
        fused_detector(att, rep, dev, S.FRR, "product")


def test_a_part_without_evidence_on_the_pool_is_left_out_of_the_fused_score():
    """Where only the representation flags the pool beyond its clean rate (a style: no head captured), the fused
    score reads the representation alone, its threshold reset at the same FRR; where both or neither part see the
    pool, both count, and the score is the plain sum."""
    rng = np.random.default_rng(5)
    rep, att, dev = _fitted(rng)
    pool_clean = _stats(240, rng)
    pool_style = AttentionStats.concat([pool_clean, _stats(60, rng, shift_layer=1, shift=3.0)])  # a fifth shifted
    plain = fused_detector(att, rep, dev, S.FRR, "sum")
    kept = fused_detector(att, rep, dev, S.FRR, "sum", pool=pool_style, min_excess=0.05)
    excess = kept.part_excess(pool_style)
    assert excess[0] < 0.05 <= excess[1]  # the attention part sees nothing, the representation the shifted fifth
    assert kept.parts_used == ["representation"] and list(kept.used) == [0, 1]
    assert np.allclose(kept.score(pool_style), kept.parts(pool_style)[:, 1])
    assert abs(kept.clean_frr - S.FRR) <= 0.01  # the threshold is set again on the representation alone
    # neither part sees a clean pool: both count, exactly the plain sum
    both = fused_detector(att, rep, dev, S.FRR, "sum", pool=pool_clean, min_excess=0.05)
    assert both.used is None and both.parts_used == ["attention", "representation"]
    assert np.allclose(both.score(pool_clean), plain.score(pool_clean)) and both.threshold == plain.threshold
    # both parts see a pool shifted both ways: both count
    mixed = _stats(300, rng, shift_layer=2, shift=3.0, focus_shift=0.2)
    assert fused_detector(att, rep, dev, S.FRR, "sum", pool=mixed, min_excess=0.05).used is None
    # no pool or no least excess: the plain fused score
    assert fused_detector(att, rep, dev, S.FRR, "sum", pool=pool_style).used is None
    # only the parts named droppable may be left out
    assert fused_detector(att, rep, dev, S.FRR, "sum", pool=pool_style, min_excess=0.05,
                          droppable=("representation",)).used is None
    assert fused_detector(att, rep, dev, S.FRR, "sum", pool=pool_style, min_excess=0.05,
                          droppable=("attention",)).parts_used == ["representation"]
    with pytest.raises(ValueError, match="droppable"):
        kept.keep_parts_with_evidence(pool_style, 0.05, ("heads",))
    from backdoor_core.detection import fused_parts_note, representation_notes

    note = fused_parts_note(kept.parts_used)
    assert "[CLS] states" in note and "attention part flagged no more" in note
    assert fused_parts_note(["attention", "representation"]) is None and fused_parts_note(None) is None
    assert note in representation_notes({}, {"fused_parts": ["representation"]})


def test_attention_stats_cls_are_the_first_token_states_of_each_layer():
    from backdoor_core.forward import run_with_cache

    lm = trained_tiny(True)
    texts = clean_texts(6, seed=3)[0] + triggered_texts(3, seed=4)
    st = attention_stats(lm.model, lm.tokenizer, texts, 32, batch_size=4)
    cache = run_with_cache(lm.model, lm.tokenizer, texts, max_length=32, want=("hidden_states",))
    want = np.stack([h[1:, 0] for h in cache.hidden_states])  # (N, L, hidden): each layer's output at [CLS]
    assert st.cls.shape == want.shape == (9, 2, lm.model.config.hidden_size)
    assert np.allclose(st.cls, want, atol=1e-5)
    assert attention_stats(lm.model, lm.tokenizer, texts[:2], 32, cls=False).cls is None


def test_scan_with_representation_fusion_keeps_the_attention_only_path():
    from backdoor_core.data import TextDataset
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(2 * S.REP_MIN_FIT, seed=35)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(10, seed=36) + clean_texts(10, seed=37)[0]
    few = scan_model(lm.model, lm.tokenizer, TextDataset(texts[:40], labels[:40], ["neg", "pos"]), pool,
                     max_length=32, frr=0.2, representation=True, find_triggers=False)
    assert few.representation_detector is None and "20 clean fit inputs" in few.settings["representation_skipped"]
    paper = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, representation=False,
                       find_triggers=False)
    ours = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, representation=True,
                      find_triggers=False)
    assert paper.representation_detector is None and paper.detector is paper.attention_detector
    assert ours.representation_detector is not None and ours.detector is not ours.attention_detector
    assert ours.to_dict()["detection"]["method"] == "head_similarity + representation"
    # which part found the flags: the share whose representation z beats the attention z, recomputed here
    stats = attention_stats(lm.model, lm.tokenizer, ours.flagged_texts, 32)
    final = ours.head_detector if ours.head_detector is not None else ours.detector  # the final pass's
    assert final.attention is ours.attention_head_detector or final.attention is ours.attention_detector
    parts = final.parts(stats)
    assert ours.representation_share == pytest.approx(float((parts[:, 1] > parts[:, 0]).mean()))
    assert paper.representation_share is None
    # which the paper's attention-only part would not flag (what ``ffn="auto"`` reads), recomputed here
    att = final.attention
    assert ours.attention_missed_share == pytest.approx(float((~att.flag(att.score(stats))).mean()))
    assert paper.attention_missed_share is None
    # every fused pass keeps the FRR it was calibrated for on the same 50 clean dev inputs (steps of 0.02)
    frrs = [ours.clean_frr] + ([ours.first_pass["clean_frr"]] if ours.first_pass else [])
    assert all(abs(f - 0.2) <= 0.04 for f in frrs), frrs
    # the attention part of the fused scan is the paper's first-pass detector, fitted on the same clean halves
    assert np.allclose(ours.attention_detector.score(attention_stats(lm.model, lm.tokenizer, pool, 32)),
                       paper.attention_detector.score(attention_stats(lm.model, lm.tokenizer, pool, 32)))
    # with a least excess, the final pass names the parts it read, as its detector does; none without a pool
    evid = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, representation=True,
                      find_triggers=False, fuse_min_excess=0.05)
    final = evid.head_detector if evid.head_detector is not None else evid.detector
    assert evid.settings["fused_parts"] == final.parts_used and evid.settings["fuse_min_excess"] == 0.05
    assert set(final.parts_used) <= {"attention", "representation"} and final.parts_used
    # bad knobs are refused before any forward pass
    for bad in ({"fuse_drop": "heads"}, {"fuse_min_excess": 1.5}, {"fuse_min_excess": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, find_triggers=False, **bad)


def test_ffn_layers_rule():
    susp = np.array([[False, True, False], [False, False, False], [True, False, False]])
    assert ffn_layers("none", susp) == [] and ffn_layers(None, susp) == [] and ffn_layers(False, susp) == []
    assert ffn_layers("suspicious", susp) == [0, 2]
    assert ffn_layers("all", susp) == [0, 1, 2]
    assert ffn_layers("1, 2", susp) == [1, 2] and ffn_layers([2, 2], susp) == [2]
    with pytest.raises(ValueError, match="do not exist"):
        ffn_layers([3], susp)
    with pytest.raises(ValueError, match="suspicious"):
        ffn_layers("some", susp)
    # auto: the suspicious layers only when the attention-only detector misses enough of the scan's flags
    assert ffn_layers("auto", susp, S.FFN_AUTO_MISSED) == [0, 2] and ffn_layers("auto", susp, 1.0) == [0, 2]
    assert ffn_layers("auto", susp, S.FFN_AUTO_MISSED - 0.01) == [] and ffn_layers("auto", susp, None) == []
    # ... and only when the scan's verdict found a backdoor (unknown verdict: the share decides)
    assert ffn_layers("auto", susp, 1.0, backdoor_found=False) == []
    assert ffn_layers("auto", susp, 1.0, backdoor_found=True) == ffn_layers("auto", susp, 1.0, backdoor_found=None) == [0, 2]
    assert ffn_layers("suspicious", susp, 0.0, backdoor_found=False) == [0, 2]  # an explicit choice is kept
    # a cap keeps the layers with the most suspicious heads (ties: the later layer)
    many = np.array([[True, False, False], [True, True, False], [False, True, False], [True, True, True]])
    assert ffn_layers("suspicious", many, max_layers=2) == [1, 3] and ffn_layers("auto", many, 1.0, 1) == [3]
    assert ffn_layers("suspicious", many, max_layers=None) == [0, 1, 2, 3]
    assert ffn_layers("suspicious", susp, max_layers=1) == [2] and ffn_layers([0, 1, 2], susp, max_layers=1) == [0, 1, 2]


SUSPICIOUS = np.array([[True, False, False, False], [False, True, False, False]])


def _repair(ffn, **knobs):
    lm = trained_tiny(True)
    model = copy.deepcopy(lm.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    texts, labels = clean_texts(48, seed=21)
    cfg = TrainConfig(lr=3e-3, epochs=1, batch_size=16, max_length=32, seed=0, eval_every=100)
    res = sanitize_heads(model, lm.tokenizer, texts, labels, SUSPICIOUS, triggered_texts(8, seed=22), beta=1.0,
                         config=cfg, ffn=ffn, **knobs)
    return model, before, res


@pytest.mark.parametrize("ffn, layers", [("none", []), ([1], [1])])
def test_ffn_params_train_only_when_asked_and_only_in_the_chosen_layers(ffn, layers):
    model, before, res = _repair(ffn)
    assert res.details["ffn_layers"] == layers and res.frozen_unchanged
    heads = head_parameter_masks(model, SUSPICIOUS)
    ffn_all = ffn_parameter_masks(model, [0, 1])
    ffn_on = ffn_parameter_masks(model, layers)
    assert set(ffn_all) == {f"bert.encoder.layer.{l}.{m}.{w}" for l in (0, 1) for m in ("intermediate.dense",
                                                                                        "output.dense")
                            for w in ("weight", "bias")}
    for name, p in model.named_parameters():
        now = p.detach()
        if name in ffn_on:
            assert not torch.equal(now, before[name]), name  # the chosen layers' FFN trained
        elif name in heads:
            m = heads[name]
            assert torch.equal(now[~m], before[name][~m]), name  # outside the heads' slices: bit-identical
            assert not torch.equal(now[m], before[name][m]), name
        else:
            assert torch.equal(now, before[name]), name  # every other parameter (other layers' FFN) bit-identical


def test_ffn_lr_scale_sets_the_feed_forward_step_size():
    """``ffn_lr_scale``: 0 leaves the chosen FFN blocks where they were while the heads still train; the run's
    details record the scale. A smaller scale moves the FFN weights less than the full lr does."""
    moved = {}
    for scale in (0.0, 0.1, 1.0):
        model, before, res = _repair([1], ffn_lr_scale=scale)
        assert res.details["ffn_lr_scale"] == scale and res.frozen_unchanged
        ffn = ffn_parameter_masks(model, [1])
        moved[scale] = sum(float((p.detach() - before[n]).abs().sum()) for n, p in model.named_parameters()
                           if n in ffn)
        heads = head_parameter_masks(model, SUSPICIOUS)
        assert any(not torch.equal(p.detach()[heads[n]], before[n][heads[n]])
                   for n, p in model.named_parameters() if n in heads)
    assert moved[0.0] == 0.0 and 0.0 < moved[0.1] < moved[1.0]
    with pytest.raises(ValueError, match="ffn_lr_scale"):
        _repair([1], ffn_lr_scale=-0.5)


def test_new_knobs_default_to_the_settings_objects():
    import inspect

    from backdoor_core import detection, sanitize, scan
    from backdoor_core.defenses import DEFENSES

    sig = inspect.signature(scan.scan_model).parameters
    assert sig["representation"].default is S.REPRESENTATION and sig["fuse"].default is S.FUSE
    assert inspect.signature(sanitize.sanitize_heads).parameters["ffn"].default is S.REPAIR_FFN
    knobs = DEFENSES["alignment"].knobs
    assert knobs["ffn"] is S.REPAIR_FFN and knobs["representation"] is S.REPRESENTATION
    rep = detection.RepresentationDetector()
    assert rep.class_conditional is S.REP_CLASS_CONDITIONAL and rep.aggregate is S.REP_AGGREGATE


# ------------------------------------------------------------------ pool contrast (ContrastDetector; our design)

def _pooled(n, rng, shift=0.0, layers=L, hidden=HID, base=None):
    """Synthetic statistics with ``pooled`` ``(n, layers, hidden)`` states around 0; ``shift`` moves every layer's
    states along one fixed direction (a style trigger leaves no token a head can focus on, only such a shift).
    ``base``: the ``_stats`` the rest comes from (default: fresh ones)."""
    base = _stats(n, rng) if base is None else base
    x = rng.normal(size=(n, layers, hidden))
    direction = np.zeros(hidden)
    direction[:4] = 1.0
    x += shift * direction
    return AttentionStats(*(getattr(base, f) for f in AttentionStats.FIELDS), cls=base.cls,
                          pooled=x.astype(np.float32))


def test_contrast_detector_finds_the_part_of_the_pool_that_differs_from_clean():
    from backdoor_core.detection import ContrastDetector

    rng = np.random.default_rng(5)
    clean = _pooled(200, rng)
    pool = AttentionStats.concat([_pooled(160, rng), _pooled(40, rng, shift=1.0)])
    is_trig = np.r_[np.zeros(160, bool), np.ones(40, bool)]
    det = ContrastDetector(seed=0).fit(clean, pool)
    det.calibrate(clean.subset(np.arange(100, 200)), S.FRR)
    # the pool's own inputs are scored out of fold, and the shifted ones stand out
    scores = det.score(pool)
    assert auroc(scores[~is_trig], scores[is_trig]) > 0.9
    # out-of-fold, not the folds' mean: the same states as an unseen copy get the mean's value
    unseen = AttentionStats(*(getattr(pool, f) for f in AttentionStats.FIELDS), cls=pool.cls,
                            pooled=pool.pooled + np.float32(1e-3))
    assert not np.allclose(det.decision(pool), det.decision(unseen), atol=1e-3)
    # fresh inputs: the shift still separates, and clean ones are flagged near the asked-for rate
    fresh_clean, fresh_trig = _pooled(400, rng), _pooled(200, rng, shift=1.0)
    assert auroc(det.score(fresh_clean), det.score(fresh_trig)) > 0.9
    assert det.flag(det.score(fresh_clean)).mean() < 0.12


def test_contrast_detector_on_a_pool_like_clean_flags_near_the_false_rejection_rate():
    from backdoor_core.detection import ContrastDetector

    rates = []
    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        clean, pool = _pooled(200, rng), _pooled(200, rng)  # a clean model's pool: nothing to learn
        det = ContrastDetector(seed=seed).fit(clean, pool)
        det.calibrate(clean.subset(np.arange(100, 200)), S.FRR)
        rates.append(det.flag(det.score(pool)).mean())
    assert np.mean(rates) < 0.12, rates
    with pytest.raises(ValueError, match="at least 5 clean and 5 pool"):
        ContrastDetector().fit(_pooled(20, rng), _pooled(3, rng))
    with pytest.raises(ValueError, match="no pooled states"):
        ContrastDetector().fit(_stats(20, rng), _pooled(20, rng))


def test_representation_detector_methods_and_the_small_pool_fallback():
    from backdoor_core.detection import ContrastDetector, SummedDetector, representation_detector

    rng = np.random.default_rng(7)
    clean = _pooled(200, rng)
    fit, dev = clean.subset(np.arange(100)), clean.subset(np.arange(100, 200))
    pool = AttentionStats.concat([_pooled(80, rng), _pooled(20, rng, shift=1.0)])
    maha, used, _ = representation_detector(fit, clean, pool, dev, S.FRR, "mahalanobis")
    assert isinstance(maha, RepresentationDetector) and used == "mahalanobis"
    con, used, _ = representation_detector(fit, clean, pool, dev, S.FRR, "contrast")
    assert isinstance(con, ContrastDetector) and used == "contrast"
    both, used, _ = representation_detector(fit, clean, pool, dev, S.FRR, "both")
    assert isinstance(both, SummedDetector) and used == "both" and len(both.parts) == 2
    assert abs(both.clean_frr - S.FRR) <= 0.02
    # the summed score is the sum of the parts' z-scores on clean dev
    raw = np.stack([p.score(pool) for p in both.parts], 1)
    assert np.allclose(both.score(pool), ((raw - both.norm[:, 0]) / both.norm[:, 1]).sum(1))
    small_pool = pool.subset(np.arange(S.CONTRAST_MIN_POOL - 1))
    small, used, _ = representation_detector(fit, clean, small_pool, dev, S.FRR, "both")
    assert isinstance(small, RepresentationDetector) and used == "mahalanobis"
    with pytest.raises(ValueError, match="method"):
        representation_detector(fit, clean, pool, dev, S.FRR, "knn")


def test_the_source_gate_keeps_the_contrast_off_a_pool_of_another_source():
    """With the first-pass attention detector given, a pool whose bulk the distance alone already reads as unlike
    the clean inputs (``pool_unlike_clean``) is scored by the distance alone; a pool like the clean inputs but for
    a triggered fifth keeps the contrast."""
    from backdoor_core.detection import SummedDetector, pool_unlike_clean, representation_detector

    rng = np.random.default_rng(11)
    clean = _pooled(200, rng)
    fit, dev = clean.subset(np.arange(100)), clean.subset(np.arange(100, 200))
    att = SimilarityDetector().fit(fit)
    att.calibrate(dev, S.FRR)
    same = AttentionStats.concat([_pooled(80, rng), _pooled(20, rng, shift=1.0)])
    det, used, _ = representation_detector(fit, clean, same, dev, S.FRR, "both", attention=att)
    assert used == "both" and isinstance(det, SummedDetector)
    # every input from elsewhere: its [CLS] states sit away from the clean ones, and a fifth carries the shift too
    other = AttentionStats.concat([_pooled(80, rng, base=_stats(80, rng, shift_layer=1, shift=3.0)),
                                   _pooled(20, rng, shift=1.0, base=_stats(20, rng, shift_layer=1, shift=3.0))])
    det, used, _ = representation_detector(fit, clean, other, dev, S.FRR, "both", attention=att)
    assert used == "mahalanobis" and isinstance(det, RepresentationDetector)
    # the gate's own reading, and the same pool without the gate: the contrast is used and flags most of it
    probe = fused_detector(att, det, dev, S.FRR)
    assert pool_unlike_clean(probe.clean_dev_scores, probe.score(other))
    assert not pool_unlike_clean(probe.clean_dev_scores, probe.score(same))
    ungated, used, _ = representation_detector(fit, clean, other, dev, S.FRR, "both")
    assert used == "both" and ungated.flag(ungated.score(other)).mean() > 0.5
    assert representation_detector(fit, clean, other, dev, S.FRR, "contrast", attention=att)[1] == "mahalanobis"


def test_attention_stats_pooled_are_each_layers_content_token_means():
    from backdoor_core.forward import run_with_cache

    lm = trained_tiny(True)
    texts = clean_texts(5, seed=8)[0] + triggered_texts(3, seed=9) + [""]
    st = attention_stats(lm.model, lm.tokenizer, texts, 32, batch_size=4)
    cache = run_with_cache(lm.model, lm.tokenizer, texts, max_length=32, want=("hidden_states",))
    for i in range(len(texts)):
        ids = lm.tokenizer(texts[i], truncation=True, max_length=32)["input_ids"]
        content = np.array([t not in lm.tokenizer.all_special_ids for t in ids])
        hs = cache.hidden_states[i][1:, : len(ids)]  # (L, T, hidden)
        want = hs[:, content].mean(1) if content.any() else np.zeros(hs.shape[::2])
        assert np.allclose(st.pooled[i], want, atol=1e-5)
    assert st.subset([0, 2]).pooled.shape == (2, 2, lm.model.config.hidden_size)


def test_scan_records_the_representation_method_it_used():
    from backdoor_core.data import TextDataset
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(2 * S.REP_MIN_FIT, seed=45)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(15, seed=46) + clean_texts(15, seed=47)[0]
    both = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, rep_method="both",
                      find_triggers=False)
    assert both.settings["rep_method"] == "both" and len(both.representation_detector.parts) == 2
    assert both.settings["contrast_gated"] is False  # a pool of the clean texts' own source keeps the contrast
    # a pool of another source (none of the clean texts' words): the source gate scans it with the distance alone
    r = np.random.default_rng(0)
    other = [" ".join(r.choice(["zq", "xv", "kk", "0", "1", "2", "##", "!!"], 12)) for _ in range(40)]
    gated = scan_model(lm.model, lm.tokenizer, clean, other, max_length=32, frr=0.2, rep_method="both",
                       find_triggers=False)
    assert gated.settings["rep_method"] == "mahalanobis" and gated.settings["contrast_gated"] is True
    assert gated.verdict["pool_unlike_clean"]
    assert gated.to_dict()["detection"]["contrast_gated"] is True  # and the saved report says so
    from backdoor_core.detection import contrast_gate_note

    assert "left the contrast out" in contrast_gate_note(gated.settings["contrast_gated"])  # what the views show
    assert contrast_gate_note(both.settings["contrast_gated"]) is None
    ungated = scan_model(lm.model, lm.tokenizer, clean, other, max_length=32, frr=0.2, rep_method="both",
                         contrast_gate=False, find_triggers=False)
    assert ungated.settings["rep_method"] == "both" and ungated.settings["contrast_gated"] is False
    few = scan_model(lm.model, lm.tokenizer, clean, pool[:10], max_length=32, frr=0.2, rep_method="both",
                     find_triggers=False)
    assert few.settings["rep_method"] == "mahalanobis"
    paper = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, representation=False,
                       find_triggers=False)
    assert paper.settings["rep_method"] is None
    with pytest.raises(ValueError, match="rep_method must be one of mahalanobis, contrast, both"):
        scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, rep_method="knn")


def test_verdict_reads_the_scan_heads_with_the_distance_alone_when_the_contrast_flags():
    """``verdict_without_contrast``: the flags keep the contrast, the verdict reads the final heads fused with the
    distance alone (the same numbers as that fused detector's own verdict); off, the verdict reads the flags'
    scores."""
    from backdoor_core.data import TextDataset
    from backdoor_core.detection import RepresentationDetector, fused_detector, model_verdict, split_clean
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(2 * S.REP_MIN_FIT, seed=45)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(15, seed=46) + clean_texts(15, seed=47)[0]
    kw = dict(max_length=32, frr=0.2, rep_method="both", find_triggers=False)
    blind = scan_model(lm.model, lm.tokenizer, clean, pool, **kw)
    seen = scan_model(lm.model, lm.tokenizer, clean, pool, verdict_without_contrast=False, **kw)
    assert blind.settings["rep_method"] == "both" and blind.settings["verdict_rep_method"] == "mahalanobis"
    assert seen.settings["verdict_rep_method"] == "both"
    assert blind.to_dict()["detection"]["verdict_representation_method"] == "mahalanobis"  # the saved report says
    from backdoor_core.detection import representation_notes

    note = representation_notes(blind.verdict, blind.settings)  # what every view shows under the verdict
    assert len(note) == 1 and f"{blind.verdict['components']['flag_rate']:.1%} of the pool is flagged" in note[0]
    assert representation_notes(seen.verdict, seen.settings) == []
    assert np.array_equal(blind.flagged, seen.flagged)  # the flags (and so the repair) do not change
    assert np.allclose(blind.pool_scores, seen.pool_scores)
    # the repair's gates read the flags' own verdict, the one the contrast-reading scan calls its verdict
    assert seen.flags_verdict is None and seen.gate_verdict is seen.verdict
    assert blind.gate_verdict is blind.flags_verdict
    assert blind.flags_verdict["score"] == pytest.approx(seen.verdict["score"])
    assert blind.flags_verdict["components"]["flag_rate"] == pytest.approx(seen.verdict["components"]["flag_rate"])
    # the saved report carries the flags' own verdict and the score the repair's gates read
    from backdoor_core.detection import flags_score

    saved, plain = blind.to_dict(), seen.to_dict()
    assert saved["flags_verdict"]["score"] == pytest.approx(blind.flags_verdict["score"])
    assert saved["repair_gate_score"] == pytest.approx(flags_score(blind.flags_verdict))
    assert plain["flags_verdict"] is None and plain["repair_gate_score"] == pytest.approx(flags_score(seen.verdict))
    # the blind verdict is the final heads' detector fused with the distance part, re-computed here
    from backdoor_core.detection import attention_stats

    fit_idx, dev_idx = split_clean(len(clean), 0.5, 0)
    stats = attention_stats(lm.model, lm.tokenizer, clean.texts, 32, cls=True)
    pool_stats = attention_stats(lm.model, lm.tokenizer, pool, 32, cls=True)
    distance = blind.representation_detector.parts[0]
    assert isinstance(distance, RepresentationDetector)
    att = blind.attention_head_detector or blind.attention_detector
    det = fused_detector(att, distance, stats.subset(dev_idx), 0.2)
    want = model_verdict(det, det.clean_dev_scores, det.score(pool_stats), pool_stats.predictions, 2)
    assert blind.verdict["components"]["flag_rate"] == pytest.approx(want["components"]["flag_rate"])
    assert blind.verdict["score"] == pytest.approx(want["score"])
    dev, pool_scores, thr = blind.verdict_scores  # what the benchmark dumps for re-scoring: the verdict's inputs
    assert np.allclose(pool_scores, det.score(pool_stats)) and thr == pytest.approx(det.threshold)
    assert not np.allclose(pool_scores, blind.pool_scores)  # not the flags' scores
    assert np.allclose(seen.verdict_scores[1], seen.pool_scores)
    want_seen = model_verdict(seen.detector if seen.head_detector is None else seen.head_detector,
                              seen.clean_scores, seen.pool_scores, pool_stats.predictions, 2)
    assert seen.verdict["components"]["flag_rate"] == pytest.approx(want_seen["components"]["flag_rate"])
    dist_only = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=32, frr=0.2, rep_method="mahalanobis",
                           find_triggers=False)
    assert dist_only.settings["verdict_rep_method"] == "mahalanobis"


def test_cli_scan_says_when_the_source_gate_left_the_contrast_out(tmp_path, capsys):
    """``scan`` on a pool of another source prints the gate's note; on a pool of the clean texts' source it does
    not."""
    from backdoor_core.cli import main
    from backdoor_core.models import save_model

    lm = trained_tiny(True)
    model = save_model(lm.model, lm.tokenizer, tmp_path / "model")
    texts, labels = clean_texts(2 * S.REP_MIN_FIT, seed=45)
    clean = tmp_path / "clean.tsv"
    clean.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    r = np.random.default_rng(0)
    other = tmp_path / "other.txt"
    other.write_text("".join(" ".join(r.choice(["zq", "xv", "kk", "0", "1", "2", "##", "!!"], 12)) + "\n"
                             for _ in range(40)))
    same = tmp_path / "same.txt"
    same.write_text("".join(t + "\n" for t in triggered_texts(15, seed=46) + clean_texts(15, seed=47)[0]))
    for pool, gated in ((other, True), (same, False)):
        capsys.readouterr()
        assert main(["scan", str(model), "--clean-data", str(clean), "--pool", str(pool), "--max-length", "32"]) == 0
        out = capsys.readouterr().out
        assert ("left the contrast out" in out) is gated
        # with the contrast in the flags, the verdict's own basis is said (settings.VERDICT_WITHOUT_CONTRAST)
        assert ("without the pool contrast that helped pick the flagged inputs" in out) is (not gated)
