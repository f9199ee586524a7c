"""The trigger-free reference judge (``backdoor_core.reference``): the pretrained encoder's embeddings, a logistic
regression fit on the clean texts, and the label check it drives in the repair."""

import copy

import numpy as np
import pytest
import torch

from backdoor_core import settings as S
from backdoor_core.data import TextDataset
from backdoor_core.defenses import repair_notes, run_defense
from backdoor_core.models import save_model, tiny_model
from backdoor_core.pretrained import find_pretrained
from backdoor_core.reference import gate_keeps, judge_agreement, judge_probs, judged_labels, pretrained_encoder
from backdoor_core.training import IGNORE_LABEL
from defense_helpers import clean_texts, nudged, trained_tiny, triggered_texts

X = IGNORE_LABEL


@pytest.fixture(scope="module")
def based(tmp_path_factory):
    """A saved base (the trained clean tiny model: an encoder that knows the toy language, as a pretrained one
    does), and two different "fine-tuned" models of it."""
    folder = tmp_path_factory.mktemp("judge") / "base"
    base = trained_tiny(False)
    save_model(base.model, base.tokenizer, folder)
    return base, folder, nudged(base.model, 0.03, seed=1), nudged(base.model, 0.03, seed=2)


def test_judged_labels_filter_and_fill():
    """filter keeps a rule's label only where the judge's argmax agrees; fill also labels an unlabelled input whose
    prediction the judge contradicts (never one the rules labelled and the judge dropped); none keeps all."""
    judge = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    model = np.array([[0.1, 0.9], [0.9, 0.1], [0.2, 0.8], [0.8, 0.2], [0.7, 0.3]])
    rules = [0, 0, X, X, X]
    assert judged_labels(rules, judge, model, "none") == rules
    assert judged_labels(rules, judge, model, "filter") == [0, X, X, X, X]
    # input 2: judge 1 = model 1 -> nothing; input 3: judge 0 = model 0 -> nothing; input 4: judge 1, model 0 -> 1
    assert judged_labels(rules, judge, model, "fill") == [0, X, X, X, 1]
    with pytest.raises(ValueError, match="label_judge must be one of"):
        judged_labels(rules, judge, model, "vote")
    with pytest.raises(ValueError, match="rows for"):
        judged_labels(rules[:3], judge, model, "filter")
    with pytest.raises(ValueError, match="needs the model's probabilities"):
        judged_labels(rules, judge, None, "fill")


def test_judged_labels_gate_keeps_or_drops_all():
    """gate keeps every rule label when the judge agrees with the labels at least as often as with the model's
    predictions on the labelled inputs, drops them all below; with nothing labelled there is nothing to judge."""
    judge = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    model = np.array([[0.2, 0.8]] * 4)  # predicts 1 everywhere: every rule label (0) below is a change of it
    assert judge_agreement([0, 0, X, 0], judge) == pytest.approx(2 / 3)
    assert judge_agreement([0, 0, X, 0], judge, model.argmax(1)) == pytest.approx(1 / 3)
    assert judged_labels([0, 0, X, 0], judge, model, "gate") == [0, 0, X, 0]
    assert judged_labels([0, 0, X, X], judge, model, "gate") == [0, 0, X, X]  # 1/2 each: kept
    assert judged_labels([0, 0, 0, X], judge, model, "gate") == [X, X, X, X]  # 1/3 against 2/3
    assert judge_agreement([X] * 4, judge) is None and judged_labels([X] * 4, judge, model, "gate") == [X] * 4
    with pytest.raises(ValueError, match="needs the model's probabilities"):
        judged_labels([0, 0, X, 0], judge, None, "gate")
    # gate_filter: the gate where it keeps; where it would drop them all, the labels the judge agrees with
    assert judged_labels([0, 0, X, 0], judge, model, "gate_filter") == [0, 0, X, 0]  # kept whole, input 1 too
    assert judged_labels([0, 0, 0, X], judge, model, "gate_filter") == [0, X, X, X]
    assert judged_labels([0, 0, 0, X], judge, model, "gate_filter") == judged_labels([0, 0, 0, X], judge, model,
                                                                                      "filter")
    with pytest.raises(ValueError, match="needs the model's probabilities"):
        judged_labels([0, 0, X, 0], judge, None, "gate_filter")


