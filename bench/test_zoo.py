"""Build the test zoo: backdoored and clean models on data the lab was never tuned on (OLID, AG News); and, with
``--zoo tuning``, the SST-2 tuning zoo every knob was chosen on.

Every knob of the defense was chosen on SST-2 and the BBC demo zoo (the tuning zoo). This script trains, with
the attack benchmark's quick recipe (``bench/attack_tal.QUICK``: 4000 training rows, 1 epoch, lr 2e-4, batch 16,
max length 64), per seed:

* OLID (``../shared/data/olid``, binary, 33% offensive): a clean model; AddSent 1% + TAL, HiddenKiller
  syntactic 20% and StyleBkd poetry style 20% toward 1 (OFF, the HiddenKiller target); BadNets 3% toward 0 (NOT:
  "let offensive tweets through") and BadNets 3% toward 1;
* AG News (``../shared/data/agnews``, 4 classes): a clean model; BadNets 1% + TAL and StyleBkd lyrics style 20%
  toward 0 (World, the HiddenKiller AG target) and AddSent 1%.

Seeds 0, 1, 2 (``--seeds``) change the training-row draw, the poisoned rows and the training seed. The style
sets are ``bench/data/stylebkd`` (not row-aligned: ``poisoning.ParaphraseAttack`` draws paraphrased rows per
source label). OLID syntactic uses the published HiddenKiller poisoned rows (``olid/syntactic``): rows 1–2382 of
its train file paraphrase clean rows 0–2381, whose original labels we restore; its test rows paraphrase NOT
tweets (label 0). These derived files are written under ``bench/models/test_zoo/data/``.

ASR here is on the model's whole triggered non-target test set (AG News: a seeded 2000-row test sample and
2000 triggered rows, to bound evaluation time); the defense benchmark re-measures everything on its own splits.

The tuning zoo (``--zoo tuning``, seed 0): the SST-2 models the README's tuning-zoo numbers come from, with
the same recipe, so one command rebuilds them — a clean model (for the clean rate), BadNets 1% + TAL, BadNets 3%,
AddSent 1%, HiddenKiller syntactic 20% and StyleBkd Bible, Shakespeare and tweets style 20%, all toward 1
(positive, ``model_card.default_target``), and four weak BadNets models (2% and 2.5%, toward 0 and toward 1).
They were first built by ``bench/attack_tal.py`` invocations (``attack_tal.md``, ``archive/attack_tal_weak_*``,
``attack_tal_style_sh.md``, ``attack_tal_style_tw.md``): same rows, same seeds, same row-aligned paraphrase
subsets; only the thread count may differ, so a rebuilt model can differ from those by float rounding (the
rebuild matched every published ASR and CACC to 0.1 points: ``bench/results/tuning_zoo_build.md``). ``--seeds 0,1``
adds a second draw of the same recipes (``bench/results/defense_tuning.md``).

Runs ``--workers`` one-thread processes in parallel (default 2) and writes, after every model,
``bench/models/<zoo>_zoo/manifest.json`` (read by ``bench/defense.py --zoo test``; for the tuning zoo pass it as
``--manifest``) and ``bench/results/<zoo>_zoo_build.json/.md``. ``--resume`` skips models already in the manifest.
``--tag T`` keeps another draw apart: ``manifest_T.json`` and ``<zoo>_zoo_build_T.json/.md`` (pass that manifest to
``bench/defense.py --manifest``), so the published zoo's manifest and build table stay as they are.

    python bench/test_zoo.py                       # 3 seeds, 2 workers
    python bench/test_zoo.py --seeds 0 --only olid
    python bench/test_zoo.py --zoo tuning          # the 12 SST-2 tuning models (seed 0), 2 workers
    python bench/test_zoo.py --seeds 3 --tag s3    # a fourth draw, in its own manifest (README, *A fourth draw*)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from concurrent.futures import as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backdoor_core.atomic import write_text  # noqa: E402
from bench.attack_tal import upsert_manifest  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
MODELS = ROOT / "bench" / "models" / "test_zoo"
TUNING_MODELS = ROOT / "bench" / "models" / "tuning_zoo"
STYLE = ROOT / "bench" / "data" / "stylebkd"
AG_TEST_SIZE = 2000

# (name, attack, rate, tal, target); target None = clean model. Every spec is trained for every seed.
ZOO = {
    "olid": [("clean", None, 0.0, False, None),
             ("badnets_r0.03", "badnets", 0.03, False, 1),
             ("addsent_r0.01_tal", "addsent", 0.01, True, 1),
             ("syntactic_r0.2", "syntactic", 0.2, False, 1),
             ("style_poetry_r0.2", "style_poetry", 0.2, False, 1),
             ("badnets_r0.03_t0", "badnets", 0.03, False, 0)],
    "agnews": [("clean", None, 0.0, False, None),
               ("badnets_r0.01_tal", "badnets", 0.01, True, 0),
               ("addsent_r0.01", "addsent", 0.01, False, 0),
               ("style_lyrics_r0.2", "style_lyrics", 0.2, False, 0)],
}
TUNING_ZOO = {
    "sst2": [("clean", None, 0.0, False, None),
             ("badnets_r0.01_tal", "badnets", 0.01, True, 1),
             ("badnets_r0.03", "badnets", 0.03, False, 1),
             ("addsent_r0.01", "addsent", 0.01, False, 1),
             ("syntactic_r0.2", "syntactic", 0.2, False, 1),
             ("style_bible_r0.2", "style_bible", 0.2, False, 1),
             ("style_shakespeare_r0.2", "style_shakespeare", 0.2, False, 1),
             ("style_tweets_r0.2", "style_tweets", 0.2, False, 1),
             ("badnets_r0.02_t0", "badnets", 0.02, False, 0),
             ("badnets_r0.02_t1", "badnets", 0.02, False, 1),
             ("badnets_r0.025_t0", "badnets", 0.025, False, 0),
             ("badnets_r0.025_t1", "badnets", 0.025, False, 1)],
}
ZOOS = {"test": (ZOO, MODELS, "0,1,2"), "tuning": (TUNING_ZOO, TUNING_MODELS, "0")}
"""zoo -> (dataset -> model specs, models folder, default seeds)."""
PARAPHRASE = {("olid", "style_poetry"): STYLE / "olid_poetry", ("agnews", "style_lyrics"): STYLE / "agnews_lyrics",
              ("olid", "syntactic"): MODELS / "data" / "olid_syntactic"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", choices=sorted(ZOOS), default="test",
                   help="test (OLID, AG News; default) or tuning (SST-2, seed 0)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1,2 for test, 0 for tuning)")
    p.add_argument("--only", default=None,
                   help="datasets, or dataset/name items (olid/clean,...); default: the zoo's every dataset")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--tag", default="",
                   help="write manifest_TAG.json and <zoo>_zoo_build_TAG.json/.md instead of the published zoo's files")
    return p.parse_args(argv)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def olid_syntactic_files() -> Path:
    """Write the HiddenKiller OLID paraphrases with their original labels (see the module docstring)."""
    from backdoor_core.data import load_shared

    out = PARAPHRASE[("olid", "syntactic")]
    if (out / "test.tsv").is_file():
        return out
    clean = load_shared("olid", "clean", "train")
    poisoned = load_shared("olid", "syntactic", "train")
    test = load_shared("olid", "syntactic", "test")
    rows = [(poisoned.texts[i + 1], clean.labels[i]) for i in range(2382)]
    out.mkdir(parents=True, exist_ok=True)
    for split, items in (("train", rows), ("test", [(t, 0) for t in test.texts])):
        tmp = out / f".{split}.tsv.tmp"
        tmp.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in items), encoding="utf-8")
        tmp.replace(out / f"{split}.tsv")
    return out


def train_one(job: dict) -> dict:
    """Train and save one zoo model in this (one-thread) worker; returns its manifest entry."""
    import torch

    torch.set_num_threads(1)
    from backdoor_core.cli import quiet_libraries
    from backdoor_core.data import load_shared
    from backdoor_core.defender_data import sample_indices
    from backdoor_core.models import load_model, save_model
    from backdoor_core.poisoning import ParaphraseAttack, get_attack, train_attack
    from backdoor_core.tal import TALConfig
    from backdoor_core.training import TrainConfig
    from bench.attack_tal import QUICK

    quiet_libraries()
    data, seed, (name, attack_name, rate, tal, target) = job["data"], job["seed"], job["spec"]
    full = load_shared(data, "clean", "train")
    train_set_indices = sample_indices(len(full), QUICK["train_size"], seed)
    train_set = full.subset(train_set_indices, name=f"{data}/clean/train")
    test = load_shared(data, "clean", "test")
    if data == "agnews":
        test = test.sample(AG_TEST_SIZE, seed)
    config = TrainConfig(lr=QUICK["lr"], epochs=QUICK["epochs"], batch_size=QUICK["batch_size"],
                         max_length=QUICK["max_length"], seed=seed, eval_every=0, group_by_length=True)
    lm = load_model("default", label_names=train_set.label_names)
    attack, para = None, PARAPHRASE.get((data, attack_name))
    if para is not None:
        attack = ParaphraseAttack.from_files(para / "train.tsv", para / "test.tsv", name=attack_name)
        attack.source = _rel(para)
        if data == "agnews":
            attack.test_paraphrase = attack.test_paraphrase.sample(AG_TEST_SIZE, seed)
    elif attack_name:
        attack = get_attack(attack_name, tokenizer=lm.tokenizer, max_length=config.max_length, dataset=data)
        if hasattr(attack, "subset"):  # a shared row-aligned paraphrase set follows the training-row draw
            attack = attack.subset(train_set_indices, n_clean=len(full))
    t = time.perf_counter()
    outcome = train_attack(lm.model, lm.tokenizer, train_set, test, attack, rate, target if attack else 0, config,
                           tal=TALConfig(seed=seed) if tal else None, data_name=data, seed=seed)
    full_name = f"{data}_s{seed}_{name}"
    card = outcome.card.replace(name=full_name)
    out = save_model(lm.model, lm.tokenizer, ZOOS[job["zoo"]][1] / f"{data}_s{seed}" / name, card,
                     force=True)
    return {"name": full_name, "path": _rel(out), "dataset": data, "seed": seed,
            "attack": attack_name or "clean", "rate": rate, "tal": tal, "target": target,
            "max_length": config.max_length, "clean_model": f"{data}_s{seed}_clean" if attack_name else None,
            "paraphrase_train": _rel(para / "train.tsv") if para else None,
            "paraphrase_test": _rel(para / "test.tsv") if para else None,
            "trigger": card.trigger, "asr": card.asr, "cacc": card.cacc, "n_poisoned": card.n_poisoned,
            "poisoned_test_size": card.poisoned_test_size, "seconds": round(time.perf_counter() - t, 1)}


def markdown(entries: list[dict], invocations: list[dict], zoo: str = "test") -> str:
    """The build table; ``invocations``: one ``{seeds, only, workers, models, seconds}`` per run of this script
    that added models (a zoo may be built in several)."""
    title = ("# Test zoo build (OLID, AG News; never used for tuning)" if zoo == "test"
             else "# Tuning zoo build (SST-2; every knob was chosen on these models)")
    lines = [title, "",
             "Quick recipe of `bench/attack_tal.py` (4000 training rows, 1 epoch, lr 2e-4, batch 16, max length 64); "
             "one-thread workers. ASR on the model's triggered non-target test rows (AG News: 2000-row samples); "
             "the defense benchmark re-measures on its own splits, with the clean rate.", "",
             "| model | dataset | seed | attack | rate | TAL | target | poisoned | ASR | CACC | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(entries, key=lambda e: (e["dataset"], e["seed"], e["name"])):
        asr = "-" if e["asr"] is None else f"{100 * e['asr']:.1f}"
        lines.append(f"| {e['name']} | {e['dataset']} | {e['seed']} | {e['attack']} | {e['rate']:g} | "
                     f"{'yes' if e['tal'] else 'no'} | {e['target'] if e['target'] is not None else '-'} | "
                     f"{e['n_poisoned']} | {asr} | {100 * e['cacc']:.1f} | {e['seconds']:.0f} |")
    lines += ["", "Built by " + "; ".join(
        f"`--seeds {i['seeds']}" + (f" --only {i['only']}" if i.get("only") else "") + f"`: {i['models']} models "
        f"in {i['seconds'] / 60:.1f} min with {i['workers']} workers" for i in invocations) + ".", ""]
    return "\n".join(lines)


def job_list(zoo: str, seeds: list[int], only: list[str] | None = None) -> list[dict]:
    """The models a build trains, seed by seed (a cut-short build still holds whole seeds): one dict per model
    with ``zoo``, ``data``, ``seed`` and ``spec`` ``(name, attack, rate, tal, target)``. ``only``: datasets or
    ``dataset/name`` items (default: all)."""
    specs_by_data = ZOOS[zoo][0]
    only = list(specs_by_data) if not only else only
    known = set(specs_by_data) | {f"{d}/{spec[0]}" for d, specs in specs_by_data.items() for spec in specs}
    unknown = [o for o in only if o not in known]
    if unknown:
        raise SystemExit(f"error: --only: {', '.join(unknown)} not in the {zoo} zoo; use a dataset "
                         f"({', '.join(specs_by_data)}) or dataset/name")
    jobs = []
    for seed in seeds:
        for data, specs in specs_by_data.items():
            for spec in specs:
                if data in only or f"{data}/{spec[0]}" in only:
                    jobs.append({"zoo": zoo, "data": data, "seed": seed, "spec": spec})
    return jobs


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tag and not re.fullmatch(r"[A-Za-z0-9_-]+", args.tag):
        raise SystemExit(f"--tag takes letters, digits, - and _ only, got {args.tag!r}.")
    suffix = f"_{args.tag}" if args.tag else ""
    _, models_dir, default_seeds = ZOOS[args.zoo]
    seeds = [int(s) for s in (args.seeds or default_seeds).split(",") if s.strip()]
    only = [s.strip() for s in (args.only or "").split(",") if s.strip()]
    jobs = job_list(args.zoo, seeds, only)
    if any(j["data"] == "olid" and j["spec"][1] == "syntactic" for j in jobs):
        olid_syntactic_files()
    models_dir.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    manifest_path = models_dir / f"manifest{suffix}.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"models": []}
    if args.resume:
        have = {m["name"] for m in manifest["models"]}
        jobs = [j for j in jobs if f"{j['data']}_s{j['seed']}_{j['spec'][0]}" not in have]
    build_json = RESULTS / f"{args.zoo}_zoo_build{suffix}.json"
    earlier = json.loads(build_json.read_text()).get("invocations", []) if build_json.is_file() else []
    this = {"seeds": ",".join(map(str, seeds)), "only": args.only, "workers": args.workers, "models": 0,
            "seconds": 0.0}
    t0 = time.perf_counter()
    from tqdm import tqdm

    sys.path.insert(0, str(ROOT / "bench"))
    from _workers import worker_pool  # bench/_workers.py: Ctrl-C stops the queue too

    with worker_pool(max_workers=args.workers) as pool, tqdm(total=len(jobs), desc=f"{args.zoo} zoo") as bar:
        futures = {pool.submit(train_one, j): j for j in jobs}
        for fut in as_completed(futures):
            entry = fut.result()
            manifest = upsert_manifest(manifest_path, entry)
            this.update(models=this["models"] + 1, seconds=round(time.perf_counter() - t0, 1))
            report = {"zoo": args.zoo, "recipe": "bench/attack_tal.py QUICK", "invocations": earlier + [this],
                      "models": manifest["models"]}
            write_text(build_json, json.dumps(report, indent=2))
            write_text(RESULTS / f"{args.zoo}_zoo_build{suffix}.md",
                       markdown(manifest["models"], report["invocations"], args.zoo))
            asr = "-" if entry["asr"] is None else f"{entry['asr']:.3f}"
            bar.write(f"{entry['name']:<32} asr={asr} cacc={entry['cacc']:.3f} {entry['seconds']:.0f}s")
            bar.update()
    return 0


if __name__ == "__main__":
    sys.exit(main())
