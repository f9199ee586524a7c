"""``sanitize``: repair a model (our attention alignment, or a baseline) and save it, with before/after numbers."""

from __future__ import annotations

import argparse
import json
import sys

from .. import settings as S
from ..cli import (accepts_stdin, check_out_again, ctrl_c_stops, head_labels, nonnegative_float, positive_float,
                   full_path, positive_int, print_json, shown_input, STDIN_HELP)
from ..device import is_main_process
from .scan import add_data_args, load_inputs, read_pool


def register(sub) -> None:
    from ..defenses import DEFENSES

    p = sub.add_parser("sanitize", help="repair a backdoored model and save it (before/after CACC and ASR)")
    add_data_args(p, clean_default_split="dev", n_clean=S.CLEAN_BUDGET)
    p.add_argument("--out", required=True, help="directory to save the repaired model to (written atomically)")
    p.add_argument("--force", action="store_true",
                   help="replace --out even when it is not a model saved by this lab (deletes what is there)")
    p.add_argument("--defense", default="alignment", choices=list(DEFENSES),
                   help="alignment (ours, default), finetune, fineprune or pure")
    p.add_argument("--heads", type=head_labels, default=None,
                   help="alignment only: repair these heads (e.g. L3H7,L5H1) instead of scanning for them")
    p.add_argument("--beta", type=nonnegative_float, default=None, help=f"alignment weight (default {S.BETA:g})")
    p.add_argument("--weak-top-k", type=int, default=None,
                   help=f"alignment only: heads repaired when the scan's verdict is below {S.WEAK_VERDICT:g} "
                        f"(default {S.WEAK_TOP_K}; 0 = all the scan's suspicious heads)")
    p.add_argument("--min-heads", type=int, default=None,
                   help=f"alignment only: the fewest heads repaired; a smaller suspicious set is widened to the "
                        f"highest-scoring heads (default {S.REPAIR_MIN_HEADS}; 0 = only the scan's heads)")
    p.add_argument("--head-only-max-heads", type=int, default=None,
                   help=f"alignment only: the most heads a repair that trains no feed-forward block trains, the "
                        f"highest-scoring (default {S.REPAIR_HEAD_ONLY_MAX_HEADS}; 0 = no cap)")
    p.add_argument("--reset-top-k", type=int, default=None,
                   help=f"alignment only: zero only this many of the repaired heads first, the best-scoring; the "
                        f"others train from where they are (default {S.RESET_TOP_K}; 0 = every repaired head)")
    p.add_argument("--reset-to", choices=S.RESET_TOS, default=None,
                   help=f"alignment only: what the reset heads restart from: their pretrained weights (from --base; "
                        f"zero when that is not the model's pretrained encoder) or zero output (default {S.RESET_TO})")
    p.add_argument("--base", default=None,
                   help="alignment only: the pretrained encoder the model was fine-tuned from, for --reset-to "
                        "pretrained (a folder, a hub id or 'default', the packaged all-MiniLM-L6-v2; default "
                        "'default'); checked against the model's own weights")
    p.add_argument("--label-judge", choices=S.LABEL_JUDGES, default=None,
                   help=f"alignment only: check the flagged inputs' pseudo-labels with a classifier on the "
                        f"pretrained encoder (from --base), fit on the clean texts: gate keeps them all only when it "
                        f"agrees with them at least as often as with the model's predictions they replace, gate_filter "
                        f"keeps, where the gate would drop them all, those it agrees with, filter "
                        f"keeps the labels it agrees with, fill also labels the inputs whose prediction it "
                        f"contradicts, none checks nothing (default {S.LABEL_JUDGE}; README)")
    p.add_argument("--judge-flags", action=argparse.BooleanOptionalAction, default=None,
                   help="alignment only: also repair on the pool inputs the judge takes out of the class it "
                        "contradicts the model on most (when that class stands out), with the judge's label where "
                        "it is sure; for style and paraphrase triggers; reads the --pool. Default "
                        f"{'on' if S.JUDGE_FLAGS else 'off'}: it cut SST-2 style backdoors and changed little on OLID "
                        "(README)")
    p.add_argument("--clean-guard", action=argparse.BooleanOptionalAction, default=None,
                   help=f"alignment only: hold {100 * S.CLEAN_GUARD_SHARE:g}%% of the clean texts out of the repair; when "
                        f"it trained feed-forward blocks and its accuracy on them fell by "
                        f"{100 * S.CLEAN_GUARD_MAX_DROP:g} points or more, train it again head-only and keep the one "
                        f"more accurate on them; needs {S.CLEAN_GUARD_MIN_HELD} held-out texts. Default "
                        f"{'on' if S.CLEAN_GUARD else 'off'} (README)")
    p.add_argument("--repair-seeds", type=int, default=None,
                   help=f"alignment only: train this many repairs with different seeds and keep the mean of their "
                        f"weights (default {S.REPAIR_SEEDS}; each extra one adds a training run)")
    p.add_argument("--pool-words", action=argparse.BooleanOptionalAction, default=None,
                   help="alignment only: also insert the pool's likely trigger words that the clean texts hardly "
                        "hold (the scan's 'words' line) into clean texts of the other classes, which keep their "
                        f"labels; reads the --pool. Default {'on' if S.REPAIR_POOL_WORDS else 'off'} (README)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (defense default)")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (defense default)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--precision", choices=S.PRECISIONS, default=None,
                   help=f"training arithmetic: fp32, bf16-mixed (bfloat16 autocast, float32 weights) or auto "
                        f"(bf16-mixed where the hardware multiplies bf16 natively, else fp32); default "
                        f"{S.REPAIR_PRECISION} for alignment, fp32 for the baselines")
    p.add_argument("--eval-data", default=None,
                   help=f"clean test data for CACC before/after (a dataset spec, {STDIN_HELP}; default: --clean-data's "
                        "--eval-split, "
                        "less the texts the repair trains on); ASR on its non-target rows with the trigger the model "
                        "card records, unless --poisoned-eval is given")
    p.add_argument("--eval-split", default="test", help="split of --eval-data (default test)")
    p.add_argument("--n-eval", type=positive_int, default=S.CLI_EVAL_TEXTS,
                   help=f"at most this many eval texts (default {S.CLI_EVAL_TEXTS})")
    p.add_argument("--poisoned-eval", default=None,
                   help=f"triggered non-target texts for ASR before/after (file or dataset spec, like --pool; "
                        f"{STDIN_HELP})")
    p.add_argument("--target", type=int, default=None, help="the backdoor's target label (for ASR)")
    p.add_argument("--clean-model", default=None,
                   help="a model of the same task without the backdoor (a saved folder or hub id; read as --model "
                        "is, --allow-pickle included): its rate on the same triggered texts is the clean rate, "
                        "and ASR minus it the backdoor's lift, before and after")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    accepts_stdin(p, tables=["clean_data", "eval_data"], texts=["pool", "poisoned_eval"],
                  refused={"model": "a model is a folder", "out": "the repaired model is a folder, not a stream",
                           "base": "an encoder is a folder or a hub id", "clean_model": "a model is a folder"})
    p.set_defaults(func=run)


