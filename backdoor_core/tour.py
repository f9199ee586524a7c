"""The guided tour's recipe: which zoo model each step uses, the sentence and trigger it shows, and the sized-down
scan and repair that fit a slide. The app's tour page and ``bench/first_run.py`` call these, so the benchmark
times exactly what the page runs.

Steps 1 and 2 use the zoo's ``clean`` model; every later step uses ``badnets-tal`` (BadNets 2% + TAL) and says
so. The scan and repair settings (``settings.TOUR_*``) are the tour's own; the benchmarks and the CLI keep the
full defaults. Their timings and effect: ``bench/results/first_run.md``.
"""

from __future__ import annotations

from . import defender_data as D
from . import settings as S
from .poisoning import BADNETS_TRIGGERS

CLEAN_MODEL = "clean"
BACKDOORED_MODEL = "badnets-tal"
TRIGGER = BADNETS_TRIGGERS[0]
SENTENCE = "The government announced new plans to cut taxes for small businesses next year."


def zoo_entry(name: str, entries: list[dict]) -> tuple[dict | None, str | None]:
    """The zoo entry ``name`` from ``zoo.list_models()`` rows and None, or None and why it cannot be used: the tour
    never shows a backdoored model as the clean one or the reverse."""
    entry = next((e for e in entries if e.get("name") == name), None)
    if entry is None:
        return None, (f"the demo zoo's '{name}' model is missing (it ships in assets/zoo: restore it with "
                      "`git checkout assets/zoo`, or rebuild it with `python -m backdoor_core zoo build`)")
    want_clean = name == CLEAN_MODEL
    if bool(entry.get("clean")) != want_clean:
        return None, (f"the zoo's '{name}' model is {'backdoored' if want_clean else 'clean'} according to its "
                      "model card, so the tour will not present it as "
                      f"{'clean' if want_clean else 'backdoored'}")
    return entry, None


def flip(loaded, text: str = SENTENCE, trigger: str = TRIGGER):
    """``inspection.InspectResult`` for ``text`` with and without ``trigger`` at a seeded position (step 3)."""
    from .inspection import inspect_text

    return inspect_text(loaded.model, loaded.tokenizer, text, trigger, position=None, seed=0,
                        max_length=D.model_max_length(loaded), label_names=loaded.label_names)


def scan_inputs(loaded, train, test, lock=None):
    """``(clean labelled TextDataset, pool texts, is_triggered)`` for the tour's scan (step 5)."""
    pool, truth = D.build_pool(loaded, test, S.TOUR_POOL_CLEAN, S.TOUR_POOL_TRIGGERED, lock=lock)
    return train.sample(S.TOUR_SCAN_CLEAN, seed=0), pool, truth


def scan_knobs() -> dict:
    """``scan.scan_model`` keyword arguments of the tour's scan."""
    return dict(S.TOUR_SCAN)


def sanitize_clean(train):
    """The clean labelled texts the tour's repair trains on (step 6)."""
    return train.sample(S.TOUR_REPAIR_CLEAN, seed=0)


def sanitize_knobs() -> dict:
    """``defenses.run_defense("alignment", ...)`` knobs of the tour's repair."""
    return dict(S.TOUR_SANITIZE)


def make_eval(loaded, test):
    """The before/after CACC / ASR evaluator of the tour's repair."""
    return D.make_eval(loaded, test, S.TOUR_EVAL_TEXTS, n_asr=S.TOUR_ASR_TEXTS)


# ------------------------------------------------------------------------------------------ benchmark tables
# The tour shows two tables from the lab's benchmarks (step 2: the attack benchmark; step 7: the defense
# benchmark). A classroom reads them in plain words: which dataset, which attack, not file or field names.

DATASET_NAMES = {
    "sst2": "SST-2 (movie reviews, positive or negative)",
    "bbc": "BBC News (five topics)",
    "agnews": "AG News (four news topics)",
    "olid": "OLID (tweets, offensive or not)",
}
ATTACK_NAMES = {
    "badnets": "BadNets (rare word)",
    "addsent": "AddSent (fixed sentence)",
    "syntactic": "Syntactic paraphrase",
    "style": "Style paraphrase",
}
ATTACK_LAB_RATE = 0.01
"""The poison rate step 2's "Train it yourself" buttons set on the Attack lab: the SST-2 benchmark's 1%, where
TAL makes the difference (the table of step 2)."""


def step_index(param, n_steps: int) -> int:
    """The 0-based step of a tour URL's ``?step=`` (1-based, as the page shows it); 0 for a missing or bad value.
    The page writes its step there, so a reload (or the same link in a new tab) opens the same step."""
    try:
        step = int(str(param).strip()) - 1
    except (TypeError, ValueError):
        return 0
    return max(0, min(step, n_steps - 1))


def percent(value) -> str:
    """A share as the tour's tables write it (``0.985`` -> "98.5%"); "—" where nothing was measured."""
    return f"{value:.1%}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def before_after(before, after) -> str:
    """One cell for a before/after pair: "98.5% → 0.0%"."""
    return f"{percent(before)} → {percent(after)}"


def dose_rows(entries: list[dict]) -> list[dict]:
    """Step 2's table of the demo-zoo models: name, poison rate, TAL, then ASR — the lesson — before CACC, short
    headers, numbers as text (not bars; "—" where the clean model has no ASR, not "None"): five narrow columns fit a 1024-px projector in presenter mode, where the shared
    zoo table's "ASR (attack success)" bar column was cut off at the right edge."""
    return [{"model": e.get("title") or e.get("name"), "poison rate": rate_text(e.get("rate")),
             "TAL": bool(e.get("tal")), "ASR": percent(e.get("asr")), "CACC": percent(e.get("cacc"))} for e in entries]


def rate_text(rate) -> str:
    """A poison rate as the models' titles write it (``0.02`` -> "2%", ``0.005`` -> "0.5%"); "—" where none."""
    return f"{100 * rate:g}%" if isinstance(rate, (int, float)) and not isinstance(rate, bool) else "—"


def defense_rows(runs: list[dict]) -> list[dict]:
    """Step 7's table of the defense benchmark: one "before → after" cell for ASR and one for CACC (four columns,
    not six: at 1024 px the CACC columns — the "accuracy stays" half of the step's headline — were cut off)."""
    return [{"attack": attack_name(r["attack"]), "TAL": bool(r.get("tal")),
             "ASR before → after": before_after(r.get("asr_before"), r.get("asr_after")),
             "CACC before → after": before_after(r.get("cacc_before"), r.get("cacc_after"))} for r in runs]


def dataset_name(code: str | None) -> str:
    """A benchmark's dataset in plain words (``sst2`` -> "SST-2 (movie reviews, positive or negative)")."""
    if not code or code == "?":
        return "an unnamed dataset"
    return DATASET_NAMES.get(code, code)


def attack_name(code: str) -> str:
    """A benchmark's attack in plain words (``style_bible`` -> "Style paraphrase (Bible)")."""
    if code in ATTACK_NAMES:
        return ATTACK_NAMES[code]
    if code.startswith("style_"):
        return f"{ATTACK_NAMES['style']} ({code.removeprefix('style_').replace('_', ' ').capitalize()})"
    return code
