"""``scan``: trigger-agnostic backdoor scan — verdict, suspicious heads, flagged inputs; ``--json`` / ``--html``."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import settings as S
from ..atomic import write_text
from ..cli import (STDIN_HELP, accepts_stdin, format_table, max_length_int, nonnegative_int, open_unit_float,
                   full_path, positive_int, print_json, share_float, stderr_is_terminal, terminal_safe, unit_float)
from ..device import add_device_args

MAX_LENGTH_HELP = (f"tokens the model reads (default: the length it was trained with, from its model card, else "
                   f"{S.MAX_LENGTH}; capped at the model's position embeddings)")


def add_data_args(p, clean_default_split: str = "dev", n_clean: int = S.SCAN_CLEAN_BUDGET) -> None:
    """Arguments shared by ``scan`` and ``sanitize``."""
    p.add_argument("model", help="'default', a model directory, or a hub id")
    p.add_argument("--clean-data", required=True,
                   help="the defender's clean labelled data: 'bbc', 'sst2', 'sst2/clean/dev', a .tsv/.csv/.jsonl "
                        f"file, a folder with <split>.tsv, or hf:<id>; {STDIN_HELP} (a TSV/CSV header naming the "
                        "text column, or JSON Lines)")
    p.add_argument("--clean-split", default=clean_default_split, help=f"split of --clean-data (default "
                                                                      f"{clean_default_split})")
    p.add_argument("--n-clean", type=positive_int, default=n_clean, help=f"use at most this many clean texts (default "
                                                                f"{n_clean}; a seeded sample)")
    p.add_argument("--pool", default=None,
                   help="unlabelled inputs that may contain triggered ones: a .txt file (one text per line), a "
                        ".tsv/.csv/.jsonl/.json file (its text column; .json as JSON Lines), or a dataset spec like "
                        f"--clean-data; {STDIN_HELP} (a table with a header naming the text column, JSON Lines, "
                        "else one text per line)")
    p.add_argument("--pool-split", default="test", help="split when --pool is a dataset spec (default test)")
    p.add_argument("--max-length", type=max_length_int, default=None, help=MAX_LENGTH_HELP)
    p.add_argument("--seed", type=int, default=S.SEED, help="seed for samples and splits")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickled weights (runs code from the file)")
    add_device_args(p)


def register(sub) -> None:
    p = sub.add_parser("scan", help="find a backdoor without knowing the trigger: verdict, heads, flagged inputs")
    add_data_args(p)
    p.add_argument("--frr", type=open_unit_float, default=S.FRR,
                   help=f"false-rejection rate on clean dev data (default {S.FRR:g})")
    p.add_argument("--top-k", type=positive_int, default=None,
                   help="exactly this many suspicious heads (default: rule)")
    p.add_argument("--rel-threshold", type=unit_float, default=S.REL_THRESHOLD,
                   help=f"suspicious when score >= this x the best head's score (default {S.REL_THRESHOLD:g})")
    p.add_argument("--max-fraction", type=share_float, default=S.MAX_FRACTION,
                   help=f"at most this share of heads (default {S.MAX_FRACTION:g})")
    p.add_argument("--no-refine", action="store_true",
                   help="skip the refined passes (re-flagging the pool by the suspicious heads' focus)")
    p.add_argument("--base", default=None, metavar="SPEC",
                   help="also list the words no clean text holds whose input embeddings moved most since the "
                        "pretrained encoder the model was fine-tuned from (a folder, a hub id or 'default', the "
                        "packaged all-MiniLM-L6-v2); checked against the model's own weights. The verdict reads "
                        f"the moved words the pool concentrates against it (without it: {S.SCAN_BASE})")
    p.add_argument("--show", type=nonnegative_int, default=10, help="how many flagged inputs and heads to print")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--html", default=None, metavar="PATH",
                   help="also write a self-contained HTML report (an existing file is replaced only when it is "
                        "one of the lab's reports, or with --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --html file that is not a lab report")
    accepts_stdin(p, tables=["clean_data"], texts=["pool"],
                  refused={"model": "a model is a folder", "html": "the report is written to a file (stdout holds "
                           "the scan's text or --json)", "base": "an encoder is a folder or a hub id"})
    p.set_defaults(func=run)


def read_pool(spec: str | None, split: str = "test") -> list[str]:
    """Texts of a pool given as a file (.txt lines, or a table's text column: ``data.read_texts``, with its size,
    line and row caps) or a dataset spec."""
    if not spec:
        return []
    from ..data import load_dataset, read_texts

    path = Path(spec).expanduser()
    if path.is_file():
        return read_texts(path)
    return list(load_dataset(spec, split=split).texts)


def warn_card(lm) -> None:
    """One ``warning:`` line on stderr per field the model card dropped (hostile or broken metadata), and a
    ``note:`` line per thing the load ignored on purpose (``LoadedModel.load_notes``). Both quote the model's
    files, so they pass through ``cli.terminal_safe`` (stderr also carries the progress bars and is not wrapped
    as stdout is)."""
    for w in lm.card.warnings:
        print(f"warning: {terminal_safe(w)}", file=sys.stderr)
    for n in lm.load_notes:
        print(f"note: {terminal_safe(n)}", file=sys.stderr)


def resolve_max_length(args, lm) -> int:
    """``--max-length`` when given, else the model card's rule (``defender_data.model_max_length``); then
    validated and capped at the model's position embeddings (``cli.fit_max_length``, a note on stderr)."""
    from ..cli import fit_max_length
    from ..defender_data import model_max_length

    if args.max_length is None:
        args.max_length = model_max_length(lm)
    return fit_max_length(args, lm)


