"""A worker process (``tierflow worker``): executes the runs the API put on the DBOS queue.

Each worker is a DBOS executor with its own id. It dequeues runs (at most
``[server] max_concurrency`` at once, one at a time per thread), and executes each with
the server's own code (``execution.execute``) on the same Runner: the same settings,
graphs and checkpointer (SQLite in the state dir on one machine). Each run's status,
record and events go to the server's store, where the API reads them.

Hand-over (what DBOS gives, and the one piece it leaves to us): a workflow that a dead
executor left ``PENDING`` is re-enqueued by ``recover_pending_workflows([dead id])``, and
the queue's atomic dequeue admits exactly one new runner. DBOS without its hosted
Conductor does not tell who is dead, so each worker writes a heartbeat row
(``tierflow_workers``, in the queue's database); a worker that finds a peer silent for
``[server] worker_lease_s`` deletes its row (one statement: exactly one finder wins) and
recovers its workflows. The run then starts again on some worker with ``attempt`` 2: the
thread's last LangGraph checkpoint is continued, so a tool call that had completed is not
repeated (``durability="sync"``: each step is committed before the next starts).

Shutdown (SIGTERM or SIGINT): the worker stops dequeuing, lets its runs finish for up to
``[server] drain_s``, then exits; runs still going are handed over by the lease as for a
killed worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tierflow.runner import Runner
from tierflow.server.app import open_store
from tierflow.server.execution import execute, run_body
from tierflow.server.metrics import ServerMetrics
from tierflow.server.queue import APP, QUEUE, WORKFLOW, queue_options, queue_url
from tierflow.server.store import FINAL, Store
from tierflow.server.wire import resolved

log = logging.getLogger("tierflow.worker")

_BEATS = """CREATE TABLE IF NOT EXISTS tierflow_workers (
    executor_id VARCHAR(200) PRIMARY KEY, beat DOUBLE PRECISION NOT NULL)"""


@dataclass
class _Host:
    """What ``execute`` needs of a server, in a worker process."""

    runner: Runner
    store: Store
    metrics: ServerMetrics = field(default_factory=lambda: ServerMetrics(lambda: 0))


class StoredEvents:
    """A run's events, written to the store for the API to tail (``execution.Sink``)."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id

    async def publish(self, event: str, data: Any) -> None:
        await self.store.add_event(self.run_id, event, resolved(data))

    async def close(self) -> None:
        return None  # the run's final status tells the API the stream ended


def default_executor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def run_worker(
    runner: Runner, *, executor_id: str | None = None, exit_with_parent: bool = False
) -> None:
    """Execute queued runs until SIGTERM/SIGINT, or until the parent process is gone with
    ``exit_with_parent`` (a worker ``tierflow serve --workers`` started); see the module
    docstring."""
    worker = _Worker(runner, executor_id or default_executor_id())
    worker.parent = os.getppid() if exit_with_parent else None
    asyncio.run(worker.main())


