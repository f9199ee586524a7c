"""Long jobs: Cancel ends them within a bounded number of batches or steps, progress goes from 0 to its total,
a cancelled or killed job leaves no partial result behind (and the previous result in place), and the same seed
gives the same numbers. Tiny models and packaged data only; each test takes seconds."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from backdoor_core.data import TextDataset
from backdoor_core.forward import Cancelled
from defense_helpers import clean_texts, nudged, toy_topics, trained_tiny, triggered_texts


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A saved base (the trained clean tiny model) and a "fine-tuned" copy of it: the repair's judge runs."""
    from backdoor_core.models import save_model

    folder = tmp_path_factory.mktemp("judge") / "base"
    base = trained_tiny(False)
    save_model(base.model, base.tokenizer, folder)
    return base, folder, nudged(base.model, 0.03, seed=1)


@pytest.mark.parametrize("lazy", [True, False], ids=["label-judge", "judge-led-labels"])
def test_cancel_while_the_judge_fits_ends_the_repair_at_its_next_batch(judged, monkeypatch, lazy):
    """Cancel clicked once the pseudo-label judge starts its fit (a forward pass of the pretrained encoder over
    the clean and pool texts, in batches) ends the repair at the judge's next batch with ``forward.Cancelled``,
    as Cancel in the other stages before training does, and no training step runs. The judge ran every batch of
    its fit first (and the repair then returned as if training had been cancelled)."""
    from backdoor_core import reference
    from backdoor_core.defenses import run_defense

    base, folder, tuned = judged
    model = copy.deepcopy(tuned)
    texts, labels = clean_texts(48, seed=5)
    pool = triggered_texts(48, seed=6) + clean_texts(48, seed=7)[0]  # 144 texts to embed: 5 batches of 32
    state = {"judging": False, "batches": 0}
    real = reference.pretrained_encoder

    @contextlib.contextmanager
    def spied(m, weights):
        with real(m, weights) as out:
            state["judging"] = True
            yield out

    monkeypatch.setattr(reference, "pretrained_encoder", spied)

    def count(*_):
        if state["judging"]:
            state["batches"] += 1

    model.register_forward_pre_hook(count)
    steps = []
    kw = (dict(heads=["L0H1", "L1H0"], label_judge="fill") if lazy  # the judge is fit inside sanitize_heads
          else dict(judge_flags=True, label_judge="none"))  # fit on the whole pool after the scan
    with pytest.raises(Cancelled):
        run_defense("alignment", model, base.tokenizer, TextDataset(texts, labels, ["neg", "pos"]),
                    pool_texts=pool, base=str(folder), max_steps=3, max_length=32, seed=0, ffn="none",
                    repair_seeds=1, copy=False, callback=steps.append, should_stop=lambda: state["judging"], **kw)
    assert state["judging"] and state["batches"] <= 1 and steps == []
    assert state["batches"] == 0  # the check comes before each batch


def _fractions(target):
    """Run ``target(ctx)`` as a background job; return its status and the job's fraction after every event."""
    from backdoor_core.jobs import start_job

    seen = []

    def run(ctx):
        record = ctx._job._record

        def recorded(data):
            record(data)
            seen.append(ctx._job.snapshot().fraction)
        ctx._job._record = recorded
        return target(ctx)

    job = start_job(run, name="probe")
    assert job.wait(60)
    snap = job.snapshot()
    assert snap.status == "done", snap.traceback
    return [f for f in seen if f is not None] + [snap.fraction]


def _grows(fractions):
    return all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:]))


def test_a_scan_jobs_bar_only_grows_and_ends_at_one():
    """The Detect page's scan job (``_actions.stage_progress``): the bar goes through the scan's stages once, from 0
    to 1. Each stage's own done/total had set it: 100% after the clean texts, back to 16% for the pool, 0% while
    the heads were rated (the longest stage)."""
    from app_pages._actions import stage_progress
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    texts, labels = clean_texts(64, seed=5)
    pool = triggered_texts(24, seed=6) + clean_texts(40, seed=7)[0]
    fr = _fractions(lambda ctx: scan_model(copy.deepcopy(lm.model), lm.tokenizer,
                                           TextDataset(texts, labels, ["neg", "pos"]), pool, max_length=32,
                                           batch_size=16, progress=stage_progress(ctx), should_stop=ctx.should_stop))
    assert len(fr) > 5 and _grows(fr), fr
    assert fr[-1] == 1.0 and max(fr[:-1]) < 1.0  # full only when the scan is done


