"""Benchmark: how often is the repair's judge right on paraphrased text, and does any simple change make it better?

The judge of the repair's pseudo-labels (``settings.LABEL_JUDGE``, ``reference.judge_probs``) is a class-balanced
logistic regression on the pretrained encoder's unit-length mean-pooled embeddings, fit on the defender's 200 clean
labelled texts. On style and syntactic backdoors the inputs it must judge are paraphrases, so its accuracy there bounds
how many right labels reach the flagged inputs. This measures it directly, on tuning data only (SST-2: 200 clean
training texts drawn per draw; scored on the clean dev set, the dev sets of the StyleBkd Bible, Shakespeare and tweets
paraphrases, and 872 HiddenKiller syntactic paraphrases of SST-2 training rows outside the draws' reservoir
(``sst2/syntactic_transfer``, whose dev set holds negatives only), each with its row's original label), for:

* ``C``: the logistic regression's inverse L2 strength (``settings.JUDGE_C``, 1.0);
* ``features``: ``mean`` (the judge's: the last layer's mean over real tokens), ``layers`` (the mean of every layer's
  mean-pooled state), ``cls`` (the last layer's first token);
* ``n``: 200 clean texts (the benchmark's defender set), or 1000 (what a defender with more labelled data gives the
  judge as it runs);
* ``fit``: ``labelled`` (the judge's: the clean texts), ``self`` (scikit-learn's self-training, threshold 0.8,
  over an unlabelled pool of 200 other clean texts and 50 paraphrases of the set being scored: how a pool could adapt
  the judge to paraphrased text; scored on those 50), ``spread`` (label spreading, 7 nearest neighbours, same pool).

The model is the packaged MiniLM (the pretrained encoder ``pretrained.find_pretrained`` finds for the zoo). Our design
(papers silent); ``bench/results/judge_accuracy.md``.

    python bench/judge_accuracy.py                  # 5 draws, about 1 min on 2 cores
    python bench/judge_accuracy.py --draws 10 --tag d10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
SETS = {"clean": ("clean", "dev"), "bible": ("style_bible", "dev"), "shakespeare": ("style_shakespeare", "dev"),
        "tweets": ("style_tweets", "dev"), "syntactic": ("syntactic_transfer", "train")}
N_SYNTACTIC = 872  # syntactic_transfer's dev set holds negatives only: score its train rows (both classes) instead
FEATURES = ("mean", "layers", "cls")
CS = (0.1, 1.0, 10.0)
N_CLEAN, N_MORE, N_POOL_CLEAN, N_POOL_PARA = 200, 1000, 200, 50


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=5, help="draws of the 200 clean texts (and the pools)")
    p.add_argument("--tag", default="", help="write judge_accuracy<_tag>.json/.md")
    args = p.parse_args(argv)
    if args.draws < 2:
        p.error("--draws must be at least 2 (the table reports a standard deviation over draws)")
    return args


def _pooled(batch) -> dict:
    """Per input: ``mean`` ``(B, hidden)`` the last layer's mean over real tokens, ``layers`` the mean of every
    layer's, ``cls`` the last layer's first token; each unit length (the judge's own is ``reference._mean_pooled``)."""
    import torch

    m = batch.attention_mask.unsqueeze(-1).float()  # (B, T, 1)
    per_layer = [(h.float() * m).sum(1) / m.sum(1).clamp_min(1.0) for h in batch.hidden_states[1:]]  # L x (B, H)
    unit = torch.nn.functional.normalize
    return {"mean": unit(per_layer[-1], dim=-1), "layers": unit(torch.stack(per_layer).mean(0), dim=-1),
            "cls": unit(batch.hidden_states[-1][:, 0].float(), dim=-1)}


def embed(lm, texts) -> dict[str, np.ndarray]:
    """``features -> (N, hidden)`` for ``texts`` (an empty text becomes ``"."``)."""
    from backdoor_core.forward import run_with_cache

    cache = run_with_cache(lm.model, lm.tokenizer, [str(t) or "." for t in texts], max_length=64, reduce=_pooled,
                           reduce_hidden=True, reduce_attentions=False)
    return {f: np.asarray(cache.reduced[f]) for f in FEATURES}


def fit_predict(fit: str, c: float, x_lab, y_lab, x_pool, x_score) -> np.ndarray:
    """Predicted classes of ``x_score`` by one judge. ``fit``: ``labelled`` | ``self`` | ``spread`` (the last two
    also see ``x_pool``, unlabelled; ``x_score`` must be its last rows for ``spread``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    if fit == "labelled":
        return lr.fit(x_lab, y_lab).predict(x_score)
    x = np.vstack([x_lab, x_pool])
    y = np.concatenate([y_lab, -np.ones(len(x_pool), dtype=np.int64)])
    if fit == "self":
        return SelfTrainingClassifier(lr, threshold=0.8).fit(x, y).predict(x_score)
    if fit == "spread":
        return LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.2, max_iter=100).fit(x, y).transduction_[
            -len(x_score):]
    raise ValueError(f"unknown fit {fit!r}")


def run(draws: int) -> dict:
    from backdoor_core.cli import quiet_libraries
    from backdoor_core.data import load_shared
    from backdoor_core.models import load_model

    quiet_libraries()
    lm = load_model("default", label_names=["negative", "positive"])
    train = load_shared("sst2", "clean", "train")
    rng = np.random.default_rng(0)
    reservoir = rng.choice(len(train), 3000, replace=False)  # the draws' clean texts, embedded once
    x_train = embed(lm, [train.texts[i] for i in reservoir])
    y_train = np.asarray([train.labels[i] for i in reservoir])
    scored = {}
    for name, (variant, split) in SETS.items():
        ds = load_shared("sst2", variant, split)
        rows = np.arange(len(ds))
        if variant == "syntactic_transfer":  # row-aligned with the clean train set: never a reservoir row's paraphrase
            rows = np.setdiff1d(rows, reservoir)
            rows = rng.choice(rows[[ds.texts[i] != "nan" for i in rows]], N_SYNTACTIC, replace=False)
        scored[name] = (embed(lm, [ds.texts[i] for i in rows]), np.asarray([ds.labels[i] for i in rows]))
    acc: dict[tuple, list[float]] = {}
    for _ in range(draws):
        more = rng.choice(len(reservoir), N_MORE, replace=False)
        lab = more[:N_CLEAN]
        pool_clean = rng.choice(np.setdiff1d(np.arange(len(reservoir)), more), N_POOL_CLEAN, replace=False)
        for name, (x_set, y_set) in scored.items():
            para = rng.choice(len(y_set), N_POOL_PARA, replace=False)
            for feat in FEATURES:
                x_lab, y_lab = x_train[feat][lab], y_train[lab]
                for c in CS:
                    pred = fit_predict("labelled", c, x_lab, y_lab, None, x_set[feat])
                    acc.setdefault((feat, c, "labelled", N_CLEAN, name), []).append(float((pred == y_set).mean()))
                if feat != "mean":
                    continue
                pred = fit_predict("labelled", 1.0, x_train[feat][more], y_train[more], None, x_set[feat])
                acc.setdefault((feat, 1.0, "labelled", N_MORE, name), []).append(float((pred == y_set).mean()))
                x_pool = np.vstack([x_train[feat][pool_clean], x_set[feat][para]])
                for fit in ("self", "spread"):
                    pred = fit_predict(fit, 1.0, x_lab, y_lab, x_pool, x_set[feat][para])
                    acc.setdefault((feat, 1.0, fit, N_CLEAN, name), []).append(float((pred == y_set[para]).mean()))
    rows = [{"features": f, "C": c, "fit": fit, "n": n, "set": s, "accuracy_mean": float(np.mean(v)),
             "accuracy_sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "draws": len(v)}
            for (f, c, fit, n, s), v in acc.items()]
    return {"settings": {"draws": draws, "n_clean": N_CLEAN, "n_more": N_MORE, "n_pool_clean": N_POOL_CLEAN,
                         "n_pool_paraphrased": N_POOL_PARA, "sets": SETS, "model": "default (packaged MiniLM)"},
            "rows": rows}


def markdown(result: dict) -> str:
    """One line per judge (features, C, fit, clean texts), a column per scored set: accuracy mean ± sd over the
    draws (%); the judge as it runs first."""
    rows = result["rows"]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    running = ("mean", 1.0, "labelled", result["settings"]["n_clean"])
    judges = sorted(dict.fromkeys((r["features"], r["C"], r["fit"], r["n"]) for r in rows),
                    key=lambda j: (j != running, FEATURES.index(j[0]), j[2] != "labelled", j[3], j[1]))
    by = {(r["features"], r["C"], r["fit"], r["n"], r["set"]): r for r in rows}
    s = result["settings"]
    lines = ["# The repair's judge on paraphrased text (SST-2 tuning data)", "",
             f"Accuracy (%) of a class-balanced logistic regression on pretrained MiniLM embeddings, fit on "
             f"N clean SST-2 training texts; mean ± sd over {s['draws']} draws. `labelled` rows score "
             "every dev row of the set; `self` and `spread` also see an unlabelled pool of "
             f"{s['n_pool_clean']} other clean texts and {s['n_pool_paraphrased']} rows of the set, and score those "
             "rows. The first row is the judge as it runs (`settings.JUDGE_C`, `reference.judge_probs`).", "",
             "| features | C | fit | N | " + " | ".join(sets) + " |", "|---|---|---|---|" + "---|" * len(sets)]
    for f, c, fit, n in judges:
        cells = []
        for name in sets:
            r = by.get((f, c, fit, n, name))
            cells.append("-" if r is None else f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_sd']:.1f}")
        lines.append(f"| {f} | {c:g} | {fit} | {n} | " + " | ".join(cells) + " |")
    if "seconds" in result:
        lines += ["", f"{result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    result = run(args.draws)
    result["seconds"] = round(time.time() - t0, 1)
    stem = "judge_accuracy" + (f"_{args.tag}" if args.tag else "")
    write_text(RESULTS / f"{stem}.json", json.dumps(result, indent=1))
    md = markdown(result)
    write_text(RESULTS / f"{stem}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
