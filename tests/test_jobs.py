"""The background worker: progress, result, exceptions, cancel — and a real 2-step training run."""

from __future__ import annotations

import threading
import time

import pytest

from backdoor_core.jobs import JobCancelled, event_fraction, start_job


def test_result_and_progress():
    def target(ctx):
        for i in range(4):
            ctx.update({"done": i + 1, "total": 4, "message": f"part {i + 1}"})
        return "ok"

    job = start_job(target, name="count")
    assert job.wait(5)
    snap = job.snapshot()
    assert snap.status == "done" and snap.result == "ok" and snap.fraction == 1.0
    assert snap.message == "part 4" and len(snap.events) == 4 and not snap.active
    assert snap.elapsed >= 0 and snap.error is None


def test_exception_is_captured_not_raised():
    def target(ctx):
        ctx.update(0.5)
        raise ValueError("bad input text")

    job = start_job(target)
    assert job.wait(5)
    snap = job.snapshot()
    assert snap.status == "failed" and snap.error_message == "bad input text"
    assert "ValueError" in snap.traceback and snap.fraction == 0.5 and snap.result is None


def test_cancel_keeps_partial_result():
    started = threading.Event()

    def target(ctx):
        n = 0
        started.set()
        while not ctx.should_stop():
            n += 1
            ctx.update({"step": n, "total_steps": 10**9})
            time.sleep(0.005)
        return n

    job = start_job(target)
    started.wait(5)
    assert job.active
    job.cancel()
    assert job.wait(5)
    snap = job.snapshot()
    assert snap.status == "cancelled" and snap.cancel_requested and snap.result >= 1


def test_job_cancelled_exception():
    job = start_job(lambda ctx: (_ for _ in ()).throw(JobCancelled()))
    assert job.wait(5) and job.status == "cancelled" and job.result is None


def test_event_forms_and_fraction():
    assert event_fraction({"step": 3, "total_steps": 6}) == 0.5
    assert event_fraction({"done": 1, "total": 4}) == 0.25
    assert event_fraction({"fraction": 2.0}) == 1.0
    assert event_fraction({"message": "x"}) is None

    def target(ctx):
        ctx.update("loading")
        ctx("bare call")  # the context itself is a callable
        ctx.update("heads", 3, 4)  # scan-style progress(stage, done, total)
        ctx.update(step=1, total_steps=2)

    job = start_job(target)
    job.wait(5)
    snap = job.snapshot()
    assert [e.get("message") for e in snap.events[:2]] == ["loading", "bare call"] and snap.fraction == 1.0
    assert snap.events[2] == {"stage": "heads", "message": "heads", "done": 3, "total": 4}
    assert snap.message == "heads"


def test_events_are_bounded():
    job = start_job(lambda ctx: [ctx.update(i / 100) for i in range(100)], max_events=10)
    job.wait(5)
    events = job.snapshot().events
    assert len(events) == 10 and events[0]["fraction"] == 0.0 and events[-1]["fraction"] == 0.99


def test_cannot_start_twice():
    job = start_job(lambda ctx: None)
    job.wait(5)
    with pytest.raises(RuntimeError):
        job.start()


def test_real_training_run_reports_progress_and_cancels(tiny):
    from backdoor_core.training import Example, TrainConfig, train

    examples = [Example(text=f"sample {i} text", label=i % 2) for i in range(8)]
    config = TrainConfig(epochs=1, batch_size=4, max_length=16, eval_every=1)
    job = start_job(
        lambda ctx: train(tiny.model, tiny.tokenizer, examples, config, callback=ctx.update,
                          evaluate=lambda m: {"cacc": 0.5}, should_stop=ctx.should_stop),
        name="train",
    )
    assert job.wait(120)
    snap = job.snapshot()
    assert snap.status == "done", snap.traceback
    assert snap.result.steps == 2 and snap.fraction == 1.0
    assert any(e.get("metrics") for e in snap.events) and all("losses" in e for e in snap.events)

    job = start_job(lambda ctx: (ctx.stop_event.set(), train(tiny.model, tiny.tokenizer, examples, config,
                                                              should_stop=ctx.should_stop))[1])
    assert job.wait(60)
    assert job.status == "cancelled" and job.result.cancelled and job.result.steps == 0


def test_a_forward_pass_stopped_by_the_job_ends_it_as_cancelled_not_failed():
    """The app's scan and sanitization stop inside ``forward.run_with_cache`` (``forward.Cancelled``): the job is
    cancelled, with no traceback, as a target that raises ``JobCancelled`` is."""
    from backdoor_core.forward import Cancelled, run_with_cache
    from backdoor_core.models import tiny_model

    lm = tiny_model(num_labels=2, seed=0)
    started = threading.Event()

    def target(ctx):
        def stop():
            started.set()
            return ctx.should_stop()

        while True:  # forward passes until the page asks the job to stop
            run_with_cache(lm.model, lm.tokenizer, ["a text"] * 4, max_length=16, batch_size=2, should_stop=stop)

    job = start_job(target)
    assert started.wait(30)
    job.cancel()
    assert job.wait(30)
    snap = job.snapshot()
    assert snap.status == "cancelled" and snap.result is None and snap.error is None and not snap.traceback
    assert issubclass(Cancelled, RuntimeError)  # code that catches the forward pass's error still does
