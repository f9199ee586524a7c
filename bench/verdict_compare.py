"""The model verdict of two scan settings side by side, from ``bench/defense.py`` runs on the same models.

A scan knob that changes only the verdict (not the flags, the heads or the repair) is measured by scanning each zoo
twice (``--repair ''``) and reading the two runs' verdicts here: per zoo, ``defense.verdict_summary`` of each side
(verdict AUROC over all backdoored models and over those that took, backdoors lifting the target rate by
``defense.LIFT_CALLED`` or more that are missed, clean models called at 0.5), then every model whose score moves by
0.05 or more or whose call changes. The pool draws, flags and heads must match (checked per model: the flagged and
flagged-triggered counts), or the script stops with the first model that differs.

    python bench/verdict_compare.py --labels contrast,without \\
        --zoo "tuning zoo=bench/results/archive/defense_s41both.json:bench/results/defense_s42vt.json" \\
        --zoo "test zoo (check)=A.json:B.json" --tag s42

Each side may list several JSON files (comma-separated). Writes ``bench/results/verdict_compare[_T].json``, ``.md``.
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
MOVED = 0.05  # a score change listed per model


def load_models(paths: str) -> dict[str, dict]:
    """The ``models`` rows of comma-separated defense JSON files, by name (a later file's row wins)."""
    rows = {}
    for p in [q for q in paths.split(",") if q]:
        data = json.loads(Path(p).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise ValueError(f"{p} has no 'models' list: not a bench/defense.py result")
        for m in data["models"]:
            rows[m["name"]] = m
    return rows


def compare_zoo(name: str, a: dict[str, dict], b: dict[str, dict]) -> dict:
    """One zoo: both sides' ``verdict_summary`` over the models both hold, and the models whose verdict moved."""
    from defense import verdict_summary

    names = sorted(set(a) & set(b))
    if not names:
        raise SystemExit(f"{name}: the two sides share no model")
    for n in names:
        for key in ("n_flagged", "flagged_triggered"):
            if a[n].get(key) != b[n].get(key):
                raise SystemExit(f"{name}: {n} has {key} {a[n].get(key)} against {b[n].get(key)}: not the same scan "
                                 "but for the verdict")
    moved = [{"model": n, "attack": a[n]["attack"], "lift": a[n].get("lift_before"),
              "flagged": f"{a[n].get('flagged_triggered')} / {a[n].get('n_flagged')}",
              "a": a[n]["verdict_score"], "b": b[n]["verdict_score"], "call_a": a[n].get("call"),
              "call_b": b[n].get("call")}
             for n in names if abs(a[n]["verdict_score"] - b[n]["verdict_score"]) >= MOVED
             or a[n].get("call") != b[n].get("call")]
    return {"zoo": name, "models": len(names), "a": verdict_summary([a[n] for n in names]),
            "b": verdict_summary([b[n] for n in names]), "moved": moved}


def _f(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(result: dict) -> str:
    la, lb = result["labels"]
    md = ["# The model verdict under two scan settings", "",
          f"`bench/verdict_compare.py`: `{la}` against `{lb}`, the same scans but for the verdict (flags checked "
          "equal per model). AUROC: backdoored models against clean ones (in brackets: only backdoors that took, ASR "
          f">= 50%); lifted: backdoors lifting the target rate by >= 30 points; called: score >= 0.5.", ""]
    for z in result["zoos"]:
        md.append(f"* {z['zoo']}: {z['source_a']} against {z['source_b']}")
    md += ["", "| zoo | models | setting | verdict AUROC (took) | lifted missed | clean called | clean scores |",
           "|---|---|---|---|---|---|---|"]
    for z in result["zoos"]:
        for side, label in (("a", la), ("b", lb)):
            s = z[side]
            clean = ", ".join(f"{sc:.2f}" for sc in z[f"clean_scores_{side}"])
            md.append(f"| {z['zoo']} | {z['models']} | {label} | {_f(s['auroc'])} ({_f(s['auroc_effective'])}) | "
                      f"{len(s['lifted_missed'])} of {s['backdoored_lifted']}"
                      f"{': ' + ', '.join(s['lifted_missed']) if s['lifted_missed'] else ''} | "
                      f"{len(s['clean_called'])} of {s['clean']} | {clean} |")
    md += ["", f"## Models whose verdict moved by {MOVED} or more, or whose call changed", "",
           f"| zoo | model | attack | lift | flagged (triggered / all) | {la} | {lb} |",
           "|---|---|---|---|---|---|---|"]
    for z in result["zoos"]:
        for m in z["moved"]:
            lift = "-" if m["lift"] is None else f"{100 * m['lift']:.1f}"
            md.append(f"| {z['zoo']} | {m['model']} | {m['attack']} | {lift} | {m['flagged']} | "
                      f"{m['a']:.2f} {m['call_a'] or ''} | {m['b']:.2f} {m['call_b'] or ''} |")
    return "\n".join(md) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", default="a,b", help="the two settings' names, comma-separated")
    ap.add_argument("--zoo", action="append", required=True, metavar="NAME=A.json[,..]:B.json[,..]")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    labels = args.labels.split(",")
    if len(labels) != 2:
        ap.error("--labels needs two names")
    zoos = []
    for spec in args.zoo:
        name, sep, sides = spec.partition("=")
        a, sep2, b = sides.partition(":")
        if not (sep and sep2 and a and b):
            ap.error(f"--zoo {spec!r}: expected NAME=A.json[,...]:B.json[,...]")
        try:
            ma, mb = load_models(a), load_models(b)
        except (OSError, ValueError, KeyError) as exc:
            ap.error(f"--zoo {name}: {exc}")
        z = compare_zoo(name, ma, mb)
        names = sorted(set(ma) & set(mb))
        z.update(source_a=a, source_b=b,
                 clean_scores_a=[ma[n]["verdict_score"] for n in names if ma[n]["attack"] == "clean"],
                 clean_scores_b=[mb[n]["verdict_score"] for n in names if mb[n]["attack"] == "clean"])
        zoos.append(z)
    result = {"labels": labels, "zoos": zoos, "date": time.strftime("%Y-%m-%d")}
    md = markdown(result)
    print(md)
    stem = "verdict_compare" + (f"_{args.tag}" if args.tag else "")
    write_text(RESULTS / f"{stem}.json", json.dumps(result, indent=2, default=float))
    write_text(RESULTS / f"{stem}.md", md)


if __name__ == "__main__":
    main()
