"""Benchmark: does the scan name the true trigger? Rank of the true trigger among the candidate triggers.

For every model of the BBC demo zoo (``python -m backdoor_core zoo build``; or ``--zoo DIR``) the defender
has ``--n-clean`` clean labelled BBC dev texts (never seen in training) and a pool of ``--pool-clean`` clean
BBC test texts plus ``--pool-triggered`` test texts carrying the model's trigger (non-target ones, from the
attack's own ``poison_test``). ``scan_model`` runs with its defaults (trigger search included,
``backdoor_core/trigger_search.py``); we record the rank of the true trigger among the candidates (exact
match; for BadNets any of its trigger words counts) and the rank of the first candidate made only of trigger
words (a part of a sentence trigger), the top candidates with their insertion / removal flip rates, and the
time. The clean model has no trigger: its top candidates show what a false alarm looks like.

With ``--data sst2`` the models are the attack benchmark's (``bench/attack_tal.py``; its manifest, or any folder
of saved models with ``--models-from DIR``, read as ``bench/defense.py`` reads them: each model's card gives the
attack, trigger, target and reading length) and the texts are SST-2's (``../shared/data``): defender = clean dev,
pool = clean test + triggered non-target test sentences, as for BBC. A paraphrase attack (syntactic, style) has no
trigger tokens: no rank, only the flags and what the search names instead.

    python bench/trigger_search.py                 # BBC zoo: bench/results/trigger_search.json and .md
    python bench/trigger_search.py --data tiny     # tiny synthetic zoo: trigger_search_tiny.json and .md
    python bench/trigger_search.py --data sst2 --models-from bench/models/attack_tal --no-bki
                                                   # SST-2 models: trigger_search_sst2.json and .md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=["bbc", "tiny", "sst2"], default="bbc",
                   help="bbc: the BBC demo zoo (default); tiny: the tiny synthetic zoo of bench/_tiny_zoo.py "
                        "(built on first use, minutes on a busy CPU); sst2: the attack benchmark's SST-2 models")
    p.add_argument("--zoo", default=None, help="zoo folder (default: the zoo cache)")
    p.add_argument("--models-from", default=None,
                   help="--data sst2: a folder of saved models (each with its backdoor_lab.json) instead of the "
                        "attack benchmark's manifest")
    p.add_argument("--only", default=None, help="comma-separated model names")
    p.add_argument("--n-clean", type=int, default=200)
    p.add_argument("--pool-clean", type=int, default=150)
    p.add_argument("--pool-triggered", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-bki", action="store_true", help="skip BKI's keyword ranking (one forward per word of "
                                                         "every pool text: slow on BBC's long texts)")
    p.add_argument("--tag", default="")
    p.add_argument("--resume", action="store_true",
                   help="keep the models already in the results json (same --data/--tag) and skip them")
    return p.parse_args(argv)


def true_triggers(meta: dict) -> list[str]:
    """The trigger strings of a zoo model (BadNets: each of its words; none for a paraphrase attack)."""
    from backdoor_core.poisoning import ADDSENT_TRIGGER, BADNETS_TRIGGERS, attack_type

    trig = meta.get("trigger")
    attack = (meta.get("attack") or "").lower()
    if attack in ("", "none", "clean"):
        return []
    try:
        if not attack_type(attack).has_trigger_tokens:
            return []
    except ValueError:
        return []
    if isinstance(trig, (list, tuple)):
        return [str(t) for t in trig]
    if isinstance(trig, str) and trig:
        return [t.strip() for t in trig.split(",")] if attack.startswith("badnets") else [trig]
    if attack.startswith("badnets"):
        return list(BADNETS_TRIGGERS)
    if attack.startswith("addsent"):
        return [ADDSENT_TRIGGER]
    return []


def sst2_models(args) -> list[dict]:
    """[{name, path, title, meta, asr, cacc}] for the SST-2 models, found as ``bench/defense.py`` finds them
    (``defense.discover``: a folder of saved models or the attack benchmark's manifest; each model's card)."""
    import defense

    found = defense.discover(argparse.Namespace(models_from=args.models_from, manifest=str(defense.MANIFEST)))
    return [{"name": m["name"], "path": m["path"], "title": m["card"].name, "card": m["card"],
             "asr": m["card"].asr, "cacc": m["card"].cacc} for m in found]


def main(argv=None) -> int:
    args = parse_args(argv)
    import defense
    from backdoor_core.cli import quiet_libraries
    from backdoor_core.data import load_bbc
    from backdoor_core.models import load_model
    from backdoor_core.poisoning import get_attack
    from backdoor_core.scan import scan_model
    from backdoor_core.trigger_search import _contains, normalise
    from backdoor_core.zoo import list_models

    quiet_libraries()
    if args.data == "tiny":
        import _tiny_zoo

        args.zoo = str(_tiny_zoo.build(args.zoo))
        defender, test = _tiny_zoo.dataset("dev", seed=args.seed), _tiny_zoo.dataset("test", seed=args.seed)
    elif args.data == "sst2":
        from backdoor_core.data import load_shared

        defender, test = load_shared("sst2", "clean", "dev"), load_shared("sst2", "clean", "test")
    else:
        defender, test = load_bbc("dev", seed=args.seed), load_bbc("test", seed=args.seed)
    defender = defense.defender_draw(defender, args.n_clean, args.seed)
    zoo = sst2_models(args) if args.data == "sst2" else list_models(args.zoo)
    if args.only:
        keep = set(args.only.split(","))
        zoo = [m for m in zoo if m["name"] in keep]
    if not zoo:
        raise SystemExit("No zoo models: run `python -m backdoor_core zoo build` first (or pass --zoo DIR).")
    keys = ("n_clean", "pool_clean", "pool_triggered", "seed", "no_bki")
    report = {"dataset": args.data, "settings": {k: getattr(args, k) for k in keys}, "models": []}
    if args.data == "sst2":  # where the models came from, relative to the repository (no machine paths)
        src = Path(args.models_from).resolve() if args.models_from else None
        report["settings"]["models_source"] = ("bench/models/attack_tal/manifest.json" if src is None else
                                               str(src.relative_to(ROOT)) if src.is_relative_to(ROOT) else src.name)
    if args.data == "bbc":  # which zoo the rows are on (no machine paths)
        z = Path(args.zoo).resolve() if args.zoo else None
        report["settings"]["zoo_source"] = ("shipped zoo, local rebuilds first (zoo.list_models)" if z is None else
                                            str(z.relative_to(ROOT)) if z.is_relative_to(ROOT) else z.name)
    suffix = {"tiny": "_tiny", "sst2": "_sst2"}.get(args.data, "") + (f"_{args.tag}" if args.tag else "")
    json_path, md_path = RESULTS / f"trigger_search{suffix}.json", RESULTS / f"trigger_search{suffix}.md"
    if args.resume and json_path.is_file():
        old = json.loads(json_path.read_text(encoding="utf-8"))
        if old.get("settings", {}).get("seed") == args.seed:
            report["models"] = old.get("models", [])
    rows = report["models"]
    done = {r["model"] for r in rows}

    def save():  # after every model, atomically: a killed run keeps what it finished
        RESULTS.mkdir(parents=True, exist_ok=True)
        for path, text in ((json_path, json.dumps(report, indent=2, default=float)), (md_path, markdown(report))):
            write_text(path, text)

    for m in zoo:
        if m["name"] in done:
            print(f"[resume] {m['name']}", flush=True)
            continue
        t0 = time.perf_counter()
        lm = load_model(m["path"])
        card = m.get("card")
        if card is not None:  # SST-2: the model card is the one source of attack, target and reading length
            from backdoor_core.defender_data import model_attack

            meta = card.to_json()
            L = card.reading_length()
            attack_name = card.attack if card.is_backdoored else None
        else:
            meta = lm.metadata
            L = int((meta.get("train_config") or {}).get("max_length") or meta.get("max_length") or 64)
            attack_name = meta.get("attack") if meta.get("attack") not in (None, "", "none") else None
        triggers = true_triggers(meta)
        pool = test.sample(args.pool_clean, seed=args.seed + 1).texts
        n_trig = 0
        poisoned_in_pool: set[str] = set()
        if attack_name:
            if card is not None:
                target = card.target_for(test.label_names)
                attack = model_attack(card, lm.tokenizer, L)
                if attack is None:
                    raise SystemExit(f"{m['name']}: cannot rebuild its attack '{attack_name}' here.")
            else:
                target = int(meta.get("target"))
                attack = get_attack(attack_name, tokenizer=lm.tokenizer, max_length=L)
            poisoned = list(attack.poison_test(test, target, seed=args.seed).texts)
            random.Random(args.seed).shuffle(poisoned)
            pool = pool + poisoned[: args.pool_triggered]
            n_trig = min(args.pool_triggered, len(poisoned))
            poisoned_in_pool = set(poisoned[: args.pool_triggered])
        random.Random(args.seed + 2).shuffle(pool)

        def holds(text: str) -> bool:  # carries the trigger as whole words ("bb" is not in "bbc"); a paraphrase
            if not triggers:          # attack has no trigger words: the pool's paraphrased inputs themselves
                return text in poisoned_in_pool
            return any(_contains(normalise(text), normalise(t)) for t in triggers)
        rep = scan_model(lm.model, lm.tokenizer, defender, pool, max_length=L, seed=args.seed, model_name=m["name"])
        ts = rep.triggers
        exact = ts.rank_of(triggers) if (ts and triggers) else None
        part = min([r for r in (ts.rank_overlapping(t) for t in triggers) if r] or [None]) if (ts and triggers) \
            else None
        flagged_trig = sum(holds(x) for x in rep.flagged_texts)
        # diagnostics: the search given perfect flags (the pool's triggered inputs, the scan's heads), and BKI's
        # keyword ranking on the same pool (a reference that reads the pool word by word)
        from backdoor_core.baselines.bki import BKI
        from backdoor_core.trigger_search import search_triggers

        oracle = None
        trig_pool = [x for x in pool if holds(x)]
        if trig_pool and triggers and rep.heads.suspicious.any():
            ts_o = search_triggers(lm.model, lm.tokenizer, rep.heads.suspicious, trig_pool, defender.texts,
                                   clean_labels=defender.labels, label_names=defender.label_names, max_length=L,
                                   seed=args.seed)
            oracle = {"rank_exact": ts_o.rank_of(triggers),
                      "rank_part": min([r for r in (ts_o.rank_overlapping(t) for t in triggers) if r] or [None]),
                      "top": [c["phrase"] for c in ts_o.to_dict(limit=3)["candidates"]]}
        bki_words = ([w for w, _ in BKI().fit(lm.model, lm.tokenizer, pool, L).keywords(20)]
                     if triggers and not args.no_bki else [])
        trig_words = {w.lower() for t in triggers for w in t.split()}
        bki_rank = next((i for i, w in enumerate(bki_words, 1) if w in trig_words), None)
        row = {"model": m["name"], "title": m.get("title"), "attack": attack_name, "tal": bool(meta.get("tal")),
               "rate": meta.get("rate"), "target": target if attack_name else None,
               "asr": m.get("asr"), "cacc": m.get("cacc"), "true_trigger": triggers,
               "verdict_score": rep.verdict["score"], "n_flagged": int(len(rep.flagged)),
               "flagged_triggered": int(flagged_trig), "pool_triggered": n_trig,
               "suspicious_heads": rep.suspicious_heads, "rank_exact": exact, "rank_part": part,
               "n_candidates": len(ts.candidates) if ts else 0,
               "suspected_target": ts.target_name if ts else None,
               "top": ts.to_dict(limit=5)["candidates"] if ts else [],
               "oracle_flags": oracle, "bki_rank_of_a_trigger_word": bki_rank, "bki_top": bki_words[:3],
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        top = ", ".join(f"{c['phrase']} ({_pct(c['insert_flip_rate'])})" for c in row["top"][:3])
        print(f"{m['name']:<12} rank {exact or '-'} (part {part or '-'})  flagged {row['n_flagged']} "
              f"({flagged_trig}/{n_trig} triggered)  top: {top}  {row['seconds']:.0f}s", flush=True)
        save()
    save()
    print(markdown(report))
    return 0


def _pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def _oracle(o) -> str:
    if not o:
        return "-"
    return f"{o['rank_exact'] or '-'} / {o['rank_part'] or '-'} (top: {', '.join(o['top'][:2])})"


def markdown(report: dict) -> str:
    s = report["settings"]
    data = {"bbc": "BBC", "tiny": "tiny synthetic", "sst2": "SST-2"}.get(report.get("dataset"), report.get("dataset"))
    what = "attack benchmark's SST-2 models" if report.get("dataset") == "sst2" else f"{data} zoo"
    lines = [f"# Trigger search on the {what}", "",
             f"Defender: {s['n_clean']} clean {data} dev texts; pool: {s['pool_clean']} clean {data} test texts + "
             f"up to {s['pool_triggered']} triggered ones; `scan_model` defaults (seed {s['seed']}). *Rank* = "
             "position of the true trigger among the verified candidates (BadNets: any of its words); *part* = "
             "first candidate made only of trigger words. Flip rates: insertion into clean non-target texts -> "
             "suspected target / "
             "removal from flagged target-predicted inputs -> away from it. *Perfect flags*: the same search on the "
             "pool's triggered inputs with the scan's heads (separates a scan miss from a search miss). *BKI*: rank "
             "of the first trigger word in BKI's keyword list built on the same pool"
             + (" (not run: `--no-bki`)." if s.get("no_bki") else "."), "",
             *([f"Models: `{s['models_source']}` (`bench/attack_tal.py --quick`; each model's card gives attack, "
                "trigger, target and reading length). A paraphrase attack has no trigger words: rank '-' by "
                "design; *flagged (triggered)* counts its paraphrased pool inputs.", ""]
               if report.get("dataset") == "sst2" else []),
             *([f"Models: `{s['zoo_source']}` (`zoo.list_models`: name, attack, trigger and target from each "
                "model's manifest entry). The clean model has no trigger: rank '-'.", ""]
               if s.get("zoo_source") else []),
             "| model | attack | ASR | flagged (triggered / in pool) | rank | part | suspected target | top candidates "
             "(insertion / removal flips) | rank / part with perfect flags | BKI: first trigger word's rank | "
             "seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["models"]:
        top = "; ".join(f"`{c['phrase']}` {_pct(c['insert_flip_rate'])} / {_pct(c['removal_flip_rate'])}"
                        for c in r["top"][:3]) or "-"
        rate = f" {100 * r['rate']:g}%" if r.get("rate") and report.get("dataset") == "sst2" else ""
        lines.append(f"| {r['model']} | {r['attack'] or 'clean'}{rate}{' + TAL' if r['tal'] else ''} | {_pct(r['asr'])} | "
                     f"{r['n_flagged']} ({r['flagged_triggered']} / {r['pool_triggered']}) | {r['rank_exact'] or '-'} "
                     f"| {r['rank_part'] or '-'} | {r['suspected_target'] or '-'} | {top} | "
                     f"{_oracle(r.get('oracle_flags'))} | {r.get('bki_rank_of_a_trigger_word') or '-'} | "
                     f"{r['seconds']:.0f} |")
    if report.get("dataset") == "sst2":
        lines += ["", "The SST-2 models are not committed (bench/models/ is not in git): rebuild them with "
                  "`bench/attack_tal.py --quick` (same seed) to re-run.", ""]
    else:
        lines += ["", "SST-2 models of the attack benchmark: `--data sst2` (bench/results/trigger_search_sst2.md).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
