"""Where runs execute: the :class:`Worker` interface and the in-process worker.

The API only ever calls ``open``, ``submit``, ``cancel``, ``join``, ``stream``, ``active``,
``depth`` and ``close``, so :class:`~tierflow.server.queue.QueuedWorker` (runs on
``tierflow worker`` processes through a DBOS queue) replaces :class:`InProcessWorker`
without touching the routes.

The in-process worker runs each run as an asyncio task of the server's event loop. Runs
of one thread execute one at a time, in the order they were submitted (that is what the
``enqueue`` strategy relies on); at most ``max_concurrency`` runs execute at once over all
threads, and at most ``max_queue`` are pending or running (``QueueFull`` past it, which
the API answers with 429 and ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tierflow.server.stream import RunStream

log = logging.getLogger("tierflow.server")


class CancelMarks(Protocol):
    """The store's view of runs cancelled by another server process."""

    async def cancelled_among(self, run_ids: Sequence[str]) -> list[str]: ...


class QueueFull(Exception):
    """The worker holds ``max_queue`` runs already."""


@dataclass
class RunJob:
    """One run to execute: ``run`` does the work (and marks the run's status, including
    when it is cancelled mid-way); ``cancelled`` marks a run cancelled before it started."""

    run_id: str
    thread_id: str
    run: Callable[[RunStream], Awaitable[None]]
    cancelled: Callable[[], Awaitable[None]]
    stream: RunStream = field(default_factory=RunStream)
    #: The interrupt strategy cancelled the thread's runs for this one (see execution).
    after_interrupt: bool = False


class Worker(Protocol):
    """What the API needs of a worker."""

    @property
    def depth(self) -> int:
        """Runs pending or running."""

    async def open(self) -> None:
        """Get ready (the server's lifespan calls it once, before any request)."""

    def submit(self, job: RunJob) -> None:
        """Queue ``job`` after the thread's earlier runs; ``QueueFull`` past the limit."""

    def active(self, thread_id: str) -> list[str]:
        """Run ids pending or running on ``thread_id``, oldest first."""

    def stream(self, run_id: str) -> RunStream | None:
        """The run's events (None once forgotten, or never seen by this worker)."""

    async def cancel(self, run_id: str, *, wait: bool = False) -> bool:
        """Cancel a pending or running run; False if it is not active."""

    async def join(self, run_id: str) -> None:
        """Return when the run has finished (at once if it is not active)."""

    async def close(self) -> None:
        """Cancel what is still active (its runs keep their checkpoints)."""


class InProcessWorker:
    """Runs as asyncio tasks in this process (see the module docstring)."""

    KEEP_STREAMS = 256  # finished runs whose events stay available to join_stream

    WATCH_S = 0.5  # how often the store is asked which running runs another server cancelled

    def __init__(
        self, *, max_queue: int, max_concurrency: int, store: CancelMarks | None = None
    ) -> None:
        self.max_queue = max_queue
        self._store = store
        self._watch: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._by_thread: dict[str, list[str]] = {}
        self._streams: OrderedDict[str, RunStream] = OrderedDict()

    @property
    def depth(self) -> int:
        return len(self._tasks)

    async def open(self) -> None:
        if self._store is not None:
            self._watch = asyncio.create_task(self._watch_marks(self._store), name="run-marks")

    async def _watch_marks(self, store: CancelMarks) -> None:
        """Cancel the runs that another server process marked ``interrupted`` (its
        ``interrupt`` strategy on a thread whose run executes here)."""
        while True:
            await asyncio.sleep(self.WATCH_S)
            if not self._tasks:
                continue
            try:
                marked = await store.cancelled_among(list(self._tasks))
            except Exception:  # a busy or unreachable store: ask again at the next tick
                log.warning("could not read cancelled runs", exc_info=True)
                continue
            for run_id in marked:
                task = self._tasks.get(run_id)
                if task is not None:
                    task.cancel()

    def submit(self, job: RunJob) -> None:
        if len(self._tasks) >= self.max_queue:
            raise QueueFull(f"{len(self._tasks)} runs are pending or running")
        before = [self._tasks[r] for r in self._by_thread.get(job.thread_id, [])]
        self._by_thread.setdefault(job.thread_id, []).append(job.run_id)
        self._streams[job.run_id] = job.stream
        while len(self._streams) > self.KEEP_STREAMS + len(self._tasks):
            self._streams.popitem(last=False)
        self._tasks[job.run_id] = asyncio.create_task(
            self._drive(job, before), name=f"run-{job.run_id}"
        )

    async def _drive(self, job: RunJob, before: list[asyncio.Task[None]]) -> None:
        started = False
        try:
            if before:  # the thread's earlier runs first, whatever their outcome
                await asyncio.wait(before)
            async with self._slots:
                started = True
                await job.run(job.stream)
        except asyncio.CancelledError:
            if not started:
                await job.cancelled()
                await job.stream.close()
            raise
        except Exception:  # the run's own bookkeeping failed (the store closed at shutdown)
            log.exception("run %s failed outside the graph", job.run_id)
            await job.stream.close()
        finally:
            self._tasks.pop(job.run_id, None)
            runs = self._by_thread.get(job.thread_id, [])
            with contextlib.suppress(ValueError):
                runs.remove(job.run_id)
            if not runs:
                self._by_thread.pop(job.thread_id, None)

    def active(self, thread_id: str) -> list[str]:
        return list(self._by_thread.get(thread_id, []))

    def stream(self, run_id: str) -> RunStream | None:
        return self._streams.get(run_id)

    async def cancel(self, run_id: str, *, wait: bool = False) -> bool:
        task = self._tasks.get(run_id)
        if task is None:
            return False
        task.cancel()
        if wait:
            await self.join(run_id)
        return True

    async def join(self, run_id: str) -> None:
        task = self._tasks.get(run_id)
        if task is not None:
            await asyncio.wait([task])

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
