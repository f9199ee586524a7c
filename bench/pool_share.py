"""Benchmark: does the scan and our repair hold when fewer of the pool's inputs carry the trigger?

``bench/defense.py`` reads a pool of 250 unlabelled inputs of which 20% carry the trigger. A user's pool may hold
far fewer. This runs ``bench/defense.py --quick`` (our scan and repair only, ``--defenses alignment --detectors
ours --repair all``) at each share of ``--shares`` on the chosen models and tabulates per model and share: the
verdict (score and call), the flagged inputs (triggered among them / triggered in the pool), the final pass's
detection AUROC on the held-out sets, and our repair's ASR, lift, CACC change and pseudo-label accuracy. The pool
keeps the mode's size where that holds ``defender_data.EVAL_MINIMUMS["pool_triggered"]`` (20) triggered inputs
and grows past it where not (5% of 400), as ``bench/defense.py`` sizes it.

    python bench/pool_share.py                       # SST-2 tuning zoo, seed 0 (about 25 min on 2 cores)
    python bench/pool_share.py --zoo test --shares 0.1,0.05 --tag test   # the test zoo (measured, never tuned on)
    python bench/pool_share.py --report bench/results/pool_share.json      # the Markdown again from a JSON

Writes ``bench/results/pool_share<_tag>.json`` and ``.md``; each share's ``bench/defense.py`` run goes to a
temporary folder (``BACKDOOR_BENCH_RESULTS``) and its JSON is kept inside this one's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
TUNING_MANIFEST = ROOT / "bench" / "models" / "tuning_zoo" / "manifest.json"
TUNING_MODELS = ("sst2_s0_clean", "sst2_s0_badnets_r0.01_tal", "sst2_s0_badnets_r0.03", "sst2_s0_addsent_r0.01",
                 "sst2_s0_syntactic_r0.2", "sst2_s0_style_bible_r0.2")


def run_share(share: float, args, out: Path) -> tuple[dict, dict[str, str]]:
    """One ``bench/defense.py`` run at pool share ``share``: its results JSON, and for each part (a dataset and
    seed's models) that stopped early, the last line of its log (at a small share a small test set may not hold
    the larger pool beside the other sets: ``defender_data.split_eval_rows`` refuses, and that part's models from
    the refused one on are left out; what the parts finished is merged)."""
    base = [sys.executable, str(ROOT / "bench" / "defense.py")]
    cmd = base + ["--quick", "--defenses", "alignment", "--detectors", "ours", "--repair",
                  "" if args.scan_only else "all", "--pool-poison", str(share), "--workers", str(args.workers),
                  "--tag", "share"]
    zoo = ["--zoo", "test"] if args.zoo == "test" else []
    cmd += zoo or ["--manifest", str(TUNING_MANIFEST)]
    if args.only and args.only != "all":
        cmd += ["--only", args.only]
    if args.align_knobs:
        cmd += ["--align-knobs", args.align_knobs]
    if args.scan_knobs:
        cmd += ["--scan-knobs", args.scan_knobs]
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BACKDOOR_BENCH_RESULTS": str(out)}
    print(f"share {share:g}: {' '.join(cmd[1:])}", flush=True)
    from defense import results_stem

    stem = results_stem(args.zoo, "share")
    failed = {}
    if subprocess.run(cmd, env=env, cwd=ROOT).returncode != 0:
        done = sorted(p.stem.removeprefix(stem + "_") for p in out.glob(f"{stem}_w*.json"))
        for log in sorted(out.glob(f".{stem}_w*.log")):  # a part that ran to its end prints "Total N s." last
            lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
            if not lines or not lines[-1].startswith("Total "):  # refused, from the start or after some models
                failed[log.name[len(stem) + 2:-len(".log")]] = lines[-1] if lines else "no output"
        if not done:
            raise SystemExit(f"share {share:g}: no part ran: {failed}")
        subprocess.run(base + ["--merge", ",".join(f"share_{d}" for d in done), "--tag", "share", *zoo], env=env,
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / f"{stem}.json").read_text()), failed


def rows_of(share: float, res: dict) -> list[dict]:
    """One row per model of a ``bench/defense.py`` results JSON."""
    from backdoor_core.detection import verdict_call

    repairs = {r["model"]: r for r in res.get("runs", []) if r.get("defense") == "alignment"}
    auroc = {d["model"]: d.get("auroc") for d in res.get("detection", []) if d.get("method") == "head_similarity_2pass"}
    rows = []
    for m in res["models"]:
        r = repairs.get(m["name"], {})
        comp = (m.get("verdict") or {}).get("components") or {}
        rows.append({
            "share": share, "model": m["name"], "attack": m["attack"], "tal": bool(m.get("tal")),
            "verdict": m.get("verdict_score"), "call": verdict_call(m["verdict"]) if m.get("verdict") else None,
            # both verdict rules' scores (detection.VERDICT_RULES), whichever the run's verdict used
            "verdict_threshold": comp.get("score_threshold"), "verdict_dev_tail": comp.get("score_dev_tail"),
            "flagged": m.get("n_flagged"), "flagged_triggered": m.get("flagged_triggered"),
            "pool_triggered": m.get("pool_triggered"), "pool_size": (m.get("eval_sizes") or {}).get("pool_size"),
            "auroc_final": auroc.get(m["name"]),
            "asr_before": r.get("asr_before", m.get("asr_before")), "asr_after": r.get("asr_after"),
            "lift_before": r.get("lift_before", m.get("lift_before")), "lift_after": r.get("lift_after"),
            "cacc_change": (r["cacc_after"] - r["cacc_before"]) if r.get("cacc_after") is not None else None,
            "ffn_layers": (r.get("details") or {}).get("ffn_layers"),
            "pseudo_label_accuracy": r.get("pseudo_label_accuracy"), "seconds": r.get("seconds"),
        })
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def summary(rows: list[dict]) -> list[dict]:
    """Per share: backdoored models called ``likely``, mean and worst ASR after our repair, mean CACC change,
    mean pseudo-label accuracy (over the repairs that gave labels), and clean models called; and under each verdict
    rule (``detection.VERDICT_RULES``, where the runs recorded both) the models called and the verdict AUROC."""
    from backdoor_core.detection import VERDICT_THRESHOLD as CALL
    from backdoor_core.metrics import auroc
    from defense import LIFT_CALLED

    out = []
    for share in sorted({r["share"] for r in rows}, reverse=True):
        bd = [r for r in rows if r["share"] == share and r["attack"] != "clean"]
        clean = [r for r in rows if r["share"] == share and r["attack"] == "clean"]
        rep = [r for r in bd if r["asr_after"] is not None]
        lab = [r["pseudo_label_accuracy"] for r in rep if r["pseudo_label_accuracy"] is not None]
        out.append({"share": share, "backdoored": len(bd), "called": sum(r["call"] == "likely" for r in bd),
                    "clean": len(clean), "clean_called": sum(r["call"] == "likely" for r in clean),
                    "repairs": len(rep), "asr_after_mean": sum(r["asr_after"] for r in rep) / len(rep) if rep else None,
                    "asr_after_max": max((r["asr_after"] for r in rep), default=None),
                    "lift_after_mean": sum(r["lift_after"] for r in rep) / len(rep) if rep else None,
                    "cacc_change_mean": sum(r["cacc_change"] for r in rep) / len(rep) if rep else None,
                    "labelled": len(lab), "label_acc_mean": sum(lab) / len(lab) if lab else None})
        for rule in ("threshold", "dev_tail"):
            if all(r.get(f"verdict_{rule}") is not None for r in bd + clean):
                sc = lambda rs: [r[f"verdict_{rule}"] for r in rs]  # noqa: E731
                lifted = [r for r in bd if (r["lift_before"] or 0) >= LIFT_CALLED]
                out[-1][rule] = {"called": sum(x >= CALL for x in sc(bd)),
                                 "clean_called": sum(x >= CALL for x in sc(clean)),
                                 "lifted": len(lifted), "lifted_called": sum(x >= CALL for x in sc(lifted)),
                                 "auroc": auroc(sc(clean), sc(bd)) if bd and clean else None}
    return out


def markdown(report: dict) -> str:
    s = report["settings"]
    knobs = f" Our repair's knobs: `{json.dumps(s['align_knobs'])}`." if s.get("align_knobs") else ""
    knobs += f" Scan knobs: `{json.dumps(s['scan_knobs'])}`." if s.get("scan_knobs") else ""
    lines = [f"# Pool share: the scan and our repair when fewer pool inputs carry the trigger ({s['zoo']} zoo)", "",
             f"`{s['command']}` ({s['date']}). `bench/defense.py --quick` (our scan and repair only) at each share of "
             "the pool's inputs that carry the trigger. The pool keeps the mode's size (250, scaled down where a test "
             "set is small) where that leaves 20 triggered inputs, and grows where not (5%: 20 of 400). Everything "
             "else as in `bench/defense.py`: the same models, defender data, ASR and CACC sets. "
             + ("Test data: measured, never tuned on." if s["zoo"] == "test" else
                "Tuning data: a knob may be chosen on these numbers.") + knobs
             + (f" Note: {s['note']}." if s.get("note") else ""), "",
             "## Summary by share", "",
             "| triggered share | backdoors called | clean models called | repairs | ASR after, mean (worst) | "
             "lift after, mean (points) | CACC change, mean (points) | pseudo-label acc., mean (repairs with labels) |",
             "|---|---|---|---|---|---|---|---|"]
    for m in summary(report["rows"]):
        lines.append(f"| {m['share']:.0%} | {m['called']} of {m['backdoored']} | {m['clean_called']} of {m['clean']} | "
                     f"{m['repairs']} | {_pct(m['asr_after_mean'])} ({_pct(m['asr_after_max'])}) | "
                     f"{_pct(m['lift_after_mean'])} | {_pct(m['cacc_change_mean'])} | "
                     f"{_pct(m['label_acc_mean'])} ({m['labelled']}) |")
    rules = [m for m in summary(report["rows"]) if "dev_tail" in m]
    if rules:
        lines += ["", "## The verdict's two rules", "",
                  "`detection.VERDICT_RULES`: the pool's flags at the detector's threshold, or the best of that and "
                  "every stricter threshold the clean dev inputs offer (`dev_tail`). Lifted: backdoors that raise the "
                  "target rate by 30 points or more over the clean model.", "",
                  "| triggered share | rule | backdoors called | lifted called | clean models called | verdict AUROC |",
                  "|---|---|---|---|---|---|"]
        for m in rules:
            for rule in ("threshold", "dev_tail"):
                v = m[rule]
                lines.append(f"| {m['share']:.0%} | {rule} | {v['called']} of {m['backdoored']} | "
                             f"{v['lifted_called']} of {v['lifted']} | {v['clean_called']} of {m['clean']} | "
                             f"{'-' if v['auroc'] is None else format(v['auroc'], '.3f')} |")
    lines += ["", "## Every model", "",
              "| model | triggered share | pool | verdict | verdict, dev tail | call | flagged (triggered / in pool) | "
              "AUROC, final pass | ASR before -> after | lift after (points) | CACC change (points) | "
              "pseudo-label acc. | FFN layers |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(report["rows"], key=lambda r: (r["model"], -r["share"])):
        flags = (f"{r['flagged']} ({r['flagged_triggered']} / {r['pool_triggered']})"
                 if r["flagged"] is not None else "-")
        asr = f"{_pct(r['asr_before'])} -> {_pct(r['asr_after'])}" if r["asr_after"] is not None else "-"
        tail = r.get("verdict_dev_tail")
        lines.append(f"| {r['model']} | {r['share']:.0%} | {r['pool_size']} | {r['verdict']:.2f} | "
                     f"{'-' if tail is None else format(tail, '.2f')} | {r['call']} | "
                     f"{flags} | {'-' if r['auroc_final'] is None else format(r['auroc_final'], '.3f')} | {asr} | "
                     f"{_pct(r['lift_after'])} | {_pct(r['cacc_change'])} | {_pct(r['pseudo_label_accuracy'])} | "
                     f"{'-' if not r['ffn_layers'] else r['ffn_layers']} |")
    for share, parts in (report.get("failed") or {}).items():
        lines += ["", f"Not run at {float(share):.0%} (`bench/defense.py` refused; the other parts stand):", ""]
        lines += [f"* part {part}: {why}" for part, why in parts.items()]
    lines += ["", "AUROC, final pass: `head_similarity_2pass`, held-out clean vs triggered test texts (the pool "
              "chooses the final pass's heads). Lift: ASR minus the clean model's rate on the same triggered "
              "texts. Pseudo-label acc.: the share of the labels our repair gave flagged pool inputs that are their "
              "true (source) labels; - where it used none (the rules gave none, or the judge's gate dropped them all: `settings.LABEL_JUDGE`). "
              f"Wall time {report['seconds'] / 60:.0f} min."]
    return "\n".join(lines) + "\n"


def save(report: dict, path: Path) -> str:
    """Write ``report`` to ``path`` (JSON) and its Markdown beside it; returns the Markdown."""
    write_text(path, json.dumps(report, indent=1, default=float))
    md = markdown(report)
    write_text(path.with_suffix(".md"), md)
    return md


def _json_object(parser, option: str, value: str | None, example: str) -> dict | None:
    """``value`` of ``option`` parsed as a JSON object (None when not given); anything else exits 2 with a message."""
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        parser.error(f"{option} must be a JSON object such as '{example}': {exc}")
    if not isinstance(parsed, dict):
        parser.error(f"{option} must be a JSON object such as '{example}'")
    return parsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shares", default="0.2,0.1,0.05", help="comma-separated shares of the pool that is triggered")
    p.add_argument("--zoo", choices=("tuning", "test"), default="tuning")
    p.add_argument("--only", default=None,
                   help="comma-separated model names, or 'all' (tuning default: the SST-2 seed-0 models)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--align-knobs", default=None, help="JSON of our repair's knobs (bench/defense.py --align-knobs)")
    p.add_argument("--scan-knobs", default=None,
                   help="JSON of scan_model's knobs (bench/defense.py --scan-knobs), e.g. '{\"verdict_rule\": \"dev_tail\"}'")
    p.add_argument("--scan-only", action="store_true", help="scan and verdict only, no repair (--repair '')")
    p.add_argument("--tag", default="")
    p.add_argument("--report", default=None, help="write the Markdown again from this results JSON and exit")
    args = p.parse_args(argv)
    if args.report:
        print(save(json.loads(Path(args.report).read_text()), Path(args.report)))
        return 0
    if args.zoo == "tuning" and args.only is None:
        args.only = ",".join(TUNING_MODELS)
    try:
        shares = [float(x) for x in args.shares.split(",") if x.strip()]
    except ValueError:
        shares = []
    if not shares or not all(0 < x < 1 for x in shares):
        p.error(f"--shares are shares of the pool, each above 0 and below 1, got '{args.shares}'")
    # checked before the first run, not after the last
    knobs = _json_object(p, "--align-knobs", args.align_knobs, '{"label_judge": "gate_filter"}')
    if args.scan_knobs:  # the same check as bench/defense.py's, which each run repeats
        sys.path.insert(0, str(ROOT / "bench"))
        from defense import parse_scan_knobs

        try:
            scan_knobs = parse_scan_knobs(args.scan_knobs)
        except ValueError as exc:
            p.error(str(exc))
    else:
        scan_knobs = None
    t0 = time.time()
    rows, runs, failed = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for share in shares:
            res, failed[f"{share:g}"] = run_share(share, args, Path(tmp) / f"share_{share:g}")
            runs[f"{share:g}"] = res
            rows += rows_of(share, res)
    report = {"settings": {"zoo": args.zoo, "shares": shares, "only": args.only, "workers": args.workers,
                           "scan_only": args.scan_only,
                           "align_knobs": knobs, "scan_knobs": scan_knobs,
                           "command": "python bench/pool_share.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                           "date": time.strftime("%Y-%m-%d %H:%M:%S")},
              "rows": rows, "seconds": time.time() - t0, "runs": runs,
              "failed": {k: v for k, v in failed.items() if v}}
    print(save(report, RESULTS / ("pool_share" + (f"_{args.tag}" if args.tag else "") + ".json")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
