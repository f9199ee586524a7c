"""``inspect``: prediction on a clean and a triggered text, and the heads the trigger moves most."""

from __future__ import annotations

import sys

from .. import settings as S
from ..cli import (STDIN_HELP, accepts_stdin, format_table, head_labels, max_length_int, nonnegative_int, positive_int,
                   print_json)
from ..device import add_device_args
from ..poisoning import BADNETS_TRIGGERS
from ..triggers import placement_note
from .scan import MAX_LENGTH_HELP, resolve_max_length, warn_card


def register(sub) -> None:
    p = sub.add_parser("inspect", help="compare a text with and without a trigger, head by head")
    p.add_argument("--model", default="default", help="'default', a model directory, or a hub id")
    p.add_argument("--text", required=True, help=f"the clean text; {STDIN_HELP} (all of it, one text)")
    p.add_argument("--trigger", default=None,
                   help=f"word or sentence to insert (default: the trigger the model card records — the first "
                        f"BadNets word, the AddSent sentence — else {BADNETS_TRIGGERS[0]})")
    p.add_argument("--position", type=nonnegative_int, default=None,
                   help="word index to insert before (default: random)")
    p.add_argument("--seed", type=int, default=S.SEED, help="seed for a random position")
    p.add_argument("--max-length", type=max_length_int, default=None, help=MAX_LENGTH_HELP)
    p.add_argument("--labels-from", default="bbc", metavar="DATA",
                   help="class names for a model without a trained head, e.g. 'default' (a dataset spec; default "
                        f"bbc: the five BBC News topics, as in the app; {STDIN_HELP})")
    p.add_argument("--top", type=positive_int, default=10, help="how many heads to list")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickled weights (runs code from the file)")
    p.add_argument("--ablate", type=head_labels, default=None, metavar="HEADS",
                   help="also predict with these heads gated off, e.g. L3H4,L5H0 (0-based layer and head)")
    p.add_argument("--saliency", choices=["ig", "gxi"], default=None,
                   help="also attribute the triggered prediction to the tokens (Captum): integrated gradients or "
                        "gradient x input, on the clean and the triggered text")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_device_args(p)
    accepts_stdin(p, text=["text"], tables=["labels_from"], refused={"model": "a model is a folder"})
    p.set_defaults(func=run)


def card_trigger(card) -> str | None:
    """The trigger a model card records, as inspect inserts it (the first BadNets word, the AddSent sentence), or
    None: no attack, or one without trigger tokens (a paraphrase), as on the app's Inspect page."""
    from ..poisoning import attack_type

    if not card.is_backdoored:
        return None
    try:
        if not attack_type(card.attack).has_trigger_tokens:
            return None
    except ValueError:
        return None
    return card.first_trigger


def _prediction_line(name: str, pred: dict) -> str:
    probs = ", ".join(f"{k}={v:.3f}" for k, v in pred["probs"].items())
    return f"{name:<10} {pred['label']:<14} ({probs})"


def run(args) -> int:
    from ..attention import check_text
    from ..inspection import inspect_text
    from ..models import load_model

    check_text(args.text)
    lm = load_model(args.model, allow_pickle=args.allow_pickle, device=args.device, dtype=args.dtype)
    if lm.untrained_head and args.labels_from:  # name the classes like the app does (its dataset's label names)
        from ..data import load_dataset

        names = list(load_dataset(args.labels_from, split="train", seed=args.seed).label_names)
        lm = load_model(args.model, label_names=names, allow_pickle=args.allow_pickle, device=args.device,
                        dtype=args.dtype)
    warn_card(lm)
    resolve_max_length(args, lm)
    from_card = args.trigger is None and card_trigger(lm.card) is not None
    if args.trigger is None:
        args.trigger = card_trigger(lm.card) or BADNETS_TRIGGERS[0]
    heads_off = None
    if args.ablate is not None:
        from ..ablation import parse_heads

        heads_off = parse_heads(args.ablate, lm.num_layers, lm.num_heads)
    result = inspect_text(
        lm.model, lm.tokenizer, args.text, args.trigger, args.position, args.seed, args.max_length, lm.label_names
    )
    report = result.to_dict(args.top)
    moved = placement_note(args.text, args.position, result.insertion.position, args.max_length)
    if moved:  # stderr: --json's stdout stays the JSON alone
        print(f"note: {moved}", file=sys.stderr)
    if heads_off is not None:
        from ..ablation import inspect_ablated

        report["ablated"] = inspect_ablated(lm.model, lm.tokenizer, args.text, args.trigger, heads_off,
                                            max_length=args.max_length, full=result).to_dict(args.top)
    report["model"] = lm.name
    report["untrained_head"] = lm.untrained_head
    if args.saliency:
        from ..saliency import compare_saliency

        report["saliency"] = compare_saliency(lm.model, lm.tokenizer, result.clean.text, result.triggered.text,
                                              args.saliency, result.label_names,
                                              max_length=args.max_length).to_dict()
    if args.json:
        print_json(report)
        return 0
    info = report["architecture"] or {}
    print(f"model      {lm.name} ({info.get('name', '?')}, {lm.num_layers} layers x {lm.num_heads} heads)")
    for key in ("concentration", "similarity"):
        if key in (info.get("notes") or {}):
            print(f"note       {info['notes'][key]}")
    if lm.untrained_head:
        print("note       this model has no trained classification head: predictions are arbitrary "
              "(attention is still the encoder's)")
    print(f"clean      {report['clean_text']}")
    print(f"triggered  {report['triggered_text']}")
    print(f"trigger    '{args.trigger}' at word {report['trigger_position']} -> tokens {report['trigger_tokens']}"
          + (" (the model card's trigger)" if from_card else ""))
    if report["truncated"]:
        print(f"note       the text is longer than {args.max_length} tokens and was cut")
    print()
    print(_prediction_line("clean", report["clean"]))
    print(_prediction_line("triggered", report["triggered"]))
    print(f"verdict    {result.flip(untrained_head=lm.untrained_head)['message'].replace('**', '')}")
    if "ablated" in report:
        ab = report["ablated"]
        print(f"\nWith {', '.join(ab['heads_off'])} switched off:")
        print(_prediction_line("clean", ab["clean"]))
        print(_prediction_line("triggered", ab["triggered"]))
        if ab["flip_undone"]:
            print("           the trigger no longer flips the prediction")
    if "saliency" in report:
        sal = report["saliency"]
        print(f"\nToken saliency toward '{sal['target_name']}' ({sal['triggered']['method']}), token: score")
        for name in ("clean", "triggered"):
            s = sal[name]
            print(f"{name:<10} " + "  ".join(f"{t}:{v:+.3g}" for t, v in zip(s["tokens"], s["scores"])))
    print("\nTop heads by trigger concentration (attention mass on the trigger, averaged over queries):")
    print(format_table(report["top_heads_by_concentration"], ["head", "concentration", "similarity_delta"]))
    print("\nTop heads by head-to-head similarity change (triggered - clean, mean cosine to the layer's other heads):")
    print(format_table(report["top_heads_by_similarity_change"], ["head", "similarity_delta", "concentration"]))
    print("\nPer-layer mean head-to-head similarity:")
    ls = report["layer_similarity"]
    kinds = info.get("layer_kinds") or []
    rows = [{"layer": f"L{i}", "kind": kinds[i] if i < len(kinds) else "", "clean": c, "triggered": t, "delta": d}
            for i, (c, t, d) in enumerate(zip(ls["clean"], ls["triggered"], ls["delta"]))]
    print(format_table(rows, ["layer", "kind", "clean", "triggered", "delta"]))
    return 0
