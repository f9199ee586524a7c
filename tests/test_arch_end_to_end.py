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
