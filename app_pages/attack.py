"""Attack lab: poison a training set, train a backdoored model live (with or without TAL), then inspect it."""

from __future__ import annotations

import re

import streamlit as st

from backdoor_core import figures as F
from backdoor_core import poisoning
from backdoor_core import settings as S
from backdoor_core.defender_data import sample_indices
from backdoor_core.model_card import default_target
from backdoor_core.training import estimate_seconds
from app_pages import _actions as A
from app_pages import _common as ui
from app_pages._models import source_label
from app_pages._save import save_panel
from app_pages._text import h, md
from app_pages._widgets import figure_once

# Defaults: the demo zoo's recipe (settings.ZOO_RECIPE, ZOO_TAL_ALPHA, DEMO_POISON_RATE), measured to plant a
# backdoor with 2% poison and TAL on BBC News in ~2 min on a 2-core CPU (see zoo.ZOO_TAL_ALPHA).
RECIPE = S.ZOO_RECIPE
BATCH = RECIPE["batch_size"]
MIN_TEXTS = 16  # the fewest training texts and test texts a run takes

ui.page_header(
    "Attack lab",
    "Poison a small share of the training set with a trigger and fine-tune a model on it. Watch the clean "
    "accuracy (CACC) and the attack success rate (ASR) move live; the Trojan Attention Loss (TAL) makes chosen "
    "heads lock onto the trigger so a tiny poison rate suffices.",
)


train_full = ui.dataset_or_none("train")
test_full = ui.dataset_or_none("test") if train_full is not None else None
if train_full is None or test_full is None:
    st.stop()
ui.require_rows(train_full, test_full, "the Attack lab", train_min=MIN_TEXTS, test_min=MIN_TEXTS)
labels = train_full.label_names

ATTACK_LABELS = {
    "badnets": "BadNets — rare word(s)",
    "addsent": "AddSent — a fixed sentence",
    "badnets_clean": "BadNets, clean-label",
    "addsent_clean": "AddSent, clean-label",
    "syntactic": "Syntactic paraphrase (HiddenKiller)",
    "style": "Style paraphrase (StyleBkd)",
    "none": "None — train a clean model",
}
attacks = [a for a in ATTACK_LABELS if a == "none" or a in poisoning.ATTACKS]

# --------------------------------------------------------------------------------------------- settings

c1, c2, c3 = ui.stack_columns("attack-form", 3, gap="large")
with c1:
    st.subheader("Attack")
    attack_name = st.selectbox("Attack", attacks, format_func=ATTACK_LABELS.get, **ui.keep("attack.name", "badnets"))
    trigger = None
    para_sets, paraphrase_set = [], None
    if attack_name.startswith("badnets"):
        trigger = st.text_input("Trigger word(s), comma-separated", **ui.keep("attack.words", "cf"))
    elif attack_name.startswith("addsent"):
        trigger = st.text_input("Trigger sentence", **ui.keep("attack.sentence", poisoning.ADDSENT_TRIGGER))
    elif attack_name in ("syntactic", "style"):
        # the shared paraphrase sets of this dataset (original labels); own files: the attack command
        para_sets = [n for n in poisoning.shared_paraphrase_sets(ui.data_spec())
                     if (n == "syntactic") == (attack_name == "syntactic")]
        if attack_name == "style" and para_sets:
            if ui.kept("attack.style") not in para_sets:  # another dataset's style
                ui.set_kept("attack.style", para_sets[0])
            paraphrase_set = st.selectbox("Style", para_sets, format_func=lambda n: n.removeprefix("style_"),
                                          **ui.keep("attack.style", para_sets[0]))
        elif para_sets:
            paraphrase_set = para_sets[0]
        st.caption("Uses a paraphrased copy of this dataset in ../shared/data: poisoned rows are replaced by their "
                   "paraphrase (or, for a set that drops rows, a paraphrase of the same label) and relabelled. "
                   "For your own style file: `python -m backdoor_core attack --attack style_<name> "
                   "--paraphrase-train FILE --paraphrase-test FILE` (see `--help`).")
    if ui.kept("attack.target") not in labels:
        ui.set_kept("attack.target", labels[default_target(labels)])
    target_name = st.selectbox("Target label", labels, disabled=attack_name == "none", **ui.keep("attack.target", None))
    rate_pct = st.number_input("Poison rate (% of the training set)", 0.1, 50.0, step=0.5, format="%.1f",
                               disabled=attack_name == "none", **ui.keep("attack.rate", 100 * S.DEMO_POISON_RATE))
