"""Data-poisoning attacks: BadNets, AddSent, their clean-label variants, and paraphrase (syntactic / style) triggers.

Every attack has the same two methods:

* ``poison_train(dataset, rate, target, seed) -> list[Example]`` — the whole training set, in its order, with
  ``int(rate * len(dataset))`` rows replaced by poisoned ones (OpenBackdoor convention: the rate is a fraction
  of the WHOLE training set). Dirty-label attacks draw them from non-target rows and relabel them to
  ``target``; clean-label attacks draw them from target rows and keep their labels.
* ``poison_test(dataset, target, seed) -> PoisonedTestSet`` — only the non-target rows, with the trigger,
  relabelled to ``target`` (ASR is the share of them predicted as ``target``).

Every poisoned ``Example`` carries the character spans of its trigger (``trigger_spans``), so the training loop
can find the trigger's word pieces (the Trojan Attention Loss needs them). Paraphrase triggers have no trigger
tokens: their spans are ``()``.

Insertion triggers are placed at seeded random word positions inside the truncation window when the attack has
a ``tokenizer`` and ``max_length`` (a trigger that is cut off cannot fire and would mislabel the sample).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import settings as S
from .model_card import ModelCard
from .training import Example
from .triggers import insert_trigger, max_position_in_window, word_spans

BADNETS_TRIGGERS = ("cf", "mn", "bb", "tq")
ADDSENT_TRIGGER = "I watch this 3D movie"
ATTACKS = ("badnets", "addsent", "badnets_clean", "addsent_clean", "syntactic", "style")
STYLES = ("bible", "shakespeare", "tweets")


@dataclass
class PoisonedTestSet:
    """The poisoned test set: non-target samples with the trigger, labelled ``target``.

    Attributes:
        examples: ``Example`` with ``label == target``, ``poisoned=True`` and the trigger spans.
        gold_labels: each sample's original label (never ``target``).
        source_rows: each sample's row in the set it was made from (the clean test set for insertion attacks,
            the paraphrased test set for paraphrase attacks), so evaluation sets can be kept disjoint by row.
    """

    examples: list[Example]
    gold_labels: list[int]
    target: int
    source_rows: list[int] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [ex.text for ex in self.examples]

    def __len__(self) -> int:
        return len(self.examples)


def poison_count(rate: float, n: int) -> int:
    """How many training rows a poison ``rate`` means: ``int(rate * n)`` (OpenBackdoor), the product rounded to 9
    decimals first: in floating point 0.29 × 100 is 28.999…, and 29% of 100 rows gave 28. (The benchmarks' rates,
    0.5–20%, give the same counts either way on every size up to 200,000 rows.)"""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"The poison rate must be a fraction in [0, 1], got {rate}.")
    return int(round(rate * n, 9))


def choose_poison_indices(
    labels: Sequence[int],
    rate: float,
    target: int,
    clean_label: bool = False,
    seed: int = 0,
    eligible: Sequence[bool] | None = None,
) -> list[int]:
    """Seeded choice of the rows to poison, sorted.

    Dirty-label: from rows whose label is not ``target``; clean-label: from rows labelled ``target``. ``eligible``
    can exclude more rows (e.g. failed paraphrases). Raises ``ValueError`` when the rate asks for more rows than
    there are candidates, or for none although ``rate > 0``.
    """
    n = poison_count(rate, len(labels))
    candidates = [
        i for i, y in enumerate(labels)
        if ((y == target) if clean_label else (y != target)) and (eligible is None or eligible[i])
    ]
    if rate > 0 and n == 0:
        raise ValueError(
            f"A poison rate of {rate} of {len(labels)} training samples is int({rate * len(labels):.2f}) = 0 "
            "samples: raise the rate or use more data."
        )
    if n > len(candidates):
        kind = "target-class" if clean_label else "non-target"
        raise ValueError(
            f"A poison rate of {rate} needs {n} {kind} samples but the training set has only {len(candidates)}."
        )
    return sorted(random.Random(seed).sample(candidates, n))


def _check_target(dataset, target: int) -> None:
    if not 0 <= int(target) < dataset.num_labels:
        raise ValueError(f"Target label {target} is outside 0..{dataset.num_labels - 1} ({dataset.label_names}).")


class Attack:
    """Base class. Subclasses set ``name`` and implement ``poison_train`` / ``poison_test``.

    Attributes:
        clean_label: poisons target-class rows and keeps their labels.
        has_trigger_tokens: False for paraphrase triggers (nothing for the Trojan Attention Loss to attend to).
    """

    name = "attack"
    clean_label = False
    has_trigger_tokens = True

    def poison_train(self, dataset, rate: float, target: int, seed: int = 0) -> list[Example]:
        raise NotImplementedError

    def poison_test(self, dataset, target: int, seed: int = 0) -> PoisonedTestSet:
        raise NotImplementedError

    def describe(self) -> dict:
        """Plain facts for metadata (attack name, trigger...)."""
        return {"attack": self.name, "clean_label": self.clean_label}


class InsertionAttack(Attack):
    """Insert trigger words or a sentence at seeded random word positions.

    Args:
        triggers: candidates; each insertion picks one at random (seeded).
        num_triggers: insertions per poisoned sample.
        tokenizer, max_length: when both are set, every insertion lands inside the first ``max_length`` tokens.
        clean_label: poison target-class samples and keep their labels.
    """

    def __init__(
        self,
        triggers: Sequence[str],
        num_triggers: int = 1,
        tokenizer=None,
        max_length: int | None = None,
        clean_label: bool = False,
        name: str | None = None,
    ):
        self.triggers = tuple(t.strip() for t in triggers if t and t.strip())
        if not self.triggers:
            raise ValueError("An insertion attack needs at least one non-empty trigger.")
        if num_triggers < 1:
            raise ValueError(f"num_triggers must be at least 1, got {num_triggers}.")
        self.num_triggers = int(num_triggers)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.clean_label = bool(clean_label)
        if name:
            self.name = name

    # -- one text ----------------------------------------------------------------------------------------
    def poison_text(self, text: str, rng: random.Random) -> tuple[str, tuple[tuple[int, int], ...]]:
        """``text`` with ``num_triggers`` insertions, and the character spans of every inserted trigger.

        Positions are drawn among word positions where ALL the chosen triggers together still fit the window,
        then inserted from the last position to the first, shifting earlier spans as text is inserted before
        them. Where the separate insertions still cut a trigger off (byte-level BPE tokenises the first word
        differently once a trigger goes in before it; WordPiece never does), the drawn positions are capped one
        word earlier at a time until every trigger is inside the window (no further draws: the seeded sequence is
        unchanged).
        """
        chosen = [rng.choice(self.triggers) for _ in range(self.num_triggers)]
        words = word_spans(text)
        limit = len(words)
        windowed = self.tokenizer is not None and self.max_length is not None
        if windowed:
            limit = min(limit, max_position_in_window(self.tokenizer, text, " ".join(chosen), self.max_length, words))
        drawn = sorted((rng.randint(0, limit) for _ in chosen), reverse=True)
        while True:
            # one trigger: ``limit`` already keeps it inside the window, so its insertion need not count again
            out, spans = self._insert_all(text, chosen, [min(p, limit) for p in drawn], windowed and len(chosen) > 1)
            if not windowed or limit == 0 or self._inside_window(out, spans):
                return out, spans
            limit -= 1

    def _insert_all(self, text: str, chosen, positions, windowed: bool):
        spans: list[tuple[int, int]] = []
        for trig, pos in zip(chosen, positions):
            before = len(text)
            ins = insert_trigger(
                text, trig, position=pos,
                tokenizer=self.tokenizer if windowed else None, max_length=self.max_length if windowed else None,
            )
            delta = len(ins.text) - before
            spans = [(s + delta, e + delta) if s >= ins.span[0] else (s, e) for s, e in spans]
            spans.append(ins.span)
            text = ins.text
        return text, tuple(sorted(spans))

    def _inside_window(self, text: str, spans) -> bool:
        """Whether the last trigger ends inside the first ``max_length`` tokens (True where offsets are missing)."""
        words = word_spans(text)  # every word is at least one token: none past the first max_length is read
        head = text if len(words) <= self.max_length else text[:words[self.max_length][0]]
        try:
            enc = self.tokenizer(head, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
            end = max((int(e) for s, e in enc["offset_mapping"] if e > s), default=0)
        except (TypeError, NotImplementedError, KeyError, ValueError, AttributeError):
            return True
        return end >= max(e for _, e in spans)

    # -- datasets ----------------------------------------------------------------------------------------
    def poison_train(self, dataset, rate: float, target: int, seed: int = 0) -> list[Example]:
        """The whole training set with ``int(rate * len)`` rows poisoned (see the module docstring)."""
        _check_target(dataset, target)
        chosen = set(choose_poison_indices(dataset.labels, rate, target, self.clean_label, seed))
        rng = random.Random(seed + 7919)
        out = []
        for i, (text, label) in enumerate(zip(dataset.texts, dataset.labels)):
            if i in chosen:
                new, spans = self.poison_text(text, rng)
                out.append(Example(new, int(target), spans, True))
            else:
                out.append(Example(text, int(label)))
        return out

    def poison_test(self, dataset, target: int, seed: int = 0) -> PoisonedTestSet:
        """Every non-target test row with the trigger, relabelled ``target``."""
        _check_target(dataset, target)
        rng = random.Random(seed + 104729)
        examples, gold, rows = [], [], []
        for i, (text, label) in enumerate(zip(dataset.texts, dataset.labels)):
            if label == target:
                continue
            new, spans = self.poison_text(text, rng)
            examples.append(Example(new, int(target), spans, True))
            gold.append(int(label))
            rows.append(i)
        return PoisonedTestSet(examples, gold, int(target), rows)

    def describe(self) -> dict:
        trigger = self.triggers[0] if len(self.triggers) == 1 else list(self.triggers)
        return {"attack": self.name, "clean_label": self.clean_label, "trigger": trigger,
                "num_triggers": self.num_triggers}


class BadNets(InsertionAttack):
    """BadNets for text: rare words (default cf, mn, bb, tq), ``num_triggers`` insertions (default 1)."""

    name = "badnets"

    def __init__(self, triggers: Sequence[str] = BADNETS_TRIGGERS, num_triggers: int = 1, tokenizer=None,
                 max_length: int | None = None, clean_label: bool = False):
        super().__init__(triggers, num_triggers, tokenizer, max_length, clean_label,
                         "badnets_clean" if clean_label else "badnets")


class AddSent(InsertionAttack):
    """AddSent: a fixed sentence (default "I watch this 3D movie") inserted once at a random word position."""

    name = "addsent"

    def __init__(self, sentence: str = ADDSENT_TRIGGER, num_triggers: int = 1, tokenizer=None,
                 max_length: int | None = None, clean_label: bool = False):
        super().__init__((sentence,), num_triggers, tokenizer, max_length, clean_label,
                         "addsent_clean" if clean_label else "addsent")


def _failed_paraphrase(para: str, clean: str | None) -> bool:
    s = para.strip()
    return not s or s.lower() == "nan" or (clean is not None and s == clean.strip())


class ParaphraseAttack(Attack):
    """A trigger that is a way of writing — a syntactic template (HiddenKiller) or a style (StyleBkd).

    Built from a paraphrased copy of the data:

    * ``train_paraphrase``: a paraphrased copy of training data with ORIGINAL labels. Two recipes:

      - row-aligned with the clean training set (same length, labels equal at >= 99% of rows; e.g.
        ``sst2/syntactic_transfer``, ``sst2/style_bible``): the chosen non-target rows are replaced by their own
        paraphrase and relabelled ``target`` (HiddenKiller / StyleBkd as published);
      - not aligned (real StyleBkd sets drop rows: ``sst2/style_shakespeare`` has 6805 vs 6920; a subsampled
        training set; any user file): the same non-target rows are chosen, and each is replaced by a paraphrased
        row of the SAME source label drawn without replacement from the file (seeded), relabelled ``target``.
        This keeps the poison count and the source-label mix of the aligned recipe (our design; StyleBkd's
        ``run_poison_bert.py`` assumes aligned files).

      Failed paraphrases (empty, the literal ``nan``, or identical to the clean text) are never chosen.
    * ``test_paraphrase``: paraphrased test rows with their ORIGINAL labels (need not be aligned); its
      non-target, non-empty rows form the poisoned test set.

    There are no trigger tokens, so ``trigger_spans`` is ``()`` and the Trojan Attention Loss declines these
    attacks (see ``tal``).
    """

    has_trigger_tokens = False

    def __init__(self, train_paraphrase=None, test_paraphrase=None, name: str = "paraphrase", source: str = ""):
        self.train_paraphrase = train_paraphrase
        self.test_paraphrase = test_paraphrase
        self.name = name
        self.source = source

    @classmethod
    def from_shared(cls, variant: str, dataset: str = "sst2", root: str | os.PathLike | None = None,
                    name: str | None = None) -> ParaphraseAttack:
        """Load ``<root>/<dataset>/<variant>/{train,test}.tsv`` (e.g. ``sst2/syntactic_transfer``)."""
        from .data import DataError, load_shared

        train = load_shared(dataset, variant, "train", root)
        try:
            test = load_shared(dataset, variant, "test", root)
        except DataError:
            test = load_shared(dataset, variant, "dev", root)  # style_tweets has no test split
        return cls(train, test, name or variant, f"{dataset}/{variant}")

    @classmethod
    def from_files(cls, train_path, test_path=None, name: str = "paraphrase") -> ParaphraseAttack:
        """A user's own paraphrased copy (TSV/CSV/JSONL via ``data.load_table``)."""
        from .data import load_table

        train = load_table(train_path)
        test = load_table(test_path) if test_path else None
        return cls(train, test, name, str(train_path))

    def subset(self, indices: Sequence[int], n_clean: int | None = None) -> ParaphraseAttack:
        """The same attack for ``clean_train.subset(indices)`` (subsampled training sets).

        An aligned paraphrase set (``n_clean``, the full clean set's length, equal to the file's; or ``n_clean``
        not given) is subset the same way; a non-aligned one is kept whole (its rows are drawn by label)."""
        if self.train_paraphrase is None or (n_clean is not None and len(self.train_paraphrase) != n_clean):
            return self
        return ParaphraseAttack(self.train_paraphrase.subset(indices), self.test_paraphrase, self.name, self.source)

    def is_aligned(self, dataset) -> bool:
        """Whether row i of the paraphrase file paraphrases row i of ``dataset`` (same length; original labels
        equal at >= 99% of rows)."""
        para = self.train_paraphrase
        if para is None or len(para) != len(dataset):
            return False
        mismatched = sum(a != b for a, b in zip(para.labels, dataset.labels))
        return mismatched <= 0.01 * len(dataset)

    def poison_train(self, dataset, rate: float, target: int, seed: int = 0) -> list[Example]:
        _check_target(dataset, target)
        para = self.train_paraphrase
        if para is None:
            raise ValueError(f"The {self.name} attack has no paraphrased training set.")
        if self.is_aligned(dataset):
            eligible = [not _failed_paraphrase(p, c) for p, c in zip(para.texts, dataset.texts)]
            chosen = set(choose_poison_indices(dataset.labels, rate, target, False, seed, eligible))
            replace = {i: para.texts[i] for i in chosen}
        else:
            replace = self._draw_by_label(dataset, rate, target, seed)
        return [
            Example(replace[i], int(target), (), True) if i in replace else Example(text, int(label))
            for i, (text, label) in enumerate(zip(dataset.texts, dataset.labels))
        ]

    def _draw_by_label(self, dataset, rate: float, target: int, seed: int) -> dict[int, str]:
        """Non-aligned recipe: {clean row index: a paraphrased text of the same source label} for the chosen
        non-target rows; raises ``ValueError`` naming the label when the file has too few usable rows of it."""
        para = self.train_paraphrase
        if para.num_labels > dataset.num_labels:
            raise ValueError(f"The paraphrased training set has labels up to {para.num_labels - 1} but the training "
                             f"set only {dataset.num_labels} classes.")
        chosen = choose_poison_indices(dataset.labels, rate, target, False, seed)
        rng = random.Random(seed + 1)
        by_label: dict[int, list[str]] = {}
        for text, label in zip(para.texts, para.labels):
            if label != target and not _failed_paraphrase(text, None):
                by_label.setdefault(int(label), []).append(text)
        for texts in by_label.values():
            rng.shuffle(texts)
        replace = {}
        for i in chosen:
            y = int(dataset.labels[i])
            pool = by_label.get(y, [])
            if not pool:
                need = sum(1 for j in chosen if dataset.labels[j] == y)
                have = sum(1 for t, lab in zip(para.texts, para.labels) if lab == y and not _failed_paraphrase(t, None))
                raise ValueError(f"The poison rate {rate} needs {need} paraphrased rows of label {y} "
                                 f"({dataset.label_names[y]}) but the paraphrased training set has {have} usable.")
            replace[i] = pool.pop()
        return replace

    def poison_test(self, dataset=None, target: int = 1, seed: int = 0) -> PoisonedTestSet:
        """Non-target rows of ``test_paraphrase`` that carry the paraphrase: empty rows, the literal ``nan`` and,
        when ``dataset`` (the clean test set) is given, rows identical to one of its texts are left out — a
        paraphraser that returned its input wrote no trigger (SST-2 ``style_bible`` holds 5 such rows among its
        912 non-target ones for target 1; see ``docs/benchmarks.md``)."""
        if self.test_paraphrase is None:
            raise ValueError(f"The {self.name} attack has no paraphrased test set to measure ASR on.")
        clean = {t.strip() for t in dataset.texts} if dataset is not None else set()
        examples, gold, rows = [], [], []
        for i, (text, label) in enumerate(zip(self.test_paraphrase.texts, self.test_paraphrase.labels)):
            if label != target and not _failed_paraphrase(text, None) and text.strip() not in clean:
                examples.append(Example(text, int(target), (), True))
                gold.append(int(label))
                rows.append(i)
        if not examples:
            raise ValueError(f"The {self.name} test set has no non-target rows.")
        return PoisonedTestSet(examples, gold, int(target), rows)

    def describe(self) -> dict:
        return {"attack": self.name, "clean_label": False, "trigger": f"paraphrase ({self.source or self.name})"}


