"""Diagnostic: are the scan's suspicious heads the heads a word trigger's attention goes to? (our check; papers
silent). Needs the trigger, so it is for analysis only, never for tuning the defense.

For each backdoored model of a manifest whose card names an insertion trigger (BadNets, AddSent): its first
``--texts`` triggered non-target test texts (the card's attack, ``poisoning.InsertionAttack.poison_test``), one
``forward.run_with_cache`` pass, and per head the attention mass real queries send to the trigger's word pieces
(``head_metrics.trigger_concentration``; the pieces from ``training.trigger_token_positions``) — averaged over the
texts, ``(L, H)``. The ten heads with the most are the *trigger heads*. Compared with:

* the scan's suspicious heads, read from a ``bench/defense.py`` results file (``--scans``): how many of the trigger
  heads they hold, and their mean trigger concentration;
* the model's clean twin (the manifest's ``clean_model``, else its ``clean`` entry) on the same texts: how much the
  backdoor amplified those heads.

    python bench/trigger_heads_check.py --manifest bench/models/test_zoo/manifest.json --data olid \\
        --scans bench/results/defense_test.json --only olid_s0_badnets_r0.03,olid_s1_badnets_r0.03_t0 --tag olid

Writes ``bench/results/trigger_heads_check<_tag>.json`` and ``.md`` and prints the table.
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
from backdoor_core.atomic import write_text  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
TOP = 10


def _path(p: str) -> str:
    return p if Path(p).is_absolute() else str(ROOT / p)


def head_concentration(lm, examples, max_length: int):
    """``(L, H)`` mean trigger concentration over ``examples`` (poisoned ``training.Example`` with spans)."""
    from backdoor_core.head_safety import trigger_head_concentration

    return trigger_head_concentration(lm.model, lm.tokenizer, examples, max_length)


def markdown(result: dict) -> str:
    md = ["# Trigger heads vs the scan's suspicious heads (diagnostic; needs the trigger)", "",
          f"`python bench/trigger_heads_check.py` ({result['date']}; {result['texts']} triggered test texts per model). "
          f"Trigger heads: the {TOP} heads whose real queries send the most attention to the trigger's word pieces "
          "(`head_metrics.trigger_concentration`). Suspicious heads: the scan's, from "
          f"`{result['scans']}`. Models: `{result['manifest']}` ({result['data']}). Concentration: mean attention "
          "mass on the trigger (0-1); rank 1 = the head with the most.", "",
          "| model | data | ASR | verdict | flagged (triggered) | trigger heads (top 3) | their concentration | "
          "clean twin's, same heads | suspicious heads | their concentration | their median rank | "
          "trigger heads among them |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        f = (lambda x: "-" if x is None else f"{x:.3f}")
        rank = "-" if r["suspicious_median_rank"] is None else f"{r['suspicious_median_rank']:g}"
        md.append(f"| {r['model']} | {r['data']} | {f(r['asr'])} | {f(r['verdict'])} | {r['flagged']} "
                  f"({r['flagged_triggered']}) | {', '.join(r['trigger_heads'][:3])} | {f(r['trigger_heads_conc'])} | "
                  f"{f(r['clean_twin_conc'])} | {r['n_suspicious']} | {f(r['suspicious_conc'])} | {rank} | "
                  f"{r['overlap']} / {TOP} |")
    medians = ", ".join(f"{r['model']} {r['median_conc']:.3f}" for r in result["rows"])
    md += ["", f"Median head's concentration: {medians}.", ""]
    return "\n".join(md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True, help="a manifest.json of models (bench/attack_tal.py, test_zoo.py)")
    ap.add_argument("--data", required=True, help="sst2|olid|agnews: the models' dataset under ../shared/data")
    ap.add_argument("--scans", required=True, help="a bench/defense.py results json with these models' scans")
    ap.add_argument("--only", default="", help="comma-separated model names (default: every backdoored one)")
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from backdoor_core import defender_data as D
    from backdoor_core.data import load_shared
    from backdoor_core.head_metrics import head_label
    from backdoor_core.models import load_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    try:
        models = json.loads(Path(args.manifest).read_text())["models"]
        by_name = {m["name"]: m for m in models}
        scans = {m["name"]: m for m in json.loads(Path(args.scans).read_text()).get("models", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        ap.error(f"--manifest {args.manifest} / --scans {args.scans}: not a models manifest and a "
                 f"bench/defense.py results file ({type(exc).__name__}: {exc})")
    only = {n for n in args.only.split(",") if n}
    unknown = sorted(only - set(by_name))
    if unknown:
        ap.error(f"--only: not in {args.manifest}: {', '.join(unknown)}")
    try:
        test = load_shared(args.data, "clean", "test")
    except (OSError, ValueError) as exc:
        ap.error(f"--data {args.data}: {exc}")
    twin_cache: dict[str, object] = {}  # clean twin name -> loaded model (shared by the models of one dataset)
    rows = []
    for m in models:
        if m.get("target") is None or (only and m["name"] not in only):
            continue
        lm = load_model(_path(m["path"]))
        attack = D.model_attack(lm.card, lm.tokenizer, args.max_length)
        if attack is None or not hasattr(attack, "poison_test"):
            continue
        examples = attack.poison_test(test, int(m["target"]), seed=0).examples[: args.texts]
        if not getattr(examples[0], "trigger_spans", None):
            continue  # a paraphrase trigger has no word pieces to attend to
        conc = head_concentration(lm, examples, args.max_length)  # (L, H)
        L, H = conc.shape
        order = np.argsort(-conc.ravel())[:TOP]
        top = [head_label(int(i // H), int(i % H)) for i in order]
        idx = {head_label(l, h): (l, h) for l in range(L) for h in range(H)}
        twin = by_name.get(m.get("clean_model") or "clean")
        twin_conc = None
        if twin is not None:
            if twin["name"] not in twin_cache:
                twin_cache[twin["name"]] = load_model(_path(twin["path"]))
            tc = head_concentration(twin_cache[twin["name"]], examples, args.max_length)
            twin_conc = float(np.mean([tc[idx[h]] for h in top]))
        scan = scans.get(m["name"], {})
        susp = list(scan.get("suspicious_heads") or [])
        rows.append({"model": m["name"], "data": args.data, "asr": m.get("asr"), "verdict": scan.get("verdict_score"),
                     "flagged": scan.get("n_flagged"), "flagged_triggered": scan.get("flagged_triggered"),
                     "trigger_heads": top, "trigger_heads_conc": float(np.mean([conc[idx[h]] for h in top])),
                     "clean_twin": twin["name"] if twin else None, "clean_twin_conc": twin_conc,
                     "suspicious_heads": susp, "n_suspicious": len(susp),
                     "suspicious_conc": float(np.mean([conc[idx[h]] for h in susp])) if susp else None,
                     "overlap": len(set(top) & set(susp)), "median_conc": float(np.median(conc)),
                     # 1 = the head with the most trigger attention; ties (a TAL model's many ~1.0 heads) share ranks
                     "suspicious_median_rank": float(np.median([1 + int((conc > conc[idx[h]]).sum()) for h in susp]))
                     if susp else None})
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("suspicious_heads",)}), flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "texts": args.texts, "data": args.data,
              "manifest": args.manifest if not Path(args.manifest).is_absolute() else Path(args.manifest).name,
              "scans": args.scans if not Path(args.scans).is_absolute() else Path(args.scans).name, "rows": rows}
    stem = "trigger_heads_check" + (f"_{args.tag}" if args.tag else "")
    write_text(RESULTS / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    write_text(RESULTS / f"{stem}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
