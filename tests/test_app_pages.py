"""AppTest for every page with the tiny model injected (BACKDOOR_LAB_TEST_MODEL=tiny): pages load, widgets drive
the core, errors are messages (never tracebacks), state survives page switches, long jobs run in the background
and can be cancelled. AppTest cannot render plotly or iframes; tests/test_e2e_browser.py checks those.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app_pages._text import md

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = ["home", "tour", "model", "inspect", "compare", "attack", "detect", "sanitize", "report"]


@pytest.fixture(autouse=True)
def _test_env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo"))


def new_app(session: str | None = None) -> AppTest:
    """A new browser session; with ``session``, the URL ``?session=<id>`` (a reload of that tab)."""
    at = AppTest.from_file(APP, default_timeout=120)
    if session:
        at.query_params["session"] = session
    at.run()
    assert not at.exception, at.exception
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, f"{page}: {at.exception}"
    return at


def open_tab(at: AppTest, label: str) -> AppTest:
    """Open the Inspect page's tab ``label`` (its last three tabs draw only while open), as a click on it does."""
    at.session_state["inspect.tab"] = label
    at.run()
    assert not at.exception, at.exception
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def put_cancelled_job(at: AppTest, kind: str) -> None:
    """Make this session's ``kind`` job a later run that was cancelled and kept nothing, then rerun the page."""
    from backdoor_core.jobs import JobCancelled, start_job

    stopped = start_job(lambda ctx: (_ for _ in ()).throw(JobCancelled()))
    assert stopped.wait(5) and stopped.status == "cancelled"
    registry = at.session_state["lab.jobs"]
    registry[kind] = stopped
    at.session_state["lab.jobs"] = registry
    at.run()


def quick_scan(at: AppTest):
    """On the Detect page: a scan of 16 clean texts and a simulated pool of 12 clean and 6 triggered, run to its end;
    returns its job."""
    goto(at, "detect")
    at.number_input(key="detect.n_clean").set_value(16)
    at.number_input(key="detect.pool_clean").set_value(12)
    at.number_input(key="detect.pool_trig").set_value(6)
    at.run()
    at.button(key="detect.run").click().run()
    job = wait_job(at, "scan")
    assert job.status == "done", job.snapshot().traceback
    return job


def test_detect_draws_the_simulated_pool_when_the_scan_starts(monkeypatch):
    """Detect drew its simulated pool (the trigger put into every non-target test row: 2-4 s) on every rerun, each
    change of a knob; it draws it once, when the scan starts."""
    from backdoor_core import defender_data as D

    real, drawn = D.build_pool, []
    monkeypatch.setattr(D, "build_pool", lambda *a, **k: drawn.append(a[2:4]) or real(*a, **k))
    at = goto(new_app(), "detect")
    at.number_input(key="detect.n_clean").set_value(16).run()
    at.number_input(key="detect.pool_clean").set_value(12).run()
    at.slider(key="detect.frr").set_value(0.1).run()
    assert not at.exception and drawn == []
    at.button(key="detect.run").click().run()
    job = wait_job(at, "scan")
    assert job.status == "done", job.snapshot().traceback
    assert drawn == [(12, 0)]  # the tiny model's card names no attack: clean texts only
    assert len(at.session_state["detect.report"].pool_texts) == 12

    def no_rows(*a, **k):
        raise ValueError("The paraphrase test set has no non-target rows.")

    monkeypatch.setattr(D, "build_pool", no_rows)  # a pool that cannot be drawn: said on the click, no scan starts
    at.button(key="detect.run").click().run()
    assert not at.exception
    assert any(e.startswith("Cannot start: Simulated pool: The paraphrase test set") for e in errors(at)), errors(at)
    assert at.session_state["lab.jobs"]["scan"] is job


def wait_job(at: AppTest, kind: str, timeout: float = 120):
    job = at.session_state["lab.jobs"][kind]
    assert job.wait(timeout), f"{kind} job still running"
    at.run()  # the next run handles the finished job
    assert not at.exception
    return job


# ------------------------------------------------------------------------------------------------ pages


def test_every_page_loads_and_the_sidebar_shows_the_model():
    at = new_app()
    sidebar = " ".join(m.value for m in at.sidebar.markdown) + " ".join(c.value for c in at.sidebar.caption)
    assert "tiny" in sidebar and "2 layers × 4 heads" in sidebar and "bbc" in sidebar
    # (AppTest drops the entry script's sidebar after switch_page, even in a two-line app; the browser test
    # checks the sidebar on every page, also after in-app navigation)
    for page in PAGES:
        goto(at, page)
        assert at.title, f"{page} has no title"
        assert not errors(at), f"{page}: {errors(at)}"
        if page == "sanitize":  # the weak-evidence knobs: off by default, the verdict line bounded to [0, 1]
            from backdoor_core import settings as S

            verdict = at.number_input(key="sanitize.alignment.weak_verdict")
            assert verdict.value == S.WEAK_VERDICT and verdict.max == 1.0
            assert at.number_input(key="sanitize.alignment.weak_top_k").value == S.WEAK_TOP_K == 0
            fewest = at.number_input(key="sanitize.alignment.min_heads")  # a count, 0 = the scan's set alone
            assert fewest.value == S.REPAIR_MIN_HEADS and fewest.label == "Fewest heads repaired" and fewest.min == 0
            heads = at.number_input(key="sanitize.alignment.word_heads")  # measured, off: a count of heads
            assert heads.label == "Heads on the trigger words" and heads.value == S.REPAIR_WORD_HEADS == 0
            assert heads.min == 0
            seeds = at.number_input(key="sanitize.alignment.repair_seeds")  # repairs averaged: at least one
            assert seeds.value == S.REPAIR_SEEDS and seeds.min == 1
            words = at.checkbox(key="sanitize.alignment.pool_words")  # a plain label, the default of settings
            assert words.label == "Use the pool's trigger words" and words.value is S.REPAIR_POOL_WORDS
            share = at.number_input(key="sanitize.alignment.trigger_share")
            assert share.value == S.TRIGGER_AUGMENT_SHARE and share.max == 1.0
            rare = at.number_input(key="sanitize.alignment.rare_words")  # measured, off: a count of words
            assert rare.label == "Rare words read with their labels" and rare.value == S.REPAIR_RARE_WORDS == 0
            assert rare.min == 0
            rare_share = at.number_input(key="sanitize.alignment.rare_words_share")  # a share of the clean texts
            assert rare_share.value == S.REPAIR_RARE_WORDS_SHARE and rare_share.max == 1.0
            guard_share = at.number_input(key="sanitize.alignment.exclude_min_excess")  # a share, named in words
            assert guard_share.label == "Exclusion guard (share)" and guard_share.value == S.EXCLUDE_MIN_EXCESS
            assert guard_share.max == 1.0
            mix = at.number_input(key="sanitize.alignment.ffn_mix")  # measured, off: a share of the way back
            assert mix.label == "Feed-forward mix toward pretrained" and mix.value == S.REPAIR_FFN_MIX == 0.0
            assert mix.max == 1.0
            reset = at.number_input(key="sanitize.alignment.reset_top_k")  # heads reset first: a count, 0 = all
            assert reset.label == "Heads reset (0 = all)" and reset.value == S.RESET_TOP_K and reset.min == 0
            start = at.segmented_control(key="sanitize.alignment.reset_to")  # what the reset heads restart from
            assert start.label == "Reset heads to" and start.value == S.RESET_TO and list(start.options) == list(
                S.RESET_TOS)
            judge = at.segmented_control(key="sanitize.alignment.label_judge")  # the pseudo-label check
            assert judge.label == "Check pseudo-labels with a judge" and judge.value == S.LABEL_JUDGE
            assert list(judge.options) == list(S.LABEL_JUDGES)
            led = at.checkbox(key="sanitize.alignment.judge_flags")  # judge-led labels: measured, off by default
            assert led.label == "Judge-led labels (style triggers)" and led.value is S.JUDGE_FLAGS is False
            guard = at.checkbox(key="sanitize.alignment.clean_guard")  # the clean-accuracy guard: measured, off
            assert guard.label == "Clean-accuracy guard" and guard.value is S.CLEAN_GUARD is False
            arith = at.segmented_control(key="sanitize.alignment.precision")  # the repair's training arithmetic
            assert arith.label == "Training arithmetic" and arith.value == S.REPAIR_PRECISION
            assert list(arith.options) == list(S.PRECISIONS)
            # the knobs are folded away under the defaults; a change is counted in the title and undone by a button
            assert [e.label for e in at.expander if e.label.startswith("Knobs")] == ["Knobs — the defense's defaults"]
            assert at.button(key="sanitize.alignment.reset_knobs").disabled
            verdict.set_value(0.5).run()
            led = at.checkbox(key="sanitize.alignment.judge_flags")
            led.check().run()
            assert [e.label for e in at.expander if e.label.startswith("Knobs")] == ["Knobs — 2 changed from the defaults"]
            at.button(key="sanitize.alignment.reset_knobs").click().run()
            assert at.number_input(key="sanitize.alignment.weak_verdict").value == S.WEAK_VERDICT
            assert at.checkbox(key="sanitize.alignment.judge_flags").value is False
            assert [e.label for e in at.expander if e.label.startswith("Knobs")] == ["Knobs — the defense's defaults"]


