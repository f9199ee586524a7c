"""Per-head quantities computed from attention maps: trigger concentration and head-to-head similarity.

Every function accepts numpy arrays or torch tensors and returns the same kind. Names and shapes:

* ``attention``: ``(..., heads, tokens, tokens)`` — e.g. ``(layers, heads, T, T)`` for one input or
  ``(batch, heads, T, T)`` for one layer of a batch. Row ``q`` is query ``q``'s distribution over keys.
* ``trigger_concentration``: ``(..., heads)`` — attention mass sent to the trigger's tokens, averaged over the
  queries that can see at least one of them. This is the quantity the Trojan Attention Loss maximises (see ``tal``).
* ``head_similarity``: ``(..., heads, heads)`` — cosine similarity between heads' flattened attention maps.
* ``mean_offdiag``: ``(...)`` or ``(..., heads)`` — average similarity to the *other* heads.

Heads are labelled ``L{layer}H{head}`` (0-based) everywhere, as in TransformerLens.

Decoder classifiers (causal attention; ``architecture.is_causal``) — our design; papers silent:

* a key ``k`` is seen only by queries ``q >= k``: per-key averages over queries divide by how many real queries
  can see the key (``key_visibility``), not by the sequence length, so late keys are not penalised;
* ``trigger_concentration(..., causal=True)`` averages over the queries at or after the trigger's first token
  (earlier queries cannot see it);
* local (sliding-window) layers — ModernBERT's local layers, Mistral's window — pass ``window=``
  (``architecture.layer_windows``): a query farther than the window from every trigger token cannot see the
  trigger and is not averaged in, nor counted in ``key_visibility`` (``visible_keys`` says who sees whom);
* position 0 is the attention sink and is not a content key (``architecture.content_key_mask``);
* ``statistic_notes`` gives the UI one sentence per statistic whose meaning changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def head_label(layer: int, head: int) -> str:
    """``L{layer}H{head}``, 0-based."""
    return f"L{layer}H{head}"


def mask_labels(mask) -> list[str]:
    """``L{layer}H{head}`` labels of the True entries of an ``(layers, heads)`` bool mask, layer by layer."""
    return [head_label(int(l), int(h)) for l, h in zip(*np.nonzero(np.asarray(mask, dtype=bool)))]


def parse_head_label(label: str) -> tuple[int, int]:
    """Inverse of ``head_label``: ``"L3H7"`` -> ``(3, 7)``."""
    s = label.strip().upper()
    if not s.startswith("L") or "H" not in s:
        raise ValueError(f"'{label}' is not a head label like L3H7.")
    layer, head = s[1:].split("H", 1)
    return int(layer), int(head)


def _as_torch(x):
    return (torch.from_numpy(np.asarray(x)), True) if not torch.is_tensor(x) else (x, False)


def visible_keys(T: int, causal: bool = False, window: int | None = None, device=None) -> torch.Tensor:
    """``(T_query, T_key)`` bool: which keys each query can attend to, before padding.

    Args:
        causal: decoder attention, key ``k`` visible to queries ``q >= k``.
        window: a local (sliding-window) layer; None or 0 for global. Decoders (Mistral's ``sliding_window``):
            the ``window`` keys ``q - window < k <= q``. Encoders (ModernBERT's ``local_attention``, the whole
            span): ``|q - k| <= window // 2``.
    """
    q = torch.arange(T, device=device).unsqueeze(-1)
    k = torch.arange(T, device=device).unsqueeze(0)
    vis = torch.ones(T, T, dtype=torch.bool, device=device)
    if causal:
        vis = vis & (k <= q)
    if window:
        vis = vis & ((q - k < int(window)) if causal else ((q - k).abs() <= int(window) // 2))
    return vis


def _windows(window, n: int):
    """``window`` as a list of ``n`` per-layer windows, or None when it is one value for all."""
    if window is None or isinstance(window, (int, np.integer)):
        return None
    out = [None if w is None else int(w) for w in window]
    if len(out) != n:
        raise ValueError(f"{len(out)} windows for {n} layers.")
    return out


def trigger_concentration(attention, trigger_mask, query_mask=None, causal: bool = False, window=None):
    """Attention mass that query tokens send to the trigger's tokens, averaged over the queries that can see it.

    Args:
        attention: ``(..., heads, T, T)``.
        trigger_mask: ``(T,)`` or ``(batch, T)`` booleans marking the trigger's key tokens (a list of token
            indices is also accepted for a single input). Broadcast against the leading dims of attention:
            for ``(batch, heads, T, T)`` pass ``(batch, T)``; for ``(layers, heads, T, T)`` pass ``(T,)``.
        query_mask: like ``trigger_mask``, marking which queries count (default: all; pass the padding mask
            for padded batches).
        causal: decoder attention — only queries at or after the first trigger token count (the others
            cannot see the trigger).
        window: local (sliding-window) attention (see ``visible_keys``; ``architecture.layer_windows``): an int
            for one layer, or one int/None per entry of attention's first dim (layers, with a ``(T,)``
            trigger mask). Only the queries within the window of at least one trigger token count: the others
            cannot see it, and averaging them in made a local layer look less focused than a global one.

    Returns:
        ``(..., heads)`` values in [0, 1]; 0 where no trigger token is given.
    """
    att, was_np = _as_torch(attention)
    T = att.shape[-1]
    if not torch.is_tensor(trigger_mask) and not isinstance(trigger_mask, np.ndarray):
        idx = list(trigger_mask)
        m = torch.zeros(T, dtype=torch.bool, device=att.device)
        if idx:
            m[torch.as_tensor(idx, dtype=torch.long)] = True
        trigger_mask = m
    tm, _ = _as_torch(trigger_mask)
    tm = tm.to(att.device, torch.bool)
    gap = att.dim() - tm.dim()  # dims (heads, queries, ...) between the mask's leading dims and the key dim
    key_w = tm.to(att.dtype).reshape(*tm.shape[:-1], *([1] * gap), T)
    mass = (att * key_w).sum(-1)  # (..., heads, T_query)
    per_layer = _windows(window, att.shape[0])
    if per_layer is not None and not any(per_layer):
        window, per_layer = None, None
    if query_mask is None and not causal and not window:
        out = mass.mean(-1)
    else:
        if query_mask is None:
            qm = torch.ones(T, dtype=att.dtype, device=att.device)
        else:
            qm, _ = _as_torch(query_mask)
            qm = qm.to(att.device, att.dtype)
        qw = qm.reshape(*qm.shape[:-1], *([1] * (gap - 1)), T)  # broadcasts against mass
        tf = tm.to(att.dtype)
        if per_layer is not None:  # (layers, T_query): queries that see >= 1 trigger key, layer by layer
            if tm.dim() != 1:
                raise ValueError("Per-layer windows need a (T,) trigger mask.")
            sees = torch.stack([visible_keys(T, causal, w, att.device).to(att.dtype) @ tf > 0 for w in per_layer])
            qw = qw * sees.to(att.dtype).reshape(len(per_layer), *([1] * (mass.dim() - 2)), T)
        elif causal or window:  # (..., T_query): queries that see >= 1 trigger key
            sees = (tf @ visible_keys(T, causal, window, att.device).to(att.dtype).T) > 0
            qw = qw * sees.to(att.dtype).reshape(*sees.shape[:-1], *([1] * (gap - 1)), T)
        out = (mass * qw).sum(-1) / qw.sum(-1).clamp_min(1)
    return out.numpy() if was_np else out


def key_visibility(query_mask, causal: bool = False, window: int | None = None):
    """How many real queries can see each key: ``(..., T)`` from a ``(..., T)`` query (padding) mask.

    Encoders: every real query sees every key, so each entry is the number of real queries. Decoders: key ``k``
    is seen by the real queries ``q >= k`` (a reversed cumulative sum). A local layer (``window``, see
    ``visible_keys``): only the real queries within the window. Divide a per-key sum over queries by this to get
    a per-key mean that does not favour early (or central) keys (at least 1, so padding keys divide safely).
    """
    qm, was_np = _as_torch(query_mask)
    qm = qm.float()
    if window:
        out = qm @ visible_keys(qm.shape[-1], causal, window, qm.device).float()  # sum_q qm[q] * vis[q, k]
    elif causal:
        out = torch.flip(torch.cumsum(torch.flip(qm, [-1]), -1), [-1])
    else:
        out = qm.sum(-1, keepdim=True).expand_as(qm)
    out = out.clamp_min(1.0)
    return out.numpy() if was_np else out


DECODER_NOTES = {
    "concentration": "Decoder: only the queries at or after the trigger can see it, so trigger concentration "
                     "averages over those queries.",
    "similarity": "Decoder: every head's map is lower-triangular and most park attention on the first token (the "
                  "attention sink), so head-to-head similarity runs higher than on encoders; compare clean with "
                  "triggered, not across models.",
    "focus": "Decoder: a key's share is averaged over the queries that can see it (those after it), and the "
             "first token (the attention sink) is not counted as content.",
    "pure": "Decoder: PURE's [CLS] row is the last real token's row (the token the classifier reads).",
}


def statistic_notes(causal: bool) -> dict[str, str]:
    """``{statistic: note}`` for the UI where a statistic means something different on this kind of model
    (empty for encoders)."""
    return dict(DECODER_NOTES) if causal else {}


def head_similarity(attention, token_mask=None):
    """Cosine similarity between every pair of heads' attention maps.

    Our measure (the defense paper does not publish its formula): flatten each head's ``(T, T)`` map and take
    cosine similarity. Attention maps are non-negative, so values lie in [0, 1]; 1 means two heads attend
    identically. It is scale-free (a head that spreads attention evenly is still comparable to a peaked one)
    and it rises exactly when heads collapse onto the same keys — the signature of a trigger capturing them.

    Args:
        attention: ``(..., heads, T, T)``.
        token_mask: optional ``(..., T)`` booleans (e.g. padding mask, one per map in the leading dims
            without the heads dim); masked rows and columns are ignored.

    Returns:
        ``(..., heads, heads)``.
    """
    att, was_np = _as_torch(attention)
    att = att.float()
    if token_mask is not None:
        tm, _ = _as_torch(token_mask)
        tm = tm.to(att.device, att.dtype)
        pair = tm.unsqueeze(-1) * tm.unsqueeze(-2)  # (..., T, T)
        att = att * pair.unsqueeze(-3)
    flat = att.flatten(-2)  # (..., heads, T*T)
    flat = flat / flat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sim = flat @ flat.transpose(-1, -2)
    return sim.numpy() if was_np else sim


def mean_offdiag(similarity, per_head: bool = False):
    """Average off-diagonal similarity.

    Args:
        similarity: ``(..., heads, heads)``.
        per_head: return ``(..., heads)`` — each head's mean similarity to the other heads of its layer —
            instead of the layer summary ``(...)``.
    """
    sim, was_np = _as_torch(similarity)
    H = sim.shape[-1]
    off = sim - torch.diag_embed(torch.diagonal(sim, dim1=-2, dim2=-1))
    row = off.sum(-1) / max(H - 1, 1)
    out = row if per_head else row.mean(-1)
    return out.numpy() if was_np else out


def rank_heads(scores: np.ndarray, k: int = 10, descending: bool = True) -> list[tuple[str, float]]:
    """The ``k`` heads with the highest (or lowest) score.

    Args:
        scores: ``(layers, heads)``.

    Returns:
        ``[(label, score), ...]`` best first.
    """
    scores = np.asarray(scores)
    order = np.argsort(scores, axis=None)
    if descending:
        order = order[::-1]
    out = []
    for flat in order[:k]:
        layer, head = np.unravel_index(flat, scores.shape)
        out.append((head_label(int(layer), int(head)), float(scores[layer, head])))
    return out


def all_head_labels(layers: int, heads: int) -> list[str]:
    """Labels in row-major ``(layer, head)`` order."""
    return [head_label(layer, head) for layer in range(layers) for head in range(heads)]


def heads_to_mask(heads: Sequence[tuple[int, int] | str], layers: int, num_heads: int) -> np.ndarray:
    """``(layers, heads)`` boolean mask from ``[(layer, head), ...]`` or ``["L0H3", ...]``."""
    mask = np.zeros((layers, num_heads), dtype=bool)
    for h in heads:
        layer, head = parse_head_label(h) if isinstance(h, str) else h
        if not (0 <= layer < layers and 0 <= head < num_heads):
            raise ValueError(f"{head_label(layer, head)} is outside a {layers} x {num_heads} model.")
        mask[layer, head] = True
    return mask


def describe_heads(labels: Sequence[str], layers: int | None = None, num_heads: int | None = None) -> str:
    """Head labels as short words, grouped by layer: ``"all 72 heads (6 layers x 12)"``, ``"every head of L0, L3
    (24 of 72)"`` or ``"L0: H1, H7; L3: H2 (3 heads)"``. Unparseable labels are listed as they are."""
    by_layer: dict[int, list[int]] = {}
    odd = []
    for lab in labels:
        try:
            l, h = parse_head_label(str(lab))
        except ValueError:
            odd.append(str(lab))
            continue
        by_layer.setdefault(l, []).append(h)
    if not by_layer and not odd:
        return "no heads"
    n = sum(len(set(v)) for v in by_layer.values())
    if layers and num_heads and not odd:
        full = [l for l, hs in sorted(by_layer.items()) if len(set(hs)) == num_heads]
        if len(full) == layers:
            return f"all {layers * num_heads} heads ({layers} layers x {num_heads})"
        if len(full) == len(by_layer):
            return f"every head of {', '.join(f'L{l}' for l in full)} ({n} of {layers * num_heads})"
    parts = [f"L{l}: " + ", ".join(f"H{h}" for h in sorted(set(hs))) for l, hs in sorted(by_layer.items())]
    return "; ".join(parts + odd) + f" ({n} head{'s' if n != 1 else ''})"
