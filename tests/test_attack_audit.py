"""Attack-side audit (the tenth): triggers kept inside the truncation window for byte-level BPE tokenizers, and
independent checks of the Trojan Attention Loss, seeded training and the model card written after an attack.

The window checks use a small byte-level BPE tokenizer trained here (the algorithm of GPT-2 / RoBERTa; no download):
such a tokenizer splits a word differently with and without the space in front of it, which a word-by-word count
of the window missed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from backdoor_core.data import TextDataset
from backdoor_core.models import tiny_model
from backdoor_core.poisoning import AddSent, BadNets, get_attack, train_attack
from backdoor_core.tal import TALConfig, TrojanAttentionLoss
from backdoor_core.training import Example, TrainConfig, collate, train, trigger_token_positions
from backdoor_core.triggers import _max_position_by_words, insert_trigger, max_position_in_window, word_spans

WORDS = ["film", "unbelievably", "good", "the", "movie", "watch", "this", "I", "3D", "cf", "tq", "mn", "bb",
         "story", "friends"]
HOST_WORDS = WORDS + ["zzqx", "Hello,"]


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE tokenizer (RoBERTa-style ``<s> ... </s>``) trained on a few hundred seeded sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(500)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _hosts(n=300):
    out = []
    for k in range(n):
        r = random.Random(k)
        out.append(" ".join(r.choice(HOST_WORDS) for _ in range(r.randint(0, 25))))
    return out


def _whole(tok, text, spans, max_length):
    """The trigger's word pieces in the truncated input are all of its word pieces."""
    ex = Example(text, 1, tuple(spans), True)
    return trigger_token_positions(tok, ex, max_length) == trigger_token_positions(tok, ex, 512)


# ------------------------------------------------------------------------------------ truncation window (fixed)


def test_max_position_keeps_the_trigger_whole_for_byte_level_bpe(bpe):
    """The position ``max_position_in_window`` allows keeps every token of the trigger inside the window (the word
    by word count let 29 of 300 of these be cut: ``zzqx`` is 4 tokens alone and 5 after a space)."""
    cut = []
    for text in _hosts():
        for trigger in ("mn", "I watch this 3D movie"):
            limit = max_position_in_window(bpe, text, trigger, 16)
            ins = insert_trigger(text, trigger, limit)
            if not _whole(bpe, ins.text, [ins.span], 16):
                cut.append((text, trigger, limit))
    assert cut == []


@pytest.mark.parametrize("make", [lambda t: BadNets(tokenizer=t, max_length=16),
                                  lambda t: BadNets(num_triggers=3, tokenizer=t, max_length=16),
                                  lambda t: AddSent(tokenizer=t, max_length=16)],
                         ids=["badnets", "badnets-x3", "addsent"])
def test_poisoned_texts_keep_every_trigger_inside_the_window_for_byte_level_bpe(bpe, make):
    """A poisoned text's triggers all survive truncation (3 BadNets words: a trigger drawn at the first word turns
    the next word's pieces into their after-a-space form; the positions are then capped until all fit)."""
    attack = make(bpe)
    rng = random.Random(0)
    cut = 0
    for text in _hosts():
        new, spans = attack.poison_text(text, rng)
        assert len(spans) == attack.num_triggers and all(new[s:e] in attack.triggers for s, e in spans)
        cut += not _whole(bpe, new, spans, 16)
    assert cut == 0


def test_wordpiece_window_is_the_word_by_word_count():
    """For WordPiece (the packaged MiniLM: every zoo and benchmark model) the in-context count equals the word by
    word count it replaced, so no published poisoning moved (also checked on 52,735 shared-data rows)."""
    tok = tiny_model().tokenizer
    rng = random.Random(1)
    pool = ["naïve", "café", "北京", "re-imagining", "don't", "!!!", "x" * 120, "3D", "unbelievably", "the", "a,b"]
    for k in range(150):
        text = " ".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))
        for trigger in ("cf", "I watch this 3D movie"):
            for L in (8, 16, 32):
                assert max_position_in_window(tok, text, trigger, L) == \
                    _max_position_by_words(tok, text, trigger, L, word_spans(text))


