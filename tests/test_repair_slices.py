"""What a repair really changes, entry by entry, against a layout written by hand from ``transformers``' modeling
files (not from ``architecture.py``): the alignment repair's head-only and feed-forward modes, its head reset, and
the pruning baselines, on tiny BERT / RoBERTa / DistilBERT / DeBERTa-v2 / MPNet / ModernBERT / GPT-2 models.

``SanitizeResult.frozen_unchanged`` compares the weights with the very masks the repair trained with, so a wrong
mask (another head's rows, the shared output bias, a layer norm) would pass it; these tests use their own oracle:

* the hand layout is checked against the model's computation: perturbing head ``h``'s query/key/value entries moves
  input features ``h*D:(h+1)*D`` of its layer's attention output projection and nothing else (nor earlier layers);
* after a repair (AdamW weight decay 0.5, two averaged seeds), every entry outside the suspicious heads' slices
  and the feed-forward blocks the mode names is bit-identical — layer norms, embeddings, the classifier, the other
  heads' rows and columns, the attention output bias (shared by all heads: it belongs to none) — and every entry
  inside moved;
* the reset zeroes exactly the reset heads' output columns, or copies exactly their slices from the pretrained
  weights;
* fine-pruning and PURE: the heads they name contribute nothing while they fine-tune and afterwards (gating them
  off moves no logit); fine-tuning moves every tensor.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from backdoor_core.architecture import head_gates, head_inputs_hook, head_parameter_masks
from backdoor_core.forward import predict
from backdoor_core.head_metrics import mask_labels
from backdoor_core.pretrained import PretrainedWeights
from backdoor_core.training import TrainConfig, TrainResult
from defense_helpers import clean_texts, triggered_texts

D, HEADS = 8, 4  # every tiny model: hidden 32, 4 heads


def _layout(arch: str, l: int):
    """By hand: ``([(qkv module, axis of its output features, offset)], (output module, axis), [FFN modules])``."""
    if arch in ("bert", "roberta", "deberta-v2"):
        base = {"deberta-v2": "deberta"}.get(arch, arch)
        p = f"{base}.encoder.layer.{l}."
        names = ("query_proj", "key_proj", "value_proj") if arch == "deberta-v2" else ("query", "key", "value")
        return ([(p + f"attention.self.{n}", "row", 0) for n in names], (p + "attention.output.dense", "col"),
                [p + "intermediate.dense", p + "output.dense"])
    if arch == "mpnet":
        p = f"mpnet.encoder.layer.{l}."
        return ([(p + f"attention.attn.{n}", "row", 0) for n in "qkv"], (p + "attention.attn.o", "col"),
                [p + "intermediate.dense", p + "output.dense"])
    if arch == "distilbert":
        p = f"distilbert.transformer.layer.{l}."
        return ([(p + f"attention.{n}_lin", "row", 0) for n in "qkv"], (p + "attention.out_lin", "col"),
                [p + "ffn.lin1", p + "ffn.lin2"])
    if arch == "modernbert":  # fused Wqkv (out, in): query, key, value rows one after another
        p = f"model.layers.{l}."
        return ([(p + "attn.Wqkv", "row", k * 32) for k in range(3)], (p + "attn.Wo", "col"),
                [p + "mlp.Wi", p + "mlp.Wo"])
    if arch == "gpt2":  # Conv1D weights are (in, out): c_attn's query/key/value are COLUMNS, c_proj's heads ROWS
        p = f"transformer.h.{l}."
        return ([(p + "attn.c_attn", "col", k * 32) for k in range(3)], (p + "attn.c_proj", "row"),
                [p + "mlp.c_fc", p + "mlp.c_proj"])
    raise KeyError(arch)


def _expected(model, arch: str, heads: np.ndarray, ffn_layers=(), parts=("q", "k", "v", "o")) -> dict:
    """``{param name: bool}``: the entries of ``heads`` (their ``parts``) and of the FFN blocks of ``ffn_layers``."""
    out = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    for l, h in zip(*np.nonzero(heads)):
        qkv, (o, o_axis), _ = _layout(arch, int(l))
        for part, (name, axis, off) in zip("qkv", qkv):
            if part not in parts:
                continue
            s = slice(off + int(h) * D, off + (int(h) + 1) * D)
            if axis == "row":
                out[name + ".weight"][s, :] = True
            else:
                out[name + ".weight"][:, s] = True
            if name + ".bias" in out:
                out[name + ".bias"][s] = True
        if "o" in parts:
            s = slice(int(h) * D, (int(h) + 1) * D)
            if o_axis == "col":
                out[o + ".weight"][:, s] = True
            else:
                out[o + ".weight"][s, :] = True
    for l in ffn_layers:
        for mod in _layout(arch, int(l))[2]:
            for w in (".weight", ".bias"):
                if mod + w in out:
                    out[mod + w][...] = True
    return out


@functools.lru_cache(maxsize=None)
def _tiny(arch: str):
    """A tiny random model with no zero entry (biases start at zero: zeroing one by mistake would not show)."""
    from backdoor_core.models import tiny_model

    lm = tiny_model(arch=arch)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in lm.model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return lm


def _layers(model) -> int:
    return int(model.config.num_hidden_layers)


def _contexts(model, tokenizer, texts) -> dict[int, torch.Tensor]:
    """Each layer's attention output projection input ``(B, T, H*D)``, as the model computes it."""
    zs = {}

    def grab(block, z):
        zs[block.layer] = z.detach().reshape(*z.shape[:2], -1).clone()

    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    with head_inputs_hook(model, grab), torch.no_grad():
        model(**enc)
    return zs


