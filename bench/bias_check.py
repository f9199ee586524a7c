"""Diagnostic: is what the repair costs in clean accuracy, or leaves of a weak backdoor, a shift of the class prior?

A repair that moves the model's class prior (more clean texts sent to one class) loses CACC and moves ASR without
touching the trigger's response; an offset added to the output logits would then undo it. After each of our repairs
in a ``bench/defense.py`` run the repaired model's log-probabilities on the run's CACC and ASR sets are read, and the
repair is scored with four class offsets ``b`` (``(classes,)``, added to the log-probabilities; our design, papers
silent):

* ``none``: the repair as it is;
* ``defender``: ``b`` fitted on the defender's labelled clean texts (the repair's own training texts): minimum
  cross-entropy, a small L2 pull to 0 (``fit_offset``) — what a rule could use;
* ``pool``: the label-free offset that gives the repaired model the suspect's mean predicted distribution on the
  pool inputs the repair did not train on;
* ``oracle``: ``b`` fitted on the CACC set itself: the most any offset could give back (a bound, not a rule).

    python bench/bias_check.py OUT.jsonl --quick --manifest M --defenses alignment --detectors ours --only NAMES --seed S
    python bench/bias_check.py --report "which models" OUT.jsonl [OUT2.jsonl ...]  # -> bench/results/bias_check.*

The first form passes every argument after the JSON-lines path to ``bench/defense.py`` (which still writes its own
results: point ``BACKDOOR_BENCH_RESULTS`` elsewhere) and appends one line per repaired model
(``after_repair.run_patched``: one process per (dataset, seed) group rather than ``--workers``). Result:
``bench/results/bias_check.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import after_repair  # noqa: E402  (bench/after_repair.py)

OFFSETS = ("none", "defender", "pool", "oracle")


def fit_offset(log_probs, labels, l2: float = 1e-3, iters: int = 200):
    """``(classes,)`` offset ``b`` minimising the mean cross-entropy of ``log_probs + b`` (``(n, classes)``) against
    ``labels`` (``(n,)``), plus ``l2 * ||b||^2``; one L-BFGS solve (the problem is convex)."""
    import torch

    lp = torch.as_tensor(log_probs, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    b = torch.zeros(lp.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([b], max_iter=iters)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lp + b, y) + l2 * (b ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return b.detach().numpy()


def scores(log_probs, labels, asr_log_probs, target, b) -> dict:
    """CACC, ASR and the predicted class counts under offset ``b``."""
    import numpy as np

    from backdoor_core.metrics import accuracy, asr

    pred = (log_probs + b).argmax(1)
    out = {"cacc": accuracy(pred, labels), "predicted": np.bincount(pred, minlength=len(b)).tolist()}
    if asr_log_probs is not None and len(asr_log_probs) and target is not None:  # triggered non-target texts
        out["asr"] = asr((asr_log_probs + b).argmax(1), target)
    return out


def run(out_path: str, argv: list[str]) -> int:
    import numpy as np

    from backdoor_core.forward import predict

    def measure(seen, repair, model, tokenizer, clean_train, knobs):
        L = knobs.get("max_length", 64)

        def log_probs(m, texts):  # (n, classes)
            return np.log(np.clip(predict(m, tokenizer, texts, L), 1e-9, 1.0)) if texts else None

        before = {k: log_probs(model, seen[k]) for k in ("texts", "asr_texts", "pool")}
        res = repair()  # trains ``model`` in place
        after = {k: log_probs(res.model, seen[k]) for k in ("texts", "asr_texts", "pool")}
        defender = log_probs(res.model, list(clean_train.texts))
        y, t = seen["labels"], seen["target"]
        C = after["texts"].shape[1]
        trained = set(res.details["flagged_indices"])
        rest = [i for i in range(len(seen["pool"])) if i not in trained]
        mean = (lambda lp: np.log(np.exp(lp[rest]).mean(0) + 1e-9))
        offsets = {"none": np.zeros(C), "defender": fit_offset(defender, np.asarray(clean_train.labels)),
                   "pool": mean(before["pool"]) - mean(after["pool"]) if rest else np.zeros(C),
                   "oracle": fit_offset(after["texts"], y)}
        row = {"model": seen["name"], "target": t, "labels": np.bincount(y, minlength=C).tolist(),
               "suspect": scores(before["texts"], y, before["asr_texts"], t, np.zeros(C)),
               **{k: {**scores(after["texts"], y, after["asr_texts"], t, b), "offset": [round(float(v), 4) for v in b]}
                  for k, b in offsets.items()}}
        with open(out_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        return res

    return after_repair.run_patched(argv, measure)


def report(note: str, paths: list[str]) -> int:
    models = after_repair.read_rows(paths)
    lines = ["# A class offset after the repair (diagnostic)", "",
             f"{note}. ASR after / CACC change (points, against the suspect) with each class offset added to the "
             "repaired model's log-probabilities (`bench/bias_check.py`): none (the repair as it is), fitted on the "
             "defender's clean texts, matched to the suspect's mean prediction on the untrained pool inputs, fitted "
             "on the CACC set itself (a bound). Predicted: the repaired model's class counts on the CACC set "
             "against the labels'.", "",
             "| model | ASR before | " + " | ".join(OFFSETS) + " | predicted (labels) |",
             "|---|---|" + "---|" * (len(OFFSETS) + 1)]
    for m in models:
        c0 = m["suspect"]["cacc"]
        cells = [f"{100 * m[k].get('asr', float('nan')):.1f} / {100 * (m[k]['cacc'] - c0):+.1f}" for k in OFFSETS]
        lines.append(f"| {m['model']} | {100 * m['suspect'].get('asr', float('nan')):.1f} | " + " | ".join(cells)
                     + f" | {' / '.join(map(str, m['none']['predicted']))} ({' / '.join(map(str, m['labels']))}) |")
    after_repair.write_results("bias_check", {"note": note, "offsets": list(OFFSETS), "models": models}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(after_repair.main(__doc__, run, report))