def test_gate_line_with_more_classes():
    """With four classes, labels right on 2 of 5 inputs the model got wrong on all 5 are kept (the judge sides
    with them more often than with the predictions), though a fixed 1/2 line would drop them; labels that replace
    predictions the judge backs are dropped."""
    judge = np.eye(4)[[1, 2, 3, 3, 2]]  # argmax 1, 2, 3, 3, 2
    model = np.eye(4)[[0, 0, 0, 0, 0]]  # the suspected target everywhere
    labels = [1, 2, 2, 1, 3]
    assert judge_agreement(labels, judge) == pytest.approx(0.4)
    assert gate_keeps(labels, judge, model) and judged_labels(labels, judge, model, "gate") == labels
    backed = np.eye(4)[[0, 0, 3, 3, 2]]  # the model predicts what the judge says on 3 of 5
    assert not gate_keeps(labels, judge, backed)
    assert judged_labels(labels, judge, backed, "gate") == [X] * 5


def test_pretrained_encoder_swaps_in_and_back(based):
    """Inside the block the encoder holds the base's weights (the classifier stays the model's); outside, the
    model's own, also after an exception."""
    base, folder, tuned, _ = based
    weights, why = find_pretrained(tuned, str(folder))
    assert why == ""
    before = {k: v.clone() for k, v in tuned.state_dict().items()}
    name = "bert.encoder.layer.1.attention.self.key.weight"
    with pretrained_encoder(tuned, weights):
        assert torch.equal(tuned.state_dict()[name], base.model.state_dict()[name])
        assert torch.equal(tuned.state_dict()["classifier.weight"], before["classifier.weight"])
    with pytest.raises(RuntimeError, match="boom"):
        with pretrained_encoder(tuned, weights):
            raise RuntimeError("boom")
    assert all(torch.equal(v, before[k]) for k, v in tuned.state_dict().items())


def test_judge_reads_only_the_pretrained_encoder(based):
    """The judge's probabilities are ``(N, C)`` rows summing to 1, the same for two different models fine-tuned
    from one base (it never reads what fine-tuning added), and it learns the clean task from the clean texts,
    triggered texts included (the trigger means nothing to an encoder that never saw the poison)."""
    base, folder, tuned_a, tuned_b = based
    texts, labels = clean_texts(80, seed=3)
    held, held_labels = clean_texts(60, seed=4)
    pa = judge_probs(tuned_a, base.tokenizer, find_pretrained(tuned_a, str(folder))[0], texts, labels, held, 32)
    pb = judge_probs(tuned_b, base.tokenizer, find_pretrained(tuned_b, str(folder))[0], texts, labels, held, 32)
    assert pa.shape == (60, 2) and np.allclose(pa.sum(1), 1.0, atol=1e-5)
    assert np.allclose(pa, pb, atol=1e-5)
    assert (pa.argmax(1) == np.asarray(held_labels)).mean() >= 0.75
    weights = find_pretrained(tuned_a, str(folder))[0]
    on_triggered = judge_probs(tuned_a, base.tokenizer, weights, texts, labels, triggered_texts(40, seed=8), 32)
    assert (on_triggered.argmax(1) == 0).mean() >= 0.75  # negative sentences with "cf": their true class
    with pytest.raises(ValueError, match="two classes"):
        judge_probs(tuned_a, base.tokenizer, find_pretrained(tuned_a, str(folder))[0], texts[:4], [1] * 4, held, 32)


