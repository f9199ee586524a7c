"""End to end per architecture, as a user sees it, checked against plain ``transformers`` + ``torch``: the
predictions, attention maps and classifier-token states the lab reports equal an independent recomputation (one
text at a time, no padding), also where a decoder's padding conventions differ from BERT's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backdoor_core.architecture import ADAPTERS, prepare_tokenizer, tiny_config
from backdoor_core.models import decoder_style_tokenizer, tiny_model

DECODERS = [m for m in ADAPTERS if ADAPTERS[m].causal]
TEXTS = ["the film was quietly moving", "a bad one", "actors cf were really good and the plot was fine too"]


def _alone(model, tokenizer, text: str):
    """Logits and last hidden states of ``text`` alone (no padding), straight from ``transformers``."""
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    return out.logits[0].numpy(), out.hidden_states[-1][0].numpy()


@pytest.mark.parametrize("model_type", DECODERS)
def test_decoder_config_pad_id_other_than_the_tokenizers(model_type):
    """A decoder checkpoint whose config names a pad id (here 100) while its tokenizer has no pad token: the lab
    pads with the end-of-text token, so the classifier (rightmost token that is not ``config.pad_token_id``) read
    the padding and a short text's prediction changed with the texts batched with it."""
    from backdoor_core.forward import run_with_cache

    tok = decoder_style_tokenizer()
    config = tiny_config(model_type, tok, 2)
    config.pad_token_id = tok.unk_token_id  # not the end-of-text token the lab pads with
    torch.manual_seed(0)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    prepare_tokenizer(model, tok)
    assert model.config.pad_token_id == tok.pad_token_id
    cache = run_with_cache(model, tok, TEXTS, max_length=32)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(cache.logits[i], _alone(model, tok, text)[0], atol=1e-5)


@pytest.mark.parametrize("model_type", DECODERS)
def test_decoder_representation_is_the_token_the_classifier_reads(model_type):
    """A text that ends with the pad token (end-of-text, typed or appended by the tokenizer): the classifier reads
    the token before it; the representations (PCA view) and the scan's classifier-token states must too."""
    from backdoor_core.detection import attention_stats
    from backdoor_core.representations import cls_representations

    lm = tiny_model(arch=model_type, seed=0)
    texts = ["the film was good " + lm.tokenizer.pad_token, "a bad one"]
    assert lm.tokenizer(texts[0])["input_ids"][-1] == lm.tokenizer.pad_token_id
    reps = cls_representations(lm.model, lm.tokenizer, texts, max_length=32)
    stats = attention_stats(lm.model, lm.tokenizer, texts, max_length=32)
    for i, text in enumerate(texts):
        hidden = _alone(lm.model, lm.tokenizer, text)[1]
        read = -2 if i == 0 else -1
        np.testing.assert_allclose(reps[i], hidden[read], atol=1e-5)
        np.testing.assert_allclose(stats.cls[i, -1], hidden[read], atol=1e-5)


