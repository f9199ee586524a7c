"""Tuning-zoo check of our repair's rules (our design; papers silent), on the SST-2 tuning models and the shipped
BBC demo zoo, the only models these knobs may be chosen on:

* ``settings.REPAIR_FFN="auto"``: train the suspicious layers' feed-forward blocks too when the scan found a
  backdoor and the paper's attention-only detector would miss at least ``settings.FFN_AUTO_MISSED`` of its flagged
  inputs (``ScanReport.attention_missed_share``). The representation share it replaced is listed beside it.
* ``settings.GATE_MAX_ACCURACY_DROP``: the safe-head labels need the safe heads alone to keep the clean job
  (``sanitize.gated_accuracy``: whole model vs suspicious heads off, on the defender's clean labelled texts).
* A guard considered and not adopted: focus-removal labels only when dropping the suspicious heads' focus tokens
  changes the prediction of many more flagged inputs than clean texts. The table lists both shares
  (``sanitize.focus_removal_labels`` on the flagged inputs and on 100 clean texts): they do not separate backdoors
  that did not take from syntactic and style ones.

BBC part (run here): each zoo model is scanned as the guided tour scans it (``tour.scan_inputs``,
``tour.scan_knobs``), then repaired as the tour repairs it (``tour.sanitize_knobs``) with each ``--variants`` FFN
choice: ``auto`` (the rule), ``none`` (heads only: the paper's), ``suspicious`` (always); CACC on all BBC test
articles and ASR on all of their non-target rows with the trigger (the tour's 80 pool articles are among them, as
in the tour). SST-2 part (read, not run): the model rows and our repair's rows of ``bench/defense.py`` runs on the
SST-2 tuning zoo given with ``--sst2``.

    python bench/repair_rules_check.py --models badnets-tal,addsent,badnets,badnets-2 --variants auto,suspicious \
        --sst2 bench/results/archive/defense_repair_rules_a.json,bench/results/archive/defense_repair_rules_b.json

Writes bench/results/repair_rules_tuning.json and .md and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()


LABEL_DETAILS = ("suspected_target", "focus_shift", "pool_exclusion_labelled")
"""The label rules' decisions a BBC repair row keeps (``sanitize_heads`` details)."""


