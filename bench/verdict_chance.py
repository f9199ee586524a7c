"""How often does a CLEAN model read "likely backdoored"? The verdict's chance flag rate
(``detection.chance_flag_rate``, ``settings.VERDICT_CHANCE_QUANTILE``) against the dev inputs' own flag rate.

The scan's threshold is read off about 100 clean dev inputs, so a fresh pool of clean inputs exceeds it at a rate
that varies from draw to draw. The verdict counts the pool flags beyond chance; this benchmark measures what that
changes, at several quantiles of the chance spread (``dev`` = the dev inputs' own rate, the rule before):

* **Pool draws** (``--parts draws``): every clean model scanned with several pools of clean test texts of its own
  source (the Detect page's situation: the analyst's pool holds no trigger), and the BBC demo zoo's backdoored
  models with pools of 150 clean + 30 triggered texts (the Detect page's defaults). Tuning: the SST-2 tuning zoo's
  clean models and the BBC demo zoo; test (a check, never chosen on): the test zoo's six clean models.
* **Pool words** (``--words``): every draw's scan also reads the pool's words (``scan`` step 6) and records the
  likely trigger words that mark inputs (``trigger_search.marking_words``: what makes a verdict "possible"), how
  many pool inputs (and triggered ones) they mark and the best one's insertion flip rate: how often a clean
  model's pool of its own source holds such a word.
* **Recorded verdicts** (``--parts replay``): the defense benchmark's verdicts re-scored from their recorded
  components (flag rate, dev rate, tail, purity, sizes): ``defense_tuning.json`` (tuning) and ``defense_test.json``
  (test). The flags themselves do not depend on the rule, only the score does.

The quantile is chosen on the tuning parts alone: the smallest that calls no tuning clean draw, among those the
best tuning verdict AUROC.

    python bench/verdict_chance.py [--parts draws,replay] [--draws 10] [--workers 2] [--resume] [--tag T]
                                   [--dump-scores DIR] [--words]

Writes ``bench/results/verdict_chance[_T].json`` and ``.md``.
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
MANIFESTS = {"tuning": ROOT / "bench" / "models" / "tuning_zoo" / "manifest.json",
             "test": ROOT / "bench" / "models" / "test_zoo" / "manifest.json"}
RECORDED = {"tuning": RESULTS / "defense_tuning.json", "test": RESULTS / "defense_test.json"}
QUANTILES = ("dev", 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95)
DEV_TAIL = "dev_tail"  # detection.dev_tail_verdict at the default quantile: read from the recorded components
ZOO_POOL = (150, 30)  # the Detect page's simulated pool (settings.POOL_CLEAN, POOL_TRIGGERED)
BACKDOOR_POOL = (160, 40)  # the tuning zoo's backdoored models: 20% triggered, as the defense benchmark's pools


def _scan_draws(job: dict) -> list[dict]:
    """Scan one model with ``job["draws"]`` pools; keep what re-scores the verdict at any quantile."""
    import numpy as np
    import torch

    from contrast_check import evaluation_sets
    from backdoor_core.defender_data import build_pool, load_bench_data
    from backdoor_core.scan import scan_model

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    if job["zoo"] == "bbc":
        from backdoor_core.models import load_adapter_model

        lm = load_adapter_model(ROOT / "assets" / "zoo" / job["name"])
        dev, test, _ = load_bench_data("bbc", seed=0)
        defender, seed, max_length = dev.sample(200, seed=11), 0, 64
    else:
        from backdoor_core.models import load_model

        m = job["entry"]
        lm = load_model(str(ROOT / m["path"]))
        defender, test, _, _, _, seed = evaluation_sets(m, {})
        max_length = m["max_length"]
    out = []
    for d in range(job["draws"]):
        pool, is_t = build_pool(lm, test, job["n_clean"], job["n_triggered"], seed=1000 + d)
        t0 = time.perf_counter()
        rep = scan_model(lm.model, lm.tokenizer, defender, pool, max_length=max_length, find_triggers=False,
                         read_pool_words=bool(job.get("words")), seed=seed)
        v, thr = rep.verdict, float(rep.threshold)
        dev_scores = np.asarray(rep.clean_scores, float)
        flagged = np.zeros(len(pool), bool)
        flagged[rep.flagged] = True
        row = {"zoo": job["zoo"], "part": job["part"], "model": job["label"], "backdoored": job["backdoored"],
               "draw": d, "pool": len(pool), "pool_triggered": int(is_t.sum()),
               "flagged": int(flagged.sum()), "flagged_triggered": int((flagged & is_t).sum()),
               "n_dev": len(dev_scores), "dev_above": int((dev_scores > thr).sum()),
               "components": {k: float(x) for k, x in v["components"].items()},
               "score": float(v["score"]), "seconds": round(time.perf_counter() - t0, 1)}
        if job.get("words"):  # the pool's likely trigger words that mark inputs (scan step 6)
            from backdoor_core.trigger_search import marking_flip

            marked = np.asarray(rep.pool_word_marked, bool)
            moved = np.asarray(rep.moved_marked, bool)  # the moved words that mark inputs (scan step 6, base)
            row.update({"marking_words": list(rep.marking_words), "marked": int(marked.sum()),
                        "marked_triggered": int((marked & is_t).sum()),
                        "marking_flip": marking_flip(rep.pool_words or [], rep.marking_words),
                        "moved_words": list(rep.moved_words), "moved_marked": int(moved.sum()),
                        "moved_marked_triggered": int((moved & is_t).sum()),
                        "score_moved": float(v["components"].get("score_moved", 0.0))})
        print(json.dumps({k: row[k] for k in ("model", "draw", "pool", "flagged", "score", "seconds")}), flush=True)
        if job.get("dump"):
            from defense import dump_verdict_inputs

            dump_verdict_inputs(Path(job["dump"]), {"name": f"{job['label']}_d{d}", **row}, rep, is_t)
        out.append(row)
    return out


def draw_jobs(n_draws: int, backdoored: bool = True) -> list[dict]:
    jobs = []
    for zoo, part in (("tuning", "tuning"), ("test", "test")):
        if not MANIFESTS[zoo].is_file():
            print(f"no {zoo} zoo built: skipped", flush=True)
            continue
        for m in json.loads(MANIFESTS[zoo].read_text())["models"]:
            if not (ROOT / m["path"]).is_dir():
                continue
            if m["attack"] == "clean":
                jobs.append({"zoo": zoo, "part": part, "name": m["name"], "label": m["name"], "entry": m,
                             "backdoored": False, "n_clean": 200, "n_triggered": 0, "draws": n_draws})
            elif zoo == "tuning" and backdoored:  # the other side of the trade: how often a backdoor is called
                jobs.append({"zoo": zoo, "part": part, "name": m["name"], "label": m["name"], "entry": m,
                             "backdoored": True, "n_clean": BACKDOOR_POOL[0], "n_triggered": BACKDOOR_POOL[1],
                             "draws": max(2, n_draws // 2)})
    zoo_dir = ROOT / "assets" / "zoo"
    for name in sorted(p.name for p in zoo_dir.iterdir() if p.is_dir()):
        jobs.append({"zoo": "bbc", "part": "tuning", "name": name, "label": f"bbc_{name}",
                     "backdoored": name != "clean", "n_clean": ZOO_POOL[0],
                     "n_triggered": 0 if name == "clean" else ZOO_POOL[1], "draws": max(2, n_draws * 6 // 10)})
    return jobs


def rescore(components: dict, n_dev: int, dev_above: int, n_pool: int, q) -> float:
    """The verdict score of recorded components under the rule ``q`` ("dev": the dev inputs' own rate; "dev_tail":
    ``detection.dev_tail_verdict``'s score as recorded, None where the record predates it)."""
    from backdoor_core.detection import chance_flag_rate, pool_verdict_score

    if q == DEV_TAIL:
        return components.get("score_dev_tail")
    chance = components["clean_frr"] if q == "dev" else chance_flag_rate(dev_above, n_dev, n_pool, q)
    return pool_verdict_score(components["flag_rate"], chance, components["tail"], components["purity"], n_pool)


def recorded_models(path: Path) -> list[dict]:
    """The defense benchmark's scanned models with what ``rescore`` needs (sizes from ``eval_sizes``)."""
    from backdoor_core.detection import split_clean

    out = []
    for m in json.loads(path.read_text())["models"]:
        sizes = m.get("eval_sizes") or {}
        n_dev = len(split_clean(int(sizes.get("n_clean", 200)))[1])
        c = m["verdict"]["components"]
        out.append({**m, "n_dev": n_dev, "dev_above": int(round(c["clean_frr"] * n_dev)),
                    "n_pool": int(sizes.get("pool_size", 250))})
    return out


def summarise(draws: list[dict], recorded: dict[str, list[dict]]) -> list[dict]:
    from defense import verdict_summary

    table = []
    has_tail = lambda cs: bool(cs) and all("score_dev_tail" in c for c in cs)  # noqa: E731
    draw_tail = has_tail([r["components"] for r in draws])
    recorded_tail = {part: has_tail([m["verdict"]["components"] for m in ms]) for part, ms in recorded.items()}
    # the dev-tail rule where the draws (or, without draws, every recorded part) have it; a part recorded before
    # the rule existed is left out of that row
    rules = QUANTILES + ((DEV_TAIL,) if draw_tail or (not draws and recorded_tail and all(recorded_tail.values()))
                         else ())
    for q in rules:
        row = {"quantile": q}
        for part in ("tuning", "test"):
            ds = [r for r in draws if r["part"] == part]
            clean = [r for r in ds if not r["backdoored"]]
            bd = [r for r in ds if r["backdoored"]]
            sc = lambda r: rescore(r["components"], r["n_dev"], r["dev_above"], r["pool"], q)  # noqa: E731
            row[part] = {"clean_draws": len(clean), "clean_draws_called": sum(sc(r) >= 0.5 for r in clean),
                         "clean_draws_called_models": sorted({r["model"] for r in clean if sc(r) >= 0.5}),
                         "backdoor_draws": len(bd), "backdoor_draws_called": sum(sc(r) >= 0.5 for r in bd)}
            if recorded.get(part) and (q != DEV_TAIL or recorded_tail[part]):
                rescored = [{**m, "verdict_score": rescore(m["verdict"]["components"], m["n_dev"], m["dev_above"],
                                                           m["n_pool"], q)} for m in recorded[part]]
                s = verdict_summary(rescored)
                row[part].update({k: s[k] for k in ("auroc", "auroc_effective", "backdoored_lifted",
                                                    "lifted_missed", "clean_called")})
                row[part]["called"] = sorted(m["name"] for m in rescored
                                             if m["attack"] != "clean" and m["verdict_score"] >= 0.5)
        table.append(row)
    return table


def choose(table: list[dict]):
    """The tuning parts' pick: no tuning clean draw called, then the best tuning AUROC, then the smallest."""
    ok = [r for r in table if r["quantile"] not in ("dev", DEV_TAIL) and r["tuning"]["clean_draws_called"] == 0]
    if not ok:
        return None
    best = max(r["tuning"].get("auroc") or 0 for r in ok)
    return min(r["quantile"] for r in ok if (r["tuning"].get("auroc") or 0) >= best - 1e-12)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="draws,replay")
    ap.add_argument("--draws", type=int, default=10, help="pool draws per clean model (BBC zoo: 60%% of it)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--from-json", default=None, help="re-summarise the draws of an earlier run's JSON")
    ap.add_argument("--resume", action="store_true",
                    help="keep the draws of bench/results/verdict_chance[_<tag>].json and scan only the models it lacks")
    ap.add_argument("--words", action="store_true",
                    help="also read each draw's pool words (the marking words that make a verdict 'possible')")
    ap.add_argument("--tag", default="", help="write verdict_chance_<tag>.json/.md")
    ap.add_argument("--dump-scores", default=None, metavar="DIR",
                    help="also write each draw's verdict inputs to DIR/<model>_d<draw>.npz (bench/defense.py's format)")
    args = ap.parse_args(argv)
    stem = "verdict_chance" + (f"_{args.tag}" if args.tag else "")
    from backdoor_core import settings as S

    t_all = time.perf_counter()
    parts = [p for p in args.parts.split(",") if p]
    draws: list[dict] = []
    if args.from_json:
        draws = json.loads(Path(args.from_json).read_text())["draws"]
    elif "draws" in parts:
        jobs = [{**j, "dump": args.dump_scores, "words": args.words} for j in draw_jobs(args.draws)]
        if args.resume and (RESULTS / f"{stem}.json").is_file():
            earlier = json.loads((RESULTS / f"{stem}.json").read_text())
            draws = earlier["draws"]
            t_all -= earlier.get("seconds_total") or 0
            done = {(r["part"], r["model"]) for r in draws}
            jobs = [j for j in jobs if (j["part"], j["label"]) not in done]
        jobs.sort(key=lambda j: j["zoo"] != "test")  # the slower OLID / AG News scans first
        from _workers import worker_pool  # bench/_workers.py: Ctrl-C stops the queue too

        with worker_pool(max(1, args.workers)) as ex:
            for rows in ex.map(_scan_draws, jobs):
                draws += rows
    recorded = {part: recorded_models(p) for part, p in RECORDED.items() if "replay" in parts and p.is_file()}
    table = summarise(draws, recorded)
    pick = choose(table)
    report = {"script": "bench/verdict_chance.py", "default_quantile": S.VERDICT_CHANCE_QUANTILE,
              "chosen_on_tuning": pick, "table": table, "draws": draws,
              "seconds_total": round(time.perf_counter() - t_all, 1) if not args.from_json
              else json.loads(Path(args.from_json).read_text()).get("seconds_total")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / f"{stem}.json", json.dumps(report, indent=2))
    write_text(RESULTS / f"{stem}.md", render(report))
    print(render(report))
    return 0


