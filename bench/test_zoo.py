"""Build the test zoo: backdoored and clean models on data the lab was never tuned on (OLID, AG News).

Every knob of the defense was chosen on SST-2 and the BBC demo zoo (the tuning zoo). This script trains, with
the attack benchmark's quick recipe (``bench/attack_tal.QUICK``: 4000 training rows, 1 epoch, lr 2e-4, batch 16,
max length 64), per seed:

* OLID (``../shared/data/olid``, binary, 33% offensive): a clean model; AddSent 1% + TAL, HiddenKiller
  syntactic 20% and StyleBkd poetry style 20% toward 1 (OFF, the HiddenKiller target); BadNets 3% toward 0 (NOT:
  "let offensive tweets through"); seed 0 only: BadNets 3% toward 1;
* AG News (``../shared/data/agnews``, 4 classes): a clean model; BadNets 1% + TAL and StyleBkd lyrics style 20%
  toward 0 (World, the HiddenKiller AG target); seed 0 only: AddSent 1%.

Seeds 0, 1, 2 (``--seeds``) change the training-row draw, the poisoned rows and the training seed. The style
sets are ``bench/data/stylebkd`` (not row-aligned: ``poisoning.ParaphraseAttack`` draws paraphrased rows per
source label). OLID syntactic uses the published HiddenKiller poisoned rows (``olid/syntactic``): rows 1–2382 of
its train file paraphrase clean rows 0–2381, whose original labels we restore; its test rows paraphrase NOT
tweets (label 0). These derived files are written under ``bench/models/test_zoo/data/``.

ASR here is on the model's whole triggered non-target test set (AG News: a seeded 2000-row test sample and
2000 triggered rows, to bound evaluation time); the defense benchmark re-measures everything on its own splits.

Runs ``--workers`` one-thread processes in parallel (default 2) and writes, after every model,
``bench/models/test_zoo/manifest.json`` (read by ``bench/defense.py --zoo test``) and
``bench/results/test_zoo_build.json/.md``. ``--resume`` skips models already in the manifest.

    python bench/test_zoo.py                       # 3 seeds, 2 workers
    python bench/test_zoo.py --seeds 0 --only olid
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backdoor_core.atomic import write_text  # noqa: E402
from bench.attack_tal import upsert_manifest  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODELS = ROOT / "bench" / "models" / "test_zoo"
STYLE = ROOT / "bench" / "data" / "stylebkd"
AG_TEST_SIZE = 2000

# (name, attack, rate, tal, target); target None = clean model. SEED0_ONLY: trained for seed 0 only (the 2-core
# budget of one session fits 8 models x 3 seeds + these two).
SEED0_ONLY = {("olid", "badnets_r0.03"), ("agnews", "addsent_r0.01")}
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
PARAPHRASE = {("olid", "style_poetry"): STYLE / "olid_poetry", ("agnews", "style_lyrics"): STYLE / "agnews_lyrics",
              ("olid", "syntactic"): MODELS / "data" / "olid_syntactic"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--only", default="olid,agnews", help="datasets, or dataset/name items (olid/clean,...)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--resume", action="store_true")
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
    train_set = full.subset(sample_indices(len(full), QUICK["train_size"], seed), name=f"{data}/clean/train")
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
        attack = get_attack(attack_name, tokenizer=lm.tokenizer, max_length=config.max_length)
    t = time.perf_counter()
    outcome = train_attack(lm.model, lm.tokenizer, train_set, test, attack, rate, target if attack else 0, config,
                           tal=TALConfig(seed=seed) if tal else None, data_name=data, seed=seed)
    full_name = f"{data}_s{seed}_{name}"
    card = outcome.card.replace(name=full_name)
    out = save_model(lm.model, lm.tokenizer, MODELS / f"{data}_s{seed}" / name, card, force=True)
    return {"name": full_name, "path": _rel(out), "dataset": data, "seed": seed,
            "attack": attack_name or "clean", "rate": rate, "tal": tal, "target": target,
            "max_length": config.max_length, "clean_model": f"{data}_s{seed}_clean" if attack_name else None,
            "paraphrase_train": _rel(para / "train.tsv") if para else None,
            "paraphrase_test": _rel(para / "test.tsv") if para else None,
            "trigger": card.trigger, "asr": card.asr, "cacc": card.cacc, "n_poisoned": card.n_poisoned,
            "poisoned_test_size": card.poisoned_test_size, "seconds": round(time.perf_counter() - t, 1)}


def markdown(entries: list[dict], seconds: float) -> str:
    lines = ["# Test zoo build (OLID, AG News; never used for tuning)", "",
             "Quick recipe of `bench/attack_tal.py` (4000 training rows, 1 epoch, lr 2e-4, batch 16, max length 64); "
             "one-thread workers. ASR on the model's triggered non-target test rows (AG News: 2000-row samples); "
             "the defense benchmark (`defense_test.md`) re-measures on its own splits, with the clean rate.", "",
             "| model | dataset | seed | attack | rate | TAL | target | poisoned | ASR | CACC | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(entries, key=lambda e: (e["dataset"], e["seed"], e["name"])):
        asr = "-" if e["asr"] is None else f"{100 * e['asr']:.1f}"
        lines.append(f"| {e['name']} | {e['dataset']} | {e['seed']} | {e['attack']} | {e['rate']:g} | "
                     f"{'yes' if e['tal'] else 'no'} | {e['target'] if e['target'] is not None else '-'} | "
                     f"{e['n_poisoned']} | {asr} | {100 * e['cacc']:.1f} | {e['seconds']:.0f} |")
    lines += ["", f"Wall time {seconds / 60:.1f} min.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    jobs = []
    for seed in seeds:  # seed by seed: a cut-short build still holds whole seeds
        for data, specs in ZOO.items():
            for spec in specs:
                if seed != 0 and (data, spec[0]) in SEED0_ONLY:
                    continue
                if data in only or f"{data}/{spec[0]}" in only:
                    jobs.append({"data": data, "seed": seed, "spec": spec})
    if any(j["data"] == "olid" and j["spec"][1] == "syntactic" for j in jobs):
        olid_syntactic_files()
    MODELS.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    manifest_path = MODELS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"models": []}
    if args.resume:
        have = {m["name"] for m in manifest["models"]}
        jobs = [j for j in jobs if f"{j['data']}_s{j['seed']}_{j['spec'][0]}" not in have]
    t0 = time.perf_counter()
    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=args.workers) as pool, tqdm(total=len(jobs), desc="test zoo") as bar:
        futures = {pool.submit(train_one, j): j for j in jobs}
        for fut in as_completed(futures):
            entry = fut.result()
            manifest = upsert_manifest(manifest_path, entry)
            seconds = time.perf_counter() - t0
            report = {"zoo": "test", "recipe": "bench/attack_tal.py QUICK", "workers": args.workers,
                      "seconds_total": round(seconds, 1), "models": manifest["models"]}
            write_text(RESULTS / "test_zoo_build.json", json.dumps(report, indent=2))
            write_text(RESULTS / "test_zoo_build.md", markdown(manifest["models"], seconds))
            asr = "-" if entry["asr"] is None else f"{entry['asr']:.3f}"
            bar.write(f"{entry['name']:<32} asr={asr} cacc={entry['cacc']:.3f} {entry['seconds']:.0f}s")
            bar.update()
    return 0


if __name__ == "__main__":
    sys.exit(main())