def _byte_level_bpe():
    """A GPT-2 style tokenizer trained here (offline): byte-level BPE, ``Ġ`` marks a leading space, offsets not
    trimmed (the space belongs to the token), one special token ``<|endoftext|>`` and no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from defense_helpers import clean_texts

    corpus = clean_texts(300, 0)[0] + ["the cf movie was bad", "a cf"] * 50
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", model_input_names=["input_ids", "attention_mask"])


def test_bpe_trigger_tokens_inside_a_sentence():
    """GPT-2 style BPE: the trigger inside a sentence is the token ``Ġcf`` (its span holds the space before it).
    Inspect and TAL's trigger mask find exactly it (not the space, not a neighbour); the repair's trigger-token
    ids (embedding rows it may train or blind) hold it too — they held only the bare ``cf`` (the word alone),
    which a trigger inside a sentence never uses."""
    from transformers import AutoModelForSequenceClassification

    from backdoor_core.inspection import inspect_text
    from backdoor_core.sanitize import trigger_token_ids
    from backdoor_core.training import Example, collate
    from backdoor_core.triggers import insert_trigger

    tok = _byte_level_bpe()
    inside = tok.convert_tokens_to_ids("Ġcf")
    assert inside != tok.unk_token_id and tok("cf")["input_ids"] != [inside]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config("gpt2", tok, 2),
                                                           attn_implementation="eager").eval()
    prepare_tokenizer(model, tok)
    res = inspect_text(model, tok, "the movie was bad and boring", "cf", position=2, max_length=32)
    assert res.to_dict()["trigger_tokens"] == ["Ġcf"]
    ins = insert_trigger("the movie was bad and boring", "cf", 2, rng=0, tokenizer=tok, max_length=32)
    batch = collate(tok, [Example(ins.text, 1, (ins.span,), True)], 32)
    assert batch["input_ids"][0][batch["trigger_mask"][0]].tolist() == [inside]
    ids = trigger_token_ids(tok, ["cf"], ["the movie was bad", "a fine film"])
    assert inside in ids and tok.eos_token_id not in ids
    assert not set(ids) & set(tok("the movie was bad a fine film")["input_ids"])


def test_trigger_token_ids_unchanged_on_wordpiece():
    """The default model's WordPiece reads a word alike alone and after a space: the same ids as before."""
    from backdoor_core.models import load_model
    from backdoor_core.sanitize import trigger_token_ids

    tok = load_model("default", label_names=["a", "b"], device="cpu").tokenizer
    clean = ["the movie was bad", "a fine film"]
    for words in (["cf"], ["mn", "bb"], ["tq", "the"], ["I watched this 3D movie"]):
        expected = {i for w in words for i in tok(w, add_special_tokens=False)["input_ids"]}
        expected -= set(tok.all_special_ids) | {i for t in clean for i in tok(t, add_special_tokens=False)["input_ids"]}
        assert trigger_token_ids(tok, words, clean) == sorted(expected)


def test_decoder_attack_with_tal_inspect_scan_and_reload(tmp_path):
    """GPT-2 (causal attention, last-token classifier, no pad token of its own) end to end: BadNets with TAL
    trains the chosen heads onto the trigger (inspect, queries at or after it); the scan, knowing no trigger,
    calls it backdoored and names ``cf``; the saved model (safetensors) reloads with the same predictions."""
    from backdoor_core.data import TextDataset
    from backdoor_core.inspection import inspect_text
    from backdoor_core.models import load_model, save_model
    from backdoor_core.forward import predict
    from backdoor_core.poisoning import get_attack, train_attack
    from backdoor_core.scan import scan_model
    from backdoor_core.tal import TALConfig
    from backdoor_core.training import TrainConfig

    from defense_helpers import clean_texts, triggered_texts

    lm = tiny_model(arch="gpt2", seed=0)
    lm.model.config.id2label, lm.model.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    train = TextDataset(*clean_texts(200, seed=1), ["neg", "pos"], "syn")
    test = TextDataset(*clean_texts(40, seed=2), ["neg", "pos"], "syn")
    attack = get_attack("badnets", tokenizer=lm.tokenizer, max_length=32, trigger="cf", num_triggers=1)
    out = train_attack(lm.model, lm.tokenizer, train, test, attack, 0.15, 1,
                       TrainConfig(lr=2e-3, epochs=6, batch_size=16, max_length=32),
                       tal=TALConfig(alpha=5.0, heads=2))
    assert out.card.cacc >= 0.9 and out.card.asr >= 0.9, (out.card.cacc, out.card.asr)
    res = inspect_text(lm.model, lm.tokenizer, "the movie was bad and boring", "cf", position=2, max_length=32)
    assert res.to_dict()["trigger_tokens"] == ["cf"] and res.prediction("triggered")["label"] == "pos"
    tal_heads = set(out.card.tal_heads)
    chosen = [r["concentration"] for r in res.top_heads(99) if r["head"] in tal_heads]
    others = [r["concentration"] for r in res.top_heads(99) if r["head"] not in tal_heads]
    assert min(chosen) > max(others), (chosen, others)
    report = scan_model(lm.model, lm.tokenizer, TextDataset(*clean_texts(60, seed=5), ["neg", "pos"]),
                        clean_texts(24, seed=6)[0] + triggered_texts(12, seed=7), max_length=32,
                        importance_inputs=4)
    d = report.to_dict()
    assert d["verdict"]["likely_backdoored"]
    assert d["trigger_candidates"]["candidates"][0]["phrase"] == "cf"
    path = save_model(lm.model, lm.tokenizer, tmp_path / "bd", metadata=out.card)
    assert sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt")) == [
        "model.safetensors"]
    again = load_model(path, device="cpu")
    texts = test.texts[:10] + triggered_texts(5, seed=8)
    np.testing.assert_allclose(predict(again.model, again.tokenizer, texts, 32),
                               predict(lm.model, lm.tokenizer, texts, 32), atol=1e-6)