def _bar(total_hint: int, enabled: bool):
    """``(callback, stage, close)``: a bar of the training steps (``cli.progress_bar``: tqdm's on a terminal, plain
    lines elsewhere) whose description, on a terminal, says what the repair does before them (its scan's stages,
    the labels; ``run_defense(progress=stage)``); elsewhere those stages are lines of their own
    (``cli.stage_printer``)."""
    if not enabled:
        return None, None, lambda: None
    from ..cli import progress_bar, stage_printer, stderr_is_terminal
    from ..scan import stage_text

    bar = progress_bar(total=total_hint or None)
    if stderr_is_terminal():
        def stage(name, done, total):
            bar.set_description_str(stage_text(name, done, total), refresh=True)
    else:
        stage = stage_printer(terminal=False)

    def callback(progress):
        if bar.desc != "repair":
            bar.set_description_str("repair", refresh=False)
        if bar.total != progress.total_steps:
            bar.total = progress.total_steps
        bar.n = progress.step
        post = {k: f"{v:.3f}" for k, v in progress.losses.items() if k in ("ce", "align", "cls_norm")}
        if progress.metrics:
            post.update({k: f"{v:.3f}" for k, v in progress.metrics.items()})
        bar.set_postfix(post, refresh=False)
        bar.refresh()

    return callback, stage, bar.close


