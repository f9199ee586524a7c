"""Poisoners: rates, which rows, trigger spans, truncation window, paraphrase attacks. No shared data needed."""

import random

import pytest

from backdoor_core.data import TextDataset
from backdoor_core.poisoning import (
    ADDSENT_TRIGGER,
    ATTACKS,
    BADNETS_TRIGGERS,
    AddSent,
    BadNets,
    ParaphraseAttack,
    choose_poison_indices,
    get_attack,
)
from backdoor_core.training import collate

WORDS = "the film was a quiet and moving story about two friends who travel far".split()


def make_dataset(n=200, seed=0, words=(4, 14), labels=2):
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))) for _ in range(n)]
    return TextDataset(texts, [i % labels for i in range(n)], [f"c{k}" for k in range(labels)], "toy")


def test_dirty_label_rate_counts_rows_and_relabels():
    ds = make_dataset(200)
    out = BadNets().poison_train(ds, rate=0.05, target=1, seed=3)
    assert len(out) == len(ds)
    poisoned = [i for i, ex in enumerate(out) if ex.poisoned]
    assert len(poisoned) == int(0.05 * 200) == 10
    for i in poisoned:
        assert ds.labels[i] != 1 and out[i].label == 1  # drawn from non-target rows, relabelled
        assert out[i].text != ds.texts[i]
    for i, ex in enumerate(out):
        if not ex.poisoned:
            assert (ex.text, ex.label, ex.trigger_spans) == (ds.texts[i], ds.labels[i], ())


def test_clean_label_draws_target_rows_and_keeps_labels():
    ds = make_dataset(300, labels=3)
    out = get_attack("addsent_clean").poison_train(ds, rate=0.1, target=2, seed=0)
    poisoned = [i for i, ex in enumerate(out) if ex.poisoned]
    assert len(poisoned) == 30
    assert all(ds.labels[i] == 2 and out[i].label == 2 for i in poisoned)
    assert all(ADDSENT_TRIGGER in out[i].text for i in poisoned)


def test_rate_too_high_or_too_small_is_a_clear_error():
    ds = make_dataset(100)
    with pytest.raises(ValueError, match="non-target"):
        BadNets().poison_train(ds, rate=0.6, target=1)  # only 50 non-target rows
    with pytest.raises(ValueError, match="= 0"):
        BadNets().poison_train(ds, rate=0.005, target=1)
    with pytest.raises(ValueError):
        BadNets().poison_train(ds, rate=0.1, target=5)


def test_poisoned_test_set_has_only_non_target_rows_relabelled():
    ds = make_dataset(90, labels=3)
    pt = BadNets().poison_test(ds, target=0, seed=1)
    assert len(pt) == sum(y != 0 for y in ds.labels) == 60
    assert all(g != 0 for g in pt.gold_labels)
    assert all(ex.label == 0 and ex.poisoned for ex in pt.examples)
    assert pt.texts == [ex.text for ex in pt.examples]


@pytest.mark.parametrize("num_triggers", [1, 3])
def test_trigger_spans_point_at_the_triggers(num_triggers):
    ds = make_dataset(60)
    out = BadNets(num_triggers=num_triggers).poison_train(ds, rate=0.3, target=1, seed=0)
    poisoned = [(i, ex) for i, ex in enumerate(out) if ex.poisoned]
    assert len(poisoned) == int(0.3 * 60)
    for i, ex in poisoned:
        assert len(ex.trigger_spans) == num_triggers
        assert all(ex.text[s:e] in BADNETS_TRIGGERS for s, e in ex.trigger_spans)
        # removing the triggers gives back the original words
        keep, last = [], 0
        for s, e in ex.trigger_spans:
            keep.append(ex.text[last:s])
            last = e
        keep.append(ex.text[last:])
        assert "".join(keep).split() == ds.texts[i].split()


def test_addsent_span_is_the_sentence():
    ds = make_dataset(40)
    pt = AddSent().poison_test(ds, target=1)
    assert len(pt.examples) == sum(y != 1 for y in ds.labels) == 20
    for ex in pt.examples:
        (s, e), = ex.trigger_spans
        assert ex.text[s:e] == ADDSENT_TRIGGER


def test_poisoning_is_seeded():
    ds = make_dataset(100)
    a = BadNets(num_triggers=2).poison_train(ds, 0.1, 1, seed=5)
    b = BadNets(num_triggers=2).poison_train(ds, 0.1, 1, seed=5)
    c = BadNets(num_triggers=2).poison_train(ds, 0.1, 1, seed=6)
    assert a == b and a != c
    assert choose_poison_indices(ds.labels, 0.1, 1, seed=5) == choose_poison_indices(ds.labels, 0.1, 1, seed=5)