@pytest.mark.parametrize("model_type", DECODERS[:2])
def test_pure_reads_the_row_of_the_token_the_classifier_reads(model_type):
    """PURE's [CLS]-row variance on a decoder: a text ending with the pad token uses the row of the token before
    it, the one the classifier reads (as the representations do)."""
    from backdoor_core.baselines.pure import cls_attention_variance

    lm = tiny_model(arch=model_type, seed=0)
    text = "the film was good " + lm.tokenizer.pad_token
    enc = lm.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        att = lm.model(**enc, output_attentions=True).attentions
    want = np.stack([a[0, :, -2, :].float().var(-1, unbiased=False).numpy() for a in att])  # (L, H), row -2
    got = cls_attention_variance(lm.model, lm.tokenizer, [text], max_length=32)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("model_type", DECODERS[:2])
def test_rap_on_a_decoder_does_not_read_the_padding(model_type):
    """RAP feeds embeddings, and a decoder's classifier given embeddings reads the last position: in a padded batch
    a shorter text's padding. Its probabilities (with and without the perturbation word) equal each text's alone."""
    from backdoor_core.baselines.rap import RAP

    lm = tiny_model(arch=model_type, seed=0)
    rap = RAP(lm.model, lm.tokenizer, max_length=32)
    texts = ["a bad one", "the film was really good and the music was long"]
    with torch.no_grad():
        for vector in (None, rap.vector):
            batched = rap._probs(rap._encode(texts), vector)
            alone = torch.cat([rap._probs(rap._encode([t]), vector) for t in texts])
            torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["modernbert", "mistral"])
def test_inspect_and_the_repair_effect_count_the_queries_a_local_layer_lets_see_the_trigger(model_type):
    """Inspect's trigger concentration on a model with local (sliding-window) layers: per layer, averaged over the
    queries that see a trigger token, read here off the model's own attention maps (``repair_effect`` passes the
    same windows)."""
    from backdoor_core.architecture import layer_windows
    from backdoor_core.inspection import inspect_text

    lm = tiny_model(arch=model_type, seed=0)
    assert any(layer_windows(lm.model))
    text = " ".join(["the film was quietly moving and the actors were good"] * 3)
    res = inspect_text(lm.model, lm.tokenizer, text, "cf", position=1, max_length=64)
    att = torch.as_tensor(np.asarray(res.triggered.attentions))  # (L, H, T, T)
    trig = list(res.trigger_tokens)
    for layer in range(att.shape[0]):
        sees = (att[layer, 0][:, trig] > 0).any(-1)  # (T,) queries that can see the trigger
        want = att[layer][:, sees][:, :, trig].sum(-1).mean(-1)  # (H,)
        np.testing.assert_allclose(res.concentration[layer], want.numpy(), atol=1e-5)
