"""Could a search of the vocabulary name a weak word trigger? A diagnostic that needs the trigger (our design;
papers silent).

Where the pool holds a BadNets word too rarely to tell it from chance (Analyst tools, *Words concentrated in the
pool*), a defender could still insert every word of the vocabulary into clean texts and keep those that send many
of them to one class (trigger inversion: T-Miner, DBS). This measures whether the trigger words would stand out.
For each BadNets model of a manifest: the defense benchmark's defender clean texts (``contrast_check.
evaluation_sets``, the quick draw); ``--n-words`` whole words of the tokenizer's vocabulary that no defender clean
text holds (``trigger_search.absent_vocabulary``), plus the four trigger words; each inserted into the first
``--n-texts`` clean texts at seeded word positions (``triggers.insert_trigger``); the flip rate of each word
(``trigger_search.word_flips``: per class, the share of the texts not in it that move to it). The same words and
texts go through the model's clean twin (the manifest's ``clean_model``), which a defender does not have: a word
that flips the twin as often is a word of the task, not a trigger.

Per trigger word: its flip rate to the target, on the model and on the twin; its rank among the drawn words by
the largest flip rate over classes (what a defender, who does not know the target, would sort by); and how many
drawn words flip at least as often.

    python bench/vocab_flip_check.py [--manifest bench/models/tuning_zoo/manifest.json] [--only t0,r0.03]
        [--n-words 200] [--n-texts 40] [--tag NAME]

Writes ``bench/results/vocab_flip_check[_TAG].json`` and ``.md``.
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
    ap.add_argument("--manifest", default=str(MANIFEST))
    ap.add_argument("--only", default="", help="comma-separated substrings of model names (default: every BadNets)")
    ap.add_argument("--n-words", type=int, default=200)
    ap.add_argument("--n-texts", type=int, default=40)
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    if args.n_words < 1 or args.n_texts < 1:
        raise SystemExit("--n-words and --n-texts must be at least 1.")
    import numpy as np
    import torch

    from contrast_check import evaluation_sets
    from backdoor_core.models import load_model
    from backdoor_core.trigger_search import absent_vocabulary, word_flips

    torch.set_num_threads(1)
    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise SystemExit(f"No manifest at {manifest}: build the zoo with python bench/test_zoo.py")
    every = {m["name"]: m for m in json.loads(manifest.read_text())["models"]}
    only = [o for o in args.only.split(",") if o]
    models = [m for m in every.values() if m["attack"] == "badnets" and (not only or any(o in m["name"] for o in only))]
    if not models:
        raise SystemExit(f"No BadNets model in {manifest} matches --only {args.only!r}.")
    rows, data, t_all = [], {}, time.perf_counter()
    for m in models:
        t0 = time.perf_counter()
        defender, _test, _ds, _card, target, seed = evaluation_sets(m, data)
        suspect = load_model(str(ROOT / m["path"]))
        twin = load_model(str(ROOT / every[m["clean_model"]]["path"]))
        trig = [w.lower() for w in m["trigger"]]
        drawn = absent_vocabulary(suspect.tokenizer, defender.texts, args.n_words, seed, exclude=trig)
        words = drawn + trig
        texts = [str(t) for t in defender.texts[: args.n_texts]]
        flips = {name: word_flips(lm.model, lm.tokenizer, texts, words, m["max_length"], seed)
                 for name, lm in (("model", suspect), ("twin", twin))}
        top = flips["model"].max(1)  # (words,) the largest flip over classes: a defender's sort key
        drawn_top = top[: len(drawn)]
        per_word = []
        for k, w in enumerate(trig):
            i = len(drawn) + k
            per_word.append({"word": w, "flip": round(float(flips["model"][i, target]), 3),
                             "twin_flip": round(float(flips["twin"][i, target]), 3),
                             "rank": int((drawn_top > top[i]).sum()) + 1,
                             "drawn_at_least": int((drawn_top >= top[i]).sum())})
        best = min(per_word, key=lambda r: (r["drawn_at_least"], r["rank"]))
        order = np.argsort(-drawn_top)[:5]
        rows.append({"model": m["name"], "seed": seed, "target": int(target), "asr": m["asr"],
                     "n_words": len(drawn), "n_texts": len(texts), "trigger": per_word, "best_at_least": best["drawn_at_least"],
                     "drawn_q90": round(float(np.quantile(drawn_top, 0.9)), 3),
                     "drawn_max": round(float(drawn_top.max()), 3),
                     "drawn_top": [{"word": drawn[i], "flip": round(float(drawn_top[i]), 3),
                                    "to": int(flips["model"][i].argmax()),
                                    "twin_flip": round(float(flips["twin"][i, flips["model"][i].argmax()]), 3)}
                                   for i in order],
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps({k: rows[-1][k] for k in ("model", "best_at_least", "drawn_q90", "seconds")}), flush=True)
    report = {"script": "bench/vocab_flip_check.py", "manifest": str(manifest.relative_to(ROOT))
              if manifest.is_relative_to(ROOT) else str(manifest), "only": args.only,
              "n_words": args.n_words, "n_texts": args.n_texts, "rows": rows,
              "seconds_total": round(time.perf_counter() - t_all, 1)}
    stem = "vocab_flip_check" + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / f"{stem}.json", json.dumps(report, indent=2))
    lines = [f"# Could a search of the vocabulary name the trigger? ({report['manifest']})", "",
             f"`bench/vocab_flip_check.py`: per BadNets model, {args.n_words} vocabulary words that no defender "
             f"clean text holds and the four trigger words, each inserted into {args.n_texts} defender clean texts. "
             "Flip: the share of the texts not in the target that the word sends to it (model / clean twin). "
             "At least: how many drawn words flip the model as often as the trigger word or more, by the largest "
             "flip over classes (what a defender who does not know the target would sort by; 0 = the word stands "
             "above all of them). A diagnostic: it needs the trigger and the clean twin.", "",
             "| model | ASR | trigger words: flip model / twin, drawn words at least | drawn words: 90th pct / max "
             "flip | drawn words flipping most (model / twin) |", "|---|---|---|---|---|"]
    for r in rows:
        tw = "; ".join(f"{w['word']} {w['flip']:.0%} / {w['twin_flip']:.0%}, {w['drawn_at_least']}" for w in r["trigger"])
        dt = ", ".join(f"{d['word']} {d['flip']:.0%} / {d['twin_flip']:.0%}" for d in r["drawn_top"])
        lines.append(f"| {r['model']} | {r['asr']:.1%} | {tw} | {r['drawn_q90']:.0%} / {r['drawn_max']:.0%} | {dt} |")
    lines += ["", f"Wall time {report['seconds_total'] / 60:.1f} min (one thread)."]
    write_text(RESULTS / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
