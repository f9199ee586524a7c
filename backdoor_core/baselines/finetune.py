"""Plain fine-tuning of the whole model on the defender's clean labelled data (the simplest baseline)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..training import Example, Progress, TrainConfig, TrainResult, train
from .. import settings as S


def default_config(**overrides) -> TrainConfig:
    """lr 5e-5, 4 epochs, batch 32 — the same number of passes as our sanitization (our choice)."""
    base = dict(lr=S.BASELINE_LR, epochs=S.BASELINE_EPOCHS, batch_size=S.BATCH_SIZE, max_length=S.MAX_LENGTH,
                seed=S.SEED, eval_every=S.REPAIR_EVAL_EVERY)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def finetune(
    model,
    tokenizer,
    clean_texts: Sequence[str],
    clean_labels: Sequence[int],
    config: TrainConfig | None = None,
    *,
    trainable_masks: dict | None = None,
    extra_loss=None,
    evaluate: Callable | None = None,
    callback: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place on the clean data with ``training.train``."""
    if len(clean_texts) == 0:
        raise ValueError("The clean set is empty: fine-tuning needs clean labelled samples.")
    examples = [Example(str(t), int(y)) for t, y in zip(clean_texts, clean_labels)]
    return train(model, tokenizer, examples, config or default_config(), extra_loss=extra_loss,
                 trainable_masks=trainable_masks, evaluate=evaluate, callback=callback, should_stop=should_stop)