ARCHS = ["bert", "roberta", "distilbert", "deberta-v2", "mpnet", "modernbert", "gpt2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_hand_layout_is_the_models_and_head_masks_follow_it(arch):
    lm = _tiny(arch)
    model, L = lm.model, _layers(lm.model)
    texts = ["the movie was good and fine", "a bad plot"]
    base = _contexts(model, lm.tokenizer, texts)
    g = torch.Generator().manual_seed(0)
    for l in range(L):
        for h in range(HEADS):
            one = np.zeros((L, HEADS), bool)
            one[l, h] = True
            qkv = _expected(model, arch, one, parts="qkv")
            moved = copy.deepcopy(model)
            with torch.no_grad():
                for n, p in moved.named_parameters():
                    if qkv[n].any():
                        p[qkv[n]] += torch.randn(int(qkv[n].sum()), generator=g)
            now = _contexts(moved, lm.tokenizer, texts)
            for k in range(l + 1):  # (later layers read this one's output)
                heads_moved = set(np.flatnonzero((now[k] - base[k]).abs().amax((0, 1)).numpy() > 0) // D)
                assert heads_moved == ({h} if k == l else set()), (arch, l, h, k, heads_moved)
    heads = np.zeros((L, HEADS), bool)
    heads[0, 1] = heads[L - 1, 2] = heads[L - 1, 3] = True
    masks, want = head_parameter_masks(model, heads), _expected(model, arch, heads)
    for n, w in want.items():
        assert torch.equal(masks.get(n, torch.zeros_like(w)), w), n  # the output bias is in no head's mask


def _texts():
    texts, labels = clean_texts(32, seed=21)
    return texts, labels, triggered_texts(8, seed=22)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "modernbert", "gpt2"])
@pytest.mark.parametrize("ffn", ["none", "suspicious", [0]])
def test_repair_moves_exactly_the_heads_slices_and_the_named_ffn_blocks(arch, ffn):
    from backdoor_core.sanitize import ffn_layers, sanitize_heads

    lm = _tiny(arch)
    model = copy.deepcopy(lm.model)
    L = _layers(model)
    heads = np.zeros((L, HEADS), bool)
    heads[0, 0] = heads[L - 1, 1] = heads[L - 1, 3] = True
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    texts, labels, pool = _texts()
    cfg = TrainConfig(lr=3e-3, epochs=1, batch_size=16, max_length=32, seed=0, eval_every=100, weight_decay=0.5)
    res = sanitize_heads(model, lm.tokenizer, texts, labels, heads, pool, beta=1.0, config=cfg, ffn=ffn, reset=True,
                         repair_seeds=2, measure_align=False)
    layers = ffn_layers(ffn, heads)
    assert res.details["ffn_layers"] == layers and res.steps > 0
    want = _expected(model, arch, heads, layers)
    for n, p in model.named_parameters():
        changed = p.detach() != before[n]
        assert not (changed & ~want[n]).any(), n  # weight decay included: frozen entries are bit-identical
        assert changed[want[n]].all(), n  # and every trainable entry trained
    assert res.frozen_unchanged


