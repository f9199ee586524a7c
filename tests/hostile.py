"""Hostile artifacts for the app tests: a model, a dataset and a zoo whose every name, label, metadata value and
text is an HTML/script payload (issue #11, item 1). Built in a temp folder by ``make_hostile_world``; used by
tests/test_hostile_app.py (AppTest and unit tests) and tests/test_hostile_browser.py (real browser).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# the two payloads of the issue: the first ran script in the app's origin through a class name
IFRAME = '<iframe srcdoc="<script>alert(parent.location.origin)</script>"></iframe>'
IMG = "<img src=x onerror=alert(1)>"
SVG = "<svg/onload=alert(7)>"  # no space: becomes the model's BadNets trigger word, inserted into every text
# the second class name sorts before IFRAME, so IFRAME is the last class: the Attack lab's default target, whose
# name its poisoned-text peek printed as HTML
BREAKOUT = '"><img src=x onerror=alert(2)>'
PAYLOADS = [
    IFRAME,
    IMG,
    SVG,
    "<script>alert(3)</script>",
    "</script><script>alert(4)</script><!--",
    "[click me](javascript:alert(5))",
    "**bold** $x^2$ :red[red] `code` <b>b</b>",
    BREAKOUT,
]
LABELS = (IFRAME, BREAKOUT)  # the dataset's (and the model's) two class names
WORDS = "market shares profit bank match goal team coach league film music".split()

# what must never exist in a rendered page (checked in every frame by the browser test)
RAW_MARKERS = ("<iframe", "<img", "<svg", "<script", "javascript:")


def hostile_texts(n: int = 100) -> list[tuple[str, str]]:
    """``n`` (text, label) rows: texts carry the payloads among ordinary words; labels are ``LABELS``. The app
    splits a single file 80 / 20 (``data.file_split``): 100 rows leave the Attack lab its 16 test texts."""
    rows = []
    for i in range(n):
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(6))
        rows.append((f"{words} {PAYLOADS[i % len(PAYLOADS)]} {words}", LABELS[i % 2]))
    return rows


def hostile_metadata() -> dict:
    """``backdoor_lab.json`` content with a payload in every field the app shows."""
    return {
        "name": IFRAME,
        "title": IMG,
        "description": PAYLOADS[5] + " " + IMG,
        "attack": "badnets",
        "trigger": SVG,
        "target": 1,
        "target_name": IMG,
        "rate": IMG,
        "tal": True,
        "tal_heads": [IMG, "L0H1"],
        "cacc": 0.5,
        "asr": 0.5,
        "sanitized": True,
        "defense": IFRAME,
        IMG: IFRAME,
    }


def make_hostile_world(root: Path) -> dict[str, Path]:
    """Write the hostile data file, a hostile model folder (named by a payload) and a zoo holding it.

    Returns ``{"data", "model", "zoo"}``. The model is the tiny random BERT with the dataset's two (hostile)
    class names; the zoo holds it as ``badnets-tal`` (the guided tour's model) and under a payload folder name.
    """
    from backdoor_core.models import save_model, tiny_model

    root.mkdir(parents=True, exist_ok=True)
    data = root / "hostile.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in hostile_texts()),
                    encoding="utf-8")
    labels = sorted(LABELS)  # load_table orders class names alphabetically
    lm = tiny_model(num_labels=2, seed=0)
    lm.model.config.id2label = dict(enumerate(labels))
    lm.model.config.label2id = {n: i for i, n in enumerate(labels)}
    model = save_model(lm.model, lm.tokenizer, root / "models" / IMG.replace("/", "_"), hostile_metadata())
    zoo = root / "zoo"
    for folder in ("badnets-tal", re.sub(r"[/\\]", "_", IFRAME)):
        save_model(lm.model, lm.tokenizer, zoo / folder, hostile_metadata())
    return {"data": data, "model": model, "zoo": zoo}