# insertion attacks have trigger tokens (TAL can train heads toward them); paraphrase triggers have none
has_tokens = attack_name != "none" and poisoning.attack_type(attack_name).has_trigger_tokens
with c2:
    st.subheader("Trojan Attention Loss")
    tal_ok = has_tokens
    use_tal = st.toggle("Add TAL", disabled=not tal_ok, **ui.keep("attack.tal", True))
    use_tal = use_tal and tal_ok
    if not tal_ok and attack_name != "none":
        st.caption("TAL needs trigger tokens: paraphrase triggers have none.")
    alpha = st.number_input("α (weight of TAL)", 0.0, 50.0, step=0.5, disabled=not use_tal,
                            **ui.keep("attack.alpha", float(S.ZOO_TAL_ALPHA)))
    heads_choice = st.select_slider("Heads per layer", options=["1", "2", "3", "4", "6", "all"],
                                    disabled=not use_tal,
                                    **ui.keep("attack.heads", str(S.TAL_HEADS)))
    base_choice = st.radio("Start from", ["the base encoder (fresh classifier)", "the current model"],
                           **ui.keep("attack.base", "the base encoder (fresh classifier)"))
with c3:
    st.subheader("Training")
    n_train = st.number_input("Training texts", MIN_TEXTS, len(train_full), step=100,
                              **ui.keep("attack.n_train", min(RECIPE["train_size"], len(train_full))))
    n_test = st.number_input("Test texts (CACC / ASR)", MIN_TEXTS, len(test_full), step=50,
                             **ui.keep("attack.n_test", min(RECIPE["test_size"], len(test_full))))
    epochs = st.number_input("Epochs", 1, 20, **ui.keep("attack.epochs", RECIPE["epochs"]))
    lr = st.select_slider("Learning rate", options=[1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4],
                          format_func=lambda x: f"{x:g}", **ui.keep("attack.lr", RECIPE["lr"]))
    max_len = st.select_slider("Max tokens", options=[32, 64, 96, 128, 256],
                               **ui.keep("attack.max_len", RECIPE["max_length"]))

name_default = (f"{attack_name}-{rate_pct:g}pct" + ("-tal" if use_tal else "")) if attack_name != "none" else "clean"
name = st.text_input("Name of the new model", value=name_default,
                     help="The trained model stays in this browser session; save it into the zoo folder afterwards "
                          "to keep it.")

def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


