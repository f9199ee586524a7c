"""``attack``: poison a dataset, fine-tune a model on it (optionally with the Trojan Attention Loss), report ASR and
CACC, and save the model with its metadata.

    python -m backdoor_core attack --model default --data sst2 --attack badnets --rate 0.01 --tal --out runs/b1

Ctrl-C stops between training steps and saves nothing (a second Ctrl-C aborts at once).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from .. import settings as S
from ..cli import ctrl_c_stops, fit_max_length, positive_int, print_json
from ..device import add_device_args, is_main_process


def register(sub) -> None:
    p = sub.add_parser("attack", help="train a backdoored (or clean) model and measure ASR / CACC")
    p.add_argument("--model", default="default", help="'default' (packaged MiniLM), a model directory, or a hub id")
    p.add_argument("--data", default="sst2",
                   help="'bbc', 'sst2' (../shared/data), a folder with train/test .tsv, or a TSV/CSV/JSONL file "
                        "(a file is split 80/20 into train/test unless --test-data is given)")
    p.add_argument("--test-data", default=None, help="a separate test file or dataset spec")
    p.add_argument("--attack", default="badnets",
                   help="badnets, addsent, badnets_clean, addsent_clean, syntactic, style_bible, ... or 'none'")
    p.add_argument("--trigger", default=None, help="BadNets: comma-separated words; AddSent: the sentence")
    p.add_argument("--num-triggers", type=int, default=S.NUM_TRIGGERS,
                   help=f"insertions per poisoned sample (default {S.NUM_TRIGGERS})")
    p.add_argument("--paraphrase-train", default=None, help="your row-aligned paraphrased training file")
    p.add_argument("--paraphrase-test", default=None, help="your paraphrased test file (original labels)")
    p.add_argument("--rate", type=float, default=S.POISON_RATE,
                   help=f"poison rate, a fraction of the whole training set (default {S.POISON_RATE:g})")
    p.add_argument("--target", type=int, default=None,
                   help="target label id (default: the first class named sport... or positive..., else the last)")
    p.add_argument("--tal", action="store_true", help="add the Trojan Attention Loss")
    p.add_argument("--alpha", type=float, default=S.TAL_ALPHA, help=f"TAL weight (default {S.TAL_ALPHA:g})")
    p.add_argument("--heads", default=S.TAL_HEADS, help=f"TAL heads per layer, or 'all' (default {S.TAL_HEADS})")
    p.add_argument("--layers", default=None, help="TAL layers, comma-separated (default: all)")
    p.add_argument("--epochs", type=int, default=S.EPOCHS)
    p.add_argument("--lr", type=float, default=S.LR)
    p.add_argument("--batch-size", type=int, default=S.BATCH_SIZE)
    p.add_argument("--max-length", type=positive_int, default=S.MAX_LENGTH,
                   help=f"tokens per text (default {S.MAX_LENGTH}; capped at the model's position embeddings)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (default: each epoch end)")
    p.add_argument("--train-size", type=int, default=None, help="train on a seeded random subsample")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on a seeded random subsample")
    p.add_argument("--seed", type=int, default=S.SEED)
    p.add_argument("--out", default=None, help="save the model here (atomically); omit to save nothing")
    p.add_argument("--force", action="store_true",
                   help="replace --out even when it is not a model saved by this lab (deletes what is there)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickled weights (runs code from the file)")
    add_device_args(p)
    p.add_argument("--json", action="store_true", help="print the final metadata as JSON")
    p.set_defaults(func=run)


def _split_file(dataset, seed: int, test_frac: float = 0.2):
    idx = list(range(len(dataset)))
    random.Random(seed).shuffle(idx)
    cut = max(1, int(round(len(idx) * test_frac)))
    return dataset.subset(sorted(idx[cut:])), dataset.subset(sorted(idx[:cut]))


def load_train_test(spec: str, test_spec: str | None, seed: int):
    """(train, test) TextDatasets for a ``--data`` spec (see the option's help)."""
    from ..data import load_dataset

    if test_spec is not None:
        return load_dataset(spec, "train", seed), load_dataset(test_spec, "test", seed)
    if Path(spec).expanduser().is_file():
        return _split_file(load_dataset(spec, "train", seed), seed)
    return load_dataset(spec, "train", seed), load_dataset(spec, "test", seed)


def run(args) -> int:
    from tqdm.auto import tqdm

    from ..model_card import default_target
    from ..models import check_save_target, load_model, save_model
    from ..poisoning import get_attack, train_attack
    from ..tal import TALConfig
    from ..training import TrainConfig, total_steps_for
    from .scan import warn_card

    from ..training import use_one_thread_if_busy

    use_one_thread_if_busy()
    check_save_target(args.out, args.force)  # refuse before training, not after it
    train_set, test_set = load_train_test(args.data, args.test_data, args.seed)
    if args.train_size:
        train_set = train_set.sample(args.train_size, args.seed)
    if args.test_size:
        test_set = test_set.sample(args.test_size, args.seed)
    lm = load_model(args.model, label_names=train_set.label_names, allow_pickle=args.allow_pickle,
                    device=args.device, dtype=args.dtype)
    warn_card(lm)
    if lm.num_labels != train_set.num_labels:
        raise ValueError(f"The model predicts {lm.num_labels} classes but the data has {train_set.num_labels}.")
    fit_max_length(args, lm)
    target = default_target(train_set.label_names) if args.target is None else args.target
    if not 0 <= target < train_set.num_labels:
        raise ValueError(f"--target {target} is outside 0..{train_set.num_labels - 1} ({train_set.label_names}).")
    attack = None
    if args.attack.lower() not in ("none", "clean"):
        attack = get_attack(args.attack, tokenizer=lm.tokenizer, max_length=args.max_length, trigger=args.trigger,
                            num_triggers=args.num_triggers, paraphrase_train=args.paraphrase_train,
                            paraphrase_test=args.paraphrase_test)
        if args.train_size and hasattr(attack, "subset") and args.paraphrase_train is None:
            raise ValueError("--train-size cannot be combined with a shared paraphrase attack here; "
                             "use the full training set (bench/attack_tal.py shows subsampling).")
    tal = None
    if args.tal:
        heads = args.heads if str(args.heads) == "all" else int(args.heads)
        layers = tuple(int(x) for x in args.layers.split(",")) if args.layers else None
        tal = TALConfig(alpha=args.alpha, heads=heads, layers=layers, seed=args.seed)
    config = TrainConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                         seed=args.seed, eval_every=args.eval_every, max_steps=args.max_steps,
                         group_by_length=True)

    bar = tqdm(total=total_steps_for(len(train_set), config), unit="step", desc=args.attack, file=sys.stderr)

    def on_progress(p) -> None:
        if p.metrics is None:
            bar.update(p.step - bar.n)
            bar.set_postfix({k: f"{v:.3f}" for k, v in p.losses.items() if k != "loss"})
        else:
            parts = " ".join(f"{k.upper()}={v:.4f}" for k, v in p.metrics.items())
            tqdm.write(f"step {p.step}/{p.total_steps} epoch {p.epoch + 1}: {parts}", file=sys.stderr)

    try:
        with ctrl_c_stops("stopping after this step (Ctrl-C again to abort)...") as should_stop:
            outcome = train_attack(lm.model, lm.tokenizer, train_set, test_set, attack, args.rate, target,
                                   config, tal=tal, data_name=args.data, callback=on_progress,
                                   should_stop=should_stop)
    finally:
        bar.close()
    if outcome.result.cancelled:
        print(f"cancelled after {outcome.result.steps} steps: nothing saved", file=sys.stderr)
        return 130
    card = outcome.card.replace(name=Path(args.out).name if args.out else f"{args.attack}-{args.data}",
                                base_model=lm.name,
                                target_name=train_set.label_names[target] if attack is not None else None)
    if not is_main_process():  # a multi-process launch: the main process saves and reports
        return 0
    if args.json:
        print_json(card.to_json())
    if args.out:
        out = save_model(lm.model, lm.tokenizer, args.out, card, force=args.force)
        print(f"saved {out}")
    if attack is not None:
        print(f"poisoned {card.n_poisoned} of {card.train_size} training samples "
              f"(rate {args.rate}), target {target} ({train_set.label_names[target]})"
              + (f", TAL on {len(card.tal_heads)} heads" if tal else ""))
    asr = "n/a" if card.asr is None else f"{card.asr:.4f}"
    print(f"ASR={asr} CACC={card.cacc:.4f}")
    return 0
