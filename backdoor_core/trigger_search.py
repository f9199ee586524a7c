"""Name the likely trigger: rank the words and phrases the scan's suspicious heads focus on, then verify them.

Input: a model, the scan's suspicious heads ``(L, H)`` bool, the flagged pool inputs, and clean held-out texts.
No trigger knowledge. Our design (AttenTD and T-Miner search for trigger words too, by different means; their
procedures are not reproduced here):

1. **Focus.** For each flagged input (at most ``max_flagged``), every key token gets the attention the
   suspicious heads send it (mean over real queries, summed over the suspicious heads; ``[CLS]``/``[SEP]``
   excluded) — the quantity ``sanitize.focus_removal_labels`` drops tokens by. Word pieces are summed into
   words (the tokenizer's ``word_ids``), and each input's word shares are normalised to sum to 1.
2. **Candidates.** In each input the ``top_words`` words with the largest shares are candidates on their own;
   runs of adjacent top words (by word index) are merged into phrases (a sentence trigger spreads the heads'
   focus over its words). A candidate's ``focus`` is its summed share averaged over the flagged inputs, and
   ``support`` is the number of flagged inputs it was a candidate in. Words common in clean text are not
   triggers: ``clean_rate`` is the share of clean texts that contain the candidate, and the pre-verification
   ``prior`` is ``focus * (1 - clean_rate)``.
3. **Verification** of the ``verify`` (8) best candidates by prior. The *suspected target* is the class the model
   predicts most often on the flagged inputs. *Insertion flip rate*: the candidate is inserted at a random
   word position (seeded, inside the truncation window) into up to ``n_insert`` (40) clean held-out texts the
   model does not already put in the suspected target; the share now predicted as the target. *Removal flip rate*:
   every occurrence is deleted from the flagged inputs that contain it and are predicted as the target; the
   share whose prediction leaves the target.
4. **Ranking**: candidates the clean data already explains come last — a word that sends inputs to the target
   class AND, in the defender's labelled clean texts, occurs (at least ``EXPLAINED_MIN_COUNT`` times) almost
   only in texts labelled as the target (share >= ``EXPLAINED_SHARE``) is a genuine feature of that class
   ("football" for sport), not a trigger; a trigger is rare in clean data or label-blind. Then by insertion
   flip rate, then removal flip rate, then prior. Unverified candidates follow, by prior. A phrase that contains
   a better-ranked candidate whose insertion flip rate is at least as high (less ``SUPERPHRASE_SLACK``) is
   dropped: the extra words add nothing (``cf and`` after ``cf``).
5. **Phrase completion**: the heads often focus on a part of a sentence trigger ("i watch"), and a part may flip
   the model by itself. Each of the ``complete`` best verified candidates is grown, one word at a time, by the
   word that precedes or follows it in at least ``COMPLETE_SHARE`` of the flagged inputs containing it (at least
   ``COMPLETE_MIN`` of them): the words of a fixed sentence always travel together, a rare-word trigger's
   neighbours are random. The grown phrase is verified too and ranked just before its fragment when it flips at
   least as often (less ``SUPERPHRASE_SLACK``). Only fragments whose own insertion flip rate is at least
   ``COMPLETE_MIN_FLIPS`` (``settings.TRIGGER_COMPLETE_MIN_FLIPS``, 0.3) are grown: a sentence trigger's part
   flips less than the sentence (SST-2 AddSent 1%: ``3d movie`` 42%).

Measured rank of the true trigger: ``bench/results/trigger_search_sst2.md`` (SST-2 benchmark models),
``bench/results/trigger_search.md`` (BBC zoo), ``bench/results/trigger_search_tiny.md`` (tiny zoo).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations

import numpy as np
import torch

from . import settings as S
from .attention import predict
from .triggers import insert_trigger

DEFAULT_TOP_WORDS = 3
DEFAULT_MAX_FLAGGED = 60
DEFAULT_VERIFY = 8
DEFAULT_N_INSERT = 40
DEFAULT_SHOWN = 10
DEFAULT_COMPLETE = 3
COMPLETE_SHARE = 0.9
COMPLETE_MIN = 3
COMPLETE_MIN_FLIPS = S.TRIGGER_COMPLETE_MIN_FLIPS  # only fragments that flip by themselves are worth growing
MAX_PHRASE_WORDS = 8
SUPERPHRASE_SLACK = 0.05
EXPLAINED_MIN_COUNT = 3
EXPLAINED_SHARE = 0.8


@dataclass
class TriggerCandidate:
    """One candidate trigger (a word or a phrase, lower-cased as the heads' words were read).

    Attributes:
        phrase: the words, joined by single spaces.
        support: number of flagged inputs in which it was among the most-focused words.
        focus: mean over the flagged inputs of its share of the suspicious heads' focus (0 where absent).
        clean_rate: share of the clean texts that contain it.
        prior: ``focus * (1 - clean_rate)``, the pre-verification ranking key.
        insert_flip_rate: share of clean non-target texts sent to the suspected target by inserting it (None =
            not verified).
        n_insert: clean texts it was inserted into.
        removal_flip_rate: share of the flagged target-predicted inputs containing it whose prediction leaves
            the target when it is deleted (None = not verified or no such input).
        n_removal: flagged inputs it was deleted from.
        clean_target_share: share of the labelled clean texts containing it that are labelled as the suspected
            target (None: fewer than ``EXPLAINED_MIN_COUNT`` such texts, or no labels).
    """

    phrase: str
    support: int
    focus: float
    clean_rate: float
    prior: float
    insert_flip_rate: float | None = None
    n_insert: int = 0
    removal_flip_rate: float | None = None
    n_removal: int = 0
    clean_target_share: float | None = None

    @property
    def verified(self) -> bool:
        return self.insert_flip_rate is not None

    @property
    def explained_by_clean_data(self) -> bool:
        return self.clean_target_share is not None and self.clean_target_share >= EXPLAINED_SHARE

    def sort_key(self):
        return (not self.verified, self.explained_by_clean_data, -(self.insert_flip_rate or 0.0),
                -(self.removal_flip_rate or 0.0), -self.prior)


@dataclass
class TriggerSearch:
    """What ``search_triggers`` found: ``candidates`` best first, the suspected target and the data used."""

    candidates: list[TriggerCandidate]
    target: int | None
    target_name: str | None
    n_flagged: int
    n_clean: int
    baseline_target_rate: float | None = None
    settings: dict = field(default_factory=dict)

    @property
    def top(self) -> TriggerCandidate | None:
        return self.candidates[0] if self.candidates else None

    def rank_of(self, trigger: str | Sequence[str]) -> int | None:
        """1-based rank of the first candidate equal to ``trigger`` (or to any of several), case-insensitive."""
        wanted = {normalise(t) for t in ([trigger] if isinstance(trigger, str) else trigger)}
        for i, c in enumerate(self.candidates, 1):
            if c.phrase in wanted:
                return i
        return None

    def rank_overlapping(self, trigger: str) -> int | None:
        """1-based rank of the first candidate made only of words of ``trigger`` (a part of a sentence trigger)."""
        words = set(normalise(trigger).split())
        for i, c in enumerate(self.candidates, 1):
            if c.phrase and set(c.phrase.split()) <= words:
                return i
        return None

    def to_dict(self, limit: int | None = None) -> dict:
        cands = self.candidates if limit is None else self.candidates[:limit]
        return {"target": self.target, "target_name": self.target_name, "n_flagged": self.n_flagged,
                "n_clean": self.n_clean, "baseline_target_rate": self.baseline_target_rate,
                "candidates": [{**asdict(c), "rank": i} for i, c in enumerate(cands, 1)],
                "settings": dict(self.settings)}

    def rows(self, limit: int | None = DEFAULT_SHOWN) -> list[dict]:
        """Table rows (percentages as floats in [0, 1]; None where not verified)."""
        return self.to_dict(limit)["candidates"]


def display_rows(data: dict, limit: int = DEFAULT_SHOWN) -> list[dict]:
    """Rows for a table (CLI, app, report) from ``TriggerSearch.to_dict()``: rank, candidate, support,
    insertion / removal flip rates as percentage strings ("-" where not measured)."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    return [{"rank": c["rank"], "candidate": c["phrase"], "flagged inputs": c["support"],
             "focus": round(c["focus"], 3), "in clean texts": pct(c["clean_rate"]),
             "clean ones labelled target": pct(c.get("clean_target_share")),
             "insertion flips": pct(c["insert_flip_rate"]), "removal flips": pct(c["removal_flip_rate"])}
            for c in data.get("candidates", [])[:limit]]