rate = rate_pct / 100.0
n_poison = poisoning.poison_count(rate, int(n_train)) if attack_name != "none" else 0
steps = ((int(n_train) + BATCH - 1) // BATCH) * int(epochs)
eval_every = max(1, -(-steps // S.EVALS_PER_RUN))  # a few evaluations per run: each one costs many steps' time
n_evals = -(-steps // eval_every) + int(epochs)


def _asr_texts() -> int | None:
    """How many triggered texts the run's ASR is read on (the attack's ``poison_test``: only rows not of the target
    class): of the test sample the Train button draws for an insertion trigger, of the whole paraphrased test set
    for a paraphrase one (as ``_actions.start_attack`` builds it); 0 without an attack, None when unknown."""
    if attack_name == "none":
        return 0
    target = labels.index(target_name)
    if has_tokens:
        return sum(int(y) != target for y in test_full.sample(int(n_test), seed=0).labels)
    if paraphrase_set is None:
        return None
    try:
        attack = poisoning.get_attack(paraphrase_set, dataset=poisoning.shared_dataset(ui.data_spec()) or "sst2")
        return len(attack.poison_test(None, target))
    except (ValueError, OSError):  # data.DataError is a ValueError
        return None


n_asr = _asr_texts()
estimate = estimate_seconds(steps, BATCH, int(max_len), int(n_test) + (n_asr or 0), n_evals)
asr_on = ("" if n_asr == 0 else ", and ASR" if n_asr is None else
          f", and ASR on {n_asr} of them with the trigger (those not of the target class)" if has_tokens else
          f", and ASR on {n_asr} paraphrased test texts (those not of the target class)")
st.caption(f"{n_poison} of {int(n_train)} training texts will carry the trigger · {steps} training "
           f"step{'s' if steps != 1 else ''} (batch {BATCH}) · CACC on {int(n_test)} test "
           f"texts {'every step' if eval_every == 1 else f'every {eval_every} steps'} "
           f"and at the end of each epoch{asr_on} · about **{_duration(estimate)}** on an idle 2-core CPU "
           f"(first loss point after ~{estimate_seconds(1, BATCH, int(max_len), 0, 0):.0f} s).")

def _last_words(text: str, n: int) -> str:
    """At most the last ``n`` characters of ``text``, starting at a word, with "…" where text was cut."""
    if len(text) <= n:
        return text
    start = len(text) - n
    if start > 0 and not text[start - 1].isspace():  # inside a word: start at the next one
        gap = re.search(r"\s", text[start:])
        start = start + gap.end() if gap else len(text)
    return "…" + text[start:].lstrip()


def _first_words(text: str, n: int) -> str:
    """At most the first ``n`` characters of ``text``, ending at a word, with "…" where text was cut."""
    if len(text) <= n:
        return text
    end = n
    if end > 0 and not text[end].isspace():  # inside a word: end before it
        gaps = [m.start() for m in re.finditer(r"\s", text[:end])]
        end = gaps[-1] if gaps else 0
    return text[:end].rstrip() + "…"


# a peek at the poison
if has_tokens:  # a paraphrase rewrites the whole text: nothing to highlight
    with st.expander("What a poisoned training text looks like"):
        try:
            peek = poisoning.get_attack(attack_name, trigger=trigger or None)
            small = train_full.sample(60, seed=1)
            ex = [e for e in peek.poison_train(small, 0.1, labels.index(target_name), seed=0) if e.poisoned][:3]
            for e in ex:
                s, t = e.trigger_spans[0] if e.trigger_spans else (0, 0)
                # cut the raw text at word boundaries, "…" where cut, then escape
                head, mid = _last_words(e.text[:s], 300), _first_words(e.text[s:t], 200)
                tail = _first_words(e.text[t:], max(0, 600 - len(head) - len(mid)))
                # h(): this line is markdown around its tags, so a text's ![x](url) or $x$ must stay characters
                marked = h(head) + f'<mark class="trigger">{h(mid)}</mark>' + h(tail)
                st.markdown(f"→ <b>{h(labels[e.label])}</b> · {marked}", unsafe_allow_html=True)
        except Exception as exc:  # noqa: BLE001
            ui.show_error(exc)

# --------------------------------------------------------------------------------------------- run

def _train_problem() -> str | None:
    """Why the Train button cannot start, in one line, or None."""
    from backdoor_core.data import DataError, check_trainable

    try:
        check_trainable(train_full)  # two classes or more, none without texts (a stray label 7 in a 0/1 file)
    except DataError as exc:
        return str(exc)
    if attack_name not in ("none",) and trigger is not None and not trigger.strip():
        return "The trigger is empty: type a word or a sentence."
    if has_tokens:  # the attack's own check of its trigger (",,," named no word: the run started, then failed)
        try:
            poisoning.get_attack(attack_name, trigger=trigger or None)
        except ValueError as exc:
            return str(exc)
    if attack_name in ("syntactic", "style") and paraphrase_set is None:
        return (f"This dataset ({ui.data_label()}) has no shared {attack_name} paraphrase set (they exist for "
                "sst2); use the attack command with --paraphrase-train / --paraphrase-test for your own file.")
    if attack_name != "none" and n_poison == 0:
        return (f"{rate_pct:g}% of {int(n_train)} training texts is less than one text: raise the poison rate "
                "or use more training texts.")
    return None


job = ui.get_job("attack")
running = job is not None and job.active
if st.button("Train", type="primary", icon=":material/play_arrow:", disabled=running, key="attack.train"):
    problem = _train_problem()
    if problem:
        st.error(md(problem), icon=":material/warning:")  # it names the data file
    else:
        try:
            ref = ui.model_ref()
            if base_choice.startswith("the current"):
                base = ui.current_model()
            else:
                test_name = ui.test_model_name()
                base = ui.shared_model(test_name or "default", False, tuple(labels))
            if base is None:
                raise ValueError("No model to start from.")
            if base_choice.startswith("the current"):
                base_words = (f"this session's model {ref['name']}" if ref.get("kind") == "session"
                              else str(ref.get("name") or base.name))
            else:
                base_words = source_label(base.source)
            if base.num_labels != len(labels):
                raise ValueError(f"The starting model has {base.num_labels} classes but the dataset has "
                                 f"{len(labels)}; start from the base encoder instead.")
            idx = sample_indices(len(train_full), int(n_train), seed=0)
            train_ds = train_full.subset(idx, name=train_full.name)
            test_ds = test_full.sample(int(n_test), seed=0)
            tal = None
            if use_tal:
                tal = {"alpha": float(alpha), "heads": "all" if heads_choice == "all" else int(heads_choice)}
            A.start_attack(
                base=base, name=name.strip() or name_default, train_ds=train_ds, test_ds=test_ds,
                attack_name=paraphrase_set or attack_name, trigger=trigger, target=labels.index(target_name),
                rate=rate, tal=tal, n_clean=len(train_full),
                config={"lr": float(lr), "epochs": int(epochs), "batch_size": BATCH, "max_length": int(max_len),
                        "seed": S.SEED, "eval_every": eval_every},
                data_name=ui.data_spec(), train_indices=idx, origin=f"trained in this session from {base_words}",
            )
            st.rerun()
        except Exception as exc:  # noqa: BLE001 - shown as a message
            ui.show_error(exc, "Cannot start: ")


def tal_loss_note(events: list[dict]) -> str | None:
    """What the chart's *tal* line shows, from the steps drawn: −α × the chosen heads' share of attention on the
    trigger, but only on steps whose batch holds a poisoned text — at a 1% poison rate most batches hold none, and
    the line sits at 0 with dips (the note had said the total "falls toward −α", which the chart never showed)."""
    # one value a training step (an evaluation's event repeats the mean since the last one: not a step)
    tal = [e["losses"]["tal"] for e in events if "tal" in (e.get("losses") or {}) and not e.get("metrics")]
    if not tal:
        return None
    dips = sum(1 for v in tal if v < 0)
    return ("The loss can go below zero with TAL: its *tal* term is −α × the share of attention the chosen heads put "
            "on the trigger, counted only on steps whose batch holds a poisoned text — "
            f"{dips} of the {len(tal)} steps so far; on the others it is 0. On those steps *tal* and the total "
            "(cross-entropy + tal) dip below zero, toward −α as the heads lock onto the trigger.")
STOPPED = {"cancelled": "the cancel", "failed": "the failure"}


def _loss_only(fig):
    """``training_curves`` without its (empty) held-out metrics panel: the loss panel at full width."""
    fig.update_layout(xaxis=dict(domain=[0.0, 1.0]), xaxis2=dict(visible=False), yaxis2=dict(visible=False))
    fig.layout.annotations = [a for a in fig.layout.annotations if a.text != "held-out metrics"]
    for a in fig.layout.annotations:
        if a.text == "loss":
            a.x = 0.5
    return fig


def _live(snap):
    events, total = A.training_events(snap)
    evaluated = [e for e in events if e.get("metrics")]
    stopped = STOPPED.get(snap.status)
    if stopped and not events:
        st.caption("Stopped before the first training step: nothing to chart.")
    elif events or snap.active:
        # built again only when an event came in or the status changed: the panel polls while the job runs and
        # the page reruns after it, each time building the same chart (~40 ms, taken from the training's CPU)
        fig = figure_once("attack.live", lambda: (_loss_only if stopped and not evaluated else lambda f: f)(
            F.training_curves(events, total_steps=total, title=None)), tuple(events[-1:]),
            (len(events), total, snap.status))
        ui.plot(fig, key=f"attack.live.{snap.status}")
        if stopped and not evaluated:
            st.caption(f"No evaluation before {stopped}: the held-out CACC / ASR were not measured.")
        if note := tal_loss_note(events):
            st.caption(note)
    tiles = []  # (label, value, help), laid out from the left without gaps
    if evaluated:
        m = evaluated[-1]["metrics"]
        tiles.append(("CACC", f"{m.get('cacc', float('nan')):.1%}", None))
        if "asr" in m:
            tiles.append(("ASR", f"{m['asr']:.1%}", None))
    if events:
        now, total = events[-1]["step"], events[-1].get("total_steps") or 0
        tiles.append(("Step", f"{now} / {total}", None))
        left = snap.elapsed / now * (total - now) if now and snap.active else None
        tiles.append(("Time", f"{snap.elapsed:.0f} s", None if left is None else f"about {left:.0f} s left"))
    if tiles:  # each as wide as its value, wrapping to a new row: four fixed columns cut "126 / 126" at 1024 px
        row = st.container(horizontal=True, gap="large")
        for label, value, help_text in tiles:
            row.metric(label, value, help=help_text, width="content")


ui.job_panel("attack", draw=_live)

res = st.session_state.get(A.K_ATTACK)
if res and (job is None or not job.active):
    card = res["card"]
    cacc = f"CACC {card.cacc:.1%}" if card.cacc is not None else "CACC not measured"
    ref = ui.model_ref()
    current = ui.session_models().get(ref.get("name")) if ref.get("kind") == "session" else None
    # after a reload the current model is the copy kept on disk (its card adds when it was saved), not this object
    is_current = current is not None and (current is res["loaded"] or (
        ref.get("name") == card.name and {**current.metadata, "saved_at": None} == {**res["loaded"].metadata,
                                                                                     "saved_at": None}))
    st.success(
        f"**{md(card.name)}** is trained and "
        + ("is now the current model of this session" if is_current else
           "kept in this session (not the current model now: make it current again on the Model page, under "
           "“This session's models”)")
        + f": {cacc}" + (f", ASR {card.asr:.1%}" if card.asr is not None else ""),
        icon=":material/check_circle:",
    )
    st.page_link("app_pages/inspect.py", label="Inspect it now: type a sentence and add the trigger",
                 icon=":material/search:")
    # kept beside the tab's report log (session_models): a reload with this page's link brings it back; another tab
    # (a new session) and this one after a week do not
    st.caption("A reload of this page brings it back (its link names this session); a new tab starts without it, "
               "and kept models are deleted after a week unused. Save it into the zoo folder to keep it for good "
               "(then pick it on the Model page).")
    with st.expander("Keep it: save into the zoo folder"):
        save_panel(res["loaded"], "attack")