def bbc_rows(names: list[str], variants: list[str], knobs: dict | None = None) -> list[dict]:
    """Scan each BBC zoo model as the tour does, repair it with each FFN choice in ``variants`` (plus ``knobs``,
    e.g. ``{"retain": 1.0}``) and measure on all BBC test articles."""
    import numpy as np
    import torch

    from backdoor_core import defender_data as D
    from backdoor_core import tour as T
    from backdoor_core import zoo
    from backdoor_core.data import load_dataset
    from backdoor_core.defenses import run_defense
    from backdoor_core.models import load_model
    from backdoor_core.scan import scan_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    entries = zoo.list_models(zoo.default_zoo_dir(), shipped=True)
    train, test = load_dataset("bbc", split="train"), load_dataset("bbc", split="test")
    rows = []
    for name in names:
        entry, problem = T.zoo_entry(name, entries)
        if entry is None:
            raise SystemExit(problem)
        lm = load_model(entry["path"])
        clean_ds, pool, truth = T.scan_inputs(lm, train, test)
        report = scan_model(copy.deepcopy(lm.model), lm.tokenizer, clean_ds, pool, model_name=name,
                            **{"max_length": D.model_max_length(lm), **T.scan_knobs()})
        from backdoor_core.sanitize import IGNORE_LABEL, focus_removal_labels

        L = D.model_max_length(lm)
        rates = [float(np.mean([y != IGNORE_LABEL for y in focus_removal_labels(
            lm.model, lm.tokenizer, texts, report.heads.suspicious, L)])) if len(texts) else None
                 for texts in (report.flagged_texts, T.sanitize_clean(train).texts[:100])]
        full = D.make_eval(lm, test, len(test))
        before = full(lm.model)
        row = {"zoo": "bbc", "model": name, "verdict": round(float(report.verdict["score"]), 3),
               "flagged": int(len(report.flagged)), "flagged_triggered": int(truth[report.flagged].sum()),
               "pool_triggered": int(truth.sum()), "representation_share": report.representation_share,
               "attention_missed_share": report.attention_missed_share, "suspicious_heads": len(report.suspicious_heads),
               "cacc_before": before["cacc"], "asr_before": before.get("asr"), "n_test": len(test),
               "focus_change_rates": rates, "repairs": {}}
        for ffn in variants:
            t0 = time.perf_counter()
            res = run_defense("alignment", lm.model, lm.tokenizer, T.sanitize_clean(train), pool_texts=None,
                              max_length=D.model_max_length(lm), scan=report, **{**T.sanitize_knobs(), **(knobs or {}), "ffn": ffn})
            after = full(res.model)
            row["repairs"][ffn] = {"cacc": after["cacc"], "asr": after.get("asr"), "seconds": round(time.perf_counter() - t0, 1),
                                   "ffn_layers": res.details.get("ffn_layers"),
                                   "gated_clean_accuracy": res.details.get("gated_clean_accuracy"),
                                   "gate_labels_used": res.details.get("gate_labels_used"),
                                   "heads": res.details.get("suspicious_heads"),
                                   **{k: res.details.get(k) for k in LABEL_DETAILS}}
            print(f"{name} ffn={ffn}: CACC {before['cacc']:.3f} -> {after['cacc']:.3f}, ASR {before.get('asr')} -> "
                  f"{after.get('asr')}, FFN layers {res.details.get('ffn_layers')}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def sst2_rows(paths: list[str]) -> list[dict]:
    rows = []
    for p in paths:
        d = json.loads(Path(p).read_text())
        runs = {r["model"]: r for r in d["runs"] if r["defense"] == "alignment"}
        for m in d["models"]:
            det = runs.get(m["name"], {}).get("details", {})
            rows.append({"zoo": "sst2", "model": m["name"], "verdict": round(float(m["verdict_score"]), 3),
                         "flagged": m["n_flagged"], "flagged_triggered": m["flagged_triggered"],
                         "pool_triggered": m["pool_triggered"], "representation_share": m.get("representation_share"),
                         "attention_missed_share": m.get("attention_missed_share"),
                         "suspicious_heads": len(m.get("suspicious_heads") or []),
                         "gated_clean_accuracy": det.get("gated_clean_accuracy"),
                         "focus_change_rates": det.get("focus_change_rates"),  # runs made with a recording build
                         "asr_before": m.get("asr_before"), "lift_before": m.get("lift_before"),
                         "repair": {k: runs[m["name"]].get(k) for k in ("asr_before", "asr_after", "cacc_before",
                                                                         "cacc_after", "pseudo_label_accuracy")}
                         if m["name"] in runs else None, "ffn_layers": det.get("ffn_layers"),
                         "source": Path(p).name})
    return rows


def _p(x, digits=1):
    return "-" if x is None else f"{100 * x:.{digits}f}"


def markdown(result: dict) -> str:
    from backdoor_core import settings as S
    from backdoor_core.detection import VERDICT_THRESHOLD

    md = ["# Tuning zoo: when our repair trains feed-forward blocks, and which pseudo-labels it trusts", "",
          f"`python bench/repair_rules_check.py` ({result['date']}, {result['threads']} threads). Rules: FFN repair "
          f"`auto` when the verdict found a backdoor and the attention-only detector misses >= {S.FFN_AUTO_MISSED} of its flagged inputs; safe-head "
          f"labels when switching the suspicious heads off costs <= {100 * S.GATE_MAX_ACCURACY_DROP:.0f} points of "
          "clean accuracy. Our design; papers silent.", "",
          "## Scan statistics (SST-2: `bench/defense.py` quick scans; BBC: the tour's scan)", "",
          "| zoo | model | verdict | flagged (triggered / in pool) | representation share | attention-missed share "
          "| FFN auto | clean accuracy: whole / safe heads only | focus drop changes: flagged / clean |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        reps = list(r.get("repairs", {}).values())
        gate = r.get("gated_clean_accuracy") or next((v["gated_clean_accuracy"] for v in reps
                                                      if v.get("gated_clean_accuracy")), None)
        focus = r.get("focus_change_rates") or next((v["focus_change_rates"] for v in reps
                                                     if v.get("focus_change_rates")), None)
        miss = r.get("attention_missed_share")
        auto = "-" if miss is None else ("on" if miss >= S.FFN_AUTO_MISSED and r["verdict"] >= VERDICT_THRESHOLD else "off")
        md.append(f"| {r['zoo']} | {r['model']} | {r['verdict']:.2f} | {r['flagged']} ({r['flagged_triggered']} / "
                  f"{r['pool_triggered']}) | {_v(r.get('representation_share'))} | {_v(miss)} | {auto} | "
                  f"{'-' if not gate else f'{_p(gate[0])} / {_p(gate[1])}'} | "
                  f"{'-' if not focus else f'{_p(focus[0])} / {_p(focus[1])}'} |")
    sst2 = [r for r in result["rows"] if r["zoo"] == "sst2" and r.get("repair")]
    if sst2:
        md += ["", "## SST-2: our repair under these rules (`bench/defense.py --quick`, seed 0)", "",
               "| model | FFN layers | ASR before -> after | CACC before -> after | pseudo-label acc. |",
               "|---|---|---|---|---|"]
        for r in sst2:
            rp = r["repair"]
            md.append(f"| {r['model']} | {r.get('ffn_layers') or '-'} | {_p(rp['asr_before'])} -> {_p(rp['asr_after'])} "
                      f"| {_p(rp['cacc_before'])} -> {_p(rp['cacc_after'])} | {_p(rp['pseudo_label_accuracy'])} |")
    bbc = [r for r in result["rows"] if r["zoo"] == "bbc"]
    if bbc:
        md += ["", "## BBC zoo: the tour's repair with each FFN choice (all test articles)", "",
               "Seconds are wall time on the shared 2-core CPU (other benchmarks running), not a speed measure.", "",
               "| model | FFN | layers | CACC before -> after | ASR before -> after | seconds |", "|---|---|---|---|---|---|"]
        for r in bbc:
            for ffn, v in r["repairs"].items():
                md.append(f"| {r['model']} | {ffn} | {v['ffn_layers'] or '-'} | {_p(r['cacc_before'])} -> {_p(v['cacc'])} "
                          f"| {_p(r['asr_before'])} -> {_p(v['asr'])} | {v['seconds']} |")
    return "\n".join(md) + "\n"


def _v(x):
    return "-" if x is None else f"{x:.2f}"


def write_results(stem: str, result: dict, md: str) -> None:
    """``bench/results/<stem>.json`` and ``.md``, each written atomically; the table is printed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(result, indent=2, default=float) + "\n"), (".md", md)):
        write_text(RESULTS / f"{stem}{suffix}", text)
    print(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="badnets-tal,addsent", help="BBC zoo models to scan and repair")
    ap.add_argument("--variants", default="auto,none,suspicious", help="FFN choices to repair with")
    ap.add_argument("--sst2", default="", help="comma-separated defense.py JSON files of SST-2 tuning-zoo runs")
    ap.add_argument("--render", action="store_true", help="rewrite the files from the last run's BBC rows (no run)")
    args = ap.parse_args()
    rows = sst2_rows([p for p in args.sst2.split(",") if p])
    if args.render:  # re-render: the BBC rows of the last run, the SST-2 rows from --sst2
        result = json.loads((RESULTS / "repair_rules_tuning.json").read_text())
        result["rows"] = rows + [r for r in result["rows"] if r["zoo"] == "bbc"]
    else:
        rows += bbc_rows([m for m in args.models.split(",") if m], [v for v in args.variants.split(",") if v])
        import torch

        result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads(), "rows": rows}
    write_results("repair_rules_tuning", result, markdown(result))


if __name__ == "__main__":
    main()
