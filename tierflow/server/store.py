"""Threads and runs of the server: the ``Store`` interface, its rows, and its SQLite
implementation, one file in the state dir (``server.sqlite``, next to the Runner's
``checkpoints.sqlite``). With ``[state] database_url`` the server uses
:class:`~tierflow.server.postgres.PostgresStore` instead (``app.open_store``).

The checkpoints hold what a graph knows (messages, steps, interrupts); the store holds
what the API adds around them: a thread's metadata and owner, and each run's status,
options, error and run record. Each write is one statement in its own transaction, so a
crash never leaves a half-written thread or run.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    thread_id TEXT PRIMARY KEY,
    owner TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES threads(thread_id) ON DELETE CASCADE,
    assistant_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    status TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    multitask_strategy TEXT NOT NULL,
    kwargs TEXT NOT NULL DEFAULT '{}',
    record TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_thread ON runs(thread_id, created_at);
CREATE TABLE IF NOT EXISTS run_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS run_events_by_run ON run_events(run_id, id);
"""

#: What a run ends in: the worker that ran it wrote its last word.
FINAL = ("success", "error", "interrupted", "timeout")

#: A pending or running run of thread ``{}`` exists (the stores' busy check).
ACTIVE_SQL = "SELECT 1 FROM runs WHERE thread_id = {} AND status IN ('pending', 'running')"


def iso(ts: float) -> str:
    """A timestamp as the API shows it (ISO 8601, UTC)."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass
class ThreadRow:
    thread_id: str
    owner: str | None
    created_at: float
    updated_at: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRow:
    run_id: str
    thread_id: str
    assistant_id: str
    created_at: float
    updated_at: float
    status: str
    multitask_strategy: str
    metadata: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] | None = None
    error: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The SDK's ``Run``; ``kwargs.record`` carries the tierflow run record."""
        return {
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "status": self.status,
            "metadata": self.metadata,
            "multitask_strategy": self.multitask_strategy,
            "kwargs": {**self.kwargs, "record": self.record, "error": self.error},
        }