def test_tour_walks_through_all_steps():
    at = goto(new_app(), "tour")
    seen = []
    for step in range(6):
        seen.append(at.header[0].value)
        assert not at.exception and not errors(at)
        if step == 1:  # the shipped zoo's plain BadNets 10% did not take: the step says why, with its numbers
            from backdoor_core.zoo import list_models

            plain = next(e for e in list_models(shipped=True) if e["name"] == "badnets")
            assert any(f"Why plain BadNets reaches only {plain['asr']:.0%} ASR here, even with 10%" in c.value for c in at.caption)
        nxt = at.button(key="tour.next")  # a KeyError if the page has no Next button
        assert not nxt.disabled, f"step {step}: Next is disabled"
        nxt.click().run()
    seen.append(at.header[0].value)
    assert not at.exception and not errors(at)
    assert at.button(key="tour.next").disabled  # the last step
    assert len(set(seen)) == 7 and seen[2].startswith("Type a sentence")


# ------------------------------------------------------------------------------------------------ inspect


def _flip(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "lab-flip" in m.value)


def test_inspect_drives_the_core_and_keeps_state_across_pages():
    at = goto(new_app(), "inspect")
    assert at.session_state["inspect.cache"][1].trigger == "cf"
    at.text_area(key="inspect.text").input("Shares of the bank rose sharply after the results.")
    at.text_input(key="inspect.word").input("mn")
    at.run()
    res = at.session_state["inspect.cache"][1]
    assert res.trigger == "mn" and "mn" in res.triggered.text and res.clean.text.startswith("Shares")
    # the flip line: clean prediction, then the arrow kept on one line with the triggered prediction
    line = _flip(at)
    assert re.search(r'<span style="white-space: nowrap">→&nbsp;<span class="trig">[^<]+</span>&nbsp;\d+%</span>',
                     line), line
    assert any('<mark class="trigger">mn</mark>' in m.value for m in at.markdown)
    assert at.dataframe, "top-heads table"
    # sentence trigger at a chosen position
    at.segmented_control(key="inspect.kind").set_value("Sentence").run()
    at.radio(key="inspect.where").set_value("choose word").run()
    at.slider(key="inspect.position").set_value(0).run()
    res = at.session_state["inspect.cache"][1]
    assert res.triggered.text.startswith("I watch this 3D movie Shares")
    # the head selector drives the attention matrix; the finding is recorded for the report
    at.selectbox(key="inspect.head").set_value("L1H2").run()
    assert not at.exception
    assert any(f.key.startswith("inspect:latest@") and f.model for f in at.session_state["lab.session"].findings)
    # state survives a page switch
    goto(at, "model")
    goto(at, "inspect")
    assert at.text_area(key="inspect.text").value.startswith("Shares of the bank")
    assert at.segmented_control(key="inspect.kind").value == "Sentence"


def test_inspect_errors_are_messages():
    at = goto(new_app(), "inspect")
    at.text_area(key="inspect.text").input("   ").run()
    assert not at.exception and any("empty" in e for e in errors(at))
    at.text_area(key="inspect.text").input("A fine text.")
    at.text_input(key="inspect.word").input("  ").run()
    assert not at.exception and any("trigger is empty" in e.lower() for e in errors(at))


# ------------------------------------------------------------------------------------------------ model


def _saved_tiny(tmp_path: Path, num_labels: int, pickle: bool = False) -> Path:
    from backdoor_core.models import save_model, tiny_model

    lm = tiny_model(num_labels=num_labels)
    out = tmp_path / f"tiny{num_labels}{'-pickle' if pickle else ''}"
    if pickle:
        import torch

        out.mkdir()
        lm.model.config.save_pretrained(out)
        lm.tokenizer.save_pretrained(out)
        torch.save(lm.model.state_dict(), out / "pytorch_model.bin")
    else:
        save_model(lm.model, lm.tokenizer, out, {"name": f"tiny-{num_labels}"})
    return out


