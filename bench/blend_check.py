"""Diagnostic: does blending the repaired weights back toward the suspect's trade ASR for clean accuracy?

After each of our repairs in a ``bench/defense.py`` run, the model ``theta(a) = theta_suspect + a (theta_repaired -
theta_suspect)`` (a weight-space blend, as WiSE-FT does for fine-tuning; our design, papers silent) is evaluated for
``a`` in ``ALPHAS`` on the run's own CACC and ASR sets, with label-free signals a rule could use: on the repair's
flagged pool inputs the share whose prediction is still the suspect's, and on the unflagged pool inputs the share
that agrees with the suspect. Only the trained entries differ between the two models, so only they blend.

    python bench/blend_check.py OUT.jsonl --quick --manifest M --defenses alignment --detectors ours --repair all
    python bench/blend_check.py --report "which models" OUT.jsonl [OUT2.jsonl ...]  # -> bench/results/blend_check.*

The first form passes every argument after the JSON-lines path to ``bench/defense.py`` (which still writes its own
results) and appends one line per repaired model. Result: ``bench/results/blend_check.md``.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import after_repair  # noqa: E402  (bench/after_repair.py)

ALPHAS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def run(out_path: str, argv: list[str]) -> int:
    import numpy as np
    import torch

    from backdoor_core.forward import predict

    def measure(seen, repair, model, tokenizer, clean_train, knobs):
        res = repair()
        L = knobs.get("max_length", 64)
        flagged_idx = set(res.details["flagged_indices"])
        flagged = [seen["pool"][i] for i in res.details["flagged_indices"]]
        unflagged = [t for i, t in enumerate(seen["pool"]) if i not in flagged_idx]
        suspect = {n: p.detach().clone() for n, p in model.named_parameters()}
        repaired = {n: p.detach().clone() for n, p in res.model.named_parameters()}
        was_f = predict(model, tokenizer, flagged, L).argmax(1) if flagged else np.zeros(0, int)
        was_u = predict(model, tokenizer, unflagged, L).argmax(1)
        work, rows = copy.deepcopy(res.model), []
        for a in ALPHAS:
            with torch.no_grad():
                for n, p in work.named_parameters():
                    p.copy_(suspect[n] + a * (repaired[n] - suspect[n]))
            ev = seen["evaluate"](work)
            now_f = predict(work, tokenizer, flagged, L).argmax(1) if flagged else np.zeros(0, int)
            now_u = predict(work, tokenizer, unflagged, L).argmax(1)
            rows.append({"alpha": a, "cacc": ev["cacc"], "asr": ev.get("asr"),
                         "flagged_kept": float((now_f == was_f).mean()) if flagged else None,
                         "unflagged_agree": float((now_u == was_u).mean())})
        with open(out_path, "a") as fh:
            fh.write(json.dumps({"model": seen["name"], "n_flagged": len(flagged),
                                 "ffn_layers": res.details.get("ffn_layers"), "rows": rows}) + "\n")
        return res

    return after_repair.run_patched(argv, measure)


def report(note: str, paths: list[str]) -> int:
    models = after_repair.read_rows(paths)
    shown = (0.5, 0.7, 0.8, 0.9, 1.0)
    lines = ["# Blending the repair back toward the suspect (diagnostic)", "",
             f"{note}. ASR after / CACC change (points, against the suspect) at blend a; a = 1 is the repair as "
             "it is, a = 0 the suspect.", "",
             "| model | flagged | " + " | ".join(f"a = {a}" for a in shown) + " |",
             "|---|---|" + "---|" * len(shown)]
    for m in models:
        by = {r["alpha"]: r for r in m["rows"]}
        c0 = by[0.0]["cacc"]
        lines.append(f"| {m['model']} | {m['n_flagged']} | " + " | ".join(
            f"{100 * by[a]['asr']:.1f} / {100 * (by[a]['cacc'] - c0):+.1f}" for a in shown) + " |")
    after_repair.write_results("blend_check", {"note": note, "alphas": list(ALPHAS), "models": models}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(after_repair.main(__doc__, run, report))