class Store(Protocol):
    """What the server keeps besides checkpoints; every method is one transaction."""

    async def close(self) -> None: ...
    async def create_thread(
        self, thread_id: str | None, metadata: Mapping[str, Any], owner: str | None
    ) -> ThreadRow | None: ...
    async def get_thread(self, thread_id: str) -> ThreadRow | None: ...
    async def search_threads(
        self, metadata: Mapping[str, Any], ids: Sequence[str] | None, limit: int, offset: int
    ) -> list[ThreadRow]: ...
    async def update_thread(self, thread_id: str, metadata: Mapping[str, Any]) -> None: ...
    async def touch_thread(self, thread_id: str) -> None: ...
    async def delete_thread(self, thread_id: str) -> bool: ...
    async def create_run(self, run: RunRow, *, if_idle: bool = False) -> bool: ...
    async def active_runs(self, thread_id: str) -> list[str]: ...
    async def cancel_run(self, run_id: str) -> bool: ...
    async def cancelled_among(self, run_ids: Sequence[str]) -> list[str]: ...
    async def set_run_status(
        self,
        run_id: str,
        status: str,
        *,
        record: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None: ...
    async def delete_run(self, run_id: str) -> None: ...
    async def get_run(self, thread_id: str, run_id: str) -> RunRow | None: ...
    async def list_runs(
        self, thread_id: str, limit: int, offset: int, status: str | None = None
    ) -> list[RunRow]: ...
    async def abandon_unfinished(self) -> int: ...
    # for runs executed by worker processes (``tierflow worker``, server/queue.py)
    async def find_run(self, run_id: str) -> RunRow | None: ...
    async def unfinished_runs(self) -> list[RunRow]: ...
    async def count_unfinished(self, owner: str) -> int: ...
    async def cancel_pending(self, run_id: str) -> bool: ...
    async def run_status(self, run_id: str) -> str | None: ...
    async def add_event(self, run_id: str, event: str, data: Any) -> None: ...
    async def events_after(self, run_id: str, after: int) -> list[tuple[int, str, Any]]: ...


class SqliteStore:
    """Async access to ``server.sqlite`` (one aiosqlite connection, WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Worker processes write the same file (runs, events): wait for their locks.
        # Autocommit: each write is one statement in its own transaction, which starts
        # with no snapshot held, so the busy timeout applies to it.
        conn = aiosqlite.connect(str(self.path), timeout=30, isolation_level=None)
        conn._thread.daemon = True  # as the Runner's saver: never hold the interpreter
        await conn
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        # As the checkpoints: a committed write survives a killed process (not an OS crash)
        # without an fsync per event.
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.executescript(_SCHEMA)
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("the store is not open")
        return self._conn

    async def _write(self, sql: str, args: Sequence[Any]) -> int:
        cur = await self.conn.execute(sql, args)
        return cur.rowcount

    async def _rows(self, sql: str, args: Sequence[Any]) -> list[sqlite3.Row]:
        """Every row of a query, read in one call on the connection's thread.

        Never ``execute`` then ``fetch``: between the two, other requests' statements run
        on this shared connection, and a write there while this read's statement holds
        its snapshot fails at once with "database is locked" (SQLITE_BUSY, no busy
        timeout) whenever another process (a ``tierflow worker``) has written since.
        """
        return list(await self.conn.execute_fetchall(sql, args))

    async def _row(self, sql: str, args: Sequence[Any]) -> sqlite3.Row | None:
        rows = await self._rows(sql, args)
        return rows[0] if rows else None

    # threads

    async def create_thread(
        self, thread_id: str | None, metadata: Mapping[str, Any], owner: str | None
    ) -> ThreadRow | None:
        """The new thread, or None if ``thread_id`` exists already."""
        now = time.time()
        row = ThreadRow(thread_id or str(uuid.uuid4()), owner, now, now, dict(metadata))
        try:
            await self._write(
                "INSERT INTO threads VALUES (?, ?, ?, ?, ?)",
                (row.thread_id, owner, now, now, json.dumps(row.metadata)),
            )
        except sqlite3.IntegrityError:
            return None
        return row

    async def get_thread(self, thread_id: str) -> ThreadRow | None:
        found = await self._row("SELECT * FROM threads WHERE thread_id = ?", (thread_id,))
        return _thread(found) if found is not None else None

    async def search_threads(
        self, metadata: Mapping[str, Any], ids: Sequence[str] | None, limit: int, offset: int
    ) -> list[ThreadRow]:
        sql, args = "SELECT * FROM threads WHERE 1=1", []
        for key, value in metadata.items():
            sql += " AND json_extract(metadata, ?) = json_extract(?, '$')"
            args += [f'$."{key}"', json.dumps(value)]
        if ids:
            sql += f" AND thread_id IN ({', '.join('?' * len(ids))})"
            args += list(ids)
        sql += " ORDER BY created_at DESC LIMIT ? OFFSET ?"
        return [_thread(r) for r in await self._rows(sql, [*args, limit, offset])]

    async def update_thread(self, thread_id: str, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata`` into the thread's, in one statement (two concurrent PATCHes
        both land); a key set to null is removed (JSON merge patch)."""
        await self._write(
            "UPDATE threads SET metadata = json_patch(metadata, ?), updated_at = ? "
            "WHERE thread_id = ?",
            (json.dumps(dict(metadata)), time.time(), thread_id),
        )

    async def touch_thread(self, thread_id: str) -> None:
        await self._write(
            "UPDATE threads SET updated_at = ? WHERE thread_id = ?", (time.time(), thread_id)
        )

    async def delete_thread(self, thread_id: str) -> bool:
        return await self._write("DELETE FROM threads WHERE thread_id = ?", (thread_id,)) > 0

    # runs

    async def create_run(self, run: RunRow, *, if_idle: bool = False) -> bool:
        """Store ``run``; with ``if_idle``, only if no run of its thread is pending or
        running (one statement: two servers racing on one thread cannot both pass)."""
        idle = f" WHERE NOT EXISTS ({ACTIVE_SQL.format('?')})" if if_idle else ""
        return (
            await self._write(
                "INSERT INTO runs SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?" + idle,
                (
                    run.run_id,
                    run.thread_id,
                    run.assistant_id,
                    run.created_at,
                    run.updated_at,
                    run.status,
                    json.dumps(run.metadata),
                    run.multitask_strategy,
                    json.dumps(run.kwargs, default=str),
                    None,
                    None,
                    *([run.thread_id] if if_idle else []),
                ),
            )
            > 0
        )

    async def active_runs(self, thread_id: str) -> list[str]:
        """The thread's runs pending or running (in any server process), oldest first."""
        rows = await self._rows(
            "SELECT run_id FROM runs WHERE thread_id = ? AND status IN ('pending', 'running') "
            "ORDER BY created_at",
            (thread_id,),
        )
        return [str(r[0]) for r in rows]

    async def cancelled_among(self, run_ids: Sequence[str]) -> list[str]:
        """Those of ``run_ids`` marked ``interrupted`` (by another server's ``interrupt``)."""
        marks = ", ".join("?" * len(run_ids))
        rows = await self._rows(
            f"SELECT run_id FROM runs WHERE status = 'interrupted' AND run_id IN ({marks})",
            list(run_ids),
        )
        return [str(r[0]) for r in rows]

    async def set_run_status(
        self,
        run_id: str,
        status: str,
        *,
        record: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        await self._write(
            "UPDATE runs SET status = ?, updated_at = ?, record = COALESCE(?, record), "
            "error = COALESCE(?, error) WHERE run_id = ?",
            (status, time.time(), json.dumps(record) if record else None, error, run_id),
        )

    async def delete_run(self, run_id: str) -> None:
        await self._write("DELETE FROM runs WHERE run_id = ?", (run_id,))

    async def get_run(self, thread_id: str, run_id: str) -> RunRow | None:
        found = await self._row(
            "SELECT * FROM runs WHERE run_id = ? AND thread_id = ?", (run_id, thread_id)
        )
        return _run(found) if found is not None else None

    async def list_runs(
        self, thread_id: str, limit: int, offset: int, status: str | None = None
    ) -> list[RunRow]:
        sql, args = "SELECT * FROM runs WHERE thread_id = ?", [thread_id]
        if status:
            sql += " AND status = ?"
            args.append(status)
        rows = await self._rows(
            sql + " ORDER BY created_at DESC LIMIT ? OFFSET ?", [*args, limit, offset]
        )
        return [_run(r) for r in rows]

    async def find_run(self, run_id: str) -> RunRow | None:
        found = await self._row("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return _run(found) if found is not None else None

    async def unfinished_runs(self) -> list[RunRow]:
        """Runs pending or running, oldest first (a worker process may own them)."""
        rows = await self._rows(
            "SELECT * FROM runs WHERE status IN ('pending', 'running') ORDER BY created_at", ()
        )
        return [_run(r) for r in rows]

    async def count_unfinished(self, owner: str) -> int:
        """Runs pending or running on the threads of ``owner`` (an API key's id)."""
        found = await self._row(
            "SELECT count(*) FROM runs JOIN threads USING (thread_id) "
            "WHERE threads.owner = ? AND runs.status IN ('pending', 'running')",
            (owner,),
        )
        return int(found[0]) if found is not None else 0

    async def cancel_pending(self, run_id: str) -> bool:
        """Mark a run that no worker started yet ``interrupted``; False if one did."""
        return await self._cancel(run_id, "('pending')")

    async def cancel_run(self, run_id: str) -> bool:
        """Mark a pending or running run ``interrupted``; the server executing it sees the
        mark (``cancelled_among``) and stops it. False if it had ended."""
        return await self._cancel(run_id, "('pending', 'running')")

    async def _cancel(self, run_id: str, among: str) -> bool:
        return (
            await self._write(
                "UPDATE runs SET status = 'interrupted', error = 'cancelled', updated_at = ? "
                f"WHERE run_id = ? AND status IN {among}",
                (time.time(), run_id),
            )
            > 0
        )

    async def run_status(self, run_id: str) -> str | None:
        found = await self._row("SELECT status FROM runs WHERE run_id = ?", (run_id,))
        return str(found[0]) if found is not None else None

    # a run's events, for runs executed by worker processes (``tierflow worker``)

    async def add_event(self, run_id: str, event: str, data: Any) -> None:
        await self._write(
            "INSERT INTO run_events (run_id, event, data) VALUES (?, ?, ?)",
            (run_id, event, json.dumps(data, default=str)),
        )

    async def events_after(self, run_id: str, after: int) -> list[tuple[int, str, Any]]:
        """The run's stored events with a row id above ``after``, oldest first."""
        rows = await self._rows(
            "SELECT id, event, data FROM run_events WHERE run_id = ? AND id > ? ORDER BY id",
            (run_id, after),
        )
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    async def abandon_unfinished(self) -> int:
        """Runs left pending or running by a server that stopped: marked ``error``."""
        return await self._write(
            "UPDATE runs SET status = 'error', error = 'the server stopped before the run "
            "finished', updated_at = ? WHERE status IN ('pending', 'running')",
            (time.time(),),
        )


def _thread(r: sqlite3.Row) -> ThreadRow:
    return ThreadRow(
        r["thread_id"], r["owner"], r["created_at"], r["updated_at"], json.loads(r["metadata"])
    )


def _run(r: sqlite3.Row) -> RunRow:
    return RunRow(
        run_id=r["run_id"],
        thread_id=r["thread_id"],
        assistant_id=r["assistant_id"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        status=r["status"],
        multitask_strategy=r["multitask_strategy"],
        metadata=json.loads(r["metadata"]),
        kwargs=json.loads(r["kwargs"]),
        record=json.loads(r["record"]) if r["record"] else None,
        error=r["error"],
    )