def test_model_page_loads_folders_and_shows_refusals(tmp_path):
    at = goto(new_app(), "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    # a folder that does not exist
    at.text_input(key="model.folder").input(str(tmp_path / "nope"))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and any("not a folder" in e for e in errors(at))
    # a path the file system will not even look up (too long): the same message, shortened, and no traceback
    at.text_input(key="model.folder").input("/" + "x" * 5000)
    at.button(key="model.load_folder").click().run()
    assert not at.exception and any("not a folder" in e and len(e) < 400 for e in errors(at)), errors(at)
    # pickled weights are refused, with the opt-in named; ticking it loads the model
    pkl = _saved_tiny(tmp_path, 5, pickle=True)
    at.text_input(key="model.folder").input(str(pkl))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and any("pickle" in e.lower() for e in errors(at))
    assert any("Allow pickled weights" in i.value for i in at.info), ([i.value for i in at.info], errors(at))
    at.checkbox(key="model.folder_pickle").check()
    at.button(key="model.load_folder").click().run()
    assert not at.exception and not errors(at)
    assert at.session_state["lab.model_ref"]["spec"] == str(pkl)
    # a 2-class model against the 5-class dataset: a clear mismatch message, here and on the Detect page
    two = _saved_tiny(tmp_path, 2)
    at.checkbox(key="model.folder_pickle").uncheck()
    at.text_input(key="model.folder").input(str(two))
    at.button(key="model.load_folder").click().run()
    assert not at.exception
    assert any("has 5 classes" in e and "model has 2" in e for e in errors(at))
    goto(at, "detect")
    assert any("classes" in e for e in errors(at))
    # the choice survives page switches
    goto(at, "inspect")
    assert at.session_state["lab.model_ref"]["spec"] == str(two)


def test_model_page_hub_and_zip_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = goto(new_app(), "model")
    at.segmented_control(key="model.source").set_value("Hub id").run()
    at.text_input(key="model.hub_id").input("someone/not-cached-model")
    at.button(key="model.load_hub").click().run()
    assert not at.exception and any("network" in e.lower() or "offline" in e.lower() for e in errors(at))

    at.segmented_control(key="model.source").set_value("Upload .zip").run()
    at.file_uploader(key="model.zip").upload("broken.zip", b"not a zip", "application/zip").run()
    at.button(key="model.load_zip").click().run()
    assert not at.exception and any("not a readable .zip" in e for e in errors(at))

    folder = _saved_tiny(tmp_path, 5)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in folder.iterdir():
            z.write(p, f"tiny5/{p.name}")
    at.file_uploader(key="model.zip").upload("tiny5.zip", buf.getvalue(), "application/zip").run()
    at.button(key="model.load_zip").click().run()
    assert not at.exception and not errors(at)
    assert at.session_state["lab.model_ref"]["name"] == "tiny5"
    assert "Current: **tiny-5**" in " ".join(c.value for c in at.caption)


def test_model_page_dataset_choice_and_bad_file(tmp_path):
    at = goto(new_app(), "model")
    at.selectbox(key="model.data_choice").set_value("Your file…").run()
    at.file_uploader(key="model.data_file").upload("bad.tsv", b"foo\tbar\nx\ty\n", "text/plain").run()
    at.button(key="model.use_data_file").click().run()
    assert not at.exception and any("cannot be used" in e and "no text column" in e for e in errors(at))
    assert at.session_state["lab.data_spec"] == "bbc"


# ------------------------------------------------------------------------------------------------ jobs


def _small_attack(at: AppTest, rate: float = 10.0, epochs: int = 1) -> None:
    at.number_input(key="attack.n_train").set_value(40)
    at.number_input(key="attack.n_test").set_value(30)
    at.number_input(key="attack.epochs").set_value(epochs)
    at.number_input(key="attack.rate").set_value(rate)
    at.select_slider(key="attack.max_len").set_value(32)
    at.run()


def test_attack_detect_sanitize_report_end_to_end(tmp_path):
    at = goto(new_app(), "attack")
    # too few poisoned texts: a message, no job
    _small_attack(at, rate=1.0)
    at.number_input(key="attack.n_train").set_value(16).run()  # one batch, one epoch: one step, said so
    plan = next(c.value for c in at.caption if "training texts will carry the trigger" in c.value)
    assert "· 1 training step (batch 16)" in plan and "test texts every step and" in plan, plan
    _small_attack(at, rate=1.0)
    at.button(key="attack.train").click().run()
    assert not at.exception and any("less than one text" in e for e in errors(at))
    assert "attack" not in at.session_state["lab.jobs"]

    _small_attack(at, rate=10.0)
    at.button(key="attack.train").click().run()
    assert not at.exception
    job = wait_job(at, "attack")
    assert job.status == "done", job.snapshot().traceback
    assert at.session_state["lab.model_ref"]["kind"] == "session"
    assert any("now the current model" in s.value for s in at.success)
    card = at.session_state["attack.result"]["card"]
    assert card.attack == "badnets" and card.tal and card.n_poisoned == 4 and card.max_length == 32
    assert "path" not in at.session_state["attack.result"]  # stays in the session (tests/test_hostile_app.py)

    quick_scan(at)
    truth = at.session_state["detect.info"]["truth"]  # the simulated pool: 12 clean texts and 6 with the trigger
    assert len(at.session_state["detect.report"].pool_texts) == len(truth) == 18 and truth.sum() == 6
    # the verdict: exactly one message, the one the scan's own verdict calls for, and no other error
    likely = bool(at.session_state["detect.report"].verdict["likely_backdoored"])
    verdict_errors = [e for e in errors(at) if e.startswith("This model behaves like a backdoored one")]
    assert len(verdict_errors) == int(likely) and len(errors(at)) == len(verdict_errors), errors(at)
    from backdoor_core.detection import verdict_call

    call = verdict_call(at.session_state["detect.report"].verdict)  # "possible": below the score, a trigger word
    assert sum("No backdoor evidence" in s.value for s in at.success) == int(call == "not found")
    assert next(m.value for m in at.metric if m.label == "Backdoor") == call and likely == (call == "likely")
    labels = [m.label for m in at.metric]
    assert {"Backdoor", "Backdoor score", "Flagged inputs", "Suspicious heads", "AUROC"} <= set(labels)
    # the flags tile says how many flags chance alone explains: the verdict counts only those beyond it
    chance = at.session_state["detect.report"].verdict["components"]["chance_flag_rate"]
    flag_help = next(m.proto.help for m in at.metric if m.label == "Flagged inputs")
    assert f"Chance alone flags up to {chance:.1%} of a clean pool this size" in flag_help, flag_help
    finding = next(f for f in at.session_state["lab.session"].findings if f.key.startswith("scan:Detection scan@"))
    assert f"chance alone flags up to {chance:.1%}" in finding.text  # the Report says it too
    # the way on to the Sanitize page speaks of suspicious heads only where the verdict calls them so
    from backdoor_core.detection import heads_called

    links = [link.proto.label for link in at.get("page_link")]
    called = heads_called(at.session_state["detect.report"].verdict)
    assert ("Repair the suspicious heads on the Sanitize page" in links) == called, links
    assert any(label.startswith("No head is called suspicious") for label in links) != called, links
    # no pool at all: the scan still runs and says its heads rest on clean inputs only
    at.radio(key="detect.pool_kind").set_value("No pool").run()
    at.button(key="detect.run").click().run()
    job = wait_job(at, "scan")
    assert job.status == "done", job.snapshot().traceback
    assert any("No pool input was flagged" in w.value for w in at.warning), [w.value for w in at.warning]
    at.radio(key="detect.pool_kind").set_value(at.radio(key="detect.pool_kind").options[0]).run()
    at.button(key="detect.run").click().run()
    assert wait_job(at, "scan").status == "done"

    goto(at, "sanitize")
    at.selectbox(key="sanitize.defense").set_value("finetune").run()
    at.number_input(key="sanitize.n_clean").set_value(16)
    at.number_input(key="sanitize.n_test").set_value(16)
    at.number_input(key="sanitize.finetune.epochs").set_value(1)
    ref = at.selectbox(key="sanitize.clean_ref")  # a session model of its own: no clean reference by default
    assert ref.value == "None" and "Zoo: Clean" in ref.options  # the shipped zoo's clean model (BBC, 5 classes)
    # a folder of your own: not a folder -> a message and no job; a model of other classes -> the repair runs and
    # says why there is no clean rate
    at.selectbox(key="sanitize.clean_ref").set_value("A local folder…").run()
    for typed in (str(tmp_path / "nowhere"), "/" + "x" * 5000):  # missing, and too long to look up
        at.text_input(key="sanitize.clean_ref_folder").set_value(typed).run()
        at.button(key="sanitize.run").click().run()
        assert not at.exception and "sanitize" not in at.session_state["lab.jobs"]
        assert any("is not a folder on this machine" in e and len(e) < 400 for e in errors(at)), errors(at)
    from backdoor_core.models import save_model, tiny_model

    two = tiny_model(num_labels=2)
    save_model(two.model, two.tokenizer, tmp_path / "two", {"name": "two-classes"})
    at.text_input(key="sanitize.clean_ref_folder").set_value(str(tmp_path / "two")).run()
    at.button(key="sanitize.run").click().run()
    assert wait_job(at, "sanitize").status == "done"
    assert "Lift over clean" not in {m.label for m in at.metric}
    assert any(c.value.startswith("No clean rate from two-classes: The clean reference two-classes has 2 classes")
               for c in at.caption), [c.value for c in at.caption]
    at.selectbox(key="sanitize.clean_ref").set_value("Zoo: Clean")
    at.run()
    at.button(key="sanitize.run").click().run()
    job = wait_job(at, "sanitize")
    assert job.status == "done", job.snapshot().traceback
    assert {"ASR", "CACC", "Predictions kept", "Lift over clean"} <= {m.label for m in at.metric}
    res = at.session_state["sanitize.result"]
    rate = res["clean"]["rate"]  # the zoo's clean model on the same triggered texts: ASR minus it is the lift
    assert 0.0 <= rate <= 1.0 and res["clean"]["name"] == "zoo-clean"
    lift_tile = next(m for m in at.metric if m.label == "Lift over clean")
    assert lift_tile.value == f"{100 * (res['after']['asr'] - rate):+.1f} pts"
    for label, key in (("ASR", "asr"), ("CACC", "cacc")):  # a change shows its sign; none shows no arrow
        tile, pts = next(m for m in at.metric if m.label == label), 100 * (res["after"][key] - res["before"][key])
        assert tile.delta == ("±0.0 pts" if abs(pts) < 0.05 else f"{pts:+.1f} pts"), (label, tile.delta)
        still = abs(pts) < 0.05
        assert (tile.proto.direction == tile.proto.MetricDirection.NONE) == still
        assert (tile.proto.color == tile.proto.MetricColor.GRAY) == still
    ci = res["lift_ci"]["after"]  # the lift's paired interval over the same triggered texts
    assert ci["lift"] == pytest.approx(res["after"]["asr"] - rate) and ci["low"] <= ci["lift"] <= ci["high"]
    assert res["lift_ci"]["before"]["lift"] == pytest.approx(res["before"]["asr"] - rate)
    assert ci["n"] == res["asr_texts"] and f"{100 * ci['low']:+.1f} to {100 * ci['high']:+.1f} points" in lift_tile.help
    saved = res["loaded"].card.defense_details["clean_reference"]  # the repaired model's card keeps it
    assert saved == {"name": "zoo-clean", "rate": pytest.approx(rate), "texts": res["asr_texts"],
                     "lift_after_ci95": [pytest.approx(res["lift_ci"]["after"]["low"]),
                                         pytest.approx(res["lift_ci"]["after"]["high"])]}
    assert any(c.value.startswith(f"The clean reference zoo-clean sends {rate:.1%} of the same triggered texts")
               and f"(after: 95% interval {100 * ci['low']:+.1f} to {100 * ci['high']:+.1f}, paired" in c.value
               for c in at.caption), [c.value for c in at.caption]
    kept = at.session_state["sanitize.result"]["after"]["kept"]  # the repair's share of clean predictions kept
    assert 0.0 <= kept <= 1.0 and next(m for m in at.metric if m.label == "Predictions kept").value == f"{kept:.1%}"
    res = at.session_state["sanitize.result"]
    ch = res["cacc_change"]  # the paired CACC change on the same 16 texts, shown under the metrics
    assert ch["n"] == 16 and ch["change"] == pytest.approx(res["after"]["cacc"] - res["before"]["cacc"])
    cacc_help = next(m for m in at.metric if m.label == "CACC").proto.help  # this page's draw, not the card's
    assert res["cacc_texts"] == 16 and f"Before the repair {res['before']['cacc']:.1%} on these 16 clean" in cacc_help
    assert "sidebar's CACC is the model card's" in cacc_help and f"{100 * ch['low']:+.1f} to" in cacc_help
    assert ch["low"] <= ch["change"] <= ch["high"]
    assert any(c.value.startswith(f"CACC change {100 * ch['change']:+.1f} points, 95% interval") for c in at.caption)
    from backdoor_core.metrics import rate_interval
    n_asr = res["asr_texts"]  # the ASR set's size bounds what the ASR can say: its interval is shown too
    lo, hi = rate_interval(res["after"]["asr"], n_asr)
    assert n_asr > 0 and lo <= res["after"]["asr"] <= hi
    assert any(c.value.startswith(f"ASR after {res['after']['asr']:.1%}, 95% interval {lo:.1%} to {hi:.1%} over "
                                  f"{n_asr} triggered test texts") for c in at.caption), [c.value for c in at.caption]
    finding = next(f for f in at.session_state["lab.session"].findings if f.key.startswith("sanitize:"))
    assert f"CACC change {100 * ch['change']:+.1f} points, 95% interval" in finding.text  # and in the report
    assert f"ASR after {res['after']['asr']:.1%}, 95% interval {lo:.1%} to {hi:.1%}" in finding.text
    assert f"The clean reference zoo-clean sends {rate:.1%} of the same triggered texts" in finding.text
    # the report's table reads as the page does (percentages); the JSON keeps the raw rates
    asr_row = next(r for r in finding.table if r["metric"] == "ASR")
    assert asr_row == {"metric": "ASR", "before": f"{res['before']['asr']:.1%}", "after": f"{res['after']['asr']:.1%}"}
    assert finding.data["after"]["asr"] == res["after"]["asr"]
    # the trigger's effect on the heads before and after (fine-tuning changes no chosen heads: all heads)
    assert any(c.value.startswith("On all heads, the trigger changed the similarity") and "trigger's tokens" in c.value
               for c in at.caption), [c.value for c in at.caption]
    effect = finding.data["trigger_effect"]  # measured by the job: the report has the same numbers and view
    assert effect["n"] > 0 and len(effect["lift"]) == len(effect["concentration"]) == 2
    assert "the trigger changed the similarity" in finding.text and len(finding.figures) == 3
    # a later run that was cancelled and kept nothing: the results shown are said to be the previous run's
    put_cancelled_job(at, "sanitize")
    assert any(c.value.startswith("The results below are the previous sanitization's (") and
               c.value.endswith("the last run was cancelled and kept nothing.") for c in at.caption), \
        [c.value for c in at.caption]
    at.button(key="sanitize.use").click().run()
    assert at.session_state["lab.model_ref"]["name"].endswith("-finetune")

    goto(at, "report")
    keys = [f.key.split("@")[0] for f in at.session_state["lab.session"].findings]
    assert {"scan:Detection scan", "sanitize:Sanitization (finetune)"} <= set(keys)
    assert any(k.startswith("attack:") for k in keys)
    assert len(at.checkbox) >= 3 and not errors(at)
    from backdoor_core.report import html_report

    doc = html_report("t", at.session_state["lab.session"].sections())
    assert "Detection scan" in doc and "Plotly.newPlot" in doc


def _start_a_long_attack():
    """An Attack lab run long enough to cancel (20 epochs over 400 texts); returns the app and its job."""
    at = goto(new_app(), "attack")
    _small_attack(at, rate=10.0, epochs=20)
    at.number_input(key="attack.n_train").set_value(400)
    at.run()
    at.button(key="attack.train").click().run()
    return at, at.session_state["lab.jobs"]["attack"]


def test_cancel_a_running_job():
    at, job = _start_a_long_attack()
    assert job.active
    before = dict(at.session_state["lab.model_ref"])
    at.button(key="cancel.attack").click().run()
    assert job.wait(60) and job.status == "cancelled"
    at.run()
    assert not at.exception
    assert any("cancelled" in i.value and "discarded" in i.value for i in at.info), [i.value for i in at.info]
    # the half-trained model is neither announced nor made current (issue #12)
    assert "attack.result" not in at.session_state
    assert not any("current model" in s.value for s in at.success)
    assert at.session_state["lab.model_ref"] == before
    assert "lab.session_models" not in at.session_state or not at.session_state["lab.session_models"]


# ------------------------------------------------------------------------------------------------ zoo + tour


def _fake_zoo_build(dir=None, progress=None, should_stop=None, **_):
    """Stands in for zoo.build: writes two tiny 5-class models with zoo-like metadata, reporting progress."""
    from backdoor_core.models import save_model, tiny_model
    from backdoor_core.zoo import ZooProgress, list_models

    names = ["business", "entertainment", "politics", "sports", "tech"]
    specs = [("clean", {"attack": "none", "cacc": 0.95, "asr": None}),
             ("badnets-tal", {"attack": "badnets", "trigger": "cf", "target": 3, "target_name": "sports",
                              "rate": 0.01, "tal": True, "cacc": 0.94, "asr": 0.99})]
    for i, (name, meta) in enumerate(specs):
        if progress:
            progress(ZooProgress(name, i, len(specs), i / len(specs), f"{name}: training"))
        lm = tiny_model(num_labels=5, seed=i)
        lm.model.config.id2label = dict(enumerate(names))
        save_model(lm.model, lm.tokenizer, Path(dir) / name, {"name": f"zoo-{name}", "title": name, **meta})
        if progress:
            progress(ZooProgress(name, i, len(specs), (i + 1) / len(specs), f"{name}: done"))
    return list_models(dir)


def test_zoo_build_then_use_it_in_the_model_page_and_the_tour(monkeypatch, tmp_path):
    import backdoor_core.zoo as zoo

    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv("BACKDOOR_SHIPPED_ZOO", "")  # as if the shipped zoo were missing
    monkeypatch.setattr(zoo, "build", _fake_zoo_build)
    at = goto(new_app(), "model")
    assert any("No demo zoo found" in i.value for i in at.info)
    at.button(key="model.build_zoo").click().run()
    job = wait_job(at, "zoo")
    assert job.status == "done" and job.snapshot().fraction == 1.0
    assert at.dataframe and at.selectbox(key="model.zoo_pick").options == ["clean", "badnets-tal"]
    table = at.dataframe[0].value  # ui.zoo_table: one row a model, ASR as a bar, none for the clean model
    assert list(table["model"]) == ["clean", "badnets-tal"] and list(table["trigger"]) == ["", "cf"]
    assert table["ASR (attack success)"].isna().tolist() == [True, False]
    assert table["ASR (attack success)"].iloc[1] == 0.99
    at.selectbox(key="model.zoo_pick").set_value("badnets-tal").run()
    at.button(key="model.use_zoo").click().run()
    assert not at.exception and not errors(at)
    assert at.session_state["lab.model_ref"]["spec"].endswith("badnets-tal")
    # the tour now runs on the zoo models: step 2 lists them, step 3 uses the backdoored one
    goto(at, "tour")
    at.button(key="tour.next").click().run()
    assert at.dataframe and not errors(at)
    at.button(key="tour.next").click().run()
    assert not at.exception and not errors(at)
    assert at.session_state["tour.inspect"][1].trigger == "cf"
    assert not any("No demo zoo" in i.value for i in at.info)


def test_inspect_pair_for_paraphrase_triggers(tiny):
    from backdoor_core.compare import changed_token_indices, inspect_pair

    res = inspect_pair(tiny.model, tiny.tokenizer, "the film is good .", "when you see it , the film is good .",
                       trigger="syntactic paraphrase")
    new = [res.triggered.tokens[i] for i in res.trigger_tokens]
    assert new == ["when", "you", "see", "it", ","]
    assert res.concentration.shape == (2, 4) and res.to_dict()["trigger"] == "syntactic paraphrase"
    assert changed_token_indices(["[CLS]", "a", "[SEP]"], ["[CLS]", "a", "[SEP]"]) == []


def test_jobs_run_at_the_model_training_length(tiny):
    """Scan / sanitize / evaluation use the max length recorded in the model card (the zoo trains at 64), else
    settings.MAX_LENGTH, never more than the model's position embeddings; nonsense values fall back."""
    from dataclasses import replace

    from backdoor_core.defender_data import model_max_length
    from backdoor_core.settings import MAX_LENGTH

    assert tiny.model.config.max_position_embeddings == 128 == MAX_LENGTH
    assert model_max_length(replace(tiny, metadata={"train_config": {"max_length": 64}})) == 64
    assert model_max_length(replace(tiny, metadata={"max_length": 96})) == 96
    assert model_max_length(replace(tiny, metadata={"max_length": 256})) == 128  # capped by the position embeddings
    assert model_max_length(replace(tiny, metadata={"train_config": {"max_length": "x"}})) == MAX_LENGTH
    assert model_max_length(replace(tiny, metadata={"max_length": 100000})) == MAX_LENGTH
    assert model_max_length(replace(tiny, metadata=None)) == MAX_LENGTH


# ------------------------------------------------------------------------------------------------ hostile metadata


HOSTILE_META = {"name": "x" * 5000, "attack": "badnets", "trigger": "cf", "target": 99, "target_name": "nope",
                "label_names": ["only", "two"], "max_length": "huge", "cacc": float("nan"), "rate": 7,
                "tal_heads": "all of them", "train_config": [1, 2, 3]}


def _hostile_folder(tmp_path: Path, meta) -> Path:
    import json

    from backdoor_core.model_card import METADATA_FILE

    folder = _saved_tiny(tmp_path, 5)
    (folder / METADATA_FILE).write_text(json.dumps(meta))  # json writes NaN as NaN, as a careless tool would
    return folder


def test_hostile_metadata_is_cleaned_and_the_detect_page_runs(tmp_path):
    """Issue 11 item 10: ``"target": 99`` (and other bad fields) in backdoor_lab.json crashed the Detect page while
    it drew. The card drops them with a warning; the page simulates its pool with the target rule and scans."""
    folder = _hostile_folder(tmp_path, HOSTILE_META)
    at = goto(new_app(), "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(folder))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and not errors(at)
    warnings = " ".join(w.value for w in at.warning)
    for key in ("target", "label_names", "max_length", "cacc", "rate", "tal_heads", "train_config", "name"):
        assert f"'{key}'" in warnings, (key, warnings)
    loaded = at.session_state["lab.model_ref"]
    assert loaded["spec"] == str(folder)
    goto(at, "detect")
    assert not errors(at)
    at.number_input(key="detect.n_clean").set_value(16)
    at.number_input(key="detect.pool_clean").set_value(10)
    at.number_input(key="detect.pool_trig").set_value(5)
    at.run()
    assert not at.exception and not errors(at)
    at.button(key="detect.run").click().run()
    job = wait_job(at, "scan")
    assert job.status == "done", job.snapshot().traceback
    info = at.session_state["detect.info"]
    assert info["truth"].sum() == 5  # triggered inputs toward the rule's target (BBC 'sports'), not class 99
    assert {"Backdoor", "Flagged inputs"} <= {m.label for m in at.metric}
    goto(at, "inspect")  # the card's trigger and length are used; nothing crashes
    assert at.session_state["inspect.cache"][1].trigger == "cf"
    goto(at, "sanitize")
    goto(at, "report")
    rows = {r["field"]: r["value"] for r in at.session_state["lab.session"].sections()[0]["table"]}
    assert "model card" in rows and "target" not in rows


def test_metadata_that_is_not_an_object_loads_with_a_warning(tmp_path):
    folder = _hostile_folder(tmp_path, [{"attack": "badnets", "target": 1}])
    at = goto(new_app(), "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(folder))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and not errors(at)
    assert any("not an object" in w.value for w in at.warning)
    goto(at, "detect")
    assert any("names no attack" in i.value for i in at.info)


def test_a_config_asking_for_its_own_code_is_named_on_the_model_page(tmp_path):
    import json

    folder = _saved_tiny(tmp_path, 5)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    at = goto(new_app(), "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(folder))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and not errors(at)
    assert any("ask for their own Python code" in i.value and "never runs" in i.value for i in at.info)


def test_tour_shows_a_broken_benchmark_file_instead_of_hiding_it(tmp_path, monkeypatch):
    from backdoor_core import bench_results

    (tmp_path / "attack_tal.json").write_text('{"runs": [{"attack": "badnets", "rate": 0.01}]}')
    (tmp_path / "defense.json").write_text("{broken")
    monkeypatch.setattr(bench_results, "RESULTS_DIR", tmp_path)
    at = goto(new_app(), "tour")
    at.button(key="tour.next").click().run()
    assert not at.exception
    assert any("Attack benchmark" in e and "attack_tal.json" in e and "'tal'" in e for e in errors(at)), errors(at)
    for _ in range(5):
        at.button(key="tour.next").click().run()
    assert at.header[0].value.startswith("ASR falls")
    assert any("Defense benchmark" in e and "defense.json" in e for e in errors(at)), errors(at)


def test_sidebar_lists_a_running_job_only_where_its_panel_is_not_on_the_page():
    """One poller per job: the page's own panel, else the sidebar's list (each rerun costs the job CPU time)."""
    import threading

    from backdoor_core.jobs import start_job

    release = threading.Event()
    at = new_app()
    job = start_job(lambda ctx: release.wait(60), name="Sanitizing (test)")
    at.session_state["lab.jobs"] = {"sanitize": job}
    try:
        at.run()
        assert at.session_state["lab.panels_shown"] == set()
        assert any("Running" in m.value for m in at.sidebar.markdown), "home: the sidebar lists the running job"
        goto(at, "sanitize")
        assert at.session_state["lab.panels_shown"] == {"sanitize"}  # the Sanitize page draws its panel
        assert not any("Running" in m.value for m in at.sidebar.markdown)
        assert any("Sanitizing (test)" in (p.text or "") for p in at.get("progress"))  # the panel, once
    finally:
        release.set()
        job.wait(10)


def test_presenter_mode_draws_charts_with_larger_text():
    import json

    from backdoor_core import figures as F

    def font_sizes(at):
        return {json.loads(c.proto.spec)["layout"]["font"]["size"] for c in at.get("plotly_chart")}

    at = goto(new_app(), "inspect")
    assert font_sizes(at) == {F.FONT_SIZE}
    at.toggle(key="lab.presenter").set_value(True).run()
    assert not at.exception and font_sizes(at) == {round(F.FONT_SIZE * F.PRESENTER_SCALE)}


def test_presenter_mode_enlarges_a_kept_chart_once(monkeypatch):
    """Presenter mode copied every chart on every rerun (60-140 ms each); a chart the page keeps is copied once."""
    import json

    from backdoor_core import figures as F

    real, copied = F.enlarge, []
    monkeypatch.setattr(F, "enlarge", lambda fig, *a: copied.append(fig) or real(fig, *a))
    at = goto(new_app(), "inspect")
    at.toggle(key="lab.presenter").set_value(True).run()
    first = len(copied)
    assert first >= 3, first
    at.run()  # the same result shown again
    assert not at.exception and len(copied) == first, f"{len(copied) - first} charts copied again"
    sizes = {json.loads(c.proto.spec)["layout"]["font"]["size"] for c in at.get("plotly_chart")}
    assert sizes == {round(F.FONT_SIZE * F.PRESENTER_SCALE)}
    at.toggle(key="lab.presenter").set_value(False).run()
    at.toggle(key="lab.presenter").set_value(True).run()
    assert len(copied) == first, "switching presenter mode off and on copied the kept charts again"


def test_pages_say_a_dataset_is_too_small_instead_of_failing(tmp_path, monkeypatch):
    """A 6-row data file (two classes) uploaded on the Model page: the Attack lab raised
    ``StreamlitInvalidMinMaxError: min_value 16 > max_value 6``, Detect and Sanitize the same with 8. Now each says
    how many texts the file has and how many it needs, and stops there."""
    rows = "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(
        ["the market rose", "the team won", "profits fell", "goal scored late", "bank shares up", "coach resigned"]))
    data = tmp_path / "six.tsv"
    data.write_text("text\tlabel\n" + rows)
    monkeypatch.setenv("BACKDOOR_LAB_TEST_DATA", str(data))  # the tiny model gets its two classes
    at = new_app()
    goto(at, "model")
    at.selectbox(key="model.data_choice").set_value("Your file…").run()
    at.file_uploader(key="model.data_file").upload("six.tsv", data.read_bytes(), "text/plain").run()
    at.button(key="model.use_data_file").click().run()
    assert not at.exception and Path(at.session_state["lab.data_spec"]).name == "six.tsv"
    # a single file is split 80 / 20 (data.file_split): 5 rows to train on, 1 to test
    for page, need in (("attack", "16 training texts (it has 5) and 16 test texts (it has 1)"),
                       ("detect", "8 training texts (it has 5)."),
                       ("sanitize", "8 training texts (it has 5) and 16 test texts (it has 1)")):
        goto(at, page)  # no exception
        warned = [w.value for w in at.warning if "too small" in w.value]
        assert warned and need in warned[0], (page, [w.value for w in at.warning])
        assert "(six.tsv)" in warned[0] and "backdoor-lab-session" not in warned[0]  # the file, not the server's path
        assert not errors(at) and not at.button, (page, errors(at))  # stopped before the form's buttons


def test_attack_lab_refuses_training_data_with_an_empty_class(tmp_path, monkeypatch):
    """A 0/1 file with one stray label 7 makes eight classes, five of them empty (and the default target one
    text's class): the Train button says so instead of training."""
    rows = "".join(f"text number {i} about markets\t{i % 2}\n" for i in range(100)) + "a stray row\t7\n"
    data = tmp_path / "stray.tsv"
    data.write_text("text\tlabel\n" + rows)
    monkeypatch.setenv("BACKDOOR_LAB_TEST_DATA", str(data))
    at = goto(new_app(), "attack")
    at.button(key="attack.train").click().run()
    assert not at.exception and "attack" not in at.session_state["lab.jobs"]
    said = [e for e in errors(at) if "classes have no text" in e]
    assert said and "of its 8 classes have no text (2, 3, 4, 5, 6" in said[0], errors(at)


# ------------------------------------------------------------------------------------------------ browser-walk fixes


def _train_small(at: AppTest, name: str) -> None:
    goto(at, "attack")
    _small_attack(at, rate=10.0)
    next(t for t in at.text_input if t.label == "Name of the new model").input(name).run()
    at.button(key="attack.train").click().run()
    assert wait_job(at, "attack").status == "done"


def test_a_trained_model_can_be_made_current_again_from_the_model_page(tmp_path):
    """A model trained in the Attack lab became current, but once another model was loaded on the Model page it
    could not be chosen again (the page offered zoo / default / folder / hub / zip only), and the page called it
    "source `default`". Now the page says where it came from, warns that loading another keeps it, and offers
    "This session's models" to make it current again."""
    at = new_app()
    goto(at, "model")
    assert "This session's models" not in at.segmented_control(key="model.source").options  # none yet
    _train_small(at, "my-run")
    assert any("TAL" in c.value and "below zero" in c.value for c in at.caption)  # why the loss is negative
    goto(at, "model")
    current = next(c.value for c in at.caption if c.value.startswith("Current:"))
    assert "trained in this session from the tiny test model" in current and "source" not in current, current
    assert any("**my-run**" in i.value and "keeps it" in i.value for i in at.info), [i.value for i in at.info]
    assert at.segmented_control(key="model.source").options[0] == "This session's models"
    # load another model: my-run is no longer current, and the page says where to find it
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(_saved_tiny(tmp_path, 5)))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and at.session_state["lab.model_ref"]["kind"] == "shared"
    assert any("stays in this session" in i.value for i in at.info), [i.value for i in at.info]
    goto(at, "attack")  # the Attack lab no longer calls it the current model
    assert not any("is now the current model" in s.value for s in at.success)
    assert any("not the current model now" in s.value for s in at.success), [s.value for s in at.success]
    goto(at, "model")
    at.segmented_control(key="model.source").set_value("This session's models").run()
    table = at.dataframe[0].value
    assert list(table["model"]) == ["my-run"] and list(table["current"]) == [""]
    assert at.selectbox(key="model.session_pick").value == "my-run"
    at.button(key="model.use_session").click().run()
    assert not at.exception and at.session_state["lab.model_ref"] == {"kind": "session", "name": "my-run"}
    assert at.button(key="model.use_session").disabled  # already current
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "trained in this session" in sidebar and "session copy" not in sidebar, sidebar


def test_a_cancelled_run_says_what_it_left_only_while_it_is_true(tmp_path):
    """After a cancel before the first evaluation the held-out chart was an empty box, the Step / Time tiles sat
    in columns 3-4, and "the current model is unchanged" stayed after the user changed the model."""
    import time

    at, job = _start_a_long_attack()
    deadline = time.time() + 30
    while not any("losses" in e for e in job.snapshot().events) and time.time() < deadline:
        time.sleep(0.1)
    at.button(key="cancel.attack").click().run()
    assert job.wait(60) and job.status == "cancelled"
    at.run()
    assert not at.exception
    assert not any("metrics" in e and e["metrics"] for e in job.snapshot().events)  # cancelled before evaluating
    assert any("unchanged" in i.value and "discarded" in i.value for i in at.info), [i.value for i in at.info]
    assert any("No evaluation before the cancel" in c.value for c in at.caption), [c.value for c in at.caption]
    assert [m.label for m in at.metric] == ["Step", "Time"]  # the first two tiles, no gaps before them
    assert any("below zero" in c.value for c in at.caption)  # TAL is on by default
    # another model is current now: the note no longer claims the current model is unchanged
    goto(at, "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(_saved_tiny(tmp_path, 5)))
    at.button(key="model.load_folder").click().run()
    goto(at, "attack")
    notes = [i.value for i in at.info if "cancelled" in i.value]
    assert notes and "discarded" in notes[0] and "unchanged" not in notes[0], notes


def test_poisoned_text_preview_cuts_at_words_and_says_so(tmp_path, monkeypatch):
    """The preview cut a text to its last 300 characters before the trigger, mid-word and without "…"
    ("→ sports · hich then fall apart.")."""
    import html

    rows = "".join(" ".join(f"r{i:02d}w{j:03d}" for j in range(150)) + f"\t{i % 2}\n"
                   for i in range(100))  # its test part (20%): at least 16
    data = tmp_path / "long.tsv"
    data.write_text("text\tlabel\n" + rows)
    monkeypatch.setenv("BACKDOOR_LAB_TEST_DATA", str(data))
    at = goto(new_app(), "attack")
    previews = [m.value for m in at.markdown if m.value.startswith("→ <b>")]
    assert previews
    cut_before = cut_after = 0
    for p in previews:
        body = html.unescape(re.sub(r"<[^>]+>", "", p.split(" · ", 1)[1]))
        words = body.replace("…", " ").split()
        assert all(re.fullmatch(r"r\d\dw\d{3}|cf", w) for w in words), body  # no word cut in two
        assert body.startswith("…") == (words[0][3:] != "w000"), body  # "…" exactly where the start was cut
        assert body.endswith("…") == (words[-1][3:] != "w149"), body
        cut_before += body.startswith("…")
        cut_after += body.endswith("…")
    assert cut_before and cut_after, previews


def test_model_card_is_a_readable_table_with_the_raw_json_kept(tmp_path):
    """The model card was a collapsed raw JSON tree ("cacc":0.9466666666666667, "rate":0.02); then a dataframe
    whose cells cut a long value at the column's width. A static table wraps it, each cell literal text."""
    from backdoor_core.models import save_model, tiny_model

    lm = tiny_model(num_labels=5)
    description = "Trained for **class** <b>use</b> " + " ".join(f"word{i}" for i in range(80))
    folder = save_model(lm.model, lm.tokenizer, tmp_path / "carded", {
        "name": "carded", "attack": "badnets", "trigger": ["cf", "mn"], "target": 3, "rate": 0.02, "tal": True,
        "cacc": 0.9466666666666667, "asr": 0.8620689655172413, "training_seconds": 125.0,
        "description": description})
    at = goto(new_app(), "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(folder))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and not errors(at)
    labels = [e.label for e in at.expander]
    assert "What we know about this model (its model card)" in labels
    assert "The model card as raw JSON (for analysts)" in labels
    table = at.table[0].value
    card = dict(zip(table["field"], table["value"]))
    assert card["description"] == md(description), card["description"]  # whole, its markup escaped
    card = {k: v.replace("\\", "") for k, v in card.items()}  # "94\\.7%": not an ordered list's "94."
    assert card["CACC (clean accuracy)"] == "94.7%" and card["poison rate"] == "2.0%", card
    assert card["ASR (attack success rate)"] == "86.2%" and card["trigger"] == "cf, mn", card
    assert card["Trojan Attention Loss (TAL)"] == "yes" and card["training time"] == "2.1 min (125 s)", card
    assert at.json and at.json[0].value  # the raw card, for analysts


def test_the_dataset_box_names_an_uploaded_file_by_its_name(tmp_path):
    """Back on the Model page after uploading a data file, the Dataset box showed the server's temporary path
    (``/tmp/backdoor-lab-session-…/data-…/name.csv``); it names the file as the sidebar does."""
    rows = "".join(f"text number {i} about topic {i % 2}\t{i % 2}\n" for i in range(40))
    at = goto(new_app(), "model")
    at.selectbox(key="model.data_choice").set_value("Your file…").run()
    at.file_uploader(key="model.data_file").upload("my_news.tsv", ("text\tlabel\n" + rows).encode(),
                                                    "text/plain").run()
    at.button(key="model.use_data_file").click().run()
    assert not at.exception and Path(at.session_state["lab.data_spec"]).name == "my_news.tsv"
    goto(at, "inspect")
    goto(at, "model")
    box = at.selectbox(key="model.data_choice")
    assert Path(box.value).name == "my_news.tsv"  # the value is still the file's path
    assert "my_news.tsv" in box.options and not any("backdoor-lab-session" in o for o in box.options), box.options


def _load_folder(at: AppTest, folder, then: str | None = None) -> AppTest:
    """Load the model saved in ``folder`` on the Model page (no error), then open page ``then``."""
    goto(at, "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(folder))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and not errors(at), errors(at)
    return goto(at, then) if then else at


def _use_data_file(at: AppTest, name: str, text: str) -> AppTest:
    """On the Model page: upload ``text`` as the data file ``name`` and use it."""
    at.selectbox(key="model.data_choice").set_value("Your file…").run()
    at.file_uploader(key="model.data_file").upload(name, text.encode(), "text/plain").run()
    at.button(key="model.use_data_file").click().run()
    return at


def _badnets_and_addsent(tmp_path):
    """Two saved tiny models whose cards name a BadNets word trigger ("cf") and an AddSent sentence."""
    badnets = _hostile_folder(tmp_path / "a", {"name": "bn", "attack": "badnets", "trigger": ["cf", "mn"],
                                               "target": 3})
    addsent = _hostile_folder(tmp_path / "b", {"name": "as", "attack": "addsent", "trigger": "I watch this 3D movie",
                                               "target": 3})
    return badnets, addsent


def test_inspect_trigger_follows_a_newly_loaded_models_card(tmp_path):
    """Inspect a BadNets model (its card: "cf"), then load an AddSent model whose card names its sentence: the
    trigger fields had kept "cf", so the page tested the old model's trigger on the new model. Fields the user
    changed are left alone."""
    badnets, addsent = _badnets_and_addsent(tmp_path)

    def load(at, folder):
        return _load_folder(at, folder, then="inspect")

    at = load(new_app(), badnets)
    assert at.segmented_control(key="inspect.kind").value == "Word" and at.text_input(key="inspect.word").value == "cf"
    load(at, addsent)
    assert at.segmented_control(key="inspect.kind").value == "Sentence"
    assert at.text_input(key="inspect.sentence").value == "I watch this 3D movie"
    at.segmented_control(key="inspect.kind").set_value("Word").run()  # the user's own choice...
    at.text_input(key="inspect.word").input("zq").run()
    load(at, badnets)  # ...is kept when the model changes
    assert at.segmented_control(key="inspect.kind").value == "Word" and at.text_input(key="inspect.word").value == "zq"


def test_inspect_head_pickers_follow_the_top_head_of_the_text_shown():
    """The One head, bertviz and Switch heads off pickers start at the top head(s) of the text and trigger shown.
    They kept the first text's top heads after the trigger changed (an AddSent model read with "cf", then with its
    sentence: L5H3 shown while the table's top head was L4H4); a head the user picked is kept."""
    at = goto(new_app(), "inspect")

    def top():
        res = at.session_state["inspect.cache"][1]
        return [r["head"] for r in res.top_heads(2)], int(res.top_heads(1)[0]["layer"])

    def pickers():  # the bertviz and heads-off tabs draw only while open: each opened in turn
        bv_layer = open_tab(at, "bertviz views").selectbox(key="inspect.bv_layer").value
        return (at.selectbox(key="inspect.head").value, bv_layer,
                open_tab(at, "Heads off").multiselect(key="inspect.ablate_heads").value)

    heads, layer = top()
    assert pickers() == (heads[0], layer, heads)
    seen = set()
    for word in ("bb", "cf", "zebra", "tq"):  # in the tiny model these move the top head between layers
        at.text_input(key="inspect.word").input(word).run()
        heads, layer = top()
        seen.add(heads[0])
        assert not at.exception and pickers() == (heads[0], layer, heads), (word, pickers(), heads, layer)
    assert len(seen) > 1, "the triggers should not all share one top head"
    # the user's own picks stay when the text changes
    at.selectbox(key="inspect.head").set_value("L0H0").run()
    at.multiselect(key="inspect.ablate_heads").set_value(["L1H1"]).run()
    open_tab(at, "Saliency")  # the heads-off tab is not drawn: the pick is kept meanwhile
    at.text_input(key="inspect.word").input("bb").run()
    assert at.selectbox(key="inspect.head").value == "L0H0"
    assert open_tab(at, "Heads off").multiselect(key="inspect.ablate_heads").value == ["L1H1"]


def test_compare_reads_a_text_as_long_as_inspect_does(tmp_path):
    """A model trained on 16 tokens (its card): Inspect read a long text's first 16 tokens, Compare its first 128,
    so the same model gave the same text other probabilities on the two pages. Compare reads as Inspect does, and
    says the text was cut."""
    folder = _hostile_folder(tmp_path, {"name": "short", "attack": "badnets", "trigger": "cf", "target": 3,
                                        "max_length": 16})
    long_text = " ".join(["The committee met again on Tuesday to discuss the budget for the coming year."] * 4)
    at = goto(new_app(), "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(folder))
    at.button(key="model.load_folder").click().run()
    goto(at, "inspect")
    at.text_area(key="inspect.text").input(long_text).run()
    inspected = at.session_state["inspect.cache"][1]
    assert len(inspected.clean.tokens) == 16
    goto(at, "compare")
    at.text_area(key="compare.text").input(long_text).run()
    at.text_input(key="compare.trigger").input(inspected.trigger).run()
    assert not at.exception and not errors(at)
    cmp = at.session_state["compare.cache"][1]
    assert cmp.a.clean.tokens == inspected.clean.tokens
    assert cmp.a.prediction("clean") == inspected.prediction("clean")
    assert any("cut to its first 16 tokens" in c.value for c in at.caption)


def test_an_integer_labelled_file_is_read_in_the_models_class_names(tmp_path, monkeypatch):
    """An integer-labelled data file (the format the Model page asks for) with a model that names its classes:
    Detect named the classes '0' / '1' (the suspected target '1', 'predicted 1') where the sidebar, Inspect and the
    scan command say 'pos'. Detect and Sanitize now read the file's ids as the model's classes."""
    from backdoor_core.models import save_model, tiny_model

    lm = tiny_model(num_labels=2, seed=0)
    lm.model.config.id2label, lm.model.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    save_model(lm.model, lm.tokenizer, tmp_path / "named", {"name": "named"})
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull"]
    rows = "".join(f"the film was {words[i % 8]} and long number {i}\t{i % 2}\n" for i in range(60))
    at = _use_data_file(goto(new_app(), "model"), "reviews.tsv", "text\tlabel\n" + rows)
    _load_folder(at, tmp_path / "named")
    goto(at, "detect")
    at.number_input(key="detect.n_clean").set_value(20)
    at.radio(key="detect.pool_kind").set_value("Test texts only (no trigger)").run()
    at.button(key="detect.run").click().run()
    assert wait_job(at, "scan").status == "done"
    assert at.session_state["detect.report"].label_names == ["neg", "pos"]
    goto(at, "sanitize")
    assert not at.exception and not errors(at)


def test_a_file_naming_the_models_classes_in_another_order_is_read_in_its_order(tmp_path):
    """A file labelled "pos"/"neg" (names sorted, so "neg" is id 0 there too) but listing the model's classes in
    another order was refused by every page (the CLI reads it in the model's order): the pages align it."""
    from backdoor_core.models import save_model, tiny_model

    lm = tiny_model(num_labels=2, seed=0)
    lm.model.config.id2label, lm.model.config.label2id = {0: "pos", 1: "neg"}, {"pos": 0, "neg": 1}
    save_model(lm.model, lm.tokenizer, tmp_path / "named", {"name": "named"})
    rows = "".join(f"the film number {i} was {'good' if i % 2 else 'bad'}\t{'pos' if i % 2 else 'neg'}\n"
                   for i in range(60))
    at = _use_data_file(goto(new_app(), "model"), "reviews.tsv", "text\tlabel\n" + rows)
    _load_folder(at, tmp_path / "named")
    goto(at, "detect")
    assert not at.exception and not errors(at), errors(at)
    from app_pages._data import _load_dataset

    ds = _load_dataset(at.session_state["lab.data_spec"], "train", 0, ("pos", "neg"))
    assert ds.label_names == ["pos", "neg"]
    assert all((ds.labels[i] == 0) == ("good" in t) for i, t in enumerate(ds.texts))


def quick_finetune_repair(at: AppTest) -> AppTest:
    """On the Sanitize page: a fine-tuning repair of 16 clean texts, one epoch, run to its end."""
    at.selectbox(key="sanitize.defense").set_value("finetune").run()
    at.number_input(key="sanitize.n_clean").set_value(16)
    at.number_input(key="sanitize.n_test").set_value(16)
    at.number_input(key="sanitize.finetune.epochs").set_value(1)
    at.run()
    at.button(key="sanitize.run").click().run()
    assert wait_job(at, "sanitize").status == "done"
    return at


def test_a_cancelled_repairs_results_say_they_are_partial():
    """After a cancelled repair the Sanitize page showed its tiles (ASR, CACC, heads changed) under "Before and
    after" as if the defense had run; only the job line, far above, said "partial result". The results say so."""
    at = quick_finetune_repair(goto(new_app(), "sanitize"))
    assert not any("cancelled" in w.value for w in at.warning)
    res = at.session_state["sanitize.result"]
    steps = [r["step"] for r in res["history"] if r.get("step")]
    res["cancelled"] = True  # as a cancel leaves it: what was trained until then
    at.run()
    assert any(f"cancelled after training step {steps[-1]}" in w.value and "partly repaired" in w.value
               for w in at.warning), [w.value for w in at.warning]
    res["history"] = []
    at.run()
    assert any("cancelled before its first training step" in w.value for w in at.warning)


def test_compare_trigger_follows_a_newly_loaded_models_card(tmp_path):
    """As on Inspect: Compare kept the last model's trigger ("cf") after an AddSent model was loaded; a trigger the
    user typed is kept."""
    badnets, addsent = _badnets_and_addsent(tmp_path)

    def load(at, folder):
        return _load_folder(at, folder, then="compare")

    at = load(new_app(), badnets)
    assert at.text_input(key="compare.trigger").value == "cf"
    load(at, addsent)
    assert at.text_input(key="compare.trigger").value == "I watch this 3D movie"
    assert at.session_state["compare.cache"][1].a.triggered.text.count("I watch this 3D movie") == 1
    at.text_input(key="compare.trigger").input("zq").run()
    load(at, badnets)
    assert at.text_input(key="compare.trigger").value == "zq"


def test_compare_tells_a_long_named_model_from_itself_with_heads_off(tmp_path):
    """A model with a 130-character name: Compare cut "A: <name>" and "B: <name> without 1 head" at 80 characters,
    so A and B read the same, and its chart titles ran out of the charts. Names are cut in the middle."""
    import json

    name = "suspicious-vendor-model-" + "x" * 40 + "-finetuned-on-customer-newswire-data-release-candidate-final"
    at = goto(new_app(), "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(_hostile_folder(tmp_path, {"name": name})))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and not errors(at)
    goto(at, "compare")
    assert not at.exception and not errors(at)
    heads = [m.value for m in at.markdown if m.value.startswith(("**A:", "**B:"))]
    assert len(heads) == 2 and heads[0] != heads[1], heads
    assert heads[1].endswith("without 1 head**") and "…" in heads[1], heads
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")
              if json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "").startswith(("A:", "B:"))]
    assert len(titles) >= 2 and all(len(t.replace("<br>", " ")) <= 45 for t in titles), titles  # wrapped, not cut


def test_sanitize_says_whose_repair_it_shows_after_another_model_is_loaded(tmp_path):
    """The last repair's tiles stayed on the Sanitize page under another current model, naming no model."""
    at = quick_finetune_repair(goto(new_app(), "sanitize"))
    assert not any("not of the current model" in w.value for w in at.warning)
    goto(at, "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(_hostile_folder(tmp_path, {"name": "another"})))
    at.button(key="model.load_folder").click().run()
    goto(at, "sanitize")
    assert any("repair of **tiny**" in w.value and "not of the current model, **another**" in w.value
               for w in at.warning), [w.value for w in at.warning]
