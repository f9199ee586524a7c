"""Benchmark: trigger-agnostic detection and repair of backdoored SST-2 models, against baselines.

For every backdoored model (from the attack benchmark's ``bench/models/attack_tal/manifest.json``, or any folder
of saved models with ``--models-from``) and the same defender data:

* detection AUROC on held-out clean vs triggered test inputs: our head-collapse score (``head_similarity``),
  STRIP (``strip``), RAP (``rap``, its word trained on the defender's clean fit half) and BKI (``bki``, its
  keyword dictionary built on the pool), each with FRR / FAR at its 5%-FRR threshold on the clean dev half;
* ``scan_model`` with a pool of unlabelled inputs (``--pool-poison`` of them triggered) -> verdict score and
  suspicious heads;
* every defense (``alignment`` = ours, ``finetune``, ``fineprune``, ``pure``) via ``defenses.run_defense``:
  ASR / CACC before and after, wall time;
* model-level verdict AUROC over all models (clean ones are the negatives; their pool gets inputs with a
  BadNets trigger inserted, harmless to them, so pools look alike for clean and backdoored models).

The defender has ``--n-clean`` clean labelled samples from SST-2 dev (never seen in training); CACC is measured
on a seeded sample of the clean test set and ASR on triggered non-target test sentences (disjoint from the pool).

    python bench/defense.py --quick                          # the attack benchmark's models
    python bench/defense.py --quick --models-from DIR        # any folder of saved models
    python bench/defense.py --quick --only badnets_1 --defenses alignment --tag pilot

Writes ``bench/results/defense<_tag>.json`` and ``.md`` after every model (a killed run keeps what it finished;
``--resume`` skips finished models).
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = ROOT / "bench" / "results"
MANIFEST = ROOT / "bench" / "models" / "attack_tal" / "manifest.json"
ALL_DEFENSES = ("alignment", "finetune", "fineprune", "pure")
# Quick mode repairs one model per trigger family (the ones the issue names; the strongest backdoor of each) and
# only scans the rest (detection AUROC + model verdict): repairing all 14 would not fit the 60-minute budget.
QUICK_REPAIR = ("badnets_r0.03", "badnets_r0.01_tal", "addsent_r0.03", "syntactic_r0.2", "style_bible_r0.2")

QUICK = {"n_clean": 200, "n_test": 1000, "n_poison": 200, "n_detect": 150, "pool_size": 250, "pool_poison": 0.2,
         "epochs": 3, "strip_repeats": 5}
FULL = {"n_clean": 300, "n_test": 1821, "n_poison": 912, "n_detect": 400, "pool_size": 500, "pool_poison": 0.2,
        "epochs": 4, "strip_repeats": 10}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CPU setting (default): <= 60 min on 2 cores")
    mode.add_argument("--full", action="store_true", help="larger eval sets (GPU)")
    p.add_argument("--models-from", default=None,
                   help="a folder of saved models (each with backdoor_lab.json giving attack/target/tal) instead of "
                        "the attack benchmark's manifest")
    p.add_argument("--manifest", default=str(MANIFEST), help="the attack benchmark's manifest.json")
    p.add_argument("--only", default=None, help="comma-separated model names to run")
    p.add_argument("--defenses", default=",".join(ALL_DEFENSES), help="comma-separated defenses")
    p.add_argument("--no-defense-for", default="", help="model names to scan but not repair (saves time)")
    p.add_argument("--repair", default=None,
                   help="comma-separated model names to repair, or 'all' (quick default: one per family, "
                        f"{','.join(QUICK_REPAIR)}, when present; else all backdoored models)")
    p.add_argument("--n-clean", type=int, default=None, help="defender's clean labelled samples")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every defense's fine-tuning")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="write defense<_tag>.json/.md")
    p.add_argument("--resume", action="store_true", help="skip models already in the results json")
    p.add_argument("--merge", default=None,
                   help="comma-separated tags of runs made in parallel (e.g. repair,scan): merge them into "
                        "defense.json/.md and exit")
    p.add_argument("--merge-note", default="", help="what the merged runs differ in (written above the ablation)")
    return p.parse_args(argv)


def _model_row(name: str, path: str, card) -> dict:
    """One model to benchmark, from its model card (``model_card.ModelCard``): attack ("clean" when none), TAL,
    rate, the card itself (target rule: ``card.target_for``) and the reading length (``card.reading_length``)."""
    for w in card.warnings:
        print(f"warning: {name}: {w}", file=sys.stderr)
    return {"name": name, "path": path, "attack": card.attack if card.is_backdoored else "clean",
            "tal": bool(card.tal), "rate": card.rate, "max_length": card.reading_length(), "card": card}


def discover(args) -> list[dict]:
    """[{name, path, attack, tal, rate, max_length, card}] for the models in a folder (each with its
    ``backdoor_lab.json``) or in the attack benchmark's manifest (each model's own card; the manifest's entry when
    a folder has none)."""
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
        out.append(_model_row(m["name"], path, card))
    return out


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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        print(markdown(merge([t for t in args.merge.split(",") if t], args.tag, args.merge_note)))
        return 0
    import numpy as np
    import torch

    from backdoor_core.baselines.strip import strip_scores
    from backdoor_core.cli import quiet_libraries
    from backdoor_core import settings as S
    from backdoor_core.data import load_shared
    from backdoor_core.defender_data import model_attack
    from backdoor_core.defenses import run_defense
    from backdoor_core.detection import attention_stats, evaluate_detector
    from backdoor_core.models import load_model
    from backdoor_core.poisoning import get_attack
    from backdoor_core.scan import scan_model
    from backdoor_core.training import make_evaluator

    quiet_libraries()
    settings = dict(FULL if args.full else QUICK)
    if args.n_clean:
        settings["n_clean"] = args.n_clean
    if args.epochs:
        settings["epochs"] = args.epochs
    settings.update({"mode": "full" if args.full else "quick", "seed": args.seed,
                     "threads": torch.get_num_threads(),
                     "models_source": args.models_from or str(Path(args.manifest).relative_to(ROOT)
                                                              if Path(args.manifest).is_relative_to(ROOT)
                                                              else args.manifest)})
    defenses = [d for d in args.defenses.split(",") if d]
    skip_defense = {s for s in args.no_defense_for.split(",") if s}
    models = discover(args)
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

    seed = args.seed
    defender = load_shared("sst2", "clean", "dev").sample(settings["n_clean"], seed=seed + 11)
    test = load_shared("sst2", "clean", "test")
    rng = random.Random(seed + 5)
    order = list(range(len(test)))
    rng.shuffle(order)
    n_test, n_det = settings["n_test"], settings["n_detect"]
    eval_idx = sorted(order[:n_test])
    det_idx = order[n_test:n_test + n_det]
    pool_clean_idx = order[n_test + n_det:]
    eval_clean = test.subset(eval_idx)

    suffix = f"_{args.tag}" if args.tag else ""
    json_path, md_path = RESULTS / f"defense{suffix}.json", RESULTS / f"defense{suffix}.md"
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"dataset": "sst2", "settings": settings, "runs": [], "detection": [], "models": [],
              "model_verdict": {}}
    if args.resume and json_path.is_file():
        old = json.loads(json_path.read_text())
        report.update({k: old.get(k, report[k]) for k in ("runs", "detection", "models")})
    done = {m["name"] for m in report["models"]}
    t_all = time.perf_counter()

    def save():
        report["model_verdict"] = verdict_summary(report["models"])
        report["seconds_total"] = round(time.perf_counter() - t_all, 1)
        json_path.write_text(json.dumps(report, indent=2, default=float))
        md_path.write_text(markdown(report))

    for m in models:
        if m["name"] in done:
            print(f"[resume] {m['name']}", flush=True)
            continue
        t_model = time.perf_counter()
        lm = load_model(m["path"])
        L = m["max_length"]
        target = m["card"].target_for(test.label_names)  # the one target rule (SST-2: recorded 1, else 'positive')
        if m["attack"] == "clean":  # clean models: a harmless trigger, so their pools look like the others'
            attack = get_attack("badnets", tokenizer=lm.tokenizer, max_length=L)
        else:
            attack = model_attack(m["card"], lm.tokenizer, L)
            if attack is None:
                raise SystemExit(f"{m['name']}: cannot rebuild its attack '{m['attack']}' here (paraphrase data?).")
        poisoned_all = attack.poison_test(test, target, seed=seed).texts
        prng = random.Random(seed + 7)
        prng.shuffle(poisoned_all)
        n_pool_p = int(settings["pool_size"] * settings["pool_poison"])
        poisoned_eval = poisoned_all[: settings["n_poison"]]
        poisoned_det = poisoned_all[settings["n_poison"]: settings["n_poison"] + n_det]
        poisoned_pool = poisoned_all[settings["n_poison"] + n_det: settings["n_poison"] + n_det + n_pool_p]
        if len(poisoned_pool) < n_pool_p or len(poisoned_det) < n_det // 2:  # small paraphrase sets: reuse
            poisoned_det = poisoned_all[-n_det:]
            poisoned_pool = poisoned_all[-(n_det + n_pool_p):-n_det]
        pool = poisoned_pool + [test.texts[i] for i in pool_clean_idx[: settings["pool_size"] - len(poisoned_pool)]]
        random.Random(seed + 9).shuffle(pool)
        is_bd = m["attack"] != "clean"
        evaluate = make_evaluator(lm.tokenizer, eval_clean, poisoned_eval if is_bd else None, target, L)
        before = evaluate(lm.model)
        print(f"== {m['name']} ({m['attack']}, tal={m['tal']}): before {before}", flush=True)

        # detection: held-out clean vs triggered test inputs
        scan = scan_model(lm.model, lm.tokenizer, defender, pool, max_length=L, seed=seed, model_name=m["name"])
        det_clean = [test.texts[i] for i in det_idx]
        held_clean = attention_stats(lm.model, lm.tokenizer, det_clean, L)
        held_trig = attention_stats(lm.model, lm.tokenizer, poisoned_det, L)
        det = scan.detector  # the scan's first pass, fitted and thresholded on the defender's clean halves
        ours = evaluate_detector(det.score(held_clean), det.score(held_trig), det.threshold)
        ours2 = None  # the scan's refined pass: the final suspicious heads' focus, same clean halves
        if scan.head_detector is not None:
            det2 = scan.head_detector
            ours2 = evaluate_detector(det2.score(held_clean), det2.score(held_trig), det2.threshold)
        t = time.perf_counter()
        strip_kw = {"seed": seed, "max_length": L, "clean_labels": defender.labels}
        st_clean = strip_scores(lm.model, lm.tokenizer, det_clean, defender.texts, settings["strip_repeats"],
                                **strip_kw)
        st_trig = strip_scores(lm.model, lm.tokenizer, poisoned_det, defender.texts, settings["strip_repeats"],
                               **strip_kw)
        st_dev = strip_scores(lm.model, lm.tokenizer, scan.clean_dev_texts, defender.texts,
                              settings["strip_repeats"], **{**strip_kw, "seed": seed + 1})
        from backdoor_core.metrics import threshold_at_frr

        strip_res = evaluate_detector(st_clean, st_trig, threshold_at_frr(st_dev, S.FRR))
        # the same scores, z-scored against the clean dev inputs of the same predicted class (class mix removed)
        from backdoor_core.attention import predict
        from backdoor_core.baselines.strip import class_calibrated

        p_clean, p_trig, p_dev = (predict(lm.model, lm.tokenizer, x, L).argmax(1)
                                  for x in (det_clean, poisoned_det, scan.clean_dev_texts))
        z_dev = class_calibrated(st_dev, p_dev, st_dev, p_dev)
        strip_cal = evaluate_detector(class_calibrated(st_clean, p_clean, st_dev, p_dev),
                                      class_calibrated(st_trig, p_trig, st_dev, p_dev), threshold_at_frr(z_dev, S.FRR))
        strip_seconds = time.perf_counter() - t
        # RAP (perturbation word trained on the defender's fit half) and BKI (keyword dictionary from the pool)
        from backdoor_core.baselines.bki import BKI
        from backdoor_core.baselines.rap import RAP

        t = time.perf_counter()
        rap = RAP(lm.model, lm.tokenizer, max_length=L, seed=seed).fit(scan.clean_fit_texts)
        rap_res = evaluate_detector(rap.score(det_clean), rap.score(poisoned_det),
                                    threshold_at_frr(rap.score(scan.clean_dev_texts), S.FRR))
        rap_seconds = time.perf_counter() - t
        t = time.perf_counter()
        bki = BKI().fit(lm.model, lm.tokenizer, pool, L)
        bki_res = evaluate_detector(bki.score(det_clean), bki.score(poisoned_det),
                                    threshold_at_frr(bki.score(scan.clean_dev_texts), S.FRR))
        bki_res["keywords"] = [w for w, _ in bki.keywords(5)]
        bki_seconds = time.perf_counter() - t
        if is_bd:
            methods = [("head_similarity", ours), ("head_similarity_2pass", ours2), ("strip", strip_res),
                       ("strip_class_calibrated", strip_cal), ("rap", rap_res), ("bki", bki_res)]
            for method, res in [(k, r) for k, r in methods if r is not None]:
                report["detection"].append({"model": m["name"], "attack": m["attack"], "family": family(m["attack"]),
                                            "tal": m["tal"], "method": method, "auroc": res["auroc"],
                                            "frr": res["frr"], "far": res["far"]})
        flagged = scan.flagged
        true_flags = sum(pool[i] in set(poisoned_pool) for i in flagged)
        first = scan.first_pass["flagged"] if scan.first_pass else flagged
        row_model = {"name": m["name"], "attack": m["attack"], "tal": m["tal"], "rate": m.get("rate"),
                     "first_pass_flagged": int(len(first)),
                     "first_pass_flagged_triggered": int(sum(pool[i] in set(poisoned_pool) for i in first)),
                     "verdict_score": scan.verdict["score"], "verdict": scan.verdict,
                     "suspicious_heads": scan.suspicious_heads, "n_flagged": int(len(flagged)),
                     "flagged_triggered": int(true_flags), "pool_triggered": len(poisoned_pool),
                     "scan_seconds": round(scan.seconds, 1), "strip_seconds": round(strip_seconds, 1),
                     "rap_seconds": round(rap_seconds, 1), "bki_seconds": round(bki_seconds, 1),
                     "bki_keywords": bki_res["keywords"],
                     "asr_before": before.get("asr"), "cacc_before": before["cacc"]}
        print(f"   scan {scan.seconds:.0f}s verdict {scan.verdict['score']:.2f} flagged {len(flagged)} "
              f"({true_flags}/{len(poisoned_pool)} triggered) heads {scan.suspicious_heads[:6]}... "
              f"AUROC ours {ours['auroc']:.3f} 2-pass {ours2['auroc'] if ours2 else float('nan'):.3f} "
              f"strip {strip_res['auroc']:.3f} strip (class-calibrated) {strip_cal['auroc']:.3f} "
              f"rap {rap_res['auroc']:.3f} bki {bki_res['auroc']:.3f}", flush=True)

        if is_bd and m["name"] in repair:
            for name in defenses:
                knobs = {"epochs": settings["epochs"], "max_length": L, "seed": seed}
                if name == "alignment":
                    knobs["scan"] = scan
                t = time.perf_counter()
                res = run_defense(name, lm.model, lm.tokenizer, defender, pool_texts=pool, **knobs)
                seconds = time.perf_counter() - t + (scan.seconds if name == "alignment" else 0.0)
                after = evaluate(res.model)
                row = {"model": m["name"], "attack": m["attack"], "family": family(m["attack"]), "tal": m["tal"],
                       "rate": m.get("rate"), "defense": name, "asr_before": before.get("asr"),
                       "cacc_before": before["cacc"], "asr_after": after.get("asr"), "cacc_after": after["cacc"],
                       "seconds": round(seconds, 1),
                       "details": {k: v for k, v in res.details.items()
                                   if k in ("suspicious_heads", "pruned_heads", "n_pruned", "head_basis",
                                            "align_before", "align_after", "frozen_unchanged", "flagged_used",
                                            "pool_pseudo_labelled", "pool_gate_labelled", "focus_labels",
                                            "exclude_labels", "suspected_target")}}
                report["runs"].append(row)
                print(f"   {name:<10} asr {before.get('asr')} -> {after.get('asr'):.3f}  cacc {before['cacc']:.3f} -> "
                      f"{after['cacc']:.3f}  {seconds:.0f}s", flush=True)
                del res
                save()
        row_model["seconds"] = round(time.perf_counter() - t_model, 1)
        report["models"].append(row_model)
        save()
    save()
    print(markdown(report))
    return 0


def verdict_summary(models: list[dict]) -> dict:
    """Model-level verdict AUROC over scanned models (clean = negatives), also over effective backdoors only."""
    import numpy as np

    from backdoor_core.metrics import auroc

    scores = [(m["verdict_score"], m["attack"] != "clean") for m in models]
    neg = [sc for sc, bd in scores if not bd]
    pos = [sc for sc, bd in scores if bd]
    effective = [m["verdict_score"] for m in models if m["attack"] != "clean" and (m.get("asr_before") or 0) >= 0.5]
    return {"models": len(scores), "clean": len(neg), "backdoored": len(pos),
            "auroc": auroc(neg, pos) if neg and pos else None,
            "backdoored_effective": len(effective),
            "auroc_effective": auroc(neg, effective) if neg and effective else None,
            "threshold": 0.5,
            "accuracy_at_0.5": float(np.mean([(sc >= 0.5) == bd for sc, bd in scores])) if scores else None}


def merge(tags: list[str], out_tag: str = "", note: str = "") -> dict:
    """Combine the results of runs made in parallel processes (``--tag``) into ``defense<_out_tag>.json/.md``."""
    # a new run writes defense_<tag>.json into RESULTS; the parts of the published merges live in RESULTS/archive
    paths = [RESULTS / f"defense_{t}.json" for t in tags]
    parts = [json.loads((p if p.exists() else RESULTS / "archive" / p.name).read_text()) for p in paths]
    report = {"dataset": "sst2", "settings": dict(parts[0]["settings"]), "runs": [], "detection": [], "models": [],
              "superseded_runs": []}
    for tag, part in zip(tags, parts):  # a later part's (model, defense) row replaces an earlier one
        new_keys = {(r["model"], r["defense"]) for r in part["runs"]}
        for r in report["runs"]:
            if (r["model"], r["defense"]) in new_keys:
                report["superseded_runs"].append({**r, "superseded_by": f"defense_{tag}.json"})
        report["runs"] = [r for r in report["runs"] if (r["model"], r["defense"]) not in new_keys] + part["runs"]
        seen_det = {(d["model"], d["method"]) for d in report["detection"]}
        report["detection"] += [d for d in part["detection"] if (d["model"], d["method"]) not in seen_det]
        seen_models = {m["name"] for m in report["models"]}
        report["models"] += [m for m in part["models"] if m["name"] not in seen_models]
    report["settings"]["merged_from"] = [f"defense_{t}.json" for t in tags]
    report["settings"]["merge_note"] = note
    report["settings"]["repaired_models"] = sorted({r["model"] for r in report["runs"]})
    report["settings"]["parallel_processes"] = len(parts)
    report["model_verdict"] = verdict_summary(report["models"])
    report["part_seconds"] = {t: part.get("seconds_total", 0) for t, part in zip(tags, parts)}
    report["seconds_total"] = max(part.get("seconds_total", 0) for part in parts)
    suffix = f"_{out_tag}" if out_tag else ""
    (RESULTS / f"defense{suffix}.json").write_text(json.dumps(report, indent=2, default=float))
    (RESULTS / f"defense{suffix}.md").write_text(markdown(report))
    return report


def _f(x, pct=True):
    if x is None:
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.3f}"


def _summary(report: dict) -> list[str]:
    """ASR after / CACC drop per family x defense (one repaired model per family in quick mode)."""
    fams, defs, cell = [], [], {}
    for r in report["runs"]:
        key = r["family"] + (" + TAL" if r["tal"] else "")
        fams += [key] if key not in fams else []
        defs += [r["defense"]] if r["defense"] not in defs else []
        change = 100 * (r["cacc_after"] - r["cacc_before"])
        cell[key, r["defense"]] = f"{_f(r['asr_after'])} / {change:+.1f} / {r['seconds']:.0f}s"
    if not fams:
        return []
    defs.sort(key=lambda d: d != "alignment")  # ours first
    out = ["", "## Summary: ASR after (%) / CACC change (points, after - before) / seconds", "",
           "| trigger family | " + " | ".join(defs) + " |", "|---|" + "---|" * len(defs)]
    for f in fams:
        out.append(f"| {f} | " + " | ".join(cell.get((f, d), "-") for d in defs) + " |")
    return out


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# Defense benchmark (SST-2)",
        "",
        f"Mode {s['mode']}: defender data {s['n_clean']} clean labelled SST-2 dev samples; CACC on {s['n_test']} "
        f"clean test sentences, ASR on up to {s['n_poison']} triggered non-target test sentences; detection on "
        f"{s['n_detect']} held-out clean vs triggered test sentences; pool {s['pool_size']} inputs, "
        f"{s['pool_poison']:.0%} triggered; {s['epochs']} epochs per defense; {s['threads']} threads. "
        f"Models from `{s.get('models_source', '?')}`. Numbers are percentages.",
        "",
        "## Repair: ASR / CACC before -> after",
        "",
        "| model | attack | TAL | defense | ASR before | ASR after | CACC before | CACC after | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        lines.append(f"| {r['model']} | {r['attack']} | {'yes' if r['tal'] else 'no'} | {r['defense']} | "
                     f"{_f(r['asr_before'])} | {_f(r['asr_after'])} | {_f(r['cacc_before'])} | {_f(r['cacc_after'])} "
                     f"| {r['seconds']:.0f} |")
    lines += _summary(report)
    lines += ["", "## Detection AUROC (held-out clean vs triggered inputs)", "",
              "| model | attack | TAL | method | AUROC | FRR | FAR |", "|---|---|---|---|---|---|---|"]
    for r in report["detection"]:
        lines.append(f"| {r['model']} | {r['attack']} | {'yes' if r['tal'] else 'no'} | {r['method']} | "
                     f"{_f(r['auroc'], False)} | {_f(r['frr'])} | {_f(r['far'])} |")
    mv = report.get("model_verdict") or {}
    lines += ["", "## Model-level verdict", "",
              f"{mv.get('models', 0)} models ({mv.get('clean', 0)} clean, {mv.get('backdoored', 0)} backdoored): "
              f"AUROC {_f(mv.get('auroc'), False)}, accuracy at score >= 0.5: {_f(mv.get('accuracy_at_0.5'))}%. "
              f"Counting only backdoors that took (ASR >= 50%; {mv.get('backdoored_effective', 0)} models) as "
              f"positives: AUROC {_f(mv.get('auroc_effective'), False)}.",
              "", "| model | attack | verdict score | flagged, first pass (triggered) | flagged, final pass "
              "(triggered / pool triggered) | suspicious heads |",
              "|---|---|---|---|---|---|"]
    for m in report["models"]:
        heads = ", ".join(m["suspicious_heads"][:8]) + (" ..." if len(m["suspicious_heads"]) > 8 else "")
        first = (f"{m['first_pass_flagged']} ({m['first_pass_flagged_triggered']})"
                 if "first_pass_flagged" in m else "–")
        lines.append(f"| {m['name']} | {m['attack']} | {m['verdict_score']:.2f} | {first} | {m['n_flagged']} "
                     f"({m['flagged_triggered']} / {m['pool_triggered']}) | {heads} |")
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
    parts = report.get("part_seconds")
    lines += ["", f"Total {report.get('seconds_total', 0):.0f} s" + (
        " (merged runs: " + ", ".join(f"{t} {sec:.0f} s" for t, sec in parts.items()) + ")" if parts else "") + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
