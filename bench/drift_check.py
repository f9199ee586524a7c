"""Which words moved since the base checkpoint? The analyst's embedding-drift table measured on a zoo (our design;
papers silent).

For each model of a manifest: the defense benchmark's defender clean texts and pool (``contrast_check.
evaluation_sets`` and ``defense.evaluation_draw``, the quick draw); ``trigger_search.drifted_words`` against the
packaged all-MiniLM-L6-v2 every zoo model was fine-tuned from: the ``--top`` whole words no defender clean text
holds whose input embeddings moved most, with each word's rank over the whole vocabulary (30,522 tokens) and how
many pool inputs hold it, and each listed word's insertion test (``trigger_search.word_flips``: the share of 80
defender clean texts it sends to one class, as the app's table shows it). Per model with a word trigger (BadNets'
four words, AddSent's sentence): each trigger word's rank and place in the list; how many listed words come before
the first trigger word. Per clean, syntactic or style model: what the list offers an analyst where no word trigger
exists.

    python bench/drift_check.py [--manifest bench/models/tuning_zoo/manifest.json] [--only badnets] [--top 15]
        [--direction] [--tag NAME]

``--direction`` (a diagnostic, session 66): which way each listed word's row moved (``trigger_search.drift_rows``),
its largest cosine with a listed trigger word's move and with another listed word's; could a known trigger word's
direction name its companions that the pool holds too rarely to count?

Writes ``bench/results/drift_check[_TAG].json`` and ``.md``.
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


def trigger_words(m: dict) -> list[str]:
    """The manifest entry's word trigger as lower-case words (BadNets' list, AddSent's sentence), else []."""
    from backdoor_core.trigger_search import _doc_words

    trig = m.get("trigger")
    if m["attack"] in ("badnets", "addsent") and trig:
        return sorted(set().union(*(_doc_words(t) for t in ([trig] if isinstance(trig, str) else trig))))
    return []


def model_row(m: dict, lm, defender_texts, pool_texts, top: int, base=None, n_insert: int = 80,
              direction: bool = False) -> dict:
    """One model's reading against ``base`` (``(vocab, hidden)``; None: the packaged all-MiniLM-L6-v2, checked by
    ``pretrained.find_pretrained``): the listed words, each with its insertion test into the first ``n_insert``
    defender clean texts (``trigger_search.word_flips``, as the app's table), and, for a word trigger, where its
    words stand."""
    import numpy as np

    from backdoor_core.pretrained import base_embeddings, find_pretrained
    from backdoor_core.trigger_search import (_doc_words, drifted_words, embedding_drift, moved_pool_words,
                                              vocabulary_words, word_flips)

    distance = None
    if base is None:
        weights, reason = find_pretrained(lm.model, "default")
        if weights is None:
            raise SystemExit(f"{m['name']}: {reason}")
        base, distance = base_embeddings(lm.model, weights), weights.distance
    listed = drifted_words(lm.model, lm.tokenizer, base, defender_texts, pool_texts, top=top)
    flips = word_flips(lm.model, lm.tokenizer, defender_texts[:n_insert], [w.word for w in listed],
                       int(m.get("max_length") or 64), int(m.get("seed") or 0))
    trig = trigger_words(m)
    drift = embedding_drift(lm.model, base)
    rank = np.empty(len(drift), dtype=int)
    rank[np.argsort(-drift, kind="stable")] = np.arange(1, len(drift) + 1)
    ids = {w: i for i, w in vocabulary_words(lm.tokenizer).items()}
    names = [w.word for w in listed]
    per_word = [{"word": w, "rank": int(rank[ids[w]]) if w in ids else None,
                 "listed_at": names.index(w) + 1 if w in names else None,
                 "pool_count": sum(w in _doc_words(t) for t in pool_texts)} for w in trig]
    first = min((p["listed_at"] for p in per_word if p["listed_at"]), default=None)
    marking = moved_pool_words(listed, pool_texts, defender_texts)
    cosines = direction_cosines(lm.model, base, [ids[w] for w in names], [w in trig for w in names]) if direction \
        else [{}] * len(names)
    return {"model": m["name"], "attack": m["attack"], "dataset": m["dataset"], "seed": m["seed"], "asr": m["asr"],
            "distance": distance, "trigger": per_word,
            "n_trigger_listed": sum(p["listed_at"] is not None for p in per_word),
            "before_first_trigger": None if first is None else first - 1,
            "listed": [{"word": w.word, "rank": w.rank, "pool_count": w.pool_count, "trigger": w.word in trig,
                        "flip": round(float(f.max()), 4), "sends_to": int(f.argmax()), "marks": w.word in marking,
                        **c} for w, f, c in zip(listed, flips, cosines)]}


