"""Which before / after view shows a repair: the heads' similarity on triggered inputs, or the trigger's lift?

For every backdoored model of the BBC demo zoo (tuning data), repair it as a user would
(``python -m backdoor_core sanitize MODEL --clean-data bbc --pool assets/examples/inputs.txt``, the defaults) and
measure, on the repaired heads and on the others, before and after, over the same ``repair_effect.TEXTS`` test
texts the Sanitize page uses:

* ``sim_triggered``: each head's mean similarity to its layer's others on the triggered texts (the view the
  Sanitize page drew until session 34);
* ``lift``: the same on the triggered texts minus on their clean counterparts (``repair_effect``, the view now);
* ``concentration``: the share of attention on the trigger's tokens.

    python bench/repair_effect.py            # -> bench/results/repair_effect.json and .md (about 6 min)
"""

from __future__ import annotations

import json
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
MODELS = ("addsent", "badnets", "badnets-2", "badnets-tal")


def measure(name: str, work: Path) -> dict:
    from backdoor_core import defender_data as D
    from backdoor_core.data import load_dataset
    from backdoor_core.detection import attention_stats
    from backdoor_core.models import load_model
    from backdoor_core.repair_effect import repair_effect, triggered_pairs

    out = work / name
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "backdoor_core", "sanitize", str(ROOT / "assets" / "zoo" / name),
                           "--clean-data", "bbc", "--pool", str(ROOT / "assets" / "examples" / "inputs.txt"),
                           "--out", str(out), "--json"], capture_output=True, text=True, cwd=ROOT, check=True)
    wall = time.time() - t0
    summary = json.loads(proc.stdout)
    suspect, repaired = load_model(ROOT / "assets" / "zoo" / name), load_model(out)
    test = load_dataset("bbc", "test")
    read_len = D.model_max_length(suspect)
    attack = D.model_attack(suspect.card, suspect.tokenizer, read_len)
    target = suspect.card.target_for(test.label_names)
    heads = summary["details"].get("suspicious_heads") or []
    eff = repair_effect(suspect, repaired, attack, test, target, read_len, heads=heads)
    triggered, _ = triggered_pairs(attack, test, target)
    texts = [ex.text for ex in triggered]
    sim = {k: attention_stats(m.model, m.tokenizer, texts, read_len, cls=False).head_sim.mean(0)
           for k, m in (("before", suspect), ("after", repaired))}
    m = eff.mask
    row = {"model": name, "heads": len(heads), "seconds": round(wall, 1),
           "asr_before": summary["before"].get("asr"), "asr_after": summary["after"].get("asr"),
           "cacc_before": summary["before"].get("cacc"), "cacc_after": summary["after"].get("cacc")}
    for part, sel in (("repaired", m), ("other", ~m)):
        row[f"sim_triggered_{part}"] = [float(sim["before"][sel].mean()), float(sim["after"][sel].mean())]
        row[f"lift_{part}"] = [float(eff.before.lift[sel].mean()), float(eff.after.lift[sel].mean())]
        row[f"concentration_{part}"] = [float(eff.before.concentration[sel].mean()),
                                        float(eff.after.concentration[sel].mean())]
    return row


def markdown(rows: list[dict]) -> str:
    def pair(v):
        return f"{v[0]:.2f} → {v[1]:.2f}"

    lines = ["# Repair effect: what a before / after view of the heads should show", "",
             "BBC demo zoo (tuning data), `sanitize` defaults, "
             f"{__import__('backdoor_core.repair_effect', fromlist=['TEXTS']).TEXTS} test texts with the card's "
             "trigger. Means over the repaired heads (and over the other heads), before → after.", "",
             "| model | repaired heads | ASR | CACC | similarity on triggered, repaired | lift, repaired | "
             "lift, others | attention on trigger, repaired | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['heads']} | {100 * r['asr_before']:.1f} → {100 * r['asr_after']:.1f}% | "
                     f"{100 * r['cacc_before']:.1f} → {100 * r['cacc_after']:.1f} | "
                     f"{pair(r['sim_triggered_repaired'])} | {pair(r['lift_repaired'])} | {pair(r['lift_other'])} | "
                     f"{pair(r['concentration_repaired'])} | {r['seconds']:.0f} |")
    lines += ["", "lift: a head's mean similarity to its layer's other heads on the triggered texts minus on the same "
              "texts without the trigger (`backdoor_core/repair_effect.py`). s: the `sanitize` command's wall time, "
              "loading and evaluation included."]
    return "\n".join(lines) + "\n"


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            rows.append(measure(name, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    md = markdown(rows)
    print(md)
    write_text(RESULTS / "repair_effect.json", json.dumps({"rows": rows}, indent=1) + "\n")
    write_text(RESULTS / "repair_effect.md", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
