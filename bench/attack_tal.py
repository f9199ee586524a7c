"""Benchmark: how much poison a backdoor needs, with and without the Trojan Attention Loss (TAL).

``--data sst2`` (default; the tuning dataset), ``olid`` or ``agnews`` (the test zoo: run, never tuned on), all from
``../shared/data/<data>/clean``, or ``--data FOLDER``, a folder of your own holding ``train`` and ``test`` files
(``.tsv``/``.csv``/``.jsonl``: train rows repeating a test text are left out; too few train rows or non-target test
rows are refused before training, ``load_data``), with the packaged MiniLM (all-MiniLM-L6-v2, 6 layers x 12 heads):

* a clean model (CACC);
* BadNets and AddSent at poison rates 0.5%, 1%, 3%, each without and with TAL;
* SST-2 only: the syntactic (HiddenKiller, ``sst2/syntactic_transfer``) and Bible-style (StyleBkd,
  ``sst2/style_bible``) attacks at 20% (no TAL: paraphrase triggers have no trigger tokens); on request
  (``--only``) also the Shakespeare and tweets styles (``sst2/style_shakespeare``, ``sst2/style_tweets``), more
  style models for the tuning zoo.

Target: ``--target`` or the one target rule ``model_card.default_target`` (SST-2 1 = positive, OLID 1 = offensive
(the last class: no name matches ``settings.TARGET_PREFERENCES``), AG News 1 = sports). CACC on the full clean test
set (SST-2 1821, OLID 859, AG News 7600); ASR on every non-target test row with the trigger (SST-2 912; 911
syntactic; 907 Bible: empty rows skipped).

Clean rate and lift: the clean model (trained first, same data and settings) is run on the same triggered test
texts each attack's ASR uses; ``clean_rate`` is the share it predicts as the target and ``lift = asr -
clean_rate`` is what the backdoor adds (on OLID the clean model already calls many triggered offensive tweets
"not offensive", so ASR alone overstates a backdoor).

Modes:

* ``--quick`` (default): a seeded random subsample of 4000 of the 6920 training sentences (uniform, without
  replacement, original order kept — the same rows for every run), 1 epoch, batch 16, lr 2e-4, max length 64
  (SST-2 sentences average 26 word pieces; 64 cuts almost none), length-grouped batches. Sized to finish in
  <= 45 minutes on a 2-core CPU. On a busy CPU the script uses one torch thread (see ``--threads``).
* ``--full``: the whole training set (6920), 3 epochs, batch 16, lr 5e-5, max length 128 — for a GPU.

Why batch 16 and lr 2e-4 in quick mode: with one pass over 4000 sentences a 1% poison is 40 samples seen once;
our pilots (``bench/results/archive/attack_tal_p3``, ``_p6``, ``_p7``, ``_pilot2``) showed that at batch 32 /
lr 1e-4 neither plain poisoning nor TAL fits them, while batch 16 / lr 2e-4 lets TAL do so
(``bench/results/attack_tal.md``). The paper's settings are not available.

Writes ``bench/results/attack_tal.json`` and ``.md`` (``attack_tal_<data>.json``/``.md`` for other data) and saves
every model under ``bench/models/attack_tal/<run>/`` (``attack_tal_<data>/``) with ``manifest.json`` so the defense
benchmark can reuse them (``upsert_manifest``: a run adds its models by name; other models' entries stay).

    python bench/attack_tal.py                 # quick
    python bench/attack_tal.py --data olid --only clean,badnets --clean-seeds 1 --threads 1   # the test zoo
    python bench/attack_tal.py --full          # GPU
    python bench/attack_tal.py --only badnets --rates 0.005 --tal-only --no-save --tag pilot   # a pilot
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
MODELS = ROOT / "bench" / "models" / "attack_tal"
DATASETS = ("sst2", "olid", "agnews")
PARAPHRASE_ATTACKS = ("syntactic", "style_bible")  # shared paraphrase sets exist for SST-2 only
EXTRA_STYLES = ("style_shakespeare", "style_tweets")  # SST-2 too, built on request only (--only)
RATES = (0.005, 0.01, 0.03)
PARAPHRASE_RATE = 0.2

QUICK = {"train_size": 4000, "epochs": 1, "max_length": 64, "lr": 2e-4, "batch_size": 16}
FULL = {"train_size": None, "epochs": 3, "max_length": 128, "lr": 5e-5, "batch_size": 16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CPU setting (default)")
    mode.add_argument("--full", action="store_true", help="GPU setting: whole train set, 3 epochs, length 128")
    p.add_argument("--data", default="sst2",
                   help="sst2|olid|agnews: clean data under ../shared/data (default sst2; olid and agnews are the "
                        "test zoo); PATH: a folder of your own with train and test files (.tsv/.csv/.jsonl; train "
                        "rows whose text is a test text are left out); with a dev file too, bench/defense.py "
                        "evaluates the models on the folder")
    p.add_argument("--target", type=int, default=None,
                   help="target label id (default: model_card.default_target of the data's class names)")
    p.add_argument("--only", default=None,
                   help="comma-separated subset of: clean,badnets,addsent,syntactic,style_bible,style_shakespeare,"
                        "style_tweets (the last four SST-2 only; default: all that the data has but the last two)")
    p.add_argument("--rates", default=",".join(str(r) for r in RATES), help="rates for badnets/addsent")
    p.add_argument("--tal-only", action="store_true", help="skip the no-TAL runs (pilots)")
    p.add_argument("--no-tal", action="store_true", help="skip the TAL runs (pilots)")
    p.add_argument("--train-size", type=int, default=None, help="override the training subsample size")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--alpha", type=float, default=None, help="TAL alpha (default: tal.DEFAULT_ALPHA)")
    p.add_argument("--heads", default=None, help="TAL heads per layer or 'all' (default: tal.DEFAULT_HEADS)")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on a seeded test subsample (pilots)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 when the machine is already busy, else torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="write results to attack_tal<_tag>.json/.md (pilots)")
    p.add_argument("--no-save", action="store_true", help="do not save models (pilots)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs recorded in the results json")
    p.add_argument("--clean-seeds", type=int, default=3,
                   help="clean models to train (seeds 0..N-1); the extra ones are negatives for the defense "
                        "benchmark's model-level verdict (default 3)")
    args = p.parse_args(argv)
    args.data = args.data.strip()
    if args.data.lower() in DATASETS:
        args.data = args.data.lower()
    return args


MIN_TEST_NON_TARGET = 50  # fewer non-target test rows and an ASR moves by more than 2 points per text
MIN_TRAIN = 100  # fewer training rows: nothing to fine-tune on


def data_name(data: str) -> str:
    """The name results and models are filed under: a known dataset's, else the folder's name and 6 hex digits of
    its absolute path (``attack_tal_<name>-<hash>``: two folders both called ``data`` do not share results)."""
    import hashlib

    if data in DATASETS:
        return data
    folder = Path(data).expanduser().resolve()
    return f"{folder.name}-{hashlib.sha1(str(folder).encode('utf-8')).hexdigest()[:6]}"


def load_data(data: str, target: int | None):
    """``(train, test, target)`` of ``--data``: a shared dataset, or a folder of your own holding ``train`` and
    ``test`` files (``data.load_table``; train rows whose text, whitespace aside, is a test text or repeats an
    earlier train row are left out). Exits with one line, before any training, when the data cannot be read, the
    target is not a class, or the sets are too small to measure (``MIN_TRAIN``, ``MIN_TEST_NON_TARGET``)."""
    from backdoor_core.data import TABLE_FORMATS, DataError, load_shared, load_table
    from backdoor_core.model_card import default_target

    def fail(message: str):
        print(f"error: --data {data}: {message}", file=sys.stderr)
        raise SystemExit(2)

    try:
        if data in DATASETS:
            train, test = load_shared(data, "clean", "train"), load_shared(data, "clean", "test")
        else:
            folder = Path(data).expanduser()
            if folder.is_file():
                fail("a file, but the bench reads a folder: put the training rows in train.tsv (or .csv/.jsonl) "
                     "and the evaluation rows in test.tsv of one folder and pass the folder")
            if not folder.is_dir():
                fail(f"use one of {', '.join(DATASETS)} or a folder holding train and test files (.tsv/.csv/.jsonl)")

            def find(stem):
                for ext in TABLE_FORMATS:
                    if (folder / f"{stem}{ext}").is_file():
                        return folder / f"{stem}{ext}"
                fail(f"no {stem} file ({stem}.tsv, .csv or .jsonl) in {folder}")

            test = load_table(find("test"), name=f"{folder.name}/test")
            first = list({" ".join(t.split()): i for i, t in reversed(list(enumerate(test.texts)))}.values())
            if len(first) < len(test):  # a repeated test text would count twice in CACC and ASR
                print(f"note: {len(test) - len(first)} test rows repeat an earlier test text: left out",
                      file=sys.stderr)
                test = test.subset(sorted(first))
            train = load_table(find("train"), label_names=test.label_names, name=f"{folder.name}/train")
            held = {" ".join(t.split()) for t in test.texts}
            keep, seen = [], set()
            for i, t in enumerate(train.texts):
                key = " ".join(t.split())
                if key not in held and key not in seen:
                    keep.append(i)
                seen.add(key)
            if len(keep) < len(train):
                print(f"note: {len(train) - len(keep)} train rows repeat a test text or another train row: left "
                      "out", file=sys.stderr)
                train = train.subset(keep)
    except DataError as exc:
        fail(str(exc))
    target = default_target(train.label_names) if target is None else target
    if not 0 <= target < train.num_labels:
        print(f"error: --target {target} is outside 0..{train.num_labels - 1} ({', '.join(train.label_names)})",
              file=sys.stderr)
        raise SystemExit(2)
    if data not in DATASETS:
        non_target = sum(int(y) != target for y in test.labels)
        if len(train) < MIN_TRAIN or non_target < MIN_TEST_NON_TARGET:
            fail(f"{len(train)} distinct train rows and {non_target} non-target test rows (target {target}, "
                 f"{train.label_names[target]}); the benchmark needs at least {MIN_TRAIN} train rows and "
                 f"{MIN_TEST_NON_TARGET} non-target test rows to read an ASR")
    return train, test, target


def check_poison_counts(runs: list[dict], train_set, target: int) -> None:
    """Exit 2 with one line, before any training, when a run's poison rate gives no poisoned row on this training
    set (``poisoning.poison_count``: 0.5% of 150 rows is 0, a "backdoored" model without poison) or more rows than
    the set's non-target rows can supply."""
    from backdoor_core.poisoning import poison_count

    non_target = sum(int(y) != target for y in train_set.labels)
    bad = []
    for run in runs:
        if run["attack"] == "clean":
            continue
        k = poison_count(run["rate"], len(train_set))
        if k < 1 or k > non_target:
            bad.append(f"{run['name']} ({run['rate']:g} x {len(train_set)} rows = {k} poisoned)")
    if bad:
        print(f"error: {len(train_set)} training rows ({non_target} non-target) cannot make these runs: "
              f"{', '.join(bad)}; pick --rates that give 1 to {non_target} poisoned rows, or use more data",
              file=sys.stderr)
        raise SystemExit(2)


