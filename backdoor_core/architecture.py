"""Where each attention head's parameters live, per architecture, and gating heads on and off.

One small adapter per architecture (``ADAPTERS``, keyed by ``config.model_type``) says where a layer's
attention projections are; everything head-shaped — parameter slices, gates, pruning, resetting, attention
dropout, which token the classifier reads, which keys are content — is derived here from that description and
nowhere else. Anything not in the table raises ``UnsupportedModelError`` with one plain line.

Layout of head ``h`` (``H`` query heads of size ``D``; ``K`` key/value heads, ``K = H`` unless grouped-query):

* its query rows: output features ``h*D:(h+1)*D`` of the query projection (``HeadRows``). A fused projection
  (ModernBERT ``Wqkv``, GPT-2 ``c_attn``) holds query, key and value one after another: ``start`` is where each
  part begins. ``nn.Linear`` weights are ``(out, in)`` so a head owns weight ROWS; GPT-2's ``Conv1D`` weights
  are ``(in, out)`` (``transposed``) so it owns COLUMNS there. Biases, when present, follow the output features.
* its key/value rows: features ``g*D:(g+1)*D`` of the key/value projections, ``g = h // (H / K)`` its group.
* its output columns: input features ``h*D:(h+1)*D`` of the output projection (rows for ``Conv1D``); the output
  bias is shared by all heads and belongs to none.

Gating: ``transformers`` 5 ignores ``head_mask`` and has no ``prune_heads``, so heads are gated with a forward
pre-hook on the output projection, whose input ``(batch, T, H*D)`` is the concatenation of the heads' contexts:
multiplying slice ``h`` by ``g[h]`` scales head ``h``'s contribution (0 = ablated). ALBERT runs one shared layer
``L`` times; the hook counts its calls within a forward pass to know which layer it is serving.

Grouped-query attention (Llama/Qwen2/Mistral with ``num_key_value_heads < num_attention_heads``; our design;
papers silent): "repair head ``h``" trains head ``h``'s query rows and output columns. Its key/value rows are
shared by the other query heads of its group; they train only when EVERY query head of the group is selected
(otherwise changing them would move a safe head). Pruning a head likewise zeroes its output columns, and its
group's value rows only when the whole group is pruned. With ``K = H`` this is exactly the BERT rule.

Attention probabilities come from the models' eager implementation (``models.load_model`` sets it). Decoder
classifiers (``causal=True``) differ in three ways the statistics must respect (see ``head_metrics``): a key is
seen only by the queries at or after it; position 0 is the attention sink (most heads park mass on the first
token whatever it is), so it is not a content key; the classifier reads the last real token, so padding goes on
the right and a missing pad token is set to the end-of-text token (``prepare_tokenizer``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


class UnsupportedModelError(ValueError):
    """The model's attention layout is not one we know how to slice into heads."""


class HeadRepairUnsupported(UnsupportedModelError):
    """The model can be inspected and scanned, but its heads cannot be repaired one by one (e.g. ALBERT)."""


def _conv1d_type():
    try:
        from transformers.pytorch_utils import Conv1D

        return Conv1D
    except ImportError:  # pragma: no cover - transformers always ships it
        return ()


def _transposed(module: nn.Module) -> bool:
    """True for GPT-2's ``Conv1D`` (weight ``(in, out)``), False for ``nn.Linear`` (weight ``(out, in)``)."""
    conv = _conv1d_type()
    return bool(conv) and isinstance(module, conv)


@dataclass
class HeadRows:
    """Where one projection's heads write their output features.

    Attributes:
        module: the ``nn.Linear`` or ``Conv1D`` holding the projection.
        heads: number of heads in this projection (the key/value heads for ``k``/``v`` under grouped-query).
        head_dim: ``D``.
        start: first output feature of this projection inside a fused weight (0 when not fused).
    """

    module: nn.Module
    heads: int
    head_dim: int
    start: int = 0

    @property
    def transposed(self) -> bool:
        return _transposed(self.module)

    def features(self, head: int) -> slice:
        """Output features of ``head`` in ``module``."""
        a = self.start + head * self.head_dim
        return slice(a, a + self.head_dim)

    def mark(self, masks: dict[int, torch.Tensor], heads) -> None:
        """OR ``heads``' weight entries (and bias entries) into ``masks`` (keyed by ``id(parameter)``)."""
        w = self.module.weight
        wm = masks.setdefault(id(w), torch.zeros_like(w, dtype=torch.bool))
        b = getattr(self.module, "bias", None)
        bm = masks.setdefault(id(b), torch.zeros_like(b, dtype=torch.bool)) if b is not None else None
        for h in heads:
            s = self.features(int(h))
            if self.transposed:
                wm[:, s] = True
            else:
                wm[s, :] = True
            if bm is not None:
                bm[s] = True


