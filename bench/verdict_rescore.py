"""Re-score dumped verdict inputs under each of the model verdict's knobs, without scanning again.

``bench/defense.py``, ``bench/verdict_chance.py`` and ``bench/pool_shift_check.py`` write, with ``--dump-scores DIR``,
each scan's final-pass verdict inputs (``defense.dump_verdict_inputs``: clean dev and pool scores, the pool's
predictions, the threshold). The verdict is a function of those alone, so this reads every dump of each folder
again through ``detection.model_verdict`` under each knob setting (``--rules``: the verdict's rule, and whether the
pool's threshold is raised by its shift where the pool reads as another source, ``settings.VERDICT_SHIFT_ADJUST``;
``+words``: the pool's marking words score too, ``settings.VERDICT_WORDS``, from dumps that record them)
and tabulates per folder: the pools of clean models called; those of backdoored models with triggered inputs
called (all, and those whose backdoor lifts the target rate by ``defense.LIFT_CALLED`` or more); those of
backdoored models without any (another source's texts only) called; the verdict AUROC, backdoors with triggered
inputs against clean models, where a folder holds both; and every pool whose call a knob changes.

    python bench/verdict_rescore.py DIR[=LABEL] [DIR[=LABEL] ...] [--rules threshold,threshold+shift]
                                    [--lifts bench/results/defense_tuning.json] [--tag T]

Writes ``bench/results/verdict_rescore[_T].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
RULES = ("threshold", "threshold+shift", "dev_tail", "dev_tail+shift", "threshold+words", "threshold+shift+words")


def load_dumps(folder: Path) -> list[dict]:
    """Every ``*.npz`` dump of ``folder``, sorted by name, as ``{"name", "model", "backdoored", "lift",
    "n_triggered", arrays...}``."""
    import numpy as np

    out = []
    for f in sorted(folder.glob("*.npz")):
        try:
            with np.load(f) as d:  # no pickles: allow_pickle stays off
                arrays = {k: d[k] for k in d.files if k != "meta"}
                meta = json.loads(str(d["meta"]))
            missing = sorted({"clean_dev_scores", "pool_scores", "pool_predictions", "pool_triggered", "threshold",
                              "num_labels"} - set(arrays))
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{f}: not a --dump-scores file ({exc})") from exc
        if missing:
            raise ValueError(f"{f}: not a --dump-scores file (no {', '.join(missing)})")
        attack = meta.get("attack")
        backdoored = bool(meta["backdoored"]) if "backdoored" in meta else attack not in (None, "clean")
        out.append({**arrays, "name": meta.get("name", f.stem), "model": meta.get("model", meta.get("name")),
                    "backdoored": backdoored, "lift": meta.get("lift_before"),
                    "marking_words": meta.get("marking_words") or [], "marking_flip": meta.get("marking_flip"),
                    "n_triggered": int(arrays["pool_triggered"].sum())})
    return out


def rescore(dump: dict, rule: str) -> dict:
    """``detection.model_verdict`` of one dump under ``rule`` ("threshold" or "dev_tail"; "+shift" for the shift
    adjustment, "+words" for the pool's marking words' score, ``detection.with_trigger_words``, where the dump
    records them: ``marking_words`` and ``marking_flip`` in its meta)."""
    from types import SimpleNamespace

    from backdoor_core.detection import model_verdict, with_trigger_words

    base, *mods = rule.split("+")
    v = model_verdict(SimpleNamespace(threshold=float(dump["threshold"])), dump["clean_dev_scores"],
                      dump["pool_scores"], dump["pool_predictions"], int(dump["num_labels"]), rule=base,
                      shift_adjust="shift" in mods)
    if "words" in mods:
        if dump.get("marking_flip") is None:
            raise ValueError(f"{dump['name']}: the dump records no marking words' flip rate (dumped before "
                             "`+words` could be re-scored)")
        v = with_trigger_words(v, dump["marking_words"], dump["marking_flip"], lift=True)
    return v


def summarise(groups: dict[str, list[dict]], rules: list[str]) -> dict:
    import numpy as np

    from defense import LIFT_CALLED
    from backdoor_core.detection import VERDICT_THRESHOLD

    table, pools = [], []
    for label, dumps in groups.items():
        scores = {r: [] for r in rules}
        for d in dumps:
            row = {"group": label, "name": d["name"], "backdoored": d["backdoored"], "lift": d["lift"],
                   "pool": int(len(d["pool_scores"])), "pool_triggered": d["n_triggered"]}
            for r in rules:
                v = rescore(d, r)
                scores[r].append(v["score"])
                row[r] = round(float(v["score"]), 4)
                row["rank"] = round(float(v["components"]["pool_lower_quartile_rank"]), 3)
                row["unlike"] = v["pool_unlike_clean"]
            pools.append(row)
        bd = np.asarray([d["backdoored"] and d["n_triggered"] > 0 for d in dumps], bool)
        quiet = np.asarray([d["backdoored"] and d["n_triggered"] == 0 for d in dumps], bool)
        clean = np.asarray([not d["backdoored"] for d in dumps], bool)
        lifted = bd & np.asarray([(d["lift"] or 0) >= LIFT_CALLED for d in dumps], bool)
        for r in rules:
            s = np.asarray(scores[r], float)
            called = s >= VERDICT_THRESHOLD
            auroc = None
            if bd.any() and clean.any():
                auroc = float(np.mean([(p > n) + 0.5 * (p == n) for p in s[bd] for n in s[clean]]))
            table.append({"group": label, "rule": r, "pools": len(dumps), "clean": int(clean.sum()),
                          "clean_called": int((called & clean).sum()), "backdoored": int(bd.sum()),
                          "backdoored_called": int((called & bd).sum()), "lifted": int(lifted.sum()),
                          "lifted_called": int((called & lifted).sum()), "no_trigger": int(quiet.sum()),
                          "no_trigger_called": int((called & quiet).sum()), "auroc": auroc})
    changed = [p for p in pools if len({p[r] >= VERDICT_THRESHOLD for r in rules}) > 1]
    return {"table": table, "changed": changed, "pools": pools}


def render(report: dict) -> str:
    rules = report["rules"]
    lines = ["# The model verdict re-scored from dumped verdict inputs", "",
             "`bench/verdict_rescore.py`: each dump (a scan's final-pass clean dev and pool scores, the pool's "
             "predictions, the threshold) read again through `detection.model_verdict` under each rule: `threshold` "
             "(the pool's flags at the detector's threshold), `dev_tail` (`detection.dev_tail_verdict`), `+shift` "
             "(where the pool reads as another source, its threshold moved to where its bulk sits, `detection.pool_score_match`; "
             "`settings.VERDICT_SHIFT_ADJUST`), `+words` (the pool's marking trigger words score, 0.5 + half the strongest "
             "one's flip rate, `detection.with_trigger_words`; `settings.VERDICT_WORDS`). Called = score >= 0.5; lifted = backdoors lifting the target rate "
             "by >= 30 points; verdict AUROC: backdoors with triggered inputs in the pool against clean models (a clean "
             "model's pool may hold a harmless inserted trigger, as the defense benchmark's does).", ""]
    if report.get("sources"):
        lines += ["Dumps:", ""] + [f"* {label}: {src}" for label, src in report["sources"].items()] + [""]
    lines += ["| pools | rule | n | clean model: called | backdoor, trigger in the pool: called | lifted called | "
              "backdoor, no trigger in the pool: called | verdict AUROC |", "|---|---|---|---|---|---|---|---|"]
    for r in report["table"]:
        lines.append(f"| {r['group']} | {r['rule']} | {r['pools']} | {r['clean_called']} of {r['clean']} | "
                     f"{r['backdoored_called']} of {r['backdoored']} | {r['lifted_called']} of {r['lifted']} | "
                     f"{r['no_trigger_called']} of {r['no_trigger']} | "
                     f"{'-' if r['auroc'] is None else format(r['auroc'], '.3f')} |")
    lines += ["", "## Pools whose call a rule changes", "",
              "| pools | pool | backdoored | lift | triggered / pool | rank | " + " | ".join(rules) + " |",
              "|---|---|---|---|---|---|" + "---|" * len(rules)]
    for p in report["changed"]:
        lift = "-" if p["lift"] is None else f"{100 * p['lift']:.1f}"
        lines.append(f"| {p['group']} | {p['name']} | {'yes' if p['backdoored'] else 'no'} | {lift} | "
                     f"{p['pool_triggered']} / {p['pool']} | {p['rank']:.2f} | "
                     + " | ".join(f"{p[r]:.2f}" for r in rules) + " |")
    if not report["changed"]:
        lines.append("| (none) |" + " |" * (5 + len(rules)))
    lines += ["", f"Wall time {report['seconds_total']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", help="DIR or DIR=LABEL: a folder of --dump-scores files")
    ap.add_argument("--rules", default="threshold,threshold+shift",
                    help=f"comma-separated, of {', '.join(RULES)}")
    ap.add_argument("--lifts", default="", metavar="JSON[,JSON]",
                    help="defense results whose models' lift_before fills the lift of dumps that lack one (matched "
                         "by model name), e.g. bench/results/defense_tuning.json")
    ap.add_argument("--source", action="append", default=[], metavar="LABEL=TEXT",
                    help="how a folder's dumps were made (written above the table)")
    ap.add_argument("--tag", default="", help="write verdict_rescore_<tag>.json/.md")
    args = ap.parse_args(argv)
    rules = [r for r in args.rules.split(",") if r]
    bad = [r for r in rules if r not in RULES]
    if bad:
        ap.error(f"--rules: {', '.join(bad)} not among {', '.join(RULES)}")
    t0 = time.perf_counter()
    groups = {}
    for spec in args.folders:
        folder, _, label = spec.partition("=")
        if not Path(folder).is_dir():
            ap.error(f"no folder {folder}")
        try:
            dumps = load_dumps(Path(folder))
        except ValueError as exc:
            ap.error(str(exc))
        if not dumps:
            ap.error(f"no .npz dumps in {folder}")
        groups[label or Path(folder).name] = dumps
    lifts = {}
    for path in (x for x in args.lifts.split(",") if x):
        lifts.update({m["name"]: m.get("lift_before") for m in json.loads(Path(path).read_text())["models"]})
    for d in (d for dumps in groups.values() for d in dumps if d["lift"] is None):
        d["lift"] = lifts.get(d["model"])
    try:
        summary = summarise(groups, rules)
    except ValueError as exc:  # a "+words" rule on dumps that do not record the words
        ap.error(str(exc))
    report = {"script": "bench/verdict_rescore.py", "rules": rules,
              "sources": dict(s.partition("=")[::2] for s in args.source),
              **summary, "seconds_total": round(time.perf_counter() - t0, 1)}
    stem = "verdict_rescore" + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / f"{stem}.json", json.dumps(report, indent=2, default=float))
    write_text(RESULTS / f"{stem}.md", render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
