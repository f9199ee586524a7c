"""The demo zoo as shipped (LoRA adapters merged into MiniLM) against full fine-tuning, and the build's
reproducibility. Writes bench/results/zoo_build.json and .md.

Subcommands (each prints what it did; results merge into the JSON so they can run at different times):

* ``full --only badnets-tal,badnets-2``: train full fine-tuned references with the zoo's recipe
  (``settings.ZOO_RECIPE``: every weight trains, lr 2e-4) under the same ``zoo.deterministic()`` context, saved
  to ``bench/models/zoo-full/<name>`` (not committed).
* ``evaluate [--dir assets/zoo] [--full]``: for each zoo model (and each full reference found): CACC / ASR on the
  zoo's test sample, the scan's verdict and suspicious heads (``scan`` CLI defaults: 400 clean BBC dev texts,
  a pool of 150 clean + 30 triggered test texts), and our repair with default settings (ASR / CACC after).
* ``compare A B``: two zoo builds' manifests and cards side by side (sha256 per adapter, CACC, ASR).
* ``report``: rewrite the Markdown from the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from backdoor_core.atomic import write_text  # noqa: E402
from backdoor_core.bench_results import results_dir  # noqa: E402

RESULTS = results_dir()
FULL_DIR = ROOT / "bench" / "models" / "zoo-full"
OUT = RESULTS / "zoo_build.json"


def _load() -> dict:
    try:
        return json.loads(OUT.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save(data: dict) -> None:
    write_text(OUT, json.dumps(data, indent=2, default=float) + "\n")
    report(data)


def train_full(only: list[str]) -> None:
    from backdoor_core import zoo
    from backdoor_core.model_card import default_target
    from backdoor_core.models import load_model, save_model
    from backdoor_core.poisoning import get_attack, train_attack
    from backdoor_core.training import TrainConfig

    cfg = dict(zoo.ZOO_SETTINGS)
    train, test = zoo._load_data(cfg)
    names = list(train.label_names)
    target = default_target(names)
    config = TrainConfig(lr=cfg["lr"], epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                         max_length=cfg["max_length"], seed=cfg["seed"], eval_every=0)
    for spec in zoo.ZOO_SPECS:
        if spec.name not in only:
            continue
        t0 = time.perf_counter()
        with zoo.deterministic():
            lm = load_model("default", label_names=names)
            attack = get_attack(spec.attack, tokenizer=lm.tokenizer, max_length=config.max_length) \
                if spec.attack else None
            out = train_attack(lm.model, lm.tokenizer, train, test, attack, spec.rate, target, config, tal=spec.tal,
                               data_name="bbc")
        card = out.card.replace(name=f"full-{spec.name}", title=f"{spec.title} (full fine-tuning)",
                                target_name=names[target] if spec.attack else None)
        save_model(lm.model, lm.tokenizer, FULL_DIR / spec.name, card)
        print(f"{spec.name}: CACC {card.cacc:.3f} ASR {card.asr} in {time.perf_counter() - t0:.0f} s", flush=True)


def evaluate(zoo_dir: Path, with_full: bool, only: list[str] | None) -> None:
    import copy

    from backdoor_core import defender_data as D
    from backdoor_core import settings as S
    from backdoor_core import zoo
    from backdoor_core.data import load_dataset
    from backdoor_core.defenses import run_defense
    from backdoor_core.models import load_model
    from backdoor_core.scan import scan_model

    data = _load()
    cfg = dict(zoo.ZOO_SETTINGS)
    _, test_zoo = zoo._load_data(cfg)
    dev = load_dataset("bbc", split="dev")
    test = load_dataset("bbc", split="test")
    targets = [(f"lora:{s.name}", zoo_dir / s.name) for s in zoo.ZOO_SPECS]
    if with_full:
        targets += [(f"full:{s.name}", FULL_DIR / s.name) for s in zoo.ZOO_SPECS if (FULL_DIR / s.name).is_dir()]
    rows = data.setdefault("models", {})
    for key, path in targets:
        if only and key.split(":", 1)[1] not in only:
            continue
        if not path.is_dir():
            continue
        t0 = time.perf_counter()
        lm = load_model(path)
        load_s = time.perf_counter() - t0
        zoo_eval = D.make_eval(lm, test_zoo, len(test_zoo))(lm.model)  # the zoo's own 300-text test sample
        clean = dev.sample(S.SCAN_CLEAN_BUDGET, seed=0) if len(dev) > S.SCAN_CLEAN_BUDGET else dev
        pool, truth = D.build_pool(lm, test, S.POOL_CLEAN, S.POOL_TRIGGERED)
        t0 = time.perf_counter()
        work = copy.deepcopy(lm)
        report = scan_model(work.model, work.tokenizer, clean, pool, max_length=D.model_max_length(lm),
                            model_name=lm.name)
        scan_s = time.perf_counter() - t0
        row = {"path": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
               "load_s": round(load_s, 2), "cacc": zoo_eval.get("cacc"), "asr": zoo_eval.get("asr"),
               "card_cacc": lm.card.cacc, "card_asr": lm.card.asr,
               "verdict": bool(report.verdict.get("likely_backdoored")),
               "verdict_score": report.verdict.get("score"), "suspicious_heads": list(report.suspicious_heads),
               "flagged_triggered": int(truth[list(map(int, report.flagged))].sum()) if len(report.flagged) else 0,
               "flagged": len(report.flagged), "pool_triggered": int(truth.sum()), "scan_s": round(scan_s, 1)}
        if lm.card.is_backdoored:
            t0 = time.perf_counter()
            work = copy.deepcopy(lm)
            ev = D.make_eval(work, test, S.EVAL_TEXTS)
            before = ev(work.model)
            try:
                res = run_defense("alignment", work.model, work.tokenizer, dev.sample(S.CLEAN_BUDGET, seed=0),
                                  pool_texts=None, max_length=D.model_max_length(lm), scan=report)
                after = ev(res.model)
                row.update({"asr_before": before.get("asr"), "cacc_before": before.get("cacc"),
                            "asr_after": after.get("asr"), "cacc_after": after.get("cacc"),
                            "repaired_heads": res.details.get("suspicious_heads"),
                            "sanitize_s": round(time.perf_counter() - t0, 1)})
            except ValueError as exc:  # e.g. no suspicious head to repair
                row["sanitize_error"] = str(exc)
        rows[key] = row
        print(key, json.dumps({k: v for k, v in row.items() if k != "suspicious_heads"}, default=float), flush=True)
        _save(data)
    shown = Path(zoo_dir).resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown.name  # no machine paths in results
    data.setdefault("meta", {})["evaluate"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "zoo": str(shown)}
    _save(data)


def compare(a: Path, b: Path, label: str) -> None:
    from backdoor_core import zoo
    from backdoor_core.zoo_files import read_manifest

    data = _load()
    ma, mb = read_manifest(a).get("models", {}), read_manifest(b).get("models", {})
    ra = {r["name"]: r for r in zoo.list_models(a, shipped=False)}
    rb = {r["name"]: r for r in zoo.list_models(b, shipped=False)}
    rows = []
    for name in sorted(set(ma) | set(mb), key=lambda n: [s.name for s in zoo.ZOO_SPECS].index(n)
                       if n in [s.name for s in zoo.ZOO_SPECS] else 99):
        x, y = ma.get(name, {}), mb.get(name, {})
        rows.append({"name": name, "sha_a": x.get("sha256"), "sha_b": y.get("sha256"),
                     "identical": (x.get("sha256") == y.get("sha256")) if x and y else None,
                     "cacc_a": ra.get(name, {}).get("cacc"), "cacc_b": rb.get(name, {}).get("cacc"),
                     "asr_a": ra.get(name, {}).get("asr"), "asr_b": rb.get(name, {}).get("asr"),
                     "build_s_a": ra.get(name, {}).get("training_seconds"),
                     "build_s_b": rb.get(name, {}).get("training_seconds")})
    data.setdefault("rebuilds", {})[label] = {"a": str(a), "b": str(b), "rows": rows}
    _save(data)
    for r in rows:
        print(r["name"], {True: "identical", False: "DIFFERENT", None: "not rebuilt"}[r["identical"]], r["asr_a"],
              r["asr_b"])


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def report(data: dict) -> None:
    md = ["# Demo zoo: shipped LoRA adapters vs full fine-tuning, and rebuilds", "",
          "Produced by `bench/zoo_build.py` (see its docstring for each subcommand). The zoo trains on 1000 BBC News "
          "training articles (max 64 tokens, 2 epochs, batch 16); CACC on its 300-article test sample, ASR on that "
          "sample's non-target rows with the trigger. Shipped: LoRA rank 8 (alpha 16, lr 1e-3) on every encoder "
          "layer's query/key/value/attention-output/FFN and the pooler, plus the classifier head in full. Full: every "
          "weight trains (lr 2e-4), the recipe the zoo used before.", ""]
    models = data.get("models", {})
    if models:
        md += ["## What the lab shows on each model", "",
               "Scan: the `scan` CLI defaults (400 clean BBC dev texts; pool of 150 clean + 30 triggered test texts). "
               "Repair: our alignment defense with default settings on 300 clean dev texts and the scan's flagged "
               "inputs; ASR/CACC before -> after on 200 test texts.", "",
               "| model | CACC | ASR | verdict (score) | flagged (triggered) | suspicious heads | ASR after repair | "
               "CACC after | scan s | repair s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for key, r in models.items():
            heads = r.get("suspicious_heads") or []
            md.append(f"| {key} | {_pct(r.get('cacc'))} | {_pct(r.get('asr'))} | "
                      f"{'likely' if r.get('verdict') else 'not found'} ({r.get('verdict_score', 0):.2f}) | "
                      f"{r.get('flagged')} ({r.get('flagged_triggered')}/{r.get('pool_triggered')}) | "
                      f"{len(heads)}: {', '.join(heads[:8])}{' …' if len(heads) > 8 else ''} | "
                      f"{_pct(r.get('asr_before'))} -> {_pct(r.get('asr_after'))} | "
                      f"{_pct(r.get('cacc_before'))} -> {_pct(r.get('cacc_after'))} | {r.get('scan_s', '—')} | "
                      f"{r.get('sanitize_s', '—')} |")
        md.append("")
    for label, rb in data.get("rebuilds", {}).items():
        md += [f"## Rebuild: {label}", "", f"`{rb['a']}` vs `{rb['b']}`", "",
               "| model | adapter sha256 (first 16) | identical bytes | CACC | ASR | build s |", "|---|---|---|---|---|---|"]
        for r in rb["rows"]:
            md.append(f"| {r['name']} | {str(r['sha_a'])[:16]} / {str(r['sha_b'])[:16]} | "
                      f"{ {True: 'yes', False: 'NO', None: 'not rebuilt'}[r['identical']] } | "
                      f"{_pct(r['cacc_a'])} / {_pct(r['cacc_b'])} | "
                      f"{_pct(r['asr_a'])} / {_pct(r['asr_b'])} | {r['build_s_a']} / {r['build_s_b']} |")
        md.append("")
    if data.get("notes"):
        md += ["## Notes", ""] + [f"* {n}" for n in data["notes"]] + [""]
    write_text(RESULTS / "zoo_build.md", "\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("full")
    f.add_argument("--only", required=True)
    e = sub.add_parser("evaluate")
    e.add_argument("--dir", default=str(ROOT / "assets" / "zoo"))
    e.add_argument("--full", action="store_true")
    e.add_argument("--only", default=None)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--label", default="two builds")
    sub.add_parser("report")
    args = ap.parse_args()
    from backdoor_core.cli import quiet_libraries

    quiet_libraries()
    if args.cmd == "full":
        train_full([s.strip() for s in args.only.split(",")])
    elif args.cmd == "evaluate":
        evaluate(Path(args.dir), args.full, args.only.split(",") if args.only else None)
    elif args.cmd == "compare":
        compare(Path(args.a), Path(args.b), args.label)
    else:
        report(_load())


if __name__ == "__main__":
    main()