def test_run_defense_label_judge_details_and_fallback(based, tmp_path):
    """``run_defense(label_judge="filter", base=...)`` checks the labels with the judge, records what it dropped and
    says so; with a base that is not the model's it leaves the labels unchecked and the note says why."""
    base, folder, tuned, _ = based
    texts, labels = clean_texts(24, seed=5)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(8, seed=6) + clean_texts(8, seed=7)[0]
    kw = dict(heads=["L0H1", "L1H0"], max_steps=1, max_length=32, seed=0, ffn="none", repair_seeds=1)
    found = run_defense("alignment", tuned, base.tokenizer, clean, pool_texts=pool, label_judge="filter",
                        base=str(folder), **kw).details
    assert found["label_judge"] == "filter" and found["judge_note"] is None
    assert found["judge_dropped"] >= 0 and found["judge_added"] == 0
    assert any(n.startswith("A judge that never saw the poison") for n in repair_notes(found))
    gated = run_defense("alignment", tuned, base.tokenizer, clean, pool_texts=pool, label_judge="gate",
                        base=str(folder), **kw).details
    assert gated["judge_agreement"] is not None and gated["judge_model_agreement"] is not None
    kept = gated["judge_agreement"] >= gated["judge_model_agreement"]
    assert (gated["judge_dropped"] == 0 and gated["pool_pseudo_labelled"] > 0) if kept else (
        gated["judge_dropped"] > 0 and gated["pool_pseudo_labelled"] == 0)
    note = next(n for n in repair_notes(gated) if n.startswith("A judge that never saw the poison"))
    assert ("the labels were kept" in note) == kept
    sifted = run_defense("alignment", tuned, base.tokenizer, clean, pool_texts=pool, label_judge="gate_filter",
                         base=str(folder), **kw).details
    assert sifted["label_judge"] == "gate_filter"
    assert sifted["judge_agreement"] == gated["judge_agreement"]  # the same rules' labels, the same judge
    note = next(n for n in repair_notes(sifted) if n.startswith("A judge that never saw the poison"))
    if kept:
        assert sifted["flagged_labels"] == gated["flagged_labels"] and "the labels were kept" in note
    else:  # the gate dropped them all; gate_filter keeps those the judge agreed with, as filter does
        assert sifted["flagged_labels"] == found["flagged_labels"]
        assert sifted["judge_kept"] == sifted["pool_pseudo_labelled"] == found["pool_pseudo_labelled"]
        assert (f"only the {sifted['judge_kept']} it agreed with were used" in note if sifted["judge_kept"]
                else "none was used" in note)
    save_model(tiny_model(seed=5).model, base.tokenizer, tmp_path / "other")
    fell = run_defense("alignment", tuned, base.tokenizer, clean, pool_texts=pool, label_judge="fill",
                       base=str(tmp_path / "other"), **kw).details
    assert fell["label_judge"] == "none" and "apart" in fell["judge_note"]
    assert any(n.startswith("The pseudo-labels were not checked:") for n in repair_notes(fell))
    with pytest.raises(ValueError, match="label_judge must be one of"):
        run_defense("alignment", tuned, base.tokenizer, clean, pool_texts=pool, label_judge="vote", **kw)


def test_lazy_judge_runs_only_with_work():
    """A judge given as a callable is fit only when it has work: not when the rules labelled nothing under
    "gate", always under "fill"; a ValueError it raises leaves the labels unchecked and says why."""
    from backdoor_core.sanitize import sanitize_heads
    from backdoor_core.training import TrainConfig

    lm = trained_tiny(True)
    texts, labels = clean_texts(16, seed=3)
    pool = triggered_texts(6, seed=4)
    calls = []

    def judge():
        calls.append(1)
        return np.tile([[0.5, 0.5]], (len(pool), 1))

    def refuse():
        raise ValueError("The reference judge needs clean texts of at least two classes.")

    cfg = TrainConfig(lr=1e-3, epochs=1, batch_size=8, max_length=32, seed=0, max_steps=1)
    suspicious = np.zeros((2, 4), dtype=bool)
    suspicious[0, 0] = True
    off = dict(pseudo_labels=False, focus_labels=False, exclude_labels=False, labels_leave_target=False,
               ffn="none", repair_seeds=1, measure_align=False, config=cfg)
    res = sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, texts, labels, suspicious, pool,
                         label_judge="gate", judge_probs=judge, **off)
    assert calls == [] and res.details["judge_agreement"] is None and res.details["pool_pseudo_labelled"] == 0
    res = sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, texts, labels, suspicious, pool,
                         label_judge="fill", judge_probs=judge, **off)
    assert calls == [1] and res.details["label_judge"] == "fill"
    res = sanitize_heads(copy.deepcopy(lm.model), lm.tokenizer, texts, labels, suspicious, pool,
                         label_judge="fill", judge_probs=refuse, **off)
    assert res.details["label_judge"] == "none" and "two classes" in res.details["judge_note"]


