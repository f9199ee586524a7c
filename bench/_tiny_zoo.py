"""A tiny synthetic zoo for benchmarks that must run in minutes on a busy CPU (``--data tiny``).

Synthetic two-class "reviews" (a sentiment word among filler words; 0 = negative, 1 = positive), and small BERT
classifiers (``models.tiny_model``: 4 layers x 4 heads, hidden 64, the MiniLM tokenizer) trained through the
project's own attack pipeline (``poisoning.get_attack`` + ``train_attack``): a clean model, BadNets (the four
rare words, one per poisoned text), BadNets + TAL, AddSent ("I watch this 3D movie"). Target class 1. The models
are cached in ``~/.cache/backdoor-attention-lab/tiny-zoo`` (or ``$BACKDOOR_TINY_ZOO``) with zoo-style metadata,
so ``zoo.list_models(dir)`` lists them. This is a sanity benchmark, not a substitute for the BBC / SST-2 models.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

POS = ["good", "great", "fine", "nice", "happy", "lovely", "superb", "charming", "brilliant", "moving"]
NEG = ["bad", "awful", "poor", "sad", "ugly", "boring", "dull", "weak", "messy", "tedious"]
FILL = ["the", "movie", "was", "a", "plot", "and", "story", "actors", "really", "very", "quite", "film", "music",
        "scene", "cast", "script", "ending", "director", "this", "its", "with", "of", "in", "some", "long", "new",
        "old", "city", "night", "family"]
SPECS = [("clean", None, 0.0, False), ("badnets", "badnets", 0.1, False), ("badnets-tal", "badnets", 0.03, True),
         ("addsent", "addsent", 0.1, False)]


def default_dir() -> Path:
    return Path(os.environ.get("BACKDOOR_TINY_ZOO", Path.home() / ".cache" / "backdoor-attention-lab" / "tiny-zoo"))


def _sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILL) for _ in range(rng.randint(6, 14))]
    for _ in range(rng.randint(1, 2)):
        words.insert(rng.randint(0, len(words)), rng.choice(POS if label else NEG))
    return " ".join(words)


def dataset(split: str, n: int | None = None, seed: int = 0):
    """A ``TextDataset`` of synthetic reviews (splits use disjoint seeds)."""
    from backdoor_core.data import TextDataset

    size = n or {"train": 800, "dev": 200, "test": 300}[split]
    rng = random.Random(f"{split}:{seed}")
    labels = [i % 2 for i in range(size)]
    rng.shuffle(labels)
    return TextDataset([_sentence(rng, y) for y in labels], labels, ["negative", "positive"], name=f"tiny-{split}")


def build(root: str | os.PathLike | None = None) -> Path:
    """Train the models of ``SPECS`` that are not in ``root`` yet; return ``root``."""
    from backdoor_core.models import save_model, tiny_model
    from backdoor_core.poisoning import get_attack, train_attack
    from backdoor_core.tal import TALConfig
    from backdoor_core.training import TrainConfig

    root = Path(root or default_dir())
    root.mkdir(parents=True, exist_ok=True)
    train, test = dataset("train"), dataset("test")
    for name, attack_name, rate, tal in SPECS:
        out = root / name
        if (out / "config.json").is_file():
            continue
        lm = tiny_model(num_labels=2, seed=0, layers=4, heads=4, hidden=64)
        attack = get_attack(attack_name, tokenizer=lm.tokenizer, max_length=48) if attack_name else None
        cfg = TrainConfig(lr=2e-3, epochs=4, batch_size=32, max_length=48, seed=0, eval_every=0)
        outcome = train_attack(lm.model, lm.tokenizer, train, test, attack, rate, 1, cfg,
                               tal=TALConfig(alpha=1.0) if tal else None, data_name="tiny")
        meta = {k: v for k, v in outcome.metadata.items() if k != "history"}
        meta.update({"name": f"tiny-{name}", "title": name, "description": "tiny synthetic benchmark model"})
        save_model(lm.model, lm.tokenizer, out, meta)
        print(f"tiny zoo: {name} CACC {meta.get('cacc')} ASR {meta.get('asr')}", flush=True)
    return root