def load_inputs(args):
    """(LoadedModel, clean TextDataset, pool texts) from the shared arguments, with plain errors; fills in
    ``args.max_length`` from the model card when it was not given."""
    from ..data import load_dataset
    from ..models import load_model
    from ..scan import check_clean_set

    lm = load_model(args.model, allow_pickle=args.allow_pickle, device=args.device, dtype=args.dtype)
    warn_card(lm)
    resolve_max_length(args, lm)
    clean = load_dataset(args.clean_data, split=args.clean_split, seed=args.seed, label_names=lm.label_names)
    if args.n_clean is not None and len(clean) > args.n_clean:
        clean = clean.sample(args.n_clean, seed=args.seed)
    check_clean_set(clean, lm.num_labels, model_names=lm.label_names)
    pool = read_pool(args.pool, args.pool_split)
    return lm, clean, pool


def _progress_printer(enabled: bool, terminal: bool = True):
    """The scan's ``progress(stage, done, total)`` on stderr (``cli.stage_printer``): one line rewritten in place on
    a terminal, whole lines elsewhere; None when not ``enabled``."""
    if not enabled:
        return None
    from ..cli import stage_printer

    return stage_printer(terminal=terminal)


def run(args) -> int:
    from ..detection import (called_heads, chance_note, heads_noun, pool_shift_note, representation_notes, call_note,
                             score_text, verdict_call, verdict_label)
    from ..atomic import check_output_file
    from ..report import REPORT_MARK
    from ..scan import scan_model

    if args.html is not None:  # refuse a path that cannot be written before the scan, not after it
        check_output_file(args.html, force=args.force, ours=REPORT_MARK)
    lm, clean, pool = load_inputs(args)
    report = scan_model(
        lm.model, lm.tokenizer, clean, pool, frr=args.frr, top_k=args.top_k, rel_threshold=args.rel_threshold,
        max_fraction=args.max_fraction, max_length=args.max_length, seed=args.seed, model_name=lm.name,
        max_clean=None, refine=not args.no_refine, progress=_progress_printer(True, stderr_is_terminal()),
        base=args.base or S.SCAN_BASE,
    )
    data = report.to_dict()
    drift = _drift(args, lm, clean, pool)
    if drift is not None:
        data["drifted_words"] = drift
    html = write_html(report, args.html, drift) if args.html else None
    if args.json:
        print_json(data)
        return 0
    v = data["verdict"]
    d = data["detection"]
    info = data["architecture"]
    print(f"model      {lm.name} ({info['name']}, {lm.num_layers} layers x {lm.num_heads} heads)")
    if len(set(info["layer_kinds"])) > 1:
        print(f"layers     {', '.join(f'L{i} {k}' for i, k in enumerate(info['layer_kinds']))}")
    for key in ("focus", "similarity"):
        if key in info["notes"]:
            print(f"note       {info['notes'][key]}")
    label = verdict_label(v)
    print(f"verdict    {label.upper() if verdict_call(v) == 'likely' else label} "
          f"(score {score_text(v['score'])}, from {v['basis']})")
    note, shift_note = call_note(v), pool_shift_note(v)
    if note:
        print(f"note       {note}")
    if shift_note:
        print(f"warning    {shift_note}")
    for rep_note in representation_notes(v, report.settings):
        print(f"note       {rep_note}")
    print(f"clean data {d['n_clean_fit']} fit + {d['n_clean_dev']} dev; threshold {d['threshold']:.2f} "
          f"(FRR target {d['frr_target']:.0%}, measured {d['clean_frr']:.1%})")
    first = data["first_pass"]
    passes = f"; first pass {first['n_flagged']}, final pass (suspicious heads' focus)" if first else ""
    chance = chance_note(v)
    print(f"pool       {d['n_pool']} inputs{passes} {d['n_flagged']} flagged ({d['flag_rate']:.1%}"
          f"{'; ' + chance if chance else ''})")
    if d["marking_words"]:
        print(f"words      {d.get('marking_phrase') or ', '.join(d['marking_words'])} (likely trigger words, rare "
              "in the clean texts) in "
              f"{d['n_word_marked']} pool inputs, {d['n_word_marked_unflagged']} of them not flagged")
    heads = data["head_safety"]
    print(f"suspicious {called_heads(v, data['suspicious_heads'])}  [basis: {heads['basis']}]")
    print("\nHeads by score (collapse on flagged inputs x importance):")
    print(format_table(report.head_rows()[: args.show], ["head", "score", "collapse", "importance", "suspicious"]))
    if data["flagged"]:
        print("\nFlagged inputs (highest score first):")
        rows = [{**r, "text": r["text"][:80]} for r in data["flagged"][: args.show]]
        cols = ["index", "score", "label"] + (["trigger_word"] if d["marking_words"] else []) + ["text"]
        print(format_table(rows, cols, floats="{:.2f}"))
    _print_triggers(data.get("trigger_candidates"), args.show, heads_noun(v))
    _print_pool_words(data.get("pool_words"), data["label_names"], args.show)
    _print_drift(drift, data["label_names"], args.show)
    if html is not None:
        print(f"\nHTML report written to {full_path(html)}")
    return 0


