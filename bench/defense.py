"""Benchmark: trigger-agnostic detection and repair of backdoored text classifiers, against baselines, on any data.

For every backdoored model (from a manifest: the attack benchmark's ``bench/models/attack_tal/manifest.json`` by
default, the test zoo's with ``--zoo test``; or any folder of saved models with ``--models-from``),
each on ITS dataset (``--data``, else the manifest entry's ``dataset``, else the model card's ``data``):

* detection AUROC on held-out clean vs triggered test inputs: our scan's score (``head_similarity``: first pass,
  ``head_similarity_2pass``: final pass; with ``settings.REPRESENTATION`` the head-focus score fused with the
  [CLS] representation distance; ``final_words``: the final pass with the pool's likely trigger words as
  evidence, ``trigger_search.marking_words`` and ``detection.with_word_evidence``; ``final_moved``: those words and
  the moved words the pool holds far more often than the clean texts, ``trigger_search.moved_pool_words``, read
  against ``--base``, which the verdict reads too, ``detection.with_moved_words``), the paper's attention-only parts of the same scan (``attention_only``,
  ``attention_only_2pass``), STRIP (``strip``), RAP (``rap``, its word trained on the defender's clean fit half) and BKI (``bki``, its
  keyword dictionary built on the pool), each with FRR / FAR at its 5%-FRR threshold on the clean dev half, and
  beside it the AUROC counting only the triggered inputs the trigger flips to the target (``fired_auroc``, a
  diagnostic: a weak backdoor leaves most triggered inputs at their clean prediction);
* ``scan_model`` with a pool of unlabelled inputs (``pool_poison`` of them triggered) -> verdict score and
  suspicious heads;
* every defense (``alignment`` = ours, ``finetune``, ``fineprune``, ``pure``) via ``defenses.run_defense``:
  ASR / CACC before and after, wall time; beside every ASR the clean model's rate on the SAME triggered texts
  (``clean_rate``: the share a model without the backdoor already puts in the target class) and the backdoor's
  lift over it (``lift = asr - clean_rate``); for ours, the accuracy of the labels it gave flagged pool inputs;
* model-level verdict AUROC over all models (clean ones are the negatives; their pool gets inputs with a
  BadNets trigger inserted, harmless to them, so pools look alike for clean and backdoored models).

Data (``--data sst2|olid|agnews|bbc|PATH``, ``defender_data.load_bench_data``): the defender's ``n_clean`` clean
labelled samples come from the dev split (never seen in training); CACC, ASR, the held-out detection sets and the
pool come from the test split, pairwise disjoint by source row (``defender_data.split_eval_rows``) and by text (a
text repeated in the test split is used once; dev rows repeating a dev or test text are left out, ``distinct_dev``),
scaled down from the mode's sizes when the data is small (the sizes used are recorded per model), refused in one
line before any model is loaded when even the minimums do not fit (``check_split_fits``, ``DEFENDER_MIN``).

    python bench/defense.py --quick                          # the attack benchmark's SST-2 models (tuning zoo)
    python bench/defense.py --quick --manifest bench/models/tuning_zoo/manifest.json --workers 2   # the whole
    #   tuning zoo (bench/test_zoo.py --zoo tuning): a one-thread part per seed, or two halves of a lone seed
    python bench/defense.py --quick --models-from DIR --data olid
    python bench/defense.py --quick --zoo test --workers 2    # the test zoo, 2 one-thread processes, merged
    python bench/defense.py --quick --zoo test --only A,B --tag p1
    python bench/defense.py --zoo test --merge p1,p2         # -> defense_test.json/.md
    python bench/defense.py --quick --zoo test --repair "" --workers 2 --tag detect   # detection only, no repair

Writes ``bench/results/defense[_test]<_tag>.json`` and ``.md`` after every model (a killed run keeps what it
finished; ``--resume`` skips finished models).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_bytes, write_text  # noqa: E402
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
MANIFEST = ROOT / "bench" / "models" / "attack_tal" / "manifest.json"
TEST_MANIFEST = ROOT / "bench" / "models" / "test_zoo" / "manifest.json"  # bench/test_zoo.py writes it
ALL_DEFENSES = ("alignment", "finetune", "fineprune", "pure")
# Quick mode repairs one model per trigger family (the ones the issue names; the strongest backdoor of each) and
# only scans the rest (detection AUROC + model verdict): repairing all 14 would not fit the 60-minute budget.
QUICK_REPAIR = ("badnets_r0.03", "badnets_r0.01_tal", "addsent_r0.03", "syntactic_r0.2", "style_bible_r0.2")
LIFT_CALLED = 0.30  # the model verdict must call every backdoor that lifts the target rate by this much

QUICK = {"n_clean": 200, "n_test": 1000, "n_poison": 200, "n_detect": 150, "pool_size": 250, "pool_poison": 0.2,
         "epochs": 3, "strip_repeats": 5}
FULL = {"n_clean": 300, "n_test": 1821, "n_poison": 912, "n_detect": 400, "pool_size": 500, "pool_poison": 0.2,
        "epochs": 4, "strip_repeats": 10}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CPU setting (default): the small sets a 2-core machine runs (times: README)")
    mode.add_argument("--full", action="store_true", help="larger eval sets (GPU)")
    p.add_argument("--models-from", default=None,
                   help="a folder of saved models (each with backdoor_lab.json giving attack/target/tal) instead of "
                        "the attack benchmark's manifest")
    p.add_argument("--manifest", default=None,
                   help="a manifest.json of models (default: the attack bench's; with --zoo test, the test zoo's)")
    p.add_argument("--data", default=None,
                   help="sst2|olid|agnews|bbc: run only the models of that dataset (models that name none are "
                        "evaluated on it); PATH: a folder with dev and test files (.tsv/.csv/.jsonl; a text repeated "
                        "within or across them is used once) to evaluate every model on. Default: each model's own "
                        "dataset (manifest entry, else model card)")
    p.add_argument("--zoo", choices=("tuning", "test"), default="tuning",
                   help="which zoo the results belong to: 'test' writes defense_test<_tag>.json/.md")
    p.add_argument("--clean-model", default=None,
                   help="a clean model folder for the clean rate (default: the models source's clean model of the "
                        "same dataset and seed)")
    p.add_argument("--only", default=None, help="comma-separated model names to run")
    p.add_argument("--defenses", default=",".join(ALL_DEFENSES), help="comma-separated defenses")
    p.add_argument("--detectors", choices=("all", "ours"), default="all",
                   help="'ours': skip the STRIP/RAP/BKI detection baselines (a run that only repairs with ours, to "
                        "be merged with a run of the baselines: put it first in --merge)")
    p.add_argument("--base", default="default",
                   help="the encoder the models were fine-tuned from, for the final_moved detection row (the moved "
                        "words the pool holds far more often than the clean texts also mark inputs; "
                        "trigger_search.moved_pool_words) and the verdict's moved words (detection.with_moved_words, "
                        "as the Detect page's scan reads them); 'default' = the packaged all-MiniLM-L6-v2, '' = off. A "
                        "model not fine-tuned from it gets neither")
    p.add_argument("--no-defense-for", default="", help="model names to scan but not repair (saves time)")
    p.add_argument("--repair", default=None,
                   help="comma-separated model names to repair, or 'all' (quick default: one per family, "
                        f"{','.join(QUICK_REPAIR)}, when present; else all backdoored models)")
    p.add_argument("--n-clean", type=int, default=None, help="defender's clean labelled samples")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every defense's fine-tuning")
    p.add_argument("--pool-poison", type=float, default=None,
                   help="share of the pool's inputs that carry the trigger (the mode's default: 0.2); the pool's "
                        "size stays the mode's")
    p.add_argument("--align-knobs", default=None,
                   help='JSON of our repair\'s knobs for an ablation (defenses.DEFENSES["alignment"].knobs), '
                        'e.g. \'{"retain": 1.0}\'; recorded in the settings')
    p.add_argument("--scan-knobs", default=None,
                   help="JSON object of scan_model keyword arguments for the scan every detector and our repair "
                        "use, e.g. '{\"rep_method\": \"contrast\"}'")
    p.add_argument("--dump-scores", default=None, metavar="DIR",
                   help="also write each model's final-pass verdict inputs to DIR/<model>.npz (clean dev scores, "
                        "pool scores, pool predictions, which pool inputs carry the trigger, threshold): for "
                        "studying the verdict offline (detection.model_verdict re-scores them)")
    p.add_argument("--dev-asr", type=int, default=0, metavar="N",
                   help="also read ASR, the clean rate and the lift on up to N triggered dev rows the defender did "
                        "not draw (insertion triggers; a second ASR set, disjoint from every other; 0 = off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation draw (sets, pool, defender data)")
    p.add_argument("--tag", default="", help="write defense[_test]<_tag>.json/.md")
    p.add_argument("--resume", action="store_true", help="skip models already in the results json")
    p.add_argument("--merge", default=None,
                   help="comma-separated tags of runs made in parallel (e.g. repair,scan): merge them into "
                        "defense[_test].json/.md and exit")
    p.add_argument("--merge-note", default="", help="what the merged runs differ in (written above the ablation)")
    p.add_argument("--merge-rescan", default="",
                   help="comma-separated tags among --merge's whose scans are newer than the earlier parts' (a "
                        "rule of the scan changed): their models' fields and detection rows replace the earlier ones")
    p.add_argument("--workers", type=int, default=1,
                   help="N > 1: run the models in N one-thread processes, one (dataset, seed) group per process with "
                        "the group's seed as --seed, then merge the parts into defense[_test]<_tag>.json/.md")
    args = p.parse_args(argv)
    if args.manifest is None:
        args.manifest = str(TEST_MANIFEST if args.zoo == "test" else MANIFEST)
    return args


def _dataset_name(value) -> str | None:
    """A known benchmark dataset named by a manifest entry or a card's ``data`` (``sst2/clean/train`` -> sst2), or
    the data folder an absolute path names (``bench/attack_tal.py --data FOLDER`` records it resolved): the bench
    reads its dev and test files."""
    from backdoor_core.defender_data import BENCH_DATASETS

    text = str(value or "").strip()
    head = text.lower().split("/")[0].split(":")[0]
    if head in BENCH_DATASETS:
        return head
    return text if text and Path(text).is_absolute() and Path(text).is_dir() else None


def _seed_of(entry: dict, card):
    seed = entry.get("seed")
    if seed is None:
        seed = (card.train_config or {}).get("seed")
    return int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None


def _model_row(name: str, path: str, card, entry: dict | None = None) -> dict:
    """One model to benchmark, from its model card (``model_card.ModelCard``) and its manifest entry: attack
    ("clean" when none), TAL, rate, the card itself (target rule: ``card.target_for``), the reading length
    (``card.reading_length``), its dataset and seed, its clean model's name and its paraphrase files, if any."""
    entry = entry or {}
    for w in card.warnings:
        print(f"warning: {name}: {w}", file=sys.stderr)
    return {"name": name, "path": path, "attack": card.attack if card.is_backdoored else "clean",
            "tal": bool(card.tal), "rate": card.rate, "max_length": card.reading_length(), "card": card,
            "dataset": _dataset_name(entry.get("dataset")) or _dataset_name(card.data),
            "seed": _seed_of(entry, card), "clean_model": entry.get("clean_model"),
            "paraphrase_train": entry.get("paraphrase_train"), "paraphrase_test": entry.get("paraphrase_test")}