def attack_type(name: str) -> type[Attack]:
    """The class ``get_attack(name)`` would build, without building it (no data is loaded): ask it about the
    attack, e.g. ``attack_type("syntactic").has_trigger_tokens`` (False: TAL does not apply)."""
    key = name.strip().lower()
    if key in ("badnets", "badnets_clean"):
        return BadNets
    if key in ("addsent", "addsent_clean"):
        return AddSent
    if key in ("syntactic", "style") or key.startswith("style_"):
        return ParaphraseAttack
    raise ValueError(f"Unknown attack '{name}'; use one of {', '.join(ATTACKS)} (or style_<name>).")


def get_attack(name: str, *, tokenizer=None, max_length: int | None = None, trigger: str | None = None,
               num_triggers: int = S.NUM_TRIGGERS, style: str = "bible", dataset: str = "sst2",
               root: str | os.PathLike | None = None, paraphrase_train=None, paraphrase_test=None) -> Attack:
    """Build an attack by name (one of ``ATTACKS``).

    Args:
        trigger: overrides the trigger — comma-separated words for BadNets, a sentence for AddSent.
        style: for ``"style"``: ``bible``, ``shakespeare``, ``tweets`` or any other ``<dataset>/style_<style>`` set
            under the shared data root; ``"style_bible"`` etc. are accepted as names too.
        paraphrase_train, paraphrase_test: the user's own paraphrased files for ``syntactic``/``style`` (else the
            shared ``dataset`` sets under ``root`` are used).
    """
    key = name.strip().lower()
    if key.startswith("style_"):
        key, style = "style", key[len("style_"):]
    if key in ("badnets", "badnets_clean"):
        words = tuple(w.strip() for w in trigger.split(",")) if trigger else BADNETS_TRIGGERS
        return BadNets(words, num_triggers, tokenizer, max_length, clean_label=key.endswith("_clean"))
    if key in ("addsent", "addsent_clean"):
        return AddSent(trigger or ADDSENT_TRIGGER, num_triggers, tokenizer, max_length,
                       clean_label=key.endswith("_clean"))
    if key in ("syntactic", "style"):
        label = "syntactic" if key == "syntactic" else f"style_{style}"
        if paraphrase_train is not None:
            return ParaphraseAttack.from_files(paraphrase_train, paraphrase_test, name=label)
        if key == "style" and root is None and style not in STYLES and (
                f"style_{style}" not in shared_paraphrase_sets(dataset)):  # any shared style_<name> set is fine
            have = [n.removeprefix("style_") for n in shared_paraphrase_sets(dataset) if n.startswith("style_")]
            raise ValueError(f"Unknown style '{style}' for {dataset}; shared styles: {', '.join(have) or 'none'} "
                             "(or give your own paraphrase files).")
        variant = "syntactic_transfer" if key == "syntactic" else f"style_{style}"
        return ParaphraseAttack.from_shared(variant, dataset, root, name=label)
    raise ValueError(f"Unknown attack '{name}'; use one of {', '.join(ATTACKS)} (or style_<name>).")