def report_section(data: dict, limit: int = 15, heads: str = "suspicious heads") -> dict:
    """A ``report.html_report`` section (heading, text, table, figure) from ``TriggerSearch.to_dict()``; ``heads``:
    what the scan's verdict calls the heads whose focus named them (``detection.heads_noun``)."""
    from .figures import trigger_candidates_bar

    return {"heading": "Candidate triggers",
            "text": f"Words and phrases the {heads} focus on in {data['n_flagged']} flagged inputs, "
                    f"verified by insertion into clean texts and removal from flagged ones (flips toward the "
                    f"suspected target '{data['target_name']}').",
            "table": display_rows(data, limit),
            "figure": trigger_candidates_bar(data["candidates"], str(data["target_name"] or ""))}


DISPLAY_COLUMNS = ["rank", "candidate", "flagged inputs", "in clean texts", "clean ones labelled target",
                   "insertion flips", "removal flips"]

_SPACE = re.compile(r"\s+")


def normalise(phrase: str) -> str:
    """Lower-case, single-spaced (the form candidates are compared in)."""
    return _SPACE.sub(" ", str(phrase)).strip().lower()


@torch.no_grad()
def word_focus(model, tokenizer, texts: Sequence[str], suspicious: np.ndarray, max_length: int = 128,
               batch_size: int = 16) -> list[list[tuple[str, float]]]:
    """Per text, its words in order with their share of the suspicious heads' focus (shares sum to 1).

    Token score: ``attentions[l][b, heads]`` ``(S, T, T)`` averaged over real query rows and summed over the
    suspicious heads of every layer -> ``(T,)``; special tokens and padding get 0. Words are the tokenizer's
    ``word_ids`` groups, read from the text by character offsets (truncated words are dropped).
    """
    suspicious = np.asarray(suspicious, dtype=bool)
    layers = [(l, torch.as_tensor(np.flatnonzero(row))) for l, row in enumerate(suspicious) if row.any()]
    if not layers:
        raise ValueError("No suspicious heads: there is no focus to read.")
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out: list[list[tuple[str, float]]] = []
    try:
        for start in range(0, len(texts), batch_size):
            chunk = [str(t) for t in texts[start:start + batch_size]]
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                            return_offsets_mapping=True, return_special_tokens_mask=True)
            offsets = enc.pop("offset_mapping").numpy()
            special = enc.pop("special_tokens_mask").bool()
            word_ids = [enc.word_ids(b) for b in range(len(chunk))]
            enc = {k: v.to(device) for k, v in enc.items()}
            res = model(**enc, output_attentions=True)
            qmask = enc["attention_mask"].float()  # (B, T)
            score = torch.zeros(qmask.shape, device=device)
            for l, heads in layers:
                att = res.attentions[l][:, heads.to(device)].float()  # (B, S, T, T)
                col = (att * qmask[:, None, :, None]).sum(2) / qmask.sum(-1)[:, None, None]  # (B, S, T)
                score += col.sum(1)
            score = score.masked_fill(special.to(device) | (qmask == 0), 0.0).cpu().numpy()
            for b, text in enumerate(chunk):
                words: dict[int, list] = {}
                for t, w in enumerate(word_ids[b]):
                    if w is None or special[b, t]:
                        continue
                    s, e = offsets[b, t]
                    if w not in words:
                        words[w] = [int(s), int(e), 0.0]
                    words[w][0] = min(words[w][0], int(s))
                    words[w][1] = max(words[w][1], int(e))
                    words[w][2] += float(score[b, t])
                total = sum(v[2] for v in words.values()) or 1.0
                out.append([(text[s:e], sc / total) for _, (s, e, sc) in sorted(words.items())])
    finally:
        model.train(was)
    return out


def _input_candidates(words: list[tuple[str, float]], top_words: int) -> dict[str, float]:
    """The candidates of one input: its ``top_words`` words and the runs of adjacent top words -> share."""
    if not words:
        return {}
    order = sorted(range(len(words)), key=lambda i: -words[i][1])[:top_words]
    chosen = sorted(order)
    cands: dict[str, float] = {}
    for i in chosen:
        key = normalise(words[i][0])
        if key:
            cands[key] = max(cands.get(key, 0.0), words[i][1])
    run = [chosen[0]]
    for i in chosen[1:] + [None]:
        if i is not None and i == run[-1] + 1:
            run.append(i)
            continue
        if 1 < len(run) <= MAX_PHRASE_WORDS:
            key = normalise(" ".join(words[j][0] for j in run))
            cands[key] = max(cands.get(key, 0.0), sum(words[j][1] for j in run))
        if i is not None:
            run = [i]
    return cands


def _contains(text_norm: str, phrase: str) -> bool:
    """Whole-word (token-boundary) containment of a normalised phrase in a normalised text."""
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text_norm) is not None


def remove_phrase(text: str, phrase: str) -> str:
    """``text`` with every whole-word, case-insensitive occurrence of ``phrase`` deleted (spaces tidied)."""
    parts = [re.escape(p) for p in normalise(phrase).split()]
    if not parts:
        return text
    pattern = re.compile(r"(?<!\w)" + r"\s+".join(parts) + r"(?!\w)", re.IGNORECASE)
    return _SPACE.sub(" ", pattern.sub(" ", text)).strip()