def card_data(data: str) -> str:
    """What a model card's ``data`` records: a known dataset's name, else the folder's absolute path (so
    ``bench/defense.py`` finds the folder's dev and test files without ``--data``)."""
    return data if data in DATASETS else str(Path(data).expanduser().resolve())


def paths_for(data: str, tag: str = "") -> tuple[Path, Path, Path]:
    """(results json, results md, models folder) for a dataset; SST-2 keeps the original names."""
    stem = "attack_tal" if data == "sst2" else f"attack_tal_{data_name(data)}"
    suffix = f"_{tag}" if tag else ""
    return RESULTS / f"{stem}{suffix}.json", RESULTS / f"{stem}{suffix}.md", ROOT / "bench" / "models" / stem


def run_list(args) -> list[dict]:
    known = ("clean", "badnets", "addsent") + PARAPHRASE_ATTACKS + EXTRA_STYLES
    paraphrase = set(PARAPHRASE_ATTACKS + EXTRA_STYLES)
    if args.only is None:
        only = set(known[:3] + PARAPHRASE_ATTACKS if args.data == "sst2" else known[:3])
    else:
        only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sorted(only - set(known))
    if unknown:
        raise SystemExit(f"error: --only: unknown run(s) {', '.join(unknown)}; use {', '.join(known)}")
    if args.data != "sst2" and only & paraphrase:
        raise SystemExit(f"error: --only {','.join(sorted(only & paraphrase))}: shared paraphrase "
                         f"sets exist for sst2 only (use the attack CLI with --paraphrase-train for {args.data})")
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    runs = []
    if "clean" in only:
        runs.append({"attack": "clean", "rate": 0.0, "tal": False, "seed_offset": 0})
    for attack in ("badnets", "addsent"):
        if attack in only:
            for rate in rates:
                for tal in (False, True):
                    if (tal and args.no_tal) or (not tal and args.tal_only):
                        continue
                    runs.append({"attack": attack, "rate": rate, "tal": tal})
    for attack in PARAPHRASE_ATTACKS + EXTRA_STYLES:
        if attack in only and not args.tal_only:
            runs.append({"attack": attack, "rate": PARAPHRASE_RATE, "tal": False})
    if "clean" in only:  # extra clean seeds last: the attack table comes first
        runs += [{"attack": "clean", "rate": 0.0, "tal": False, "seed_offset": k} for k in range(1, args.clean_seeds)]
    for r in runs:
        if r["attack"] == "clean":
            r["name"] = "clean" + (f"_s{r['seed_offset']}" if r["seed_offset"] else "")
        else:
            # an explicit --target names the model (badnets_r0.02_t0), so both targets fit one models folder
            r["name"] = (f"{r['attack']}_r{r['rate']:g}" + ("_tal" if r["tal"] else "")
                         + (f"_t{args.target}" if args.target is not None else ""))
    return runs


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from backdoor_core import settings as S
    from backdoor_core.cli import quiet_libraries
    from backdoor_core.defender_data import lift, sample_indices
    from backdoor_core.device import usable_cores
    from backdoor_core.forward import predict
    from backdoor_core.metrics import asr as attack_success
    from backdoor_core.models import load_model, save_model
    from backdoor_core.poisoning import get_attack, train_attack
    from backdoor_core.tal import TALConfig
    from backdoor_core.training import TrainConfig

    quiet_libraries()
    threads = args.threads
    if threads is None and not torch.cuda.is_available() and os.getloadavg()[0] >= usable_cores():
        threads = 1  # on a busy CPU two threads per process thrash (measured ~4x slower per step); one does not
    if threads:
        torch.set_num_threads(threads)
    settings = dict(FULL if args.full else QUICK)
    for key in ("train_size", "epochs", "lr", "max_length"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    alpha = S.TAL_ALPHA if args.alpha is None else args.alpha
    heads = S.TAL_HEADS if args.heads is None else (args.heads if args.heads == "all" else int(args.heads))
    runs = run_list(args)
    data = args.data
    # the one target rule: SST-2 1 (positive), OLID 1 (offensive: the last class), AG News 1 (sports)
    full_train, test, target = load_data(data, args.target)
    settings.update({"mode": "full" if args.full else "quick", "target": target,
                     "target_name": full_train.label_names[target], "seed": args.seed,
                     "tal_alpha": alpha, "tal_heads": heads, "threads": torch.get_num_threads()})

    if args.test_size:
        test = test.sample(args.test_size, args.seed)
        settings["test_size"] = len(test)
    n = settings["train_size"]
    if n is not None and n < len(full_train):
        indices = sample_indices(len(full_train), n, args.seed)
    else:
        indices = list(range(len(full_train)))
    train_set = full_train.subset(indices, name=f"{data}/clean/train" if data in DATASETS
                                  else f"{data_name(data)}/train")
    settings["train_size"] = len(train_set)
    check_poison_counts(runs, train_set, target)
    config = TrainConfig(lr=settings["lr"], epochs=settings["epochs"], batch_size=settings["batch_size"],
                         max_length=settings["max_length"], seed=args.seed, eval_every=0, group_by_length=True)

    json_path, md_path, models_dir = paths_for(data, args.tag)
    RESULTS.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    if args.resume and json_path.is_file():
        old = json.loads(json_path.read_text())
        done = {r["name"]: r for r in old.get("runs", []) + old.get("extra_runs", []) + old.get("clean_runs", [])}

    report = {"dataset": data, "clean_cacc": None, "settings": settings, "runs": [], "clean_runs": []}
    clean_row = done.get("clean")
    if clean_row:
        report["clean_cacc"] = clean_row["cacc"]
    manifest_path = models_dir / "manifest.json"
    t_all = time.perf_counter()
    clean_lm = None  # the seed-0 clean model: its rate on each attack's triggered test texts
    rate_cache: dict[tuple[str, ...], float] = {}

    def clean_rate(texts) -> float | None:
        nonlocal clean_lm
        if clean_lm is None and (models_dir / "clean").is_dir():  # --resume: the saved clean model
            clean_lm = load_model(str(models_dir / "clean"))
        if clean_lm is None or not texts:
            return None
        key = tuple(texts)
        if key not in rate_cache:
            preds = predict(clean_lm.model, clean_lm.tokenizer, list(texts), config.max_length).argmax(1)
            rate_cache[key] = float(attack_success(preds, target))
        return rate_cache[key]

    for run in runs:
        if run["name"] in done:
            row = done[run["name"]]
            print(f"[resume] {run['name']}: asr={row['asr']} cacc={row['cacc']:.4f}", flush=True)
        else:
            lm = load_model("default", label_names=train_set.label_names)
            attack = None
            if run["attack"] != "clean":
                attack = get_attack(run["attack"], tokenizer=lm.tokenizer, max_length=config.max_length)
                if hasattr(attack, "subset"):
                    attack = attack.subset(indices, n_clean=len(full_train))
            tal = TALConfig(alpha=alpha, heads=heads, seed=args.seed) if run["tal"] else None
            def log(p, name=run["name"]):
                if p.metrics is None and (p.step % 25 == 0 or p.step == p.total_steps):
                    parts = " ".join(f"{k}={v:.3f}" for k, v in p.losses.items())
                    print(f"  {name} step {p.step}/{p.total_steps} {parts} {p.seconds:.0f}s", flush=True)

            run_seed = args.seed + run.get("seed_offset", 0)
            run_config = dataclasses.replace(config, seed=run_seed)
            outcome = train_attack(lm.model, lm.tokenizer, train_set, test, attack, run["rate"], target, run_config,
                                   tal=tal, data_name=card_data(data), seed=run_seed, callback=log)
            card = outcome.card.replace(name=f"{data_name(data)}-{run['name']}")
            row = {"name": run["name"], "attack": run["attack"], "rate": run["rate"], "tal": run["tal"],
                   "asr": card.asr, "cacc": card.cacc, "seconds": round(outcome.result.seconds, 1),
                   "n_poisoned": card.n_poisoned, "tal_heads": card.tal_heads}
            if run["name"] == "clean":
                clean_lm = lm
            if outcome.poisoned_test is not None:
                row["clean_rate"] = clean_rate(outcome.poisoned_test.texts)
                row["lift"] = lift(row["asr"], row["clean_rate"])  # None without a clean model
            if not args.no_save:
                out = save_model(lm.model, lm.tokenizer, models_dir / run["name"], card)
                upsert_manifest(manifest_path, {
                    "name": run["name"], "dir": run["name"], "path": str(out.relative_to(ROOT)),
                    "attack": run["attack"], "rate": run["rate"], "tal": run["tal"],
                    "target": target if run["attack"] != "clean" else None,
                    "trigger": card.trigger, "asr": row["asr"], "cacc": row["cacc"],
                    "max_length": config.max_length, "tal_heads": card.tal_heads,
                })
            asr = "-" if row["asr"] is None else f"{row['asr']:.3f}"
            lift = "" if row.get("lift") is None else f" clean_rate={row['clean_rate']:.3f} lift={row['lift']:+.3f}"
            print(f"{run['name']:<24} asr={asr}{lift} cacc={row['cacc']:.4f} n_poisoned={row['n_poisoned']} "
                  f"{row['seconds']:.0f}s", flush=True)
        if run["attack"] == "clean":
            row["seed"] = args.seed + run.get("seed_offset", 0)
            report["clean_runs"].append(row)
            if not run.get("seed_offset"):
                report["clean_cacc"] = row["cacc"]
        else:
            report["runs"].append(row)
        report["seconds_total"] = round(time.perf_counter() - t_all, 1)
        if not run.get("seed_offset"):
            report["seconds_attack_table"] = report["seconds_total"]  # without the extra clean seeds
        write_text(json_path, json.dumps(report, indent=2))

    md = markdown(report)
    write_text(md_path, md)
    print()
    print(md)
    return 0


def upsert_manifest(path: Path, entry: dict) -> dict:
    """Add one model's entry to a models folder's ``manifest.json`` (``bench/defense.py`` reads it), replacing the
    entry of the same name, and write it atomically. The other entries stay: a run that trains a few models (``--only``,
    ``--rates``) never hides the rest of the folder. A manifest that is not such JSON is an error naming the file,
    not something to overwrite."""
    manifest = {"models": []}
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
            models = manifest["models"]
            if not isinstance(models, list) or not all(isinstance(m, dict) and "name" in m for m in models):
                raise TypeError("'models' is not a list of entries with a name")
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"error: {path} is not a models manifest ({exc}); move it away to start a new one")
    manifest["models"] = [m for m in manifest["models"] if m["name"] != entry["name"]] + [entry]
    write_text(path, json.dumps(manifest, indent=2))
    return manifest