def _default_eval_set(args, lm, clean):
    """The texts CACC before/after is measured on without ``--eval-data``: ``--clean-data``'s ``--eval-split``, less
    the texts the repair trains on (``clean``): a single file, or a spec naming its split (``sst2/clean/dev``), gives
    the same texts for every split, and CACC on them would be the repair's own training accuracy. None (with a note
    on stderr) when no such text is left."""
    from ..data import DataError, load_dataset

    shown = shown_input(args, args.clean_data)
    try:
        eval_set = load_dataset(args.clean_data, split=args.eval_split, seed=args.seed, label_names=lm.label_names)
    except DataError as exc:
        print(f"note: no before/after numbers: {shown} has no '{args.eval_split}' split ({exc}); pass --eval-data",
              file=sys.stderr)
        return None
    trained_on = set(clean.texts)
    keep = [i for i, t in enumerate(eval_set.texts) if t not in trained_on]
    if not keep:
        print(f"note: no before/after numbers: the '{args.eval_split}' texts of {shown} are the ones the repair "
              "trains on (a single file, or a spec naming its split); pass --eval-data", file=sys.stderr)
        return None
    if len(keep) < len(eval_set):
        print(f"note: {len(eval_set) - len(keep)} of the {len(eval_set)} '{args.eval_split}' texts of "
              f"{shown} are among the texts the repair trains on: left out of the before/after numbers",
              file=sys.stderr)
        eval_set = eval_set.subset(keep)
    return eval_set