def complete_phrase(phrase: str, flagged_norm: Sequence[str], share: float = COMPLETE_SHARE,
                    minimum: int = COMPLETE_MIN) -> str:
    """``phrase`` grown by the words that (almost) always precede / follow it in ``flagged_norm`` (normalised
    texts); see step 5 of the module docstring."""
    while len(phrase.split()) < MAX_PHRASE_WORDS:
        pat = re.compile(r"(?:(\S+) )?" + r"(?<!\w)" + re.escape(phrase) + r"(?!\w)(?: (\S+))?")
        before: dict[str, int] = {}
        after: dict[str, int] = {}
        n = 0
        for t in flagged_norm:
            m = pat.search(t)
            if not m:
                continue
            n += 1
            if m.group(1):
                before[m.group(1)] = before.get(m.group(1), 0) + 1
            if m.group(2):
                after[m.group(2)] = after.get(m.group(2), 0) + 1
        if n < minimum:
            break
        best = max([(c, w, "b") for w, c in before.items()] + [(c, w, "a") for w, c in after.items()], default=None)
        if best is None or best[0] < share * n:
            break
        phrase = f"{best[1]} {phrase}" if best[2] == "b" else f"{phrase} {best[1]}"
    return phrase


def _drop_superphrases(cands: list[TriggerCandidate]) -> list[TriggerCandidate]:
    """Drop verified phrases that contain a better-ranked verified candidate flipping at least as often."""
    kept: list[TriggerCandidate] = []
    for c in cands:
        if c.verified and any(k.verified and k.phrase != c.phrase and _contains(c.phrase, k.phrase)
                              and k.insert_flip_rate >= c.insert_flip_rate - SUPERPHRASE_SLACK for k in kept):
            continue
        kept.append(c)
    return kept


