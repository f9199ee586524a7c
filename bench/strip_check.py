"""Benchmark: which STRIP recipe is a fair baseline? STRIP variants, RAP and BKI on the BBC demo zoo.

Issue 14 found STRIP's AUROC below 0.5 on 10 of the 14 SST-2 models of bench/results/defense.md. This script
measures, per backdoored zoo model, the detection AUROC of held-out triggered inputs (non-target BBC test texts
with the model's trigger) against two clean sets:

* ``all``: clean BBC test texts of every class (what bench/defense.py compares against), and
* ``matched``: clean test texts of the non-target classes only — the triggered inputs' own source classes, so a
  detector that merely reacts to the class mix (some classes are more stable under perturbation than others)
  cannot score.

STRIP variants (``backdoor_core/baselines/strip.py``): word pool ``all`` (the old default) / ``tfidf``
(OpenBackdoor's recipe) / ``opposite`` (TF-IDF words of clean texts of another label than the prediction),
``replace`` words or ``insert`` them (the input's words, the trigger included, all stay), score ``entropy`` (mean
per-copy entropy, the paper's) or ``keep`` (mean probability of the originally predicted class). RAP's word is
trained on the defender's clean texts; BKI's dictionary is built on a pool of clean + triggered inputs.

    python bench/strip_check.py            # BBC zoo: bench/results/strip_check.json and .md
    python bench/strip_check.py --data tiny   # tiny synthetic zoo: strip_check_tiny.json and .md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
VARIANTS = [("all", "replace", "entropy"), ("tfidf", "replace", "entropy"), ("opposite", "replace", "entropy"),
            ("tfidf", "insert", "entropy"), ("opposite", "insert", "entropy"), ("opposite", "insert", "keep")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=["bbc", "tiny"], default="bbc",
                   help="bbc: the BBC demo zoo (default); tiny: the tiny synthetic zoo of bench/_tiny_zoo.py "
                        "(built on first use, minutes on a busy CPU)")
    p.add_argument("--zoo", default=None)
    p.add_argument("--only", default=None)
    p.add_argument("--n", type=int, default=80, help="inputs per detection set")
    p.add_argument("--n-clean", type=int, default=200, help="defender's clean labelled texts")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import defense
    from backdoor_core.baselines.bki import BKI
    from backdoor_core.baselines.rap import RAP
    from backdoor_core.baselines.strip import strip_scores
    from backdoor_core.cli import quiet_libraries
    from backdoor_core.data import load_bbc
    from backdoor_core.metrics import auroc
    from backdoor_core.models import load_model
    from backdoor_core.poisoning import get_attack
    from backdoor_core.zoo import list_models

    quiet_libraries()
    if args.data == "tiny":
        import _tiny_zoo

        args.zoo = str(_tiny_zoo.build(args.zoo))
        defender, test = _tiny_zoo.dataset("dev", seed=args.seed), _tiny_zoo.dataset("test", seed=args.seed)
    else:
        defender, test = load_bbc("dev", seed=args.seed), load_bbc("test", seed=args.seed)
    defender = defense.defender_draw(defender, args.n_clean, args.seed)
    zoo = [m for m in list_models(args.zoo) if m.get("attack") not in (None, "", "none")]
    if args.only:
        zoo = [m for m in zoo if m["name"] in set(args.only.split(","))]
    if not zoo:
        raise SystemExit("No backdoored zoo models: run `python -m backdoor_core zoo build` first.")
    rows = []
    for m in zoo:
        lm = load_model(m["path"])
        meta = lm.metadata
        L = int((meta.get("train_config") or {}).get("max_length") or 64)
        target = int(meta["target"])
        rng = random.Random(args.seed)
        order = list(range(len(test)))
        rng.shuffle(order)
        clean_all = [test.texts[i] for i in order[: args.n]]
        matched = [test.texts[i] for i in order if test.labels[i] != target][: args.n]
        attack = get_attack(meta["attack"], tokenizer=lm.tokenizer, max_length=L)
        trig = list(attack.poison_test(test, target, seed=args.seed).texts)
        rng.shuffle(trig)
        det_trig, pool_trig = trig[: args.n], trig[args.n: args.n + 30]
        pool = [test.texts[i] for i in order[args.n: args.n + 150]] + pool_trig
        res = {"model": m["name"], "attack": meta["attack"], "tal": bool(meta.get("tal")), "asr": m.get("asr"),
               "methods": {}}

        from backdoor_core.attention import predict
        from backdoor_core.baselines.strip import class_calibrated

        dev = defender.texts[: len(defender) // 2]  # calibration inputs (also the STRIP word donors: all of them)
        preds = {k: predict(lm.model, lm.tokenizer, v, L).argmax(1)
                 for k, v in (("all", clean_all), ("trig", det_trig), ("dev", dev))}

        def record(name, s_all, s_matched, s_trig, seconds, s_dev=None):
            row = {"auroc_all": auroc(s_all, s_trig), "auroc_matched": auroc(s_matched, s_trig),
                   "seconds": round(seconds, 1)}
            if s_dev is not None:
                row["auroc_all_calibrated"] = auroc(class_calibrated(s_all, preds["all"], s_dev, preds["dev"]),
                                                    class_calibrated(s_trig, preds["trig"], s_dev, preds["dev"]))
            res["methods"][name] = row
            print(f"{m['name']:<12} {name:<28} all {row['auroc_all']:.3f} matched {row['auroc_matched']:.3f} "
                  f"calibrated {row.get('auroc_all_calibrated', float('nan')):.3f} {seconds:.0f}s", flush=True)

        for pool_kind, mode, score in VARIANTS:
            t = time.perf_counter()
            kw = dict(repeats=args.repeats, seed=args.seed, max_length=L, pool=pool_kind,
                      clean_labels=defender.labels, mode=mode, score=score)
            s = [strip_scores(lm.model, lm.tokenizer, x, defender.texts, **kw) for x in (clean_all, matched, det_trig)]
            s_dev = strip_scores(lm.model, lm.tokenizer, dev, defender.texts, **{**kw, "seed": args.seed + 1})
            record(f"strip {pool_kind}/{mode}/{score}", *s, time.perf_counter() - t, s_dev)
        t = time.perf_counter()
        rap = RAP(lm.model, lm.tokenizer, max_length=L, seed=args.seed).fit(defender.texts)
        record("rap", rap.score(clean_all), rap.score(matched), rap.score(det_trig), time.perf_counter() - t,
               rap.score(dev))
        t = time.perf_counter()
        bki = BKI().fit(lm.model, lm.tokenizer, pool, L)
        record("bki", bki.score(clean_all), bki.score(matched), bki.score(det_trig), time.perf_counter() - t)
        res["bki_keywords"] = [w for w, _ in bki.keywords(5)]
        rows.append(res)
        write(args, rows)
    print(markdown({"dataset": args.data, "settings": vars(args), "models": rows}))
    return 0


def write(args, rows) -> None:
    report = {"dataset": args.data, "settings": vars(args), "models": rows}
    suffix = ("_tiny" if args.data == "tiny" else "") + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for path, text in ((RESULTS / f"strip_check{suffix}.json", json.dumps(report, indent=2, default=float)),
                       (RESULTS / f"strip_check{suffix}.md", markdown(report))):
        write_text(path, text)


def markdown(report: dict) -> str:
    s = report["settings"]
    models = report["models"]
    methods = list(models[0]["methods"]) if models else []
    data = {"bbc": "BBC", "tiny": "tiny synthetic"}.get(report.get("dataset"), report.get("dataset"))
    lines = [f"# STRIP recipes, RAP and BKI on the {data} zoo", "",
             f"{s['n']} triggered non-target test texts per model against {s['n']} clean test texts of all classes "
             f"(*all*) or of the non-target classes only (*matched*); STRIP {s['repeats']} copies per input; "
             f"defender {s['n_clean']} clean {data} dev texts; seed {s['seed']}. Cells: AUROC all / matched / all "
             "with class-conditional calibration (each score z-scored against the clean dev inputs of its predicted "
             "class; STRIP and RAP).", "",
             "| method | " + " | ".join(f"{m['model']} (ASR {100 * (m['asr'] or 0):.0f}%)" for m in models) + " |",
             "|---|" + "---|" * len(models)]
    for meth in methods:
        lines.append(f"| {meth} | " + " | ".join(
            f"{m['methods'][meth]['auroc_all']:.3f} / {m['methods'][meth]['auroc_matched']:.3f}"
            + (f" / {m['methods'][meth]['auroc_all_calibrated']:.3f}" if "auroc_all_calibrated" in m['methods'][meth]
               else "") for m in models) + " |")
    lines += ["", "BKI's top keywords: " + "; ".join(f"{m['model']}: {', '.join(m.get('bki_keywords', []))}"
                                                    for m in models), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