class _Worker:
    def __init__(self, runner: Runner, executor_id: str) -> None:
        self.parent: int | None = None  # stop when reparented away from this pid
        self.runner = runner
        self.settings = runner.settings
        self.executor_id = executor_id
        self.local: dict[str, asyncio.Task[None]] = {}
        self._store: Store | None = None
        self.stopping = asyncio.Event()
        self.draining = False
        # Our own threads for blocking calls: DBOS makes its pool this loop's default
        # executor and shuts it down in DBOS.destroy, before we are done.
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="tierflow-worker")

    async def off(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on one of our threads."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    @property
    def store(self) -> Store:
        assert self._store is not None, "the worker's store is opened in main()"
        return self._store

    async def main(self) -> None:
        async with open_store(self.settings) as store:  # SQLite or PostgreSQL, as the API's
            self._store = store
            await self._serve()

    async def _serve(self) -> None:
        from dbos import DBOS

        async with self.runner:
            host = _Host(self.runner, self.store)
            worker = self

            async def tierflow_run(run_id: str, after_interrupt: bool) -> str:
                return await worker.execute(host, run_id, after_interrupt)

            DBOS(
                config={
                    "name": APP,
                    "system_database_url": queue_url(self.settings),
                    "executor_id": self.executor_id,
                }
            )
            DBOS.workflow(name=WORKFLOW)(tierflow_run)
            beats = _Beats(queue_url(self.settings), self.executor_id)
            await self.off(beats.beat)  # alive before the first dequeue
            DBOS.launch()  # adopts this loop: the workflows run here, next to the Runner
            await DBOS.register_queue_async(
                QUEUE, on_conflict="always_update", **queue_options(self.settings)
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
            print(f"worker {self.executor_id} ready", flush=True)
            watch = asyncio.create_task(self._watch(beats))
            await self.stopping.wait()
            # Keep beating while draining, or a peer would take over runs still going here.
            self.draining = True
            drain = int(self.settings.server.drain_s)
            # Exit by the drain deadline plus a margin whatever below hangs (a shutdown step
            # waiting on a tool's thread was seen): a run still going is handed over by the
            # lease, as after kill -9, so a forced exit loses nothing.
            deadline = threading.Timer(drain + 5, os._exit, args=(0,))
            deadline.daemon = True
            deadline.start()
            # DBOS.destroy shuts down the executor it made this loop's default before it
            # waits for the workflows: the runs draining here would lose asyncio.to_thread
            # (their thread lease's renewal failed, the run errored and was never handed
            # back; test_sigterm_drains failed about 1 run in 3). Give them a pool of ours.
            loop.set_default_executor(ThreadPoolExecutor(4, thread_name_prefix="tierflow-drain"))
            # Taken before the drain: a workflow call that ends during it leaves self.local
            # while its shielded run task may still be going.
            in_flight = list(self.local.values())
            await self.off(DBOS.destroy, workflow_completion_timeout_sec=drain)
            watch.cancel()
            unfinished = [task for task in in_flight if not task.done()]
            if unfinished:  # not drained: a peer continues them once our lease runs out
                log.warning("%d run(s) handed back to the queue", len(unfinished))
                os._exit(0)  # not asyncio.run's exit, which would wait for their tool threads
            await self.off(beats.leave)

    async def execute(self, host: _Host, run_id: str, after_interrupt: bool) -> str:
        run = await self.store.find_run(run_id)
        if run is None or run.status in FINAL:
            return run.status if run else "missing"
        earlier = await self.store.events_after(run_id, 0)
        attempt = 1 + sum(1 for _, event, _ in earlier if event == "metadata")
        task = asyncio.create_task(
            execute(
                host,
                run,
                run_body(run),
                StoredEvents(self.store, run_id),
                after_interrupt=after_interrupt,
                attempt=attempt,
            )
        )
        self.local[run_id] = task
        try:
            await asyncio.shield(task)  # a cancel request cancels the task, not DBOS's call
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        finally:
            self.local.pop(run_id, None)
        return await self.store.run_status(run_id) or "missing"

    async def _watch(self, beats: _Beats) -> None:
        """Heartbeat, hand over dead peers' runs, stop runs whose workflow was cancelled."""
        lease = self.settings.server.worker_lease_s
        while True:
            if self.parent is not None and os.getppid() != self.parent:
                log.warning("the process that started this worker is gone: stopping")
                self.stopping.set()
            try:
                if self.draining:
                    await self.off(beats.beat)
                    cancelled = []
                else:
                    cancelled = await self.off(beats.tick, lease, list(self.local))
            except Exception:  # a busy database now and then must not stop the heartbeat
                log.exception("worker heartbeat failed")
                cancelled = []
            for run_id in cancelled:
                task = self.local.get(run_id)
                if task is not None:
                    task.cancel()
            await asyncio.sleep(lease / 5)


class _Beats:
    """The heartbeat rows of the workers, in the queue's database (SQLite or PostgreSQL)."""

    def __init__(self, url: str, executor_id: str) -> None:
        import sqlalchemy as sa

        self.sa = sa
        args = {"timeout": 30} if url.startswith("sqlite") else {}
        target = sa.make_url(url)
        if target.drivername in ("postgresql", "postgres"):
            # psycopg 3, as DBOS itself uses (SQLAlchemy's default is psycopg2, not installed)
            target = target.set(drivername="postgresql+psycopg")
        self.engine = sa.create_engine(target, connect_args=args)
        self.executor_id = executor_id
        with self.engine.begin() as c:
            c.execute(sa.text(_BEATS))

    def beat(self) -> None:
        sa = self.sa
        with self.engine.begin() as c:
            args = {"id": self.executor_id, "now": time.time()}
            if c.execute(
                sa.text("UPDATE tierflow_workers SET beat = :now WHERE executor_id = :id"), args
            ).rowcount:
                return
            c.execute(sa.text("INSERT INTO tierflow_workers VALUES (:id, :now)"), args)

    def leave(self) -> None:
        with self.engine.begin() as c:
            c.execute(
                self.sa.text("DELETE FROM tierflow_workers WHERE executor_id = :id"),
                {"id": self.executor_id},
            )

    def tick(self, lease: float, running: list[str]) -> list[str]:
        """Beat, recover the runs of peers silent for ``lease`` seconds; the ids of
        ``running`` whose workflow was cancelled."""
        from dbos import DBOS

        sa = self.sa
        self.beat()
        cutoff = time.time() - lease
        with self.engine.begin() as c:
            dead = list(
                c.execute(
                    sa.text("SELECT executor_id FROM tierflow_workers WHERE beat < :cutoff"),
                    {"cutoff": cutoff},
                ).scalars()
            )
        for peer in dead:
            with self.engine.begin() as c:
                won = c.execute(
                    sa.text(
                        "DELETE FROM tierflow_workers WHERE executor_id = :id AND beat < :cutoff"
                    ),
                    {"id": peer, "cutoff": cutoff},
                ).rowcount
            if won:
                handles = DBOS._recover_pending_workflows([peer])
                log.warning("worker %s is silent: %d run(s) back on the queue", peer, len(handles))
        cancelled = []
        for run_id in running:
            with contextlib.suppress(Exception):
                status = DBOS.get_workflow_status(run_id)
                if status is not None and status.status == "CANCELLED":
                    cancelled.append(run_id)
        return cancelled