def test_the_scan_reports_progress_while_it_rates_the_heads():
    """Rating the heads (the gradient of every flagged input, one at a time, once per refined pass) reported only
    its start: the bar and the CLI's line stood still through the scan's longest stage. Each input is reported
    now, the refined passes' ratings each in their own part of the stage, so the stage's fraction only grows."""
    from backdoor_core.scan import scan_model, stage_fraction

    lm = trained_tiny(True)
    texts, labels = clean_texts(64, seed=5)
    pool = triggered_texts(24, seed=6) + clean_texts(40, seed=7)[0]
    events = []
    scan_model(copy.deepcopy(lm.model), lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), pool,
               max_length=32, batch_size=16, progress=lambda *e: events.append(e))
    heads = [stage_fraction(*e) for e in events if e[0] == "heads"]
    assert len(heads) > 5 and _grows(heads), heads
    assert heads[0] == stage_fraction("heads", 0, 1) and heads[-1] > heads[1] > heads[0]


def test_a_repair_jobs_bar_runs_through_its_stages_then_its_steps():
    """The Sanitize page's repair job: its scan and labels fill the first ``REPAIR_STAGES_SHARE`` of the bar, its
    training steps the rest (the page's ``on_step`` wiring, ``_actions.training_fraction``); the stages had each
    gone 0 -> 100%, and training began at 0 again."""
    from app_pages._actions import REPAIR_STAGES_SHARE, stage_progress, training_fraction
    from backdoor_core.defenses import run_defense

    lm = trained_tiny(True)
    texts, labels = clean_texts(48, seed=5)
    pool = triggered_texts(16, seed=6) + clean_texts(24, seed=7)[0]
    fr = _fractions(lambda ctx: run_defense(
        "alignment", lm.model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), pool_texts=pool,
        max_length=32, max_steps=4, progress=stage_progress(ctx, "before the repair: ", REPAIR_STAGES_SHARE),
        callback=lambda p: ctx.update(p, fraction=training_fraction(p, REPAIR_STAGES_SHARE)),
        should_stop=ctx.should_stop))
    assert _grows(fr), fr
    assert any(0 < f <= REPAIR_STAGES_SHARE for f in fr) and fr[-1] == 1.0


def _spy(monkeypatch, module, name, state):
    """Set ``state["on"]`` when ``module.name`` is first called (then call it)."""
    real = getattr(module, name)

    def spied(*args, **kwargs):
        state["on"] = True
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, spied)


def _count_batches(model, state):
    """Count the model's forward calls once ``state["on"]``."""
    def count(*_):
        if state.get("on"):
            state["batches"] = state.get("batches", 0) + 1
    model.register_forward_pre_hook(count)


@pytest.mark.parametrize("stage", ["search_triggers", "enriched_words"])
def test_cancel_while_the_scan_names_triggers_or_reads_pool_words_ends_it(monkeypatch, stage):
    """Cancel clicked while the scan verifies candidate triggers or reads the pool's words (their predictions take
    no ``should_stop``) ends the scan at the next batch with ``forward.Cancelled``: it had run on through every
    insertion to the end, and returned a report, which the Detect page then kept over the previous scan."""
    from backdoor_core import trigger_search
    from backdoor_core.scan import scan_model

    lm = trained_tiny(True)
    model = copy.deepcopy(lm.model)
    texts, labels = clean_texts(64, seed=5)
    pool = triggered_texts(24, seed=6) + clean_texts(40, seed=7)[0]
    state = {}
    _spy(monkeypatch, trigger_search, stage, state)
    _count_batches(model, state)
    with pytest.raises(Cancelled):
        scan_model(model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]), pool, max_length=32,
                   should_stop=lambda: bool(state.get("on")))
    assert state.get("on") and state.get("batches", 0) <= 1


def test_cancel_while_the_repair_reads_the_pool_words_ends_it_at_the_next_batch(monkeypatch):
    """The repair's own reading of the pool's words (dozens of insertion passes before training) stops at its next
    batch on Cancel; it ran every insertion first."""
    from backdoor_core import trigger_search
    from backdoor_core.defenses import run_defense

    lm = trained_tiny(True)
    model = copy.deepcopy(lm.model)
    texts, labels = clean_texts(48, seed=5)
    state, steps = {}, []
    _spy(monkeypatch, trigger_search, "enriched_words", state)
    _count_batches(model, state)
    with pytest.raises(Cancelled):
        run_defense("alignment", model, lm.tokenizer, TextDataset(texts, labels, ["neg", "pos"]),
                    pool_texts=triggered_texts(24, seed=6) + clean_texts(24, seed=7)[0], heads=["L0H1", "L1H0"],
                    max_length=32, max_steps=2, copy=False, callback=steps.append,
                    should_stop=lambda: bool(state.get("on")))
    assert state.get("on") and state.get("batches", 0) <= 1 and steps == []