def search_triggers(
    model,
    tokenizer,
    suspicious: np.ndarray,
    flagged_texts: Sequence[str],
    clean_texts: Sequence[str],
    *,
    clean_labels: Sequence[int] | None = None,
    label_names: Sequence[str] | None = None,
    top_words: int = DEFAULT_TOP_WORDS,
    max_flagged: int = DEFAULT_MAX_FLAGGED,
    verify: int = DEFAULT_VERIFY,
    n_insert: int = DEFAULT_N_INSERT,
    complete: int = DEFAULT_COMPLETE,
    max_length: int = 128,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> TriggerSearch:
    """Ranked candidate triggers from the suspicious heads' focus on flagged inputs (see the module docstring).

    Args:
        suspicious: ``(L, H)`` bool, the scan's suspicious heads.
        flagged_texts: the scan's flagged pool inputs, most suspicious first (the first ``max_flagged`` are used).
        clean_texts: clean held-out texts (for ``clean_rate`` and the insertion test).
        clean_labels: their labels, when known (for ``clean_target_share``; step 4 of the module docstring).
        verify: how many candidates (best prior first) to verify by insertion and removal.
        n_insert: clean non-target texts each candidate is inserted into.
        complete: how many of the best verified candidates to try to grow into longer phrases (step 5).
    """
    flagged = [str(t) for t in flagged_texts][:max_flagged]
    clean = [str(t) for t in clean_texts]
    settings = {"top_words": top_words, "max_flagged": max_flagged, "verify": verify, "n_insert": n_insert,
                "max_length": max_length, "seed": seed}
    suspicious = np.asarray(suspicious, dtype=bool)
    if not flagged or not suspicious.any():
        return TriggerSearch([], None, None, len(flagged), len(clean), settings=settings)
    focus = word_focus(model, tokenizer, flagged, suspicious, max_length)
    agg: dict[str, list[float]] = {}
    for words in focus:
        for key, share in _input_candidates(words, top_words).items():
            agg.setdefault(key, []).append(share)
    clean_norm = [normalise(t) for t in clean]
    cands = []
    for key, shares in agg.items():
        rate = float(np.mean([_contains(t, key) for t in clean_norm])) if clean_norm else 0.0
        fshare = float(np.sum(shares) / len(flagged))
        cands.append(TriggerCandidate(key, len(shares), fshare, rate, fshare * (1.0 - rate)))
    cands.sort(key=lambda c: -c.prior)

    flagged_probs = predict(model, tokenizer, flagged, max_length)
    target = int(np.bincount(flagged_probs.argmax(1), minlength=flagged_probs.shape[1]).argmax())
    target_name = (str(label_names[target]) if label_names is not None and target < len(label_names)
                   else str(target))
    baseline = None
    if clean and verify > 0:
        clean_pred = predict(model, tokenizer, clean, max_length).argmax(1)
        baseline = float((clean_pred == target).mean())
        hosts = [t for t, p in zip(clean, clean_pred) if p != target]
        random.Random(seed).shuffle(hosts)
        hosts = hosts[:n_insert]
        flagged_target = [t for t, p in zip(flagged, flagged_probs.argmax(1)) if p == target]
        def check(c: TriggerCandidate) -> None:
            if clean_labels is not None:
                ys = [int(y) for t, y in zip(clean_norm, clean_labels) if _contains(t, c.phrase)]
                if len(ys) >= EXPLAINED_MIN_COUNT:
                    c.clean_target_share = float(np.mean([y == target for y in ys]))
            rng = random.Random(f"{seed}:{c.phrase}")
            if hosts:
                ins = [insert_trigger(h, c.phrase, None, rng, tokenizer, max_length).text for h in hosts]
                c.insert_flip_rate = float((predict(model, tokenizer, ins, max_length).argmax(1) == target).mean())
                c.n_insert = len(hosts)
            holders = [t for t in flagged_target if _contains(normalise(t), c.phrase)]
            if holders:
                removed = [remove_phrase(t, c.phrase) or "." for t in holders]
                c.removal_flip_rate = float((predict(model, tokenizer, removed, max_length).argmax(1)
                                             != target).mean())
                c.n_removal = len(holders)

        for c in cands[:verify]:
            if should_stop is not None and should_stop():
                break
            check(c)
        # phrase completion (step 5): grow the best verified candidates by the words that always surround them
        flagged_norm = [normalise(t) for t in flagged]
        known = {c.phrase for c in cands}
        for c in sorted([c for c in cands if c.verified and (c.insert_flip_rate or 0) >= COMPLETE_MIN_FLIPS],
                        key=TriggerCandidate.sort_key)[:complete]:
            longer = complete_phrase(c.phrase, flagged_norm)
            if longer == c.phrase or longer in known:
                continue
            rate = float(np.mean([_contains(t, longer) for t in clean_norm])) if clean_norm else 0.0
            new = TriggerCandidate(longer, c.support, c.focus, rate, c.prior)
            check(new)
            if new.insert_flip_rate is not None and new.insert_flip_rate >= c.insert_flip_rate - SUPERPHRASE_SLACK:
                new.prior = c.prior + 1e-9  # rank it just before the fragment it completes
                cands.append(new)
                known.add(longer)
    cands.sort(key=TriggerCandidate.sort_key)
    cands = _drop_superphrases(cands)
    return TriggerSearch(cands, target, target_name, len(flagged), len(clean), baseline, settings)


# ----------------------------------------------------------------------------------- pool-enriched words (weak)

_WORD = re.compile(r"[^\W_][\w'-]*")


def _doc_words(text: str) -> set[str]:
    return set(_WORD.findall(normalise(text)))


_VOCAB_WORD = re.compile(r"[a-z]{2,10}")


def absent_vocabulary(tokenizer, clean_texts: Sequence[str], n: int, seed: int = 0,
                      exclude: Sequence[str] = ()) -> list[str]:
    """``n`` whole words of ``tokenizer``'s vocabulary (2-10 lower-case letters, no word piece) that none of
    ``clean_texts`` holds and that are not in ``exclude``: a seeded draw (``random.Random(seed)``) over the
    vocabulary sorted, so the same tokenizer, texts and seed give the same words. Fewer when fewer exist.

    Words the defender's clean texts lack are what a rare-word trigger looks like; the repair's rare-word inserts
    (``sanitize.trigger_augmented`` with ``settings.REPAIR_RARE_WORDS``) and ``bench/vocab_flip_check.py`` draw
    them here."""
    held = set().union(*(_doc_words(t) for t in clean_texts)) if clean_texts else set()
    skip = {str(w).lower() for w in exclude}
    words = sorted(w for w in tokenizer.get_vocab() if _VOCAB_WORD.fullmatch(w) and w not in held and w not in skip)
    return random.Random(seed).sample(words, min(max(0, int(n)), len(words)))


def enrichment_p(k_pool: int, n_pool: int, k_clean: int, n_clean: int) -> float:
    """One-sided hypergeometric (Fisher) p-value that a word in ``k_pool`` of ``n_pool`` pool inputs and
    ``k_clean`` of ``n_clean`` clean texts is this concentrated in the pool by chance. Log-space terms, summed
    from ``k_pool`` up until they stop adding (past the mode they only shrink), so a large pool stays cheap."""
    import math

    total, hits = n_pool + n_clean, k_pool + k_clean

    def log_term(x: int) -> float:
        return (math.lgamma(hits + 1) - math.lgamma(x + 1) - math.lgamma(hits - x + 1)
                + math.lgamma(total - hits + 1) - math.lgamma(n_pool - x + 1)
                - math.lgamma(total - hits - n_pool + x + 1)
                - math.lgamma(total + 1) + math.lgamma(n_pool + 1) + math.lgamma(total - n_pool + 1))

    lo, hi = max(k_pool, hits - (total - n_pool)), min(hits, n_pool)
    p = 0.0
    for x in range(lo, hi + 1):
        t = math.exp(log_term(x))
        p += t
        if x > hits * n_pool / total and t < 1e-15 * p:
            break
    return float(min(1.0, p))


@dataclass
class PoolWord:
    """A word much more common in the pool than in the defender's clean texts, and what inserting it does.

    Attributes:
        word: lower-cased.
        pool_count / clean_count: inputs of the pool / of the clean texts that contain it.
        p_value: ``enrichment_p`` of those counts.
        flip_rates: per class ``c``, the share of clean texts not predicted as ``c`` that are predicted as ``c``
            once the word is inserted at a random word position; ``(C,)``.
        target: the class with the largest flip rate.
        flip_rate: that rate.
        clean_target_share: share of the labelled clean texts containing the word that are labelled ``target``
            (None: fewer than ``EXPLAINED_MIN_COUNT`` of them, or no labels).
        bar: the flip rate the word needs to be a likely trigger (``likely_trigger_words``):
            ``settings.POOL_WORD_MIN_FLIP``, or ``POOL_WORD_SCREEN_MIN_FLIP`` when the pool holds more enriched words
            than ``POOL_WORD_TOP`` (it is not drawn like the clean texts; ``pool_words``).
    """

    word: str
    pool_count: int
    clean_count: int
    p_value: float
    flip_rates: list[float]
    target: int
    flip_rate: float
    clean_target_share: float | None = None
    bar: float = S.POOL_WORD_MIN_FLIP

    @property
    def explained_by_clean_data(self) -> bool:
        """The clean labels already tie the word to its flip class: a genuine feature, not a trigger."""
        return self.clean_target_share is not None and self.clean_target_share >= EXPLAINED_SHARE


def enriched_words(pool_texts: Sequence[str], clean_texts: Sequence[str], min_count: int = S.POOL_WORD_MIN_COUNT,
                   top: int | None = S.POOL_WORD_TOP,
                   max_p: float = S.POOL_WORD_MAX_P) -> list[tuple[str, int, int, float]]:
    """The ``top`` words most significantly concentrated in the pool over the clean texts (document counts; a
    word must be in at least ``min_count`` pool inputs and pass ``enrichment_p <= max_p``). Returns
    ``(word, pool_count, clean_count, p_value)``, smallest p first (``top`` None: all). A word trigger inserted
    into a share of the pool is in many pool inputs and in no clean text; natural words are in both."""
    pool_docs = [_doc_words(t) for t in pool_texts]
    clean_docs = [_doc_words(t) for t in clean_texts]
    n_p, n_c = len(pool_docs), len(clean_docs)
    cp = Counter(w for d in pool_docs for w in d)
    cc = Counter(w for d in clean_docs for w in d)
    out = []
    for w, k in cp.items():
        if k < min_count or k * (n_c + 1) <= (cc[w] + 0.5) * n_p:
            continue
        p = enrichment_p(int(k), n_p, int(cc[w]), n_c)
        if p <= max_p:
            out.append((w, int(k), int(cc[w]), p))
    out.sort(key=lambda r: (r[3], -r[1], r[0]))
    return out if top is None else out[:top]


@torch.no_grad()
def pool_words(model, tokenizer, pool_texts: Sequence[str], clean_texts: Sequence[str], max_length: int,
               clean_labels: Sequence[int] | None = None, seed: int = 0, n_insert: int = S.POOL_WORD_N_INSERT,
               min_count: int = S.POOL_WORD_MIN_COUNT, top: int = S.POOL_WORD_TOP,
               max_p: float = S.POOL_WORD_MAX_P, base_classes: Sequence[int] | None = None,
               max_clean_share: float | None = None, screen: int = S.POOL_WORD_SCREEN,
               n_screen: int = S.POOL_WORD_N_SCREEN, min_flip: float = S.POOL_WORD_MIN_FLIP,
               screen_min_flip: float = S.POOL_WORD_SCREEN_MIN_FLIP) -> list[PoolWord]:
    """Pool-enriched words (``enriched_words``) with their insertion flip rates, smallest p first (our design;
    papers silent). Needs no flagged inputs and no suspicious heads, so it still reads a weak backdoor whose
    trigger captures no head (the scan then flags almost nothing). Costs ``top + 1`` predictions over
    ``n_insert`` clean texts; one fewer with ``base_classes`` (``(n,)`` the model's classes of the first ``n_insert``
    clean texts, e.g. from a scan's forward pass). ``max_clean_share``: leave out the words more than that share of
    the clean texts hold (they cannot mark inputs, ``marking_words``) without inserting them; the others' insertion
    positions stay the same.

    The first ``top`` words are inserted into ``n_insert`` clean texts. A pool from another source than the clean
    texts holds dozens of enriched words, and a trigger need not be among the first ``top``: the next ``screen``
    are inserted into the first ``n_screen`` of those texts (one batched pass), and those that send at least
    ``screen_min_flip`` of them to one class get the other texts too, at the same positions, so their rates are
    what the full test gives (the others are not returned). In such a pool natural words the clean texts lack
    move the model too, so every word's ``PoolWord.bar`` is ``screen_min_flip`` there, ``min_flip`` when at most
    ``top`` words are enriched. Our design; papers silent (``settings.POOL_WORD_SCREEN``,
    ``POOL_WORD_SCREEN_MIN_FLIP``)."""
    cands = enriched_words(pool_texts, clean_texts, min_count, top + max(1, int(screen)), max_p)
    if not cands or not clean_texts:
        return []
    bar = screen_min_flip if len(cands) > top else min_flip
    cands = cands[: top + max(0, int(screen))]
    base_texts = [str(t) for t in clean_texts[:n_insert]]
    if base_classes is not None and len(base_classes) >= len(base_texts):
        base = np.asarray(base_classes)[: len(base_texts)]
    else:
        base = predict(model, tokenizer, base_texts, max_length).argmax(1)
    n_classes = int(model.config.num_labels)
    rng = random.Random(seed)
    places = [[rng.randint(0, len(t.split())) for t in base_texts] for _ in cands]  # (words, texts): fixed by order
    kept = [i for i, c in enumerate(cands) if max_clean_share is None or c[2] <= max_clean_share * len(clean_texts)]

    def inserted(i: int, rows: range) -> list[str]:
        return [insert_trigger(base_texts[j], cands[i][0], places[i][j], tokenizer=tokenizer,
                               max_length=max_length).text for j in rows]

    preds = {}  # word index -> (n_insert,) classes with the word inserted
    screened = [i for i in kept if i >= top and n_screen < len(base_texts)]
    for i in kept:
        if i not in screened:
            preds[i] = predict(model, tokenizer, inserted(i, range(len(base_texts))), max_length).argmax(1)
    if screened:
        head, rest = range(n_screen), range(n_screen, len(base_texts))
        first = predict(model, tokenizer, [t for i in screened for t in inserted(i, head)], max_length).argmax(1)
        first = first.reshape(len(screened), n_screen)
        passed = [i for i, f in zip(screened, first)
                  if max(flip_rates(f, base[:n_screen], n_classes)) >= screen_min_flip]
        if passed:
            later = predict(model, tokenizer, [t for i in passed for t in inserted(i, rest)], max_length).argmax(1)
            for i, f, r in zip(passed, first[[screened.index(i) for i in passed]],
                               later.reshape(len(passed), len(rest))):
                preds[i] = np.concatenate([f, r])
    norm = [normalise(t) for t in clean_texts]
    out = []
    for i in sorted(preds):
        word, kp, kc, p = cands[i]
        rates = flip_rates(preds[i], base, n_classes)
        tgt = int(np.argmax(rates))
        share = None
        if clean_labels is not None:
            ys = [int(y) for t, y in zip(norm, clean_labels) if _contains(t, word)]
            if len(ys) >= EXPLAINED_MIN_COUNT:
                share = float(np.mean([y == tgt for y in ys]))
        out.append(PoolWord(word, kp, kc, p, rates, tgt, rates[tgt], share, bar))
    return out


def flip_rates(pred: np.ndarray, base: np.ndarray, n_classes: int) -> list[float]:
    """Per class ``c``, the share of texts not in ``c`` before (``base``, ``(n,)``) that are in ``c`` after
    (``pred``, ``(n,)``); 0 where every text already was in ``c``."""
    return [float((pred[base != c] == c).mean()) if (base != c).any() else 0.0 for c in range(n_classes)]


@torch.no_grad()
def word_flips(model, tokenizer, texts: Sequence[str], words: Sequence[str], max_length: int,
               seed: int = 0) -> np.ndarray:
    """``(len(words), C)`` insertion flip rates: each word inserted into every text of ``texts`` at one seeded word
    position per text (the same positions for every word), ``flip_rates`` against the plain texts. One batched
    prediction of ``len(words) x len(texts)`` texts."""
    rng = random.Random(seed)
    texts = [str(t) for t in texts]
    places = [rng.randint(0, len(t.split())) for t in texts]
    n_classes = int(model.config.num_labels)
    if not words or not texts:
        return np.zeros((len(words), n_classes))
    base = predict(model, tokenizer, texts, max_length).argmax(1)
    inserted = [insert_trigger(t, w, p, tokenizer=tokenizer, max_length=max_length).text
                for w in words for t, p in zip(texts, places)]
    pred = predict(model, tokenizer, inserted, max_length).argmax(1).reshape(len(words), len(texts))
    return np.asarray([flip_rates(p, base, n_classes) for p in pred])


def pool_word_rows(words: Sequence[PoolWord], min_flip: float | None = None,
                   marking: Sequence[str] = ()) -> list[dict]:
    """JSON-ready rows, one per pool word, with ``likely`` (``likely_trigger_words``) and ``companion`` (a marking
    word of ``marking`` that is not itself likely: ``companion_words``) marked."""
    likely = {w.word for w in likely_trigger_words(words, min_flip)}
    marks = set(marking)
    return [{**asdict(w), "likely": w.word in likely, "companion": w.word in marks and w.word not in likely}
            for w in words]


POOL_WORD_COLUMNS = ["word", "in pool", "in clean", "chance p", "insertion sends to", "flips", "likely trigger"]


def pool_word_display(rows: Sequence[dict], label_names: Sequence[str]) -> list[dict]:
    """Table rows (``POOL_WORD_COLUMNS``) from ``pool_word_rows`` output: counts, the enrichment p-value, the class
    insertion sends clean texts to ("-" when it flips none), how often, and whether it is a likely trigger ("yes"),
    a companion of one (``companion_words``: it marks inputs too) or neither."""
    out = []
    for r in rows:
        t = int(r["target"])
        out.append({"word": r["word"], "in pool": int(r["pool_count"]), "in clean": int(r["clean_count"]),
                    "chance p": f"{r['p_value']:.1e}",
                    "insertion sends to": "-" if r["flip_rate"] <= 0 else
                    (label_names[t] if t < len(label_names) else str(t)),
                    "flips": f"{r['flip_rate']:.0%}",
                    "likely trigger": "yes" if r["likely"] else "companion" if r.get("companion") else "no"})
    return out


def pool_word_bar_note(rows: Sequence[dict]) -> str | None:
    """A sentence for the views when the pool's words faced the higher bar (``PoolWord.bar``; rows from
    ``pool_word_rows``), else None."""
    bars = {float(r.get("bar", S.POOL_WORD_MIN_FLIP)) for r in rows}
    if not bars or max(bars) <= S.POOL_WORD_MIN_FLIP:
        return None
    return (f"More than {S.POOL_WORD_TOP} words are concentrated in the pool, so it is not drawn like the clean "
            f"texts; natural words the clean texts lack move the model too, so a likely trigger must send at least "
            f"{max(bars):.0%} of the clean texts to one class here (not {S.POOL_WORD_MIN_FLIP:.0%}).")


def likely_trigger_words(words: Sequence[PoolWord], min_flip: float | None = None) -> list[PoolWord]:
    """The pool words whose insertion sends at least ``min_flip`` (None: each word's ``PoolWord.bar``) of the clean
    texts to one class, unless the clean labels explain the word (``PoolWord.explained_by_clean_data``)."""
    return [w for w in words if w.flip_rate >= (w.bar if min_flip is None else min_flip)
            and not w.explained_by_clean_data]


def marking_words(words: Sequence[PoolWord], n_clean: int, max_clean_share: float = S.FRR,
                  min_flip: float | None = None, companions: bool = S.POOL_WORD_COMPANIONS,
                  pool_texts: Sequence[str] | None = None) -> list[str]:
    """The likely trigger words (``likely_trigger_words``) that mark an input as triggered: those at most
    ``max_clean_share`` of the ``n_clean`` clean texts hold (``PoolWord.clean_count``). Our design (papers silent).

    A word trigger rides along with every input it is in, whether or not the backdoor flips that input; a weak
    backdoor flips few, so neither the heads nor the representation tell those inputs from clean ones, yet each
    still holds the word. A word that many clean texts hold marks nothing: the default share is the scan's false-
    rejection budget (``settings.FRR``), so marking by it flags at most about as many clean inputs as the threshold
    already does (OLID's ``url``, in 27 of 200 clean tweets, never marks; BadNets' ``cf``/``mn``/``tq`` and
    AddSent's ``3d`` are in none). ``companions``: their companions in ``pool_texts`` (``companion_words``) follow
    them. Measured: README, "Analyst tools", *Inputs marked by a trigger word*."""
    if n_clean <= 0:
        return []
    marking = [w.word for w in likely_trigger_words(words, min_flip) if w.clean_count <= max_clean_share * n_clean]
    return marking + (companion_words(words, marking, pool_texts) if companions else [])


def companion_words(words: Sequence[PoolWord], marking: Sequence[str],
                    pool_texts: Sequence[str] | None) -> list[str]:
    """The pool words that keep company with the marking words ``marking`` (our design; papers silent): no clean
    text holds them, their insertion sends some clean texts (``PoolWord.flip_rate`` above 0) to the class a marking
    word sends them to, and the clean labels do not explain them. Empty without a marking word or ``pool_texts``.

    BadNets poisons with several rare words, one to an input, and a weak backdoor may learn some below the flip bar
    (``bb`` sent 19% of the clean texts to the target, ``cf`` 7%; ``bench/results/pool_words_check.md``). Their
    inputs are triggered all the same, so they mark inputs too (``settings.POOL_WORD_COMPANIONS``). None where two
    marking words share at least half of the rarer one's pool inputs (``pool_texts``): they are parts of one phrase
    (AddSent's ``watch``, ``3d``, ``movie``), whose words are all found, not a set of words each of which triggers
    alone; on OLID AddSent + TAL the rule without this test took ``uk`` (in no clean tweet) for a companion and
    marked 5 clean pool inputs. None in a pool not drawn like the clean texts (a word's ``PoolWord.bar`` above
    ``settings.POOL_WORD_MIN_FLIP``): there many natural words are in no clean text and move the model a little.
    Measured: README, Analyst tools, *Companions of a trigger word*."""
    if pool_texts is None or any(w.bar > S.POOL_WORD_MIN_FLIP for w in words):
        return []
    wanted = list(marking)
    if not wanted:
        return []
    docs = [_doc_words(t) for t in pool_texts]
    held = {m: {i for i, d in enumerate(docs) if normalise(m) in d} for m in wanted}
    for a, b in combinations(wanted, 2):
        if len(held[a] & held[b]) * 2 >= max(1, min(len(held[a]), len(held[b]))):
            return []
    targets = {w.target for w in words if w.word in held}
    return [w.word for w in words if w.word not in held and w.clean_count == 0 and w.flip_rate > 0
            and w.target in targets and not w.explained_by_clean_data]


def marking_phrase(words: Sequence[PoolWord], marking: Sequence[str]) -> str:
    """The marking words ``marking`` for a sentence: the likely trigger words, then their companions
    (``companion_words``) named as such, e.g. ``"tq, cf; companions bb, mn"``."""
    likely = {w.word for w in likely_trigger_words(words)}
    own = [w for w in marking if w in likely] or list(marking)
    rest = [w for w in marking if w not in own]
    return ", ".join(own) + (f"; companion{'s' if len(rest) > 1 else ''} {', '.join(rest)}" if rest else "")


def marking_flip(words: Sequence[PoolWord], marking: Sequence[str]) -> float:
    """The largest insertion flip rate (``PoolWord.flip_rate``) among the marking words ``marking`` (0 without
    any): what the model verdict's word score reads (``detection.with_trigger_words``)."""
    wanted = set(marking)
    return max((float(w.flip_rate) for w in words if w.word in wanted), default=0.0)


def pool_word_marks(model, tokenizer, pool_texts: Sequence[str], clean_texts: Sequence[str], max_length: int,
                    clean_labels: Sequence[int] | None = None, seed: int = 0, max_clean_share: float = S.FRR,
                    base_classes: Sequence[int] | None = None, only_marking: bool = False,
                    screen: int = S.POOL_WORD_SCREEN) -> tuple[list[PoolWord], list[str], np.ndarray]:
    """Read the pool's words (``pool_words``) and mark the pool inputs holding a marking word: returns the words,
    the marking words (``marking_words``) and ``(len(pool_texts),)`` bool. The scan's step 6, the repair's
    ``pool_words`` knob and the benchmark's ``final_words`` detection call this. ``only_marking``: do not insert the
    words that cannot mark (the repair needs no flip rates of those; the scan shows them all);
    ``base_classes``, ``screen``: see ``pool_words``."""
    words = pool_words(model, tokenizer, pool_texts, clean_texts, max_length, clean_labels=clean_labels, seed=seed,
                       base_classes=base_classes, max_clean_share=max_clean_share if only_marking else None,
                       screen=screen)
    marking = marking_words(words, len(clean_texts), max_clean_share, pool_texts=pool_texts)
    return words, marking, word_marks(pool_texts, marking)


def word_marks(texts: Sequence[str], words: Sequence[str]) -> np.ndarray:
    """``(len(texts),)`` bool: the text holds one of ``words`` (whole words, lower-cased, as ``enriched_words``
    counts them)."""
    wanted = {normalise(w) for w in words}
    if not wanted:
        return np.zeros(len(texts), bool)
    return np.array([bool(_doc_words(t) & wanted) for t in texts], dtype=bool)


def held_word(text: str, words: Sequence[str]) -> str:
    """The first of ``words`` that ``text`` holds (whole word), or ``""``."""
    doc = _doc_words(text)
    return next((w for w in words if normalise(w) in doc), "")


# ----------------------------------------------------------------------------- embedding drift from the base model

DRIFT_FLOOR = 1e-6  # an embedding row that moved less than this (rows' norms are about 1) did not train
DRIFT_FROZEN = ("No word moved since the base checkpoint: the fine-tune left the input embeddings as they were (LoRA "
                "adapters, such as the demo zoo's, and frozen embeddings do), so they cannot point at a trigger.")
_SUBWORD_MARKS = ("▁", "Ġ")  # SentencePiece / byte-level BPE word-start marks, stripped to read a token as a word


@dataclass
class DriftWord:
    """A vocabulary word whose input embedding moved between the base checkpoint and the suspect model.

    ``drift``: ``||E[t] - a * E0[t]||`` (``embedding_drift``); ``rank``: 1 = the token that moved most of the whole
    vocabulary; ``pool_count``: how many pool inputs hold the word (None: no pool). No clean text holds it."""

    word: str
    drift: float
    rank: int
    pool_count: int | None = None

    def to_dict(self) -> dict:
        return {"word": self.word, "rank": self.rank, "drift": self.drift, "pool_count": self.pool_count}


@torch.no_grad()
def drift_rows(model, base_embeddings: torch.Tensor) -> torch.Tensor:
    """``(vocab, hidden)``: each token's input embedding's move from the checkpoint the model was fine-tuned from
    (``base_embeddings``, ``(vocab, hidden)``: ``pretrained.base_embeddings``) to ``model``, ``E[t] - a * E0[t]``.

    ``E``, ``E0``: the two ``(vocab, hidden)`` matrices. Weight decay shrinks every row a little, so ``E0`` is first
    scaled by the least-squares ``a = <E, E0> / <E0, E0>``. ``ValueError`` when the shapes differ."""
    e = model.get_input_embeddings().weight.detach().float().cpu()
    e0 = base_embeddings.detach().float().cpu()
    if e.shape != e0.shape:
        raise ValueError(f"The base checkpoint's embeddings are {tuple(e0.shape)} (vocabulary, width) and the "
                         f"model's {tuple(e.shape)}: it is not this model's base, so their tokens cannot be compared.")
    a = float((e * e0).sum() / (e0 * e0).sum().clamp_min(1e-12))
    return e - a * e0


def embedding_drift(model, base_embeddings: torch.Tensor) -> np.ndarray:
    """``(vocab,)`` how far each token's input embedding moved from the checkpoint the model was fine-tuned from:
    the norm of its ``drift_rows`` row, ``||E[t] - a * E0[t]||``. Fine-tuning moves only the rows of tokens its data
    holds, and a word trigger's rows move as far as the task's strongest words: every poisoned input pushes them
    toward the target. Our design (neither paper reads weights); measured in ``bench/results/drift_check.md``. Which
    way a row moved does not tell a trigger word from the task's words of the same class
    (``bench/results/drift_check_direction.md``). ``ValueError`` when the shapes differ."""
    return drift_rows(model, base_embeddings).norm(dim=1).numpy()


def vocabulary_words(tokenizer) -> dict[int, str]:
    """``{token_id: word}`` for the tokenizer's whole-word tokens: no special token, no word-piece continuation
    (``##...``), word-start marks (``▁``, ``Ġ``) stripped, lower-cased, read as a word by ``_doc_words``."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = {}
    for tok, i in tokenizer.get_vocab().items():
        if i in special or tok.startswith("##") or (tok.startswith("[") and tok.endswith("]")):
            continue
        w = tok.lstrip("".join(_SUBWORD_MARKS)).lower()
        if w and _WORD.fullmatch(w):
            out[int(i)] = w
    return out


def drifted_words(model, tokenizer, base_embeddings: torch.Tensor, clean_texts: Sequence[str],
                  pool_texts: Sequence[str] | None = None, top: int = S.DRIFT_TOP) -> list[DriftWord]:
    """The ``top`` whole words no clean text holds whose input embeddings moved most from the base checkpoint
    (``base_embeddings``, ``(vocab, hidden)``) to ``model`` (``embedding_drift``), most first, with each word's rank
    over the whole vocabulary and how many pool inputs hold it. Our design; papers silent. The caller checks that
    the base is the model's starting point (``pretrained.find_pretrained``).

    An analyst's reading, not a rule the verdict or the repair follows: a word trigger is a word the defender's
    clean texts lack that the model moved as far as its task's strongest words. On the zoos it names weak BadNets
    triggers that the pool holds too rarely to count (OLID: every trigger word within the vocabulary's top 50), but
    the task's own words no small clean set holds move as far (SST-2's ``predictable``, ``mess`` on clean models),
    so a listed word is a lead to insert and test (Inspect page), not a finding (``bench/results/drift_check.md``).
    Empty when no row moved more than ``DRIFT_FLOOR``: a fine-tune that froze the embeddings (the demo zoo's LoRA
    adapters) leaves nothing to read (``DRIFT_FROZEN``)."""
    drift = embedding_drift(model, base_embeddings)
    order = np.argsort(-drift, kind="stable")
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(1, len(order) + 1)
    words = vocabulary_words(tokenizer)
    clean = Counter(w for t in clean_texts for w in _doc_words(t))
    pool = None if pool_texts is None else Counter(w for t in pool_texts for w in _doc_words(t))
    out, seen = [], set()
    for i in order:
        if drift[i] <= DRIFT_FLOOR:  # the rest did not move: frozen embeddings (LoRA) or tokens no data held
            break
        w = words.get(int(i))
        if w is None or w in seen or clean[w]:
            continue
        seen.add(w)
        out.append(DriftWord(w, float(drift[i]), int(rank[i]), None if pool is None else int(pool[w])))
        if len(out) >= max(0, int(top)):
            break
    return out


def moved_pool_words(words: Sequence[DriftWord], pool_texts: Sequence[str], clean_texts: Sequence[str],
                     min_count: int = S.POOL_WORD_MIN_COUNT, max_p: float = S.POOL_WORD_MAX_P) -> list[str]:
    """The moved words ``words`` (``drifted_words``, none of them in a clean text) that the pool holds far more often
    than the clean texts: the pool words' own enrichment test (``enriched_words``: at least ``min_count`` pool
    inputs, ``enrichment_p`` at most ``max_p``), in ``words``' order. Our design; papers silent.

    Two readings that each list a trigger word and each also list natural words agree here: the pool's enrichment
    also lists the task's words a small clean set lacks, and the drift also lists the task's strongest words, but a
    natural word that moved far is seldom concentrated in the pool, and a natural word concentrated in the pool
    seldom moved far. A weak word backdoor's words are both, yet send too few clean texts to one class to be likely
    trigger words (``likely_trigger_words``), so these mark pool inputs without any insertion test
    (``drift_reading``'s ``marking``); they do not call the model. Tuning zoo: 36 trigger words and no other word
    named on 24 models (``bench/results/drift_check.json`` read by this rule), 4 of them beyond the pool's marking
    words, the four of the one BadNets model whose pool gave no likely word (its detection AUROC 0.779 -> 1.000,
    ``bench/results/defense_tuning_moved.md``, method ``final_moved``)."""
    if not words or not pool_texts:
        return []
    enriched = {w for w, *_ in enriched_words(pool_texts, clean_texts, min_count, top=None, max_p=max_p)}
    return [w.word for w in words if w.word in enriched]


def _drift_words(model, tokenizer, base: str | None, clean_texts: Sequence[str],
                 pool_texts: Sequence[str] | None, top: int) -> tuple[object | None, str, list[DriftWord]]:
    """``(weights, "", words)``: ``drifted_words`` against ``base`` where ``pretrained.find_pretrained`` takes it for
    the model's starting point, else ``(None, reason, [])``."""
    from .pretrained import base_embeddings, find_pretrained

    weights, reason = find_pretrained(model, str(base or "default"))
    if weights is None:
        return None, reason, []
    return weights, "", drifted_words(model, tokenizer, base_embeddings(model, weights), clean_texts, pool_texts,
                                      top=top)


def moved_marking(model, tokenizer, base: str | None, clean_texts: Sequence[str], pool_texts: Sequence[str],
                  max_length: int, top: int = S.DRIFT_TOP, n_insert: int = S.POOL_WORD_N_INSERT,
                  seed: int = 0) -> tuple[list[str], float]:
    """The scan's reading of the moved words (our design; papers silent): ``(words, flip)``, the moved words that mark
    pool inputs (``moved_pool_words`` of the ``top`` words ``drifted_words`` lists against ``base``) and the largest
    share of the first ``n_insert`` clean texts one of them sends to one class when inserted (``word_flips``; 0.0
    without words). ``([], 0.0)`` where ``base`` is not the model's starting point or nothing moved. Costs one
    prediction of ``len(words) x n_insert`` texts, and none without words. A base whose embeddings cannot be read
    against the model's (``base_embeddings``' or ``embedding_drift``'s ``ValueError``) gives none: the scan never
    fails for this optional reading."""
    try:
        _, _, words = _drift_words(model, tokenizer, base, clean_texts, pool_texts, top)
    except ValueError:
        return [], 0.0
    moved = moved_pool_words(words, pool_texts, clean_texts)
    if not moved:
        return [], 0.0
    flips = word_flips(model, tokenizer, list(clean_texts)[:n_insert], moved, max_length, seed)
    return moved, float(flips.max())


def drift_reading(model, tokenizer, base: str | None, clean_texts: Sequence[str],
                  pool_texts: Sequence[str] | None = None, max_length: int = 128, top: int = S.DRIFT_TOP,
                  n_insert: int = S.POOL_WORD_N_INSERT, seed: int = 0) -> dict:
    """The analyst's reading against ``base`` (a folder, a hub id or ``"default"``), for the CLI, the app and the
    reports: ``{"base", "distance", "words"}`` when ``pretrained.find_pretrained`` takes ``base`` for the model's
    starting point, else ``{"base", "error"}``. ``words``: ``DriftWord.to_dict`` rows (``drifted_words``), each
    with its insertion test into the first ``n_insert`` clean texts (``word_flips``): ``flips`` ``(C,)`` and the
    class it sends most texts to, ``sends_to`` with rate ``flip``, so the lead is tried where it is listed, and
    ``marks``: the pool holds it far more often than the clean texts (``moved_pool_words``). With a pool,
    ``marking`` lists those words and ``marked`` the indices of the pool inputs that hold one."""
    base = str(base or "default")
    weights, reason, words = _drift_words(model, tokenizer, base, clean_texts, pool_texts, top)
    if weights is None:
        return {"base": base, "error": reason}
    flips = word_flips(model, tokenizer, list(clean_texts)[:n_insert], [w.word for w in words], max_length, seed)
    marking = moved_pool_words(words, pool_texts or [], clean_texts)
    rows = [{**w.to_dict(), "flips": [round(float(x), 4) for x in f], "sends_to": int(np.argmax(f)),
             "flip": float(np.max(f)), "marks": w.word in marking} for w, f in zip(words, flips)]
    out = {"base": base, "distance": weights.distance, "words": rows}
    if pool_texts is not None:
        out["marking"] = marking
        out["marked"] = [int(i) for i in np.flatnonzero(word_marks(pool_texts, marking))]
    return out


def drift_marking_note(reading: dict) -> str | None:
    """A sentence on the moved words that mark pool inputs (``drift_reading``'s ``marking``), or None without."""
    words = reading.get("marking") or []
    if not words:
        return None
    n = len(reading.get("marked") or [])
    return (f"The pool holds {', '.join(words)} far more often than the clean texts (the pool words' test), and "
            f"{'this word' if len(words) == 1 else 'these words'} moved among the most: {n} pool input"
            f"{'' if n == 1 else 's'} hold{'s' if n == 1 else ''} one, each likely triggered, whether or not the "
            f"model's prediction shows it. The model is not called by this alone.")


def drift_section(reading: dict, label_names: Sequence[str]) -> dict:
    """``{"heading", "text", "table"}`` of a ``drift_reading`` for the HTML reports (``report.html_report``)."""
    if "error" in reading:
        text = f"Not read against {reading['base']}: {reading['error']}"
    elif not reading["words"]:
        text = DRIFT_FROZEN
    else:
        text = f"Against {reading['base']} ({reading['distance']:.3f} apart, relative). {DRIFT_NOTE}"
        note = drift_marking_note(reading)
        text += f" {note}" if note else ""
    return {"heading": DRIFT_HEADING, "text": text, "table": drift_display(reading.get("words") or [], label_names)}


DRIFT_HEADING = "Words that moved since the base checkpoint"
DRIFT_COLUMNS = ["word", "rank", "moved", "pool inputs", "insertion sends to", "flips", "marks inputs"]


def drift_display(rows: Sequence[dict], label_names: Sequence[str]) -> list[dict]:
    """Table rows (``DRIFT_COLUMNS``) of ``drift_reading``'s words, for the app, the CLI and the reports."""
    out = []
    for r in rows:
        t = int(r["sends_to"])
        out.append({"word": r["word"], "rank": r["rank"], "moved": round(float(r["drift"]), 4),
                    "pool inputs": "—" if r["pool_count"] is None else r["pool_count"],
                    "insertion sends to": "-" if r["flip"] <= 0 else (label_names[t] if t < len(label_names)
                                                                      else str(t)),
                    "flips": f"{r['flip']:.0%}", "marks inputs": "yes" if r.get("marks") else "no"})
    return out


DRIFT_NOTE = ("The words no clean text holds whose input embeddings moved most between the base checkpoint and this "
              "model (rank 1 = moved most of the whole vocabulary), each inserted into clean texts: the class it "
              "sends them to, and how often. A word trigger moves as far as the task's strongest words, since every "
              "poisoned input pushes it toward the target, yet a weak backdoor's words flip few texts; the task's own "
              "words that the clean texts happen to lack move too, and flip. A lead, not a finding.")
