"""``zoo``: build or list the demo model zoo (clean and backdoored BBC News classifiers).

    python -m backdoor_core zoo list             # the shipped zoo (assets/zoo) and any local rebuild
    python -m backdoor_core zoo build --force    # retrain the adapters reproducibly (one thread; minutes per model)
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..cli import accepts_stdin, ctrl_c_stops, format_table, full_path, print_json, progress_bar
from ..device import add_device_args


def register(sub) -> None:
    p = sub.add_parser("zoo", help="build or list the demo model zoo (BBC News, clean and backdoored)")
    zsub = p.add_subparsers(dest="zoo_command", required=True, metavar="build|list")
    b = zsub.add_parser("build", help="train the zoo models that are not cached yet")
    b.add_argument("--dir", default=None, help="zoo folder (default: $BACKDOOR_ZOO_DIR, else "
                                               "backdoor-attention-lab/zoo under $XDG_CACHE_HOME or ~/.cache)")
    b.add_argument("--force", action="store_true", help="rebuild models that are already cached")
    b.add_argument("--only", default=None, help="comma-separated model names (default: all)")
    add_device_args(b)
    accepts_stdin(b, refused={"dir": "the zoo is a folder"})
    b.set_defaults(func=run_build)
    ls = zsub.add_parser("list", help="show the zoo's models with CACC and ASR")
    ls.add_argument("--dir", default=None, help="zoo folder (default as for build)")
    ls.add_argument("--json", action="store_true")
    accepts_stdin(ls, refused={"dir": "the zoo is a folder"})
    ls.set_defaults(func=run_list)


def _table(rows) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    view = [{
        "name": r["name"], "attack": r["attack"] or "-", "rate": pct(r["rate"]) if r["attack"] != "none" else "-",
        "TAL": "yes" if r["tal"] else "no", "target": r.get("target_name") or "-",
        "CACC": pct(r["cacc"]), "ASR": pct(r["asr"]),
        "train s": "-" if r["training_seconds"] is None else f"{r['training_seconds']:.0f}",
    } for r in rows]
    return format_table(view, ["name", "attack", "rate", "TAL", "target", "CACC", "ASR", "train s"])


def run_list(args) -> int:
    """Print the zoo's models. A ``--dir`` that is not a folder is an error (exit 2), not 'no zoo models in
    <typo>; build them'."""
    from ..zoo import default_zoo_dir, list_models

    if args.dir is not None and not Path(args.dir).expanduser().is_dir():
        what = "is a file" if Path(args.dir).expanduser().exists() else "does not exist"
        raise FileNotFoundError(f"--dir {args.dir} {what}; give the zoo folder (or leave --dir out for the "
                                "shipped zoo and the one built here).")
    rows = list_models(args.dir)
    if args.json:
        print_json(rows)
        return 0
    from ..zoo import shipped_zoo_dir

    where = full_path(args.dir) if args.dir else f"{shipped_zoo_dir()} (shipped) + {default_zoo_dir()} (built here)"
    if not rows:
        print(f"no zoo models in {where}; build them with: python -m backdoor_core zoo build")
        return 0
    print(f"zoo: {where}")
    print(_table(rows))
    return 0


def run_build(args) -> int:
    from tqdm import tqdm  # its write() keeps a bar on a terminal below the line; elsewhere it prints the line

    from .. import zoo
    from ..models import load_model
    specs = zoo.ZOO_SPECS
    if args.only is not None:  # an empty --only (a script's empty variable) names none, not all of them (hours)
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        if not wanted:
            raise ValueError(f"--only {args.only!r} names no zoo model; give names from "
                             f"{', '.join(s.name for s in specs)}, or leave --only out to build them all.")
        unknown = sorted(set(wanted) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"Unknown zoo model(s) {unknown}; known: {', '.join(s.name for s in specs)}.")
        specs = [s for s in specs if s.name in wanted]
    state = {"bar": None, "index": -1}

    def on_progress(z) -> None:
        p = z.progress
        if p is None:
            if z.message:
                tqdm.write(f"[{z.index + 1}/{z.count}] {z.message}"
                           + (f"  CACC={z.metrics['cacc']:.4f}" if z.metrics.get("cacc") is not None else "")
                           + (f" ASR={z.metrics['asr']:.4f}" if z.metrics.get("asr") is not None else ""),
                           file=sys.stderr)
            return
        if state["index"] != z.index:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = progress_bar(total=p.total_steps, desc=f"[{z.index + 1}/{z.count}] {z.name}")
            state["index"] = z.index
        bar = state["bar"]
        if p.metrics is None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in p.losses.items() if k != "loss"}, refresh=False)
        bar.update(p.step - bar.n)

    try:
        with ctrl_c_stops("stopping after this step; finished models are kept (Ctrl-C again to abort)...") as stop:
            rows = zoo.build(args.dir, progress=on_progress, should_stop=stop, specs=specs, force=args.force,
                             model_factory=lambda names: load_model("default", label_names=names,
                                                                    device=args.device, dtype=args.dtype))
    finally:
        if state["bar"] is not None:
            state["bar"].close()
    where = full_path(args.dir or zoo.default_zoo_dir())
    if rows:
        print(f"zoo: {where}")
        print(_table(rows))
    else:  # a build cancelled before its first model: no empty table under 'the models above'
        print(f"no zoo models in {where}")
    if stop():
        done = "the models above are complete" if rows else "no model was finished"
        print(f"build cancelled: {done}; run `zoo build` again to finish", file=sys.stderr)
        return 130
    return 0