ZOO_SETTINGS = {"epochs": 1, "batch_size": 8, "max_length": 24, "lr": 1e-3}


def test_a_zoo_build_killed_between_its_writes_is_healed_by_the_next_build(tmp_path, monkeypatch):
    """A zoo build killed after a model's folder was swapped in but before its manifest entry (or a damaged
    adapter file) left a model that never loads ("does not match its recorded sha256"), and `zoo build` kept it as
    cached (only --force rebuilt it). The next build rebuilds it; a killed build's hidden folders are cleared."""
    from backdoor_core import zoo
    from backdoor_core.models import ModelLoadError, load_model

    spec = [zoo.ZooSpec("clean", "Clean")]
    data = (toy_topics(48, 0), toy_topics(20, 1))
    zoo.build(tmp_path, specs=spec, settings=ZOO_SETTINGS, base="tiny", data=data)

    def killed(*_a, **_k):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:  # other settings, another adapter: killed before its manifest entry
        m.setattr(zoo, "write_manifest_entry", killed)
        with pytest.raises(KeyboardInterrupt):
            zoo.build(tmp_path, specs=spec, settings={**ZOO_SETTINGS, "seed": 7}, base="tiny", data=data)
    with pytest.raises(ModelLoadError, match="sha256"):
        load_model(tmp_path / "clean")
    (tmp_path / ".clean.tmp-x1").mkdir()  # what a build killed while writing leaves
    (tmp_path / ".clean.old-123").mkdir()
    zoo.build(tmp_path, specs=spec, settings={**ZOO_SETTINGS, "seed": 7}, base="tiny", data=data)
    assert load_model(tmp_path / "clean").model is not None
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["clean"]


