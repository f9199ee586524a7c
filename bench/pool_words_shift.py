"""Do the pool's trigger words survive a pool from another source than the clean texts? ``trigger_search.
pool_word_marks`` on the SST-2 tuning zoo's BadNets and clean models (never the test zoo), with the defender's 200
clean SST-2 dev texts (the defense benchmark's quick draw) and pools of 200 texts of another dataset: OLID tweets or
AG News items, ``k`` of them carrying one of the model's BadNets words (the attack's own insertion; a clean model
gets the default four words, which it never learnt). Such a pool holds dozens of words absent from the clean
texts; each reading runs with the screen of the words past the first ``POOL_WORD_TOP`` (``settings.
POOL_WORD_SCREEN``) and without it (``screen=0``, the reading before session 29).

Per reading: the enriched words, the marking words, the pool inputs marked (triggered / clean) and the seconds
(one thread). Summary per setting: triggered inputs marked over the BadNets models, models with a marking trigger
word, clean inputs marked, clean models with any marking word, median seconds.

    python bench/pool_words_shift.py [--only badnets_r0.025] [--k 20,40]

Writes ``bench/results/pool_words_shift.json`` and ``.md``.
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
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
MANIFEST = ROOT / "bench" / "models" / "tuning_zoo" / "manifest.json"
SOURCES = ("olid", "agnews")
POOL = 200


def shifted_pool(source_texts: list[str], k: int, poisoner, seed: int) -> tuple[list[str], list[bool]]:
    """``POOL`` texts of another dataset, the last ``k`` with one trigger word inserted; ``(texts, triggered)``."""
    rng = random.Random(seed * 1000 + k)
    idx = rng.sample(range(len(source_texts)), POOL)
    texts = [source_texts[i] for i in idx[: POOL - k]] + [poisoner.poison_text(source_texts[i], rng)[0]
                                                         for i in idx[POOL - k:]]
    return texts, [False] * (POOL - k) + [True] * k


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated substrings of model names (default: every BadNets "
                                               "and clean model)")
    ap.add_argument("--k", default="20,40", help="triggered pool inputs of the BadNets models (clean: 0 and the last)")
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    from contrast_check import evaluation_sets
    from backdoor_core import settings as S
    from backdoor_core.defender_data import load_bench_data
    from backdoor_core.models import load_model
    from backdoor_core.poisoning import BadNets
    from backdoor_core.trigger_search import enriched_words, pool_word_marks

    torch.set_num_threads(1)
    if not MANIFEST.is_file():
        raise SystemExit("No tuning zoo: build it with python bench/test_zoo.py --zoo tuning --seeds 0,1")
    ks = [int(k) for k in args.k.split(",") if k]
    every = json.loads(MANIFEST.read_text())["models"]
    only = [o for o in args.only.split(",") if o]
    models = [m for m in every if m["attack"] in ("badnets", "clean") and (not only or any(o in m["name"] for o in only))]
    data, sources, rows, t_all = {}, {}, [], time.perf_counter()
    for m in models:
        defender, _, _, _, target, seed = evaluation_sets(m, data)
        lm = load_model(str(ROOT / m["path"]))
        words = m["trigger"] if isinstance(m.get("trigger"), list) else None
        poisoner = BadNets(words, tokenizer=lm.tokenizer, max_length=m["max_length"]) if words else BadNets(
            tokenizer=lm.tokenizer, max_length=m["max_length"])
        clean_model = m["attack"] == "clean"
        for src in SOURCES:
            if (src, seed) not in sources:
                sources[(src, seed)] = list(load_bench_data(src, seed=seed)[1].texts)
            for k in ([0, ks[-1]] if clean_model else ks):
                pool, triggered = shifted_pool(sources[(src, seed)], k, poisoner, seed)
                trig = np.array(triggered)
                n_cands = len(enriched_words(pool, defender.texts, top=10**6))
                for screen in (0, S.POOL_WORD_SCREEN):
                    t0 = time.perf_counter()
                    found, marking, marked = pool_word_marks(lm.model, lm.tokenizer, pool, defender.texts,
                                                             m["max_length"], clean_labels=defender.labels,
                                                             seed=seed, screen=screen)
                    rows.append({"model": m["name"], "attack": m["attack"], "source": src, "k": k, "screen": screen,
                                 "candidates": n_cands, "read": len(found), "marking": marking,
                                 "flips": {w.word: round(w.flip_rate, 3) for w in found if w.flip_rate >= 0.1},
                                 "trigger_marking": sorted(set(marking) & set(poisoner.triggers))
                                 if not clean_model else [],
                                 "marked_triggered": int(marked[trig].sum()), "marked_clean": int(marked[~trig].sum()),
                                 "seconds": round(time.perf_counter() - t0, 2)})
                    print(json.dumps(rows[-1]), flush=True)
    report = {"zoo": "tuning", "script": "bench/pool_words_shift.py", "pool": POOL, "k": ks, "sources": SOURCES,
              "settings": {"top": S.POOL_WORD_TOP, "screen": S.POOL_WORD_SCREEN, "n_screen": S.POOL_WORD_N_SCREEN,
                           "n_insert": S.POOL_WORD_N_INSERT, "min_flip": S.POOL_WORD_MIN_FLIP},
              "rows": rows, "seconds_total": round(time.perf_counter() - t_all, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "pool_words_shift.json", json.dumps(report, indent=2))
    lines = ["# The pool's trigger words when the pool comes from another source (SST-2 tuning zoo)", "",
             f"`trigger_search.pool_word_marks` (`bench/pool_words_shift.py`): the defender's 200 clean SST-2 dev "
             f"texts; pools of {POOL} OLID tweets or AG News items, k of them with one of the model's BadNets words "
             "inserted. Screen: the enriched words past the first "
             f"{S.POOL_WORD_TOP} inserted into {S.POOL_WORD_N_SCREEN} clean texts first (`settings.POOL_WORD_SCREEN`"
             f" = {S.POOL_WORD_SCREEN}); 0 = only the first {S.POOL_WORD_TOP} words are read. One thread.", "",
             "## Summary", "",
             "| screen | pools | triggered inputs marked (BadNets models) | pools with a trigger word marking | "
             "clean inputs marked | clean-model pools with a marking word | median seconds |",
             "|---|---|---|---|---|---|---|"]
    for screen in (0, S.POOL_WORD_SCREEN):
        rs = [r for r in rows if r["screen"] == screen]
        bd = [r for r in rs if r["attack"] == "badnets"]
        cl = [r for r in rs if r["attack"] == "clean"]
        lines.append(f"| {screen} | {len(rs)} | {sum(r['marked_triggered'] for r in bd)} of {sum(r['k'] for r in bd)}"
                     f" | {sum(bool(r['trigger_marking']) for r in bd)} of {len(bd)}"
                     f" | {sum(r['marked_clean'] for r in rs)} of {sum(POOL - r['k'] for r in rs)}"
                     f" | {sum(bool(r['marking']) for r in cl)} of {len(cl)}"
                     f" | {statistics.median(r['seconds'] for r in rs):.1f} |")
    lines += ["", "## Per pool", "", "| model | source | k | enriched words | screen | words read | marking words | "
              "triggered marked | clean marked | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['source']} | {r['k']} | {r['candidates']} | {r['screen']} | {r['read']} | "
                     f"{', '.join(r['marking']) or '-'} | {r['marked_triggered']} of {r['k']} | "
                     f"{r['marked_clean']} of {POOL - r['k']} | {r['seconds']:.1f} |")
    lines += ["", f"Wall time {report['seconds_total'] / 60:.1f} min (one thread)."]
    write_text(RESULTS / "pool_words_shift.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