@dataclass
class AttentionBlock:
    """One layer's attention, as head slices.

    Attributes:
        layer: 0-based layer index.
        num_heads: ``H`` query heads; ``num_kv_heads``: ``K`` key/value heads (``H`` unless grouped-query).
        head_dim: ``D``.
        query, key, value: ``HeadRows``; ``extra``: more per-query-head rows (DeBERTa's unshared positional
            projections ``pos_query_proj``/``pos_key_proj``), trained and frozen with the query rows.
        output: the output projection (``nn.Linear`` or ``Conv1D``); its input features are the heads' contexts.
        attention: the module whose forward computes the probabilities (holds the attention dropout).
        kind: ``"global"``, ``"local (window W)"``, ``"causal"`` or ``"causal, window W"``.
        shared: True when this layer's parameters are also used by other layers (ALBERT).
    """

    layer: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    query: HeadRows
    key: HeadRows
    value: HeadRows
    output: nn.Module
    attention: nn.Module
    kind: str = "global"
    shared: bool = False
    extra: tuple = ()

    def head_slice(self, head: int) -> slice:
        """Features of ``head`` in the output projection's input (the concatenated contexts)."""
        return slice(head * self.head_dim, (head + 1) * self.head_dim)

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def kv_group(self, head: int) -> int:
        """The key/value head that query head ``head`` reads (grouped-query attention)."""
        return head // self.group_size

    def whole_groups(self, heads) -> list[int]:
        """Key/value heads all of whose query heads are in ``heads``."""
        sel = {int(h) for h in heads}
        return [g for g in range(self.num_kv_heads)
                if all(h in sel for h in range(g * self.group_size, (g + 1) * self.group_size))]

    def mark_output(self, masks: dict[int, torch.Tensor], heads) -> None:
        """OR ``heads``' output-projection columns (rows for ``Conv1D``) into ``masks``."""
        w = self.output.weight
        m = masks.setdefault(id(w), torch.zeros_like(w, dtype=torch.bool))
        for h in heads:
            s = self.head_slice(int(h))
            if _transposed(self.output):
                m[s, :] = True
            else:
                m[:, s] = True


@dataclass(frozen=True)
class Adapter:
    """How to find one architecture's attention layers.

    Attributes:
        name: display name.
        blocks: ``model -> [AttentionBlock]`` in layer order.
        causal: decoder (causal mask, sink at position 0, last-token classifier).
        head_repair: False when heads cannot be changed one by one; ``refusal`` says why.
        dropout_attr: attribute of ``AttentionBlock.attention`` holding the attention-probability dropout
            (an ``nn.Dropout`` or a float).
        tiny: config keyword arguments of a tiny random model (tests, ``bench/architectures.py``).
        ffn: ``model -> [[nn.Module]]`` per layer, the linear layers of its feed-forward block (``ffn_modules``;
            None when not described: FFN repair is then refused).
    """

    name: str
    blocks: Callable
    causal: bool = False
    head_repair: bool = True
    refusal: str = ""
    dropout_attr: str = "dropout"
    tiny: dict = field(default_factory=dict)
    ffn: Callable | None = None


def _base(model):
    return getattr(model, "base_model", model)


def _h(model) -> int:
    return int(model.config.num_attention_heads)


def _split(i, att, q, k, v, o, H, D, K=None, kind="global", shared=False, extra=()) -> AttentionBlock:
    K = K or H
    return AttentionBlock(i, H, K, D, HeadRows(q, H, D), HeadRows(k, K, D), HeadRows(v, K, D), o, att, kind,
                          shared, tuple(HeadRows(m, H, D) for m in extra))


def _bert_blocks(model):
    H = _h(model)
    out = []
    for i, layer in enumerate(_base(model).encoder.layer):
        s = layer.attention.self
        D = s.query.out_features // H
        out.append(_split(i, s, s.query, s.key, s.value, layer.attention.output.dense, H, D))
    return out