def test_the_zoo_bench_report_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """``bench/zoo_build.py``'s Markdown report goes through ``atomic.write_text``: a write that fails half-way
    (a full disk, a kill) leaves the previous report, not half of the new one (it wrote the file in place)."""
    import os
    import pathlib

    from bench_module import load_bench

    zb = load_bench("zoo_build")
    monkeypatch.setattr(zb, "RESULTS", tmp_path)
    (tmp_path / "zoo_build.md").write_text("OLD REPORT\n")
    real = pathlib.Path.write_text

    def half(self, text, *a, **k):
        real(self, text[: len(text) // 2], *a, **k)
        raise OSError(28, "No space left on device")
    def no_rename(*_a, **_k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pathlib.Path, "write_text", half)  # a write in place stops half-way
    monkeypatch.setattr(os, "replace", no_rename)  # an atomic write stops before its rename
    with pytest.raises(OSError):
        zb.report({"notes": ["a note"]})
    monkeypatch.undo()
    assert (tmp_path / "zoo_build.md").read_text() == "OLD REPORT\n"
    assert [p.name for p in tmp_path.iterdir()] == ["zoo_build.md"]  # no temporary left behind


def test_pure_reports_its_probe_steps_and_a_cancel_before_its_final_training_keeps_nothing():
    """PURE fine-tunes a probe copy, searches the heads to prune, then fine-tunes the model: the probe's steps are
    the first half of its progress (the CLI's bar and the app's sat at 0 through the probe and the search), and
    Cancel during the probe ends it there with ``forward.Cancelled`` and the model untouched (it read the
    variance, searched, pruned, and returned a "cancelled" model the app kept as the repair)."""
    import torch

    from backdoor_core.defenses import run_defense

    lm = trained_tiny(True)
    texts, labels = clean_texts(40, seed=5)
    data = TextDataset(texts, labels, ["neg", "pos"])
    seen = []
    run_defense("pure", lm.model, lm.tokenizer, data, max_steps=3, max_length=32, callback=seen.append)
    steps = [(p.step, p.total_steps) for p in seen]
    assert steps[0] == (1, 6) and steps[-1] == (6, 6) and {t for _, t in steps} == {6}
    assert _grows([s for s, _ in steps])
    model, seen = copy.deepcopy(lm.model), []
    with pytest.raises(Cancelled):
        run_defense("pure", model, lm.tokenizer, data, max_steps=3, max_length=32, copy=False,
                    callback=seen.append, should_stop=lambda: len(seen) >= 1)  # Cancel at the probe's 1st step
    assert {p.step for p in seen} == {1}  # its step (and the evaluation row after it)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), lm.model.state_dict().values()))


def test_cancel_while_the_sanitize_job_measures_the_model_before_ends_it_with_nothing_kept(monkeypatch):
    """The Sanitize page's job (``_actions.start_sanitize``) measures CACC / ASR before the repair: Cancel there
    ends the job at the next batch with nothing kept. It measured on to the end, then ran the repair (which stopped
    at once) and kept the untouched model as a "repaired" one."""
    import time

    from app_pages import _actions as A
    from backdoor_core.forward import predict
    from backdoor_core.jobs import start_job
    from backdoor_core.models import LoadedModel

    lm = trained_tiny(True)
    held = []
    monkeypatch.setattr(A.ui, "session_copy", lambda loaded, name=None: LoadedModel(
        model=copy.deepcopy(loaded.model), tokenizer=loaded.tokenizer, name=name or loaded.name,
        source=loaded.source))
    monkeypatch.setattr(A.ui, "start", lambda kind, target, name, **kw: held.append(start_job(target, name=name)))
    texts, labels = clean_texts(32, seed=5)
    state = {"batches": 0}
    test_labels = list(labels) * 8

    class Evaluate:  # the page's evaluator: a forward pass over the test texts
        poisoned_texts, labels, target = [], test_labels, 1

        def __call__(self, model, seen, hits):
            for _ in range(100):  # the job is started; Cancel is clicked as the measuring begins
                if held:
                    break
                time.sleep(0.05)
            held[0].cancel()
            hook = model.register_forward_pre_hook(lambda *_: state.__setitem__("batches", state["batches"] + 1))
            try:
                probs = predict(model, lm.tokenizer, texts * 8, 32, batch_size=16)  # 16 batches
            finally:
                hook.remove()
            seen.append(probs.argmax(1))
            return {"cacc": float((probs.argmax(1) == self.labels).mean())}

    A.start_sanitize(lm, "finetune", TextDataset(texts, labels, ["neg", "pos"]), None,
                     {"max_steps": 2, "max_length": 32}, lambda work: Evaluate(), "repaired")
    assert held[0].wait(60)
    snap = held[0].snapshot()
    assert snap.status == "cancelled" and snap.result is None, snap.traceback
    assert state["batches"] == 0


@pytest.mark.parametrize("seeds", [1, 2])
def test_cancel_during_a_trainings_evaluation_stops_it_at_the_next_batch(seeds):
    """Cancel clicked while training evaluates (CACC / ASR on the test texts, every ``eval_every`` steps, or once
    on the averaged repair) stops the evaluation at its next batch and ends training as cancelled: it waited for
    the whole evaluation first."""
    from backdoor_core.forward import predict
    from backdoor_core.training import TrainConfig, train_averaged
    from defense_helpers import training_examples

    lm = trained_tiny(False)
    model = copy.deepcopy(lm.model)
    texts = clean_texts(32, seed=3)[0] * 8  # 16 batches of 16
    state = {"evaluating": False, "batches": 0}

    def evaluate(m):
        state["evaluating"] = True
        hook = m.register_forward_pre_hook(lambda *_: state.__setitem__("batches", state["batches"] + 1))
        try:
            return {"cacc": float(predict(m, lm.tokenizer, texts, 32, batch_size=16)[:, 0].mean())}
        finally:
            hook.remove()

    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if "classifier" in n}
    cfg = TrainConfig(lr=1e-3, epochs=1, batch_size=8, max_length=32, seed=0, max_steps=4,
                      eval_every=2 if seeds == 1 else 0)
    res = train_averaged(model, lm.tokenizer, training_examples(48, 1, 0.0), cfg, seeds, trainable_masks=masks,
                         evaluate=evaluate, should_stop=lambda: state["evaluating"])
    assert res.cancelled and state["batches"] <= 1
    assert res.steps == (2 if seeds == 1 else 8)  # one evaluation began: after step 2, or on the average


def test_a_zoo_builds_bar_only_grows_also_when_cancelled(tmp_path):
    """The zoo build's overall fraction (the Model page's bar) only grows; a Cancel leaves it where the training
    stopped (it fell back to the start of the cancelled model), and the cancelled model is not written."""
    from backdoor_core import zoo
    from backdoor_core.tal import TALConfig

    specs = [zoo.ZooSpec("clean", "Clean"),
             zoo.ZooSpec("badnets-tal", "BadNets + TAL", "badnets", 0.1, TALConfig(alpha=1.0, heads=2))]
    seen = []
    zoo.build(tmp_path, progress=seen.append, specs=specs, settings=ZOO_SETTINGS, base="tiny",
              data=(toy_topics(48, 0), toy_topics(20, 1)),
              should_stop=lambda: any(p.index == 1 and p.progress is not None and p.progress.step >= 2 for p in seen))
    fr = [p.fraction for p in seen]
    assert _grows(fr), fr
    assert seen[-1].message.endswith("cancelled, not saved") and 0.5 < fr[-1] < 1.0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["clean"]


def _sleep(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_a_benchmarks_worker_pool_stops_its_queue_on_ctrl_c():
    """``bench/_workers.worker_pool``: Ctrl-C (any exception) in the block cancels the queued tasks and leaves at once;
    ``ProcessPoolExecutor``'s own ``with`` (which the benchmarks used) ran the whole queue first, the loop that
    writes the results already gone. Every benchmark with a process pool uses it."""
    import re
    import sys
    import time
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))
    try:
        from _workers import worker_pool
    finally:
        sys.path.remove(str(bench))
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        with worker_pool(2) as pool:
            futures = [pool.submit(_sleep, 0.5) for _ in range(24)]  # 6 s of work on 2 workers
            futures[0].result()
            raise KeyboardInterrupt
    assert time.perf_counter() - t0 < 2.0
    while time.perf_counter() - t0 < 5 and not all(f.done() for f in futures):  # the manager thread cancels them
        time.sleep(0.05)
    assert sum(f.cancelled() for f in futures) >= 12
    with worker_pool(2) as pool:  # no exception: the queue runs to its end, as before
        assert list(pool.map(_sleep, [0.01] * 4)) == [0.01] * 4
    users = [p.name for p in bench.glob("*.py") if re.search(r"ProcessPoolExecutor\(", p.read_text())]
    assert users == ["_workers.py"], users


