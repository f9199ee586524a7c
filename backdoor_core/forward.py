"""The one batched forward pass that every view, detector, defense and baseline uses (TransformerLens
``run_with_cache``-style): ``run_with_cache(model, tokenizer, inputs, ...) -> ForwardCache``.

What it owns, so callers do not repeat it:

* tokenization (padding to the longest input of a batch, truncation to ``max_length`` always on);
* batching, sorted by input length (less padding), results returned in INPUT order;
* eval mode for the pass and the caller's training mode restored afterwards, ``torch.no_grad`` unless
  ``grad=True`` (e.g. d margin / d head gate);
* the hooks it registers (per-head contexts ``"z"``) are removed when it returns, also on error or cancel;
* cancellation (``should_stop()`` between batches raises ``Cancelled``; inside a ``stopping(should_stop)`` block
  every pass checks it, for stages whose code takes no ``should_stop``) and progress (``progress(done, total)``).

Shapes (TransformerLens names: ``N`` inputs, ``B`` a batch, ``T`` padded tokens, ``n`` one input's real tokens,
``L`` layers, ``H`` heads, ``D`` head size, ``C`` classes):

* ``ForwardCache.logits`` / ``probs``: ``(N, C)`` float32.
* ``ForwardCache.attentions[i]``: ``(L, H, n, n)`` float32, padding removed; row ``q`` is query ``q``'s
  distribution over keys.
* ``ForwardCache.hidden_states[i]``: ``(L + 1, n, hidden)`` (embeddings, then each layer's output).
* ``ForwardCache.z[i]``: ``(L, n, H, D)`` each head's context vector (TransformerLens ``hook_z``): the slice of
  the attention output projection's input that the head owns (``architecture.attention_blocks``).
* ``ForwardCache.input_ids[i]`` ``(n,)``; ``offsets[i]`` ``(n, 2)`` character spans (``(0, 0)`` for special
  tokens), ``tokens[i]`` word pieces and ``truncated`` ``(N,)`` when ``"offsets"`` is wanted.

Memory stays bounded on a big pool: per-input maps are kept only when asked for (``want``); a ``reduce``
callback sees each batch's tensors (``ForwardBatch``) and keeps small statistics instead, e.g.
``detection.attention_stats`` turns ``(B, H, T, T)`` maps into ``(B, L, H)`` numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .jobs import JobCancelled

WANTS = ("logits", "attentions", "hidden_states", "z", "offsets")


class Cancelled(RuntimeError, JobCancelled):
    """``should_stop()`` returned True between batches; nothing was half-applied. A ``jobs.JobCancelled`` too: a
    background job (the app's scan, sanitization, ...) that a forward pass stops ends as cancelled, not failed."""


def stop_if(should_stop) -> None:
    """Raise ``Cancelled`` when ``should_stop()`` says so: the check a multi-stage job (a repair's scan, word
    search, judge and label rules before it trains) makes between its stages, as the forward loop does between
    batches, so that Cancel ends it within a stage, not minutes later."""
    if should_stop is not None and should_stop():
        raise Cancelled("cancelled")


# the should_stop of the innermost ``stopping`` block (per thread / context): checked by every forward pass in it
_SCOPE_STOP: ContextVar[Callable[[], bool] | None] = ContextVar("forward_scope_stop", default=None)


@contextmanager
def stopping(should_stop):
    """Inside the block every ``run_with_cache`` also checks ``should_stop`` before each batch (``stop_if``), as
    if it had been passed to it: for a stage whose forward passes run in code that takes no ``should_stop`` of its
    own (the repair's pseudo-label judge: ``reference.judge_probs`` embeds the clean and pool texts with the
    pretrained encoder), so that Cancel ends it at its next batch. ``None`` changes nothing; inside another block
    both checks hold."""
    if should_stop is None:
        yield
        return
    outer = _SCOPE_STOP.get()
    token = _SCOPE_STOP.set(should_stop if outer is None else (lambda: should_stop() or outer()))
    try:
        yield
    finally:
        _SCOPE_STOP.reset(token)


def stoppable(fn: Callable, should_stop) -> Callable:
    """``fn`` run inside ``stopping(should_stop)`` (a lazily called stage, e.g. the repair's judge)."""
    if should_stop is None:
        return fn

    def run(*args, **kwargs):
        with stopping(should_stop):
            return fn(*args, **kwargs)
    return run


@dataclass
class ForwardBatch:
    """One batch as a ``reduce`` callback sees it (tensors on the model's device, padded to ``T``).

    Attributes:
        index: ``(B,)`` positions of the batch's inputs in the caller's ``inputs``.
        input_ids, attention_mask: ``(B, T)``; ``attention_mask`` 1 on real tokens (padding is on the right).
        special_tokens_mask: ``(B, T)`` bool, True on the tokenizer's added special tokens (``[CLS]``, ``[SEP]``).
        logits: ``(B, C)`` (with grad when ``grad=True``).
        attentions: ``L`` tensors ``(B, H, T, T)`` when ``"attentions"`` is wanted or ``reduce`` is given.
        hidden_states: ``L + 1`` tensors ``(B, T, hidden)`` when wanted (or ``reduce_hidden``).
        z: ``L`` tensors ``(B, T, H, D)`` when wanted.
        outputs: the model's raw output object.
    """

    index: np.ndarray
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    special_tokens_mask: torch.Tensor
    logits: torch.Tensor
    attentions: tuple | None
    hidden_states: tuple | None
    z: list | None
    outputs: Any

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class ForwardCache:
    """What ``run_with_cache`` returns, in input order (see the module docstring for the shapes).

    ``reduced`` holds what ``reduce`` returned, by name: an array ``(N, ...)`` where the callback returned a
    tensor/array with a leading batch dimension, a list of ``N`` per-input objects where it returned a list.
    """

    logits: np.ndarray
    probs: np.ndarray
    lengths: np.ndarray
    input_ids: list[np.ndarray]
    attentions: list[np.ndarray] | None = None
    hidden_states: list[np.ndarray] | None = None
    z: list[np.ndarray] | None = None
    offsets: list[np.ndarray] | None = None
    tokens: list[list[str]] | None = None
    truncated: np.ndarray | None = None
    reduced: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def predictions(self) -> np.ndarray:
        """``(N,)`` argmax class."""
        return self.logits.argmax(-1)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def eval_mode(model):
    """Put ``model`` in eval mode while the context is open; restore its previous training mode after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


@contextmanager
def _capture_z(model, store: list):
    """Forward pre-hooks on each layer's attention output projection that keep its input as ``(B, T, H, D)``
    in ``store[layer]`` (the heads' contexts); removed on exit."""
    from .architecture import attention_blocks, head_inputs_hook

    store[:] = [None] * len(attention_blocks(model))

    def keep(block, z):  # z: (B, T, H, D)
        store[block.layer] = z

    with head_inputs_hook(model, keep):
        yield store


CHARS_PER_TOKEN_CAP = 128  # a text is cut to max_length * this many characters before tokenizing (our design)


class NonFiniteOutputError(ValueError):
    """The model's outputs hold NaN or Inf: no prediction or attention from it means anything."""


def check_finite(values: torch.Tensor, what: str = "logits") -> torch.Tensor:
    """``values`` unchanged, or ``NonFiniteOutputError`` (one line) when any entry is NaN or Inf."""
    if not bool(torch.isfinite(values).all()):
        raise NonFiniteOutputError(
            f"The model produced NaN/Inf {what}: its weights are broken (or overflow on this input), so no "
            "prediction or attention map from it means anything."
        )
    return values


def clip_text(text: str, max_length: int) -> str:
    """The part of ``text`` the model can read: at most ``max_length * CHARS_PER_TOKEN_CAP`` characters.

    Tokenizers encode the WHOLE string before truncating, so a 100 MB line would cost gigabytes; a word piece
    covers at least one character, so the first ``max_length`` tokens lie in this prefix unless the text hides
    them behind long runs of spaces (our design; issue 11).
    """
    limit = max(1, int(max_length)) * CHARS_PER_TOKEN_CAP
    return text if len(text) <= limit else text[:limit]


def _encode(tokenizer, chunk: list, max_length: int, offsets: bool) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
    """Tokenize (texts, ``clip_text``-ed) or pad (token id lists) one batch; returns (model inputs, special mask,
    offsets)."""
    if isinstance(chunk[0], str):
        chunk = [clip_text(t, max_length) for t in chunk]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                        return_special_tokens_mask=True, return_offsets_mapping=offsets)
        special = enc.pop("special_tokens_mask").bool()
        offs = enc.pop("offset_mapping") if offsets else None
        return dict(enc), special, offs
    seqs = [list(map(int, ids))[:max_length] for ids in chunk]
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id or 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    special = torch.isin(ids, torch.as_tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)) & mask.bool()
    return {"input_ids": ids, "attention_mask": mask}, special, None


