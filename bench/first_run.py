"""The first five minutes of a class (issue 12): from an empty cache, how long until the guided tour shows the
trigger flipping a backdoored model, and how long its scan and sanitize steps take.

Each repeat runs in a fresh Python process with fresh, empty cache folders (``XDG_CACHE_HOME``,
``BACKDOOR_ZOO_DIR``) and no network, and makes the calls the tour page makes, in its order:

* ``to_flip_s``: process start -> streamlit and the core imported (what ``streamlit run app.py`` loads), the zoo
  listed (``zoo.list_models``: the shipped adapters), BBC News loaded (the sidebar's dataset), the zoo's clean
  model merged and inspected (step 1), the BadNets 2% + TAL model merged and inspected with the trigger (step 3:
  the flip). Streamlit's own server start and the browser are not in it (about 2 s more; see the browser test).
* ``scan_s``: step 5, ``tour.scan_inputs`` + ``scan.scan_model(**tour.scan_knobs())`` on a private copy.
* ``sanitize_s``: step 6 as the page's job runs it: the evaluator, the "before" numbers, ``run_defense("alignment",
  scan=<step 5's report>, **tour.sanitize_knobs())``, the "after" numbers. ``asr_after``, ``cacc_drop`` (points).
* ``zoo_bytes``: the shipped zoo on disk (adapters, cards, manifest).

Medians over ``--repeats`` processes (default 3), run one after another. Writes bench/results/first_run.json and
.md and prints a table. Usage: ``python bench/first_run.py [--repeats 3] [--threads 2]``.

``--browser`` measures the same flip once more per repeat as a person sees it: ``streamlit run app.py`` started
with empty cache folders and no network, chromium opened on the tour (``tests/browser.py``: ``tour_to_flip``,
the walk ``tests/test_tour_browser.py`` checks), timed from the server's launch to the flip on screen (the
browser's own start is included). It adds ``"browser"`` to the JSON written by the last core run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
GOALS = {"to_flip_s": 15.0, "scan_s": 10.0, "sanitize_s": 30.0, "asr_after": 0.05, "cacc_drop": 1.5,
         "zoo_bytes": 10 * 1024**2}


def count_texts(model) -> dict:
    """Count the work: a forward pre-hook on ``model`` (kept by its deep copies) adds each call's batch size to
    ``texts`` and, when autograd is on (training steps, gradients for head importance), to ``grad_texts``."""
    import torch

    counts = {"calls": 0, "texts": 0, "grad_texts": 0}

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        n = int(ids.shape[0]) if ids is not None else 0
        counts["calls"] += 1
        counts["texts"] += n
        counts["grad_texts"] += n if torch.is_grad_enabled() else 0

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return counts


def one_run(threads: int) -> dict:
    """One cold run (called in a fresh process). Returns the timings and the repair's numbers."""
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    import streamlit  # noqa: F401 - the app imports it before anything else

    sys.path.insert(0, str(ROOT))
    from backdoor_core import tour as T
    from backdoor_core import zoo
    from backdoor_core.cli import quiet_libraries
    from backdoor_core.data import load_dataset
    from backdoor_core.models import load_model

    quiet_libraries()
    entries = zoo.list_models(zoo.default_zoo_dir(), shipped=True)
    train, test = load_dataset("bbc", split="train"), load_dataset("bbc", split="test")
    clean_entry, problem = T.zoo_entry(T.CLEAN_MODEL, entries)
    bd_entry, problem2 = T.zoo_entry(T.BACKDOORED_MODEL, entries)
    if clean_entry is None or bd_entry is None:
        raise SystemExit(problem or problem2)
    clean = load_model(clean_entry["path"])
    step1 = T.flip(clean)
    bd = load_model(bd_entry["path"])
    step3 = T.flip(bd)
    to_flip = time.perf_counter() - t_start

    import copy

    from backdoor_core.defenses import final_metrics, run_defense
    from backdoor_core.scan import scan_model
    from backdoor_core import defender_data as D

    t0 = time.perf_counter()
    work = copy.deepcopy(bd)  # the page scans a private copy (ui.session_copy)
    scan_work = count_texts(work.model)
    clean_ds, pool, truth = T.scan_inputs(bd, train, test)
    report = scan_model(work.model, work.tokenizer, clean_ds, pool, model_name=bd.name,
                        **{"max_length": D.model_max_length(bd), **T.scan_knobs()})
    scan_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    work = copy.deepcopy(bd)
    sanitize_work = count_texts(work.model)  # run_defense's deep copy keeps the hook
    evaluate = T.make_eval(work, test)
    before = evaluate(work.model)
    res = run_defense("alignment", work.model, work.tokenizer, T.sanitize_clean(train), pool_texts=None,
                      evaluate=evaluate, max_length=D.model_max_length(bd), scan=report, **T.sanitize_knobs())
    after = final_metrics(res, before, evaluate)  # as the page's job does
    sanitize_s = time.perf_counter() - t0
    flagged = set(int(i) for i in report.flagged)
    return {
        "to_flip_s": to_flip, "scan_s": scan_s, "sanitize_s": sanitize_s,
        "asr_before": before.get("asr"), "asr_after": after.get("asr"),
        "cacc_before": before.get("cacc"), "cacc_after": after.get("cacc"),
        "cacc_drop": 100 * (before["cacc"] - after["cacc"]),
        "step1": {"flip": step1.flip()["status"], "clean": step1.prediction("clean")["label"],
                  "triggered": step1.prediction("triggered")["label"]},
        "step3": {"flip": step3.flip()["status"], "clean": step3.prediction("clean")["label"],
                  "triggered": step3.prediction("triggered")["label"]},
        "verdict": report.verdict.get("likely_backdoored"), "verdict_score": report.verdict.get("score"),
        "suspicious_heads": list(report.suspicious_heads),
        "pool_triggered_flagged": int(sum(1 for i in flagged if truth[i])), "pool_triggered": int(truth.sum()),
        "pool_clean_flagged": int(sum(1 for i in flagged if not truth[i])),
        "repair_steps": res.history[-1]["step"] if res.history else None,
        "scan_work": scan_work, "sanitize_work": sanitize_work,
        "settings": {"TOUR_SCAN": T.scan_knobs(), "TOUR_SANITIZE": T.sanitize_knobs(),
                     "TOUR_EVAL_TEXTS": T.S.TOUR_EVAL_TEXTS, "TOUR_ASR_TEXTS": getattr(T.S, "TOUR_ASR_TEXTS", None)},
        "details": {k: res.details.get(k) for k in ("suspicious_heads", "flagged_used", "pool_pseudo_labelled")},
    }


