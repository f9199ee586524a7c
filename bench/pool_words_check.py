"""Does the pool alone name a word trigger? ``trigger_search.pool_words`` on the SST-2 tuning zoo (never the test
zoo): the defense benchmark's quick evaluation draw of each model (``bench/defense.py --quick``: the defender's 200
clean dev texts, a pool of test texts with 20% triggered; a clean model gets its seed's draw of a BadNets twin's
pool, whose triggered inputs it never learnt), then the words the pool holds significantly more often than the
clean texts, each inserted into 80 clean texts.

For each model: the words found (pool / clean counts, the class insertion sends clean texts to and how often), which
are *likely triggers* (``likely_trigger_words``: flips >= ``settings.POOL_WORD_MIN_FLIP``, not explained by the
clean labels), and for a BadNets model how many of its four trigger words are found and how many are likely.

    python bench/pool_words_check.py [--only badnets,clean]

Writes ``bench/results/pool_words_check.json`` and ``.md``.
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
MANIFEST = ROOT / "bench" / "models" / "tuning_zoo" / "manifest.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated substrings of model names (default: all)")
    args = ap.parse_args(argv)
    import torch

    import defense as D
    from contrast_check import evaluation_sets
    from backdoor_core import settings as S
    from backdoor_core.models import load_model
    from backdoor_core.trigger_search import likely_trigger_words, pool_words

    torch.set_num_threads(1)
    if not MANIFEST.is_file():
        raise SystemExit("No tuning zoo: build it with python bench/test_zoo.py --zoo tuning --seeds 0,1")
    every = json.loads(MANIFEST.read_text())["models"]
    only = [o for o in args.only.split(",") if o]
    models = [m for m in every if not only or any(o in m["name"] for o in only)]
    twin = {m["seed"]: m for m in every if m["name"].endswith("_badnets_r0.03")}
    rows, data, t_all = [], {}, time.perf_counter()
    for m in models:
        t0 = time.perf_counter()
        draw_of = m if m["attack"] != "clean" else twin[m["seed"]]
        defender, test, ds, card, target, seed = evaluation_sets(draw_of, data)
        lm = load_model(str(ROOT / m["path"]))
        draw = D.evaluation_draw(dict(draw_of, card=card), ds, test, target, lm.tokenizer, D.QUICK, seed)
        pool = draw["pool"] if m["attack"] != "clean" else [t for t, trig in zip(draw["pool"], draw["pool_is_triggered"])
                                                             if not trig]
        words = pool_words(lm.model, lm.tokenizer, pool, defender.texts, m["max_length"],
                           clean_labels=defender.labels, seed=seed)
        likely = {w.word for w in likely_trigger_words(words)}
        trig = [t.lower() for t in m["trigger"]] if isinstance(m.get("trigger"), list) else []
        rows.append({"model": m["name"], "attack": m["attack"], "tal": m["tal"], "seed": seed,
                     "target": None if m["attack"] == "clean" else int(target), "n_pool": len(pool),
                     "words": [{"word": w.word, "pool": w.pool_count, "clean": w.clean_count, "p": w.p_value,
                                "to": w.target, "flips": w.flip_rate, "likely": w.word in likely} for w in words],
                     "trigger_words": trig, "found": sum(w.word in trig for w in words),
                     "likely_true": sum(w in likely for w in trig), "likely_other": sorted(likely - set(trig)),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps({k: rows[-1][k] for k in ("model", "found", "likely_true", "likely_other", "seconds")}),
              flush=True)
    report = {"zoo": "tuning", "script": "bench/pool_words_check.py", "only": args.only,
              "settings": {"min_count": S.POOL_WORD_MIN_COUNT, "max_p": S.POOL_WORD_MAX_P, "top": S.POOL_WORD_TOP,
                           "n_insert": S.POOL_WORD_N_INSERT, "min_flip": S.POOL_WORD_MIN_FLIP},
              "rows": rows, "seconds_total": round(time.perf_counter() - t_all, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "pool_words_check.json", json.dumps(report, indent=2))
    lines = ["# Words concentrated in the pool (SST-2 tuning zoo)", "",
             "`trigger_search.pool_words` on the defense benchmark's quick draw of each model "
             "(`bench/pool_words_check.py`): words in at least "
             f"{S.POOL_WORD_MIN_COUNT} pool inputs with enrichment p <= {S.POOL_WORD_MAX_P}, each inserted into "
             f"{S.POOL_WORD_N_INSERT} clean texts; **bold** = likely trigger (flips >= {S.POOL_WORD_MIN_FLIP:.0%}, "
             "not explained by the clean labels). A clean model is read on its seed's BadNets 3% pool without the "
             "triggered inputs. BadNets triggers: cf, mn, bb, tq.", "",
             "| model | pool | trigger words found / likely | other likely words | words (pool / clean count, "
             "flips -> class) |", "|---|---|---|---|---|"]
    for r in rows:
        ws = "; ".join(("**{}**" if w["likely"] else "{}").format(w["word"]) + f" {w['pool']}/{w['clean']} "
                       f"{w['flips']:.0%}->{w['to']}" for w in r["words"]) or "none"
        tw = f"{r['found']} / {r['likely_true']}" if r["trigger_words"] else "-"
        lines.append(f"| {r['model']} | {r['n_pool']} | {tw} | {', '.join(r['likely_other']) or '-'} | {ws} |")
    lines += ["", f"Wall time {report['seconds_total'] / 60:.1f} min (one thread)."]
    write_text(RESULTS / "pool_words_check.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