def run_with_cache(
    model,
    tokenizer,
    inputs: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_length: int,
    batch_size: int = 32,
    want: Sequence[str] = ("logits",),
    reduce: Callable[[ForwardBatch], dict[str, Any]] | None = None,
    reduce_hidden: bool = False,
    reduce_attentions: bool = True,
    grad: bool = False,
    sort_by_length: bool = True,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ForwardCache:
    """Forward ``inputs`` through ``model`` in batches and cache what is asked for (see the module docstring).

    Args:
        inputs: texts, or token id sequences (already tokenized, e.g. a text with some tokens dropped; padded
            here, cut at ``max_length``; special tokens are the tokenizer's ``all_special_ids``).
        max_length: tokens read per input (truncation is always on).
        want: any of ``WANTS``: ``"attentions"``, ``"hidden_states"`` and ``"z"`` keep per-input arrays (memory
            grows with ``N``: prefer ``reduce`` on big pools); ``"offsets"`` adds ``offsets``, ``tokens`` and
            ``truncated`` (texts only). Logits, probabilities, token ids and lengths are always returned.
        reduce: ``reduce(batch) -> {name: value}`` called on every batch; each value has one entry per input of
            the batch (a ``(B, ...)`` tensor/array, or a list of ``B`` objects). Attention maps are computed
            for it; they are kept only when ``"attentions"`` is wanted.
        reduce_hidden: also compute the hidden states for ``reduce`` (``ForwardBatch.hidden_states``) without
            keeping them per input (e.g. ``detection`` keeps only the ``[CLS]`` rows).
        reduce_attentions: hand ``reduce`` the attention maps (False: ``ForwardBatch.attentions`` is None, for a
            reducer that reads only hidden states, e.g. ``representations.cls_representations``).
        grad: run with autograd on (for gradients taken inside ``reduce``).
        sort_by_length: batch inputs of similar length together (less padding); results stay in input order.
        device: where the inputs go (default: the model's device).
        progress: ``progress(done, total)`` after each batch.
        should_stop: checked before each batch; True raises ``Cancelled``.

    Raises:
        RuntimeError: attentions were needed but the model returned none (load it with
            ``attn_implementation="eager"``, as ``models.load_model`` does).
    """
    want = tuple(want)
    bad = [w for w in want if w not in WANTS]
    if bad:
        raise ValueError(f"want must be some of {', '.join(WANTS)}, got {bad}.")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    items = list(inputs)
    n = len(items)
    n_labels = int(model.config.num_labels)
    keep_att, keep_hidden, keep_z = "attentions" in want, "hidden_states" in want, "z" in want
    need_hidden = keep_hidden or (reduce is not None and reduce_hidden)
    with_offsets = "offsets" in want
    if with_offsets and items and not isinstance(items[0], str):
        raise ValueError("offsets need texts, not token ids.")
    need_att = keep_att or (reduce is not None and reduce_attentions)
    device = torch.device(device) if device is not None else model_device(model)
    order = sorted(range(n), key=lambda i: len(items[i])) if sort_by_length else list(range(n))

    logits = np.zeros((n, n_labels), dtype=np.float32)
    probs = np.zeros((n, n_labels), dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    ids_out: list = [None] * n
    att_out: list | None = [None] * n if keep_att else None
    hid_out: list | None = [None] * n if keep_hidden else None
    z_out: list | None = [None] * n if keep_z else None
    off_out: list | None = [None] * n if with_offsets else None
    tok_out: list | None = [None] * n if with_offsets else None
    truncated = np.zeros(n, dtype=bool) if with_offsets else None
    reduced: dict[str, Any] = {}

    def put(name: str, idx: np.ndarray, value) -> None:
        if isinstance(value, list):
            slot = reduced.setdefault(name, [None] * n)
            for j, v in zip(idx, value):
                slot[j] = v
            return
        value = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
        if name not in reduced:
            reduced[name] = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
        reduced[name][idx] = value

    z_store: list = []
    grad_ctx = torch.enable_grad() if grad else torch.no_grad()
    with eval_mode(model), grad_ctx, (_capture_z(model, z_store) if keep_z else nullcontext()):
        for start in range(0, n, batch_size):
            stop_if(should_stop)
            stop_if(_SCOPE_STOP.get())  # a ``stopping`` block's check (None outside one)
            idx = np.asarray(order[start : start + batch_size], dtype=np.int64)
            chunk = [items[i] for i in idx]
            enc, special, offs = _encode(tokenizer, chunk, max_length, with_offsets)
            enc = {k: v.to(device) for k, v in enc.items()}
            special = special.to(device)
            out = model(**enc, output_attentions=need_att, output_hidden_states=need_hidden)
            if need_att and (not out.attentions or out.attentions[0] is None):
                raise RuntimeError("The model returned no attentions: load it with attn_implementation='eager'.")
            batch_logits = out.logits
            check_finite(batch_logits.detach().float())
            logits[idx] = batch_logits.detach().float().cpu().numpy()
            probs[idx] = torch.softmax(batch_logits.detach().float(), dim=-1).cpu().numpy()
            mask = enc["attention_mask"]
            lengths[idx] = mask.sum(-1).cpu().numpy()
            if reduce is not None:
                batch = ForwardBatch(idx, enc["input_ids"], mask, special, batch_logits,
                                     out.attentions if need_att else None,
                                     out.hidden_states if need_hidden else None,
                                     list(z_store) if keep_z else None, out)
                for name, value in reduce(batch).items():
                    put(name, idx, value)
            mask_np = mask.cpu().numpy().astype(bool)
            ids_np = enc["input_ids"].cpu().numpy()
            att = torch.stack(out.attentions, dim=1).detach().float().cpu().numpy() if keep_att else None
            hid = torch.stack(out.hidden_states, dim=1).detach().float().cpu().numpy() if keep_hidden else None
            zz = torch.stack(z_store, dim=1).detach().float().cpu().numpy() if keep_z else None  # (B, L, T, H, D)
            for b, i in enumerate(idx):
                keep = np.flatnonzero(mask_np[b])
                ids_out[i] = ids_np[b, keep]
                if att is not None:
                    att_out[i] = att[b][:, :, keep][:, :, :, keep]  # (L, H, n, n)
                if hid is not None:
                    hid_out[i] = hid[b][:, keep]  # (L + 1, n, hidden)
                if zz is not None:
                    z_out[i] = zz[b][:, keep]  # (L, n, H, D)
                if with_offsets:
                    off_out[i] = offs[b].numpy()[keep].astype(np.int64)
                    tok_out[i] = tokenizer.convert_ids_to_tokens(ids_np[b, keep].tolist())
            if with_offsets:
                # one token past max_length tells whether the text was cut, without tokenizing a huge text whole
                full = tokenizer([clip_text(t, max_length + 1) for t in chunk], truncation=True,
                                 max_length=max_length + 1)["input_ids"]
                truncated[idx] = [len(f) > max_length for f in full]
            if progress is not None:
                progress(min(start + batch_size, n), n)
    return ForwardCache(logits=logits, probs=probs, lengths=lengths, input_ids=ids_out, attentions=att_out,
                        hidden_states=hid_out, z=z_out, offsets=off_out, tokens=tok_out, truncated=truncated,
                        reduced=reduced)


def predict(model, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Class probabilities ``(len(texts), C)`` (no attention maps: the fast path for metrics)."""
    return run_with_cache(model, tokenizer, [str(t) for t in texts], max_length=max_length,
                          batch_size=batch_size).probs