def discover(args) -> list[dict]:
    """[{name, path, attack, tal, rate, max_length, card, dataset, seed, ...}] for the models in a folder (each
    with its ``backdoor_lab.json``) or in a manifest (each model's own card; the manifest's entry when a folder
    has none)."""
    from backdoor_core.model_card import METADATA_FILE, ModelCard

    if args.models_from:
        return [_model_row(d.name, str(d), ModelCard.read(d)) for d in sorted(Path(args.models_from).iterdir())
                if (d / METADATA_FILE).is_file()]
    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise SystemExit(f"No manifest at {manifest}: run bench/attack_tal.py first, or pass --models-from DIR.")
    out = []
    for m in json.loads(manifest.read_text())["models"]:
        path = str(ROOT / m["path"]) if not Path(m["path"]).is_absolute() else m["path"]
        card = ModelCard.read(path) if (Path(path) / METADATA_FILE).is_file() else ModelCard.from_json(m)
        out.append(_model_row(m["name"], path, card, m))
    return out


def clean_model_for(m: dict, models: list[dict]) -> dict | None:
    """The clean model to measure ``m``'s clean rate with: the one its manifest entry names (``clean_model``),
    else a clean model of the same dataset (the same seed when several; the first by name otherwise)."""
    if m.get("clean_model"):
        named = [c for c in models if c["name"] == m["clean_model"]]
        if named:
            return named[0]
    clean = sorted((c for c in models if c["attack"] == "clean" and c.get("dataset") == m.get("dataset")),
                   key=lambda c: c["name"])
    same_seed = [c for c in clean if m.get("seed") is not None and c.get("seed") == m.get("seed")]
    return (same_seed or clean or [None])[0]


def _resolve_path(p: str | None) -> str | None:
    if not p:
        return None
    return str(ROOT / p) if not Path(p).is_absolute() else p


def build_attack(m: dict, dataset: str, tokenizer, max_length: int):
    """The attack that makes ``m``'s triggered inputs: a harmless BadNets trigger for clean models, the manifest's
    paraphrase files for paraphrase attacks that name them (``ParaphraseAttack.from_files``), else the card's
    attack (``defender_data.model_attack``; off SST-2 a paraphrase attack is looked up in the shared sets of
    ``dataset``). Exits with one line when it cannot be rebuilt here."""
    from backdoor_core.data import DataError
    from backdoor_core.defender_data import model_attack
    from backdoor_core.poisoning import ParaphraseAttack, attack_type, get_attack

    if m["attack"] == "clean":
        return get_attack("badnets", tokenizer=tokenizer, max_length=max_length)
    if m.get("paraphrase_train") or m.get("paraphrase_test"):
        train, test = _resolve_path(m.get("paraphrase_train")), _resolve_path(m.get("paraphrase_test"))
        try:
            if train:
                return ParaphraseAttack.from_files(train, test, name=m["attack"])
            from backdoor_core.data import load_table

            return ParaphraseAttack(None, load_table(test), m["attack"], test)  # the test side is all we need
        except (DataError, OSError) as exc:
            _fail(f"{m['name']}: cannot read its paraphrase files: {exc}")
    try:
        paraphrase = not attack_type(str(m["attack"])).has_trigger_tokens
    except ValueError:
        paraphrase = False
    if paraphrase and dataset not in ("sst2", None):
        for variant in ("syntactic", "syntactic_transfer") if str(m["attack"]).startswith("syntactic") else ():
            try:
                return ParaphraseAttack.from_shared(variant, dataset, name=m["attack"])
            except DataError:
                continue
        try:
            return get_attack(m["attack"], dataset=dataset)
        except (ValueError, DataError, OSError):
            _fail(f"{m['name']}: no paraphrased {dataset} test set for '{m['attack']}': name paraphrase_test in "
                  "the manifest entry")
    attack = model_attack(m["card"], tokenizer, max_length)
    if attack is None:
        _fail(f"{m['name']}: cannot rebuild its attack '{m['attack']}' here (paraphrase data?).")
    return attack


DEFENDER_MIN = 40
"""The fewest clean labelled dev texts the bench runs with (our choice): the scan fits on half of them and sets its
5%-FRR threshold on the other half; below 20 per half that threshold is one or two texts."""


def _text_key(text) -> str:
    return " ".join(str(text).split())


def distinct_dev(dev, test):
    """``(dev, n_left_out)``: the dev split without rows whose text (whitespace aside) repeats an earlier dev row or
    is a text of the test split, so the defender's data and ``--dev-asr``'s set hold no evaluation text and no text
    twice. ``dev`` itself when nothing repeats. (Repeated test texts: ``split_eval_rows(texts=...)``.)"""
    held = {_text_key(t) for t in test.texts}
    keep, seen = [], set()
    for i, t in enumerate(dev.texts):
        key = _text_key(t)
        if key not in held and key not in seen:
            keep.append(i)
        seen.add(key)
    return (dev, 0) if len(keep) == len(dev) else (dev.subset(keep), len(dev) - len(keep))


def defender_draw(dev, n: int, seed: int):
    """The defender's ``n`` labelled clean texts of a run seeded ``seed``: drawn from the dataset's dev split with
    ``seed + 11``, fewer where the split holds fewer. Every benchmark and diagnostic that re-reads a run draws them
    here."""
    return dev.sample(min(n, len(dev)), seed=seed + 11)


def evaluation_draw(m: dict, ds_name: str, test, target: int, tokenizer, sizes: dict, seed: int) -> dict:
    """The benchmark's evaluation draw for model ``m`` (an entry of ``discover``, with its ``card``) on ``test``:
    the triggered test texts (``attack.poison_test``) and the pairwise-disjoint rows of
    ``defender_data.split_eval_rows`` at ``sizes`` (``QUICK`` / ``FULL``), seeded by ``seed``. Returns ``split``,
    ``poisoned``, the ASR texts ``asr_texts``, the held-out ``detect_clean`` / ``detect_triggered`` texts, the clean
    test texts the held-out triggered ones were made from, ``detect_sources`` (None where the triggered rows are
    rows of a paraphrased file not row-aligned with ``test``: they have no clean source row there), and the
    shuffled ``pool`` with each input's true label (a triggered input's source label) ``pool_true`` and
    ``pool_is_triggered``, kept on the bench side only. A data set too small or an attack that cannot poison it
    exits with one line (``_fail``). ``bench/contrast_check.py`` draws the same sets."""
    from backdoor_core.defender_data import SplitError, rows_aligned, split_eval_rows

    attack = build_attack(m, ds_name, tokenizer, m["max_length"])
    try:
        poisoned = attack.poison_test(test, target, seed=seed)
    except ValueError as exc:
        _fail(f"{m['name']}: {exc}")
    try:
        split = split_eval_rows(test.labels, target, poisoned.source_rows, n_test=sizes["n_test"],
                                n_poison=sizes["n_poison"], n_detect=sizes["n_detect"],
                                pool_size=sizes["pool_size"], pool_poison=sizes["pool_poison"],
                                shared_rows=rows_aligned(attack, test), seed=seed + 5,
                                name=f"{m['name']} ({ds_name} test)", texts=test.texts)
    except SplitError as exc:
        _fail(str(exc))
    at = {r: k for k, r in enumerate(poisoned.source_rows)}  # source row -> triggered example

    def trig(rows):
        return [poisoned.texts[at[r]] for r in rows]

    items = [(poisoned.texts[at[r]], poisoned.gold_labels[at[r]], True) for r in split.pool_triggered] + \
            [(test.texts[i], test.labels[i], False) for i in split.pool_clean]
    random.Random(seed + 9).shuffle(items)
    return {"split": split, "poisoned": poisoned, "asr_texts": trig(split.asr),
            "detect_clean": [test.texts[i] for i in split.detect_clean],
            "detect_triggered": trig(split.detect_triggered), "pool_triggered": trig(split.pool_triggered),
            "detect_sources": ([test.texts[r] for r in split.detect_triggered] if split.sizes["shared_rows"]
                               else None),
            "pool": [t for t, _, _ in items], "pool_true": [y for _, y, _ in items],
            "pool_is_triggered": [f for _, _, f in items]}


def bench_data(name: str, seed: int, n_clean: int, cache: dict | None = None):
    """``(dev, test, name, dev rows left out)`` of ``--data`` (``defender_data.load_bench_data``): the dev split
    without repeated texts or texts of the test split (``distinct_dev``); one line and exit 2 when the data cannot
    be read or holds fewer than ``DEFENDER_MIN`` such dev texts. ``cache``: a dict keyed by ``name``."""
    from backdoor_core.data import DataError
    from backdoor_core.defender_data import load_bench_data

    cache = {} if cache is None else cache
    if name not in cache:
        if Path(str(name)).expanduser().is_file():
            _fail(f"--data {name}: a file, but the bench reads a folder: put the defender's rows in dev.tsv (or "
                  ".csv/.jsonl) and the evaluation rows in test.tsv of one folder and pass the folder")
        try:
            dev, test, ds_name = load_bench_data(name, seed=seed)
        except DataError as exc:
            _fail(f"--data {name}: {exc}")
        dev, n_out = distinct_dev(dev, test)
        if len(dev) < DEFENDER_MIN:
            _fail(f"--data {name}: the dev split has {len(dev)} distinct texts not in the test split"
                  + (f" ({n_out} repeated or test texts left out)" if n_out else "")
                  + f"; the defender needs at least {DEFENDER_MIN} clean labelled texts (--n-clean "
                  f"{n_clean} asked for).")
        cache[name] = (dev, test, ds_name, n_out)
    return cache[name]


def check_split_fits(m: dict, test, sizes: dict, seed: int) -> None:
    """Exit with one line, before any model is loaded, when ``m``'s card names another number of classes than
    ``test`` has, or (``split_eval_rows``' line) when ``test`` cannot hold ``m``'s
    disjoint evaluation sets even at ``EVAL_MINIMUMS`` (e.g. a target class that leaves few non-target rows). For
    insertion triggers (and clean models' harmless BadNets) every non-target row can carry the trigger; a
    paraphrase attack's rows are known only once its set is read (``evaluation_draw`` checks it then)."""
    from backdoor_core.defender_data import SplitError, split_eval_rows
    from backdoor_core.poisoning import attack_type

    names = list(m["card"].label_names or [])
    if names and len(names) != test.num_labels:  # the card's classes (the loaded model is checked again)
        _fail(f"{m['name']}: the model has {len(names)} classes ({', '.join(names)}) but its data has "
              f"{test.num_labels} ({', '.join(test.label_names)}): pass the model's dataset with --data")
    if m["attack"] != "clean":
        try:
            if not attack_type(str(m["attack"])).has_trigger_tokens:
                return
        except ValueError:
            return
    target = m["card"].target_for(test.label_names)
    rows = [i for i, y in enumerate(test.labels) if int(y) != target]
    try:
        split_eval_rows(test.labels, target, rows, n_test=sizes["n_test"], n_poison=sizes["n_poison"],
                        n_detect=sizes["n_detect"], pool_size=sizes["pool_size"], pool_poison=sizes["pool_poison"],
                        seed=seed + 5, texts=test.texts,
                        name=f"{m['name']} (target {target}" + (f", {test.label_names[target]})" if
                                                               test.label_names[target] != str(target) else ")"))
    except SplitError as exc:
        _fail(str(exc))