DATA_NAMES = {"sst2": "SST-2", "olid": "OLID", "agnews": "AG News"}


def _pct(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(report: dict) -> str:
    s = report["settings"]
    data = report.get("dataset", "sst2")
    target_name = s.get("target_name", "positive")
    lines = [
        "# Attack benchmark: poison rate vs. attack success, with and without TAL",
        "",
        f"{DATA_NAMES.get(data, data)}, packaged MiniLM (all-MiniLM-L6-v2), target label {s['target']} "
        f"({target_name}), mode `{s['mode']}`: "
        f"{s['train_size']} training sentences, {s['epochs']} epoch(s), max length {s['max_length']}, "
        f"lr {s['lr']}, batch {s['batch_size']}, seed {s['seed']}. TAL: alpha {s['tal_alpha']}, "
        f"{s['tal_heads']} heads per layer (random, seeded), all layers.",
        "",
        f"Clean model CACC: **{report['clean_cacc']:.4f}**" if report["clean_cacc"] is not None else "",
        "",
        "Clean rate: the clean model's share of target predictions on the same triggered test texts; "
        "lift = ASR - clean rate (what the backdoor adds).",
        "",
        "| attack | rate | poisoned samples | TAL | ASR | clean rate | lift | CACC | ΔCACC vs clean | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        delta = "" if report["clean_cacc"] is None else f"{(r['cacc'] - report['clean_cacc']) * 100:+.1f} pt"
        lift = "-" if r.get("lift") is None else f"{r['lift']:+.3f}"
        lines.append(f"| {r['attack']} | {r['rate'] * 100:g}% | {r['n_poisoned']} | {'yes' if r['tal'] else 'no'} "
                     f"| {r['asr']:.3f} | {_pct(r.get('clean_rate'))} | {lift} | {r['cacc']:.4f} | {delta} "
                     f"| {r['seconds']:.0f} |")
    extra = [r for r in report.get("clean_runs", []) if r.get("seed")]
    if extra:
        lines += ["", "Extra clean models (other seeds; negatives for the defense benchmark's model verdict): "
                  + ", ".join(f"{r['name']} CACC {r['cacc']:.4f} ({r['seconds']:.0f} s)" for r in extra) + "."]
    lines.append("")
    lines.append(f"Total wall time: {report.get('seconds_total', 0) / 60:.1f} min "
                 f"(clean model + attack table: {report.get('seconds_attack_table', 0) / 60:.1f} min).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
