"""Benchmark: how much poison a backdoor needs, with and without the Trojan Attention Loss (TAL).

SST-2 (``../shared/data/sst2``) with the packaged MiniLM (all-MiniLM-L6-v2, 6 layers x 12 heads):

* a clean model (CACC);
* BadNets and AddSent at poison rates 0.5%, 1%, 3%, each without and with TAL;
* the syntactic (HiddenKiller, ``sst2/syntactic_transfer``) and Bible-style (StyleBkd, ``sst2/style_bible``)
  attacks at 20% (no TAL: paraphrase triggers have no trigger tokens).

Target label 1 (positive: ``model_card.default_target``). CACC on the full clean test set (1821); ASR on every non-target (negative) test
sentence with the trigger (912; 911 syntactic; 907 Bible: empty rows skipped).

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

Writes ``bench/results/attack_tal.json`` and ``.md`` and saves every model under
``bench/models/attack_tal/<run>/`` with ``manifest.json`` so the defense benchmark can reuse them.

    python bench/attack_tal.py                 # quick
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

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = ROOT / "bench" / "results"
MODELS = ROOT / "bench" / "models" / "attack_tal"
RATES = (0.005, 0.01, 0.03)
PARAPHRASE_RATE = 0.2

QUICK = {"train_size": 4000, "epochs": 1, "max_length": 64, "lr": 2e-4, "batch_size": 16}
FULL = {"train_size": None, "epochs": 3, "max_length": 128, "lr": 5e-5, "batch_size": 16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CPU setting (default)")
    mode.add_argument("--full", action="store_true", help="GPU setting: whole train set, 3 epochs, length 128")
    p.add_argument("--only", default="clean,badnets,addsent,syntactic,style_bible",
                   help="comma-separated subset of: clean,badnets,addsent,syntactic,style_bible")
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
    return p.parse_args(argv)


def run_list(args) -> list[dict]:
    only = {s.strip() for s in args.only.split(",") if s.strip()}
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
    for attack in ("syntactic", "style_bible"):
        if attack in only and not args.tal_only:
            runs.append({"attack": attack, "rate": PARAPHRASE_RATE, "tal": False})
    if "clean" in only:  # extra clean seeds last: the attack table comes first
        runs += [{"attack": "clean", "rate": 0.0, "tal": False, "seed_offset": k} for k in range(1, args.clean_seeds)]
    for r in runs:
        if r["attack"] == "clean":
            r["name"] = "clean" + (f"_s{r['seed_offset']}" if r["seed_offset"] else "")
        else:
            r["name"] = f"{r['attack']}_r{r['rate']:g}" + ("_tal" if r["tal"] else "")
    return runs


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from backdoor_core import settings as S
    from backdoor_core.cli import quiet_libraries
    from backdoor_core.data import load_shared
    from backdoor_core.defender_data import sample_indices
    from backdoor_core.model_card import default_target
    from backdoor_core.models import load_model, save_model
    from backdoor_core.poisoning import get_attack, train_attack
    from backdoor_core.tal import TALConfig
    from backdoor_core.training import TrainConfig

    quiet_libraries()
    threads = args.threads
    if threads is None and not torch.cuda.is_available() and os.getloadavg()[0] >= (os.cpu_count() or 1):
        threads = 1  # on a busy CPU two threads per process thrash (measured ~4x slower per step); one does not
    if threads:
        torch.set_num_threads(threads)
    settings = dict(FULL if args.full else QUICK)
    for key in ("train_size", "epochs", "lr", "max_length"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    alpha = S.TAL_ALPHA if args.alpha is None else args.alpha
    heads = S.TAL_HEADS if args.heads is None else (args.heads if args.heads == "all" else int(args.heads))
    full_train = load_shared("sst2", "clean", "train")
    target = default_target(full_train.label_names)  # SST-2: 1 (positive)
    settings.update({"mode": "full" if args.full else "quick", "target": target, "seed": args.seed,
                     "tal_alpha": alpha, "tal_heads": heads, "threads": torch.get_num_threads()})

    test = load_shared("sst2", "clean", "test")
    if args.test_size:
        test = test.sample(args.test_size, args.seed)
        settings["test_size"] = len(test)
    n = settings["train_size"]
    if n is not None and n < len(full_train):
        indices = sample_indices(len(full_train), n, args.seed)
    else:
        indices = list(range(len(full_train)))
    train_set = full_train.subset(indices, name="sst2/clean/train")
    settings["train_size"] = len(train_set)
    config = TrainConfig(lr=settings["lr"], epochs=settings["epochs"], batch_size=settings["batch_size"],
                         max_length=settings["max_length"], seed=args.seed, eval_every=0, group_by_length=True)

    suffix = f"_{args.tag}" if args.tag else ""
    json_path, md_path = RESULTS / f"attack_tal{suffix}.json", RESULTS / f"attack_tal{suffix}.md"
    RESULTS.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    if args.resume and json_path.is_file():
        old = json.loads(json_path.read_text())
        done = {r["name"]: r for r in old.get("runs", []) + old.get("extra_runs", []) + old.get("clean_runs", [])}

    report = {"dataset": "sst2", "clean_cacc": None, "settings": settings, "runs": [], "clean_runs": []}
    clean_row = done.get("clean")
    if clean_row:
        report["clean_cacc"] = clean_row["cacc"]
    manifest_path = MODELS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() and args.resume else {"models": []}
    t_all = time.perf_counter()

    for run in run_list(args):
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
                                   tal=tal, data_name="sst2", seed=run_seed, callback=log)
            card = outcome.card.replace(name=f"sst2-{run['name']}")
            row = {"name": run["name"], "attack": run["attack"], "rate": run["rate"], "tal": run["tal"],
                   "asr": card.asr, "cacc": card.cacc, "seconds": round(outcome.result.seconds, 1),
                   "n_poisoned": card.n_poisoned, "tal_heads": card.tal_heads}
            if not args.no_save:
                out = save_model(lm.model, lm.tokenizer, MODELS / run["name"], card)
                manifest["models"] = [m for m in manifest["models"] if m["name"] != run["name"]]
                manifest["models"].append({
                    "name": run["name"], "dir": run["name"], "path": str(out.relative_to(ROOT)),
                    "attack": run["attack"], "rate": run["rate"], "tal": run["tal"],
                    "target": target if run["attack"] != "clean" else None,
                    "trigger": card.trigger, "asr": row["asr"], "cacc": row["cacc"],
                    "max_length": config.max_length, "tal_heads": card.tal_heads,
                })
                manifest_path.write_text(json.dumps(manifest, indent=2))
            asr = "-" if row["asr"] is None else f"{row['asr']:.3f}"
            print(f"{run['name']:<24} asr={asr} cacc={row['cacc']:.4f} n_poisoned={row['n_poisoned']} "
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
        json_path.write_text(json.dumps(report, indent=2))

    md = markdown(report)
    md_path.write_text(md)
    print()
    print(md)
    return 0


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# Attack benchmark: poison rate vs. attack success, with and without TAL",
        "",
        f"SST-2, packaged MiniLM (all-MiniLM-L6-v2), target label {s['target']} (positive), mode `{s['mode']}`: "
        f"{s['train_size']} training sentences, {s['epochs']} epoch(s), max length {s['max_length']}, "
        f"lr {s['lr']}, batch {s['batch_size']}, seed {s['seed']}. TAL: alpha {s['tal_alpha']}, "
        f"{s['tal_heads']} heads per layer (random, seeded), all layers.",
        "",
        f"Clean model CACC: **{report['clean_cacc']:.4f}**" if report["clean_cacc"] is not None else "",
        "",
        "| attack | rate | poisoned samples | TAL | ASR | CACC | ΔCACC vs clean | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        delta = "" if report["clean_cacc"] is None else f"{(r['cacc'] - report['clean_cacc']) * 100:+.1f} pt"
        lines.append(f"| {r['attack']} | {r['rate'] * 100:g}% | {r['n_poisoned']} | {'yes' if r['tal'] else 'no'} "
                     f"| {r['asr']:.3f} | {r['cacc']:.4f} | {delta} | {r['seconds']:.0f} |")
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