@pytest.mark.parametrize("arch", ["bert", "gpt2", "modernbert"])
def test_reset_reinitialises_exactly_the_reset_heads(arch, monkeypatch):
    import backdoor_core.sanitize as SZ

    start = {}

    def no_training(model, *args, **kwargs):  # the weights training would start from
        start.update({n: p.detach().clone() for n, p in model.named_parameters()})
        return TrainResult()

    monkeypatch.setattr(SZ, "train_averaged", no_training)
    lm = _tiny(arch)
    L = _layers(lm.model)
    heads = np.zeros((L, HEADS), bool)
    heads[0, 1] = heads[L - 1, 2] = heads[L - 1, 3] = True
    some = np.zeros_like(heads)
    some[L - 1, 3] = True
    g = torch.Generator().manual_seed(1)
    pre = PretrainedWeights({n: p.detach() + 1 + torch.rand(p.shape, generator=g)
                             for n, p in lm.model.named_parameters()}, "test", 1.0)
    texts, labels, pool = _texts()
    for reset, pretrained in [(True, None), (some, None), (True, pre), (some, pre)]:
        model = copy.deepcopy(lm.model)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        res = SZ.sanitize_heads(model, lm.tokenizer, texts, labels, heads, pool, config=TrainConfig(max_length=32),
                                reset=reset, pretrained=pretrained, ffn="none", measure_align=False)
        reset_mask = heads if reset is True else some
        assert res.details["reset_heads"] == mask_labels(reset_mask)
        if pretrained is None:  # their output columns are zero, nothing else moved
            cols = _expected(model, arch, reset_mask, parts="o")
            want = {n: torch.where(cols[n], torch.zeros_like(b), b) for n, b in before.items()}
        else:  # their query/key/value rows and biases and output columns are the pretrained ones
            own = _expected(model, arch, reset_mask)
            want = {n: torch.where(own[n], pre.state[n], b) for n, b in before.items()}
        for n in want:
            assert torch.equal(start[n], want[n]), (reset is True, pretrained is not None, n)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_pruning_baselines_silence_the_heads_they_name_and_finetune_moves_everything(arch, monkeypatch):
    import backdoor_core.baselines.fineprune as FP
    import backdoor_core.baselines.pure as PU
    from backdoor_core.baselines.finetune import finetune

    box, seen = {}, []
    real = FP.prune_heads_persistent

    def recorded(model, pruned):  # the heads each baseline prunes in the model it returns
        box["pruned"] = np.asarray(pruned, dtype=bool).copy()
        return real(model, pruned)

    monkeypatch.setattr(FP, "prune_heads_persistent", recorded)
    monkeypatch.setattr(PU, "prune_heads_persistent", recorded)
    lm = _tiny(arch)
    texts, labels = clean_texts(48, seed=21)
    cfg = TrainConfig(lr=3e-3, epochs=1, batch_size=16, max_length=32, seed=0, eval_every=1, weight_decay=0.3)

    def evaluate(m):  # while fine-tuning (every step) and after: the pruned heads' contexts
        def read(block, z):
            if box["pruned"][block.layer].any():
                seen.append(float(z[:, :, box["pruned"][block.layer]].abs().max()))
        with head_inputs_hook(m, read):
            predict(m, lm.tokenizer, texts[:8], 32)
        return {}

    for kind in ("fineprune", "pure"):
        model = copy.deepcopy(lm.model)
        box.clear()
        seen.clear()
        if kind == "fineprune":
            _, pruned = FP.fineprune(model, lm.tokenizer, texts, labels, cfg, prune_fraction=0.25, evaluate=evaluate)
            named = mask_labels(pruned)
        else:
            _, details = PU.pure(model, lm.tokenizer, texts, labels, cfg, min_acc=0.0, max_fraction=0.4,
                                 evaluate=evaluate)
            named = details["pruned_heads"]
        pruned = box["pruned"]
        assert pruned.any() and mask_labels(pruned) == named, kind
        silenced = _expected(model, arch, pruned, parts="vo")  # value rows/bias and output columns: zero
        params = dict(model.named_parameters())
        assert all(not params[n].detach()[m].any() for n, m in silenced.items()), kind
        steps = len(seen)
        evaluate(model)
        assert steps > 0 and len(seen) > steps and max(seen) == 0.0, kind  # silent while trained, and after
        full = predict(model, lm.tokenizer, texts, 32)
        with head_gates(model, torch.as_tensor(~pruned, dtype=torch.float32)):
            gated = predict(model, lm.tokenizer, texts, 32)
        assert np.array_equal(full, gated), kind
    model = copy.deepcopy(lm.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    finetune(model, lm.tokenizer, texts, labels, cfg)  # no mask: every tensor trains
    assert [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])] == []
