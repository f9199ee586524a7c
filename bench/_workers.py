"""A process pool for the benchmarks that Ctrl-C stops: ``with worker_pool(n) as pool: ...``.

``ProcessPoolExecutor``'s own ``with`` block waits, on the way out of an exception, for every task still queued: a
Ctrl-C ended the loop that writes the results but the workers went on through the whole queue (hours of models
trained and thrown away), the terminal apparently hung. Here an exception (Ctrl-C, a failed task) cancels the queued
tasks and leaves at once; a task already running ends with the Ctrl-C its worker got too (or runs out alone)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager


@contextmanager
def worker_pool(*args, **kwargs) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor(*args, **kwargs)`` that is shut down without waiting for its queue when the block
    raises, and waited for (as usual) when it ends normally."""
    pool = ProcessPoolExecutor(*args, **kwargs)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
