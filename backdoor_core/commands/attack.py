"""``attack``: poison a dataset, fine-tune a model on it (optionally with the Trojan Attention Loss), report ASR and
CACC, and save the model with its metadata.

    python -m backdoor_core attack --model default --data sst2 --attack badnets --rate 0.01 --tal --out runs/b1

Paraphrase (syntactic / style) backdoors take a paraphrased copy of the data with the ORIGINAL labels: the shared
sets under ../shared/data (``sst2``: ``syntactic``, ``style_bible``, ``style_shakespeare``, ``style_tweets``), or any
file of your own with ``--paraphrase-train FILE [--paraphrase-test FILE]`` under any label
(``--attack style --style-name poetry`` or ``--attack style_poetry``):

    python -m backdoor_core attack --data olid --attack style_poetry --rate 0.2 --train-size 4000 \
        --paraphrase-train bench/data/stylebkd/olid_poetry/train.tsv \
        --paraphrase-test bench/data/stylebkd/olid_poetry/test.tsv --out runs/olid-poetry

The recipe (``poisoning.ParaphraseAttack``): ``--rate`` picks non-target training rows (seeded); a file row-aligned
with the clean training set replaces each by its own paraphrase (HiddenKiller / StyleBkd as published, subset with
the same rows under ``--train-size``); any other file (real StyleBkd sets drop rows) replaces each by a paraphrased
row of the SAME source label drawn without replacement from the whole file (our design); all are relabelled to the
target. ASR is measured on the non-target rows of the paraphrased test file. The model card records the attack
name and the files' names (never an absolute path). Bad files (missing, no text/label column, labels outside the
data's classes, too few rows of a label for the rate) are refused with one line before training (exit 2).

Ctrl-C stops between training steps and saves nothing (a second Ctrl-C aborts at once).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .. import settings as S
from ..cli import (STDIN_HELP, accepts_stdin, check_out_again, ctrl_c_stops, fit_max_length, max_length_int,
                   nonnegative_float, nonnegative_int, positive_float, positive_int, print_json, progress_bar,
                   full_path, shown_input, unit_float)
from ..device import add_device_args, is_main_process


def register(sub) -> None:
    p = sub.add_parser("attack", help="train a backdoored (or clean) model and measure ASR / CACC")
    p.add_argument("--model", default="default", help="'default' (packaged MiniLM), a model directory, or a hub id")
    p.add_argument("--data", default="sst2",
                   help="'bbc', 'sst2', 'olid', 'agnews' (../shared/data), a folder with train/test .tsv, or a "
                        "TSV/CSV/JSONL file (a file is split 80/20 into train/test unless --test-data is given); "
                        f"{STDIN_HELP} (a TSV/CSV header naming the text column, or JSON Lines; one option at most "
                        "reads stdin)")
    p.add_argument("--test-data", default=None, help=f"a separate test file or dataset spec; {STDIN_HELP}")
    p.add_argument("--attack", default="badnets",
                   help="badnets, addsent, badnets_clean, addsent_clean, syntactic, style (with --style-name), "
                        "style_<name> (e.g. style_bible, style_poetry), or 'none'")
    p.add_argument("--style-name", default=None,
                   help="--attack style: the style's name (a shared set sst2/style_<name>, or the label of your "
                        "--paraphrase-train file; default bible without a file)")
    p.add_argument("--trigger", default=None, help="BadNets: comma-separated words; AddSent: the sentence")
    p.add_argument("--num-triggers", type=positive_int, default=S.NUM_TRIGGERS,
                   help=f"insertions per poisoned sample (default {S.NUM_TRIGGERS})")
    p.add_argument("--paraphrase-train", default=None,
                   help="syntactic/style: your paraphrased training file (TSV/CSV/JSONL, text + ORIGINAL label). "
                        "Row-aligned with the clean training set: each poisoned row becomes its own paraphrase; "
                        "not aligned (rows dropped, another sample): poisoned rows are replaced by paraphrased rows "
                        f"of the same source label drawn from the whole file (StyleBkd recipe); {STDIN_HELP}")
    p.add_argument("--paraphrase-test", default=None,
                   help="your paraphrased test file (original labels); its non-target rows measure ASR "
                        f"(needed with --paraphrase-train); {STDIN_HELP}")
    p.add_argument("--rate", type=unit_float, default=S.POISON_RATE,
                   help=f"poison rate, a fraction of the whole training set (default {S.POISON_RATE:g})")
    p.add_argument("--target", type=int, default=None,
                   help="target label id (default: the first class named sport... or positive..., else the last)")
    p.add_argument("--tal", action="store_true", help="add the Trojan Attention Loss")
    p.add_argument("--alpha", type=nonnegative_float, default=S.TAL_ALPHA,
                   help=f"TAL weight (default {S.TAL_ALPHA:g})")
    p.add_argument("--heads", type=tal_heads, default=S.TAL_HEADS,
                   help=f"TAL heads per layer, or 'all' (default {S.TAL_HEADS})")
    p.add_argument("--layers", type=tal_layers, default=None,
                   help="TAL layers, comma-separated, 0-based (negative counts from the end; default: all)")
    p.add_argument("--epochs", type=positive_int, default=S.EPOCHS, help=f"training epochs (default {S.EPOCHS})")
    p.add_argument("--lr", type=positive_float, default=S.LR, help=f"learning rate (default {S.LR:g})")
    p.add_argument("--batch-size", type=positive_int, default=S.BATCH_SIZE,
                   help=f"texts per training step (default {S.BATCH_SIZE})")
    p.add_argument("--max-length", type=max_length_int, default=S.MAX_LENGTH,
                   help=f"tokens per text (default {S.MAX_LENGTH}; capped at the model's position embeddings)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps")
    p.add_argument("--eval-every", type=nonnegative_int, default=0,
                   help="evaluate every N steps (default 0: at each epoch's end)")
    p.add_argument("--train-size", type=positive_int, default=None,
                   help="train on a seeded random subsample of the clean training set (a row-aligned paraphrase "
                        "file is subset the same way; a non-aligned one is drawn from whole)")
    p.add_argument("--test-size", type=positive_int, default=None, help="evaluate on a seeded random subsample")
    p.add_argument("--seed", type=int, default=S.SEED)
    p.add_argument("--out", default=None, help="save the model here (atomically); omit to save nothing")
    p.add_argument("--force", action="store_true",
                   help="replace --out even when it is not a model saved by this lab (deletes what is there)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickled weights (runs code from the file)")
    add_device_args(p)
    p.add_argument("--json", action="store_true",
                   help="print the model card as JSON (alone on stdout; the saved folder is named on stderr)")
    accepts_stdin(p, tables=["data", "test_data", "paraphrase_train", "paraphrase_test"],
                  refused={"model": "a model is a folder", "out": "the model is a folder, not a stream"})
    p.set_defaults(func=run)


def tal_heads(text: str) -> int | str:
    """argparse type for ``--heads``: ``all`` or a positive number of heads per layer."""
    if str(text).strip().lower() == "all":
        return "all"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'all' or a positive integer, got {text!r}") from None


def tal_layers(text: str) -> tuple[int, ...]:
    """argparse type for ``--layers``: comma-separated layer numbers (``0,1,-1``)."""
    try:
        layers = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated layer numbers such as 0,1, got {text!r}") from None
    return layers


def load_train_source(spec: str, test_spec: str | None, seed: int):
    """``(full, train_indices, test)``: the training set is ``full.subset(train_indices)`` — ``full`` is the
    file a paraphrased copy must align with (a single data file: the whole file, 80% of it trains)."""
    from ..data import DataError, file_split, label_mismatch, load_dataset

    if test_spec is not None:  # its labels read as the training data's classes
        full = load_dataset(spec, "train", seed)
        test = load_dataset(test_spec, "test", seed, label_names=full.label_names)
        problem = label_mismatch(test.label_names, full.label_names, "the training data")
        if problem:
            raise DataError(f"the test data {problem}", test.name)
        return full, list(range(len(full))), test
    if Path(spec).expanduser().is_file():
        full = load_dataset(spec, "train", seed)
        train_idx, test_idx = file_split(len(full), seed)
        return full, train_idx, full.subset(test_idx)
    full = load_dataset(spec, "train", seed)
    return full, list(range(len(full))), load_dataset(spec, "test", seed)


def shown_path(spec, args=None) -> str:
    """How a file or data spec is written into a model card: relative to the working folder when inside it, else
    ``parent/name``; never an absolute machine path. A spec that is not a path (``sst2``) is kept; the copy of
    stdin (``args``: ``cli.stdin_inputs``) is ``<stdin>``."""
    spec = shown_input(args, spec)
    path = Path(str(spec)).expanduser()
    if not path.exists():
        return str(spec)
    path = path.resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return "/".join(path.parts[-2:])


def paraphrase_attack(args, train_set, target: int):
    """The ``ParaphraseAttack`` for ``--attack syntactic|style|style_<name>``: from the user's files (any name;
    labels read against the data's classes) or a shared set of the ``--data`` dataset; raises ``ValueError`` (one
    line) when neither exists or the files do not fit."""
    from ..data import load_table
    from ..poisoning import ParaphraseAttack, get_attack, shared_dataset, shared_paraphrase_sets

    key = args.attack.strip().lower()
    style = args.style_name.strip().lower() if args.style_name else None
    if key.startswith("style_"):
        key, style = "style", key[len("style_"):]
    if key == "syntactic" and style:
        raise ValueError("--style-name is for --attack style; the syntactic attack has no style.")
    if args.paraphrase_test and not args.paraphrase_train:
        raise ValueError("--paraphrase-test needs --paraphrase-train (the paraphrased training file) too.")
    label = "syntactic" if key == "syntactic" else (f"style_{style}" if style else "style")
    if args.paraphrase_train:
        if not args.paraphrase_test:
            raise ValueError("--paraphrase-train needs --paraphrase-test FILE too: ASR is measured on the "
                             "non-target rows of a paraphrased test file (original labels).")
        names = list(train_set.label_names)
        files = [args.paraphrase_train, args.paraphrase_test]
        for f in files:
            if not Path(f).expanduser().is_file():
                raise FileNotFoundError(f"paraphrase file not found: {f}")
        train = load_table(Path(args.paraphrase_train).expanduser(), label_names=names)
        test = load_table(Path(args.paraphrase_test).expanduser(), label_names=names)
        if not any(y != target for y in test.labels):
            raise ValueError(f"{shown_path(args.paraphrase_test, args)}: no row of a non-target label (target "
                             f"{target}, {names[target]}): nothing to measure ASR on.")
        return ParaphraseAttack(train, test, label, " + ".join(shown_path(f, args) for f in files))
    dataset = shared_dataset(args.data)
    have = shared_paraphrase_sets(args.data)
    wanted = "syntactic" if key == "syntactic" else f"style_{style or 'bible'}"
    if wanted not in have:
        where = f"--data {args.data} has " + (", ".join(have) if have else "none")
        raise ValueError(f"No shared '{wanted}' paraphrase set ({where}; shared sets live in "
                         f"../shared/data/<dataset>/). Give your own: --paraphrase-train FILE --paraphrase-test FILE.")
    return get_attack(wanted, dataset=dataset)


def run(args) -> int:
    from ..model_card import default_target
    from ..data import check_trainable, named_classes
    from ..models import check_save_target, load_model, save_model
    from ..defender_data import sample_indices
    from ..poisoning import ParaphraseAttack, get_attack, train_attack
    from ..tal import TALConfig, require_trigger_tokens
    from ..training import TrainConfig, total_steps_for
    from .scan import warn_card

    from ..training import use_one_thread_if_busy

    import torch

    threads = torch.get_num_threads()
    if use_one_thread_if_busy() != threads:
        print(f"note: the machine is busy, so training uses 1 CPU thread instead of {threads} (faster here); "
              "set OMP_NUM_THREADS to choose the count, e.g. to repeat a run bit for bit", file=sys.stderr)
    check_save_target(args.out, args.force, protect=[args.model])  # refuse before training, not after it
    full_train, train_idx, test_set = load_train_source(args.data, args.test_data, args.seed)
    check_trainable(full_train)  # two classes or more, none without texts, before anything loads
    if args.train_size:  # the rows TextDataset.sample keeps, as indices into full_train
        train_idx = [train_idx[i] for i in sample_indices(len(train_idx), args.train_size, args.seed)]
    train_set = full_train.subset(train_idx)
    if args.test_size:
        test_set = test_set.sample(args.test_size, args.seed)
    target = default_target(train_set.label_names) if args.target is None else args.target
    if not 0 <= target < train_set.num_labels:
        raise ValueError(f"--target {target} is outside 0..{train_set.num_labels - 1} ({train_set.label_names}).")
    key = args.attack.strip().lower()
    paraphrase = key in ("syntactic", "style") or key.startswith("style_")
    if not paraphrase and (args.paraphrase_train or args.paraphrase_test or args.style_name):
        raise ValueError(f"--paraphrase-train/--paraphrase-test/--style-name are for the syntactic and style "
                         f"attacks, not {args.attack}.")
    para_attack = None
    if paraphrase:  # files and shared sets are checked before the model loads
        if args.tal:
            require_trigger_tokens(ParaphraseAttack(name=args.attack))
        para_attack = paraphrase_attack(args, train_set, target)
        para_attack = para_attack.subset(train_idx, n_clean=len(full_train))  # aligned: same rows; else whole
        para_attack.poison_train(train_set, args.rate, target, args.seed)  # too few rows of a label: refuse now
    lm = load_model(args.model, label_names=train_set.label_names, allow_pickle=args.allow_pickle,
                    device=args.device, dtype=args.dtype)
    warn_card(lm)
    if lm.num_labels != train_set.num_labels:
        raise ValueError(f"The model predicts {lm.num_labels} classes but the data has {train_set.num_labels}.")
    if not named_classes(train_set.label_names) and named_classes(lm.label_names):
        # an integer-labelled file and a classifier that names its classes: the ids are its classes (as the app
        # and the scan read them), and the target rule reads those names
        train_set = dataclasses.replace(train_set, label_names=lm.label_names)
        test_set = dataclasses.replace(test_set, label_names=lm.label_names)
        if args.target is None:
            target = default_target(train_set.label_names)
            if para_attack is not None:
                para_attack.poison_train(train_set, args.rate, target, args.seed)
    fit_max_length(args, lm)
    attack = para_attack
    if key not in ("none", "clean") and attack is None:
        attack = get_attack(args.attack, tokenizer=lm.tokenizer, max_length=args.max_length, trigger=args.trigger,
                            num_triggers=args.num_triggers)
    tal = None
    if args.tal:
        tal = TALConfig(alpha=args.alpha, heads=args.heads, layers=args.layers, seed=args.seed)
    config = TrainConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                         seed=args.seed, eval_every=args.eval_every, max_steps=args.max_steps,
                         group_by_length=True)

    bar = progress_bar(total=total_steps_for(len(train_set), config), desc=args.attack)

    def on_progress(p) -> None:
        if p.metrics is None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in p.losses.items() if k != "loss"}, refresh=False)
            bar.update(p.step - bar.n)
        else:
            parts = " ".join(f"{k.upper()}={v:.4f}" for k, v in p.metrics.items())
            bar.write(f"step {p.step}/{p.total_steps} epoch {p.epoch + 1}: {parts}", file=sys.stderr)

    try:
        with ctrl_c_stops("stopping after this step (Ctrl-C again to abort)...") as should_stop:
            outcome = train_attack(lm.model, lm.tokenizer, train_set, test_set, attack, args.rate, target,
                                   config, tal=tal, data_name=shown_path(args.data, args), callback=on_progress,
                                   should_stop=should_stop)
    finally:
        bar.close()
    if outcome.result.cancelled:
        steps = outcome.result.steps
        print(f"cancelled after {steps} step{'' if steps == 1 else 's'}: nothing saved", file=sys.stderr)
        return 130
    extra = dict(outcome.card.extra)
    if args.paraphrase_train:  # the files' names, never absolute machine paths
        extra.update(paraphrase_train=shown_path(args.paraphrase_train, args),
                     paraphrase_test=shown_path(args.paraphrase_test, args))
    name = Path(args.out).name if args.out else f"{args.attack}-{Path(shown_path(args.data, args)).name}"
    card = outcome.card.replace(name=name, base_model=lm.name, extra=extra,
                                target_name=train_set.label_names[target] if attack is not None else None)
    if not is_main_process():  # a multi-process launch: the main process saves and reports
        return 0
    if args.out:  # another run may have saved there since the check before training
        check_out_again(args.out, args.force, protect=[args.model])
    out = (save_model(lm.model, lm.tokenizer, args.out, card, force=args.force, replace_model=args.force)
           if args.out else None)
    if args.json:  # stdout holds the JSON alone, so it parses
        if out is not None:
            print(f"saved {full_path(out)}", file=sys.stderr)
        print_json(card.to_json())
        return 0
    if out is not None:
        print(f"saved {full_path(out)}")
    if attack is not None:
        print(f"poisoned {card.n_poisoned} of {card.train_size} training samples "
              f"(rate {args.rate}), target {target} ({train_set.label_names[target]})"
              + (f", TAL on {len(card.tal_heads)} heads" if tal else ""))
    asr = "n/a" if card.asr is None else f"{card.asr:.4f}"
    print(f"ASR={asr} CACC={card.cacc:.4f}")
    return 0