def browser_runs(repeats: int) -> dict:
    """Server launch -> the tour's flip on screen, ``repeats`` times, each with fresh empty caches."""
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import launch_browser, open_app_page, streamlit_app, tour_to_flip

    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="first-run-browser-") as tmp:
            env = {"BACKDOOR_ZOO_DIR": str(Path(tmp) / "zoo"), "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            with streamlit_app(ROOT, env, Path(tmp) / "streamlit.log") as url, launch_browser() as browser:
                page, blocked, _errors = open_app_page(browser, {"width": 1400, "height": 900})
                seen = tour_to_flip(page, url)
                runs.append({"to_flip_s": time.perf_counter() - t0, "page_to_flip_s": seen["flip_s"],
                             "step3_model": seen["step3_model"], "blocked": len(blocked), "load_before": round(load, 2)})
            print(f"browser run: launch -> flip {runs[-1]['to_flip_s']:.1f} s", file=sys.stderr)
    return {"to_flip_s": round(statistics.median(r["to_flip_s"] for r in runs), 2), "runs": runs}


def zoo_bytes() -> int:
    root = ROOT / "assets" / "zoo"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--browser", action="store_true",
                    help="measure server launch -> the tour's flip in chromium; added to the existing JSON")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_run(args.threads)))
        return
    if args.browser:
        result = json.loads((RESULTS / "first_run.json").read_text())
        result["browser"] = {**browser_runs(args.repeats), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_text(RESULTS / "first_run.json", json.dumps(result, indent=2) + "\n")
        md = (RESULTS / "first_run.md").read_text().split("\n## In the browser")[0].rstrip("\n")
        b = result["browser"]
        md += ("\n\n## In the browser\n\n`python bench/first_run.py --browser --repeats "
               f"{args.repeats}` ({b['date']}): `streamlit run app.py` launched with empty caches and no network, "
               f"chromium on the tour, to step 3's flip on screen: median {b['to_flip_s']:.1f} s (runs: "
               + ", ".join(f"{r['to_flip_s']:.1f}" for r in b["runs"]) + " s; load before: "
               + ", ".join(str(r["load_before"]) for r in b["runs"]) + "). Goal 15 s.\n")
        write_text(RESULTS / "first_run.md", md)
        print(f"server launch -> tour flip in the browser: {b['to_flip_s']:.1f} s (goal 15)")
        return
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="first-run-") as tmp:
            env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache"), "BACKDOOR_ZOO_DIR": str(Path(tmp) / "zoo"),
                   "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--threads", str(args.threads)], env=env,
                                 cwd=tmp, capture_output=True, text=True, check=True)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            run["load_before"] = round(load, 2)
            runs.append(run)
            print(f"run {i + 1}: flip {run['to_flip_s']:.1f} s, scan {run['scan_s']:.1f} s, sanitize "
                  f"{run['sanitize_s']:.1f} s, ASR after {run['asr_after']:.1%}, CACC drop {run['cacc_drop']:.1f}, "
                  f"load {load:.1f}", file=sys.stderr)
    med = {k: statistics.median(r[k] for r in runs) for k in ("to_flip_s", "scan_s", "sanitize_s", "asr_after",
                                                               "cacc_drop")}
    result = {**{k: round(v, 4) for k, v in med.items()}, "zoo_bytes": zoo_bytes(),
              "meta": {"repeats": args.repeats, "threads": args.threads, "cpu_count": os.cpu_count(),
                       "platform": platform.platform(), "python": platform.python_version(),
                       "date": time.strftime("%Y-%m-%d %H:%M:%S"), "goals": GOALS},
              "runs": runs}
    write_text(RESULTS / "first_run.json", json.dumps(result, indent=2) + "\n")
    rows = [("app start -> tour flip (s)", f"{med['to_flip_s']:.1f}", "<= 15"),
            ("tour scan (s)", f"{med['scan_s']:.1f}", "<= 10"),
            ("tour sanitize (s)", f"{med['sanitize_s']:.1f}", "<= 30"),
            ("ASR after sanitize", f"{med['asr_after']:.1%}", "<= 5%"),
            ("CACC drop (points)", f"{med['cacc_drop']:.1f}", "<= 1.5"),
            ("shipped zoo (MB)", f"{result['zoo_bytes'] / 1024**2:.2f}", "<= 10")]
    r0 = runs[0]
    md = ["# First run: app start to the tour's flip, scan and sanitize", "",
          f"`python bench/first_run.py --repeats {args.repeats} --threads {args.threads}` on {os.cpu_count()} CPU cores "
          f"({result['meta']['date']}); each repeat a fresh process with empty caches, no network. Medians of "
          f"{args.repeats}; 1-minute load average before each run: {', '.join(str(r['load_before']) for r in runs)}.",
          "", "| measure | median | goal |", "|---|---|---|"]
    md += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    md += ["", "Per run (s): " + "; ".join(f"flip {r['to_flip_s']:.1f} / scan {r['scan_s']:.1f} / sanitize "
                                            f"{r['sanitize_s']:.1f}" for r in runs),
           "", f"Tour steps (run 1): step 1 on the clean model: {r0['step1']['clean']} -> {r0['step1']['triggered']} "
           f"({r0['step1']['flip']}); step 3 on BadNets 2% + TAL: {r0['step3']['clean']} -> "
           f"{r0['step3']['triggered']} ({r0['step3']['flip']}).",
           f"Scan: verdict {'likely backdoored' if r0['verdict'] else 'not found'} (score {r0['verdict_score']:.2f}); "
           f"{r0['pool_triggered_flagged']} of {r0['pool_triggered']} triggered and {r0['pool_clean_flagged']} clean "
           f"pool inputs flagged; suspicious heads {', '.join(r0['suspicious_heads'])}.",
           f"Sanitize: ASR {r0['asr_before']:.1%} -> {r0['asr_after']:.1%}, CACC {r0['cacc_before']:.1%} -> "
           f"{r0['cacc_after']:.1%} ({r0['repair_steps']} steps).",
           f"Work (run 1, texts through the model, of which with autograd on): scan {r0['scan_work']['texts']} "
           f"({r0['scan_work']['grad_texts']}), sanitize {r0['sanitize_work']['texts']} "
           f"({r0['sanitize_work']['grad_texts']}). Tour settings: {json.dumps(r0['settings'])}.", ""]
    write_text(RESULTS / "first_run.md", "\n".join(md))
    print("\n".join(f"{a:<28} {b:>8}   goal {c}" for a, b, c in rows))


if __name__ == "__main__":
    main()