def _drift(args, lm, clean, pool) -> dict | None:
    """``--base``: ``trigger_search.drift_reading`` of the model against that encoder, or None without it."""
    if not getattr(args, "base", None):
        return None
    from ..trigger_search import drift_reading

    return drift_reading(lm.model, lm.tokenizer, args.base, clean.texts, pool or None, max_length=args.max_length,
                         seed=args.seed)


def _print_drift(drift: dict | None, label_names: list, show: int) -> None:
    """The ``--base`` table, or why there is none."""
    if drift is None:
        return
    from ..trigger_search import (DRIFT_COLUMNS, DRIFT_FROZEN, DRIFT_HEADING, DRIFT_NOTE, drift_display,
                                  drift_marking_note)

    if "error" in drift:
        print(f"\n{DRIFT_HEADING}: none read ({drift['error']})")
        return
    print(f"\n{DRIFT_HEADING} ({drift['base']}, {drift['distance']:.3f} apart); no clean text holds them:")
    if not drift["words"]:
        print(DRIFT_FROZEN)
        return
    print(DRIFT_NOTE)
    print(format_table(drift_display(drift["words"][:show], label_names), DRIFT_COLUMNS))
    note = drift_marking_note(drift)
    if note:
        print(note)


def _print_triggers(tc: dict | None, show: int, heads: str = "suspicious heads") -> None:
    """The candidate-trigger table (``trigger_search``), or why there is none; ``heads``: what the verdict calls the
    heads whose focus named them (``detection.heads_noun``)."""
    from ..trigger_search import DISPLAY_COLUMNS, display_rows

    if not tc or not tc["candidates"]:
        print("\nCandidate triggers: none (no flagged inputs or no suspicious heads)")
        return
    print(f"\nCandidate triggers (what the {heads} focus on in {tc['n_flagged']} flagged inputs; "
          f"flips toward the suspected target '{tc['target_name']}'):")
    print(format_table(display_rows(tc, show), DISPLAY_COLUMNS))