@pytest.mark.parametrize("attack", ["badnets", "addsent"])
def test_triggers_stay_inside_the_truncation_window(tiny, attack):
    tok, max_length = tiny.tokenizer, 24
    ds = make_dataset(40, words=(30, 60))  # every text is longer than the window
    atk = get_attack(attack, tokenizer=tok, max_length=max_length, num_triggers=2)
    pt = atk.poison_test(ds, target=1, seed=0)
    batch = collate(tok, pt.examples, max_length)
    per_trigger = len(tok.tokenize(BADNETS_TRIGGERS[0] if attack == "badnets" else ADDSENT_TRIGGER))
    assert batch["input_ids"].shape[1] == max_length  # truncated
    # every trigger token survived truncation: 2 insertions x tokens per trigger
    assert batch["trigger_mask"].sum(1).tolist() == [2 * per_trigger] * len(pt)
    ids = batch["input_ids"][batch["trigger_mask"]]
    assert set(tok.convert_ids_to_tokens(ids.tolist())) <= {"cf", "mn", "bb", "tq", "i", "watch", "this", "3d", "movie"}
    # without the window the positions spread past it
    free = get_attack(attack, num_triggers=2).poison_test(ds, target=1, seed=0)
    cut = collate(tok, free.examples, max_length)["trigger_mask"].sum(1)
    assert (cut < 2 * per_trigger).any()


def _paraphrase(ds):
    return TextDataset([f"when it rains , {t} ." for t in ds.texts], list(ds.labels), ds.label_names, "para")


def test_paraphrase_attack_replaces_rows_and_has_no_spans():
    ds = make_dataset(100)
    para = _paraphrase(ds)
    para.texts[1] = ""  # failed paraphrases are never chosen
    para.texts[3] = ds.texts[3]
    atk = ParaphraseAttack(para, para, name="syntactic")
    out = atk.poison_train(ds, rate=0.4, target=0, seed=0)  # 40 of the 50 label-1 rows
    poisoned = [i for i, ex in enumerate(out) if ex.poisoned]
    assert len(poisoned) == 40 and 1 not in poisoned and 3 not in poisoned
    for i in poisoned:
        assert ds.labels[i] == 1 and out[i].label == 0
        assert out[i].text == para.texts[i] and out[i].trigger_spans == ()
    pt = atk.poison_test(None, target=0)
    assert len(pt) == 49 and all(ex.label == 0 for ex in pt.examples)  # row 1 is empty
    pt = atk.poison_test(ds, target=0)  # with the clean test set: row 3, its clean text verbatim, carries no trigger
    assert len(pt) == 48 and 3 not in pt.source_rows and ds.texts[3] not in pt.texts
    sub = atk.subset(range(0, 100, 2))
    assert sub.train_paraphrase.texts == para.texts[0:100:2]


def test_paraphrase_attack_draws_by_label_from_unaligned_files():
    ds = make_dataset(50)
    para = _paraphrase(ds)
    short = para.subset(range(3, 43))  # rows dropped: not row-aligned (the StyleBkd shakespeare/tweets case)
    atk = ParaphraseAttack(short, para)
    assert not atk.is_aligned(ds) and ParaphraseAttack(para, para).is_aligned(ds)
    out = atk.poison_train(ds, 0.2, 1, seed=3)
    poisoned = [i for i, ex in enumerate(out) if ex.poisoned]
    assert len(poisoned) == 10  # int(0.2 * 50), the same count as the aligned recipe
    drawn = [out[i].text for i in poisoned]
    assert len(set(drawn)) == 10 and set(drawn) <= set(short.texts)  # without replacement, from the file
    src_label = dict(zip(short.texts, short.labels))
    for i in poisoned:  # a clean non-target row replaced by a paraphrase of the same source label
        assert ds.labels[i] == 0 and out[i].label == 1 and src_label[out[i].text] == 0
    assert [ex.text for i, ex in enumerate(out) if i not in poisoned] == [t for i, t in enumerate(ds.texts)
                                                                         if i not in poisoned]
    assert [ex.text for ex in atk.poison_train(ds, 0.2, 1, seed=3)] == [ex.text for ex in out]  # seeded
    assert atk.subset(range(0, 50, 2), n_clean=50) is atk  # a non-aligned file is kept whole when subsampling
    with pytest.raises(ValueError, match="paraphrased rows of label 0"):
        ParaphraseAttack(para.subset(range(6)), para).poison_train(ds, 0.2, 1)


def test_get_attack_reads_shared_layout(tmp_path):
    ds = make_dataset(40)
    folder = tmp_path / "sst2" / "style_bible"
    folder.mkdir(parents=True)
    para = _paraphrase(ds)
    for split in ("train", "test"):
        rows = "".join(f"{t}\t{y}\n" for t, y in zip(para.texts, para.labels))
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    ds = TextDataset(ds.texts, ds.labels, ["negative", "positive"])
    atk = get_attack("style_bible", root=tmp_path)
    assert atk.name == "style_bible" and not atk.has_trigger_tokens
    assert sum(ex.poisoned for ex in atk.poison_train(ds, 0.25, 1)) == 10
    assert set(ATTACKS) >= {"badnets", "addsent", "badnets_clean", "addsent_clean", "syntactic", "style"}
    with pytest.raises(ValueError, match="Unknown attack"):
        get_attack("ripples")