def _distilbert_blocks(model):
    H = _h(model)
    out = []
    for i, layer in enumerate(_base(model).transformer.layer):
        a = layer.attention
        out.append(_split(i, a, a.q_lin, a.k_lin, a.v_lin, a.out_lin, H, a.q_lin.out_features // H))
    return out


def _deberta_blocks(model):
    H = _h(model)
    out = []
    for i, layer in enumerate(_base(model).encoder.layer):
        s = layer.attention.self
        extra = tuple(m for m in (getattr(s, "pos_query_proj", None), getattr(s, "pos_key_proj", None))
                      if m is not None)
        out.append(_split(i, s, s.query_proj, s.key_proj, s.value_proj, layer.attention.output.dense, H,
                          s.query_proj.out_features // H, extra=extra))
    return out


def _mpnet_blocks(model):
    H = _h(model)
    out = []
    for i, layer in enumerate(_base(model).encoder.layer):
        a = layer.attention.attn
        out.append(_split(i, a, a.q, a.k, a.v, a.o, H, a.q.out_features // H))
    return out


def _window_kind(config, i: int, causal: bool) -> str:
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    sliding = (types[i] == "sliding_attention") if types else window is not None
    if getattr(config, "model_type", "") == "modernbert":
        span = getattr(config, "local_attention", None) or (2 * window if window else None)
        return f"local (window {span})" if sliding else "global"
    if causal:
        return f"causal, window {window}" if sliding and window else "causal"
    return "global"


def layer_windows(model) -> list[int | None]:
    """``(layers,)``: each layer's attention window for ``head_metrics`` (``visible_keys``, ``window=``), None for
    a global layer: ModernBERT's local layers their ``local_attention`` span, a decoder's sliding-window layers
    (Mistral) their ``sliding_window``."""
    out = []
    for block in attention_blocks(model):
        last = block.kind.rsplit(" ", 1)[-1].rstrip(")")
        out.append(int(last) if "window" in block.kind and last.isdigit() else None)
    return out


def _modernbert_blocks(model):
    H = _h(model)
    out = []
    for i, layer in enumerate(_base(model).layers):
        a = layer.attn
        D = a.head_dim
        fused = a.Wqkv
        out.append(AttentionBlock(i, H, H, D, HeadRows(fused, H, D, 0), HeadRows(fused, H, D, H * D),
                                  HeadRows(fused, H, D, 2 * H * D), a.Wo, a, _window_kind(model.config, i, False)))
    return out


def _albert_blocks(model):
    config = model.config
    if int(getattr(config, "inner_group_num", 1)) != 1:
        raise UnsupportedModelError(
            f"ALBERT with inner_group_num={config.inner_group_num} runs several attention layers per step; only "
            "inner_group_num=1 is supported.")
    H, L, G = _h(model), int(config.num_hidden_layers), int(config.num_hidden_groups)
    groups = _base(model).encoder.albert_layer_groups
    out = []
    for i in range(L):
        a = groups[int(i / (L / G))].albert_layers[0].attention
        out.append(_split(i, a, a.query, a.key, a.value, a.dense, H, a.query.out_features // H, shared=True))
    return out


def _gpt2_blocks(model):
    H = _h(model)
    out = []
    for i, block in enumerate(_base(model).h):
        a = block.attn
        E, D = a.embed_dim, a.head_dim
        c = a.c_attn
        out.append(AttentionBlock(i, H, H, D, HeadRows(c, H, D, 0), HeadRows(c, H, D, E), HeadRows(c, H, D, 2 * E),
                                  a.c_proj, a, "causal"))
    return out


def _llama_blocks(model):
    config = model.config
    H = _h(model)
    K = int(getattr(config, "num_key_value_heads", None) or H)
    out = []
    for i, layer in enumerate(_base(model).layers):
        a = layer.self_attn
        D = int(getattr(a, "head_dim", a.q_proj.out_features // H))
        out.append(_split(i, a, a.q_proj, a.k_proj, a.v_proj, a.o_proj, H, D, K, _window_kind(config, i, True)))
    return out


def _bert_ffn(model):
    return [[layer.intermediate.dense, layer.output.dense] for layer in _base(model).encoder.layer]


def _distilbert_ffn(model):
    return [[layer.ffn.lin1, layer.ffn.lin2] for layer in _base(model).transformer.layer]


def _modernbert_ffn(model):
    return [[layer.mlp.Wi, layer.mlp.Wo] for layer in _base(model).layers]


def _gpt2_ffn(model):
    return [[block.mlp.c_fc, block.mlp.c_proj] for block in _base(model).h]


def _llama_ffn(model):
    return [[layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj] for layer in _base(model).layers]


_ENC = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128)
_ALBERT_REFUSAL = ("ALBERT shares one set of attention weights across all its layers, so changing head h of one "
                   "layer would change it in every layer: head-wise repair (sanitize, fine-pruning, PURE) is "
                   "refused. Inspect and scan work.")
_DEC = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128)

ADAPTERS: dict[str, Adapter] = {
    "bert": Adapter("BERT", _bert_blocks, tiny=_ENC, ffn=_bert_ffn),
    "roberta": Adapter("RoBERTa", _bert_blocks, tiny=dict(_ENC, max_position_embeddings=130), ffn=_bert_ffn),
    "xlm-roberta": Adapter("XLM-R", _bert_blocks, tiny=dict(_ENC, max_position_embeddings=130), ffn=_bert_ffn),
    "electra": Adapter("ELECTRA", _bert_blocks, tiny=dict(_ENC, embedding_size=16), ffn=_bert_ffn),
    "distilbert": Adapter("DistilBERT", _distilbert_blocks,
                          tiny=dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128),
                          ffn=_distilbert_ffn),
    "deberta-v2": Adapter("DeBERTa-v2/v3", _deberta_blocks,
                          tiny=dict(_ENC, relative_attention=True, position_buckets=16, max_relative_positions=-1,
                                    pos_att_type=["p2c", "c2p"], share_att_key=True, type_vocab_size=0),
                          ffn=_bert_ffn),
    "mpnet": Adapter("MPNet", _mpnet_blocks, tiny=dict(_ENC, max_position_embeddings=130), ffn=_bert_ffn),
    "modernbert": Adapter("ModernBERT", _modernbert_blocks, dropout_attr="attention_dropout",
                          tiny=dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                    intermediate_size=64, max_position_embeddings=128, local_attention=8,
                                    global_attn_every_n_layers=3), ffn=_modernbert_ffn),
    "albert": Adapter("ALBERT", _albert_blocks, head_repair=False, refusal=_ALBERT_REFUSAL,
                      dropout_attr="attention_dropout", tiny=dict(_ENC, embedding_size=16)),
    "gpt2": Adapter("GPT-2", _gpt2_blocks, causal=True, dropout_attr="attn_dropout",
                    tiny=dict(n_embd=32, n_layer=2, n_head=4, n_positions=128), ffn=_gpt2_ffn),
    "llama": Adapter("Llama", _llama_blocks, causal=True, dropout_attr="attention_dropout",
                     tiny=dict(_DEC, num_key_value_heads=2), ffn=_llama_ffn),
    "qwen2": Adapter("Qwen2", _llama_blocks, causal=True, dropout_attr="attention_dropout",
                     tiny=dict(_DEC, num_key_value_heads=2), ffn=_llama_ffn),
    "mistral": Adapter("Mistral", _llama_blocks, causal=True, dropout_attr="attention_dropout",
                       tiny=dict(_DEC, num_key_value_heads=2, sliding_window=8), ffn=_llama_ffn),
}
"""Supported architectures, keyed by ``config.model_type``."""


def supported_names() -> str:
    return ", ".join(a.name for a in ADAPTERS.values())


def adapter_for(model) -> Adapter:
    """The adapter of ``model`` (a ``transformers`` model or its config); ``UnsupportedModelError`` otherwise."""
    config = getattr(model, "config", model)
    kind = str(getattr(config, "model_type", "") or "")
    adapter = ADAPTERS.get(kind)
    if adapter is None:
        raise UnsupportedModelError(
            f"'{kind or type(model).__name__}' models are not supported (supported: {supported_names()}).")
    return adapter


def attention_blocks(model) -> list[AttentionBlock]:
    """The attention of every layer, in order (``UnsupportedModelError`` for an unknown layout)."""
    adapter = adapter_for(model)
    try:
        blocks = adapter.blocks(model)
    except AttributeError as exc:
        raise UnsupportedModelError(
            f"{type(model).__name__} does not have the {adapter.name} attention layout we expect ({exc}).") from exc
    if not blocks:
        raise UnsupportedModelError(f"{type(model).__name__} has no attention layers.")
    return blocks


def is_causal(model) -> bool:
    """True for decoder classifiers (causal attention, sink at position 0, last-token classifier)."""
    return adapter_for(model).causal


def require_head_repair(model, what: str = "Head-wise repair") -> None:
    """Raise ``HeadRepairUnsupported`` (one line) when ``model``'s heads cannot be changed one by one."""
    adapter = adapter_for(model)
    if not adapter.head_repair:
        raise HeadRepairUnsupported(f"{what} is not available for {adapter.name}: {adapter.refusal}")


# ------------------------------------------------------------------------------------------------ descriptions

FEATURES = ("inspect", "scan", "tal", "sanitize", "fineprune", "pure")


@dataclass
class ArchitectureInfo:
    """Plain facts for views, reports and the bench.

    Attributes:
        layer_kinds: ``(layers,)`` strings, e.g. ModernBERT's alternating ``"global"`` / ``"local (window 128)"``.
        supports: ``{feature: bool}`` over ``FEATURES``; ``refusal`` says why a feature is off.
        notes: ``{statistic: note}`` where a statistic means something different on this model (decoders).
    """

    name: str
    model_type: str
    causal: bool
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    fused_qkv: bool
    transposed: bool
    qkv_bias: bool
    layer_kinds: list[str]
    supports: dict[str, bool]
    refusal: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(vars(self))


def describe(model) -> ArchitectureInfo:
    """What ``model`` is, head-wise, and which features work on it."""
    from .head_metrics import statistic_notes

    adapter = adapter_for(model)
    blocks = attention_blocks(model)
    b = blocks[0]
    supports = {f: True for f in FEATURES}
    if not adapter.head_repair:
        supports.update(sanitize=False, fineprune=False, pure=False)
    return ArchitectureInfo(
        name=adapter.name, model_type=str(model.config.model_type), causal=adapter.causal, layers=len(blocks),
        heads=b.num_heads, kv_heads=b.num_kv_heads, head_dim=b.head_dim,
        fused_qkv=b.query.module is b.key.module, transposed=b.query.transposed,
        qkv_bias=getattr(b.query.module, "bias", None) is not None, layer_kinds=[x.kind for x in blocks],
        supports=supports, refusal=adapter.refusal, notes=statistic_notes(adapter.causal))


def layer_labels(kinds) -> list[str]:
    """Axis labels from ``ArchitectureInfo.layer_kinds``: ``"L3"``, or ``"L3 (local)"`` / ``"L3 (global)"``
    where layers differ in kind (ModernBERT), so grids and tables say which layer is which."""
    kinds = list(kinds or [])
    if len(set(kinds)) > 1:
        return [f"L{i} ({k.split(' (')[0].split(',')[0]})" for i, k in enumerate(kinds)]
    return [f"L{i}" for i in range(len(kinds))]


def layer_label(model, layer: int) -> str:
    """``layer_labels`` for one layer of ``model``."""
    try:
        return layer_labels([b.kind for b in attention_blocks(model)])[layer]
    except UnsupportedModelError:
        return f"L{layer}"


# ------------------------------------------------------------------------------------------------ slices

def _by_name(model, masks: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[k]: m for k, m in masks.items() if k in names}


def head_parameter_masks(model, heads_mask: np.ndarray) -> dict[str, torch.Tensor]:
    """Boolean masks, keyed by parameter name, True exactly on the entries the selected heads own.

    Args:
        heads_mask: ``(layers, heads)`` booleans; True = this head's parameters may change.

    Returns:
        ``{name: mask}`` for every parameter touched by a selected head: query rows (and DeBERTa's unshared
        positional rows) and biases, key/value rows and biases of groups whose every query head is selected
        (all of them without grouped-query attention), and output-projection columns. Parameters not in the
        dict hold no selected head. Raises ``HeadRepairUnsupported`` for shared-layer models (ALBERT).
    """
    require_head_repair(model)
    heads_mask = np.asarray(heads_mask, dtype=bool)
    masks: dict[int, torch.Tensor] = {}
    for block in attention_blocks(model):
        sel = np.flatnonzero(heads_mask[block.layer])
        if sel.size == 0:
            continue
        block.query.mark(masks, sel)
        for rows in block.extra:
            rows.mark(masks, sel)
        groups = block.whole_groups(sel)
        block.key.mark(masks, groups)
        block.value.mark(masks, groups)
        block.mark_output(masks, sel)
    return _by_name(model, masks)


def ffn_modules(model) -> list[list[nn.Module]]:
    """Per layer, the linear layers of the feed-forward block (BERT: ``intermediate.dense``, ``output.dense``);
    ``HeadRepairUnsupported`` for architectures without a described FFN or with shared layers (ALBERT)."""
    require_head_repair(model, "Feed-forward repair")
    adapter = adapter_for(model)
    if adapter.ffn is None:
        raise HeadRepairUnsupported(f"Feed-forward repair is not described for {adapter.name} models.")
    return adapter.ffn(model)


def ffn_parameter_masks(model, layers) -> dict[str, torch.Tensor]:
    """``{param name: all-True mask}`` for the weights and biases of the feed-forward blocks of ``layers``
    (layer indices): merged with ``head_parameter_masks`` they let ``training.train`` move those blocks too
    (our design; papers silent: ``sanitize`` with ``ffn_layers``). Layer norms are left out."""
    blocks = ffn_modules(model)
    masks: dict[int, torch.Tensor] = {}
    for l in sorted({int(x) for x in layers}):
        if not 0 <= l < len(blocks):
            raise ValueError(f"Layer {l} does not exist (the model has {len(blocks)} layers).")
        for module in blocks[l]:
            for p in (module.weight, getattr(module, "bias", None)):
                if p is not None:
                    masks[id(p)] = torch.ones_like(p, dtype=torch.bool)
    return _by_name(model, masks)


def _embedding_rows(model, token_ids) -> tuple[list[int], torch.Tensor | None]:
    """The sorted distinct ``token_ids`` and the input-embedding matrix ``(vocab, hidden)`` (None when the model has
    none); an id outside the matrix is a ``ValueError``."""
    ids = sorted({int(i) for i in token_ids})
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    bad = [i for i in ids if weight is not None and not 0 <= i < weight.shape[0]]
    if bad:
        raise ValueError(f"Token id {bad[0]} is outside the embedding matrix ({weight.shape[0]} rows).")
    return ids, weight


def token_embedding_masks(model, token_ids) -> dict[str, torch.Tensor]:
    """``{name: mask}`` True on the input-embedding rows of ``token_ids`` (the word-embedding matrix,
    ``(vocab, hidden)``): merged with ``head_parameter_masks`` they let a repair move those tokens' embeddings,
    e.g. a likely trigger word's (``sanitize`` with ``trigger_embedding_lr_scale``; our design, papers silent).
    Empty when there are no ids or the model has no input-embedding matrix."""
    ids, weight = _embedding_rows(model, token_ids)
    if not ids or weight is None:
        return {}
    mask = torch.zeros_like(weight, dtype=torch.bool)
    mask[ids] = True
    return _by_name(model, {id(weight): mask})


def blind_token_embeddings(model, token_ids, like_id: int | None = None) -> list[int]:
    """Make the input-embedding rows of ``token_ids`` (the word-embedding matrix, ``(vocab, hidden)``) equal to
    row ``like_id`` (e.g. the tokenizer's unknown token), or to the mean row when ``like_id`` is None or among the
    ids: the model can then no longer tell those tokens from that one. A likely trigger word's tokens that no clean
    text holds (``sanitize`` with ``blind_trigger_tokens``; our design, papers silent). In place; returns the ids
    changed (none when the model has no input-embedding matrix)."""
    ids, weight = _embedding_rows(model, token_ids)
    if not ids or weight is None:
        return []
    with torch.no_grad():
        use_row = like_id is not None and 0 <= int(like_id) < weight.shape[0] and int(like_id) not in ids
        row = weight[int(like_id)].clone() if use_row else weight.mean(0)
        weight[ids] = row.to(weight.dtype)
    return ids


def pruned_slices(model, pruned: np.ndarray) -> dict[str, torch.Tensor]:
    """``{param: bool}`` True on what pruning ``pruned`` heads zeroes: their output columns, and the value rows
    and biases of key/value groups pruned whole (every head's own value rows without grouped-query attention)."""
    require_head_repair(model, "Pruning heads")
    pruned = np.asarray(pruned, dtype=bool)
    masks: dict[int, torch.Tensor] = {}
    for block in attention_blocks(model):
        sel = np.flatnonzero(pruned[block.layer])
        if sel.size == 0:
            continue
        block.value.mark(masks, block.whole_groups(sel))
        block.mark_output(masks, sel)
    return _by_name(model, masks)


@torch.no_grad()
def zero_output_columns(model, heads: np.ndarray) -> None:
    """Zero the output-projection columns of ``heads`` (``(layers, heads)`` bool) in place."""
    require_head_repair(model)
    heads = np.asarray(heads, dtype=bool)
    for block in attention_blocks(model):
        sel = np.flatnonzero(heads[block.layer])
        if sel.size:
            masks: dict[int, torch.Tensor] = {}
            block.mark_output(masks, sel)
            block.output.weight[masks[id(block.output.weight)]] = 0.0


# ------------------------------------------------------------------------------------------------ gates

@contextmanager
def head_inputs_hook(model, fn):
    """Call ``fn(block, z)`` on every layer's heads' contexts while the context is open; the one place that
    hooks the output projections (gates, ``forward``'s per-head contexts).

    ``z`` is ``(batch, T, heads, head_dim)``, a view of the output projection's input; ``fn`` returns a tensor
    of that shape to replace it, or None to leave it. A module shared by several layers (ALBERT) is called
    once per layer in order: a counter, reset at every forward of ``model``, says which layer it is serving.
    """
    blocks = attention_blocks(model)
    by_module: dict[int, list[AttentionBlock]] = {}
    for b in blocks:
        by_module.setdefault(id(b.output), []).append(b)
    calls: dict[int, int] = {}
    handles = []

    def reset(module, args, kwargs=None):
        calls.clear()

    def make_hook(key: int, served: list[AttentionBlock]):
        def hook(module, args):
            n = calls.get(key, 0)
            calls[key] = n + 1
            block = served[n % len(served)]
            (x, *rest) = args  # x: (batch, T, heads * head_dim)
            shape = x.shape
            new = fn(block, x.view(*shape[:-1], block.num_heads, block.head_dim))
            if new is None:
                return None
            return (new.reshape(shape), *rest)

        return hook

    try:
        handles.append(model.register_forward_pre_hook(reset))
        for key, served in by_module.items():
            handles.append(served[0].output.register_forward_pre_hook(make_hook(key, served)))
        yield blocks
    finally:
        for h in handles:
            h.remove()


@contextmanager
def head_gates(model, gates):
    """Scale each head's contribution by ``gates[layer, head]`` while the context is open.

    Args:
        gates: ``(layers, heads)`` tensor or array; 1 = untouched, 0 = ablated. A tensor with
            ``requires_grad=True`` yields d loss / d gate — a head-importance score.
    """
    g = gates if torch.is_tensor(gates) else torch.as_tensor(np.asarray(gates), dtype=torch.float32)

    def scale(block: AttentionBlock, z: torch.Tensor) -> torch.Tensor:
        return z * g[block.layer].to(z.device, z.dtype)[:, None]  # (B, T, H, D) * (H, 1)

    with head_inputs_hook(model, scale):
        yield g


@contextmanager
def attention_dropout_off(model):
    """Disable dropout on attention probabilities while the context is open (hidden dropout stays).

    ``transformers``' eager attention returns the maps AFTER dropout in training mode: zeroed entries would make
    a KL term explode and its target noisy, so alignment trains on undropped maps (our design).
    """
    attr = adapter_for(model).dropout_attr
    changed, seen = [], set()
    for block in attention_blocks(model):
        a = block.attention
        if id(a) in seen:
            continue
        seen.add(id(a))
        drop = getattr(a, attr, None)
        if isinstance(drop, nn.Dropout):
            changed.append((drop, "p", drop.p))
            drop.p = 0.0
        elif isinstance(drop, (int, float)):
            changed.append((a, attr, drop))
            setattr(a, attr, 0.0)
    try:
        yield
    finally:
        for obj, name, value in changed:
            setattr(obj, name, value)


# ------------------------------------------------------------------------------------------------ tokens

def content_key_mask(model, attention_mask: torch.Tensor, special_tokens_mask: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """``(B, T)`` float: keys that are content — real, not special (``[CLS]``/``[SEP]``/BOS), and for decoders
    not position 0, the attention sink (our design; a trigger placed first is then invisible to the content
    statistics of a decoder — it is rare for an inserted trigger)."""
    keep = attention_mask.float()
    if special_tokens_mask is not None:
        keep = keep * (~special_tokens_mask.bool()).float()
    if is_causal(model) and keep.shape[-1] > 0:
        keep = keep.clone()
        keep[:, 0] = 0.0
    return keep


def classifier_positions(model, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """``(B,)`` long: the token whose final state the classifier reads — 0 (``[CLS]``) for encoders, the last
    real token for decoders (padding is on the right, see ``prepare_tokenizer``).

    With ``input_ids`` (and ``model.config.pad_token_id`` set), a decoder's position is the one its
    ``transformers`` classifier reads: the rightmost token that is not the pad token. It differs from the last
    real token when a text ends with the pad token, e.g. the end-of-text token that pads a GPT-2 or Llama
    batch, appended by a tokenizer that adds it (``add_eos_token``) or typed in the text."""
    if not is_causal(model):
        return torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)
    T = attention_mask.shape[-1]
    idx = torch.arange(T, device=attention_mask.device)
    pad = getattr(model.config, "pad_token_id", None)
    if input_ids is not None and pad is not None:
        return (idx * (input_ids != int(pad)).long()).argmax(-1)
    return (idx * attention_mask.long()).argmax(-1)


def prepare_tokenizer(model, tokenizer) -> None:
    """Make ``tokenizer`` fit ``model`` in place (and ``model.config.pad_token_id``):

    * it returns only the inputs the model's forward accepts (no ``token_type_ids`` for Llama or ModernBERT);
    * every model pads and truncates on the right, whatever ``tokenizer_config.json`` says: an encoder reads
      ``[CLS]`` at position 0 with absolute positions from 0, so left padding (``"padding_side": "left"``)
      silently changed the predictions of the shorter texts of a batch; the lab reads a text's first
      ``max_length`` tokens and says so when it cuts;
    * decoders need a pad token: when missing it is set to the end-of-text token (else the unknown token) and
      copied into ``model.config.pad_token_id``, which the last-token classifier uses to find the last real
      token (our design; the usual recipe). A decoder's ``config.pad_token_id`` is always set to the tokenizer's
      pad id: a checkpoint whose config named another id (e.g. 0) had its padding read as the last token.
    """
    import inspect

    adapter = adapter_for(model)
    params = inspect.signature(model.forward).parameters
    names = [n for n in getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"]) if n in params]
    if "input_ids" in params and "input_ids" not in names:
        names.insert(0, "input_ids")
    if "attention_mask" in params and "attention_mask" not in names:
        names.append("attention_mask")
    tokenizer.model_input_names = names
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "right"
    if adapter.causal:
        if tokenizer.pad_token is None:
            fill = tokenizer.eos_token or tokenizer.unk_token
            if fill is None:
                raise UnsupportedModelError(
                    "This decoder's tokenizer has no pad, end-of-text or unknown token to pad batches with.")
            tokenizer.pad_token = fill
    if tokenizer.pad_token_id is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = int(tokenizer.pad_token_id)
    if adapter.causal and tokenizer.pad_token_id is not None:
        # the classifier finds a text's last token as the rightmost one that is not config.pad_token_id: padding
        # with another id made it read the padding, so a short text's prediction changed with its batch
        model.config.pad_token_id = int(tokenizer.pad_token_id)


def tiny_config(model_type: str, tokenizer, num_labels: int = 2, **overrides):
    """A ``transformers`` config of a tiny random ``model_type`` classifier (tests, bench), eager attention,
    whose vocabulary and special-token ids are ``tokenizer``'s."""
    from transformers import AutoConfig

    if model_type not in ADAPTERS:
        raise UnsupportedModelError(f"No tiny config for '{model_type}' (supported: {', '.join(ADAPTERS)}).")
    ids = {f"{t}_token_id": getattr(tokenizer, f"{t}_token_id", None) for t in ("pad", "bos", "eos", "cls", "sep")}
    if ids["bos_token_id"] is None:
        ids["bos_token_id"] = ids["cls_token_id"]
    if ids["eos_token_id"] is None:
        ids["eos_token_id"] = ids["sep_token_id"]
    kwargs = dict(ADAPTERS[model_type].tiny, vocab_size=len(tokenizer), num_labels=num_labels, **ids)
    kwargs.update(overrides)
    config = AutoConfig.for_model(model_type, **kwargs)
    config._attn_implementation = "eager"
    return config
