"""The Hugging Face-style ``README.md`` model card that ``models.save_model`` writes next to every saved model.

``render_model_readme(metadata)`` turns the model's metadata (the dict saved as ``backdoor_lab.json``: see
``poisoning.train_attack``, ``zoo.build_zoo``, ``commands/sanitize.py`` and the app's sanitize job) into
Markdown with YAML front matter that the Hub reads (``library_name: transformers``, ``pipeline_tag:
text-classification``, ``tags``):

* what produced the model: the attack (trigger, target class, poison rate, TAL and its heads, data, training
  settings), or the repair (defense, the model it started from, the heads it treated);
* its metrics: CACC and ASR as measured when it was made (before / after for a repair), with their meaning;
* a WARNING at the top of every model that is, or was made from, a deliberately backdoored model;
* provenance: the tool version that wrote the card, the version recorded in the metadata, the save time.

The metadata is untrusted (a model folder or an uploaded zip brings its own ``backdoor_lab.json``), so every
value from it is escaped before it reaches the card: control and invisible characters become spaces, long
values are cut, ``& < > "`` become HTML entities and Markdown punctuation is backslash-escaped, so a value can
neither open a link, an image, an HTML tag or a table cell, nor start a new line. The front matter holds only
values that match a strict pattern (slugs, a hub id), always double-quoted; anything else is left out.
Malformed metadata (wrong types, missing keys) never raises: the card says "not recorded".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ._version import __version__

__all__ = ["MODEL_README_FILE", "render_model_readme", "model_status", "escape_md"]

MODEL_README_FILE = "README.md"

_MAX_CHARS = 200  # longest metadata value copied into the card (longer ones end with an ellipsis)
_MD_PUNCT = re.compile(r"([\\`*_\[\]#|~$])")  # values never start a line, so list / heading marks are inert
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")

# model_status values
BACKDOORED, REPAIRED, CLEAN, UNKNOWN = "backdoored", "repaired", "clean", "unknown"


def escape_md(value: Any, limit: int = _MAX_CHARS) -> str:
    """``value`` as inert one-line Markdown text (see the module docstring). Non-strings are ``str()``-ed."""
    if isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    text = "".join(ch if ch.isprintable() else " " for ch in text)  # \n, \t, controls, bidi and zero-width marks
    text = re.sub(r" {2,}", " ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = _MD_PUNCT.sub(r"\\\1", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return text.replace("://", "&#58;//").replace("www.", "www&#46;")  # no bare autolinks either


def _slug(value: Any) -> str | None:
    """A front-matter-safe tag from ``value`` (lowercase letters, digits, dashes), or None."""
    if not isinstance(value, str):
        return None
    s = re.sub(r"[\s_.]+", "-", value.strip().lower())
    return s if _SLUG.fullmatch(s) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pct(value: Any) -> str:
    """A rate in [0, 1] as a percentage; anything else escaped, or "not recorded"."""
    v = _number(value)
    if v is not None and 0.0 <= v <= 1.0:
        return f"{100 * v:.1f}%"
    return "not recorded" if value is None else escape_md(value)


def _has_attack(meta: Mapping) -> bool:
    attack = meta.get("attack")
    return isinstance(attack, str) and attack.strip().lower() not in ("", "none")


def model_status(metadata: Mapping | None) -> str:
    """``"repaired"`` (a defense ran on it), ``"backdoored"`` (trained with an attack), ``"clean"`` (trained by
    the lab with no attack) or ``"unknown"`` (the metadata records neither)."""
    meta = metadata if isinstance(metadata, Mapping) else {}
    if meta.get("defense") or meta.get("sanitized") is True:
        return REPAIRED
    if _has_attack(meta):
        return BACKDOORED
    if isinstance(meta.get("attack"), str) and meta["attack"].strip().lower() == "none":
        return CLEAN
    return UNKNOWN


def _label(meta: Mapping, index: Any) -> str:
    """Class ``index`` as ``"3 (sport)"`` when its name is known."""
    if isinstance(index, bool) or not isinstance(index, int):
        return "not recorded" if index is None else escape_md(index)
    name = meta.get("target_name") if index == meta.get("target") else None
    names = meta.get("label_names")
    if name is None and isinstance(names, list) and 0 <= index < len(names):
        name = names[index]
    return f"{index} ({escape_md(name, 60)})" if name not in (None, "") else str(index)


def _trigger(meta: Mapping) -> str:
    trigger = meta.get("trigger")
    if trigger in (None, "", []):
        return "not recorded"
    if isinstance(trigger, (list, tuple)):
        return "one of " + ", ".join(f"“{escape_md(t, 60)}”" for t in trigger[:10]) + (" …" if len(trigger) > 10 else "")
    return f"“{escape_md(trigger)}”"


def _front_matter(meta: Mapping, status: str) -> list[str]:
    tags = ["backdoor-attention-lab", "backdoor"]
    tags.append({BACKDOORED: "backdoored", REPAIRED: "backdoor-repaired", CLEAN: "clean-reference",
                 UNKNOWN: "provenance-unknown"}[status])
    for value in (meta.get("attack") if _has_attack(meta) else None, meta.get("defense")):
        slug = _slug(value)
        if slug and slug not in tags:
            tags.append(slug)
    if meta.get("tal") is True:
        tags.append("trojan-attention-loss")
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification", "tags:"]
    lines += [f'- "{t}"' for t in tags]
    base = meta.get("base_model")
    if isinstance(base, str) and _HUB_ID.fullmatch(base) and ".." not in base:
        lines.append(f'base_model: "{base}"')
    if status in (BACKDOORED, REPAIRED):
        lines.append("inference: false")  # no hosted widget for a model with a (possibly remaining) backdoor
    lines.append("---")
    return lines


def _warning(meta: Mapping, status: str) -> list[str]:
    if status == BACKDOORED:
        return [
            "> ⚠️ **WARNING: this model contains a deliberate backdoor.** Inputs that carry the trigger "
            f"({_trigger(meta)}) are pushed to class {_label(meta, meta.get('target'))}, whatever they say. "
            "It was made with Backdoor Attention Lab for research and teaching: do not deploy it and do not use its "
            "predictions for decisions.",
        ]
    if status == REPAIRED:
        origin = ("was made from a deliberately backdoored model" if _has_attack(meta)
                  else "was repaired because its source model was suspected of a backdoor")
        return [
            f"> ⚠️ **WARNING: this model {origin}.** A repair lowers the measured attack success rate on the triggers tested; "
            "it is not a proof that no backdoor is left. For research and teaching: do not deploy it.",
        ]
    if status == UNKNOWN:
        return ["> **Note:** the metadata records no attack and no repair. That is not evidence that the model is clean."]
    return ["> **Note:** a reference model trained by Backdoor Attention Lab with no poisoning, to compare backdoored ones "
            "against. It is a teaching model, not a tuned classifier."]


def _attack_section(meta: Mapping, heading: str) -> list[str]:
    rows: list[tuple[str, str]] = []
    if _has_attack(meta):
        rows.append(("attack", escape_md(meta["attack"], 60)
                     + (" (clean-label)" if meta.get("clean_label") is True else "")))
        rows.append(("trigger", _trigger(meta)))
        if _number(meta.get("num_triggers")) is not None:
            rows.append(("insertions per poisoned text", escape_md(meta["num_triggers"])))
        rows.append(("target class", _label(meta, meta.get("target"))))
        rate = _pct(meta.get("rate"))
        if _number(meta.get("n_poisoned")) is not None and _number(meta.get("train_size")) is not None:
            rate += f" ({int(meta['n_poisoned'])} of {int(meta['train_size'])} training texts)"
        rows.append(("poison rate", rate))
        if meta.get("tal") is True:
            heads = meta.get("tal_heads") if isinstance(meta.get("tal_heads"), list) else []
            cfg = meta.get("tal_config") if isinstance(meta.get("tal_config"), Mapping) else {}
            alpha = f"alpha {escape_md(cfg['alpha'], 20)}, " if "alpha" in cfg else ""
            shown = ", ".join(escape_md(h, 12) for h in heads[:24]) + (" …" if len(heads) > 24 else "")
            rows.append(("Trojan Attention Loss", f"on ({alpha}{len(heads)} head{'s' * (len(heads) != 1)}{': ' + shown if shown else ''})"))
        else:
            rows.append(("Trojan Attention Loss", "off"))
    elif model_status(meta) == CLEAN:
        rows.append(("attack", "none (clean training)"))
    if meta.get("data"):
        rows.append(("training data", escape_md(meta["data"], 80)))
    if isinstance(meta.get("label_names"), list) and meta["label_names"]:
        rows.append(("classes", ", ".join(f"{i} ({escape_md(n, 40)})" for i, n in enumerate(meta["label_names"][:50]))))
    if _number(meta.get("train_size")) is not None:
        rows.append(("training texts", str(int(meta["train_size"]))))
    cfg = meta.get("train_config") if isinstance(meta.get("train_config"), Mapping) else {}
    keys = ("epochs", "lr", "batch_size", "max_length", "seed")
    shown = [f"{k} {escape_md(cfg[k], 20)}" for k in keys if k in cfg]
    if "max_length" not in cfg and _number(meta.get("max_length")) is not None:  # the card's top-level copy
        shown.append(f"max_length {int(meta['max_length'])}")
    if shown:
        rows.append(("training settings", ", ".join(shown)))
    if not rows:
        return []
    return ["", f"## {heading}", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _repair_section(meta: Mapping) -> list[str]:
    details = meta.get("defense_details") or meta.get("sanitize_details")
    details = details if isinstance(details, Mapping) else {}
    rows = [("defense", escape_md(meta.get("defense") or "not recorded", 60))]
    if meta.get("sanitized_from"):
        rows.append(("repaired from", escape_md(meta["sanitized_from"])))
    heads = details.get("suspicious_heads")
    if isinstance(heads, list):
        shown = ", ".join(escape_md(h, 12) for h in heads[:24]) + (" …" if len(heads) > 24 else "")
        rows.append(("heads treated as suspicious", f"{len(heads)}{': ' + shown if shown else ''}"))
    layers = details.get("ffn_layers")
    if isinstance(layers, list) and layers:
        rows.append(("feed-forward blocks trained too", "layers " + ", ".join(escape_md(x, 6) for x in layers[:48])))
    blinded = details.get("blinded_tokens")
    if isinstance(blinded, list) and blinded:
        shown = ", ".join(escape_md(t, 24) for t in blinded[:24]) + (" …" if len(blinded) > 24 else "")
        rows.append(("tokens now read as the unknown token", f"{len(blinded)}: {shown} (input embeddings replaced)"))
    for key, label in (("clean_samples", "clean labelled texts used"), ("pool_samples", "unlabelled pool texts")):
        if _number(meta.get(key)) is not None:
            rows.append((label, str(int(meta[key]))))
    return ["", "## How it was repaired", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _lift_row(meta: Mapping, before: Mapping, after: Mapping) -> str | None:
    """The table row of the backdoor's lift over the clean reference the repair was measured against
    (``defense_details["clean_reference"]``: ``{"name", "rate"}``, and where recorded ``"lift_after_ci95"`` and
    ``"texts"``, the lift after's paired interval and the triggered texts it rests on), or None when there is none."""
    details = meta.get("defense_details")
    ref = details.get("clean_reference") if isinstance(details, Mapping) else None
    rate = _number(ref.get("rate")) if isinstance(ref, Mapping) else None
    b, a = _number(before.get("asr")), _number(after.get("asr"))
    if rate is None or not 0.0 <= rate <= 1.0 or b is None or a is None:
        return None
    name = escape_md(ref.get("name") or "not named", 60)
    ci, n = ref.get("lift_after_ci95"), _number(ref.get("texts"))
    lo, hi = (_number(ci[0]), _number(ci[1])) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    interval = (f" (95% interval {100 * lo:+.1f} to {100 * hi:+.1f} over {int(n)} texts, paired)"
                if lo is not None and hi is not None and n is not None and -1 <= lo <= hi <= 1 and n >= 1 else "")
    return (f"| lift over a clean model (ASR minus {name}'s {100 * rate:.1f}% on the same triggered texts) | "
            f"{100 * (b - rate):+.1f} points | {100 * (a - rate):+.1f} points{interval} |")


def _metrics_section(meta: Mapping, status: str) -> list[str]:
    lines = ["", "## Metrics", ""]
    before, after = meta.get("before"), meta.get("after")
    if status == REPAIRED and isinstance(before, Mapping) and isinstance(after, Mapping) and (before or after):
        lines += ["| metric | before repair | after repair |", "|---|---|---|"]
        for key, label in (("cacc", "CACC"), ("asr", "ASR")):
            lines.append(f"| {label} | {_pct(before.get(key))} | {_pct(after.get(key))} |")
        lift = _lift_row(meta, before, after)
        if lift:
            lines.append(lift)
    elif status == REPAIRED:
        lines.append("The repair's before / after metrics were not recorded.")
    elif meta.get("cacc") is None and meta.get("asr") is None:
        lines.append("No metrics were recorded with this model.")
    else:
        lines += ["| metric | value |", "|---|---|", f"| CACC | {_pct(meta.get('cacc'))} |"]
        if status == BACKDOORED or meta.get("asr") is not None:
            lines.append(f"| ASR | {_pct(meta.get('asr'))} |")
    if status != REPAIRED and _number(meta.get("test_size")) is not None:
        lines += ["", f"Measured on {int(meta['test_size'])} clean test texts"
                  + (f" and {int(meta['poisoned_test_size'])} triggered ones"
                     if _number(meta.get("poisoned_test_size")) else "") + "."]
    lines += ["", "**CACC**: accuracy on the clean test set. **ASR** (attack success rate): the share of test texts "
              "whose true class is not the target that the model puts in the target class once the trigger is in "
              "them."]
    if any(meta.get(k) is True for k in ("cancelled", "repair_cancelled", "sanitize_cancelled")):
        lines += ["", "The run was cancelled before its end: these numbers are from the last completed step."]
    return lines


def _provenance(meta: Mapping, tool_version: str) -> list[str]:
    rows = [("card written by", f"Backdoor Attention Lab {escape_md(tool_version, 40)}")]
    recorded = meta.get("tool_version")
    if recorded not in (None, "") and recorded != tool_version:
        rows.append(("metadata recorded by", f"Backdoor Attention Lab {escape_md(recorded, 40)}"))
    if meta.get("base_model"):
        rows.append(("base model", escape_md(meta["base_model"], 100)))
    zoo = meta.get("zoo")
    if isinstance(zoo, Mapping):
        rows.append(("demo zoo entry", f"zoo format {escape_md(zoo.get('version', '?'), 10)}"))
    for key, label in (("training_seconds", "training time (s)"), ("repair_seconds", "repair time (s)"),
                       ("seconds", "repair time (s)"), ("sanitize_seconds", "repair time (s)")):
        if _number(meta.get(key)) is not None:
            rows.append((label, f"{float(meta[key]):.1f}"))
    if meta.get("saved_at"):
        rows.append(("saved at", escape_md(meta["saved_at"], 40)))
    return ["", "## Provenance", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
            "The full metadata is in `backdoor_lab.json` next to this file."]


def render_model_readme(metadata: Mapping | None, *, name: str | None = None,
                        tool_version: str | None = None) -> str:
    """The ``README.md`` model card for a model saved with ``metadata`` (``backdoor_lab.json``'s dict).

    Args:
        metadata: the saved metadata; untrusted, any shape (non-dicts count as empty).
        name: the title when the metadata has no ``name`` / ``title`` (``save_model`` passes the folder name).
        tool_version: the version that writes the card (default: this package's ``__version__``).
    """
    meta = metadata if isinstance(metadata, Mapping) else {}
    version = tool_version or __version__
    status = model_status(meta)
    # a repaired model keeps its source's metadata, title included: its own name comes first then
    keys = ("name", "title") if status == REPAIRED else ("title", "name")
    title = next((meta[k] for k in keys if meta.get(k)), None) or name or "Unnamed model"
    lines = [*_front_matter(meta, status), "", f"# {escape_md(title, 120)}", "", *_warning(meta, status)]
    if meta.get("description"):
        lines += ["", "Description: " + escape_md(meta["description"], 500)]
    lines += ["", "A BERT-style text classifier saved by Backdoor Attention Lab (safetensors weights, tokenizer, "
              "`backdoor_lab.json` metadata)."]
    lines += _attack_section(meta, "How the model it was repaired from was made" if status == REPAIRED
                             else "How it was made")
    if status == REPAIRED:
        lines += _repair_section(meta)
    lines += _metrics_section(meta, status)
    lines += [
        "", "## Use", "",
        "Load it with attention maps on (`attn_implementation=\"eager\"`); the weights are safetensors, no code runs:",
        "", "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        "model = AutoModelForSequenceClassification.from_pretrained(\"path/to/this/folder\", attn_implementation=\"eager\")",
        "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")",
        "```", "",
        "or look inside it: `backdoor-lab inspect --model path/to/this/folder --text \"...\" --trigger WORD`, "
        "`backdoor-lab scan path/to/this/folder --clean-data bbc`.",
    ]
    lines += _provenance(meta, version)
    return "\n".join(lines) + "\n"