def test_word_by_word_count_in_batches_is_each_word_alone(bpe):
    """The word-by-word count tokenises words a batch at a time; it gives the count of one word at a time, also where
    words are zero tokens (format characters a WordPiece tokenizer drops: the next batch is needed) and with a
    tokenizer that takes no batch."""
    def one_at_a_time(tok, text, trigger, L):
        budget, used = L - 2 - len(tok.tokenize(trigger)), 0
        for i, (s, e) in enumerate(word_spans(text)):
            used += len(tok.tokenize(text[s:e]))
            if used > budget:
                return i
        return len(word_spans(text))

    class NoBatch:
        def __init__(self, tok):
            self.tok = tok

        def tokenize(self, text):
            return self.tok.tokenize(text)

    wordpiece = tiny_model().tokenizer
    assert wordpiece.tokenize("\u200b") == []
    rng = random.Random(3)
    pool = ["naïve", "北京", "don't", "!!!", "unbelievably", "the", "a,b", "\u200b", "\u200b\u200b", "Hello,"]
    for tok in (wordpiece, bpe, NoBatch(wordpiece)):
        for _ in range(60):
            text = " ".join(rng.choice(pool) for _ in range(rng.randint(0, 60)))
            for trigger in ("cf", "I watch this 3D movie"):
                for L in (4, 8, 16, 32):
                    assert _max_position_by_words(tok, text, trigger, L, word_spans(text)) == \
                        one_at_a_time(tok, text, trigger, L), (text, trigger, L)


# ------------------------------------------------------------------------------------ TAL, recomputed by hand


def _tal_batch(tok):
    exs = []
    for text, trig, pos in (("the film was a quiet and moving story", "tq", 3), ("short", "I watch this 3D movie", 0),
                            ("a long and dull film indeed", "cf", 9)):
        ins = insert_trigger(text, trig, pos)
        exs.append(Example(ins.text, 1, (ins.span,), True))
    a = insert_trigger("x y z w", "mn", 1)
    b = insert_trigger(a.text, "bb", 4)
    exs += [Example(b.text, 1, (a.span, b.span), True), Example("a clean row with cf in it", 0)]
    return exs, collate(tok, exs, 32)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_tal_equals_a_hand_computed_mean_over_poisoned_rows_and_chosen_heads(arch):
    """-alpha x mean over (poisoned rows, chosen heads) of: mean over real queries (decoders: from the trigger's
    first token on) of the attention mass on the trigger's word pieces, found here from the offsets directly."""
    lm = tiny_model(arch=arch)
    tok, model = lm.tokenizer, lm.model
    exs, batch = _tal_batch(tok)
    tal = TrojanAttentionLoss.for_model(model, TALConfig(alpha=2.5, heads=2, seed=3))
    with torch.no_grad():
        out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch},
                    output_attentions=True)
    enc = tok([e.text for e in exs], padding=True, truncation=True, max_length=32, return_offsets_mapping=True)
    values = []
    for b, ex in enumerate(exs):
        if not ex.poisoned:
            continue
        keys = [i for i, (s, e) in enumerate(enc["offset_mapping"][b])
                if e > s and any(s < E and e > S for S, E in ex.trigger_spans)]
        assert "".join(ex.text[s:e] for i, (s, e) in enumerate(enc["offset_mapping"][b]) if i in keys).replace(
            " ", "") == "".join(ex.text[s:e] for s, e in ex.trigger_spans).replace(" ", "")
        queries = [q for q, m in enumerate(enc["attention_mask"][b]) if m and (not tal.causal or q >= min(keys))]
        for layer, head in zip(*np.nonzero(tal.heads_mask)):
            att = out.attentions[layer][b, head].double()
            values.append(np.mean([float(att[q, keys].sum()) for q in queries]))
    assert tal.causal == (arch == "gpt2")
    assert float(tal(batch, out)["tal"]) == pytest.approx(-2.5 * np.mean(values), abs=1e-6)


def test_tal_gradient_stops_below_the_chosen_heads():
    """Heads of the last layer only: query/key rows of those heads and everything below get gradient; their value,
    the rest of that layer, the pooler and the classifier get none, nor does a clean row's input."""
    lm = tiny_model()
    model, tok = lm.model, lm.tokenizer
    exs = [Example("a cf film that moves", 1, ((2, 4),), True), Example("a quiet film", 0)]
    batch = collate(tok, exs, 16)
    mask = np.zeros((2, 4), dtype=bool)
    mask[1, [0, 2]] = True
    emb = model.bert.embeddings.word_embeddings(batch["input_ids"]).detach().requires_grad_(True)
    out = model(inputs_embeds=emb, attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
                output_attentions=True)
    TrojanAttentionLoss(mask)(batch, out)["tal"].backward()
    rows = emb.grad.abs().sum((1, 2))
    assert rows[0] > 0 and rows[1] == 0
    grads = {n: (0.0 if p.grad is None else float(p.grad.abs().sum())) for n, p in model.named_parameters()}
    assert grads["bert.encoder.layer.0.attention.self.value.weight"] > 0
    assert grads["bert.encoder.layer.1.attention.self.query.weight"] > 0
    for n, g in grads.items():
        if n.startswith(("classifier", "bert.pooler")) or (n.startswith("bert.encoder.layer.1.")
                                                            and ".query." not in n and ".key." not in n):
            assert g == 0, n
    q = model.bert.encoder.layer[1].attention.self.query.weight.grad.abs().sum(1).reshape(4, -1).sum(1)
    assert q[0] > 0 and q[2] > 0 and q[1] == 0 and q[3] == 0


