"""The plumbing the after-repair diagnostics share (``blend_check.py``, ``bias_check.py``): each runs
``bench/defense.py`` in its own process with our repair hooked (``run_patched``) to append one JSON line per repaired
model, then ``--report`` turns those lines into ``bench/results/<stem>.json`` / ``.md``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def run_patched(argv: list[str], measure: Callable[..., object]) -> int:
    """``bench/defense.py`` with ``argv``, in this process, with each of our repairs handed to ``measure(seen,
    repair, model, tokenizer, clean_train, knobs)``, which calls ``repair()`` (the defense as the bench asked for it;
    it may train ``model`` in place) and returns its result. ``seen`` holds what the bench is working on: the model's
    ``name`` and ``pool`` (from its scan), and its evaluation sets — the CACC ``texts`` / ``labels`` (``(n,)``), the
    ``asr_texts`` and ``target`` — with the bench's own ``evaluate`` (``training.make_evaluator``). The other defenses
    run untouched; the patches are undone when the bench returns. Patching works in this process only, so run one
    process per (dataset, seed) group rather than ``--workers``."""
    import numpy as np

    import backdoor_core.defenses as D
    import backdoor_core.scan as SC
    import backdoor_core.training as T

    sys.path.insert(0, str(ROOT / "bench"))
    import defense as bench

    seen: dict = {}
    originals = make_evaluator, run_defense, scan_model = T.make_evaluator, D.run_defense, SC.scan_model

    def evaluator(tokenizer, clean_set, poisoned_texts, target, *a, **k):
        seen.update(texts=list(clean_set.texts), labels=np.asarray(clean_set.labels),
                    asr_texts=list(poisoned_texts or []), target=target,
                    evaluate=make_evaluator(tokenizer, clean_set, poisoned_texts, target, *a, **k))
        return seen["evaluate"]

    def scan(model, tokenizer, clean, pool, **k):
        seen.update(name=k.get("model_name"), pool=list(pool))
        return scan_model(model, tokenizer, clean, pool, **k)

    def defend(name, model, tokenizer, clean_train, **knobs):
        def repair():
            return run_defense(name, model, tokenizer, clean_train, **knobs)

        return measure(seen, repair, model, tokenizer, clean_train, knobs) if name == "alignment" else repair()

    T.make_evaluator, D.run_defense, SC.scan_model = evaluator, defend, scan
    try:
        return bench.main(argv)
    finally:
        T.make_evaluator, D.run_defense, SC.scan_model = originals


def read_rows(paths: list[str]) -> list[dict]:
    """Every JSON line of ``paths``, in order (blank lines skipped). A last line without its newline that is not
    JSON is a row a killed run was appending: it is left out, with a note on stderr (it had stopped the report)."""
    rows = []
    for p in paths:
        text = Path(p).read_text()
        lines = text.splitlines()
        for k, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if k == len(lines) - 1 and not text.endswith("\n"):
                    print(f"note: {p}: its last line is a row cut short (a killed run); left out", file=sys.stderr)
                    continue
                raise
    return rows


def write_results(stem: str, payload: dict, lines: list[str]) -> None:
    """``bench/results/<stem>.json`` (``payload``) and ``.md`` (``lines``), written atomically; the table printed."""
    from backdoor_core.atomic import write_text
    from backdoor_core.bench_results import results_dir

    out = results_dir() / stem
    write_text(out.with_suffix(".json"), json.dumps(payload, indent=2))
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(doc: str, run: Callable[[str, list[str]], int], report: Callable[[str, list[str]], int]) -> int:
    """``script OUT.jsonl BENCH_ARGS...`` runs; ``script --report NOTE OUT.jsonl...`` reports; no argument: usage."""
    args = sys.argv[1:]
    if not args:
        raise SystemExit(doc)
    return report(args[1], args[2:]) if args[0] == "--report" else run(args[0], args[1:])