def test_an_after_repair_report_reads_past_a_row_a_killed_run_cut_short(tmp_path, capsys):
    """``bench/bias_check.py`` and ``blend_check.py`` append one JSON line per repaired model: a run killed while
    appending leaves half a line, and ``--report`` failed on it (JSONDecodeError), losing the rows before it."""
    from bench_module import load_bench

    ar = load_bench("after_repair")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"model": "a"}\n{"model": "b"}\n{"model": "c", "sus')
    assert [r["model"] for r in ar.read_rows([str(rows)])] == ["a", "b"]
    assert "cut short" in capsys.readouterr().err
    rows.write_text('{"model": "a"}\n{"model": \n{"model": "b"}\n')  # damaged inside: still an error
    with pytest.raises(ValueError):
        ar.read_rows([str(rows)])


def test_a_stopping_block_inside_another_keeps_the_outer_cancel():
    """``forward.stopping`` inside another (a stage's own check within a job's): a forward pass checks both; the
    inner block had hidden the outer one's Cancel."""
    from backdoor_core.forward import run_with_cache, stopping

    lm = trained_tiny(False)
    outer = {"stop": False}
    with stopping(lambda: outer["stop"]):
        with stopping(lambda: False):
            outer["stop"] = True
            with pytest.raises(Cancelled):
                run_with_cache(lm.model, lm.tokenizer, ["a good film"], max_length=16)


def test_a_thread_count_the_user_chose_is_kept_on_a_busy_machine(monkeypatch):
    """On a busy CPU the lab trains on one thread (4x faster there); that count changes a run's last bits, and a
    user who set OMP_NUM_THREADS to repeat a run had it overridden."""
    import os

    from backdoor_core import training

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert training.use_one_thread_if_busy() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert training.use_one_thread_if_busy() == 1  # not chosen: one thread on a busy machine
    finally:
        torch.set_num_threads(before)


def _heads():
    import numpy as np

    mask = np.zeros((2, 4), dtype=bool)
    mask[0, 1] = mask[1, 0] = True
    return mask


def _states_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("stage, kw", [
    ("alignment_value", {}),  # the alignment measured before
    ("predict", {"measure_align": False, "retain": 1.0}),  # the retention teacher
    ("gated_accuracy", {"measure_align": False}),  # the gate: the clean accuracy with the suspicious heads off
    ("focus_removal", {"measure_align": False, "pseudo_labels": False}),  # the focus-removal labels
], ids=["align-before", "teacher", "gate", "focus-removal"])
def test_cancel_in_the_repairs_label_rules_and_measures_ends_it_at_the_next_batch(monkeypatch, stage, kw):
    """Cancel clicked while the repair measures its alignment, asks its teacher, or runs a label rule (the gate's
    clean accuracy, focus removal) ends it at that pass's next batch with ``forward.Cancelled``, the model as it
    came (no head reset, no gate's hook left): those passes took no ``should_stop`` and ran to their end, and the
    repair went on to its training."""
    from backdoor_core import sanitize
    from backdoor_core.training import TrainConfig

    lm = trained_tiny(True)
    model = copy.deepcopy(lm.model)
    texts, labels = clean_texts(48, seed=5)
    pool = triggered_texts(24, seed=6) + clean_texts(24, seed=7)[0]
    state, steps = {}, []
    _spy(monkeypatch, sanitize, stage, state)
    _count_batches(model, state)
    options = {"pseudo_labels": True, "focus_labels": True, "exclude_labels": True, **kw}
    with pytest.raises(Cancelled):
        sanitize.sanitize_heads(model, lm.tokenizer, texts, labels, _heads(), pool, ffn="none", repair_seeds=1,
                                config=TrainConfig(lr=1e-3, epochs=1, batch_size=16, max_length=32, max_steps=2),
                                callback=steps.append, should_stop=lambda: bool(state.get("on")), **options)
    assert state.get("on") and state.get("batches", 0) == 0 and steps == []
    assert _states_equal(model, lm.model)


def test_cancel_while_the_repair_measures_its_alignment_after_ends_it_as_cancelled(monkeypatch):
    """Cancel clicked once training is over, while the repair measures its alignment after (a report's number
    only), ends the run as cancelled at once (``align_after`` None, the trained model kept, the frozen slices
    intact); it measured on to the end and returned the run as finished. A run whose training Cancel ended
    skips that measurement too."""
    from backdoor_core import sanitize
    from backdoor_core.training import TrainConfig

    lm = trained_tiny(True)
    model = copy.deepcopy(lm.model)
    texts, labels = clean_texts(48, seed=5)
    state, calls = {}, []
    real = sanitize.alignment_value

    def spied(*args, **kwargs):
        calls.append(1)
        state["on"] = len(calls) == 2  # the second: after training
        return real(*args, **kwargs)
    monkeypatch.setattr(sanitize, "alignment_value", spied)
    _count_batches(model, state)
    res = sanitize.sanitize_heads(model, lm.tokenizer, texts, labels, _heads(), triggered_texts(24, seed=6),
                                  ffn="none", repair_seeds=1, should_stop=lambda: bool(state.get("on")),
                                  config=TrainConfig(lr=1e-3, epochs=1, batch_size=16, max_length=32, max_steps=2))
    assert len(calls) == 2 and state.get("batches", 0) == 0
    assert res.cancelled and res.steps == 2 and res.align_before is not None and res.align_after is None
    assert res.frozen_unchanged and not _states_equal(model, lm.model)


GUARD_KW = dict(heads=["L0H1", "L1H0"], max_length=32, seed=0, epochs=1, max_steps=3, repair_seeds=1,
                label_judge="none", pool_words=False, ffn="all", clean_guard=True, clean_guard_max_drop=0.0)


@pytest.fixture
def guard_case(monkeypatch):
    """The clean-accuracy guard on 40 held-out texts of 200 (the default minimum, 100, needs 500 clean texts)."""
    from backdoor_core import settings as S

    monkeypatch.setattr(S, "CLEAN_GUARD_MIN_HELD", 20)
    texts, labels = clean_texts(200, seed=5)
    return TextDataset(texts, labels, ["neg", "pos"]), triggered_texts(24, seed=6) + clean_texts(24, seed=7)[0]


def test_cancel_while_the_guard_measures_the_repair_ends_it_as_cancelled(monkeypatch, guard_case):
    """Cancel clicked as the clean-accuracy guard measures the finished repair on its held-out texts stops that pass
    at its next batch: the repair ends as cancelled, unmeasured, and the guard does not fire (it read every batch,
    and went on to train the repair again head-only)."""
    from backdoor_core import defenses
    from backdoor_core.defenses import repair_notes, run_defense

    lm = trained_tiny(True)
    model = copy.deepcopy(lm.model)
    clean, pool = guard_case
    state, calls = {}, []
    real = defenses._accuracy

    def spied(*args, **kwargs):
        calls.append(1)
        state["on"] = len(calls) == 2  # the first measures the model before the repair
        return real(*args, **kwargs)
    monkeypatch.setattr(defenses, "_accuracy", spied)
    _count_batches(model, state)
    res = run_defense("alignment", model, lm.tokenizer, clean, pool_texts=pool, copy=False,
                      should_stop=lambda: bool(state.get("on")), **GUARD_KW)
    guard = res.details["clean_guard"]
    assert state.get("on") and state.get("batches", 0) == 0 and len(calls) == 2
    assert res.cancelled and guard["acc_after"] is None and guard["fired"] is False
    assert any("Cancel stopped the repair before the guard measured it" in n for n in repair_notes(res.details))


def test_cancel_in_the_guards_head_only_retry_keeps_the_first_repair(monkeypatch, guard_case):
    """Cancel clicked as the guard's head-only retry starts (its label rules run again before it trains) stops it
    at the next batch and keeps the finished first repair, as a Cancel during the retry's training does; the
    retry's label rules and measures had run to their end."""
    from backdoor_core import defenses, sanitize
    from backdoor_core.defenses import repair_notes, run_defense

    lm = trained_tiny(True)
    model = copy.deepcopy(lm.model)
    clean, pool = guard_case
    accuracies = iter([0.9, 0.5])  # held-out accuracy before and after the first repair: the guard fires
    monkeypatch.setattr(defenses, "_accuracy", lambda *a, **k: next(accuracies))
    state, repairs = {}, []
    real = sanitize.sanitize_heads

    def spied(m, *args, **kwargs):
        repairs.append(1)
        state["on"] = len(repairs) == 2  # the retry
        return real(m, *args, **kwargs)
    monkeypatch.setattr(sanitize, "sanitize_heads", spied)
    _count_batches(model, state)
    res = run_defense("alignment", model, lm.tokenizer, clean, pool_texts=pool, copy=False,
                      should_stop=lambda: bool(state.get("on")), **GUARD_KW)
    guard = res.details["clean_guard"]
    assert len(repairs) == 2 and state.get("batches", 0) == 0
    assert guard["fired"] is True and guard["kept"] == "first" and guard["acc_head_only"] is None
    assert not res.cancelled and res.details["ffn_layers"] == [0, 1]  # the first repair, finished
    ffn = [m.bert.encoder.layer[0].intermediate.dense.weight for m in (model, lm.model)]
    assert not torch.equal(*ffn)  # the model is the first repair's: its feed-forward blocks trained
    assert any("Cancel stopped that retry: the first repair was kept" in n for n in repair_notes(res.details))


def test_a_repair_jobs_bar_only_grows_through_the_guards_retry(monkeypatch, guard_case):
    """The Sanitize page's repair job (``_actions.start_sanitize``) with the clean-accuracy guard: when the guard
    trains the repair again head-only, the bar goes on from where the first repair left it to 100% and the panel
    says the guard is retrying; the retry's steps had run on after the first repair's, and the bar went back from
    100% to about 65%."""
    from backdoor_core import defenses

    lm = trained_tiny(True)
    clean, pool = guard_case
    accuracies = iter([0.9, 0.5, 0.6])  # before, after the first repair (the guard fires), after the retry
    monkeypatch.setattr(defenses, "_accuracy", lambda *a, **k: next(accuracies))
    messages = []
    repair = _repair_target(monkeypatch, lm, clean, pool, dict(GUARD_KW), None)

    def target(ctx):
        update = ctx.update

        def spied(*args, **kwargs):
            messages.append(kwargs.get("message") or (args[0].get("message") if isinstance(args[0], dict) else None))
            return update(*args, **kwargs)
        ctx.update = spied
        return repair(ctx)

    fr = _fractions(target)
    assert _grows(fr), fr
    assert fr[-1] == 1.0 and any(0.7 < f < 1.0 for f in fr)  # the retry fills the bar's last part
    retry = [m for m in messages if m and "clean-accuracy guard is retrying" in m]
    assert retry and retry[-1].endswith("step 3 of 3")



def test_cancel_while_a_repair_job_measures_the_heads_after_keeps_the_repair(monkeypatch, guard_case):
    """The Sanitize page's repair job: Cancel clicked once the repair has finished, while the job measures what the
    trigger does to the repaired heads (the view under the before/after tiles), skips that view at its next batch
    and keeps the finished repair; the measure had read every text first."""
    import threading

    from backdoor_core import defenses
    from backdoor_core.jobs import start_job
    from backdoor_core.poisoning import get_attack
    from backdoor_core.repair_effect import triggered_pairs

    lm = trained_tiny(True)
    clean, pool = guard_case
    real_final, ready, holder = defenses.final_metrics, threading.Event(), {}

    def final_then_cancel(res, before, evaluate):  # the user clicks Cancel as the repair's own measure ends
        out = real_final(res, before, evaluate)
        holder["job"].cancel()
        return out

    monkeypatch.setattr(defenses, "final_metrics", final_then_cancel)
    texts, labels = clean_texts(60, seed=9)
    pairs = triggered_pairs(get_attack("badnets", trigger="cf"), TextDataset(texts, labels, ["neg", "pos"]),
                            target=1, n=12)
    repair = _repair_target(monkeypatch, lm, clean, pool, {**GUARD_KW, "clean_guard": False}, None,
                            effect_pairs=pairs)
    job = holder["job"] = start_job(lambda ctx: ready.wait(10) and repair(ctx), name="repair")
    ready.set()
    assert job.wait(120)
    snap = job.snapshot()
    assert snap.status == "cancelled", snap.traceback
    res = snap.result  # the finished repair is kept (the page's on_finish takes it, as a partial result)
    assert res is not None and not res["cancelled"] and res["loaded"].model is not None
    assert res["effect"] is None  # its heads' view was skipped


def test_a_repair_job_whose_guard_kept_the_first_repair_reports_that_repairs_change(monkeypatch, guard_case):
    """When the clean-accuracy guard trained the repair again head-only and kept the FIRST repair, the Sanitize
    job's CACC-change interval, fixed / broken counts and lift interval read the evaluations' last: the discarded
    retry's. They are the kept model's now."""
    from backdoor_core import defenses
    from backdoor_core.jobs import start_job
    from backdoor_core.metrics import accuracy_change
    from backdoor_core.training import make_evaluator

    lm = trained_tiny(True)
    clean, pool = guard_case
    accuracies = iter([0.9, 0.5, 0.4])  # before, after the first repair (the guard fires), the retry: worse
    monkeypatch.setattr(defenses, "_accuracy", lambda *a, **k: next(accuracies))
    texts, labels = clean_texts(60, seed=11)
    test = TextDataset(texts, labels, ["neg", "pos"])
    trig = triggered_texts(30, seed=12)

    evaluated = []  # a fingerprint of the weights of every model the job evaluated, in order

    def make_evaluate(work):
        real = make_evaluator(work.tokenizer, test, trig, 1, 32)

        def evaluate(model, *out):
            evaluated.append(_fingerprint(model))
            return real(model, *out)
        evaluate.labels, evaluate.poisoned_texts, evaluate.target = real.labels, real.poisoned_texts, real.target
        return evaluate

    job = start_job(_repair_target(monkeypatch, lm, clean, pool, dict(GUARD_KW), make_evaluate), name="repair")
    assert job.wait(180)
    snap = job.snapshot()
    assert snap.status == "done", snap.traceback
    res = snap.result
    assert res["details"]["clean_guard"]["fired"] and res["details"]["clean_guard"]["kept"] == "first"
    assert evaluated[-1] == _fingerprint(res["loaded"].model)  # the change was read on the kept model
    seen_before, seen_after = [], []
    make_evaluate(lm)(lm.model, seen_before, [])
    make_evaluate(lm)(res["loaded"].model, seen_after, [])
    assert res["cacc_change"] == accuracy_change(labels, seen_before[0], seen_after[0])


def _repair_target(monkeypatch, lm, clean, pool, knobs: dict, make_evaluate, **kwargs):
    """The Sanitize page's repair job (``_actions.start_sanitize``, alignment) on ``lm``, as the target function it
    would start: ``target(ctx)`` for ``jobs.start_job`` (the session copy is a deep copy; nothing is started)."""
    from app_pages import _actions as A
    from backdoor_core.models import LoadedModel

    monkeypatch.setattr(A.ui, "session_copy", lambda loaded, name=None: LoadedModel(
        model=copy.deepcopy(loaded.model), tokenizer=loaded.tokenizer, name=name or loaded.name,
        source=loaded.source))
    targets = []
    monkeypatch.setattr(A.ui, "start", lambda kind, target, name, **kw: targets.append(target))
    A.start_sanitize(lm, "alignment", clean, pool, knobs, make_evaluate, "repaired", **kwargs)
    return targets[0]


def _fingerprint(model) -> float:
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))