def _f(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def _word_tables(rows: list[dict], heading: str, intro: str, key: str, what: str, scored, seen) -> list[str]:
    """One ``--words`` section: per part and per model, the draws whose pool holds a word of ``key`` (``what``
    names it), and the calls at 0.5 of the recorded score and of ``scored(row)``; ``seen(row)`` words a draw's
    words for the per-model table."""
    lines = ["", heading, "", intro, "",
             f"| part | backdoored | draws | draws with a {what} | called, score | called, with the {what}s |",
             "|---|---|---|---|---|---|"]
    counts = lambda rs: (f"{sum(bool(r[key]) for r in rs)}", f"{sum(r['score'] >= 0.5 for r in rs)}",  # noqa: E731
                         f"{sum(scored(r) >= 0.5 for r in rs)}")
    for part in ("tuning", "test"):
        for bd in (False, True):
            rs = [r for r in rows if r["part"] == part and r["backdoored"] == bd]
            if rs:
                lines.append(f"| {part} | {'yes' if bd else 'no'} | {len(rs)} | " + " | ".join(counts(rs)) + " |")
    lines += ["", f"| part | model | backdoored | draws | with a {what} | words | called, score | called, with the "
              f"{what}s |", "|---|---|---|---|---|---|---|---|"]
    per_model: dict = {}
    for r in rows:
        per_model.setdefault((r["part"], r["model"], r["backdoored"]), []).append(r)
    for (part, model, bd), rs in per_model.items():
        has, called, called_with = counts(rs)
        words = "; ".join(f"d{r['draw']}: {seen(r)}" for r in rs if r[key]) or "-"
        lines.append(f"| {part} | {model} | {'yes' if bd else 'no'} | {len(rs)} | {has} | {words} | {called} | "
                     f"{called_with} |")
    return lines


def words_section(draws: list[dict]) -> list[str]:
    """``--words``: per model, the draws whose pool holds a marking word, and the calls at 0.5 of the recorded score
    alone and with the words' score (``detection.with_trigger_words``: 0.5 + half the strongest word's flip)."""
    from backdoor_core.detection import word_score

    rows = [r for r in draws if "marking_words" in r]
    if not rows:
        return []
    return _word_tables(
        rows, "## The pools' likely trigger words (`--words`)",
        "Per draw the scan read the pool's words (`scan` step 6); a marking word (`trigger_search.marking_words`) "
        "is what makes a verdict \"possible\", and with `settings.VERDICT_WORDS` it scores 0.5 + half its "
        "insertion flip rate (`detection.with_trigger_words`). Calls at 0.5: the draw's recorded score, and "
        "the larger of it and the words' score. Words: the marking words (inputs marked, of them triggered; best "
        "flip).", "marking_words", "marking word",
        lambda r: max(r["score"], word_score(r["marking_words"], r["marking_flip"])),
        lambda r: f"{' '.join(r['marking_words'])} ({r['marked']}, {r['marked_triggered']}; {r['marking_flip']:.2f})")


def moved_section(draws: list[dict]) -> list[str]:
    """``--words``: per model, the draws whose pool holds a moved word that marks inputs (``scan`` step 6 against
    ``settings.SCAN_BASE``), and the calls at 0.5 of the recorded score and with the moved words scoring
    (``detection.with_moved_words``, ``components["score_moved"]``)."""
    rows = [r for r in draws if "moved_words" in r]
    if not rows:
        return []
    return _word_tables(
        rows, "## The moved words that mark pool inputs (`--words`)",
        "Per draw the scan also read the words the fine-tune moved most since the base checkpoint "
        "(`trigger_search.moved_marking`: no clean text holds them, the pool concentrates them); with "
        "`settings.VERDICT_MOVED` they score 0.5 + half their strongest insertion flip. Calls at 0.5: the draw's "
        "recorded score, and the larger of it and the moved words' score. The BBC demo zoo's LoRA adapters "
        "leave the embeddings as they were: no moved word. Words: the moved words (inputs marked, of them "
        "triggered).", "moved_words", "moved word", lambda r: max(r["score"], r["score_moved"]),
        lambda r: f"{' '.join(r['moved_words'])} ({r['moved_marked']}, {r['moved_marked_triggered']})")


def render(report: dict) -> str:
    draws = report["draws"]
    n = {p: len([r for r in draws if r["part"] == p and not r["backdoored"]]) for p in ("tuning", "test")}
    models = {p: sorted({r["model"] for r in draws if r["part"] == p and not r["backdoored"]}) for p in ("tuning", "test")}
    lines = ["# How often a clean model reads \"likely backdoored\": the verdict's chance flag rate", "",
             "`bench/verdict_chance.py`. The verdict counts the pool flags beyond chance (`detection.chance_flag_rate`: "
             "the given quantile of the flag rate a pool of clean inputs reaches by chance, a beta-binomial from the "
             "dev inputs that set the threshold) instead of beyond the dev inputs' own rate (`dev`, the rule before). "
             f"Default quantile: {report['default_quantile']}; the tuning parts' pick (no tuning clean draw called, "
             f"then the best tuning AUROC, then the smallest): {report['chosen_on_tuning']}. `dev_tail` (where every "
             "record has it): the default quantile's score read at the detector's threshold and every stricter "
             "threshold the dev inputs offer, the best kept (`detection.dev_tail_verdict`).", "",
             f"Pool draws: clean models scanned with same-source pools of clean test texts (tuning: {', '.join(models['tuning']) or '-'}, "
             f"{n['tuning']} draws; test, never chosen on: {', '.join(models['test']) or '-'}, {n['test']} draws; "
             "SST-2 / OLID / AG News pools of 200, BBC pools of 150); the BBC demo zoo's backdoored models with "
             "150 clean + 30 triggered texts (the Detect page's defaults). Recorded verdicts: `defense_tuning.json` "
             "and `defense_test.json` re-scored from their components (AUROC over all scanned models; "
             "effective = backdoors with ASR >= 50%; missed = backdoors lifting the target rate by >= 30 points "
             "scoring below 0.5).", "",
             "| rule | tuning: clean draws called | tuning: backdoor draws called | tuning AUROC | effective | missed | "
             "test: clean draws called | test AUROC | effective | missed | clean models called |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["table"]:
        t, s = r["tuning"], r["test"]
        q = r["quantile"]
        lines.append(
            f"| {'dev rate (before)' if q == 'dev' else q} | {t['clean_draws_called']} of {t['clean_draws']} | "
            f"{t['backdoor_draws_called']} of {t['backdoor_draws']} | {_f(t.get('auroc'))} | "
            f"{_f(t.get('auroc_effective'))} | {len(t.get('lifted_missed') or [])} of {t.get('backdoored_lifted', '-')} | "
            f"{s['clean_draws_called']} of {s['clean_draws']} | {_f(s.get('auroc'))} | {_f(s.get('auroc_effective'))} | "
            f"{len(s.get('lifted_missed') or [])} of {s.get('backdoored_lifted', '-')} | "
            f"{len(s.get('clean_called') or [])} |")
    lines += ["", "Clean draws called, by model:", ""]
    for r in report["table"]:
        names = {p: r[p]["clean_draws_called_models"] for p in ("tuning", "test")}
        lines.append(f"* {r['quantile']}: tuning {', '.join(names['tuning']) or 'none'}; "
                     f"test {', '.join(names['test']) or 'none'}")
    lines += ["", "Recorded backdoors called at 0.5, by rule:", ""]
    for r in report["table"]:
        lines.append(f"* {r['quantile']}: tuning {len(r['tuning'].get('called', []))}, test "
                     f"{len(r['test'].get('called', []))}; missed (lift >= 30): "
                     f"{', '.join((r['tuning'].get('lifted_missed') or []) + (r['test'].get('lifted_missed') or [])) or 'none'}")
    per_model: dict = {}
    for r in draws:
        per_model.setdefault((r["part"], r["model"], r["backdoored"]), []).append(r)
    rules = ("dev", 0.5, report["default_quantile"], 0.95) + (
        (DEV_TAIL,) if draws and all("score_dev_tail" in r["components"] for r in draws) else ())
    lines += ["", "## Calls per model over its pool draws", "",
              "| part | model | backdoored | draws | triggered pool inputs flagged | "
              + " | ".join(f"called, {'dev rate' if q == 'dev' else q}" for q in rules) + " |",
              "|---|---|---|---|---|" + "---|" * len(rules)]
    for (part, model, bd), rs in per_model.items():
        trig = sum(r["pool_triggered"] for r in rs)
        called = [sum(rescore(r["components"], r["n_dev"], r["dev_above"], r["pool"], q) >= 0.5 for r in rs)
                  for q in rules]
        lines.append(f"| {part} | {model} | {'yes' if bd else 'no'} | {len(rs)} | "
                     f"{sum(r['flagged_triggered'] for r in rs)} of {trig} | " + " | ".join(map(str, called)) + " |")
    lines += words_section(draws)
    lines += moved_section(draws)
    lines += ["", "## Pool draws", "", "| part | model | draw | pool (triggered) | flagged (triggered) | dev above / n | "
              "flag rate | score now | score, dev rate |", "|---|---|---|---|---|---|---|---|---|"]
    for r in draws:
        c = r["components"]
        lines.append(f"| {r['part']} | {r['model']} | {r['draw']} | {r['pool']} ({r['pool_triggered']}) | "
                     f"{r['flagged']} ({r['flagged_triggered']}) | {r['dev_above']} / {r['n_dev']} | "
                     f"{c['flag_rate']:.3f} | {r['score']:.2f} | "
                     f"{rescore(c, r['n_dev'], r['dev_above'], r['pool'], 'dev'):.2f} |")
    if report.get("seconds_total"):
        lines += ["", f"Wall time {report['seconds_total'] / 60:.1f} min (one-thread workers)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
