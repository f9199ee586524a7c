"""Tuning-zoo check of one knob of our repair (our design, papers silent), on the SST-2 tuning models and the
shipped BBC demo zoo, the only models it may be chosen on. Two knobs aimed at the clean accuracy a repair loses
(most when feed-forward blocks train too) without giving the backdoor back:

* ``retain`` (``settings.RETAIN_WEIGHT``, ``sanitize.RetentionLoss``): keep the repaired model's outputs on the
  defender's clean inputs close to the unrepaired model's;
* ``ffn_lr_scale`` (``settings.REPAIR_FFN_LR_SCALE``): the feed-forward blocks learn at a fraction of the heads' lr.

BBC part (run here): each zoo model is scanned and repaired as the guided tour does (``repair_rules_check.bbc_rows``)
with each FFN choice of ``--variants`` and each value of ``--values``; CACC on all BBC test articles, ASR on all
of their non-target rows with the trigger. SST-2 part (read, not run): our repair's rows of ``bench/defense.py``
runs on the SST-2 tuning zoo, one list of JSON files per value (``--sst2 0=a.json,b.json --sst2 1=c.json``).

    python bench/knob_tuning.py --knob retain --values 0 --variants suspicious \
        --sst2 0=bench/results/archive/defense_repair_rules_a.json,bench/results/archive/defense_repair_rules_b.json \
        --sst2 1=bench/results/archive/defense_retain1.json

The pseudo-label direction filter (``labels_leave_target``, ``settings.LABELS_LEAVE_TARGET``) aims at weak
backdoors, which the tuning zoo lacked; four weak SST-2 BadNets models were built for it (results in
``bench/results/archive/attack_tal_weak_*.json``) and run through ``bench/defense.py`` with the filter off and on:

    python bench/attack_tal.py --data sst2 --target 0 --only badnets --rates 0.02 --no-tal --tag weak_t0  # and
    #   --target 1 (weak_t1), --rates 0.025 (weak_t0b, weak_t1b); an explicit --target names the model (_t0)
    python bench/defense.py --manifest M --defenses alignment --detectors ours --repair all --tag xdir1  # off
    python bench/defense.py --manifest M --defenses alignment --detectors ours --repair all --tag lt1 \
        --align-knobs '{"labels_leave_target": true}'
    python bench/knob_tuning.py --knob labels_leave_target --values 0,1 --variants auto \
        --models badnets,badnets-2,badnets-tal,addsent --sst2 0=defense_xdir1.json --sst2 1=defense_lt1.json

(``M``: a manifest of the SST-2 tuning models plus the weak ones; ``python bench/test_zoo.py --zoo tuning``
now builds exactly those, ``bench/models/tuning_zoo/manifest.json``.)

The weak-evidence cap (``weak_top_k``, ``settings.WEAK_TOP_K``: repair only the k best heads when the verdict is
below ``settings.WEAK_VERDICT``) on the same models, with the cap forced on at 4:

    python bench/defense.py --manifest M --defenses alignment --detectors ours --repair all --tag wk \
        --align-knobs '{"weak_top_k": 4}'
    python bench/knob_tuning.py --knob weak_top_k --values 0,4 --variants auto \
        --models badnets,badnets-2,badnets-tal,addsent --sst2 0=defense_xdir1.json --sst2 4=defense_wk.json

and on two SST-2 style models added to the tuning zoo later (``bench/attack_tal.py --only style_shakespeare``,
``--only style_tweets``; their runs ``defense_sd0`` and ``defense_sd4``, with ``'{"weak_top_k": 4}'``), re-rendered
with ``--render --sst2 0=defense_xdir1.json,defense_sd0.json --sst2 4=defense_wk.json,defense_sd4.json``.

The scan's first pass (``first_pass_head``, ``settings.FIRST_PASS``: 1 = per head, 0 = per layer) is a scan knob,
so the BBC part does not run it (``--values`` empty); the SST-2 tuning models whose scan it changed, repaired both
ways with the same one-thread draw (seed 0):

    python bench/defense.py --manifest bench/models/tuning_zoo/manifest.json --defenses alignment \
        --detectors ours --only <models> --tag s40rbase              # and --tag s40rhead with
    #   --scan-knobs '{"first_pass_kind": "head"}'
    python bench/knob_tuning.py --knob first_pass_head --sst2 0=bench/results/archive/defense_s40rbase.json \
        --sst2 1=bench/results/archive/defense_s40rhead.json

The scan's representation part (``rep_method_both``, ``settings.REP_METHOD``: 1 = distance + pool contrast behind
the source gate, 0 = the distance alone) is a scan knob too; the whole tuning zoo repaired both ways, each seed
group in its own one-thread process with its own draw (``--workers 2``):

    python bench/defense.py --quick --manifest bench/models/tuning_zoo/manifest.json --defenses alignment \
        --detectors ours --repair all --workers 2 --scan-knobs '{"rep_method": "mahalanobis"}' --tag s41dist
    #   and --scan-knobs '{"rep_method": "both"}' --tag s41both
    python bench/knob_tuning.py --knob rep_method_both --sst2 0=bench/results/archive/defense_s41dist.json \
        --sst2 1=bench/results/archive/defense_s41both.json

The fewest heads repaired (``min_heads``, ``settings.REPAIR_MIN_HEADS``): the SST-2 tuning models whose scan names
fewer heads than a value, repaired at 4, 6 and 8 (``--only <them> --align-knobs '{"min_heads": 4}' --tag s43mh4``,
and so on); each value's other models keep the rows of the knob-off run, read after the value's own file:

    python bench/knob_tuning.py --knob min_heads --values 0,4 --variants auto \
        --models badnets-tal,addsent,badnets-2,badnets --sst2 0=A/defense_s41both_w0.json,A/defense_s41both_w1.json \
        --sst2 4=A/defense_s43mh4.json,<the same two> --sst2 6=... --sst2 8=... --sst2-only <the ten models>

(``A``: ``bench/results/archive``.)

The most heads a head-only repair trains (``head_only_max_heads``, ``settings.REPAIR_HEAD_ONLY_MAX_HEADS``): the
SST-2 tuning models whose repair trains no feed-forward block and more heads than a value, repaired at 4, 6, 8 and
12 (``--only <them> --align-knobs '{"head_only_max_heads": 4}' --tag s46c4``, and so on) and at the defaults
(``--tag s46b0``); each value's other models keep the published rows, read after the value's own file:

    python bench/knob_tuning.py --knob head_only_max_heads \
        --sst2 0=A/defense_s46b0.json,bench/results/defense_tuning.json --sst2 4=A/defense_s46c4.json,<the same> \
        --sst2 6=... --sst2 8=... --sst2 12=... --sst2-only <the ten models>

Writes bench/results/knob_tuning_<knob>.json and .md and prints the table.
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()


def sst2_rows(spec: list[str], only: set[str] | None = None) -> list[dict]:
    """Our repair's rows of the SST-2 runs, per knob value (``"v=a.json,b.json"`` items); ``only``: these models.
    A model already read for a value is skipped (the first file wins): a run of the models a value changes,
    followed by the full run whose rows it leaves as they were."""
    rows = []
    for item in spec:
        value, paths = item.split("=", 1)
        seen = set()
        for p in [q for q in paths.split(",") if q]:
            d = json.loads(Path(p).read_text())
            verdicts = {m["name"]: m.get("verdict_score") for m in d.get("models", [])}
            for r in d["runs"]:
                if r["defense"] != "alignment" or (only and r["model"] not in only) or r["model"] in seen:
                    continue
                seen.add(r["model"])
                rows.append({"zoo": "sst2", "model": r["model"], "value": float(value),
                             "ffn_layers": r["details"].get("ffn_layers"), "cacc_before": r["cacc_before"],
                             "cacc_after": r["cacc_after"], "asr_before": r["asr_before"], "asr_after": r["asr_after"],
                             "pseudo_label_accuracy": r.get("pseudo_label_accuracy"),
                             "suspected_target": r["details"].get("suspected_target"),
                             "focus_shift": r["details"].get("focus_shift"), "source": Path(p).name,
                             "verdict": verdicts.get(r["model"]),
                             "heads": len(r["details"].get("suspicious_heads") or [])})
    return rows


def bbc_rows(names: list[str], variants: list[str], knob: str, values: list[float]) -> list[dict]:
    from repair_rules_check import LABEL_DETAILS, bbc_rows as scan_and_repair

    rows = []
    for w in values:
        for r in scan_and_repair(names, variants, {knob: w}):
            for ffn, rep in r["repairs"].items():
                rows.append({"zoo": "bbc", "model": r["model"], "value": w, "ffn": ffn,
                             "ffn_layers": rep["ffn_layers"], "cacc_before": r["cacc_before"], "cacc_after": rep["cacc"],
                             "asr_before": r["asr_before"], "asr_after": rep["asr"], "seconds": rep["seconds"],
                             "verdict": r.get("verdict"), "heads": len(rep.get("heads") or []) or None,
                             **{k: rep.get(k) for k in LABEL_DETAILS}})
    return rows


def _p(x):
    return "-" if x is None else f"{100 * x:.1f}"


def _direction(shift) -> str:
    """The class the focus tokens push toward most (``FocusRemoval.shift``'s argmax), with that shift."""
    if not shift:
        return "-"
    k = max(range(len(shift)), key=lambda i: shift[i])
    return f"{k} ({shift[k]:+.2f})"


def markdown(result: dict) -> str:
    rows = result["rows"]
    values = sorted({r["value"] for r in rows})
    knob = result["knob"]
    what = {"retain": "the weight of the clean-output retention term (`sanitize.RetentionLoss`: KL from the "
                      "unrepaired model's probabilities on the defender's clean labelled inputs; 0 = without it)",
            "ffn_lr_scale": "the feed-forward blocks' lr as a share of the heads' (`settings.REPAIR_FFN_LR_SCALE`; "
                            "1 = the same lr)",
            "exclude_direction": "the direction guard of the target-exclusion labels (`settings.EXCLUDE_DIRECTION`, "
                                 "`sanitize.target_exclusion_labels`: relabel only when the suspected target is the "
                                 "class the suspicious heads' focus tokens push toward; 1 = on, 0 = off)",
            "labels_leave_target": "the filter on the safe-head and focus-removal pseudo-labels "
                                   "(`settings.LABELS_LEAVE_TARGET`, `sanitize.leave_target_only`: keep a label only "
                                   "when it takes an input out of the class the focus tokens push toward; 1 = on, "
                                   "0 = off)",
            "weak_top_k": "the heads our repair trains when the scan's verdict is below `settings.WEAK_VERDICT` "
                          "(`head_safety.repair_heads`: the k highest-scoring heads; 0 = the scan's suspicious set)",
            "min_heads": "the fewest heads our repair trains (`settings.REPAIR_MIN_HEADS`, `head_safety.repair_heads`: "
                         "a smaller suspicious set is widened to the k highest-scoring heads; 0 = the scan's set)",
            "head_only_max_heads": "the most heads a repair that trains no feed-forward block trains "
                                   "(`settings.REPAIR_HEAD_ONLY_MAX_HEADS`, `head_safety.cap_heads`: the k "
                                   "highest-scoring of its set; 0 = no cap)",
            "first_pass_head": "the scan's first pass (`settings.FIRST_PASS`, `detection.first_pass_detector`), "
                               "which sets the flags and heads the repair starts from: 0 = each layer's mean focus, "
                               "1 = every head's own focus (max over heads)",
            "rep_method_both": "the scan's representation part (`settings.REP_METHOD`, "
                               "`detection.representation_detector`), which sets the flags, the heads and the FFN "
                               "rule the repair starts from: 0 = the Mahalanobis distance of the [CLS] states alone, "
                               "1 = that distance plus the pool-vs-clean contrast, behind its source gate "
                               "(`settings.CONTRAST_SOURCE_GATE`)"
            }.get(knob, knob)
    md = [f"# Tuning zoo: `{knob}`", "",
          f"`python bench/knob_tuning.py --knob {knob}` ({result['date']}"
          + (f"; BBC repairs at {result['threads']} threads" if any(r["zoo"] == "bbc" for r in rows) else
             "; SST-2 rows only, read from one-thread `bench/defense.py` runs")
          + f"). Our repair at each value of {what}. Our design; papers silent.", "",
          "## Mean over the tuning models", "",
          "| zoo | repairs | value | CACC change (points) | worst CACC change | ASR after (%) | worst ASR after |",
          "|---|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        key = (r["zoo"], r.get("ffn", "auto (benchmark)"))
        groups.setdefault(key, {}).setdefault(r["value"], []).append(r)
    for (zoo, ffn), by_w in sorted(groups.items()):
        for w in values:
            rs = by_w.get(w, [])
            if not rs:
                continue
            d = [100 * (r["cacc_after"] - r["cacc_before"]) for r in rs]
            a = [100 * r["asr_after"] for r in rs if r["asr_after"] is not None]
            md.append(f"| {zoo} | FFN {ffn} (n={len(rs)}) | {w:g} | {sum(d) / len(d):+.1f} | {min(d):+.1f} | "
                      f"{sum(a) / max(len(a), 1):.1f} | {max(a) if a else float('nan'):.1f} |")
    md += ["", "## Every repair", "",
           "| zoo | model | verdict | FFN | value | heads repaired | FFN layers | CACC before -> after | "
           "ASR before -> after | pseudo-label acc. (%) | focus tokens' class |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["zoo"], r["model"], r.get("ffn", ""), r["value"])):
        layers = r.get("ffn_layers") or "-"
        verdict = "-" if r.get("verdict") is None else f"{r['verdict']:.2f}"
        md.append(f"| {r['zoo']} | {r['model']} | {verdict} | {r.get('ffn', 'auto')} | {r['value']:g} | "
                  f"{r.get('heads') or '-'} | {layers} | "
                  f"{_p(r['cacc_before'])} -> {_p(r['cacc_after'])} | {_p(r['asr_before'])} -> {_p(r['asr_after'])} | "
                  f"{_p(r.get('pseudo_label_accuracy'))} | {_direction(r.get('focus_shift'))} |")
    md += ["", "BBC: the tour's scan and one-epoch repair (`tour.sanitize_knobs`), measured on all test articles. "
               "SST-2: one-thread `bench/defense.py --quick` runs (3 epochs), FFN by the `auto` rule.", ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="badnets-tal,addsent,badnets-2", help="BBC zoo models to scan and repair")
    ap.add_argument("--variants", default="auto,suspicious", help="FFN choices to repair with")
    ap.add_argument("--knob", choices=("retain", "ffn_lr_scale", "exclude_direction", "labels_leave_target",
                                       "weak_top_k", "min_heads", "first_pass_head", "rep_method_both",
                                       "head_only_max_heads"),
                    required=True)
    ap.add_argument("--values", default="", help="comma-separated values to repair the BBC models with")
    ap.add_argument("--sst2", action="append", default=[], help="v=a.json,b.json: defense.py runs at value v")
    ap.add_argument("--sst2-only", default="", help="comma-separated SST-2 models to keep (e.g. those with FFN "
                                                    "repair, the only ones ffn_lr_scale acts on)")
    ap.add_argument("--render", action="store_true", help="rewrite the files from the last run's BBC rows (no run)")
    args = ap.parse_args()
    rows = sst2_rows(args.sst2, {m for m in args.sst2_only.split(",") if m})
    if args.render:  # re-render: the BBC rows of the last run, the SST-2 rows from --sst2
        result = json.loads((RESULTS / f"knob_tuning_{args.knob}.json").read_text())
        result["rows"] = rows + [r for r in result["rows"] if r["zoo"] == "bbc"]
    else:
        import torch

        rows += bbc_rows([m for m in args.models.split(",") if m], [v for v in args.variants.split(",") if v],
                         args.knob, [float(w) for w in args.values.split(",") if w])
        result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads(), "knob": args.knob,
                  "rows": rows}
    from repair_rules_check import write_results

    write_results(f"knob_tuning_{args.knob}", result, markdown(result))


if __name__ == "__main__":
    main()
