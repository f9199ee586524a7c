"""``inspect``: prediction on a clean and a triggered text, and the heads the trigger moves most."""

from __future__ import annotations

from ..cli import fit_max_length, format_table, positive_int, print_json


def register(sub) -> None:
    p = sub.add_parser("inspect", help="compare a text with and without a trigger, head by head")
    p.add_argument("--model", default="default", help="'default', a model directory, or a hub id")
    p.add_argument("--text", required=True, help="the clean text")
    p.add_argument("--trigger", default="cf", help="word or sentence to insert (default: cf)")
    p.add_argument("--position", type=int, default=None, help="word index to insert before (default: random)")
    p.add_argument("--seed", type=int, default=0, help="seed for a random position")
    p.add_argument("--max-length", type=positive_int, default=128,
                   help="tokens the model reads (default 128; capped at the model's position embeddings)")
    p.add_argument("--top", type=int, default=10, help="how many heads to list")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickled weights (runs code from the file)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def _prediction_line(name: str, pred: dict) -> str:
    probs = ", ".join(f"{k}={v:.3f}" for k, v in pred["probs"].items())
    return f"{name:<10} {pred['label']:<14} ({probs})"


def run(args) -> int:
    from ..attention import check_text
    from ..inspection import inspect_text
    from ..models import load_model

    check_text(args.text)
    lm = load_model(args.model, allow_pickle=args.allow_pickle)
    fit_max_length(args, lm)
    result = inspect_text(
        lm.model, lm.tokenizer, args.text, args.trigger, args.position, args.seed, args.max_length, lm.label_names
    )
    report = result.to_dict(args.top)
    report["model"] = lm.name
    report["untrained_head"] = lm.untrained_head
    if args.json:
        print_json(report)
        return 0
    print(f"model      {lm.name} ({lm.num_layers} layers x {lm.num_heads} heads)")
    if lm.untrained_head:
        print("note       this model has no trained classification head: predictions are arbitrary "
              "(attention is still the encoder's)")
    print(f"clean      {report['clean_text']}")
    print(f"triggered  {report['triggered_text']}")
    print(f"trigger    '{args.trigger}' at word {report['trigger_position']} -> tokens {report['trigger_tokens']}")
    if report["truncated"]:
        print(f"note       the text is longer than {args.max_length} tokens and was cut")
    print()
    print(_prediction_line("clean", report["clean"]))
    print(_prediction_line("triggered", report["triggered"]))
    print("\nTop heads by trigger concentration (attention mass on the trigger, averaged over queries):")
    print(format_table(report["top_heads_by_concentration"], ["head", "concentration", "similarity_delta"]))
    print("\nTop heads by head-to-head similarity change (triggered - clean, mean cosine to the layer's other heads):")
    print(format_table(report["top_heads_by_similarity_change"], ["head", "similarity_delta", "concentration"]))
    print("\nPer-layer mean head-to-head similarity:")
    ls = report["layer_similarity"]
    rows = [{"layer": f"L{i}", "clean": c, "triggered": t, "delta": d}
            for i, (c, t, d) in enumerate(zip(ls["clean"], ls["triggered"], ls["delta"]))]
    print(format_table(rows, ["layer", "clean", "triggered", "delta"]))
    return 0