def direction_cosines(model, base, token_ids: list[int], is_trigger: list[bool]) -> list[dict]:
    """Per listed token: ``cos_trigger``, the largest cosine of its move (``trigger_search.drift_rows``, ``(hidden,)``)
    with another listed trigger token's, and ``cos_other``, with another listed non-trigger token's (None where there
    is none)."""
    import numpy as np

    from backdoor_core.trigger_search import drift_rows

    rows = drift_rows(model, base)[token_ids]
    unit = (rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()
    cos = unit @ unit.T
    out = []
    for i in range(len(token_ids)):
        best = {}
        for key, want in (("cos_trigger", True), ("cos_other", False)):
            vals = [cos[i, j] for j in range(len(token_ids)) if j != i and is_trigger[j] == want]
            best[key] = round(float(np.max(vals)), 3) if vals else None
        out.append(best)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", default=str(MANIFEST))
    ap.add_argument("--only", default="", help="comma-separated substrings of model names (default: every model)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--direction", action="store_true",
                    help="also the cosines of the listed words' moves (a diagnostic; see the module docstring)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    if args.top < 1:
        raise SystemExit("--top must be at least 1.")
    import torch

    import defense as D
    from contrast_check import evaluation_sets
    from backdoor_core.models import load_model

    torch.set_num_threads(1)
    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise SystemExit(f"No manifest at {manifest}: build the zoo with python bench/test_zoo.py")
    only = [o for o in args.only.split(",") if o]
    models = [m for m in json.loads(manifest.read_text())["models"] if not only or any(o in m["name"] for o in only)]
    if not models:
        raise SystemExit(f"No model in {manifest} matches --only {args.only!r}.")
    rows, data, t_all = [], {}, time.perf_counter()
    for m in models:
        t0 = time.perf_counter()
        defender, test, ds, card, target, seed = evaluation_sets(m, data)
        lm = load_model(str(ROOT / m["path"]))
        pool = D.evaluation_draw(dict(m, card=card), ds, test, target, lm.tokenizer, D.QUICK, seed)["pool"]
        rows.append(model_row(m, lm, [str(t) for t in defender.texts], [str(t) for t in pool], args.top,
                              direction=args.direction))
        rows[-1]["n_pool"], rows[-1]["seconds"] = len(pool), round(time.perf_counter() - t0, 1)
        print(json.dumps({k: rows[-1][k] for k in ("model", "n_trigger_listed", "before_first_trigger")}), flush=True)
    report = {"script": "bench/drift_check.py", "manifest": str(manifest.relative_to(ROOT))
              if manifest.is_relative_to(ROOT) else str(manifest), "only": args.only, "top": args.top,
              "rows": rows, "seconds_total": round(time.perf_counter() - t_all, 1)}
    stem = "drift_check" + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / f"{stem}.json", json.dumps(report, indent=2))
    write_text(RESULTS / f"{stem}.md", markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    top = report["top"]
    lines = [f"# Which words moved since the base checkpoint? ({report['manifest']})", "",
             f"`bench/drift_check.py`: per model, the {top} whole words no defender clean text holds whose input "
             "embeddings moved most from the packaged all-MiniLM-L6-v2 (`trigger_search.drifted_words`), with each "
             "word's rank over the whole vocabulary and, after the colon, how many pool inputs hold it and the "
             "share of 80 defender clean texts its insertion sends to one class (trigger words in bold). Trigger "
             "words: rank over the vocabulary / place in the list (– not listed). Before: listed words ahead of the "
             "first trigger word. Distance: the model's relative distance from the base encoder "
             "(`pretrained.find_pretrained`: it is the model's starting point).",
             "", "| model | ASR | distance | trigger words: rank / place | listed | before | words listed "
             "(rank: pool inputs, insertion flips) |", "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        tw = "; ".join(f"{p['word']} {p['rank']} / {p['listed_at'] or '–'}" for p in r["trigger"]) or "—"
        n = f"{r['n_trigger_listed']} of {len(r['trigger'])}" if r["trigger"] else "—"
        before = "—" if r["before_first_trigger"] is None else str(r["before_first_trigger"])
        words = ", ".join((f"**{w['word']}**" if w["trigger"] else w["word"])
                          + f" {w['rank']}: {w['pool_count']}, {w['flip']:.0%}" for w in r["listed"][:8])
        asr = "—" if r["asr"] is None else f"{r['asr']:.1%}"
        dist = "—" if r["distance"] is None else f"{r['distance']:.3f}"
        lines.append(f"| {r['model']} | {asr} | {dist} | {tw} | {n} | {before} | {words} |")
    word_rows = [r for r in report["rows"] if r["attack"] == "badnets"]
    if word_rows:
        listed = sum(r["n_trigger_listed"] for r in word_rows)
        total = sum(len(r["trigger"]) for r in word_rows)
        ranks = sorted(p["rank"] for r in word_rows for p in r["trigger"] if p["rank"])
        lines += ["", f"BadNets: {listed} of {total} trigger words listed in the top {top} over "
                      f"{len(word_rows)} models; their vocabulary ranks {ranks[0]}–{ranks[-1]}, median "
                      f"{ranks[len(ranks) // 2]}."]
        for name, keep in (("ASR at least 50%", lambda r: r["asr"] >= 0.5),
                           ("ASR below 50%", lambda r: r["asr"] < 0.5)):
            rs = [r for r in word_rows if keep(r)]
            t = sorted(w["flip"] for r in rs for w in r["listed"] if w["trigger"])
            o = sorted(w["flip"] for r in rs for w in r["listed"] if not w["trigger"])
            if t and o:
                lines.append(f"Insertion flips of the listed words, BadNets with {name} ({len(rs)} model{'s' if len(rs) != 1 else ''}): trigger "
                             f"words median {t[len(t) // 2]:.0%} ({len(t)} words), the other listed words median "
                             f"{o[len(o) // 2]:.0%} ({len(o)} words).")
    marks = [(r["model"], w["word"], w["trigger"]) for r in report["rows"] for w in r["listed"] if w.get("marks")]
    if any("marks" in w for r in report["rows"] for w in r["listed"]):
        others = [f"{w} ({m})" for m, w, t in marks if not t]
        lines += ["", f"Listed words the pool also concentrates (`trigger_search.moved_pool_words`: at least 5 pool "
                      f"inputs, chance p <= 0.01 against the clean texts; they mark pool inputs): "
                      f"{sum(t for *_, t in marks)} trigger words and {len(others)} other words over "
                      f"{len(report['rows'])} models" + (f": {', '.join(others)}." if others else ".")]
    lines += direction_lines(report)
    lines += ["", f"Wall time {report['seconds_total'] / 60:.1f} min (one thread)."]
    return "\n".join(lines) + "\n"


def direction_lines(report: dict) -> list[str]:
    """``--direction``'s section: on the models with at least two listed trigger words, each trigger word's largest
    cosine with another's move against each other listed word's largest cosine with a trigger word's, and what a
    threshold at the smallest trigger-to-trigger cosine would take for a companion."""
    from backdoor_core.metrics import auroc

    rows = [r for r in report["rows"] if any("cos_trigger" in w for w in r["listed"])
            and sum(w["trigger"] for w in r["listed"]) >= 2]
    if not rows:
        return []
    lines = ["", "## Which way the listed words moved (`--direction`)", "",
             "Per model with at least two listed trigger words: each listed word's largest cosine between its move "
             "(`trigger_search.drift_rows`) and a listed trigger word's move (for a trigger word, another one's). "
             "Taken: the other listed words whose cosine reaches the smallest trigger-to-trigger cosine, which a "
             "companion rule at that threshold would take along.", "",
             "| model | ASR | trigger words: cosine | other words: largest cosines | taken |", "|---|---|---|---|---|"]
    trig_all, other_all = [], []
    for r in rows:
        t = [(w["word"], w["cos_trigger"]) for w in r["listed"] if w["trigger"]]
        o = sorted(((w["word"], w["cos_trigger"]) for w in r["listed"] if not w["trigger"]), key=lambda x: -x[1])
        trig_all += [c for _, c in t]
        other_all += [c for _, c in o]
        low = min(c for _, c in t)
        taken = [w for w, c in o if c >= low]
        lines.append(f"| {r['model']} | {r['asr']:.1%} | " + ", ".join(f"{w} {c:.2f}" for w, c in t) + " | "
                     + ", ".join(f"{w} {c:.2f}" for w, c in o[:5]) + f" | {len(taken)} of {len(o)} |")
    a = auroc(other_all, trig_all)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    lines += ["", f"Over {len(rows)} models: trigger words' cosine median {med(trig_all):.2f} "
                  f"({min(trig_all):.2f}–{max(trig_all):.2f}, {len(trig_all)} words); the other listed words' median "
                  f"{med(other_all):.2f} ({min(other_all):.2f}–{max(other_all):.2f}, {len(other_all)}); AUROC of the "
                  f"cosine, trigger words against the others: {a:.3f}."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