def dev_asr_texts(m: dict, ds_name: str, dev, defender, target: int, tokenizer, n: int, seed: int) -> list[str]:
    """``--dev-asr``: a second ASR set, the triggered texts of up to ``n`` non-target rows of the ``dev`` split that
    the defender's sample (``defender``) does not hold (a seeded draw; rows whose text the defender holds are left
    out, so it is disjoint from the defender's data and, being dev, from every test set). Empty for a paraphrase
    trigger: its dev paraphrases are not the rows of the clean dev split. Our design; it makes a weak backdoor's
    lift, read on the test split's few non-target rows (OLID: 57 ASR texts), measurable to a few points."""
    from backdoor_core.poisoning import attack_type

    try:
        if not attack_type(str(m["attack"])).has_trigger_tokens:
            return []
    except ValueError:
        return []
    held = set(defender.texts)
    rest = [i for i, t in enumerate(dev.texts) if t not in held]
    poisoned = build_attack(m, ds_name, tokenizer, m["max_length"]).poison_test(dev.subset(rest), target, seed=seed)
    order = random.Random(seed + 13).sample(range(len(poisoned.texts)), min(int(n), len(poisoned.texts)))
    return [poisoned.texts[k] for k in sorted(order)]


def lift_ci95(clean_hits, hits) -> list | None:
    """``[low, high]``, the lift's paired 95% interval (``metrics.lift_interval``) of ``hits`` over ``clean_hits``
    (``(n,)`` bools each, the same texts), rounded as the rows keep it; None without the clean model's hits."""
    from backdoor_core.metrics import lift_interval

    if clean_hits is None or hits is None:
        return None
    li = lift_interval(clean_hits, hits)
    return [round(li["low"], 4), round(li["high"], 4)]


def parse_scan_knobs(text: str) -> dict:
    """``--scan-knobs`` read: a JSON object of ``scan_model`` keyword arguments, checked before any model loads.

    Raises ValueError, with a one-line message, on text that is not a JSON object, on an argument ``scan_model``
    does not take (or one the benchmark sets itself), on an unknown verdict rule, first-pass kind or
    representation method, and on a switch (a ``bool`` argument) given anything but true or false."""
    import inspect

    from backdoor_core.detection import FIRST_PASSES, REP_METHODS, VERDICT_RULES
    from backdoor_core.scan import scan_model

    try:
        knobs = json.loads(text)
        if not isinstance(knobs, dict):
            raise TypeError(f"got {type(knobs).__name__}")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--scan-knobs must be a JSON object such as '{{\"rep_method\": \"contrast\"}}': {exc}")
    params = inspect.signature(scan_model).parameters
    allowed = set(params) - {"model", "tokenizer", "clean", "pool_texts", "max_length", "seed", "model_name"}
    unknown = sorted(set(knobs) - allowed)
    if unknown:
        raise ValueError(f"--scan-knobs: unknown scan_model argument(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(allowed))}")
    for knob, choices in (("verdict_rule", VERDICT_RULES), ("first_pass_kind", FIRST_PASSES),
                          ("rep_method", REP_METHODS)):
        if knobs.get(knob, choices[0]) not in choices:
            raise ValueError(f"--scan-knobs: {knob} must be one of {', '.join(choices)}")
    for knob, value in knobs.items():  # a switch takes true or false, not a string that reads as true
        if isinstance(params[knob].default, bool) and not isinstance(value, bool):
            raise ValueError(f"--scan-knobs: {knob} must be true or false, got {json.dumps(value)}")
    return knobs


def _sizes_used(sized: list[dict], s: dict) -> str:
    """One sentence with the sizes every model used, when they all used the same and those differ from the mode's
    (``settings``) that the paragraph names; else empty."""
    keys = ("n_clean", "n_test", "n_poison", "n_detect_clean", "n_detect_triggered", "pool_size", "pool_triggered")
    used = {tuple(m["eval_sizes"].get(k) for k in keys) for m in sized}
    if len(used) != 1:
        return ""
    z = dict(zip(keys, used.pop()))
    if (z["n_clean"], z["n_test"], z["n_poison"], z["pool_size"]) == (s.get("n_clean"), s["n_test"], s["n_poison"],
                                                                       s["pool_size"]):
        return ""
    return (f"Every model here used: defender data {z['n_clean']}, CACC {z['n_test']}, ASR {z['n_poison']}, "
            f"detection {z['n_detect_clean']} clean / {z['n_detect_triggered']} triggered, pool {z['pool_size']} "
            f"({z['pool_triggered']} triggered). ")


def _left_out(z: dict) -> str:
    """The Markdown note on the rows a repeated text kept out of the sets (test, dev), empty when none."""
    parts = [f"{z[k]} repeated {what}" for k, what in (("rows_duplicate", "test"), ("dev_left_out", "dev"))
             if z.get(k)]
    return "; left out: " + ", ".join(parts) if parts else ""


def _fail(message: str):
    print(message, file=sys.stderr)
    raise SystemExit(2)


FIRED_MIN = 5  # fewer flipped inputs than this: no "fired" AUROC (too few positives to rank)


def fired_auroc(clean_scores, triggered_scores, fired) -> dict:
    """Detection AUROC counting as positives only the triggered inputs the trigger flips (``fired``: ``(n_trig,)``
    bool, the model says the target on the triggered text and not on its clean source row), against the same
    clean inputs: ``{"auroc_fired", "n_fired"}`` (``auroc_fired`` None under ``FIRED_MIN`` flipped inputs; both None
    when ``fired`` is None: triggered inputs without a clean source row, whose flips cannot be told). A
    diagnostic beside the goal's AUROC over every triggered input: on a weak backdoor most triggered inputs keep
    their clean prediction and no detector that reads the model can tell them from clean ones."""
    import numpy as np

    from backdoor_core.metrics import auroc

    if fired is None:
        return {"auroc_fired": None, "n_fired": None}
    fired = np.asarray(fired, dtype=bool)
    n = int(fired.sum())
    value = auroc(clean_scores, np.asarray(triggered_scores)[fired]) if n >= FIRED_MIN else None
    return {"auroc_fired": value, "n_fired": n}


def family(attack: str) -> str:
    a = attack.lower()
    if a.startswith("badnets"):
        return "word"
    if a.startswith("addsent"):
        return "sentence"
    if a.startswith("syntactic"):
        return "syntactic"
    if a.startswith("style"):
        return "style"
    return "clean"


def results_stem(zoo: str, tag: str = "") -> str:
    """``defense[_test]<_tag>``: the file name (without suffix) a run of ``zoo`` writes."""
    return "defense" + ("_test" if zoo == "test" else "") + (f"_{tag}" if tag else "")


_GROUP_OPTIONS = ("--workers", "--tag", "--only", "--seed", "--merge", "--merge-note", "--merge-rescan")