def _print_pool_words(rows: list | None, label_names: list, show: int) -> None:
    """The pool-enriched words (``trigger_search.pool_words``), when any."""
    from ..trigger_search import POOL_WORD_COLUMNS, pool_word_bar_note, pool_word_display

    if rows is None:
        return
    if not rows:
        print("\nWords concentrated in the pool: none beyond chance")
        return
    print("\nWords concentrated in the pool (read from the pool alone; insertion into clean texts):")
    bar_note = pool_word_bar_note(rows)
    if bar_note:
        print(bar_note)
    print(format_table(pool_word_display(rows[:show], label_names), POOL_WORD_COLUMNS))


def write_html(report, path, drift: dict | None = None) -> Path:
    """A self-contained offline HTML report via ``report.html_report``; ``drift``: a ``trigger_search.
    drift_reading`` to add as its own section."""
    from ..architecture import layer_labels
    from ..detection import (called_heads, chance_note, heads_noun, pool_shift_note, representation_notes, call_note,
                             score_text, verdict_label)
    from ..report import html_report

    d = report.to_dict()
    v, det = d["verdict"], d["detection"]
    sections = [
        {"heading": "Verdict",
         "text": "\n\n".join(filter(None, [
             f"**{verdict_label(v).capitalize()}** — score {score_text(v['score'])} (basis: {v['basis']}).",
             call_note(v),
             pool_shift_note(v),
             *representation_notes(v, report.settings),
             f"Threshold {det['threshold']:.2f} at FRR {det['frr_target']:.0%} on {det['n_clean_dev']} held-out "
             f"clean inputs (measured FRR {det['clean_frr']:.1%}); {det['n_flagged']} of {det['n_pool']} pool inputs "
             "flagged" + (f" ({chance_note(v)})." if chance_note(v) else ".")])),
         "table": [{"component": k, "value": val} for k, val in v["components"].items()]},
        {"heading": "Suspicious heads",
         "text": called_heads(v, d["suspicious_heads"]),
         "table": report.head_rows()[:20]},
    ]
    try:
        import plotly.graph_objects as go

        fig = go.Figure(go.Heatmap(z=report.heads.score, x=[f"H{h}" for h in range(report.num_heads)],
                                   y=layer_labels(report.architecture.get("layer_kinds"))
                                   or [f"L{l}" for l in range(report.num_layers)], colorscale="Reds"))
        fig.update_layout(title="Head score (collapse x importance)", height=400)
        sections[1]["figure"] = fig
    except ImportError:  # pragma: no cover - plotly is a dependency
        pass
    tc = d.get("trigger_candidates")
    if tc and tc["candidates"]:
        from ..trigger_search import report_section

        sections.append(report_section(tc, heads=heads_noun(v)))
    if d["flagged"]:
        sections.append({"heading": "Flagged inputs", "table": d["flagged"][:100]})
    if det["marking_words"]:
        sections.append({"heading": "Inputs with a likely trigger word",
                         "text": f"{det['n_word_marked']} pool inputs hold {report.marking_phrase} (likely "
                                 f"trigger words that at most {det['frr_target']:.0%} of the clean texts hold), "
                                 f"{det['n_word_marked_unflagged']} of them not flagged.",
                         "table": report.word_marked_rows(100)})
    if drift is not None:
        from ..trigger_search import drift_section

        sections.append(drift_section(drift, report.label_names))
    return write_text(path, html_report(f"Backdoor scan: {report.model_name}", sections))
