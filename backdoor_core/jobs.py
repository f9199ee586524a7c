"""A background worker for long jobs (training, zoo build, scans, sanitization) that never calls Streamlit.

The app starts a job, keeps the ``Job`` in its session state, and polls ``job.snapshot()`` from a fragment
that reruns every second or so to draw progress bars and live charts; a Cancel button calls ``job.cancel()``.

    job = start_job(
        lambda ctx: train(model, tok, examples, config, callback=ctx.update, should_stop=ctx.should_stop),
        name="Train BadNets",
    )
    ...
    snap = job.snapshot()          # thread-safe copy: status, fraction, message, events, result, error
    job.cancel()                   # sets the threading.Event behind ctx.should_stop()

The target gets a ``JobContext``:

* ``ctx.should_stop()`` — True once ``cancel()`` was called; pass it as the core's ``should_stop=``;
* ``ctx.update(event)`` — pass it as the core's ``callback=``/``progress=``. ``event`` may be a dataclass
  (e.g. ``training.Progress``: ``step``/``total_steps`` give the fraction), a dict (``fraction`` or
  ``done``/``total`` or ``step``/``total_steps``, optional ``message``; an explicit ``fraction`` wins), a number in [0, 1], or a string
  (a message); ``ctx.update(stage, done, total)`` works too. Every event is kept (as a dict, up to ``max_events``) for live charts.
* ``ctx.stop_event`` — the ``threading.Event`` itself.

A server that runs jobs for many users at once (a class on one machine) passes ``slots=JobSlots(n)``: at most ``n`` of
those jobs run together, the others stay ``pending`` in the order they came, their ``message`` saying how many jobs
are ahead ("waiting for a free slot: 3 jobs ahead of it…"); a cancel while waiting ends the job as ``cancelled``.

Status: ``pending`` → ``running`` → ``done`` | ``cancelled`` | ``failed``. A job that was asked to stop and
returns normally is ``cancelled`` and keeps its result (a cancelled training run returns what it has); a
target that raises ``JobCancelled`` is ``cancelled`` with no result; any other exception makes it
``failed`` with ``error`` (the exception) and ``traceback`` (text, for logs — pages show ``error_message``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback as _tb
import uuid
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Job", "JobCancelled", "JobContext", "JobSlots", "JobSnapshot", "start_job", "event_fraction", "ACTIVE",
           "FINISHED"]

ACTIVE = ("pending", "running")
FINISHED = ("done", "cancelled", "failed")


class JobCancelled(Exception):
    """Raise inside a job target to end it as cancelled (no result)."""


def _as_dict(event: Any) -> dict:
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        return dataclasses.asdict(event)
    if isinstance(event, dict):
        return dict(event)
    if isinstance(event, (int, float)) and not isinstance(event, bool):
        return {"fraction": float(event)}
    if isinstance(event, str):
        return {"message": event}
    if hasattr(event, "__dict__"):
        return {k: v for k, v in vars(event).items() if not k.startswith("_")}
    return {"value": event}


def event_fraction(event: dict) -> float | None:
    """The fraction done that an event describes, or None. An explicit ``fraction`` wins over the counts (a
    stage's ``done``/``total`` is that stage's, not the job's); ``fraction: None`` leaves the bar where it was."""
    if "fraction" in event:
        f = event["fraction"]
        return max(0.0, min(1.0, float(f))) if isinstance(f, (int, float)) and not isinstance(f, bool) else None
    for num, den in (("step", "total_steps"), ("done", "total"), ("current", "total"), ("step", "total")):
        n, d = event.get(num), event.get(den)
        if isinstance(n, (int, float)) and isinstance(d, (int, float)) and d > 0:
            return max(0.0, min(1.0, float(n) / float(d)))
    return None


@dataclass(frozen=True)
class JobSnapshot:
    """An immutable copy of a job's state at one moment (safe to read while the job runs)."""

    id: str
    name: str
    status: str
    fraction: float | None
    message: str
    events: tuple[dict, ...]
    result: Any
    error: BaseException | None
    traceback: str
    started: float | None
    finished: float | None
    cancel_requested: bool

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def finished_ok(self) -> bool:
        return self.status == "done"

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    @property
    def error_message(self) -> str:
        if self.error is None:
            return ""
        text = str(self.error).strip()
        return text or type(self.error).__name__

    @property
    def last_event(self) -> dict | None:
        return self.events[-1] if self.events else None


class JobContext:
    """What a job target receives: ``update`` (progress callback), ``should_stop``, ``stop_event``."""

    def __init__(self, job: "Job"):
        self._job = job
        self.stop_event = job._stop

    def should_stop(self) -> bool:
        return self._job._stop.is_set()

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Record a progress event (see the module docstring for what it may be).

        Besides one event object, positional forms used by the core's callbacks are understood:
        ``update(stage, done, total)`` (``scan``), ``update(done, total)`` and ``update(message, fraction)``.
        """
        if len(args) == 1:
            data = _as_dict(args[0]) if args[0] is not None else {}
        elif args:
            texts = [a for a in args if isinstance(a, str)]
            nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
            data = {}
            if texts:
                data["stage"] = texts[0]
                data["message"] = " ".join(texts)
            if len(nums) >= 2:
                data["done"], data["total"] = nums[0], nums[1]
            elif len(nums) == 1:
                data["fraction"] = nums[0]
            others = [a for a in args if not isinstance(a, (str, int, float)) or isinstance(a, bool)]
            for other in others:
                data.update(_as_dict(other))
        else:
            data = {}
        data.update(kwargs)
        self._job._record(data)

    # aliases, so the context itself can be passed where the core expects a callable
    __call__ = update


class JobSlots:
    """At most ``limit`` jobs run at once; the others wait in the order they were started (``start_job(slots=)``).

    Every waiting job's message says how many jobs run or wait before it; it rereads the queue every
    ``poll`` s and at once when a slot frees."""

    def __init__(self, limit: int, poll: float = 0.5):
        if int(limit) < 1:
            raise ValueError(f"limit must be at least 1, got {limit}.")
        self.limit = int(limit)
        self._poll = float(poll)
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: list[Job] = []

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def acquire(self, job: "Job") -> bool:
        """Wait for a free slot for ``job``: True once it has one, False when it was cancelled while waiting."""
        with self._cond:
            self._waiting.append(job)
            try:
                while True:
                    if job._stop.is_set():
                        return False
                    ahead = self._waiting.index(job)
                    if ahead == 0 and self._running < self.limit:
                        self._running += 1
                        return True
                    n = self._running + ahead
                    job._set_message(f"waiting for a free slot: {n} job{'s' if n != 1 else ''} ahead of it "
                                     f"(this server runs {self.limit} at once)")
                    self._cond.wait(self._poll)
            finally:
                self._waiting.remove(job)
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()


class Job:
    """One background job; create with ``start_job``."""

    def __init__(self, target: Callable[[JobContext], Any], name: str = "job", max_events: int = 5000,
                 meta: dict | None = None, slots: JobSlots | None = None):
        self.id = uuid.uuid4().hex[:12]
        self.name = name
        self.meta = dict(meta or {})  # free-form: what the page needs to remember about this job
        self._target = target
        self._slots = slots
        self._max_events = max_events
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._status = "pending"
        self._fraction: float | None = None
        self._message = ""
        self._events: list[dict] = []
        self._dropped = 0
        self._result: Any = None
        self._error: BaseException | None = None
        self._traceback = ""
        self._started: float | None = None
        self._finished: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"backdoor-job-{self.id}", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> "Job":
        with self._lock:
            if self._status != "pending":
                raise RuntimeError(f"job {self.name!r} was already started")
            self._status = "running" if self._slots is None else "pending"  # pending: waits for a slot
            self._started = time.time()
        self._thread.start()
        return self

    def _run(self) -> None:
        if self._slots is not None:
            if not self._slots.acquire(self):
                self._finish("cancelled", None, None, "")
                return
            with self._lock:
                self._status, self._message = "running", ""
            try:
                self._run_target()
            finally:
                self._slots.release()
        else:
            self._run_target()

    def _run_target(self) -> None:
        ctx = JobContext(self)
        try:
            result = self._target(ctx)
        except JobCancelled:
            self._finish("cancelled", None, None, "")
        except BaseException as exc:  # noqa: BLE001 - everything is reported to the page, nothing escapes
            self._finish("failed", None, exc, _tb.format_exc())
        else:
            self._finish("cancelled" if self._stop.is_set() else "done", result, None, "")

    def _finish(self, status: str, result: Any, error: BaseException | None, tb: str) -> None:
        with self._lock:
            self._status = status
            self._result = result
            self._error = error
            self._traceback = tb
            self._finished = time.time()
            if status == "done":
                self._fraction = 1.0
        self._done.set()

    def _record(self, data: dict) -> None:
        frac = event_fraction(data)
        with self._lock:
            self._events.append(data)
            if len(self._events) > self._max_events:  # keep the first and the most recent events
                del self._events[1 : 1 + len(self._events) - self._max_events]
                self._dropped += 1
            if frac is not None:
                self._fraction = frac
            if data.get("message"):
                self._message = str(data["message"])

    def _set_message(self, message: str) -> None:
        with self._lock:
            self._message = message

    # -- control ------------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the job to stop (it stops at its next ``should_stop()`` check)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job finished (True) or ``timeout`` passed (False). For tests and the CLI."""
        return self._done.wait(timeout)

    # -- reading ------------------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        with self._lock:
            return self._status

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def result(self) -> Any:
        with self._lock:
            return self._result

    @property
    def error(self) -> BaseException | None:
        with self._lock:
            return self._error

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return JobSnapshot(
                id=self.id,
                name=self.name,
                status=self._status,
                fraction=self._fraction,
                message=self._message,
                events=tuple(self._events),
                result=self._result,
                error=self._error,
                traceback=self._traceback,
                started=self._started,
                finished=self._finished,
                cancel_requested=self._stop.is_set(),
            )

    def __repr__(self) -> str:
        return f"Job({self.name!r}, status={self.status!r})"


def start_job(target: Callable[[JobContext], Any], name: str = "job", *, meta: dict | None = None,
              max_events: int = 5000, slots: JobSlots | None = None) -> Job:
    """Run ``target(ctx)`` in a daemon thread and return its ``Job`` at once; with ``slots``, once one is free."""
    return Job(target, name=name, max_events=max_events, meta=meta, slots=slots).start()