def run_parallel(args, argv: list[str]) -> int:
    """``--workers N``: each (dataset, seed) group of the chosen models (clean ones included: the verdict needs
    them) runs as ``defense.py ... --only GROUP --seed SEED --tag <tag>_wK`` in a one-thread process, at most N at
    a time; the parts are then merged (``merge``) into ``defense[_test]<_tag>`` with the wall time recorded. A
    model without a seed uses ``--seed``. With fewer groups than workers (the one-seed SST-2 tuning zoo) the
    largest groups are split (``split_groups``): every model is run on its own, so a part only changes who runs
    it. Each part writes to a hidden ``.<stem>_<part>.log``: removed after the merge, kept when a part fails (the
    message points there); a Ctrl-C (any exception) stops the running parts and removes every log."""
    import subprocess

    models = models_for_data(args, discover(args))
    if args.only:
        keep = set(args.only.split(","))
        models = [m for m in models if m["name"] in keep]
    groups: dict[tuple, list[str]] = {}
    for m in models:
        groups.setdefault((m["dataset"], args.seed if m["seed"] is None else m["seed"]), []).append(m["name"])
    if not groups:
        raise SystemExit("No models to run.")
    sizes = dict(FULL if args.full else QUICK)  # the parts' sizes: data too small is refused here, in one line
    sizes.update({k: v for k, v in (("n_clean", args.n_clean), ("pool_poison", args.pool_poison)) if v is not None})
    caches: dict = {}
    for m in (m for m in models if m.get("card") is not None):  # rows of discover (each with its model card)
        seed = args.seed if m["seed"] is None else m["seed"]
        check_split_fits(m, bench_data(m["dataset"], seed, sizes["n_clean"], caches.setdefault(seed, {}))[1], sizes,
                         seed)
    base, skip = [], False
    for a in argv:  # the same options, minus the ones each part sets itself
        if skip:
            skip = False
            continue
        if a in _GROUP_OPTIONS:
            skip = True
            continue
        if any(a.startswith(o + "=") for o in _GROUP_OPTIONS):
            continue
        base.append(a)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "BACKDOOR_BENCH_RESULTS": str(RESULTS)}
    t0 = time.perf_counter()
    # the largest groups first (longest-processing-time order): the workers finish closer together
    order = split_groups(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0][0], kv[0][1])), args.workers)
    pending = [(f"{args.tag + '_' if args.tag else ''}w{k}", seed, names) for k, ((_, seed), names) in enumerate(order)]
    tags, running, failed = [], [], []
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        while pending or running:
            while pending and len(running) < max(1, args.workers):
                tag, seed, names = pending.pop(0)
                cmd = [sys.executable, str(Path(__file__).resolve()), *base, "--only", ",".join(names), "--seed",
                       str(seed), "--tag", tag]
                tags.append(tag)  # before its log exists: a Ctrl-C from here on still finds the log to remove
                log = open(RESULTS / f".{results_stem(args.zoo, tag)}.log", "w")
                print(f"part {tag}: seed {seed}, {len(names)} models ({', '.join(names)})", flush=True)
                running.append((tag, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            time.sleep(0.5)
            for item in list(running):
                tag, proc, log = item
                if proc.poll() is not None:
                    log.close()
                    running.remove(item)
                    if proc.returncode != 0:
                        failed.append(tag)
                    print(f"part {tag} done (exit {proc.returncode}) at {time.perf_counter() - t0:.0f} s", flush=True)
    except BaseException:  # Ctrl-C: the parts still running stop, and no hidden log is left behind
        try:
            _stop_parts(running)
        finally:  # a second Ctrl-C while the parts stop still removes the logs
            for tag in tags:
                (RESULTS / f".{results_stem(args.zoo, tag)}.log").unlink(missing_ok=True)
        raise
    if failed:
        _fail(f"parts {', '.join(failed)} failed: see {RESULTS}/.defense*_<part>.log")
    report = merge(tags, args.tag, f"{len(tags)} parts in {args.workers} one-thread processes (--workers)", args.zoo)
    report["settings"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    report["settings"]["workers"] = int(args.workers)
    stem = results_stem(args.zoo, args.tag)
    write_text(RESULTS / f"{stem}.json", json.dumps(report, indent=2, default=float))
    write_text(RESULTS / f"{stem}.md", markdown(report))
    print(markdown(report))
    print(f"wall time {report['settings']['wall_seconds'] / 60:.1f} min with {args.workers} workers", flush=True)
    for tag in tags:
        (RESULTS / f".{results_stem(args.zoo, tag)}.log").unlink(missing_ok=True)
    return 0


def _stop_parts(running: list) -> None:
    """End the ``(tag, Popen, log)`` parts of an interrupted ``--workers`` run: each is terminated (in a terminal it
    got the Ctrl-C too; run from code it did not, and would run on alone), waited for (killed after 10 s) and its
    log closed."""
    import subprocess

    for _, proc, _ in running:
        if proc.poll() is None:
            proc.terminate()
    for _, proc, log in running:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def split_groups(groups: list[tuple[tuple, list[str]]], workers: int) -> list[tuple[tuple, list[str]]]:
    """Split the largest group in two (models dealt alternately, so both halves mix the families) until there
    are ``workers`` parts or no group has two models; the result stays largest first. ``groups``: ``[((dataset,
    seed), [model names])]``, largest first."""
    parts = [(key, list(names)) for key, names in groups]
    while len(parts) < workers:
        k = max(range(len(parts)), key=lambda i: len(parts[i][1]))
        key, names = parts[k]
        if len(names) < 2:
            break
        parts[k:k + 1] = [(key, names[0::2]), (key, names[1::2])]
    return sorted(parts, key=lambda kv: -len(kv[1]))


def models_for_data(args, all_models: list[dict]) -> list[dict]:
    """Give every model the dataset it is evaluated on (``--data PATH``: that folder; else its own, ``--data``
    NAME or SST-2 when it names none; set in place) and keep those of ``--data`` NAME when one is given."""
    from backdoor_core.defender_data import BENCH_DATASETS

    data_spec = args.data.strip() if args.data else None
    data_is_name = data_spec is not None and data_spec.lower() in BENCH_DATASETS
    for m in all_models:  # every model is evaluated on ITS dataset
        if data_spec and not data_is_name:
            m["dataset"] = data_spec
        elif m["dataset"] is None:
            m["dataset"] = data_spec.lower() if data_spec else "sst2"
    return [m for m in all_models if not data_is_name or m["dataset"] == data_spec.lower()]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        print(markdown(merge([t for t in args.merge.split(",") if t], args.tag, args.merge_note, args.zoo,
                             rescan={t for t in args.merge_rescan.split(",") if t})))
        return 0
    if args.workers > 1:
        return run_parallel(args, list(sys.argv[1:] if argv is None else argv))
    import numpy as np
    import torch

    from backdoor_core.attention import predict
    from backdoor_core.baselines.bki import BKI
    from backdoor_core.baselines.rap import RAP
    from backdoor_core.baselines.strip import class_calibrated, strip_scores
    from backdoor_core.cli import quiet_libraries
    from backdoor_core import settings as S
    from backdoor_core.defender_data import clean_hits as clean_hits_of, lift, pseudo_label_accuracy
    from backdoor_core.defenses import run_defense
    from backdoor_core.detection import (attention_stats, evaluate_detector, flags_score, verdict_call,
                                         with_moved_words, with_trigger_words, with_word_evidence)
    from backdoor_core.metrics import accuracy_change, threshold_at_frr
    from backdoor_core.models import load_model
    from backdoor_core.scan import scan_model
    from backdoor_core.training import make_evaluator
    from backdoor_core.pretrained import find_pretrained
    from backdoor_core.trigger_search import marking_flip, moved_marking, pool_word_marks, word_marks

    quiet_libraries()
    settings = dict(FULL if args.full else QUICK)
    if args.n_clean is not None:
        if args.n_clean < DEFENDER_MIN:
            _fail(f"--n-clean is the defender's clean labelled texts, at least {DEFENDER_MIN}, got {args.n_clean}.")
        settings["n_clean"] = args.n_clean
    if args.epochs:
        settings["epochs"] = args.epochs
    if args.dev_asr < 0:
        _fail(f"--dev-asr is a number of dev texts (0 = off), got {args.dev_asr}.")
    if args.pool_poison is not None:
        if not 0 < args.pool_poison < 1:
            _fail(f"--pool-poison is a share of the pool (above 0, below 1), got {args.pool_poison:g}.")
        settings["pool_poison"] = float(args.pool_poison)
    if args.align_knobs:
        try:
            settings["align_knobs"] = dict(json.loads(args.align_knobs))
        except (ValueError, TypeError) as exc:
            _fail(f"--align-knobs must be a JSON object such as '{{\"retain\": 1.0}}': {exc}")
    if args.scan_knobs:
        try:
            settings["scan_knobs"] = parse_scan_knobs(args.scan_knobs)
        except ValueError as exc:
            _fail(str(exc))
    settings.update({"mode": "full" if args.full else "quick", "seed": args.seed,
                     "threads": torch.get_num_threads(), "zoo": args.zoo, "data": args.data,
                     "models_source": args.models_from or str(Path(args.manifest).relative_to(ROOT)
                                                              if Path(args.manifest).is_relative_to(ROOT)
                                                              else args.manifest)})
    defenses = [d for d in args.defenses.split(",") if d]
    skip_defense = {s for s in args.no_defense_for.split(",") if s}
    all_models = discover(args)
    models = models_for_data(args, all_models)
    names = {m["name"] for m in models}
    if args.repair == "all" or (args.repair is None and (args.full or not names & set(QUICK_REPAIR))):
        repair = {m["name"] for m in models if m["attack"] != "clean"}
    else:
        repair = set(QUICK_REPAIR) if args.repair is None else {s for s in args.repair.split(",") if s}
    repair -= skip_defense
    settings["repaired_models"] = sorted(repair & names)
    models.sort(key=lambda m: m["name"] not in repair)  # repairs first: a cut-short run keeps the main table
    if args.only:
        keep = set(args.only.split(","))
        models = [m for m in models if m["name"] in keep]
    if not models:
        raise SystemExit("No models to run.")
    given_clean = None
    if args.clean_model:
        given_clean = {"name": Path(args.clean_model).name, "path": args.clean_model}

    seed = args.seed
    data_cache: dict = {}

    def data_for(name: str):
        return bench_data(name, seed, settings["n_clean"], data_cache)

    for m in models:  # every dataset read and every model's sets checked before any model is loaded
        check_split_fits(m, data_for(m["dataset"])[1], settings, seed)

    clean_cache: dict = {}

    def clean_loaded(c: dict):
        if c["path"] not in clean_cache:
            clean_cache[c["path"]] = load_model(c["path"])
        return clean_cache[c["path"]]

    stem = results_stem(args.zoo, args.tag)
    json_path, md_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"zoo": args.zoo, "dataset": None, "settings": settings, "runs": [], "detection": [], "models": [],
              "model_verdict": {}}
    if args.resume and json_path.is_file():
        old = json.loads(json_path.read_text())
        report.update({k: old.get(k, report[k]) for k in ("runs", "detection", "models")})
    done = {m["name"] for m in report["models"]}
    t_all = time.perf_counter()

    def save():
        report["dataset"] = _datasets_label(report["models"] + report["runs"])
        report["model_verdict"] = verdict_summary(report["models"])
        report["seconds_total"] = round(time.perf_counter() - t_all, 1)
        write_text(json_path, json.dumps(report, indent=2, default=float))
        write_text(md_path, markdown(report))

    for m in models:
        if m["name"] in done:
            print(f"[resume] {m['name']}", flush=True)
            continue
        t_model = time.perf_counter()
        dev, test, ds_name, dev_left_out = data_for(m["dataset"])
        defender = defender_draw(dev, settings["n_clean"], seed)
        lm = load_model(m["path"])
        if int(lm.model.config.num_labels) != test.num_labels:
            _fail(f"{m['name']}: the model has {lm.model.config.num_labels} classes but {ds_name} has "
                  f"{test.num_labels} {test.label_names}: pass the model's dataset with --data")
        L = m["max_length"]
        target = m["card"].target_for(test.label_names)  # the one target rule (recorded target, else preferences)
        is_bd = m["attack"] != "clean"
        draw = evaluation_draw(m, ds_name, test, target, lm.tokenizer, settings, seed)
        split, poisoned = draw["split"], draw["poisoned"]
        poisoned_eval, poisoned_det, poisoned_pool = draw["asr_texts"], draw["detect_triggered"], \
            draw["pool_triggered"]
        eval_clean = test.subset(split.cacc)
        det_clean = draw["detect_clean"]
        pool, pool_true, pool_is_trig = draw["pool"], draw["pool_true"], draw["pool_is_triggered"]
        sizes = {**split.sizes, "n_clean": len(defender), "dev_left_out": dev_left_out}
        evaluate = make_evaluator(lm.tokenizer, eval_clean, poisoned_eval if is_bd else None, target, L)
        before_classes: list = []  # (n,) the suspect's classes on the CACC set, for the paired CACC change
        before_hits: list = []  # (m,) the suspect's "sent to the target" on the ASR texts, for the lift's interval
        before = evaluate(lm.model, before_classes, before_hits)
        # the clean model's rate on the SAME triggered texts: what the backdoor's ASR is measured against
        clean_rate, clean_name, clean_hits = None, None, None
        cm = given_clean or (clean_model_for(m, all_models) if is_bd else None)
        if is_bd and cm is not None:
            try:  # at the clean model's own reading length (the zoo's: its manifest's max_length)
                clean_hits = clean_hits_of(clean_loaded(cm), lm, poisoned_eval, target)
            except ValueError as exc:
                _fail(f"{m['name']}: {exc}")
            clean_rate = None if clean_hits is None else float(clean_hits.mean())
            clean_name = cm["name"]
        lift_before = lift(before.get("asr"), clean_rate)
        # --dev-asr: the second ASR set, its clean rate and the suspect's hits on it
        dev_texts = (dev_asr_texts(m, ds_name, dev, defender, target, lm.tokenizer, args.dev_asr, seed)
                     if args.dev_asr and is_bd else [])
        dev_clean_hits = (clean_hits_of(clean_loaded(cm), lm, dev_texts, target)
                          if dev_texts and cm is not None else None)

        def dev_hits(model):
            """``(k,)`` bools: ``model`` sends each dev ASR text to the target."""
            return np.asarray(predict(model, lm.tokenizer, dev_texts, L).argmax(1) == target)

        def dev_fields(hits, when: str) -> dict:
            """The ``dev_*`` row fields of ``hits`` (``before`` / ``after``): ASR, and with a clean model the
            lift and its paired interval."""
            out = {f"dev_asr_{when}": round(float(hits.mean()), 4)}
            if dev_clean_hits is not None:
                out[f"dev_lift_{when}"] = round(lift(float(hits.mean()), float(dev_clean_hits.mean())), 4)
                out[f"dev_lift_{when}_ci95"] = lift_ci95(dev_clean_hits, hits)
            return out

        dev_before = dev_fields(dev_hits(lm.model), "before") if dev_texts else {}
        if dev_texts:
            dev_before["dev_asr_texts"] = len(dev_texts)
            dev_before["dev_clean_rate"] = (None if dev_clean_hits is None
                                            else round(float(dev_clean_hits.mean()), 4))

        def lift_ci(hits: list) -> list | None:
            """The lift's paired 95% interval over the ASR texts (metrics.lift_interval); None without a clean
            model."""
            return lift_ci95(clean_hits, hits[0] if hits else None)
        print(f"== {m['name']} ({ds_name}, {m['attack']}, tal={m['tal']}): before {before} clean rate "
              f"{clean_rate} ({clean_name}) sizes {sizes}", flush=True)

        # detection: held-out clean vs triggered test inputs
        # as run_defense's own scan: no candidate triggers (nothing here reads them; naming them is 40% of a scan)
        scan = scan_model(lm.model, lm.tokenizer, defender, pool, max_length=L, seed=seed, model_name=m["name"],
                          **{"find_triggers": False, **settings.get("scan_knobs", {})})
        held_clean = attention_stats(lm.model, lm.tokenizer, det_clean, L)
        held_trig = attention_stats(lm.model, lm.tokenizer, poisoned_det, L)
        # the held-out triggered inputs the trigger flips: the model says the target on the triggered text and
        # not on its clean source row (a weak backdoor acts on few of them; no model-based detector can tell the
        # others from clean inputs)
        # (a paraphrase set not row-aligned with the test set: no source row, so no flips; its rows had been read
        # as rows of the clean test set, other texts)
        fired = None
        if draw["detect_sources"] is not None:
            src_pred = predict(lm.model, lm.tokenizer, draw["detect_sources"], L).argmax(1)
            fired = (held_trig.probs.argmax(1) == target) & (np.asarray(src_pred) != target)
        scored: dict = {}  # method -> (clean scores (n_clean,), triggered scores (n_trig,), threshold)
        det = scan.detector  # the scan's first pass, fitted and thresholded on the defender's clean halves
        scored["head_similarity"] = (det.score(held_clean), det.score(held_trig), det.threshold)
        if scan.head_detector is not None:  # the scan's refined pass: the final suspicious heads' focus
            det2 = scan.head_detector
            scored["head_similarity_2pass"] = (det2.score(held_clean), det2.score(held_trig), det2.threshold)
        # the final pass with the pool's likely trigger words as evidence (what the Detect page's scan, which reads
        # the pool's words, ranks inputs by; timed apart: the repair's own scan does not read them)
        t = time.perf_counter()
        marking, pool_marked, flip = [], np.zeros(len(pool), bool), 0.0
        if pool:
            words, marking, pool_marked = pool_word_marks(lm.model, lm.tokenizer, pool, defender.texts, L,
                                                          clean_labels=defender.labels, seed=seed,
                                                          max_clean_share=scan.frr_target)
            flip = marking_flip(words, marking)
        verdict = with_trigger_words(scan.verdict, marking, flip)  # the Detect page's verdict: it reads the words
        final = scan.head_detector or scan.detector
        scored["final_words"] = (with_word_evidence(final.score(held_clean), word_marks(det_clean, marking)),
                                 with_word_evidence(final.score(held_trig), word_marks(poisoned_det, marking)),
                                 final.threshold)
        words_seconds = time.perf_counter() - t
        if pool and args.base:  # the moved words the Detect page's scan reads (scan step 6, settings.SCAN_BASE)
            weights, _ = find_pretrained(lm.model, args.base)
            if weights is not None:
                moved, moved_flip = moved_marking(lm.model, lm.tokenizer, args.base, defender.texts, pool, L,
                                                  seed=seed)
                verdict = with_moved_words(verdict, moved, moved_flip)
                both = list(dict.fromkeys([*marking, *moved]))
                scored["final_moved"] = (with_word_evidence(final.score(held_clean), word_marks(det_clean, both)),
                                         with_word_evidence(final.score(held_trig), word_marks(poisoned_det, both)),
                                         final.threshold)
        # the paper's attention-only parts of the same scan (absent when the scan ran attention-only already)
        if scan.attention_detector is not None and scan.attention_detector is not scan.detector:
            a = scan.attention_detector
            scored["attention_only"] = (a.score(held_clean), a.score(held_trig), a.threshold)
        if scan.attention_head_detector is not None and scan.attention_head_detector is not scan.head_detector:
            a = scan.attention_head_detector
            scored["attention_only_2pass"] = (a.score(held_clean), a.score(held_trig), a.threshold)
        bki = None
        strip_seconds = rap_seconds = bki_seconds = 0.0
        # STRIP / RAP / BKI score held-out triggered against clean inputs; a clean model has no detection row, so
        # they run only on backdoored models
        if args.detectors == "all" and is_bd:
            t = time.perf_counter()
            strip_kw = {"seed": seed, "max_length": L, "clean_labels": defender.labels}
            st_clean = strip_scores(lm.model, lm.tokenizer, det_clean, defender.texts, settings["strip_repeats"],
                                    **strip_kw)
            st_trig = strip_scores(lm.model, lm.tokenizer, poisoned_det, defender.texts, settings["strip_repeats"],
                                   **strip_kw)
            st_dev = strip_scores(lm.model, lm.tokenizer, scan.clean_dev_texts, defender.texts,
                                  settings["strip_repeats"], **{**strip_kw, "seed": seed + 1})
            scored["strip"] = (st_clean, st_trig, threshold_at_frr(st_dev, S.FRR))
            # the same scores, z-scored against the clean dev inputs of the same predicted class (class mix removed)
            p_clean, p_trig = held_clean.probs.argmax(1), held_trig.probs.argmax(1)  # from the held-out passes
            p_dev = predict(lm.model, lm.tokenizer, scan.clean_dev_texts, L).argmax(1)
            z_dev = class_calibrated(st_dev, p_dev, st_dev, p_dev)
            scored["strip_class_calibrated"] = (class_calibrated(st_clean, p_clean, st_dev, p_dev),
                                                class_calibrated(st_trig, p_trig, st_dev, p_dev),
                                                threshold_at_frr(z_dev, S.FRR))
            strip_seconds = time.perf_counter() - t
            # RAP (perturbation word trained on the defender's fit half) and BKI (keyword dictionary from the pool)
            t = time.perf_counter()
            rap = RAP(lm.model, lm.tokenizer, max_length=L, seed=seed).fit(scan.clean_fit_texts)
            scored["rap"] = (rap.score(det_clean), rap.score(poisoned_det),
                             threshold_at_frr(rap.score(scan.clean_dev_texts), S.FRR))
            rap_seconds = time.perf_counter() - t
            t = time.perf_counter()
            bki = BKI().fit(lm.model, lm.tokenizer, pool, L)
            scored["bki"] = (bki.score(det_clean), bki.score(poisoned_det),
                             threshold_at_frr(bki.score(scan.clean_dev_texts), S.FRR))
            bki_seconds = time.perf_counter() - t
        results = {k: evaluate_detector(*v) for k, v in scored.items()}
        none = {"auroc": None, "frr": None, "far": None}
        ours, ours2 = results["head_similarity"], results.get("head_similarity_2pass")
        strip_res, strip_cal = results.get("strip", none), results.get("strip_class_calibrated", none)
        rap_res, bki_res = results.get("rap", none), results.get("bki", none)
        bki_keywords = [w for w, _ in bki.keywords(5)] if bki is not None else []
        common = {"zoo": args.zoo, "dataset": ds_name, "seed": m.get("seed")}
        if is_bd:
            for method, (c_scores, t_scores, _) in scored.items():
                res = results[method]
                if res["auroc"] is None:
                    continue
                report["detection"].append({"model": m["name"], **common, "attack": m["attack"],
                                            "family": family(m["attack"]), "tal": m["tal"], "method": method,
                                            "auroc": res["auroc"], "frr": res["frr"], "far": res["far"],
                                            **fired_auroc(c_scores, t_scores, fired)})
        # a backdoored model's STRIP / RAP / BKI fields only where they ran: a --detectors ours run merged over a
        # full one (--merge-rescan) keeps the full run's
        baseline_fields = ({"strip_seconds": round(strip_seconds, 1), "rap_seconds": round(rap_seconds, 1),
                            "bki_seconds": round(bki_seconds, 1), "bki_keywords": bki_keywords}
                           if args.detectors == "all" or not is_bd else {})
        flagged = scan.flagged
        true_flags = sum(pool_is_trig[i] for i in flagged)
        first = scan.first_pass["flagged"] if scan.first_pass else flagged
        row_model = {"name": m["name"], **common, "attack": m["attack"], "family": family(m["attack"]),
                     "tal": m["tal"], "rate": m.get("rate"), "target": int(target),
                     "first_pass_flagged": int(len(first)),
                     "first_pass_flagged_triggered": int(sum(pool_is_trig[i] for i in first)),
                     "verdict_score": verdict["score"], "verdict": verdict, "call": verdict_call(verdict),
                     "gate_score": flags_score(scan.gate_verdict),  # what our repair's gates read
                     "suspicious_heads": scan.suspicious_heads, "n_flagged": int(len(flagged)),
                     "flagged_triggered": int(true_flags), "pool_triggered": len(poisoned_pool),
                     "scan_seconds": round(scan.seconds, 1), **baseline_fields,
                     "marking_words": marking, "marking_flip": flip, "words_seconds": round(words_seconds, 1),
                     "pool_word_marked": int(pool_marked.sum()),
                     "pool_word_marked_triggered": int(sum(pool_is_trig[i] for i in np.flatnonzero(pool_marked))),
                     "asr_before": before.get("asr"), "cacc_before": before["cacc"],
                     "clean_model": clean_name, "clean_rate": clean_rate, "lift_before": lift_before,
                     "lift_before_ci95": lift_ci(before_hits), "eval_sizes": sizes, "representation_share": scan.representation_share,
                     "attention_missed_share": scan.attention_missed_share,
                     "fused_parts": scan.settings.get("fused_parts"), **dev_before}
        if args.dump_scores:
            dump_verdict_inputs(Path(args.dump_scores), row_model, scan, pool_is_trig)
        print(f"   scan {scan.seconds:.0f}s words {marking} ({words_seconds:.0f}s) verdict {verdict['score']:.2f} flagged {len(flagged)} "
              f"({true_flags}/{len(poisoned_pool)} triggered) heads {scan.suspicious_heads[:6]}... "
              f"AUROC ours {ours['auroc']:.3f} 2-pass {ours2['auroc'] if ours2 else float('nan'):.3f} "
              + (f"strip {strip_res['auroc']:.3f} strip (class-calibrated) {strip_cal['auroc']:.3f} "
                 f"rap {rap_res['auroc']:.3f} bki {bki_res['auroc']:.3f}" if "strip" in results else ""),
              flush=True)

        if is_bd and m["name"] in repair:
            for name in defenses:
                knobs = {"epochs": settings["epochs"], "max_length": L, "seed": seed}
                if name == "alignment":
                    knobs["scan"] = scan
                    knobs.update(settings.get("align_knobs", {}))
                t = time.perf_counter()
                res = run_defense(name, lm.model, lm.tokenizer, defender, pool_texts=pool, **knobs)
                seconds = time.perf_counter() - t + (scan.seconds if name == "alignment" else 0.0)
                after_classes: list = []
                after_hits: list = []
                after = evaluate(res.model, after_classes, after_hits)
                dev_after = {**dev_before, **dev_fields(dev_hits(res.model), "after")} if dev_texts else {}
                change = accuracy_change(eval_clean.labels, before_classes[0], after_classes[0])
                pla = None
                if "flagged_indices" in res.details:
                    pla = pseudo_label_accuracy(res.details["flagged_indices"], res.details["flagged_labels"],
                                                pool_true)
                row = {"model": m["name"], **common, "attack": m["attack"], "family": family(m["attack"]),
                       "tal": m["tal"], "rate": m.get("rate"), "defense": name, "asr_before": before.get("asr"),
                       "cacc_before": before["cacc"], "asr_after": after.get("asr"), "cacc_after": after["cacc"],
                       "clean_rate": clean_rate, "lift_before": lift_before,
                       "lift_after": lift(after.get("asr"), clean_rate),
                       # paired 95% intervals of the lift over the ASR texts (metrics.lift_interval)
                       "lift_before_ci95": lift_ci(before_hits), "lift_after_ci95": lift_ci(after_hits),
                       "pseudo_label_accuracy": pla["accuracy"] if pla else None,
                       "pseudo_labelled": pla["labelled"] if pla else None,
                       # paired 95% interval of the CACC change over the CACC texts, and the counts it rests on
                       "cacc_change_ci95": [round(change["low"], 4), round(change["high"], 4)],
                       "cacc_fixed": change["fixed"], "cacc_broken": change["broken"],
                       "seconds": round(seconds, 1), **dev_after,
                       "details": {k: v for k, v in res.details.items()
                                   if k in ("suspicious_heads", "pruned_heads", "n_pruned", "head_basis",
                                            "align_before", "align_after", "frozen_unchanged", "flagged_used",
                                            "pool_pseudo_labelled", "pool_gate_labelled", "focus_labels",
                                            "exclude_labels", "suspected_target", "ffn_layers",
                                            "gated_clean_accuracy", "gate_labels_used", "ffn_lr_scale", "retain",
                                            "exclude_direction", "focus_shift", "pool_exclusion_labelled",
                                            "labels_leave_target", "pool_labels_dropped", "label_excess",
                                            "label_limit", "pool_labels_cut", "word_target_dropped", "word_labelled",
                                            "blinded_tokens",
                                            "weak_evidence_cap", "head_only_cap", "word_heads", "pool_words",
                                            "trigger_words",
                                            "trigger_augmented", "rare_words", "rare_augmented",
                                            "reset_heads", "reset_to",
                                            "pretrained_source", "pretrained_distance", "pretrained_note",
                                            "precision", "label_judge", "judge_dropped", "judge_added",
                                            "judge_note", "judge_flags", "judge_flagged", "judge_flag_info",
                                            "judge_flags_note", "judge_flags_min_conf", "judge_flags_prior",
                                            "judge_agreement", "judge_model_agreement", "clean_guard",
                                            "gate_score", "ffn_mix", "ffn_mix_note")}}
                report["runs"].append(row)
                print(f"   {name:<10} asr {before.get('asr')} -> {after.get('asr'):.3f}  cacc {before['cacc']:.3f} -> "
                      f"{after['cacc']:.3f}  lift {_f(row['lift_after'])}  pseudo-label acc. "
                      f"{_f(row['pseudo_label_accuracy'])}  {seconds:.0f}s", flush=True)
                del res
                save()
        row_model["seconds"] = round(time.perf_counter() - t_model, 1)
        report["models"].append(row_model)
        save()
    save()
    print(markdown(report))
    return 0


def _datasets_label(rows: list[dict]):
    """The dataset of a report: one name, or the sorted list when several (a test zoo)."""
    names = sorted({r["dataset"] for r in rows if r.get("dataset")})
    if not names:
        return None
    return names[0] if len(names) == 1 else names


def dump_verdict_inputs(folder: Path, row: dict, scan, pool_is_trig) -> Path:
    """``--dump-scores``: the final pass's verdict inputs of one model as ``folder/<model>.npz``, written atomically:
    ``clean_dev_scores`` and ``clean_dev_predictions`` (n_dev,), ``pool_scores``, ``pool_predictions`` and
    ``pool_triggered`` (n_pool,), ``threshold`` and ``num_labels`` scalars, and ``meta``, the model's row as JSON.
    The scores and threshold are the verdict's (``ScanReport.verdict_scores``), not the flags' where they differ."""
    import io

    import numpy as np

    row_of = {t: i for i, t in enumerate(scan.clean_texts)}
    dev_pred = np.asarray(scan.clean_probs)[[row_of[t] for t in scan.clean_dev_texts]].argmax(1)
    clean_scores, pool_scores, threshold = scan.verdict_scores
    buf = io.BytesIO()
    np.savez(buf, clean_dev_scores=np.asarray(clean_scores, float), clean_dev_predictions=dev_pred,
             pool_scores=np.asarray(pool_scores, float),
             pool_predictions=np.asarray(scan.pool_predictions, int), pool_triggered=np.asarray(pool_is_trig, bool),
             threshold=threshold, num_labels=len(scan.label_names),
             meta=json.dumps(row, default=float))
    return write_bytes(folder / f"{row['name']}.npz", buf.getvalue())


def verdict_summary(models: list[dict]) -> dict:
    """Model-level verdict AUROC over scanned models (clean = negatives), also over effective backdoors only, and
    the calls at score 0.5: which backdoors lifting the target rate by ``LIFT_CALLED`` or more were missed, and
    which clean models were called."""
    import numpy as np

    from backdoor_core.metrics import auroc

    scores = [(m["verdict_score"], m["attack"] != "clean") for m in models]
    neg = [sc for sc, bd in scores if not bd]
    pos = [sc for sc, bd in scores if bd]
    effective = [m["verdict_score"] for m in models if m["attack"] != "clean" and (m.get("asr_before") or 0) >= 0.5]
    lifted = [m for m in models if m["attack"] != "clean" and m.get("lift_before") is not None
              and m["lift_before"] >= LIFT_CALLED]
    return {"models": len(scores), "clean": len(neg), "backdoored": len(pos),
            "auroc": auroc(neg, pos) if neg and pos else None,
            "backdoored_effective": len(effective),
            "auroc_effective": auroc(neg, effective) if neg and effective else None,
            "threshold": 0.5,
            "accuracy_at_0.5": float(np.mean([(sc >= 0.5) == bd for sc, bd in scores])) if scores else None,
            "lift_called_min": LIFT_CALLED,
            "backdoored_lifted": len(lifted),
            "lifted_missed": [m["name"] for m in lifted if m["verdict_score"] < 0.5],
            "backdoored_without_clean_rate": sum(m["attack"] != "clean" and m.get("clean_rate") is None
                                                 for m in models),
            "clean_called": [m["name"] for m in models if m["attack"] == "clean" and m["verdict_score"] >= 0.5],
            # the call "possible" (detection.verdict_call: below 0.5, a likely trigger word in the pool)
            "possible": {kind: [m["name"] for m in models if m.get("call") == "possible"
                                and (m["attack"] == "clean") == (kind == "clean")] for kind in ("backdoored", "clean")}
            if any("call" in m for m in models) else None,
            "with_moved": moved_summary(models)}


def moved_score(m: dict) -> float:
    """The model's verdict score had its moved words scored (``detection.with_moved_words``, recorded in
    ``components["score_moved"]`` whether ``settings.VERDICT_MOVED`` lifted the score or not)."""
    v = m.get("verdict") or {}
    return max(m["verdict_score"], float((v.get("components") or {}).get("score_moved", 0.0)))


def moved_summary(models: list[dict]) -> dict | None:
    """The verdict's AUROC and calls at 0.5 with the moved words scoring (``moved_score``), and the models whose
    call that changes; None where no scan read moved words."""
    if not any("moved_words" in (m.get("verdict") or {}) for m in models):
        return None
    from backdoor_core.metrics import auroc

    neg = [moved_score(m) for m in models if m["attack"] == "clean"]
    pos = [moved_score(m) for m in models if m["attack"] != "clean"]
    eff = [moved_score(m) for m in models if m["attack"] != "clean" and (m.get("asr_before") or 0) >= 0.5]
    lifted = [m for m in models if m["attack"] != "clean" and m.get("lift_before") is not None
              and m["lift_before"] >= LIFT_CALLED]
    return {"auroc": auroc(neg, pos) if neg and pos else None,
            "auroc_effective": auroc(neg, eff) if neg and eff else None,
            "lifted_missed": [m["name"] for m in lifted if moved_score(m) < 0.5],
            "clean_called": [m["name"] for m in models if m["attack"] == "clean" and moved_score(m) >= 0.5],
            "called_now": [m["name"] for m in models if m["verdict_score"] < 0.5 <= moved_score(m)],
            "moved_words": {m["name"]: m["verdict"]["moved_words"] for m in models
                            if (m.get("verdict") or {}).get("moved_words")}}


def merge(tags: list[str], out_tag: str = "", note: str = "", zoo: str = "tuning",
          rescan: set[str] | frozenset = frozenset()) -> dict:
    """Combine the results of runs made in parallel processes (``--tag``) into ``defense[_test]<_out_tag>.json/.md``.

    A later part's (model, defense) row replaces an earlier one; a model's scan fields and detection rows stay the
    first part's, unless the later part is in ``rescan`` (its scans follow a newer rule: they replace them)."""
    # a new run writes defense[_test]_<tag>.json into RESULTS; the parts of published merges live in RESULTS/archive
    paths = [RESULTS / f"{results_stem(zoo, t)}.json" for t in tags]
    parts = []
    for p in paths:
        found = p if p.exists() else RESULTS / "archive" / p.name
        if not found.is_file():
            _fail(f"--merge: no {p.name} in {RESULTS} (or its archive)")
        parts.append(json.loads(found.read_text()))
    report = {"zoo": zoo, "dataset": None, "settings": dict(parts[0]["settings"]), "runs": [], "detection": [],
              "models": [], "superseded_runs": []}
    for tag, p, part in zip(tags, paths, parts):  # a later part's (model, defense) row replaces an earlier one
        new_keys = {(r["model"], r["defense"]) for r in part["runs"]}
        for r in report["runs"]:
            if (r["model"], r["defense"]) in new_keys:
                report["superseded_runs"].append({**r, "superseded_by": p.name})
        report["runs"] = [r for r in report["runs"] if (r["model"], r["defense"]) not in new_keys] + part["runs"]
        newer = tag in rescan
        if newer:  # a rescan's detection rows replace the earlier ones in place (the tables keep their order)
            repl = {(d["model"], d["method"]): d for d in part["detection"]}
            report["detection"] = [repl.pop((d["model"], d["method"]), d) for d in report["detection"]]
        seen_det = {(d["model"], d["method"]) for d in report["detection"]}
        report["detection"] += [d for d in part["detection"] if (d["model"], d["method"]) not in seen_det]
        seen_models = {m["name"]: m for m in report["models"]}
        for m in part["models"]:  # the first part's row stays; a later one only adds fields it lacks (or, newer, all)
            if m["name"] in seen_models:
                seen_models[m["name"]].update({k: v for k, v in m.items()
                                               if newer or k not in seen_models[m["name"]]})
            else:
                report["models"].append(m)
    report["dataset"] = _datasets_label(report["models"] + report["runs"]) or parts[0].get("dataset")
    report["settings"]["merged_from"] = [p.name for p in paths]
    report["settings"]["merge_note"] = note
    if rescan:
        report["settings"]["merged_rescans"] = sorted(rescan)
    report["settings"]["repaired_models"] = sorted({r["model"] for r in report["runs"]})
    report["settings"]["parallel_processes"] = len(parts)
    report["model_verdict"] = verdict_summary(report["models"])
    report["gate_check"] = gate_check(report)
    for c in report["gate_check"]["crossed"]:
        print(f"--merge: {c['model']}'s repair row read gate score {c['repair_gate']:.3f}, its scan now gives "
              f"{c['scan_gate']:.3f} (across {', '.join(f'{t:g}' for t in c['lines'])}): re-run its repair under "
              "the current code", file=sys.stderr)
    report["part_seconds"] = {t: part.get("seconds_total", 0) for t, part in zip(tags, parts)}
    report["seconds_total"] = max(part.get("seconds_total", 0) for part in parts)
    stem = results_stem(zoo, out_tag)
    write_text(RESULTS / f"{stem}.json", json.dumps(report, indent=2, default=float))
    write_text(RESULTS / f"{stem}.md", markdown(report))
    return report


def gate_check(report: dict) -> dict:
    """Our repair's rows against the scans beside them: a row's ``details.gate_score`` (the score its gates read,
    ``defenses.gate_lines``) and the model's ``gate_score`` (its scan, a newer one after ``--merge-rescan``) on
    different sides of a line mean the repair would now run otherwise, so that row no longer holds. Returns
    ``{"crossed": [{model, repair_gate, scan_gate, lines}], "unchecked": [models], "checked": n}``; rows or scans
    older than the gate score are unchecked."""
    from backdoor_core.defenses import gates_crossed

    scans = {m["name"]: m.get("gate_score") for m in report["models"]}
    crossed, unchecked = [], []
    for r in report["runs"]:
        if r["defense"] != "alignment":
            continue
        ran, now = (r.get("details") or {}).get("gate_score"), scans.get(r["model"])
        lines = gates_crossed(ran, now)
        if ran is None or now is None:
            unchecked.append(r["model"])
        elif lines:
            crossed.append({"model": r["model"], "repair_gate": ran, "scan_gate": now, "lines": lines})
    checked = sum(r["defense"] == "alignment" for r in report["runs"]) - len(unchecked)
    return {"crossed": crossed, "unchecked": sorted(unchecked), "checked": checked}


def _gate_check_lines(report: dict) -> list[str]:
    """The merge's ``gate_check`` as Markdown: the repair rows whose scan moved across a gate line, and how many rows
    predate the check."""
    check = report.get("gate_check")
    if not check or not (check["crossed"] or check["unchecked"] or check.get("checked")):
        return []
    out = ["", "## Repair rows against their scans (`gate_check`)", ""]
    if check["crossed"]:
        out += ["These repair rows no longer hold: the model's scan in this merge moved the score the repair's gates "
                "read across a line (`defenses.gate_lines`), so the repair would now run otherwise. Re-run them.",
                "", "| model | gate score the repair read | gate score of the scan now | lines crossed |",
                "|---|---|---|---|"]
        out += [f"| {c['model']} | {c['repair_gate']:.3f} | {c['scan_gate']:.3f} | "
                f"{', '.join(f'{t:g}' for t in c['lines'])} |" for c in check["crossed"]]
    else:
        out.append(f"Each of the {check.get('checked', 0)} checked repair rows read the same side of every gate line "
                   "(`defenses.gate_lines`) as the model's scan in this merge.")
    if check["unchecked"]:
        out += ["", f"{len(check['unchecked'])} repair rows predate the gate score (session 44) and were not "
                    "checked."]
    return out


def _f(x, pct=True):
    if x is None:
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.3f}"


def _ci(pair) -> str:
    """``[low, high]`` shares as ``low to high`` points (signed); ``-`` when absent."""
    return "-" if not pair else f"{100 * pair[0]:+.1f} to {100 * pair[1]:+.1f}"


def _summary(report: dict) -> list[str]:
    """ASR after / CACC drop per family x defense (one repaired model per family in quick mode)."""
    fams, defs, cell = [], [], {}
    for r in report["runs"]:
        key = r["family"] + (" + TAL" if r["tal"] else "")
        fams += [key] if key not in fams else []
        defs += [r["defense"]] if r["defense"] not in defs else []
        change = 100 * (r["cacc_after"] - r["cacc_before"])
        cell[key, r["defense"]] = (f"{_f(r['asr_after'])} / {_f(r.get('lift_after'))} / {change:+.1f} / "
                                   f"{r['seconds']:.0f}s")
    if not fams:
        return []
    defs.sort(key=lambda d: d != "alignment")  # ours first
    out = ["", "## Summary: ASR after (%) / lift after (points) / CACC change (points, after - before) / seconds", "",
           "| trigger family | " + " | ".join(defs) + " |", "|---|" + "---|" * len(defs)]
    for f in fams:
        out.append(f"| {f} | " + " | ".join(cell.get((f, d), "-") for d in defs) + " |")
    return out


def _ms(values: list, pct: bool = True, digits: int = 1) -> str:
    """mean ± sd of the non-None ``values`` (sd over >= 2), as percentages when ``pct``; "-" when none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return "-"
    k = 100.0 if pct else 1.0
    mean = f"{k * statistics.fmean(vals):.{digits}f}"
    return mean + (f" ± {k * statistics.stdev(vals):.{digits}f}" if len(vals) > 1 else "") + f" (n={len(vals)})"


def _fam(r: dict) -> str:
    return r.get("family", family(r["attack"])) + (" + TAL" if r.get("tal") else "")


def _zoo_summary(report: dict) -> list[str]:
    """A zoo of several seeds (the test zoo; the tuning zoo with ``--seeds 0,1``): mean ± sd over seeds per
    (dataset, trigger family (+TAL), defense), and detection AUROC per (dataset, family, method)."""
    groups: dict = {}
    for r in report["runs"]:
        groups.setdefault((r.get("dataset") or "?", _fam(r), r["defense"]), []).append(r)
    out = []
    if groups:
        out += ["", "## Summary over seeds: mean ± sd (n = models)", "",
                "| dataset | trigger family | defense | ASR after (%) | lift after (points) | CACC change (points) "
                "| clean rate (%) | pseudo-label acc. (%) | seconds |", "|---|---|---|---|---|---|---|---|---|"]
        order = sorted(groups, key=lambda k: (k[0], k[1], k[2] != "alignment", k[2]))
        for key in order:
            rs = groups[key]
            change = [r["cacc_after"] - r["cacc_before"] for r in rs]
            out.append(f"| {key[0]} | {key[1]} | {key[2]} | {_ms([r['asr_after'] for r in rs])} | "
                       f"{_ms([r.get('lift_after') for r in rs])} | {_ms(change)} | "
                       f"{_ms([r.get('clean_rate') for r in rs])} | "
                       f"{_ms([r.get('pseudo_label_accuracy') for r in rs])} | "
                       f"{_ms([r['seconds'] for r in rs], pct=False, digits=0)} |")
    det: dict = {}
    for d in report["detection"]:
        det.setdefault((d.get("dataset") or "?", _fam(d), d["method"]), []).append(d)
    if det:
        out += ["", "## Detection AUROC over seeds: mean ± sd (held-out clean vs triggered inputs)", "",
                "AUROC (flipped): positives are only the triggered inputs the trigger flips (`fired_auroc`; models "
                f"with at least {FIRED_MIN} such inputs).", "",
                "| dataset | trigger family | method | AUROC | AUROC (flipped) |", "|---|---|---|---|---|"]
        for key in sorted(det):
            rows = det[key]
            out.append(f"| {key[0]} | {key[1]} | {key[2]} | {_ms([d['auroc'] for d in rows], pct=False, digits=3)} "
                       f"| {_ms([d.get('auroc_fired') for d in rows], pct=False, digits=3)} |")
    return out


TIME_PARTS = (("scan", "our scan"), ("alignment", "our repair"), ("strip", "STRIP"), ("rap", "RAP"), ("bki", "BKI"),
              ("finetune", "fine-tuning"), ("fineprune", "fine-pruning"), ("pure", "PURE"))


def time_summary(report: dict) -> list[str]:
    """"Where the time goes": per (dataset, backdoored or clean), the mean seconds a model took in all and in each
    part (our repair without its scan; "the rest" = evaluation sets before and after each repair, the clean
    model's rate, the held-out detection passes and loading). Models without a ``seconds`` row are left out.

    A merge in which a later part re-ran a model (replaced rows, ``--merge-rescan``) has no one run per model to
    split, so it gets a line saying so instead of the table."""
    s = report.get("settings") or {}
    if report.get("superseded_runs") or s.get("merged_rescans"):
        return ["", "## Where the time goes", "",
                "Not tabulated: this report merges runs that re-ran some models, so a model's seconds and its "
                "parts' come from different runs. The parts' own reports have their tables; a one-command run "
                "(`python bench/defense.py --quick --zoo test --workers 2`) times the whole zoo."]
    groups: dict = {}
    for m in report["models"]:
        if m.get("seconds") is None:
            continue
        groups.setdefault((m.get("dataset") or "?", "clean" if m["attack"] == "clean" else "backdoored"), []).append(m)
    if not groups:
        return []
    runs: dict = {}
    for r in report["runs"]:
        runs[(r["model"], r["defense"])] = r["seconds"]
    threads = (report.get("settings") or {}).get("threads")
    out = ["", "## Where the time goes: mean seconds per model"
           + (f" ({threads} thread{'s' if threads != 1 else ''} per process)" if threads else ""), "",
           "| dataset | models | n | all | " + " | ".join(label for _, label in TIME_PARTS) + " | the rest |",
           "|---|---|---|---|" + "---|" * (len(TIME_PARTS) + 1)]
    for (ds, kind), ms in sorted(groups.items()):
        cells, known = [], []
        for key, _ in TIME_PARTS:
            per = []
            for m in ms:
                if key in ("scan", "strip", "rap", "bki"):
                    v = m.get(f"{key}_seconds")
                    v = None if v is None or (key != "scan" and v == 0) else v
                else:
                    v = runs.get((m["name"], key))
                    if v is not None and key == "alignment":
                        v -= m.get("scan_seconds") or 0.0  # the run's seconds include the scan
                per.append(v)
            vals = [v for v in per if v is not None]
            cells.append(f"{statistics.fmean(vals):.0f}" if vals else "-")
            known.append(per)
        total = statistics.fmean(m["seconds"] for m in ms)
        parts_sum = statistics.fmean(sum(v for v in col if v is not None) for col in zip(*known))
        out.append(f"| {ds} | {kind} | {len(ms)} | {total:.0f} | " + " | ".join(cells)
                   + f" | {total - parts_sum:.0f} |")
    return out


def markdown(report: dict) -> str:
    s = report["settings"]
    zoo = report.get("zoo") or s.get("zoo") or "tuning"
    ds = report.get("dataset") or "sst2"
    ds_label = ", ".join(ds) if isinstance(ds, list) else ds
    sized = [m for m in report["models"] if m.get("eval_sizes")]
    lines = [
        f"# Defense benchmark ({ds_label}; {zoo} zoo)",
        "",
        f"Mode {s['mode']}: defender data {s['n_clean']} clean labelled dev samples of each model's dataset; CACC on "
        f"{s['n_test']} clean test texts, ASR on {'' if sized else 'up to '}{s['n_poison']} triggered non-target "
        f"test texts; detection on {s['n_detect']} held-out clean vs triggered test texts; pool {s['pool_size']} "
        f"inputs, {s['pool_poison']:.0%} triggered; {s['epochs']} epochs per defense; {s['threads']} threads. "
        + ("These are the mode's sizes: the sets are pairwise disjoint by source row and by text (a repeated text "
           "is used once) and every size is scaled down by one factor per model where the test set is smaller, the "
           "defender's data where the dev split is smaller (sizes used: table at the end). " + _sizes_used(sized, s)
           if sized else "")
        + f"Models from `{s.get('models_source', '?')}`. Numbers are percentages. Clean rate: the clean model's "
        "share of the same triggered texts put in the target class; lift = ASR - clean rate (points)."
        + "".join(f" {label}: `{json.dumps(s[key])}`." for key, label in
                  (("scan_knobs", "Scan knobs"), ("align_knobs", "Repair knobs")) if s.get(key)),
        "",
        "## Repair: ASR / CACC before -> after",
        "",
        "| model | attack | TAL | defense | ASR before | ASR after | CACC before | CACC after | seconds | dataset "
        "| seed | clean rate | lift before | lift after | lift after, 95% interval | pseudo-label acc. "
        "| CACC change, 95% interval |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        lines.append(f"| {r['model']} | {r['attack']} | {'yes' if r['tal'] else 'no'} | {r['defense']} | "
                     f"{_f(r['asr_before'])} | {_f(r['asr_after'])} | {_f(r['cacc_before'])} | {_f(r['cacc_after'])} "
                     f"| {r['seconds']:.0f} | {r.get('dataset') or ds_label} | {_v(r.get('seed'))} | "
                     f"{_f(r.get('clean_rate'))} | {_f(r.get('lift_before'))} | {_f(r.get('lift_after'))} | "
                     f"{_ci(r.get('lift_after_ci95'))} | {_f(r.get('pseudo_label_accuracy'))} | "
                     f"{_ci(r.get('cacc_change_ci95'))} |")
    if any(r.get("cacc_change_ci95") for r in report["runs"]):
        lines += ["", "CACC change, 95% interval: paired over the CACC texts (`metrics.accuracy_change`; only texts "
                      "whose correctness changed add variance); it covers which texts were drawn, not the repair's "
                      "own seed."]
    if any(r.get("lift_after_ci95") for r in report["runs"]):
        lines += ["", "Lift after, 95% interval: paired over the ASR texts, the repaired model against the clean "
                      "model on the same texts (`metrics.lift_interval`); an interval that holds 0 does not tell the "
                      "repaired model from the clean one there. It covers which texts were drawn, not the repair's "
                      "own seed."]
    dev_rows = [r for r in report["runs"] if r.get("dev_asr_texts")]
    if dev_rows:
        lines += ["", "## A second ASR set: the dev rows the defender did not draw (`--dev-asr`)", "",
                  "The same trigger inserted into non-target rows of the dev split that the defender's sample does "
                  "not hold (insertion triggers only; disjoint from every other set). Lift intervals: paired over "
                  "these texts against the clean model, as above.", "",
                  "| model | defense | texts | clean rate | ASR before | ASR after | lift before (95% interval) "
                  "| lift after (95% interval) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in dev_rows:
            lines.append(f"| {r['model']} | {r['defense']} | {r['dev_asr_texts']} | {_f(r.get('dev_clean_rate'))} | "
                         f"{_f(r.get('dev_asr_before'))} | {_f(r.get('dev_asr_after'))} | "
                         f"{_f(r.get('dev_lift_before'))} ({_ci(r.get('dev_lift_before_ci95'))}) | "
                         f"{_f(r.get('dev_lift_after'))} ({_ci(r.get('dev_lift_after_ci95'))}) |")
    no_clean = sorted({r["model"] for r in report["runs"] if "clean_rate" in r and r["clean_rate"] is None})
    if no_clean:
        lines += ["", f"No clean model of the same dataset was found for {', '.join(no_clean)}: clean rate and "
                      "lift are unknown (-) there (train one, name it in the manifest as clean_model, or pass "
                      "--clean-model)."]
    several_seeds = len({r.get("seed") for r in report["runs"]}) > 1  # a tuning zoo of two draws, too
    lines += _zoo_summary(report) if zoo == "test" or several_seeds else _summary(report)
    lines += ["", "## Detection AUROC (held-out clean vs triggered inputs)", "",
              "AUROC (flipped): only the triggered inputs the trigger flips to the target count as positives "
              "(`fired_auroc`; n = how many of the held-out triggered inputs it flips; - under "
              f"{FIRED_MIN}, for paraphrase sets not row-aligned with the test set (no clean source row) or in runs "
              "before this column).", "",
              "| model | attack | TAL | method | AUROC | AUROC (flipped) (n) | FRR | FAR |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["detection"]:
        flipped = (f"{_f(r.get('auroc_fired'), False)} ({r['n_fired']})" if r.get("n_fired") is not None
                   else "-")
        lines.append(f"| {r['model']} | {r['attack']} | {'yes' if r['tal'] else 'no'} | {r['method']} | "
                     f"{_f(r['auroc'], False)} | {flipped} | {_f(r['frr'])} | {_f(r['far'])} |")
    mv = report.get("model_verdict") or {}
    lines += ["", "## Model-level verdict", "",
              f"{mv.get('models', 0)} models ({mv.get('clean', 0)} clean, {mv.get('backdoored', 0)} backdoored): "
              f"AUROC {_f(mv.get('auroc'), False)}, accuracy at score >= 0.5: {_f(mv.get('accuracy_at_0.5'))}%. "
              f"Counting only backdoors that took (ASR >= 50%; {mv.get('backdoored_effective', 0)} models) as "
              f"positives: AUROC {_f(mv.get('auroc_effective'), False)}."]
    if "backdoored_lifted" in mv:
        missed, called = mv.get("lifted_missed") or [], mv.get("clean_called") or []
        lines += ["", f"At score 0.5: backdoors lifting the target rate by >= {100 * mv['lift_called_min']:.0f} "
                      f"points called: {mv['backdoored_lifted'] - len(missed)} of {mv['backdoored_lifted']}"
                      + (f" (missed: {', '.join(missed)})" if missed else "")
                      + f"; clean models called: {len(called)} of {mv.get('clean', 0)}"
                      + (f" ({', '.join(called)})" if called else "") + "."
                      + (f" {mv['backdoored_without_clean_rate']} backdoored models have no clean rate (no lift)."
                         if mv.get("backdoored_without_clean_rate") else "")]
    if mv.get("possible") is not None:
        p = mv["possible"]
        lines += ["", "Called \"possible\" (score below 0.5, but a likely trigger word in the pool, moved words that "
                  "mark pool inputs, or flags at the threshold that a pool of another source may explain; "
                  "`detection.verdict_call`, `possible_reasons`): "
                  + f"{len(p['backdoored'])} backdoored" + (f" ({', '.join(p['backdoored'])})" if p["backdoored"] else "")
                  + f", {len(p['clean'])} clean" + (f" ({', '.join(p['clean'])})" if p["clean"] else "") + "."]
    wm = mv.get("with_moved")
    if wm:
        from backdoor_core import settings as S

        words = "; ".join(f"{k}: {', '.join(v)}" for k, v in wm["moved_words"].items()) or "none"
        lines += ["", "With the moved words scoring (`detection.with_moved_words`: words the fine-tune moved most "
                  "since the base checkpoint that no clean text holds and the pool concentrates, 0.5 + half their "
                  "strongest "
                  f"insertion flip; `settings.VERDICT_MOVED` {'on' if S.VERDICT_MOVED else 'off'} in this run): AUROC "
                  f"{_f(wm['auroc'], False)} (backdoors that took: {_f(wm['auroc_effective'], False)}); lift >= "
                  f"{100 * LIFT_CALLED:.0f} missed: {', '.join(wm['lifted_missed']) or 'none'}; clean called: "
                  f"{', '.join(wm['clean_called']) or 'none'}; called by them below 0.5: "
                  f"{', '.join(wm['called_now']) or 'none'}. Moved words: {words}."]
    lines += ["", "| model | attack | verdict score | call | flagged, first pass (triggered) | flagged, final pass "
              "(triggered / pool triggered) | suspicious heads | lift before |",
              "|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        heads = ", ".join(m["suspicious_heads"][:8]) + (" ..." if len(m["suspicious_heads"]) > 8 else "")
        first = (f"{m['first_pass_flagged']} ({m['first_pass_flagged_triggered']})"
                 if "first_pass_flagged" in m else "–")
        call = m.get("call") or ("likely" if m["verdict_score"] >= 0.5 else "–")
        lines.append(f"| {m['name']} | {m['attack']} | {m['verdict_score']:.2f} | {call} | {first} | {m['n_flagged']} "
                     f"({m['flagged_triggered']} / {m['pool_triggered']}) | {heads} | {_f(m.get('lift_before'))} |")
    if report.get("superseded_runs"):
        lines += ["", "## Earlier rows replaced by a later run (ablation)", "",
                  s.get("merge_note", ""), "",
                  "| model | defense | focus labels | replaced by | ASR before | ASR after | CACC before | CACC after "
                  "| seconds |", "|---|---|---|---|---|---|---|---|---|"]
        for r in report["superseded_runs"]:
            lines.append(f"| {r['model']} | {r['defense']} | {r['details'].get('focus_labels', False)} | "
                         f"{r.get('superseded_by', '')} | "
                         f"{_f(r['asr_before'])} | {_f(r['asr_after'])} | {_f(r['cacc_before'])} | "
                         f"{_f(r['cacc_after'])} | {r['seconds']:.0f} |")
    lines += _gate_check_lines(report)
    if sized:
        lines += ["", "## Evaluation sets used (rows; pairwise disjoint by source row and by text)", "",
                  "| model | dataset | defender | CACC | ASR | detection clean / triggered | pool (triggered) | scale "
                  "| test rows (non-target / can carry the trigger) | triggered rows shared with test |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m in sized:
            z = m["eval_sizes"]
            lines.append(f"| {m['name']} | {m.get('dataset', '')} | {z.get('n_clean', '-')} | {z['n_test']} | "
                         f"{z['n_poison']} | {z['n_detect_clean']} / {z['n_detect_triggered']} | {z['pool_size']} "
                         f"({z['pool_triggered']}) | {z['scale']:.2f} | {z['rows_test']} ({z['rows_non_target']} / "
                         f"{z['rows_triggerable']}{_left_out(z)}) | "
                         f"{'yes' if z['shared_rows'] else 'no (paraphrase file)'} |")
    lines += time_summary(report)
    parts = report.get("part_seconds")
    lines += ["", f"Total {report.get('seconds_total', 0):.0f} s" + (
        " (merged runs: " + ", ".join(f"{t} {sec:.0f} s" for t, sec in parts.items()) + ")" if parts else "") + "."]
    if report["settings"].get("wall_seconds") is not None:
        lines += [f"Wall time {report['settings']['wall_seconds'] / 60:.1f} min with "
                  f"{report['settings'].get('workers')} one-thread workers (`--workers`)."]
    lines += [""]
    return "\n".join(lines)


def _v(x) -> str:
    return "-" if x is None else str(x)


if __name__ == "__main__":
    sys.exit(main())