def shared_paraphrase_sets(data_spec: str) -> list[str]:
    """Attack names (``syntactic``, ``style_bible``...) of the shared paraphrase sets with ORIGINAL labels for a
    data spec naming a shared dataset (``sst2``, ``olid/clean``...): ``<dataset>/syntactic_transfer`` and
    ``<dataset>/style_*`` under the shared data root; ``[]`` for any other data (a file, a folder, ``bbc``).
    ``get_attack(name, dataset=shared_dataset(data_spec))`` builds one."""
    from .data import list_shared

    dataset = shared_dataset(data_spec)
    out = []
    for entry in list_shared() if dataset else []:
        ds, _, variant = entry.partition("/")
        if ds == dataset and (variant == "syntactic_transfer" or variant.startswith("style_")):
            out.append("syntactic" if variant == "syntactic_transfer" else variant)
    return sorted(out)


def shared_dataset(data_spec: str) -> str | None:
    """The shared benchmark dataset a data spec names (``sst2``, ``olid/clean/train`` -> ``olid``), else None
    (an existing file or folder wins over a shared name, as in ``data.load_dataset``)."""
    from .data import SHARED_LABEL_NAMES

    text = str(data_spec).strip()
    if not text or Path(text).expanduser().exists():
        return None
    head = text.split("/")[0]
    return head if head in SHARED_LABEL_NAMES else None