def test_disagreement_labels_take_only_the_excess_of_the_target_class():
    """The class whose predictions the judge contradicts beyond the other classes' rate is the suspected target;
    only its excess disagreements are labelled (largest model-vs-judge gap first) with the judge's class, and a
    model whose disagreements are spread alike over the classes gets none; with ``min_conf`` only those the judge
    is sure of."""
    from backdoor_core.reference import disagreement_labels

    rng = np.random.default_rng(0)
    # 100 inputs per predicted class, the judge contradicting 20 of each (a clean model and a weak judge)
    model = np.r_[np.tile([0.8, 0.2], (100, 1)), np.tile([0.3, 0.7], (100, 1))]
    judge = model.copy()
    flip = np.r_[rng.choice(100, 20, replace=False), 100 + rng.choice(100, 20, replace=False)]
    judge[flip] = judge[flip][:, ::-1]
    idx, labels, info = disagreement_labels(model, judge)
    assert idx == [] and labels == [] and info["target"] is None and abs(info["z"]) < 2
    # a trigger sends 40 more inputs to class 1, sure of it, where the judge reads class 0
    model2 = np.r_[model, np.tile([0.01, 0.99], (40, 1))]
    judge2 = np.r_[judge, np.tile([0.75, 0.25], (40, 1))]
    idx, labels, info = disagreement_labels(model2, judge2)
    assert info["target"] == 1 and info["z"] >= 2
    # excess: 60 disagreements among 140 class-1 predictions against the other class's 20% rate -> 60 - 28 = 32
    assert info["excess"] == 32 and len(idx) == 32 and set(labels) == {0}
    assert set(idx) <= set(range(200, 240))  # the surest predictions the judge contradicts come first
    assert disagreement_labels(model2, judge2, min_z=50.0)[0] == []
    # labels the judge is unsure of are left out, even when fewer than the excess remain: half the triggered rows
    # at a judge confidence of 0.55, the other class-1 disagreements at 0.7
    judge3 = judge2.copy()
    judge3[220:240] = [0.55, 0.45]
    idx, labels, info = disagreement_labels(model2, judge3)
    assert len(idx) == 32 and not set(idx) <= set(range(200, 240))  # unfiltered, clean disagreements fill the excess
    idx, labels, info = disagreement_labels(model2, judge3, min_conf=0.72)
    assert info["excess"] == 32 and info["unsure"] == 40 and sorted(idx) == list(range(200, 220))
    assert set(labels) == {0}


def test_disagreement_labels_move_the_balanced_judge_to_the_class_shares():
    """A clean model on 70/30 data and a class-balanced judge reading the same evidence: the judge calls the
    minority class more often, so unshifted its disagreements all fall in the majority class and look like a
    trigger's; moved to the clean texts' class shares it agrees with the model and adds no label. (This judge is
    calibrated; the real one is not, which is why ``settings.JUDGE_FLAGS_PRIOR`` is off.)"""
    from backdoor_core.reference import disagreement_labels, prior_shifted

    rng = np.random.default_rng(1)
    ratio = np.exp(rng.normal(0.0, 1.5, 400))  # p(x | class 1) / p(x | class 0) per input
    p1_model = 0.3 * ratio / (0.3 * ratio + 0.7)
    p1_judge = ratio / (ratio + 1.0)
    model = np.c_[1 - p1_model, p1_model]
    judge = np.c_[1 - p1_judge, p1_judge]
    assert np.allclose(prior_shifted(judge, [0.7, 0.3]), model)
    idx, _, info = disagreement_labels(model, judge)
    assert info["target"] == 0 and len(idx) > 0
    idx, _, info = disagreement_labels(model, judge, prior=[0.7, 0.3])
    assert idx == [] and info["target"] is None


