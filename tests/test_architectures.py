"""Every supported architecture, end to end on a tiny random model: load -> inspect -> scan -> sanitize 2 steps ->
frozen slices unchanged byte for byte -> save/load; plus the per-architecture head slicing (Conv1D, fused Wqkv,
grouped-query), ALBERT's shared-layer gates and refusal, and the decoder statistics."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from backdoor_core import architecture as arch
from backdoor_core import settings as S
from backdoor_core.architecture import (
    ADAPTERS,
    HeadRepairUnsupported,
    UnsupportedModelError,
    attention_blocks,
    ffn_parameter_masks,
    head_gates,
    head_parameter_masks,
)
from backdoor_core.data import TextDataset
from backdoor_core.head_metrics import key_visibility, trigger_concentration
from backdoor_core.models import load_model, save_model, tiny_model

from defense_helpers import clean_texts, triggered_texts

ALL = list(ADAPTERS)
REPAIRABLE = [m for m in ALL if ADAPTERS[m].head_repair]
DECODERS = [m for m in ALL if ADAPTERS[m].causal]


@functools.lru_cache(maxsize=None)
def _tiny(model_type: str):
    return tiny_model(arch=model_type, seed=0)


def _fresh(model_type: str):
    return tiny_model(arch=model_type, seed=0)


def _logits(lm, texts=("a small test sentence", "another one that is a little longer")):
    enc = lm.tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        return lm.model(**enc).logits


@pytest.mark.parametrize("model_type", ALL)
def test_end_to_end(model_type, tmp_path):
    from backdoor_core.inspection import inspect_text
    from backdoor_core.sanitize import default_config, sanitize_heads, snapshot_frozen
    from backdoor_core.scan import scan_model

    lm = _fresh(model_type)
    # load: a saved tiny model reloads through load_model with the same outputs
    loaded = load_model(save_model(lm.model, lm.tokenizer, tmp_path / "m"), device="cpu")
    assert type(loaded.model) is type(lm.model)
    torch.testing.assert_close(_logits(loaded), _logits(lm))
    info = arch.describe(loaded.model)
    L, H = info.layers, info.heads
    assert L == len(attention_blocks(loaded.model)) and len(info.layer_kinds) == L
    # inspect
    res = inspect_text(loaded.model, loaded.tokenizer, "the movie was really good", "cf", position=2)
    assert res.concentration.shape == (L, H)
    assert np.isfinite(res.concentration).all() and (res.concentration >= 0).all()
    assert (res.concentration <= 1 + 1e-5).all() and res.concentration.max() > 0
    # scan (no training: the verdict means nothing, the pipeline must run)
    texts, labels = clean_texts(16, seed=1)
    report = scan_model(loaded.model, loaded.tokenizer, TextDataset(texts, labels, ["neg", "pos"]),
                        triggered_texts(8, seed=2), max_length=32, importance_inputs=4, model_name=model_type)
    assert report.heads.score.shape == (L, H) and np.isfinite(report.heads.score).all()
    if not ADAPTERS[model_type].head_repair:
        with pytest.raises(HeadRepairUnsupported, match="shares one set of attention weights"):
            sanitize_heads(loaded.model, loaded.tokenizer, texts, labels, np.eye(L, H, dtype=bool))
        return
    # sanitize 2 steps on two heads of layer 0 (one per key/value group under grouped-query attention)
    suspicious = np.zeros((L, H), dtype=bool)
    suspicious[0, 0] = suspicious[0, H - 1] = True
    masks = head_parameter_masks(loaded.model, suspicious)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    snap = snapshot_frozen(loaded.model, masks)
    cfg = default_config(epochs=1, batch_size=8, max_length=32, max_steps=2, eval_every=100)
    out = sanitize_heads(loaded.model, loaded.tokenizer, texts, labels, suspicious, triggered_texts(4, seed=3),
                         config=cfg, ffn="none")  # head-only here; the FFN blocks are found below
    ffn = ffn_parameter_masks(loaded.model, [0])  # FFN repair (our design): layer 0's feed-forward weights
    assert ffn and not set(ffn) & set(masks) and all(m.all() for m in ffn.values())
    assert out.steps == 2 * S.REPAIR_SEEDS and out.frozen_unchanged  # each averaged repair runs its 2 steps
    for name, p in loaded.model.named_parameters():  # byte for byte, checked here independently
        m = masks.get(name)
        now = p.detach()[~m] if m is not None else p.detach()
        assert torch.equal(now, snap[name]), name
    moved = [n for n, m in masks.items()
             if not torch.equal(dict(loaded.model.named_parameters())[n].detach()[m], before[n][m])]
    assert moved, "the suspicious heads' slices did not train"
    # save / load keeps the repaired weights
    again = load_model(save_model(loaded.model, loaded.tokenizer, tmp_path / "s"), device="cpu")
    for (n1, p1), (n2, p2) in zip(loaded.model.named_parameters(), again.model.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2), n1


@pytest.mark.parametrize("model_type", ALL)
def test_zero_gate_equals_zeroing_the_output_slice(model_type):
    """The gate hook and the output-projection slice address the same features (Conv1D: rows, Linear: columns)."""
    lm = _fresh(model_type)
    blocks = attention_blocks(lm.model)
    block = blocks[-1]
    gates = np.ones((len(blocks), block.num_heads))
    gates[-1, 1] = 0.0
    base = _logits(lm)
    with head_gates(lm.model, gates):
        gated = _logits(lm)
    assert not torch.allclose(gated, base)
    if block.shared:  # ALBERT: zeroing the shared weights would ablate the head in every layer
        return
    masks: dict = {}
    block.mark_output(masks, [1])
    with torch.no_grad():
        block.output.weight[masks[id(block.output.weight)]] = 0.0
    torch.testing.assert_close(_logits(lm), gated)


@pytest.mark.parametrize("model_type", REPAIRABLE)
def test_head_masks_cover_exactly_the_heads_rows(model_type):
    lm = _tiny(model_type)
    blocks = attention_blocks(lm.model)
    b = blocks[0]
    sel = np.zeros((len(blocks), b.num_heads), dtype=bool)
    sel[0, 1] = True
    masks = head_parameter_masks(lm.model, sel)
    names = {id(p): n for n, p in lm.model.named_parameters()}
    D = b.head_dim
    qw = masks[names[id(b.query.module.weight)]]
    rows = qw.T if b.query.transposed else qw  # (out features, in)
    # query rows of head 1 and nothing else of the query part
    q = rows[b.query.start:b.query.start + b.num_heads * D].any(-1)
    assert q.nonzero().flatten().tolist() == list(range(D, 2 * D))
    # key/value: with one query head per group, the head's own rows; under grouped-query, none (shared)
    kw = masks[names[id(b.key.module.weight)]] if names[id(b.key.module.weight)] in masks else None
    krows = (kw.T if b.key.transposed else kw) if kw is not None else None
    k = krows[b.key.start:b.key.start + b.num_kv_heads * D].any(-1) if krows is not None else torch.zeros(1)
    if b.num_kv_heads == b.num_heads:
        assert k.nonzero().flatten().tolist() == list(range(D, 2 * D))
    else:
        assert not k.any()
    ow = masks[names[id(b.output.weight)]]
    cols = (ow.T if arch._transposed(b.output) else ow).any(0)
    assert cols.nonzero().flatten().tolist() == list(range(D, 2 * D))
    assert sum(int(m.sum()) for m in masks.values()) > 0
    # layer 1 untouched
    assert not any(names[id(p)] in masks for p in (blocks[1].output.weight,))


@pytest.mark.parametrize("model_type", [m for m in DECODERS if ADAPTERS[m].tiny.get("num_key_value_heads")])
def test_grouped_query_whole_group_trains_its_key_value_rows(model_type):
    lm = _tiny(model_type)
    b = attention_blocks(lm.model)[0]
    assert b.num_kv_heads < b.num_heads and b.group_size == 2
    sel = np.zeros((2, b.num_heads), dtype=bool)
    sel[0, :b.group_size] = True  # every query head of group 0
    masks = head_parameter_masks(lm.model, sel)
    names = {id(p): n for n, p in lm.model.named_parameters()}
    k = masks[names[id(b.key.module.weight)]].any(-1)
    assert k.nonzero().flatten().tolist() == list(range(0, b.head_dim))
    assert b.kv_group(3) == 1 and b.whole_groups([0, 1, 3]) == [0]


def test_albert_gates_follow_the_layer_although_weights_are_shared():
    lm = _fresh("albert")
    blocks = attention_blocks(lm.model)
    assert blocks[0].output is blocks[1].output and blocks[0].shared
    base = _logits(lm)
    g0, g1 = np.ones((2, 4)), np.ones((2, 4))
    g0[0] = 0.0
    g1[1] = 0.0
    with head_gates(lm.model, g0):
        a = _logits(lm)
    with head_gates(lm.model, g1):
        b = _logits(lm)
    with head_gates(lm.model, np.ones((2, 4))):
        torch.testing.assert_close(_logits(lm), base)
    assert not torch.allclose(a, b) and not torch.allclose(a, base)
    with pytest.raises(HeadRepairUnsupported):
        head_parameter_masks(lm.model, g0 == 0)


def test_modernbert_says_which_layers_are_local():
    info = arch.describe(_tiny("modernbert").model)
    assert info.fused_qkv and not info.qkv_bias
    assert info.layer_kinds[0] == "global" and info.layer_kinds[1].startswith("local")
    assert arch.layer_label(_tiny("modernbert").model, 1) == "L1 (local)"
    assert arch.layer_label(_tiny("bert").model, 1) == "L1"


def test_unsupported_model_is_one_plain_line():
    class Fake:
        class config:
            model_type = "t5"

    with pytest.raises(UnsupportedModelError) as err:
        attention_blocks(Fake())
    assert "\n" not in str(err.value) and "supported:" in str(err.value) and "'t5'" in str(err.value)


@pytest.mark.parametrize("model_type", DECODERS)
def test_decoder_pad_token_and_last_token_classifier(model_type):
    lm = _tiny(model_type)
    tok = lm.tokenizer
    assert tok.pad_token is not None and lm.model.config.pad_token_id == tok.pad_token_id
    assert tok.padding_side == "right" and "token_type_ids" not in tok.model_input_names
    short, long_ = "good film", "a much longer sentence about a good film"
    alone = _logits(lm, [short])
    padded = _logits(lm, [short, long_])
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=1e-4)  # padding changes nothing
    enc = tok([short, long_], padding=True, return_tensors="pt")
    pos = arch.classifier_positions(lm.model, enc["attention_mask"])
    assert pos.tolist() == [int(enc["attention_mask"][0].sum()) - 1, enc["attention_mask"].shape[1] - 1]
    keys = arch.content_key_mask(lm.model, enc["attention_mask"])
    assert keys[:, 0].sum() == 0 and keys[1, 1:].all()  # the sink at position 0 is not content
    assert arch.describe(lm.model).notes["similarity"]


def test_key_visibility_and_causal_trigger_concentration():
    qm = torch.tensor([[1.0, 1, 1, 0]])
    assert key_visibility(qm, causal=False).tolist() == [[3, 3, 3, 3]]
    assert key_visibility(qm, causal=True).tolist() == [[3, 2, 1, 1]]
    # a causal map over 4 tokens; the trigger is token 2: queries 0 and 1 cannot see it
    att = torch.tensor([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.2, 0.2, 0.6, 0], [0.1, 0.1, 0.4, 0.4]])[None]
    trig = torch.tensor([False, False, True, False])
    enc = trigger_concentration(att, trig)
    dec = trigger_concentration(att, trig, causal=True)
    assert float(enc[0]) == pytest.approx((0.6 + 0.4) / 4)
    assert float(dec[0]) == pytest.approx((0.6 + 0.4) / 2)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_decoder_tal_and_pure_rows(model_type):
    from backdoor_core.baselines.pure import ClsNormLoss, classifier_rows
    from backdoor_core.tal import TrojanAttentionLoss

    lm = _tiny(model_type)
    loss = TrojanAttentionLoss.for_model(lm.model)
    assert loss.causal and loss.heads_mask.shape == (2, 4)
    enc = lm.tokenizer(["good film", "a longer good film here"], padding=True, return_tensors="pt")
    out = lm.model(**enc, output_attentions=True)
    pos = arch.classifier_positions(lm.model, enc["attention_mask"])
    rows = classifier_rows(out.attentions[0], pos)
    torch.testing.assert_close(rows[0], out.attentions[0][0, :, int(pos[0]), :])
    val = ClsNormLoss(np.ones(2), np.zeros((2, 4), bool), 1.0, lm.model)({"attention_mask": enc["attention_mask"]},
                                                                         out)["cls_norm"]
    assert torch.isfinite(val) and float(val.detach()) > 0


def test_attention_dropout_off_covers_float_and_module_dropouts():
    for model_type in ("bert", "llama"):
        lm = _fresh(model_type)
        block = attention_blocks(lm.model)[0]
        attr = ADAPTERS[model_type].dropout_attr
        drop = getattr(block.attention, attr)
        if isinstance(drop, torch.nn.Dropout):
            drop.p = 0.3
        else:
            setattr(block.attention, attr, 0.3)

        def value():
            d = getattr(block.attention, attr)
            return d.p if isinstance(d, torch.nn.Dropout) else d

        with arch.attention_dropout_off(lm.model):
            assert value() == 0.0
        assert value() == 0.3


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "modernbert"])
def test_head_wise_baselines_and_tal_training_run(model_type):
    """Fine-pruning and PURE (persistent pruning of GQA/Conv1D/fused heads) and a TAL attack step run, and the
    pruned slices stay zero through training."""
    from backdoor_core.defenses import run_defense
    from backdoor_core.poisoning import get_attack, train_attack
    from backdoor_core.tal import TALConfig
    from backdoor_core.training import TrainConfig

    lm = _fresh(model_type)
    texts, labels = clean_texts(20, seed=4)
    ds = TextDataset(texts, labels, ["neg", "pos"])
    for name in ("fineprune", "pure"):
        res = run_defense(name, lm.model, lm.tokenizer, ds, max_steps=2, max_length=32, batch_size=8, epochs=1)
        pruned = res.details.get("pruned_heads") or []
        if name == "fineprune":
            assert len(pruned) == 2  # 20% of 8 heads
        blocks = attention_blocks(res.model)
        for label in pruned:
            layer, head = int(label[1]), int(label[3])
            b = blocks[layer]
            masks: dict = {}
            b.mark_output(masks, [head])
            assert torch.count_nonzero(b.output.weight[masks[id(b.output.weight)]]) == 0, (name, label)
    out = train_attack(lm.model, lm.tokenizer, ds, ds, get_attack("badnets", trigger="cf"), 0.3, 1,
                       TrainConfig(epochs=1, batch_size=8, max_steps=2, max_length=32, eval_every=0),
                       tal=TALConfig(alpha=1.0))
    assert out.result.steps == 2 and "tal" in out.result.history[-1]


def test_albert_defenses_are_refused_before_any_work():
    from backdoor_core.defenses import run_defense

    lm = _tiny("albert")
    texts, labels = clean_texts(8, seed=5)
    for name in ("alignment", "fineprune", "pure"):
        with pytest.raises(HeadRepairUnsupported) as err:
            run_defense(name, lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]))
        assert "\n" not in str(err.value)


def test_per_head_contexts_follow_the_layer_on_shared_weights():
    """``forward``'s per-head contexts (via ``architecture.head_inputs_hook``) differ per layer on ALBERT."""
    from backdoor_core.forward import run_with_cache

    lm = _tiny("albert")
    cache = run_with_cache(lm.model, lm.tokenizer, ["a small test sentence"], max_length=16, want=("z",))
    z = cache.z[0]  # (L, n, H, D)
    assert z.shape[0] == 2 and not np.allclose(z[0], z[1])


def test_grids_stay_readable_at_32_layers_by_32_heads():
    from backdoor_core import figures as F

    rng = np.random.default_rng(0)
    scores = rng.random((32, 32))
    marks = scores > 0.97
    kinds = ["global" if i % 3 == 0 else "local (window 128)" for i in range(32)]
    fig = F.suspicious_head_grid(scores, marks, layer_labels=arch.layer_labels(kinds))
    assert fig.layout.height <= 900
    assert len(fig.layout.xaxis.tickvals) == 16 and len(fig.layout.yaxis.tickvals) == 16
    assert fig.layout.yaxis.tickvals[1] == "L2 (local)"
    assert fig.data[1].marker.size <= 900 / 32 + 1  # marks no larger than a cell
    assert "texttemplate" not in fig.data[0] or not fig.data[0].texttemplate  # no numbers in 1024 cells
    small = F.suspicious_head_grid(scores[:6, :12], marks[:6, :12])
    assert small.layout.xaxis.tickvals is None
