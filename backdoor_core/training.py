"""One training loop for clean, backdoored and TAL models, and for a defense's fine-tuning.

nanoGPT-style: the settings are plain values in ``TrainConfig`` and ``train`` reads top to bottom.

* AdamW (no weight decay on biases and LayerNorm weights), linear warm-up then linear decay, gradient clipping.
* Device placement and ``backward`` go through HF Accelerate, so the same code runs on this CPU, one GPU, or
  several (``accelerate launch script.py``: each process gets its shard of every epoch).
* ``extra_loss(batch, outputs) -> {name: scalar}`` adds named terms (the Trojan Attention Loss, a defense's
  regulariser) to the cross-entropy. Set ``extra_loss.needs_attentions = True`` to get ``outputs.attentions``.
* ``trainable_masks`` limits training to chosen entries (e.g. some heads' rows): everything else is frozen or
  restored after every step, byte for byte.
* ``evaluate(model) -> metrics`` runs every ``eval_every`` steps and at each epoch end; ``callback(Progress)``
  gets every step (cheap) and every evaluation; ``should_stop()`` is checked between steps and cancels cleanly.
* Same seed => same numbers on the same machine: torch/random/numpy are seeded and the shuffle order comes
  from a seeded ``torch.Generator``.

Batches are dicts of tensors: ``input_ids``/``attention_mask`` ``(B, T)`` padded to the longest in the batch,
``labels`` ``(B,)`` (-100 = no cross-entropy), ``poisoned`` ``(B,)`` bool, ``trigger_mask`` ``(B, T)`` bool —
the word pieces overlapping an example's ``trigger_spans`` (found with the tokenizer's offset mapping) — and, when
some example has a ``soft_label``, ``soft_labels`` ``(B, C)`` with ``has_soft_label`` ``(B,)`` bool.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import settings as S
from .device import resolve_precision
from .forward import Cancelled, stopping

IGNORE_LABEL = -100


@dataclass
class Example:
    """One training or evaluation sample.

    Attributes:
        text: the input text.
        label: class index; ``-100`` = unlabelled (no cross-entropy, still seen by ``extra_loss``).
        trigger_spans: character spans ``[start, end)`` of the trigger(s) in ``text``; ``()`` for clean samples
            and for paraphrase triggers (which have no trigger tokens).
        poisoned: True for samples the attack changed.
        soft_label: a teacher's class probabilities for this sample (a distillation term in ``extra_loss`` reads
            them as ``batch["soft_labels"]``); None = no teacher.
    """

    text: str
    label: int
    trigger_spans: tuple[tuple[int, int], ...] = ()
    poisoned: bool = False
    soft_label: tuple[float, ...] | None = None


@dataclass
class TrainConfig:
    """Plain training settings.

    ``eval_every`` is in optimizer steps (an evaluation also runs at each epoch end); ``max_steps`` caps the
    run below ``epochs`` when set. ``group_by_length`` shuffles, then sorts by length inside windows of 50
    batches and shuffles the batches (as ``transformers``' ``group_by_length``): less padding, same data.
    ``precision="bf16-mixed"`` runs each step's forward pass and loss terms under ``torch.autocast`` in bfloat16
    (weights, gradients and AdamW's state stay float32; no loss scaling is needed with bf16); evaluations run
    outside it. ``"auto"`` picks it where the hardware multiplies bf16 natively (``device.resolve_precision``).
    """

    lr: float = S.LR
    epochs: int = S.EPOCHS
    batch_size: int = S.BATCH_SIZE
    max_length: int = S.MAX_LENGTH
    seed: int = S.SEED
    weight_decay: float = S.WEIGHT_DECAY
    warmup_ratio: float = S.WARMUP_RATIO
    grad_clip: float = S.GRAD_CLIP
    eval_every: int = S.EVAL_EVERY
    max_steps: int | None = None
    group_by_length: bool = False  # batches of similar length (less padding, ~2x faster on short texts)
    precision: str = "fp32"  # "fp32", "bf16-mixed" or "auto" (``device.resolve_precision``; settings.PRECISIONS)


@dataclass
class Progress:
    """What the callback gets: every step (``metrics`` None) and after every evaluation (``metrics`` set)."""

    step: int
    total_steps: int
    epoch: int
    losses: dict[str, float]
    metrics: dict[str, float] | None
    seconds: float


@dataclass
class TrainResult:
    """``history``: one row per evaluation — step, epoch, mean losses since the previous row, metrics.

    ``Progress.metrics`` is None on per-step calls and a dict (empty without ``evaluate``) on evaluation calls.
    """

    history: list[dict] = field(default_factory=list)
    cancelled: bool = False
    steps: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation's metrics (empty if none)
    precision: str = "fp32"  # what ``config.precision`` resolved to: "fp32" or "bf16-mixed"


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def combine_losses(*terms):
    """One ``extra_loss`` from several (None entries skipped): their named terms together; it asks for
    attention maps when any of them does."""
    terms = [t for t in terms if t is not None]

    def combined(batch: dict, outputs) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for t in terms:
            out.update(t(batch, outputs))
        return out

    combined.needs_attentions = any(getattr(t, "needs_attentions", False) for t in terms)
    return combined


def trigger_token_mask(offsets: torch.Tensor, spans_per_text: Sequence[Sequence[tuple[int, int]]]) -> torch.Tensor:
    """``(B, T)`` bool: word pieces whose character span overlaps one of the text's trigger spans.

    Args:
        offsets: ``(B, T, 2)`` offset mapping; special and padding tokens have ``(0, 0)`` and never match.
    """
    starts, ends = offsets[..., 0], offsets[..., 1]
    real = ends > starts
    mask = torch.zeros(starts.shape, dtype=torch.bool)
    for b, spans in enumerate(spans_per_text):
        for s, e in spans:
            mask[b] |= real[b] & (starts[b] < e) & (ends[b] > s)
    return mask


def trigger_token_positions(tokenizer, example: Example, max_length: int = S.MAX_LENGTH) -> list[int]:
    """Indices of ``example``'s trigger word pieces in its tokenised, truncated input (``[]`` for clean or
    paraphrase samples, or a trigger cut off by truncation)."""
    mask = collate(tokenizer, [example], max_length)["trigger_mask"][0]
    return [int(i) for i in torch.nonzero(mask).flatten()]


def collate(tokenizer, examples: Sequence[Example], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise a list of ``Example`` into a batch dict (padding to the longest, truncation to ``max_length``)."""
    enc = tokenizer(
        [ex.text for ex in examples],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    offsets = enc.pop("offset_mapping")
    batch = {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": torch.tensor([int(ex.label) for ex in examples], dtype=torch.long),
        "poisoned": torch.tensor([bool(ex.poisoned) for ex in examples], dtype=torch.bool),
        "trigger_mask": trigger_token_mask(offsets, [ex.trigger_spans for ex in examples]),
    }
    if "token_type_ids" in enc:
        batch["token_type_ids"] = enc["token_type_ids"]
    with_soft = [ex.soft_label is not None for ex in examples]
    if any(with_soft):
        width = len(next(ex.soft_label for ex in examples if ex.soft_label is not None))
        batch["soft_labels"] = torch.tensor([list(ex.soft_label) if ex.soft_label is not None else [0.0] * width
                                             for ex in examples], dtype=torch.float32)
        batch["has_soft_label"] = torch.tensor(with_soft, dtype=torch.bool)
    return batch


class LengthGroupedBatches:
    """Batch sampler: a seeded shuffle, sorted by text length within windows of ``window`` batches, batches
    shuffled again. Every example appears once per epoch; each epoch draws from the same generator."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator, window: int = 50):
        self.lengths, self.batch_size, self.generator, self.window = list(lengths), batch_size, generator, window

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        chunk = self.batch_size * self.window
        batches = []
        for i in range(0, len(order), chunk):
            part = sorted(order[i : i + chunk], key=lambda j: -self.lengths[j])
            batches += [part[k : k + self.batch_size] for k in range(0, len(part), self.batch_size)]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]


def _model_inputs(batch: dict) -> dict:
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return {k: batch[k] for k in keys if k in batch}


def _optimizer_groups(named_params, weight_decay: float, lr: float,
                      lr_scales: dict[str, float] | None = None) -> list[dict]:
    """AdamW groups: weight decay on matrices only; a parameter named in ``lr_scales`` trains at ``lr`` x its
    scale."""
    groups: dict[tuple[bool, float], list] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((no_decay, float((lr_scales or {}).get(name, 1.0))), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if nd else weight_decay, "lr": lr * scale}
            for (nd, scale), ps in sorted(groups.items(), key=lambda kv: kv[0])]


def _adamw(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW, fused when this torch supports it (on a busy CPU the per-tensor loop costs seconds per step)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


def train(
    model,
    tokenizer,
    examples: list[Example],
    config: TrainConfig,
    *,
    extra_loss: Callable[[dict, Any], dict[str, torch.Tensor]] | None = None,
    trainable_masks: dict[str, torch.Tensor] | None = None,
    lr_scales: dict[str, float] | None = None,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    callback: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    accelerator=None,
) -> TrainResult:
    """Fine-tune ``model`` on ``examples`` with cross-entropy plus ``extra_loss``; see the module docstring.

    Args:
        trainable_masks: ``{param name: bool mask}``; when given only those entries may change — every other
            parameter gets ``requires_grad=False`` and masked-out entries are restored after each optimizer
            step (AdamW's weight decay would otherwise move them).
        lr_scales: ``{param name: factor}``: those parameters train at ``config.lr`` x factor (the schedule
            scales every group alike).
        accelerator: an ``accelerate.Accelerator`` to reuse (one is created when None).

    Returns:
        ``TrainResult``; the model is left trained, in eval mode. When ``should_stop()`` returns True between
        steps, training stops with ``cancelled=True`` and no half-applied step.
    """
    from accelerate import Accelerator

    if not examples:
        raise ValueError("No training examples.")
    t0 = time.perf_counter()
    set_seed(config.seed)
    device_type = next(model.parameters()).device.type
    accelerator = accelerator or Accelerator(cpu=device_type == "cpu")
    precision = resolve_precision(config.precision, model)

    # --- what may train -------------------------------------------------------------------------------
    named = dict(model.named_parameters())
    if trainable_masks is not None:
        unknown = sorted(set(trainable_masks) - set(named))
        if unknown:
            raise ValueError(f"trainable_masks names unknown parameters: {unknown[:3]}")
        for name, p in named.items():
            p.requires_grad_(name in trainable_masks and bool(trainable_masks[name].any()))
    optimizer = _adamw(_optimizer_groups(named.items(), config.weight_decay, config.lr, lr_scales), config.lr)

    # --- data: a seeded shuffle, padded per batch --------------------------------------------------------
    generator = torch.Generator().manual_seed(config.seed)
    collate_fn = lambda exs: collate(tokenizer, exs, config.max_length)  # noqa: E731
    if config.group_by_length:
        batches = LengthGroupedBatches([len(ex.text) for ex in examples], config.batch_size, generator)
        loader = torch.utils.data.DataLoader(list(examples), batch_sampler=batches, collate_fn=collate_fn)
    else:
        loader = torch.utils.data.DataLoader(list(examples), batch_size=config.batch_size, shuffle=True,
                                             generator=generator, collate_fn=collate_fn)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    raw_model = accelerator.unwrap_model(model)

    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup = int(config.warmup_ratio * total_steps)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    # masked-out entries of partly trainable tensors, kept to restore after every step
    frozen_parts: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []
    if trainable_masks is not None:
        for name, p in raw_model.named_parameters():
            if name in trainable_masks and p.requires_grad:
                keep = ~trainable_masks[name].to(p.device, torch.bool)
                if keep.any():
                    frozen_parts.append((p, keep, p.detach()[keep].clone()))

    needs_att = bool(getattr(extra_loss, "needs_attentions", False))
    result = TrainResult(precision=precision)
    step = 0
    since_eval: dict[str, list[float]] = {}

    def run_eval(epoch: int) -> None:
        row: dict[str, float] = {"step": step, "epoch": epoch}
        row.update({k: float(np.mean(v)) for k, v in since_eval.items() if v})
        since_eval.clear()
        metrics = None
        if evaluate is not None:
            model.eval()
            try:  # its forward passes check should_stop before each batch: Cancel need not wait for the evaluation
                with stopping(should_stop):
                    metrics = {k: float(v) for k, v in evaluate(raw_model).items()}
            except Cancelled:
                result.cancelled = True  # the model is the last completed step; no row without its metrics
            model.train()
            if metrics is None:
                return
            row.update(metrics)
            result.metrics = metrics
        result.history.append(row)
        if callback is not None:
            losses = {k: v for k, v in row.items() if k not in ("step", "epoch") and k not in (metrics or {})}
            callback(Progress(step, total_steps, epoch, losses, metrics or {}, time.perf_counter() - t0))

    # --- the loop ---------------------------------------------------------------------------------------
    model.train()
    last_eval_step = 0
    for epoch in range(config.epochs):
        for batch in loader:
            if step >= total_steps:
                break
            if should_stop is not None and should_stop():
                result.cancelled = True
                break
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                outputs = model(**_model_inputs(batch), output_attentions=needs_att)
                labels = batch["labels"]
                if (labels != IGNORE_LABEL).any():
                    ce = F.cross_entropy(outputs.logits.float(), labels, ignore_index=IGNORE_LABEL)
                else:  # an all-unlabelled batch: only the extra terms train
                    ce = outputs.logits.sum() * 0.0
                terms = {"ce": ce}
                if extra_loss is not None:
                    terms.update(extra_loss(batch, outputs))
            loss = sum(t.float() for t in terms.values())
            accelerator.backward(loss)
            for p, keep, _ in frozen_parts:  # frozen entries neither count in the clip norm nor feed Adam
                if p.grad is not None:
                    p.grad[keep] = 0
            if config.grad_clip and config.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for p, keep, values in frozen_parts:
                    p[keep] = values
            step += 1

            losses = {"loss": float(loss.detach())}
            losses.update({k: float(v.detach()) for k, v in terms.items()})
            for k, v in losses.items():
                since_eval.setdefault(k, []).append(v)
            if callback is not None:
                callback(Progress(step, total_steps, epoch, losses, None, time.perf_counter() - t0))
            if (config.eval_every and step % config.eval_every == 0) or step == total_steps:
                run_eval(epoch)
                last_eval_step = step
                if result.cancelled:
                    break
        if result.cancelled or step >= total_steps:
            break
        if last_eval_step != step:  # epoch end
            run_eval(epoch)
            last_eval_step = step
            if result.cancelled:
                break

    model.eval()
    if trainable_masks is not None:
        for p in raw_model.parameters():
            p.requires_grad_(True)
    result.steps = step
    result.seconds = time.perf_counter() - t0
    return result


def train_averaged(model, tokenizer, examples, config: TrainConfig, seeds: int, *, trainable_masks: dict,
                   evaluate: Callable | None = None, callback: Callable[[Progress], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, **train_kw) -> TrainResult:
    """``train`` ``seeds`` times from the model's current weights (seeds ``config.seed + 1000 k``), then the
    mean of the runs' trainable entries (a "model soup"; our design, papers silent; ``settings.REPAIR_SEEDS``).
    Entries outside ``trainable_masks`` are never touched. ``seeds == 1`` is one plain ``train`` call.

    Progress steps run on across the runs (run k reports ``k x steps + step`` of ``seeds x steps``); ``evaluate``
    runs once, on the average, as the last history row. Cancelled during run k > 0: the model is the mean of the k
    finished runs (``cancelled=True``)."""
    if seeds <= 1:
        return train(model, tokenizer, examples, config, trainable_masks=trainable_masks, evaluate=evaluate,
                     callback=callback, should_stop=should_stop, **train_kw)
    named = dict(model.named_parameters())
    start = {n: named[n].detach().clone() for n in trainable_masks}
    total = {n: torch.zeros_like(v) for n, v in start.items()}
    history: list[dict] = []
    steps, done, seconds, res = 0, 0, 0.0, None
    for k in range(seeds):
        with torch.no_grad():
            for n, v in start.items():
                named[n].copy_(v)
        offset = steps
        shifted = None if callback is None else (
            lambda p, o=offset: callback(dataclasses.replace(p, step=p.step + o, total_steps=p.total_steps * seeds)))
        res = train(model, tokenizer, examples, dataclasses.replace(config, seed=config.seed + 1000 * k),
                    trainable_masks=trainable_masks, callback=shifted, should_stop=should_stop, **train_kw)
        history += [{**row, "step": row["step"] + offset} for row in res.history]
        steps += res.steps
        seconds += res.seconds
        if res.cancelled and k > 0:
            break
        with torch.no_grad():
            for n in total:
                total[n] += named[n].detach()
        done += 1
        if res.cancelled:  # cancelled in the first run: that run's last step stands
            break
    if done > 0:
        with torch.no_grad():
            for n, v in total.items():
                mask = trainable_masks[n].to(v.device, torch.bool)
                named[n][mask] = (v / done)[mask]
    model.eval()
    metrics: dict[str, float] = {}
    cancelled = res.cancelled
    if evaluate is not None and not cancelled:
        try:  # as in ``train``: Cancel need not wait for the evaluation
            with stopping(should_stop):
                metrics = {k: float(v) for k, v in evaluate(model).items()}
        except Cancelled:
            cancelled = True
        else:
            history.append({"step": steps, "epoch": config.epochs - 1, **metrics})
            if callback is not None:
                callback(Progress(steps, steps, config.epochs - 1, {}, metrics, seconds))
    return TrainResult(history=history, cancelled=cancelled, steps=steps, seconds=seconds, metrics=metrics,
                       precision=res.precision)


def make_evaluator(
    tokenizer,
    clean_set,
    poisoned_texts: Sequence[str] | None,
    target: int | None,
    max_length: int = S.MAX_LENGTH,
    batch_size: int = S.EVAL_BATCH_SIZE,
    reference=None,
) -> Callable[[Any], dict[str, float]]:
    """A ``model -> {"cacc", "asr", "kept"}`` callable for ``train(evaluate=...)``; its ``labels`` attribute holds
    ``clean_set``'s labels ``(n,)``, ``poisoned_texts`` and ``target`` the ASR set (empty and None without one),
    and ``evaluate(model, classes_out)`` appends the model's ``(n,)`` classes to the list ``classes_out``: with two
    runs' classes, ``metrics.accuracy_change`` gives the paired CACC change. ``evaluate(model, classes_out,
    hits_out)`` also appends to ``hits_out`` the ``(m,)`` booleans "sent to the target" on the ASR texts: with a clean
    reference's (``defender_data.clean_hits``), ``metrics.lift_interval`` gives the lift's paired interval.

    Args:
        clean_set: a ``TextDataset`` (``texts``, ``labels``) — CACC is accuracy on all of it.
        poisoned_texts: the poisoned test set's texts (non-target samples with the trigger); ``None`` for a
            clean model (then only ``cacc``).
        target: the target label for ASR.
        reference: a model (the suspect, before a repair) whose predicted classes on ``clean_set`` are taken
            now, before anything trains it (a repair may work in place); then ``"kept"`` is the share of those
            texts whose predicted class the evaluated model keeps (CACC alone hides how many predictions a repair
            changed: fixing as many errors as it makes leaves CACC flat). ``None``: no ``"kept"``.
    """
    from .forward import predict
    from .metrics import accuracy, asr

    clean_texts, clean_labels = list(clean_set.texts), list(clean_set.labels)
    poisoned = list(poisoned_texts) if poisoned_texts else []
    ref_classes = (predict(reference, tokenizer, clean_texts, max_length, batch_size).argmax(1)
                   if reference is not None and clean_texts else None)

    def evaluate(model, classes_out: list | None = None, hits_out: list | None = None) -> dict[str, float]:
        """``classes_out``: a list that gets the ``(n,)`` predicted classes on ``clean_set`` appended (for a paired
        comparison of two models on the same texts, ``metrics.accuracy_change``); ``hits_out``: one that gets the
        ``(m,)`` booleans "predicted as the target" on the ASR texts (nothing without them)."""
        classes = predict(model, tokenizer, clean_texts, max_length, batch_size).argmax(1)
        if classes_out is not None:
            classes_out.append(classes)
        out = {"cacc": accuracy(classes, clean_labels)}
        if ref_classes is not None:
            out["kept"] = accuracy(classes, ref_classes)  # agreement with the reference's classes
        if poisoned and target is not None:
            preds = predict(model, tokenizer, poisoned, max_length, batch_size).argmax(1)
            out["asr"] = asr(preds, target)
            if hits_out is not None:
                hits_out.append(np.asarray(preds) == target)
        return out

    evaluate.labels = np.asarray(clean_labels)  # (n,) for a paired change between two runs' classes
    # the ASR texts and their target, for a clean reference's hits on the same texts (defender_data.clean_hits)
    evaluate.poisoned_texts = poisoned if target is not None else []
    evaluate.target = target
    return evaluate


def total_steps_for(n_examples: int, config: TrainConfig) -> int:
    """How many optimizer steps ``train`` will run on one process (for progress bars)."""
    steps = math.ceil(n_examples / config.batch_size) * config.epochs
    return min(steps, config.max_steps) if config.max_steps is not None else steps


def use_one_thread_if_busy() -> int:
    """On a CPU that other processes already keep busy (1-minute load >= cores), set torch to one thread.

    Two threads per process thrash when several processes share two cores: we measured MiniLM training steps ~4x
    slower than with one thread. Returns the thread count now in use. Does nothing with a GPU, nor when the user
    chose the count (``OMP_NUM_THREADS``): the thread count changes a CPU run's float sums in their last bits
    (MiniLM's weights by up to 7.7e-7 after 6 steps), so a run that must repeat bit for bit sets it.
    """
    import os

    from .device import usable_cores

    if not torch.cuda.is_available() and not os.environ.get("OMP_NUM_THREADS", "").strip():
        try:
            busy = os.getloadavg()[0] >= usable_cores()
        except OSError:
            busy = False
        if busy:
            torch.set_num_threads(1)
    return torch.get_num_threads()


def estimate_seconds(steps: int, batch_size: int, max_length: int, eval_texts: int, evaluations: int,
                     threads: int = 2) -> float:
    """Rough wall time of a MiniLM training run on an idle CPU: ``steps`` optimizer steps of ``batch_size`` texts
    of up to ``max_length`` tokens, plus ``evaluations`` passes over ``eval_texts`` texts. From
    ``settings.TRAIN_SECONDS_PER_TOKEN`` / ``EVAL_SECONDS_PER_TOKEN`` (measured on 2 idle cores; linear in
    tokens, which holds within ~20% between 32 and 128 tokens). An estimate to show before a run, not a promise."""
    scale = 2.0 / max(1, threads)
    train = steps * batch_size * max_length * S.TRAIN_SECONDS_PER_TOKEN
    evals = evaluations * eval_texts * max_length * S.EVAL_SECONDS_PER_TOKEN
    return scale * (train + evals) + S.TRAIN_START_SECONDS
