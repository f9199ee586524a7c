"""Is the pool drawn like the clean texts? ``detection.pool_lower_quartile_rank`` (the share of the clean dev inputs
scoring below the pool's lower quartile) and the verdict, on pools of the same source and of another one.

* Same source, tuning zoo (where ``detection.POOL_SHIFT_RANK`` was chosen): the defense benchmark's quick draw of
  each model (the defender's 200 clean dev texts; a pool of test texts, 20% triggered; a clean model gets its dataset
  and seed's BadNets 3% pool, else its first BadNets model's, without the triggered inputs).
* Another source: the same clean SST-2 texts, pools of 200 OLID tweets or AG News items (no trigger), on the
  tuning zoo's clean models and five backdoored ones; with ``--shift-triggered K`` also every BadNets / AddSent
  model of the tuning zoo with such pools, K of their inputs carrying its trigger.
* Same source, test zoo (a check, never tuned on): the quick draw of each test-zoo model on this machine.
* Another source, test zoo (``test_shift``, a check): the test zoo's clean models with their defender's clean texts
  and pools of 200 test texts of each other benchmark dataset (SST-2, BBC and OLID or AG News), no trigger.

With ``--words`` every scan also reads the pool's words (``scan`` step 6): the marking trigger words, and the
verdict with them (``settings.VERDICT_WORDS``: such a word calls the model, ``detection.with_trigger_words``).

    python bench/pool_shift_check.py [--zoo tuning,shift,test,test_shift] [--shift-triggered K] [--words]
                                     [--dump-scores DIR] [--tag T]

Writes ``bench/results/pool_shift_check[_T].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
MANIFESTS = {"tuning": ROOT / "bench" / "models" / "tuning_zoo" / "manifest.json",
             "test": ROOT / "bench" / "models" / "test_zoo" / "manifest.json"}
INSERTION = ("badnets", "addsent")  # attacks whose trigger goes into any text, another source's too
TEST_SHIFT_SOURCES = ("sst2", "olid", "agnews", "bbc")  # test_shift: a test-zoo clean model's pools of the others
SHIFT_MODELS = ("sst2_s0_clean", "sst2_s1_clean", "sst2_s0_badnets_r0.03", "sst2_s0_addsent_r0.01",
                "sst2_s0_syntactic_r0.2", "sst2_s0_style_bible_r0.2", "sst2_s1_badnets_r0.01_tal")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", default="tuning,shift,test", help="which parts to run (comma-separated)")
    ap.add_argument("--shift-triggered", type=int, default=0, metavar="K",
                    help="shift part: also scan every BadNets / AddSent tuning model with pools of another source in "
                         "which K of the 200 inputs carry its trigger (pool source '<source>+K')")
    ap.add_argument("--dump-scores", default=None, metavar="DIR",
                    help="also write each pool's verdict inputs to DIR/<part>_<model>_<source>.npz "
                         "(bench/defense.py's format)")
    ap.add_argument("--words", action="store_true",
                    help="also read each pool's words: its marking trigger words and the verdict with them")
    ap.add_argument("--scan-knobs", default=None,
                    help="JSON object of scan_model keyword arguments for every scan (as bench/defense.py's), "
                         "e.g. '{\"rep_method\": \"both\"}'; recorded in the report")
    ap.add_argument("--tag", default="", help="write pool_shift_check_<tag>.json/.md")
    args = ap.parse_args(argv)
    import defense as D

    try:
        knobs = D.parse_scan_knobs(args.scan_knobs) if args.scan_knobs else {}
    except ValueError as exc:
        ap.error(str(exc))
    stem = "pool_shift_check" + (f"_{args.tag}" if args.tag else "")
    from pool_words_shift import POOL

    if not 0 <= args.shift_triggered <= POOL // 2:
        ap.error(f"--shift-triggered: 0 to {POOL // 2} of the {POOL} pool inputs (at most half may carry the trigger)")
    import torch

    from contrast_check import evaluation_sets
    from pool_words_shift import shifted_pool
    from backdoor_core.defender_data import load_bench_data
    from backdoor_core.detection import POOL_SHIFT_RANK, called_by_words, flags_score, verdict_call
    from backdoor_core.models import load_model
    from backdoor_core.poisoning import BadNets
    from backdoor_core.scan import scan_model

    torch.set_num_threads(1)
    parts = [p for p in args.zoo.split(",") if p]
    rows, data, sources, t_all = [], {}, {}, time.perf_counter()

    def scan(m, lm, defender, pool, part, source, is_triggered=None):
        t0 = time.perf_counter()
        rep = scan_model(lm.model, lm.tokenizer, defender, pool, max_length=m["max_length"], find_triggers=False,
                         read_pool_words=args.words, **knobs)
        v = rep.verdict
        rows.append({"part": part, "model": m["name"], "attack": m["attack"], "source": source, "pool": len(pool),
                     "rank": round(v["components"]["pool_lower_quartile_rank"], 3), "unlike": v["pool_unlike_clean"],
                     "score": round(v["score"], 3), "flag_rate": round(len(rep.flagged) / len(pool), 3),
                     "call": verdict_call(v), "rep_method": rep.settings.get("rep_method"),
                     "seconds": round(time.perf_counter() - t0, 1)})
        if args.words:
            rows[-1].update({"flags_score": round(flags_score(v), 3), "marking_words": list(rep.marking_words),
                             "called_by_words": called_by_words(v)})
        print(json.dumps(rows[-1]), flush=True)
        if args.dump_scores:
            trig = is_triggered if is_triggered is not None else [False] * len(pool)
            D.dump_verdict_inputs(Path(args.dump_scores), {**rows[-1], "name": f"{part}_{m['name']}_{source}",
                                                           "verdict": v}, rep, trig)

    for part in parts:
        zoo = "test" if part.startswith("test") else "tuning"
        if not MANIFESTS[zoo].is_file():
            print(f"no {zoo} zoo: skipped", flush=True)
            continue
        every = json.loads(MANIFESTS[zoo].read_text())["models"]
        # a clean model's pool: its dataset and seed's BadNets 3% draw (else its first BadNets model's), untriggered
        twin = {}
        for m in sorted((m for m in every if m["attack"] == "badnets"), key=lambda m: not m["name"].endswith("_r0.03")):
            twin.setdefault((m.get("dataset"), m["seed"]), m)
        models = [m for m in every if part != "shift" or m["name"] in SHIFT_MODELS
                  or (args.shift_triggered and m["attack"] in INSERTION)]
        if part == "test_shift":
            models = [m for m in every if m["attack"] == "clean"]
        for m in models:
            if not (ROOT / m["path"]).is_dir():
                continue
            lm = load_model(str(ROOT / m["path"]))
            if part == "test_shift":  # the other benchmark datasets' test texts, no trigger
                defender, _, _, _, _, seed = evaluation_sets(m, data)
                for src in [d for d in TEST_SHIFT_SOURCES if d != m["dataset"]]:
                    if (src, seed) not in sources:
                        sources[(src, seed)] = load_bench_data(src, seed=seed)[1].sample(POOL, seed=seed + 5).texts
                    scan(m, lm, defender, list(sources[(src, seed)]), part, src)
                continue
            if part == "shift":
                defender, _, ds, card, _, seed = evaluation_sets(m, data)
                ks = ([0] if m["name"] in SHIFT_MODELS else []) + (
                    [args.shift_triggered] if args.shift_triggered and m["attack"] in INSERTION else [])
                attack = (D.build_attack(dict(m, card=card), ds, lm.tokenizer, m["max_length"])
                          if max(ks) else BadNets())
                for src in ("olid", "agnews"):
                    if (src, seed) not in sources:
                        sources[(src, seed)] = list(load_bench_data(src, seed=seed)[1].texts)
                    for k in ks:
                        pool, trig = shifted_pool(sources[(src, seed)], k, attack, seed)
                        scan(m, lm, defender, pool, part, src if not k else f"{src}+{k}", trig)
                continue
            key = (m.get("dataset"), m["seed"])
            if m["attack"] == "clean" and key not in twin:
                continue
            draw_of = m if m["attack"] != "clean" else twin[key]
            defender, test, ds, card, target, seed = evaluation_sets(draw_of, data)
            draw = D.evaluation_draw(dict(draw_of, card=card), ds, test, target, lm.tokenizer, D.QUICK, seed)
            trig = list(draw["pool_is_triggered"])
            pool = draw["pool"] if m["attack"] != "clean" else [t for t, x in zip(draw["pool"], trig) if not x]
            scan(m, lm, defender, pool, part, m["dataset"], trig if m["attack"] != "clean" else None)
    report = {"script": "bench/pool_shift_check.py", "pool_shift_rank": POOL_SHIFT_RANK, "scan_knobs": knobs,
              "rows": rows,
              "seconds_total": round(time.perf_counter() - t_all, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / f"{stem}.json", json.dumps(report, indent=2))
    names = {"tuning": "same source, tuning zoo", "shift": "another source (SST-2 models)",
             "test": "same source, test zoo", "test_shift": "another source (test zoo's clean models)"}
    lines = ["# Is the pool drawn like the clean texts? (`detection.pool_lower_quartile_rank`)", "",
             "`bench/pool_shift_check.py`: the share of the clean dev inputs scoring below the pool's lower quartile "
             f"(final pass); above {POOL_SHIFT_RANK} the pool reads as another source (a warning beside the verdict, "
             "`detection.pool_shift_note`; since session 37 the verdict then reads the pool where its bulk sits, "
             "`settings.VERDICT_SHIFT_ADJUST`). Same "
             "source: the defense benchmark's quick draw (200 clean dev texts, pool 20% triggered; clean models: "
             "their dataset and seed's BadNets pool without the triggered inputs). Another source: the same SST-2 clean texts, "
             "200 OLID tweets or AG News items. Another source, test zoo: each clean test-zoo model's own clean texts, "
             "200 test texts of each other benchmark dataset. One thread."
             + (f" Scan knobs (`--scan-knobs`): `{json.dumps(knobs)}`." if knobs else "")
             + (" Words read (`--words`): the marking trigger words, the flags' own score, and whether the words "
                "alone call the model (`settings.VERDICT_WORDS`)." if args.words else ""), "", "## Summary", "",
             "| pools | n | rank: min | max | read as another source | called \"likely\" |"
             + (" of them by the words alone |" if args.words else ""),
             "|---|---|---|---|---|---|" + ("---|" if args.words else "")]
    for part in parts:
        rs = [r for r in rows if r["part"] == part]
        if not rs:
            continue
        ranks = [r["rank"] for r in rs]
        lines.append(f"| {names[part]} | {len(rs)} | {min(ranks):.2f} | {max(ranks):.2f} | "
                     f"{sum(bool(r['unlike']) for r in rs)} | {sum(r['call'] == 'likely' for r in rs)} |"
                     + (f" {sum(r['called_by_words'] for r in rs)} |" if args.words else ""))
    lines += ["", "## Per pool", "", "| pools | model | pool source | inputs | rank | another source | score | "
              "flagged | call |" + (" flags' score | marking words |" if args.words else "")
              + (" representation |" if knobs else ""),
              "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if args.words else "") + ("---|" if knobs else "")]
    for r in rows:
        lines.append(f"| {names[r['part']]} | {r['model']} | {r['source']} | {r['pool']} | {r['rank']:.2f} | "
                     f"{'yes' if r['unlike'] else 'no'} | {r['score']:.2f} | {r['flag_rate']:.0%} | {r['call']} |"
                     + (f" {r['flags_score']:.2f} | {' '.join(r['marking_words']) or '-'} |" if args.words else "")
                     + (f" {r['rep_method']} |" if knobs else ""))
    lines += ["", f"Wall time {report['seconds_total'] / 60:.1f} min (one thread)."]
    write_text(RESULTS / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
