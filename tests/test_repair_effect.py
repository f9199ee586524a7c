"""repair_effect: the trigger's lift and attention on the trigger, on the model before and after a repair."""

import numpy as np
import pytest

from backdoor_core.data import TextDataset
from backdoor_core.poisoning import ParaphraseAttack, get_attack
from backdoor_core.repair_effect import card_pairs, repair_effect, triggered_pairs
from defense_helpers import TRIGGER, clean_texts, trained_tiny

TAL_HEADS = ["L0H0", "L0H1", "L1H0", "L1H1"]  # defense_helpers trains the Trojan Attention Loss on these


@pytest.fixture(scope="module")
def test_set():
    texts, labels = clean_texts(80, seed=41)
    return TextDataset(texts, labels, ["negative", "positive"], name="tiny")


def test_pairs_are_the_same_texts_without_the_trigger(test_set):
    attack = get_attack("badnets", trigger=TRIGGER, num_triggers=1)
    triggered, clean = triggered_pairs(attack, test_set, target=1, n=20)
    assert len(triggered) == len(clean) == 20
    for ex, text in zip(triggered, clean):
        (s, e), = ex.trigger_spans
        assert ex.text[s:e] == TRIGGER
        assert " ".join((ex.text[:s] + ex.text[e:]).split()) == text


def test_a_repair_that_removes_the_trigger_s_hold_shows_in_both_measures(test_set):
    """The backdoored tiny model against its clean twin (a perfect "repair"): on the Trojan-Attention-Loss heads
    the attention on the trigger falls and the trigger's similarity lift goes to about 0 (on this 4-head model it
    is negative before: two of a layer's four heads move to the trigger, apart from the other two), and the
    summary says so in numbers."""
    attack = get_attack("badnets", trigger=TRIGGER, num_triggers=1)
    bd, clean = trained_tiny(True), trained_tiny(False)
    eff = repair_effect(bd, clean, attack, test_set, target=1, max_length=32, heads=TAL_HEADS)
    assert eff.before.lift.shape == eff.after.lift.shape == (2, 4)
    assert eff.mask.sum() == 4 and eff.mask[:, :2].all()
    m = eff.mask
    assert eff.before.concentration[m].mean() > eff.after.concentration[m].mean() + 0.2
    assert abs(eff.after.lift[m]).mean() < 0.01 < abs(eff.before.lift[m]).mean() - 0.02
    text = " ".join(eff.summary())
    assert "the 4 repaired heads" in text
    assert f"{eff.before.lift[m].mean():+.2f} before the repair" in text


def test_an_unchanged_model_has_the_same_effect_before_and_after(test_set):
    attack = get_attack("badnets", trigger=TRIGGER, num_triggers=1)
    bd = trained_tiny(True)
    eff = repair_effect(bd, bd, attack, test_set, target=1, max_length=32)
    np.testing.assert_allclose(eff.before.lift, eff.after.lift, atol=1e-6)
    assert not eff.mask.any() and "On all heads" in eff.summary()[0]


def test_a_paraphrase_trigger_has_no_trigger_tokens_to_attend_to(test_set):
    """Paraphrase attacks (syntactic / style): lift only, against the sample's non-target clean texts."""
    para = TextDataset([f"{t} , so it goes" for t in test_set.texts], test_set.labels, test_set.label_names)
    attack = ParaphraseAttack(para, para, name="syntactic")
    bd = trained_tiny(True)
    eff = repair_effect(bd, bd, attack, test_set, target=1, max_length=32, heads=["L0H0"])
    assert eff.before.concentration is None and eff.before.lift.shape == (2, 4)
    assert not any("trigger's tokens" in line for line in eff.summary())


def test_card_pairs_follow_the_model_card(test_set):
    """The app and the CLI take the trigger and target from the card: none recorded, no pairs."""
    import dataclasses

    bd = trained_tiny(True)
    assert card_pairs(dataclasses.replace(bd, metadata={"name": "x"}), test_set, 32) is None
    carded = dataclasses.replace(bd, metadata={"name": "x", "attack": "badnets", "trigger": [TRIGGER], "target": 0})
    triggered, clean = card_pairs(carded, test_set, 32)
    assert all(ex.label == 0 and TRIGGER in ex.text.split() for ex in triggered)
    assert 0 < len(clean) == len(triggered) <= 40  # the non-target (positive) rows of 60 drawn, at most 40
    eff = repair_effect(carded, carded, get_attack("badnets", trigger=TRIGGER), test_set, 0, 32, heads=["L1H3"])
    d = eff.to_dict()
    assert d["heads"] == 1 and d["lift"][0] == pytest.approx(d["lift"][1]) and len(d["concentration"]) == 2


def test_try_trigger_effect_gives_none_instead_of_failing_but_lets_a_cancel_through(test_set, monkeypatch):
    import backdoor_core.repair_effect as RE
    from backdoor_core.forward import Cancelled

    bd = trained_tiny(True)
    pairs = triggered_pairs(get_attack("badnets", trigger=TRIGGER), test_set, target=1, n=8)
    assert RE.try_trigger_effect(bd.model, bd.tokenizer, None, 32) is None
    assert RE.try_trigger_effect(bd.model, bd.tokenizer, pairs, 32).lift.shape == (2, 4)
    with pytest.raises(Cancelled):
        RE.try_trigger_effect(bd.model, bd.tokenizer, pairs, 32, should_stop=lambda: True)

    def boom(*a, **k):
        raise RuntimeError("cannot read this attention")

    monkeypatch.setattr(RE, "trigger_effect", boom)
    assert RE.try_trigger_effect(bd.model, bd.tokenizer, pairs, 32) is None
    assert RE.RepairEffect.of(None, None, [], 8) is None


def test_summary_says_changed_and_prints_no_minus_zero():
    """A negative change read "raised ... by -0.05", and a zero one printed "-0.00"."""
    import numpy as np

    from backdoor_core.repair_effect import RepairEffect, TriggerEffect

    before = TriggerEffect(lift=np.array([[0.2, -0.001]]), concentration=None)
    after = TriggerEffect(lift=np.array([[-0.05, -0.001]]), concentration=None)
    lines = RepairEffect(before, after, mask=np.array([[True, False]]), n=10).summary()
    assert lines[0] == ("On the 1 repaired heads, the trigger changed the similarity to their layer's other heads by "
                        "+0.20 before the repair and -0.05 after (mean over 10 texts).")
    assert lines[1] == "The other heads: 0.00 before, 0.00 after."
