"""Which states and which penalty for the scan's pool contrast (``detection.ContrastDetector``; our design): a
diagnostic on the SST-2 tuning zoo's paraphrase models (never the test zoo).

For each model (``--only`` substrings of the tuning-zoo manifest's names; default its style and syntactic models),
the defense benchmark's quick evaluation draw (``bench/defense.py --quick``: the defender's 200 clean dev texts, a
pool of 250 test texts, 20% triggered, 150 held-out clean and 150 held-out triggered test texts, seeded by the
model's seed) and one forward pass per set, then representation scores alone (no attention), held-out AUROC:

* ``mahalanobis``: the scan's distance of the ``[CLS]`` states to the predicted class's clean mean (fit on one
  half of the defender's texts, z-scored per layer on the other, max over layers);
* ``contrast_<states>_C<c>``: a logistic regression of pool (1) vs the defender's clean texts (0), balanced, on
  every layer's ``cls`` or content-token mean (``pooled``) states, standardised by the clean ones, L2 strength
  ``C``; held-out inputs scored by the model trained on all of them.

    python bench/contrast_check.py [--only style,syntactic]

Writes ``bench/results/contrast_check.json`` and ``.md``.
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
CS = (0.0001, 0.001, 0.01, 0.1)


def evaluation_sets(m: dict, data: dict):
    """Manifest entry ``m``'s defender clean texts (the defense benchmark's quick draw), test set, dataset name,
    model card, target and seed."""
    import defense as D
    from backdoor_core.model_card import ModelCard

    seed = m["seed"]
    # the bench's own dev split (repeated texts and test texts left out), cached per seed (BBC's split is seeded)
    dev, test, ds, _ = D.bench_data(m["dataset"], seed, D.QUICK["n_clean"], cache=data.setdefault(seed, {}))
    defender = D.defender_draw(dev, D.QUICK["n_clean"], seed)
    card = ModelCard.read(str(ROOT / m["path"]))
    target = card.target_for(test.label_names)
    return defender, test, ds, card, target, seed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="style,syntactic", help="comma-separated substrings of model names")
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    import defense as D
    from backdoor_core.detection import RepresentationDetector, attention_stats, split_clean
    from backdoor_core.models import load_model

    torch.set_num_threads(1)
    models = [m for m in json.loads(MANIFEST.read_text())["models"]
              if m["attack"] != "clean" and any(o in m["name"] for o in args.only.split(","))]
    if not models:
        raise SystemExit(f"No tuning-zoo model matches --only {args.only}: build it with "
                         "python bench/test_zoo.py --zoo tuning --seeds 0,1")
    rows, data, t_all = [], {}, time.perf_counter()
    for m in models:
        t0 = time.perf_counter()
        defender, test, ds, card, target, seed = evaluation_sets(m, data)
        lm = load_model(str(ROOT / m["path"]))
        L = m["max_length"]
        draw = D.evaluation_draw(dict(m, card=card), ds, test, target, lm.tokenizer, D.QUICK, seed)
        pool_texts = draw["pool"]

        def stats(texts):
            return attention_stats(lm.model, lm.tokenizer, texts, L)

        clean = stats(defender.texts)
        pool = stats(pool_texts)
        held = [stats(draw["detect_clean"]), stats(draw["detect_triggered"])]
        y = np.r_[np.zeros(len(held[0])), np.ones(len(held[1]))]
        fit, dev = split_clean(len(clean), 0.5, seed)
        row = {"model": m["name"], "attack": m["attack"], "seed": seed}
        maha = RepresentationDetector().fit(clean.subset(fit))
        maha.calibrate(clean.subset(dev))
        row["mahalanobis"] = float(roc_auc_score(y, np.r_[maha.score(held[0]), maha.score(held[1])]))
        for states in ("cls", "pooled"):
            def x(st):
                return getattr(st, states).reshape(len(st), -1).astype(np.float64)
            xc, xp = x(clean), x(pool)
            mu, sd = xc.mean(0), np.maximum(xc.std(0), 1e-6)
            xh = (np.concatenate([x(held[0]), x(held[1])]) - mu) / sd
            for c in CS:
                clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(
                    (np.concatenate([xc, xp]) - mu) / sd, np.r_[np.zeros(len(xc)), np.ones(len(xp))])
                row[f"contrast_{states}_C{c}"] = float(roc_auc_score(y, clf.decision_function(xh)))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    cols = ["mahalanobis"] + [f"contrast_{s}_C{c}" for s in ("cls", "pooled") for c in CS]
    report = {"zoo": "tuning", "script": "bench/contrast_check.py", "only": args.only, "rows": rows,
              "seconds_total": round(time.perf_counter() - t_all, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "contrast_check.json", json.dumps(report, indent=2))
    lines = ["# Pool contrast: which states, which penalty (SST-2 tuning zoo)", "",
             "Held-out detection AUROC of representation scores alone (no attention part), on the defense "
             "benchmark's quick evaluation draw of each model (`bench/contrast_check.py`). `mahalanobis`: the scan's "
             "[CLS] distance; `contrast_<states>_C<c>`: pool-vs-clean logistic regression on every layer's "
             "`cls` or content-token mean (`pooled`) states with L2 strength C.", "",
             "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{np.mean([r[c] for r in rows]):.3f}**" for c in cols) + " |")
    lines += ["", f"Wall time {report['seconds_total'] / 60:.1f} min (one thread)."]
    write_text(RESULTS / "contrast_check.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