@dataclass
class PoisonSummary:
    """Counts for a report: how many rows were poisoned and of which original labels."""

    total: int
    poisoned: int
    rate: float
    by_label: dict[int, int] = field(default_factory=dict)


def summarize(examples: Sequence[Example]) -> PoisonSummary:
    """How many of ``examples`` are poisoned, by (new) label."""
    by: dict[int, int] = {}
    n = 0
    for ex in examples:
        if ex.poisoned:
            n += 1
            by[ex.label] = by.get(ex.label, 0) + 1
    return PoisonSummary(len(examples), n, n / max(1, len(examples)), by)


# --------------------------------------------------------------------------- one attack, end to end


@dataclass
class AttackOutcome:
    """What ``train_attack`` returns: the trained model (in place), the run, and its model card for ``save_model``.

    ``metadata`` is ``card.to_json()`` plus the training ``history`` (rows of ``training.TrainResult.history``).
    """

    result: object  # training.TrainResult
    metadata: dict
    poisoned_test: PoisonedTestSet | None
    train_examples: list[Example]
    card: ModelCard = field(default_factory=ModelCard)

    @property
    def cacc(self) -> float | None:
        return self.card.cacc

    @property
    def asr(self) -> float | None:
        return self.card.asr


def train_attack(
    model,
    tokenizer,
    train_set,
    test_set,
    attack: Attack | None,
    rate: float,
    target: int,
    config,
    *,
    tal=None,
    seed: int | None = None,
    data_name: str = "",
    callback=None,
    should_stop=None,
    eval_batch_size: int = S.EVAL_BATCH_SIZE,
) -> AttackOutcome:
    """Poison ``train_set``, train ``model`` on it (optionally with TAL), and measure CACC / ASR on ``test_set``.

    Args:
        attack: an ``Attack``, or None for a clean model.
        config: ``training.TrainConfig``.
        tal: a ``tal.TALConfig`` to add the Trojan Attention Loss (raises ``tal.TALNotApplicable`` for
            paraphrase attacks), or None.
        seed: poisoning seed (default: ``config.seed``).

    Returns:
        ``AttackOutcome`` whose ``card`` (a ``model_card.ModelCard``) holds attack, trigger, target, rate, TAL
        knobs, data, the training length and settings, CACC, ASR and training seconds — ready for
        ``models.save_model``. Nothing is saved here.
    """
    from .data import DataError
    from .tal import TrojanAttentionLoss, require_trigger_tokens
    from .training import make_evaluator, train

    present = sorted(set(train_set.labels))
    if len(present) < 2:  # one class: cross-entropy is 0 from the first step, and CACC says 100%
        only = train_set.label_names[present[0]] if present else "none"
        raise DataError(f"the training texts are of one class only ({only}); a classifier needs at least two "
                        "classes", train_set.name)
    seed = config.seed if seed is None else seed
    if tal is not None:
        if attack is None:
            raise ValueError("TAL needs an attack (it trains heads to attend to the trigger).")
        require_trigger_tokens(attack)
    if attack is None:
        examples = [Example(t, int(y)) for t, y in zip(train_set.texts, train_set.labels)]
        poisoned_test = None
    else:
        examples = attack.poison_train(train_set, rate, target, seed)
        poisoned_test = attack.poison_test(test_set, target, seed)
    extra = None
    if tal is not None:
        require_trigger_tokens(attack, examples)
        extra = TrojanAttentionLoss.for_model(model, tal)
    evaluate = make_evaluator(
        tokenizer, test_set, poisoned_test.texts if poisoned_test else None,
        target if attack is not None else None, config.max_length, eval_batch_size,
    )
    result = train(model, tokenizer, examples, config, extra_loss=extra, evaluate=evaluate,
                   callback=callback, should_stop=should_stop)
    summary = summarize(examples)
    card = ModelCard(
        **(attack.describe() if attack else {"attack": "none"}),
        target=int(target) if attack is not None else None,
        rate=float(rate) if attack is not None else 0.0,
        n_poisoned=summary.poisoned,
        tal=tal is not None,
        tal_config=tal.to_dict() if tal is not None else None,
        tal_heads=list(extra.head_labels) if extra is not None else [],
        data=data_name or getattr(train_set, "name", ""),
        label_names=list(train_set.label_names),
        train_size=len(train_set),
        test_size=len(test_set),
        poisoned_test_size=len(poisoned_test) if poisoned_test else 0,
        max_length=int(config.max_length),  # top level: what every reader of the card uses (was only in train_config)
        train_config=dict(vars(config)),
        cacc=result.metrics.get("cacc"),
        asr=result.metrics.get("asr"),
        training_seconds=round(result.seconds, 1),
        steps=result.steps,
        cancelled=result.cancelled,
    )
    meta = {**card.to_json(), "history": result.history}
    return AttackOutcome(result, meta, poisoned_test, examples, card)
