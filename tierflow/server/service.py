"""The server's state and the operations the routes share: the open Runner (checkpoints),
the store (threads, runs), the worker, the metrics; thread views; creating a run under a
multitask strategy."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import HTTPException

from tierflow.errors import UserError
from tierflow.runner import Runner
from tierflow.runner.control import check_thread, read_thread
from tierflow.server.execution import api_message, execute, graph_inputs
from tierflow.server.metrics import ServerMetrics
from tierflow.server.schemas import RunCreate
from tierflow.server.store import RunRow, Store, ThreadRow, iso
from tierflow.server.wire import interrupts, jsonable, state_values, update_values
from tierflow.server.worker import InProcessWorker, QueueFull, RunJob, Worker

_POLL_S = 0.1  # how often a run of another server process is looked up in the store
_SYSTEM_TIME = iso(0.0)  # assistants are the registered graphs: they have no history
_ASSISTANT_NS = uuid.UUID("6f0b1c7e-8a43-4c51-9d7e-2f1d0c4b7a10")


def assistant_uuid(graph: str) -> str:
    """The deterministic UUID that names ``graph`` too (clients that want UUIDs)."""
    return str(uuid.uuid5(_ASSISTANT_NS, graph))


def not_found(what: str) -> HTTPException:
    return HTTPException(404, f"{what} not found")


class Server:
    def __init__(self, runner: Runner, store: Store, worker: Worker | None = None) -> None:
        self.runner = runner
        self.store = store
        self.metrics = ServerMetrics(lambda: self.worker.depth)
        self.worker: Worker = worker or _default_worker(runner, store, self.metrics)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def thread_busy(self, thread_id: str) -> bool:
        """The one busy check: a run of the thread pending or running in the store, which
        every server process on the database shares."""
        return bool(await self.store.active_runs(thread_id))

    async def join(self, run_id: str) -> None:
        """Return when the run has ended, whichever server process executes it."""
        await self.worker.join(run_id)
        while True:
            if await self.store.run_status(run_id) not in ("pending", "running"):
                return
            await asyncio.sleep(_POLL_S)  # another process's run

    # assistants

    def graph_of(self, assistant_id: str) -> str:
        """The graph an assistant id names (its name or its UUID); 404 if none."""
        for name in self.runner.graph_names():
            if assistant_id in (name, assistant_uuid(name)):
                return name
        raise not_found(f"assistant '{assistant_id}'")

    def assistant(self, graph: str) -> dict[str, Any]:
        entry = self.runner.entry(graph)
        doc = (getattr(entry.factory, "__doc__", None) or "").strip().split("\n")[0]
        return {
            "assistant_id": graph,
            "graph_id": graph,
            "name": graph,
            "description": doc or None,
            "config": {},
            "context": {},
            "metadata": {"created_by": "system", "uuid": assistant_uuid(graph)},
            "version": 1,
            "created_at": _SYSTEM_TIME,
            "updated_at": _SYSTEM_TIME,
        }

    # threads

    async def thread(self, thread_id: str, owner: str | None) -> ThreadRow:
        """The thread, or 404 (also when it belongs to another caller)."""
        row = await self.store.get_thread(thread_id)
        if row is None or (owner is not None and row.owner != owner):
            raise not_found(f"thread '{thread_id}'")
        return row

    def _app(self, row: ThreadRow) -> Any:
        graph = str(row.metadata.get("graph_id") or "")
        if graph not in self.runner.graph_names():
            return None  # no run yet
        return self.runner.compile(graph, self.runner.checkpointer)

    async def thread_view(self, row: ThreadRow) -> dict[str, Any]:
        """The SDK's ``Thread``: status, current values, pending interrupts."""
        view: dict[str, Any] = {
            "thread_id": row.thread_id,
            "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at),
            "metadata": row.metadata,
            "status": "idle",
            "values": {},
            "interrupts": {},
        }
        app = self._app(row)
        if app is not None:
            config = {"configurable": {"thread_id": row.thread_id}}
            snapshot = await app.aget_state(config)
            view["values"] = state_values(snapshot.values)
            view["interrupts"] = {
                t.id: interrupts(t.interrupts) for t in snapshot.tasks if t.interrupts
            }
            if view["interrupts"]:
                view["status"] = "interrupted"
        last = await self.store.list_runs(row.thread_id, 1, 0)
        if last and last[0].status == "error":
            view["status"] = "error"
        if await self.thread_busy(row.thread_id):
            view["status"] = "busy"
        return view

    async def final_values(self, graph: str, thread_id: str) -> dict[str, Any]:
        """The thread's values after a run of ``graph`` (what ``runs.wait`` returns), with
        ``__interrupt__`` when it waits for approval: one checkpoint read."""
        app = self.runner.compile(graph, self.runner.checkpointer)
        snapshot = await app.aget_state({"configurable": {"thread_id": thread_id}})
        values = state_values(snapshot.values)
        pending = [i for t in snapshot.tasks if t.interrupts for i in interrupts(t.interrupts)]
        if pending:
            values["__interrupt__"] = pending
        return values

    async def state_view(self, row: ThreadRow) -> dict[str, Any]:
        app = self._app(row)
        if app is None:
            return _state(None, row.thread_id)
        config = {"configurable": {"thread_id": row.thread_id}}
        return _state(await app.aget_state(config), row.thread_id)

    async def history(self, row: ThreadRow, limit: int, before: Any) -> list[dict[str, Any]]:
        app = self._app(row)
        if app is None:
            return []
        config = {"configurable": {"thread_id": row.thread_id}}
        if isinstance(before, str):
            before = {"configurable": {"checkpoint_id": before}}
        return [
            _state(s, row.thread_id)
            async for s in app.aget_state_history(config, limit=limit, before=before)
        ]

    # runs

    async def create_run(self, thread_id: str, body: RunCreate, owner: str | None) -> RunRow:
        """Validate, apply the multitask strategy, store the run and submit it."""
        graph = self.graph_of(body.assistant_id)
        # Neither input nor command continues the thread's unfinished run (LangGraph's
        # ``input=None``): only the steps that had not completed run again.
        if body.input is not None and body.command is not None:
            raise HTTPException(422, "command: give an input or a command, not both")
        row = await self.store.get_thread(thread_id)
        if row is None and body.if_not_exists == "create":
            row = await self.store.create_thread(thread_id, {}, owner)
            row = row or await self.store.get_thread(thread_id)
        if row is None or (owner is not None and row.owner != owner):
            raise not_found(f"thread '{thread_id}'")
        # One creation at a time per thread: two requests racing on an idle thread must
        # not both pass the busy check (the worker would still run them one after the
        # other, but `reject` promised a 409).
        async with self._creating(thread_id):
            return await self._admit(thread_id, graph, row, body)

    @asynccontextmanager
    async def _creating(self, thread_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(thread_id, (asyncio.Lock(), 0))
        self._locks[thread_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[thread_id]
            if users == 1:
                del self._locks[thread_id]
            else:
                self._locks[thread_id] = (lock, users - 1)

    async def _admit(self, thread_id: str, graph: str, row: ThreadRow, body: RunCreate) -> RunRow:
        active = await self.store.active_runs(thread_id)
        busy = bool(active)
        if busy and body.multitask_strategy == "reject":
            raise self._busy(thread_id, active)
        if not busy:
            await self._check(graph, thread_id, body)
        if self.worker.depth >= self.runner.settings.server.max_queue:
            self.metrics.rejected("queue_full")
            raise HTTPException(
                429, "the run queue is full; retry later", headers={"Retry-After": "2"}
            )
        per_key = self.runner.settings.server.max_runs_per_key
        if per_key is not None and row.owner is not None:
            held = await self.store.count_unfinished(row.owner)
            if held >= per_key:
                self.metrics.rejected("key_limit")
                raise HTTPException(
                    429,
                    f"this API key has {held} runs pending or running (limit {per_key}); "
                    "retry later",
                    headers={"Retry-After": "2"},
                )
        interrupted = False
        if busy and body.multitask_strategy == "interrupt":
            for run_id in active:
                # Ours: cancelled and awaited. Another server's: marked, and that server
                # stops it; the new run then waits for the thread's lease (execution).
                stopped = await self.worker.cancel(run_id, wait=True)
                interrupted |= stopped or await self.store.cancel_run(run_id)
        now = time.time()
        run = RunRow(
            run_id=str(uuid.uuid4()),
            thread_id=thread_id,
            assistant_id=graph,
            created_at=now,
            updated_at=now,
            status="pending",
            multitask_strategy=body.multitask_strategy,
            metadata=body.metadata,
            kwargs=jsonable(body.model_dump(include={"input", "command", "stream_mode"})),
        )
        if not await self.store.create_run(run, if_idle=body.multitask_strategy == "reject"):
            # another server's run took the thread since the check above
            raise self._busy(thread_id, await self.store.active_runs(thread_id))
        if row.metadata.get("graph_id") != graph:
            await self.store.update_thread(thread_id, {"graph_id": graph, "assistant_id": graph})
        store = self.store

        async def run_it(stream: Any) -> None:
            await execute(self, run, body, stream, after_interrupt=interrupted)

        async def cancelled() -> None:
            await store.set_run_status(run.run_id, "interrupted", error="cancelled")

        try:
            self.worker.submit(
                RunJob(run.run_id, thread_id, run_it, cancelled, after_interrupt=interrupted)
            )
        except QueueFull as exc:  # raced past the check above: leave nothing behind
            await store.delete_run(run.run_id)
            raise HTTPException(429, str(exc), headers={"Retry-After": "2"}) from None
        return run

    def _busy(self, thread_id: str, active: list[str]) -> HTTPException:
        self.metrics.rejected("busy")
        return HTTPException(
            409,
            f"thread '{thread_id}' is busy with run {active[0] if active else '?'}; "
            "retry later or use multitask_strategy enqueue or interrupt",
        )

    async def _check(self, graph: str, thread_id: str, body: RunCreate) -> None:
        """409 now, rather than a failed run, for what the thread's state refuses."""
        app = self.runner.compile(graph, self.runner.checkpointer)
        config: Any = {"configurable": {"thread_id": thread_id}}
        saved = await self.runner.checkpointer.aget_tuple(config)
        thread = await read_thread(app, config, saved)
        try:
            pending = (await app.aget_state(config)).interrupts if thread.status == "paused" else ()
            check_thread(thread_id, thread, graph_inputs(body, pending))
        except UserError as exc:
            raise HTTPException(409, api_message(str(exc))) from None


def _default_worker(runner: Runner, store: Store, metrics: ServerMetrics) -> Worker:
    """``[server] worker``: runs in this process, or on ``tierflow worker`` processes."""
    limits = runner.settings.server
    if limits.worker == "dbos":
        from tierflow.server.queue import QueuedWorker

        return QueuedWorker(runner.settings, store, metrics)
    return InProcessWorker(
        max_queue=limits.max_queue, max_concurrency=limits.max_concurrency, store=store
    )


def _state(snapshot: Any, thread_id: str) -> dict[str, Any]:
    """A LangGraph ``StateSnapshot`` as the SDK's ``ThreadState``."""
    if snapshot is None or snapshot.config is None:
        return {
            "values": {},
            "next": [],
            "checkpoint": None,
            "metadata": {},
            "created_at": None,
            "parent_checkpoint": None,
            "tasks": [],
            "interrupts": [],
        }

    def checkpoint(config: Any) -> dict[str, Any] | None:
        if not config:
            return None
        conf = config["configurable"]
        return {
            "thread_id": thread_id,
            "checkpoint_ns": conf.get("checkpoint_ns", ""),
            "checkpoint_id": conf.get("checkpoint_id"),
            "checkpoint_map": None,
        }

    return {
        "values": state_values(snapshot.values),
        "next": list(snapshot.next),
        "checkpoint": checkpoint(snapshot.config),
        "metadata": jsonable(snapshot.metadata or {}),
        "created_at": snapshot.created_at,
        "parent_checkpoint": checkpoint(snapshot.parent_config),
        "tasks": [
            {
                "id": t.id,
                "name": t.name,
                "error": str(t.error) if t.error else None,
                "interrupts": interrupts(t.interrupts),
                "checkpoint": None,
                "state": None,
                "result": update_values(t.result) if t.result is not None else None,
            }
            for t in snapshot.tasks
        ],
        "interrupts": interrupts(snapshot.interrupts),
    }
