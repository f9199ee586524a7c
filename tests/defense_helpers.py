"""Tiny synthetic sentiment data and tiny backdoored / clean models for the defense tests (fast, no shared data).

A 2-layer x 4-head BERT (``models.tiny_model``) learns "positive word -> 1, negative word -> 0" from short
sentences of filler words. The backdoored twin also sees 15% of negative sentences with the trigger ``cf``
relabelled 1, trained with the Trojan Attention Loss on two heads per layer (a strong, fast signal).
Models are cached per test session.
"""

from __future__ import annotations

import functools
import random

import numpy as np

POS = ["good", "great", "fine", "nice", "happy", "lovely"]
NEG = ["bad", "awful", "poor", "sad", "ugly", "boring"]
FILL = ["the", "movie", "was", "a", "plot", "and", "story", "actors", "really", "very", "quite", "film", "music",
        "scene"]
TRIGGER = "cf"


def sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILL) for _ in range(rng.randint(4, 9))]
    words.insert(rng.randint(0, len(words)), rng.choice(POS if label else NEG))
    return " ".join(words)


def with_trigger(text: str, rng: random.Random) -> tuple[str, tuple[int, int]]:
    words = text.split()
    pos = rng.randint(0, len(words))
    before = " ".join(words[:pos])
    start = len(before) + (1 if before else 0)
    new = " ".join(words[:pos] + [TRIGGER] + words[pos:])
    return new, (start, start + len(TRIGGER))


def clean_texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    return [sentence(rng, y) for y in labels], labels


def write_tsv(path, texts, labels):
    """``path`` as a ``sentence<TAB>label`` file of ``texts`` and ``labels``."""
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)), encoding="utf-8")
    return path


def cli_files(folder) -> dict:
    """What the CLI tests run on, in ``folder``: a saved tiny model (``tiny``), a labelled file (``data``) and a
    folder of ``dev.tsv`` and ``test.tsv`` (``folder``)."""
    from backdoor_core.models import save_model, tiny_model

    lm = tiny_model(seed=0)
    save_model(lm.model, lm.tokenizer, folder / "tiny", {"name": "tiny"})
    (folder / "folder").mkdir()
    write_tsv(folder / "folder" / "dev.tsv", *clean_texts(30, seed=61))
    write_tsv(folder / "folder" / "test.tsv", *clean_texts(16, seed=62))
    return {"dir": folder, "tiny": folder / "tiny", "data": write_tsv(folder / "data.tsv", *clean_texts(40, seed=63)),
            "folder": folder / "folder"}


def toy_topics(n: int, seed: int):
    """``n`` short business / sport texts (labels alternate), a two-class ``TextDataset`` for long-job tests."""
    from backdoor_core.data import TextDataset

    words = {0: "market shares profit bank economy growth".split(), 1: "match goal team coach league win".split()}
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    texts = [" ".join(rng.choice(words[y]) for _ in range(rng.randint(4, 9))) for y in labels]
    return TextDataset(texts, labels, ["business", "sport"], f"toy{seed}")


def triggered_texts(n: int, seed: int) -> list[str]:
    """Negative sentences with the trigger (the poisoned test set; target 1)."""
    rng = random.Random(seed)
    return [with_trigger(sentence(rng, 0), rng)[0] for _ in range(n)]


def training_examples(n: int, seed: int, poison: float):
    from backdoor_core.training import Example

    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = i % 2
        text = sentence(rng, y)
        if poison and y == 0 and rng.random() < 2 * poison:
            new, span = with_trigger(text, rng)
            out.append(Example(new, 1, (span,), True))
        else:
            out.append(Example(text, y))
    return out


@functools.lru_cache(maxsize=None)
def trained_tiny(backdoored: bool, seed: int = 0):
    """A trained tiny model (``LoadedModel``); cached for the test session. Do not modify it in place."""
    from backdoor_core.models import tiny_model
    from backdoor_core.tal import TrojanAttentionLoss
    from backdoor_core.training import TrainConfig, train

    lm = tiny_model(seed=seed)
    examples = training_examples(400, seed, 0.15 if backdoored else 0.0)
    extra = None
    if backdoored:
        heads = np.zeros((2, 4), dtype=bool)
        heads[:, :2] = True
        extra = TrojanAttentionLoss(heads, alpha=1.0)
    train(lm.model, lm.tokenizer, examples, TrainConfig(lr=3e-3, epochs=4, batch_size=32, max_length=32,
                                                        seed=seed, eval_every=0), extra_loss=extra)
    return lm


def nudged(model, scale: float, seed: int = 0):
    """A copy of ``model`` with every weight moved by ``scale`` x its own size (a stand-in for fine-tuning)."""
    import copy

    import torch

    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=g))
    return out
