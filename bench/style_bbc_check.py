"""Check of the scan's fusion knob on the shipped BBC demo zoo (part of the tuning zoo): attention-only vs fused
scan with the Detect page's defaults (``settings.QUICK_CLEAN_BUDGET`` clean BBC dev texts, a simulated pool of
``settings.POOL_CLEAN`` clean test texts + ``settings.POOL_TRIGGERED`` triggered ones, ``defender_data.build_pool``).
One JSON line per model: verdict, pool inputs flagged (triggered among them), representation share, seconds.

    FUSE=max python bench/style_bbc_check.py clean badnets-tal addsent badnets
    REP_METHOD=both python bench/style_bbc_check.py clean badnets-tal addsent badnets

``REP_METHOD`` picks the fused scan's representation part (``settings.REP_METHOD``). Results (fusion by max and by
sum): ``bench/results/style_ablation_bbc.json``; with the pool contrast: ``bench/results/style_contrast_bbc.json``.
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from backdoor_core import settings as S  # noqa: E402
from backdoor_core.data import load_bbc  # noqa: E402
from backdoor_core.defender_data import build_pool  # noqa: E402
from backdoor_core.scan import scan_model  # noqa: E402
from backdoor_core.models import load_adapter_model  # noqa: E402

FUSE = os.environ.get("FUSE", S.FUSE)
REP_METHOD = os.environ.get("REP_METHOD", S.REP_METHOD)

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="BBC demo zoo model names (assets/zoo/<name>)")
    names = ap.parse_args().models
    zoo_dir = Path(__file__).resolve().parents[1] / "assets" / "zoo"
    known = sorted(p.name for p in zoo_dir.iterdir() if p.is_dir())
    if set(names) - set(known):
        ap.error(f"not in the demo zoo: {', '.join(sorted(set(names) - set(known)))} (choose from {', '.join(known)})")
    torch.set_num_threads(1)
    dev, test = load_bbc("dev"), load_bbc("test")
    for name in names:
        lm = load_adapter_model(zoo_dir / name)
        pool, is_t = build_pool(lm, test, S.POOL_CLEAN, S.POOL_TRIGGERED, seed=0)
        clean = dev.sample(min(S.QUICK_CLEAN_BUDGET, len(dev)), seed=0)
        out = {"model": name, "fuse": FUSE, "rep_method": REP_METHOD, "pool_triggered": int(is_t.sum())}
        for rep in (False, True):
            r = scan_model(lm.model, lm.tokenizer, clean, pool, max_length=64, seed=0, representation=rep,
                           find_triggers=False, fuse=FUSE, rep_method=REP_METHOD)
            out["fused" if rep else "attention"] = {
                "verdict": round(r.verdict["score"], 3), "flagged": len(r.flagged),
                "flagged_triggered": int(is_t[r.flagged].sum()), "share": r.representation_share,
                "seconds": round(r.seconds, 1)}
        print(json.dumps(out), flush=True)
