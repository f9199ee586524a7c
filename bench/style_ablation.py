"""Ablation on the SST-2 tuning zoo: attention-only vs fused (attention + [CLS] representation) detection, and
head-only (the paper) vs head + feed-forward repair — for style backdoors, without breaking the families that work.

For every model in ``--models-from`` (saved models with their ``backdoor_lab.json``; SST-2 only: this is the
tuning zoo, never OLID / AG News) and the defense benchmark's quick defender data (``bench/defense.py --quick``:
200 clean dev samples for the defender, CACC on 1000 clean test sentences, ASR on 200 triggered non-target test
sentences, detection on 150 held-out clean vs 150 triggered test sentences, a pool of 250 inputs, 20% triggered,
drawn the same way with the same seeds):

* two scans (``scan.scan_model``, defaults otherwise, no trigger search: the repair does not use it): ``representation=False`` (the paper's attention-only
  detection) and ``representation=True`` (fused, ``detection.FusedDetector``) — verdict, pool inputs flagged
  (triggered among them), seconds;
* detection AUROC on the held-out inputs: attention first pass / final pass, representation alone, fused first
  pass / final pass (all fitted and thresholded on the defender's clean halves);
* repairs (backdoored models) via ``defenses.run_defense("alignment")``, 3 epochs: ``VARIANTS`` — scan kind x
  feed-forward layers (``ffn``) — ASR / CACC after, seconds (scan included), and the pseudo-label accuracy of the
  flagged pool inputs the repair used (share of those given a label whose label is the input's true class; a
  triggered input's true class is its original one).

    python bench/style_ablation.py --models-from bench/models/attack_tal --tag tune

Writes ``bench/results/style_ablation<_tag>.json`` and ``.md`` after every model (atomically; ``--resume`` skips
finished models). The published ``style_ablation.json`` / ``.md`` (seed 0) and ``style_ablation_seed1_merged``
(seed 1) merge parallel runs (``--merge``; the parts are in ``bench/results/archive/``); the BBC zoo check is
``bench/style_bbc_check.py`` -> ``style_ablation_bbc.json``.
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
sys.path.insert(0, str(ROOT / "bench"))
from backdoor_core.atomic import write_text  # noqa: E402
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
QUICK = {"n_clean": 200, "n_test": 1000, "n_poison": 200, "n_detect": 150, "pool_size": 250, "pool_poison": 0.2,
         "epochs": 3}
VARIANTS = {  # name: (fused detection?, ffn layers)
    "paper (attention scan, heads)": (False, "none"),
    "fused scan, heads": (True, "none"),
    "fused scan, heads + FFN": (True, "suspicious"),
    "attention scan, heads + FFN": (False, "suspicious"),
    "fused scan, heads + FFN if the flags are representation-found (auto)": (True, "auto"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-from", default=str(ROOT / "bench" / "models" / "attack_tal"))
    p.add_argument("--only", default=None, help="comma-separated model folder names")
    p.add_argument("--variants", default="0,1,2", help="comma-separated indices into VARIANTS (default 0,1,2), or 'none' (scans only)")
    p.add_argument("--ffn", default=None, help="override the FFN layers of the FFN variants (e.g. 'all', '4,5')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--merge", default=None,
                   help="comma-separated tags of parallel runs: merge them into style_ablation<_tag>.json/.md, exit")
    p.add_argument("--ffn-max-layers", type=int, default=None, help="cap on the FFN layers (sanitize.ffn_layers)")
    p.add_argument("--fuse", default=None, help="override settings.FUSE in the fused scans ('max' or 'sum')")
    p.add_argument("--needed-scans-only", action="store_true", help="run only the scans the variants use")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        print(markdown(merge([t for t in args.merge.split(",") if t], args.tag)))
        return 0
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import defense
    from backdoor_core import settings as S
    from backdoor_core.cli import quiet_libraries
    from backdoor_core.data import load_shared
    from backdoor_core.defender_data import model_attack
    from backdoor_core.defenses import run_defense
    from backdoor_core.detection import attention_stats, evaluate_detector
    from backdoor_core.model_card import METADATA_FILE, ModelCard
    from backdoor_core.models import load_model
    from backdoor_core.poisoning import get_attack
    from backdoor_core.scan import scan_model
    from backdoor_core.training import IGNORE_LABEL, make_evaluator

    quiet_libraries()
    s = dict(QUICK, seed=args.seed, threads=torch.get_num_threads(), fuse=args.fuse or S.FUSE)
    variants = list(VARIANTS.items())
    if args.variants == "none":  # scans and detection only
        variants = []
    elif args.variants:
        variants = [variants[int(i)] for i in args.variants.split(",")]
    if args.ffn:
        variants = [(n.replace("FFN", f"FFN[{args.ffn}]"), (f, args.ffn if ffn not in ("none", "auto") else ffn))
                    for n, (f, ffn) in variants]
    dirs = [d for d in sorted(Path(args.models_from).iterdir()) if (d / METADATA_FILE).is_file()]
    if args.only:
        keep = set(args.only.split(","))
        dirs = [d for d in dirs if d.name in keep]
    seed = args.seed
    defender = defense.defender_draw(load_shared("sst2", "clean", "dev"), s["n_clean"], seed)
    test = load_shared("sst2", "clean", "test")
    order = list(range(len(test)))
    random.Random(seed + 5).shuffle(order)
    n_test, n_det = s["n_test"], s["n_detect"]
    eval_clean = test.subset(sorted(order[:n_test]))
    det_idx = order[n_test:n_test + n_det]
    pool_clean_idx = order[n_test + n_det:]

    suffix = f"_{args.tag}" if args.tag else ""
    json_path, md_path = RESULTS / f"style_ablation{suffix}.json", RESULTS / f"style_ablation{suffix}.md"
    report = {"dataset": "sst2", "zoo": "tuning", "settings": s, "models": [], "repairs": []}
    if args.resume and json_path.is_file():
        old = json.loads(json_path.read_text())
        report["models"], report["repairs"] = old["models"], old["repairs"]
    done = {m["name"] for m in report["models"]}

    def save():
        for path, text in ((json_path, json.dumps(report, indent=2, default=float)), (md_path, markdown(report))):
            write_text(path, text)

    for d in dirs:
        if d.name in done:
            continue
        card = ModelCard.read(d)
        lm = load_model(str(d))
        L = card.reading_length()
        target = card.target_for(test.label_names)
        is_bd = bool(card.is_backdoored)
        attack = model_attack(card, lm.tokenizer, L) if is_bd else get_attack("badnets", tokenizer=lm.tokenizer,
                                                                                max_length=L)
        pts = attack.poison_test(test, target, seed=seed)
        idx = list(range(len(pts.texts)))
        random.Random(seed + 7).shuffle(idx)  # the same permutation bench/defense.py applies to the texts
        p_texts = [pts.texts[i] for i in idx]
        p_gold = [int(pts.gold_labels[i]) for i in idx]
        n_pool_p = int(s["pool_size"] * s["pool_poison"])
        np_, nd = s["n_poison"], n_det
        ev, det_sl, pool_sl = slice(0, np_), slice(np_, np_ + nd), slice(np_ + nd, np_ + nd + n_pool_p)
        if len(p_texts[pool_sl]) < n_pool_p or len(p_texts[det_sl]) < nd // 2:
            det_sl, pool_sl = slice(len(p_texts) - nd, None), slice(len(p_texts) - nd - n_pool_p, len(p_texts) - nd)
        gold = {}
        for t, y in zip(p_texts[pool_sl], p_gold[pool_sl]):
            gold[t] = y
        pool_clean = [test.texts[i] for i in pool_clean_idx[: s["pool_size"] - len(p_texts[pool_sl])]]
        for i in pool_clean_idx[: s["pool_size"] - len(p_texts[pool_sl])]:
            gold.setdefault(test.texts[i], int(test.labels[i]))
        triggered_pool = set(p_texts[pool_sl])
        pool = list(p_texts[pool_sl]) + pool_clean
        random.Random(seed + 9).shuffle(pool)
        evaluate = make_evaluator(lm.tokenizer, eval_clean, p_texts[ev] if is_bd else None, target, L)
        before = evaluate(lm.model)
        print(f"== {d.name}: before {before}", flush=True)
        det_clean = [test.texts[i] for i in det_idx]
        held_c = attention_stats(lm.model, lm.tokenizer, det_clean, L)
        held_t = attention_stats(lm.model, lm.tokenizer, p_texts[det_sl], L)
        row = {"name": d.name, "attack": card.attack if is_bd else "clean", "tal": bool(card.tal),
               "asr_before": before.get("asr"), "cacc_before": before["cacc"], "scans": {}, "detection": {}}
        scans = {}
        needed = {f for _, (f, _) in variants} or {True}  # scans only: the fused one
        for fused in sorted(needed if args.needed_scans_only else {False, True}):
            t = time.perf_counter()
            rep = scan_model(lm.model, lm.tokenizer, defender, pool, max_length=L, seed=seed, model_name=d.name,
                             representation=fused, find_triggers=False,
                             **({"fuse": args.fuse} if args.fuse else {}))
            key = ("fused" + ("_sum" if (args.fuse or S.FUSE) == "sum" else "")) if fused else "attention"
            scans[fused] = rep
            flagged = rep.flagged_texts
            row["scans"][key] = {"verdict": rep.verdict["score"], "n_flagged": len(flagged),
                                 "flagged_triggered": sum(x in triggered_pool for x in flagged),
                                 "pool_triggered": len(triggered_pool), "heads": rep.suspicious_heads,
                                 "clean_frr": rep.clean_frr, "representation_share": rep.representation_share,
                                 "seconds": round(time.perf_counter() - t, 1)}
            dets = {"attention_first": rep.attention_detector, "attention_final": rep.attention_head_detector}
            if fused:
                dets = {"representation": rep.representation_detector, f"{key}_first": rep.detector,
                        f"{key}_final": rep.head_detector}
            for name, det_ in dets.items():
                if det_ is not None and is_bd:
                    row["detection"][name] = evaluate_detector(det_.score(held_c), det_.score(held_t),
                                                               det_.threshold)
            print(f"   scan {key}: {row['scans'][key]}", flush=True)
        if is_bd:
            print("   AUROC " + " ".join(f"{k} {v['auroc']:.3f}" for k, v in row["detection"].items()), flush=True)
            for vname, (fused, ffn) in variants:
                rep = scans[fused]
                t = time.perf_counter()
                try:
                    res = run_defense("alignment", lm.model, lm.tokenizer, defender, pool_texts=pool, scan=rep,
                                      epochs=s["epochs"], max_length=L, seed=seed, ffn=ffn,
                                      **({"ffn_max_layers": args.ffn_max_layers} if args.ffn_max_layers else {}))
                except ValueError as e:  # no suspicious heads
                    print(f"   {vname}: {e}", flush=True)
                    continue
                seconds = time.perf_counter() - t + rep.seconds
                after = evaluate(res.model)
                used = rep.flagged_texts[: res.details["flagged_used"]]
                labels = res.details["flagged_labels"]
                lab = [(y, gold.get(x)) for x, y in zip(used, labels) if y != IGNORE_LABEL]
                acc = float(np.mean([y == g for y, g in lab])) if lab else None
                if args.ffn_max_layers and ffn != "none":
                    vname = f"{vname}, at most {args.ffn_max_layers} FFN layers"
                if fused and (args.fuse or S.FUSE) == "sum":
                    vname = vname.replace("fused scan", "fused (sum) scan")
                out = {"model": d.name, "attack": row["attack"], "tal": row["tal"], "variant": vname,
                       "fused": fused, "ffn": ffn, "ffn_layers": res.details.get("ffn_layers"),
                       "asr_before": before.get("asr"), "cacc_before": before["cacc"], "asr_after": after.get("asr"),
                       "cacc_after": after["cacc"], "seconds": round(seconds, 1),
                       "repair_seconds": round(seconds - rep.seconds, 1), "flagged_used": len(used),
                       "pseudo_labelled": len(lab), "pseudo_label_accuracy": acc,
                       "flagged_used_triggered": sum(x in triggered_pool for x in used),
                       "frozen_unchanged": res.details.get("frozen_unchanged"),
                       "trainable_parameters": res.details.get("trainable_parameters")}
                report["repairs"].append(out)
                print(f"   {vname:<32} asr {before.get('asr'):.3f} -> {after.get('asr'):.3f} cacc {before['cacc']:.3f} "
                      f"-> {after['cacc']:.3f} pl-acc {acc} ({len(lab)}/{len(used)}) {seconds:.0f}s", flush=True)
                del res
                save()
        report["models"].append(row)
        save()
    save()
    print(markdown(report))
    return 0


def merge(tags: list[str], out_tag: str = "") -> dict:
    """Parallel runs (``--tag``) in one report: a model's scans / detection rows are united, repairs appended
    (a later part's (model, variant) row replaces an earlier one)."""
    paths = [RESULTS / f"style_ablation_{t}.json" for t in tags]  # a new run's part, or an archived one
    parts = [json.loads((p if p.exists() else RESULTS / "archive" / p.name).read_text()) for p in paths]
    report = {"dataset": "sst2", "zoo": "tuning", "settings": dict(parts[0]["settings"], merged_from=tags),
              "models": [], "repairs": []}
    models: dict[str, dict] = {}
    for part in parts:
        for m in part["models"]:
            row = models.setdefault(m["name"], {**m, "scans": {}, "detection": {}})
            row["scans"].update(m["scans"])
            row["detection"].update(m["detection"])
        keys = {(r["model"], r["variant"]) for r in part["repairs"]}
        report["repairs"] = [r for r in report["repairs"] if (r["model"], r["variant"]) not in keys] + part["repairs"]
    report["models"] = list(models.values())
    suffix = f"_{out_tag}" if out_tag else ""
    for path, text in ((RESULTS / f"style_ablation{suffix}.json", json.dumps(report, indent=2, default=float)),
                       (RESULTS / f"style_ablation{suffix}.md", markdown(report))):
        write_text(path, text)
    return report


def _p(x, digits=1):
    return "-" if x is None else f"{100 * x:.{digits}f}"


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = ["# Style-backdoor ablation (SST-2 tuning zoo)", "",
             f"Quick defender data of `bench/defense.py` (seed {s['seed']}): {s['n_clean']} clean labelled dev "
             f"samples, CACC on {s['n_test']} clean test sentences, ASR on {s['n_poison']} triggered non-target "
             f"test sentences, detection on {s['n_detect']} held-out clean vs triggered, pool {s['pool_size']} "
             f"({s['pool_poison']:.0%} triggered); {s['epochs']} repair epochs; {s['threads']} thread(s) on a shared "
             "2-core CPU. Percentages. Written by `bench/style_ablation.py`.", "",
             "## Repair: ASR / CACC before -> after", "",
             "| model | variant | ASR before | ASR after | CACC before | CACC after | ΔCACC | flagged used (triggered) "
             "| pseudo-labelled | pseudo-label acc. | seconds (scan incl.) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["repairs"]:
        lines.append(f"| {r['model']} | {r['variant']} | {_p(r['asr_before'])} | {_p(r['asr_after'])} | "
                     f"{_p(r['cacc_before'])} | {_p(r['cacc_after'])} | "
                     f"{100 * (r['cacc_after'] - r['cacc_before']):+.1f} | {r['flagged_used']} "
                     f"({r['flagged_used_triggered']}) | {r['pseudo_labelled']} | {_p(r['pseudo_label_accuracy'])} | "
                     f"{r['seconds']:.0f} |")
    kinds = ("attention", "fused", "fused_sum")
    lines += ["", "## Detection AUROC (held-out clean vs triggered) and the scan", "",
              "Scans: `attention` (the paper's), `fused` (fusion by max), `fused_sum` (fusion by sum). Per scan: "
              "verdict score, pool inputs flagged (triggered among them / triggered in the pool), representation "
              "share (flags whose representation z beats the attention z), seconds.", "",
              "| model | attention first | attention final | representation | fused (max) first | fused (max) final "
              "| fused (sum) first | fused (sum) final | " + " | ".join(kinds) + " |", "|---|" + "---|" * (7 + len(kinds))]
    for m in report["models"]:
        det = m["detection"]
        cells = [f"{det[k]['auroc']:.3f}" if k in det else "-" for k in
                 ("attention_first", "attention_final", "representation", "fused_first", "fused_final",
                  "fused_sum_first", "fused_sum_final")]
        for k in kinds:
            sc = m["scans"].get(k)
            share = sc.get("representation_share") if sc else None
            cells.append("-" if sc is None else f"{sc['verdict']:.2f}; {sc['n_flagged']} ({sc['flagged_triggered']}/"
                         f"{sc['pool_triggered']}); {'-' if share is None else f'{share:.2f}'}; {sc['seconds']:.0f} s")
        lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
