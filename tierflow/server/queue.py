"""Runs executed by ``tierflow worker`` processes: the API side of the DBOS queue.

``[server] worker = "dbos"`` (or ``tierflow serve --worker-engine dbos``) makes the API
enqueue each run as a DBOS workflow (id = the run id) on one queue, partitioned by thread
(``partition_concurrency=1``: one run at a time per thread, in submission order, which
the ``enqueue`` strategy relies on). Worker processes (``executor.py``) dequeue and
execute them and write each run's status, record and events to the server's store; this
side only reads the store back:

- ``join`` and ``GET run`` poll the run's status in the store;
- ``stream`` tails the run's stored events into a :class:`RunStream`, so a client
  (re)joins a run's stream from its first event, or after ``Last-Event-ID``, and the
  stream ends when the run does, whichever process executed it;
- ``active`` and ``depth`` count the runs this API process submitted (and the unfinished
  runs it found at start) until the store says they ended;
- ``cancel`` cancels the DBOS workflow: a run not started yet is marked interrupted here,
  a running one is stopped by its worker, which watches for cancelled workflows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tierflow.server.metrics import ServerMetrics
from tierflow.server.store import FINAL, Store
from tierflow.server.stream import RunStream
from tierflow.server.worker import QueueFull, RunJob
from tierflow.settings import TierflowSettings

log = logging.getLogger("tierflow.server")

APP = "tierflow"
QUEUE = "tierflow-runs"
WORKFLOW = "tierflow.run"
POLL_S = 0.1  # how often the API reads a remote run's status and events


def queue_url(settings: TierflowSettings) -> str:
    """The DBOS system database: ``[server] queue_url``, else the PostgreSQL database of
    ``[state] database_url`` (one database for a cluster), else SQLite in the state dir
    (shared by every process on this machine)."""
    return (
        settings.server.queue_url
        or settings.state.url
        or f"sqlite:///{settings.state_dir / 'queue.sqlite'}"
    )


def queue_options(settings: TierflowSettings) -> dict[str, Any]:
    """The queue's configuration, the same from the API and from every worker."""
    return {
        "worker_concurrency": settings.server.max_concurrency,
        "partition_concurrency": 1,
        "polling_interval_sec": 0.2,
    }


class QueuedWorker:
    """The :class:`~tierflow.server.worker.Worker` of the API over the DBOS queue (see the
    module docstring)."""

    KEEP_STREAMS = 256

    def __init__(
        self, settings: TierflowSettings, store: Store, metrics: ServerMetrics | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics  # counts the runs this API saw end
        self.max_queue = settings.server.max_queue
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tierflow-enqueue")  # FIFO
        self._client: Any = None
        self._active: dict[str, str] = {}  # run id -> thread id
        self._enqueued: dict[str, asyncio.Future[None]] = {}
        self._streams: OrderedDict[str, RunStream] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect to the queue and take over the unfinished runs of the store (a worker
        may be executing them)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._connect)
        for run in await self.store.unfinished_runs():
            self._active[run.run_id] = run.thread_id
        self._ensure_watch()

    def _connect(self) -> None:
        from dbos import DBOSClient

        self._client = DBOSClient(system_database_url=queue_url(self.settings))
        # A client never creates DBOS's tables; the API may start before any worker.
        # (Idempotent: every DBOS launch runs the same migrations.)
        self._client._sys_db.run_migrations()
        self._client.register_queue(
            QUEUE, on_conflict="always_update", **queue_options(self.settings)
        )

    @property
    def depth(self) -> int:
        return len(self._active)

    def submit(self, job: RunJob) -> None:
        if len(self._active) >= self.max_queue:
            raise QueueFull(f"{len(self._active)} runs are pending or running")
        self._active[job.run_id] = job.thread_id
        loop = asyncio.get_running_loop()
        self._enqueued[job.run_id] = loop.run_in_executor(
            self._pool, self._enqueue, job.run_id, job.thread_id, job.after_interrupt
        )
        self._ensure_watch()

    def _enqueue(self, run_id: str, thread_id: str, after_interrupt: bool) -> None:
        options: Any = {
            "workflow_name": WORKFLOW,
            "queue_name": QUEUE,
            "workflow_id": run_id,
            "queue_partition_key": thread_id,
        }
        self._client.enqueue(options, run_id, after_interrupt)

    def _ensure_watch(self) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_runs(), name="tierflow-queue-watch")

    async def _watch_runs(self) -> None:
        """Forget runs the store says ended; a run whose enqueue failed ends in error."""
        while self._active:
            for run_id in list(self._active):
                sent = self._enqueued.get(run_id)
                if sent is not None and sent.done():
                    self._enqueued.pop(run_id)
                    if sent.exception() is not None:
                        log.error("run %s could not be enqueued: %s", run_id, sent.exception())
                        await self.store.set_run_status(
                            run_id, "error", error=f"enqueue failed: {sent.exception()}"
                        )
                status = await self.store.run_status(run_id)
                if status is None or status in FINAL:
                    self._active.pop(run_id, None)
                    await self._count(run_id)
            await asyncio.sleep(POLL_S)

    async def _count(self, run_id: str) -> None:
        """The ended run in the API's metrics (duration: creation to the last update)."""
        run = await self.store.find_run(run_id)
        if run is not None and self.metrics is not None:
            seconds = run.updated_at - run.created_at
            self.metrics.run_finished_elsewhere(run.status, seconds, run.record)

    def active(self, thread_id: str) -> list[str]:
        return [r for r, t in self._active.items() if t == thread_id]

    def stream(self, run_id: str) -> RunStream | None:
        stream = self._streams.get(run_id)
        if stream is None:
            stream = self._streams[run_id] = RunStream()
            task = asyncio.create_task(self._tail(run_id, stream), name=f"tail-{run_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            while len(self._streams) > self.KEEP_STREAMS + len(self._active):
                self._streams.popitem(last=False)
        return stream

    async def _tail(self, run_id: str, stream: RunStream) -> None:
        """Copy the run's stored events into ``stream`` until the run has ended."""
        seen = 0
        try:
            while True:
                status = await self.store.run_status(run_id)
                for row_id, event, data in await self.store.events_after(run_id, seen):
                    seen = row_id
                    await stream.publish(event, data)
                if status is None or status in FINAL:  # read before the last events
                    return
                await asyncio.sleep(POLL_S)
        finally:
            await stream.close()

    async def cancel(self, run_id: str, *, wait: bool = False) -> bool:
        status = await self.store.run_status(run_id)
        if status not in ("pending", "running"):
            return False
        sent = self._enqueued.get(run_id)
        if sent is not None:
            await sent
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._client.cancel_workflow, run_id)
        await self.store.cancel_pending(run_id)  # no worker will start it now
        if wait:
            await self.join(run_id)
        return True

    async def join(self, run_id: str) -> None:
        while True:
            status = await self.store.run_status(run_id)
            if status is None or status in FINAL:
                return
            await asyncio.sleep(POLL_S)

    async def close(self) -> None:
        """Stop following; the runs go on in their workers."""
        for task in [*self._tasks, *([self._watch] if self._watch else [])]:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._pool.shutdown(wait=True)  # what was submitted is enqueued
        if self._client is not None:
            self._client.destroy()