def run(args) -> int:
    from ..data import check_labels_match, load_dataset
    from ..defenses import repair_notes, run_defense
    from ..metrics import accuracy_change, rate_interval
    from ..models import check_save_target, save_model
    from ..repair_effect import RepairEffect, triggered_pairs, try_trigger_effect
    from ..training import make_evaluator

    check_save_target(args.out, args.force, protect=[args.model])  # refuse before the repair, not after it
    if args.defense != "alignment" and (args.heads or args.beta is not None or args.weak_top_k is not None
                                        or args.min_heads is not None or args.head_only_max_heads is not None
                                        or args.reset_top_k is not None or args.repair_seeds is not None
                                        or args.pool_words is not None or args.reset_to or args.base or args.label_judge
                                        or args.judge_flags is not None or args.clean_guard is not None):
        raise ValueError("--heads, --beta, --weak-top-k, --min-heads, --head-only-max-heads, --reset-top-k, "
                         "--reset-to, --base, "
                         "--label-judge, --[no-]judge-flags, --[no-]clean-guard, --repair-seeds and "
                         "--[no-]pool-words apply to the alignment defense only.")
    if args.weak_top_k is not None and args.weak_top_k < 0:
        raise ValueError("--weak-top-k must be 0 (off) or more.")
    if args.min_heads is not None and args.min_heads < 0:
        raise ValueError("--min-heads must be 0 (off) or more.")
    if args.head_only_max_heads is not None and args.head_only_max_heads < 0:
        raise ValueError("--head-only-max-heads must be 0 (off) or more.")
    if args.reset_top_k is not None and args.reset_top_k < 0:
        raise ValueError("--reset-top-k must be 0 (every repaired head) or more.")
    if args.repair_seeds is not None and args.repair_seeds < 1:
        raise ValueError("--repair-seeds must be 1 or more.")
    lm, clean, pool = load_inputs(args)
    if args.defense != "finetune":  # head-wise defenses refuse shared-layer models (ALBERT) before the evaluation
        from ..architecture import require_head_repair
        from ..defenses import DEFENSES

        require_head_repair(lm.model, DEFENSES[args.defense].label)
    reference = None  # the clean reference (--clean-model): loaded before the repair, so a bad one costs nothing
    if args.clean_model:
        from ..models import load_model

        reference = load_model(args.clean_model, allow_pickle=args.allow_pickle, device=args.device,
                               dtype=args.dtype)
    if args.pool_words and not pool:
        raise ValueError("--pool-words reads the likely trigger words from the unlabelled pool: give --pool.")
    if (args.poisoned_eval is None) != (args.target is None):
        raise ValueError("--poisoned-eval and --target go together (ASR needs both).")
    if args.target is not None and not 0 <= args.target < lm.num_labels:
        raise ValueError(f"--target {args.target} is outside 0..{lm.num_labels - 1}.")
    evaluate = None
    before = {}
    pairs = None  # repair_effect.triggered_pairs when the card's attack can be rebuilt on the evaluation data
    eval_set = (load_dataset(args.eval_data, split=args.eval_split, seed=args.seed, label_names=lm.label_names)
                if args.eval_data else _default_eval_set(args, lm, clean))
    if eval_set is not None:
        check_labels_match(eval_set, lm.num_labels, lm.label_names)
    if args.poisoned_eval:
        if eval_set is None:
            raise ValueError(f"no held-out clean texts for CACC before/after in {shown_input(args, args.clean_data)}: "
                             "pass --eval-data.")
        if len(eval_set) > args.n_eval:
            eval_set = eval_set.sample(args.n_eval, seed=args.seed + 1)
        poisoned = read_pool(args.poisoned_eval, args.eval_split)[: args.n_eval]
        evaluate = make_evaluator(lm.tokenizer, eval_set, poisoned, args.target, args.max_length, reference=lm.model)
    elif eval_set is not None:  # CACC on the eval texts, ASR with the attack the card records on them
        from .. import defender_data as D

        evaluate = D.make_eval(lm, eval_set, args.n_eval, args.max_length, seed=args.seed, kept=True)
        attack = D.model_attack(lm.card, lm.tokenizer, args.max_length)
        if attack is not None:  # what the trigger does to the heads, before and after (repair_effect)
            try:
                pairs = triggered_pairs(attack, eval_set, lm.card.target_for(eval_set.label_names))
            except ValueError:
                pairs = None
        print(f"evaluating on {min(len(eval_set), args.n_eval)} '{args.eval_split}' texts of "
              f"{shown_input(args, args.eval_data or args.clean_data)}"
              + (f"; ASR with the card's {lm.card.attack} trigger toward "
                 f"{lm.card.target_name or lm.card.target}" if attack is not None else "; no attack on the "
                 "model card, so no ASR"), file=sys.stderr)
    classes: list = []  # (n,) the suspect's and then the repaired model's classes on the evaluation texts
    hits: list = []  # (m,) the same models' "sent to the target" on the triggered texts, for the lift's interval
    if evaluate is not None:
        before = evaluate(lm.model, classes, hits)
    clean_rate, clean_hits = None, None
    if reference is not None:
        if evaluate is None or not evaluate.poisoned_texts:
            raise ValueError("--clean-model gives the clean rate on the triggered texts, and there are none: give "
                             "--poisoned-eval and --target, or a model whose card names its attack.")
        from ..defender_data import clean_hits as clean_hits_of

        clean_hits = clean_hits_of(reference, lm, evaluate.poisoned_texts, evaluate.target)
        clean_rate = float(clean_hits.mean())
    effect_before = try_trigger_effect(lm.model, lm.tokenizer, pairs, args.max_length)
    knobs = {k: v for k, v in {"lr": args.lr, "epochs": args.epochs, "max_steps": args.max_steps,
                               "max_length": args.max_length, "seed": args.seed,
                               "precision": args.precision}.items() if v is not None}
    if args.defense == "alignment":
        if args.beta is not None:
            knobs["beta"] = args.beta
        if args.heads:
            knobs["heads"] = args.heads
        if args.weak_top_k is not None:
            knobs["weak_top_k"] = args.weak_top_k
        if args.min_heads is not None:
            knobs["min_heads"] = args.min_heads
        if args.head_only_max_heads is not None:
            knobs["head_only_max_heads"] = args.head_only_max_heads
        if args.reset_top_k is not None:
            knobs["reset_top_k"] = args.reset_top_k
        if args.reset_to is not None:
            knobs["reset_to"] = args.reset_to
        if args.base is not None:
            knobs["base"] = args.base
        if args.label_judge is not None:
            knobs["label_judge"] = args.label_judge
        if args.repair_seeds is not None:
            knobs["repair_seeds"] = args.repair_seeds
        if args.pool_words is not None:
            knobs["pool_words"] = args.pool_words
        if args.judge_flags is not None:
            knobs["judge_flags"] = args.judge_flags
        if args.clean_guard is not None:
            knobs["clean_guard"] = args.clean_guard
    from ..jobs import JobCancelled

    callback, stage, close = _bar(0, is_main_process())  # stderr: --json keeps stdout the JSON alone
    try:
        with ctrl_c_stops("stopping after this step; nothing will be saved (Ctrl-C again to abort)...") as stop:
            result = run_defense(args.defense, lm.model, lm.tokenizer, clean, pool_texts=pool, evaluate=evaluate,
                                 callback=callback, progress=stage, should_stop=stop, copy=False, **knobs)
    except JobCancelled:  # stopped between batches before training (the repair's scan, its pseudo-labels)
        close()  # the bar's last line first, then the message (closing twice is harmless)
        print("cancelled before the repair trained: nothing saved", file=sys.stderr)
        return 130
    finally:
        close()
    if result.cancelled:
        print(f"cancelled after {result.seconds:.0f} s: nothing saved", file=sys.stderr)
        return 130
    after = evaluate(result.model, classes, hits) if evaluate else {}
    change = accuracy_change(evaluate.labels, *classes) if evaluate else None
    effect = None  # what the trigger does to the heads, before and after; never in the way of saving the repair
    if effect_before is not None:
        effect = RepairEffect.of(effect_before, try_trigger_effect(result.model, lm.tokenizer, pairs, args.max_length),
                                 result.details.get("suspicious_heads") or [], len(pairs[0]))
    if not is_main_process():  # a multi-process launch: the main process saves and reports
        return 0
    details = {k: v for k, v in result.details.items() if k not in ("search", "config", "verdict")}
    li = None  # the lift before and after, each with its interval paired over the triggered texts
    if reference is not None:  # the saved card keeps what the lift was measured against, and its interval after
        from ..metrics import lift_interval

        li = [lift_interval(clean_hits, h) for h in (hits[0], hits[-1])]
        details["clean_reference"] = {"name": reference.name, "rate": clean_rate, "texts": li[1]["n"],
                                      "lift_after_ci95": [li[1]["low"], li[1]["high"]]}
    card = lm.card.repaired(name=f"{lm.name}-{args.defense}", defense=args.defense, details=details,
                            before=before, after=after, seconds=result.seconds, cancelled=result.cancelled,
                            source=lm.source, clean_samples=len(clean), pool_samples=len(pool),
                            test_size=len(evaluate.labels) if evaluate is not None else None,
                            poisoned_test_size=len(evaluate.poisoned_texts) if evaluate is not None else None)
    check_out_again(args.out, args.force, protect=[args.model])  # another run may have saved there meanwhile
    out = save_model(result.model, lm.tokenizer, args.out, card, force=args.force, replace_model=args.force)
    n_asr = len(evaluate.poisoned_texts) if evaluate is not None else 0
    asr_ci = rate_interval(after["asr"], n_asr) if "asr" in after and n_asr else None
    summary = {"model": lm.name, "defense": args.defense, "out": full_path(out), "seconds": result.seconds,
               "before": before, "after": after, "cacc_change": change, "details": details,
               "asr_texts": n_asr, "asr_after_ci95": list(asr_ci) if asr_ci else None,
               "cancelled": result.cancelled, "trigger_effect": effect.to_dict() if effect is not None else None}
    if li is not None:
        summary.update(clean_model=reference.name, clean_rate=clean_rate,
                       lift_before=li[0]["lift"], lift_after=li[1]["lift"],
                       lift_before_ci95=[li[0]["low"], li[0]["high"]], lift_after_ci95=[li[1]["low"], li[1]["high"]])
    if args.json:
        print_json(summary)
        return 0
    print(f"model      {lm.name} -> {full_path(out)}")
    print(f"defense    {args.defense} ({result.seconds:.1f} s, {len(clean)} clean + {len(pool)} pool texts)")
    if "suspicious_heads" in details:
        print(f"heads      {', '.join(details['suspicious_heads'])} [{details.get('head_basis')}]")
    if "pruned_heads" in details:
        print(f"pruned     {len(details['pruned_heads'])} heads")
    for note in repair_notes(details):
        print(f"note       {note}")
    for key in ("asr", "cacc"):
        if key in before or key in after:
            ci = (f"  (after: 95% interval {100 * asr_ci[0]:.1f} to {100 * asr_ci[1]:.1f}% over {n_asr} triggered "
                  "texts)") if key == "asr" and asr_ci else ""
            print(f"{key.upper():<10} before {100 * before.get(key, float('nan')):.1f}%  "
                  f"after {100 * after.get(key, float('nan')):.1f}%{ci}")
    if reference is not None:
        lo_b, hi_b = summary["lift_before_ci95"]
        lo_a, hi_a = summary["lift_after_ci95"]
        print(f"CLEAN      {reference.name} (no backdoor) sends {100 * clean_rate:.1f}% of the same triggered texts "
              f"to the target: lift {100 * summary['lift_before']:+.1f} points before (95% interval "
              f"{100 * lo_b:+.1f} to {100 * hi_b:+.1f}), {100 * summary['lift_after']:+.1f} after ({100 * lo_a:+.1f} "
              f"to {100 * hi_a:+.1f}; paired over the {n_asr} texts)")
    if change is not None:
        print(f"CHANGE     CACC {100 * change['change']:+.1f} points, 95% interval {100 * change['low']:+.1f} to "
              f"{100 * change['high']:+.1f} over these {change['n']} texts ({change['fixed']} made right, "
              f"{change['broken']} made wrong; paired, not counting the repair's own seed)")
    if "kept" in after:
        print(f"KEPT       {100 * after['kept']:.1f}% of the clean predictions unchanged by the repair")
    for line in effect.summary() if effect is not None else []:
        print(f"TRIGGER    {line}")
    if result.cancelled:
        print("note       cancelled early: the saved model is the last completed step")
    json.dumps(summary, default=float)  # the summary stays JSON-ready
    return 0