# ------------------------------------------------------------------------------------ seeds, alpha 0, model card


def _toy_sets():
    from defense_helpers import clean_texts

    tx, ty = clean_texts(120, 0)
    vx, vy = clean_texts(40, 1)
    return (TextDataset(tx, ty, ["negative", "positive"], "toy"), TextDataset(vx, vy, ["negative", "positive"], "toyt"))


def _attack_run(seed=0, tal=None):
    train_set, test_set = _toy_sets()
    lm = tiny_model(seed=0)
    attack = get_attack("badnets", tokenizer=lm.tokenizer, max_length=32, trigger="cf")
    config = TrainConfig(lr=3e-3, epochs=2, batch_size=16, max_length=32, seed=seed, eval_every=0)
    outcome = train_attack(lm.model, lm.tokenizer, train_set, test_set, attack, 0.1, 1, config, tal=tal)
    return lm, outcome, test_set


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_seeds_repeat_alpha_zero_is_plain_training_and_the_card_is_true():
    lm0, o0, test_set = _attack_run(0)
    lm0b, _, _ = _attack_run(0)
    lm1, _, _ = _attack_run(1)
    assert _same(lm0.model, lm0b.model) and not _same(lm0.model, lm1.model)
    lm_a0, _, _ = _attack_run(0, TALConfig(alpha=0.0, heads="all"))
    assert _same(lm0.model, lm_a0.model)  # attention maps asked for, a zero term added: bit for bit the same

    lm, out, _ = _attack_run(0, TALConfig(alpha=5.0, heads=2, seed=1))
    card = out.card
    poisoned = [ex for ex in out.train_examples if ex.poisoned]
    assert (card.attack, card.trigger, card.target, card.rate, card.clean_label) == ("badnets", "cf", 1, 0.1, False)
    assert card.n_poisoned == len(poisoned) == 12 and all(ex.text.split().count("cf") == 1 for ex in poisoned)
    assert card.tal and card.tal_config == {"alpha": 5.0, "heads": 2, "layers": None, "seed": 1}
    from backdoor_core.head_metrics import mask_labels
    from backdoor_core.tal import select_heads

    assert card.tal_heads == mask_labels(select_heads(2, 4, 2, None, 1))
    from backdoor_core.forward import predict

    clean = predict(lm.model, lm.tokenizer, test_set.texts, 32, 64).argmax(1)
    assert card.cacc == pytest.approx(float(np.mean(np.asarray(clean) == np.asarray(test_set.labels))))
    rows = out.poisoned_test.source_rows
    assert rows == [i for i, y in enumerate(test_set.labels) if y != 1] and card.poisoned_test_size == len(rows)
    hits = predict(lm.model, lm.tokenizer, out.poisoned_test.texts, 32, 64).argmax(1)
    assert card.asr == pytest.approx(float(np.mean(np.asarray(hits) == 1)))


def test_a_poison_rate_gives_the_rows_it_names():
    """int(0.29 * 100) is 28 in floating point: 29% of 100 rows poisoned 28. The product is rounded first now; the
    benchmarks' rates give the same counts as before on every size (checked up to 200,000 rows)."""
    from backdoor_core.poisoning import poison_count

    assert poison_count(0.29, 100) == 29 and poison_count(0.57, 100) == 57 and poison_count(0.07, 100) == 7
    assert poison_count(0.295, 100) == 29  # still rounded down, as OpenBackdoor does
    assert all(poison_count(r, n) == int(r * n) for r in (0.005, 0.01, 0.02, 0.025, 0.03, 0.2)
               for n in range(1, 20001))


def test_the_window_search_reads_a_bounded_part_of_a_long_text():
    """The exact window count tokenised the whole text at every step of a binary search: on BBC's test articles
    poisoning took 8.5 s instead of 0.4 (the Detect page rebuilt its simulated pool that way on every rerun). It now
    starts from the word-by-word count and tokenises at most ``max_length`` words past the position each time."""
    from backdoor_core.models import tiny_model
    from backdoor_core.triggers import max_position_in_window

    tok = tiny_model().tokenizer
    seen: list[int] = []

    class Counting:
        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, text, *args, **kwargs):
            seen.append(len(str(text).split()))
            return tok(text, *args, **kwargs)

        def tokenize(self, text, *args, **kwargs):
            seen.append(len(str(text).split()))
            return tok.tokenize(text, *args, **kwargs)

    text = " ".join(f"word{i % 50}" for i in range(3000))
    assert max_position_in_window(Counting(), text, "cf", 32) == max_position_in_window(tok, text, "cf", 32)
    assert max(seen) <= 2 * 32 + 2 and len(seen) <= 3 * 32, (max(seen), len(seen))