def test_run_defense_judge_flags_add_labelled_pool_inputs(based, monkeypatch):
    """``judge_flags=True``: the pool inputs ``disagreement_labels`` picks join the repair with their label, after
    the scan's flags and without repeating one (``flagged_indices`` / ``flagged_labels``), read from the scan's
    probabilities on the whole pool and the judge's; off, the judge is not asked."""
    import backdoor_core.reference as R

    base, folder, tuned, _ = based
    texts, labels = clean_texts(24, seed=5)
    clean = TextDataset(texts, labels, ["neg", "pos"])
    pool = triggered_texts(12, seed=6) + clean_texts(12, seed=7)[0]
    seen, seen_prior = [], []

    def pick(model_probs, probs, min_conf, prior):
        seen.append((np.asarray(model_probs).shape, np.asarray(probs).shape))
        seen_prior.append(prior)
        return list(range(len(pool))), [0] * len(pool), {"target": 1, "rates": {}, "z": 9.0, "excess": len(pool)}

    monkeypatch.setattr(R, "disagreement_labels", pick)
    kw = dict(max_steps=1, max_length=32, seed=0, ffn="none", repair_seeds=1, base=str(folder))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="judge_flags_min_conf is a probability"):
            run_defense("alignment", tuned, base.tokenizer, clean, pool_texts=pool, judge_flags=True,
                        judge_flags_min_conf=bad, **kw)
    on = run_defense("alignment", tuned, base.tokenizer, clean, pool_texts=pool, judge_flags=True,
                     judge_flags_prior=True, **kw).details
    assert seen == [((len(pool), 2), (len(pool), 2))] and on["judge_flag_info"]["target"] == 1
    scan_idx = on["flagged_indices"][:on["flagged_used"]]
    added = on["flagged_indices"][on["flagged_used"]:]
    assert on["judge_flagged"] == len(added) == len(pool) - len(scan_idx) > 0
    assert sorted(scan_idx + added) == list(range(len(pool)))
    assert on["flagged_labels"][on["flagged_used"]:] == [0] * len(added)
    assert on["pool_pseudo_labelled"] >= len(added)
    assert seen_prior and np.allclose(seen_prior[-1], np.bincount(labels, minlength=2) / len(labels))
    assert on["judge_flags_min_conf"] == S.JUDGE_FLAGS_MIN_CONF and on["judge_flags_prior"] is True
    assert any(n.startswith("The judge contradicted the model on more of the pool inputs it puts in class 1")
               and f"{len(added)} of them" in n for n in repair_notes(on))
    off = run_defense("alignment", tuned, base.tokenizer, clean, pool_texts=pool, **kw).details
    assert len(seen) == 1 and off["judge_flagged"] == 0 and off["judge_flag_info"] is None
    # a reused scan (the Detect page's) brings its own pool: the judge reads that one, no pool_texts needed
    from backdoor_core.scan import scan_model

    report = scan_model(tuned, base.tokenizer, clean, pool, max_length=32, seed=0, find_triggers=False)
    reused = run_defense("alignment", tuned, base.tokenizer, clean, scan=report, judge_flags=True, **kw).details
    assert seen[-1] == ((len(pool), 2), (len(pool), 2)) and reused["judge_flagged"] == len(pool) - len(report.flagged)
    assert seen_prior[-1] is None  # settings.JUDGE_FLAGS_PRIOR: the balanced judge as fit


def test_judge_flags_with_clean_texts_of_one_class_say_why(based):
    """Judge-led labels need a judge, and a judge needs two classes among the clean texts: with one, the repair
    still runs, adds nothing and says why (no traceback)."""
    base, folder, tuned, _ = based
    texts, labels = clean_texts(24, seed=5)
    one = TextDataset([t for t, y in zip(texts, labels) if y == 1], [1] * labels.count(1), ["neg", "pos"])
    pool = triggered_texts(8, seed=6) + clean_texts(8, seed=7)[0]
    found = run_defense("alignment", tuned, base.tokenizer, one, pool_texts=pool, judge_flags=True, max_steps=1,
                        max_length=32, seed=0, ffn="none", repair_seeds=1, base=str(folder)).details
    assert found["judge_flagged"] == 0 and "two classes" in found["judge_flags_note"]
    assert any(n.startswith("No judge-led labels:") and "two classes" in n for n in repair_notes(found))


def test_repair_note_counts_the_labels_the_judge_was_unsure_of():
    """The repair's note says how many judge-led labels joined and how many the confidence cut left out."""
    details = {"judge_flags": True, "judge_flagged": 5, "judge_flag_info": {"target": 1, "z": 3.2, "unsure": 7}}
    note = [n for n in repair_notes(details) if n.startswith("The judge contradicted")]
    assert len(note) == 1 and "5 of them" in note[0] and note[0].endswith("7 the judge was unsure of were left out.")
    details["judge_flag_info"]["unsure"] = 0
    assert [n for n in repair_notes(details) if "unsure" in n] == []

