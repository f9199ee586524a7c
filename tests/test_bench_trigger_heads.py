"""bench/trigger_heads_check.py's measurement (no shared data): per-head attention on the trigger's word pieces,
averaged over triggered texts, against a hand computation on the tiny TAL-backdoored model."""

import random

import numpy as np
import torch

from bench import trigger_heads_check as B
from defense_helpers import sentence, trained_tiny, with_trigger


def test_head_concentration_matches_a_hand_computation_and_finds_the_tal_heads():
    from backdoor_core.training import Example

    lm = trained_tiny(True)
    rng = random.Random(5)
    examples = []
    for _ in range(12):
        text, span = with_trigger(sentence(rng, 0), rng)
        examples.append(Example(text, 1, (span,), True))
    conc = B.head_concentration(lm, examples, max_length=32)  # (L, H)
    L, H = lm.model.config.num_hidden_layers, lm.model.config.num_attention_heads
    assert conc.shape == (L, H)
    hand = np.zeros((L, H))
    lm.model.eval()
    with torch.no_grad():
        for ex in examples:  # one text at a time, no padding: mean over queries of the mass on the trigger piece
            enc = lm.tokenizer(ex.text, return_tensors="pt", return_offsets_mapping=True)
            offsets = enc.pop("offset_mapping")[0]
            s, e = ex.trigger_spans[0]
            keys = [i for i, (a, b) in enumerate(offsets.tolist()) if b > a and a < e and b > s]
            att = lm.model(**enc, output_attentions=True).attentions
            hand += np.stack([a[0][:, :, keys].sum(-1).mean(-1).numpy() for a in att])
    np.testing.assert_allclose(conc, hand / len(examples), atol=1e-5)
    top4 = {divmod(int(i), H) for i in np.argsort(-conc.ravel())[:4]}
    assert top4 == {(0, 0), (0, 1), (1, 0), (1, 1)}  # the heads TAL trained to look at the trigger
