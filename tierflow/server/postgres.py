"""The server's threads and runs in PostgreSQL (``[state] database_url``): the same
methods as the SQLite store, so several server processes on one database see the same
threads and runs.

The schema is :data:`MIGRATIONS`, applied at start by :func:`tierflow.database.migrate`
(one transaction under an advisory lock; ``schema_version`` row ``server``). Append a
script to change it; never edit one that shipped.

Each server process holds a session-level advisory lock named by a random key for its
whole life, and stamps its runs with that key. At start, a server marks ``error`` only the
runs left pending or running by servers whose lock is gone (stopped or killed), never the
runs another live server is executing.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from tierflow import database
from tierflow.errors import DatabaseUnavailable
from tierflow.server.store import ACTIVE_SQL, RunRow, ThreadRow
from tierflow.settings import StateSettings

#: The first key of the servers' liveness locks (the second is each server's own key).
_LIVE_NS = 0x7466

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE threads (
        thread_id TEXT PRIMARY KEY,
        owner TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        metadata JSONB NOT NULL DEFAULT '{}'
    );
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        thread_id TEXT NOT NULL REFERENCES threads(thread_id) ON DELETE CASCADE,
        assistant_id TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        metadata JSONB NOT NULL DEFAULT '{}',
        multitask_strategy TEXT NOT NULL,
        kwargs JSONB NOT NULL DEFAULT '{}',
        record JSONB,
        error TEXT,
        server_key INTEGER
    );
    CREATE INDEX runs_by_thread ON runs(thread_id, created_at);
    CREATE INDEX runs_unfinished ON runs(status) WHERE status IN ('pending', 'running');
    """,
    # JSON merge patch (RFC 7396), as SQLite's json_patch: a null removes the key,
    # objects merge recursively, anything else replaces.
    """
    CREATE FUNCTION tierflow_merge_patch(target JSONB, patch JSONB) RETURNS JSONB
    LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN
        IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
            RETURN patch;
        END IF;
        IF jsonb_typeof(target) IS DISTINCT FROM 'object' THEN
            target := '{}'::jsonb;
        END IF;
        RETURN (
            SELECT COALESCE(jsonb_object_agg(key, value), '{}'::jsonb) FROM (
                SELECT t.key, t.value FROM jsonb_each(target) t WHERE NOT patch ? t.key
                UNION ALL
                SELECT p.key, tierflow_merge_patch(target -> p.key, p.value)
                FROM jsonb_each(patch) p WHERE p.value <> 'null'::jsonb
            ) merged
        );
    END $$;
    """,
    # a run's events, for runs executed by worker processes (``tierflow worker``)
    """
    CREATE TABLE run_events (
        id BIGSERIAL PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        event TEXT NOT NULL,
        data JSONB NOT NULL
    );
    CREATE INDEX run_events_by_run ON run_events(run_id, id);
    """,
)

_RUN_COLUMNS = (
    "run_id, thread_id, assistant_id, created_at, updated_at, status, metadata, "
    "multitask_strategy, kwargs, record, error"
)


class PostgresStore:
    """Threads and runs on a psycopg async pool (autocommit: each write one statement)."""

    def __init__(self, pool: AsyncConnectionPool[Any], key: int, stack: AsyncExitStack):
        self._pool = pool
        self._key = key  # this server's liveness lock, stamped on its runs
        self._stack = stack  # closes the pool and the lock's connection

    @classmethod
    async def connect(cls, state: StateSettings) -> PostgresStore:
        """Open the pool, apply the migrations, take this server's liveness lock."""
        url = state.url
        assert url is not None
        async with AsyncExitStack() as stack:
            pool = await stack.enter_async_context(
                database.open_pool(
                    url,
                    size=state.pool_size,
                    timeout_s=state.connect_timeout_s,
                    autocommit=True,
                    row_factory=dict_row,
                )
            )
            try:
                await database.migrate(pool, "server", MIGRATIONS)
                live = await AsyncConnection.connect(
                    url, autocommit=True, connect_timeout=max(1, round(state.connect_timeout_s))
                )
                stack.push_async_callback(live.close)
                key = secrets.randbelow(2**31 - 1) + 1
                await live.execute("SELECT pg_advisory_lock(%s, %s)", (_LIVE_NS, key))
            except psycopg.Error as exc:
                raise DatabaseUnavailable(database.describe(url, exc)) from None
            return cls(pool, key, stack.pop_all())
        raise AssertionError("unreachable")  # mypy: the stack may swallow exceptions

    async def close(self) -> None:
        await self._stack.aclose()

    async def _write(self, sql: str, args: Sequence[Any]) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, args)
            return int(cur.rowcount)

    async def _rows(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, args)
            return list(await cur.fetchall())

    # threads

    async def create_thread(
        self, thread_id: str | None, metadata: Mapping[str, Any], owner: str | None
    ) -> ThreadRow | None:
        """The new thread, or None if ``thread_id`` exists already."""
        now = time.time()
        row = ThreadRow(thread_id or str(uuid.uuid4()), owner, now, now, dict(metadata))
        added = await self._write(
            "INSERT INTO threads VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (row.thread_id, owner, now, now, Jsonb(row.metadata)),
        )
        return row if added else None

    async def get_thread(self, thread_id: str) -> ThreadRow | None:
        rows = await self._rows("SELECT * FROM threads WHERE thread_id = %s", (thread_id,))
        return _thread(rows[0]) if rows else None

    async def search_threads(
        self, metadata: Mapping[str, Any], ids: Sequence[str] | None, limit: int, offset: int
    ) -> list[ThreadRow]:
        sql, args = "SELECT * FROM threads WHERE true", []
        for key, value in metadata.items():
            sql += " AND metadata -> %s = %s"
            args += [key, Jsonb(value)]
        if ids:
            sql += " AND thread_id = ANY(%s)"
            args.append(list(ids))
        sql += " ORDER BY created_at DESC LIMIT %s OFFSET %s"
        return [_thread(r) for r in await self._rows(sql, [*args, limit, offset])]

    async def update_thread(self, thread_id: str, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata`` into the thread's in one statement (JSON merge patch)."""
        await self._write(
            "UPDATE threads SET metadata = tierflow_merge_patch(metadata, %s), updated_at = %s "
            "WHERE thread_id = %s",
            (Jsonb(dict(metadata)), time.time(), thread_id),
        )

    async def touch_thread(self, thread_id: str) -> None:
        await self._write(
            "UPDATE threads SET updated_at = %s WHERE thread_id = %s", (time.time(), thread_id)
        )

    async def delete_thread(self, thread_id: str) -> bool:
        return await self._write("DELETE FROM threads WHERE thread_id = %s", (thread_id,)) > 0

    # runs

    async def create_run(self, run: RunRow, *, if_idle: bool = False) -> bool:
        """Store ``run``; with ``if_idle``, only if no run of its thread is pending or
        running: the thread's row is locked first, so two servers racing on one thread
        take turns and the second sees the first's run."""
        idle = f" WHERE NOT EXISTS ({ACTIVE_SQL.format('%s')})" if if_idle else ""
        args = (
            run.run_id,
            run.thread_id,
            run.assistant_id,
            run.created_at,
            run.updated_at,
            run.status,
            Jsonb(run.metadata),
            run.multitask_strategy,
            Jsonb(json.loads(json.dumps(run.kwargs, default=str))),
            self._key,
            *([run.thread_id] if if_idle else []),
        )
        insert = (
            f"INSERT INTO runs ({_RUN_COLUMNS}, server_key) "
            "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL::jsonb, NULL::text, %s" + idle
        )
        async with self._pool.connection() as conn, conn.transaction():
            if if_idle:
                await conn.execute(
                    "SELECT 1 FROM threads WHERE thread_id = %s FOR UPDATE", (run.thread_id,)
                )
            cur = await conn.execute(insert, args)
            return int(cur.rowcount) > 0

    async def active_runs(self, thread_id: str) -> list[str]:
        rows = await self._rows(
            "SELECT run_id FROM runs WHERE thread_id = %s AND status IN ('pending', 'running') "
            "ORDER BY created_at",
            (thread_id,),
        )
        return [str(r["run_id"]) for r in rows]

    async def cancelled_among(self, run_ids: Sequence[str]) -> list[str]:
        rows = await self._rows(
            "SELECT run_id FROM runs WHERE status = 'interrupted' AND run_id = ANY(%s)",
            (list(run_ids),),
        )
        return [str(r["run_id"]) for r in rows]

    async def set_run_status(
        self,
        run_id: str,
        status: str,
        *,
        record: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        await self._write(
            "UPDATE runs SET status = %s, updated_at = %s, record = COALESCE(%s, record), "
            "error = COALESCE(%s, error) WHERE run_id = %s",
            (status, time.time(), Jsonb(dict(record)) if record else None, error, run_id),
        )

    async def delete_run(self, run_id: str) -> None:
        await self._write("DELETE FROM runs WHERE run_id = %s", (run_id,))

    async def get_run(self, thread_id: str, run_id: str) -> RunRow | None:
        rows = await self._rows(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = %s AND thread_id = %s",
            (run_id, thread_id),
        )
        return _run(rows[0]) if rows else None

    async def list_runs(
        self, thread_id: str, limit: int, offset: int, status: str | None = None
    ) -> list[RunRow]:
        sql, args = f"SELECT {_RUN_COLUMNS} FROM runs WHERE thread_id = %s", [thread_id]
        if status:
            sql += " AND status = %s"
            args.append(status)
        sql += " ORDER BY created_at DESC LIMIT %s OFFSET %s"
        return [_run(r) for r in await self._rows(sql, [*args, limit, offset])]

    async def find_run(self, run_id: str) -> RunRow | None:
        rows = await self._rows(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,))
        return _run(rows[0]) if rows else None

    async def unfinished_runs(self) -> list[RunRow]:
        """Runs pending or running, oldest first (a worker process may own them)."""
        rows = await self._rows(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ('pending', 'running') "
            "ORDER BY created_at",
            (),
        )
        return [_run(r) for r in rows]

    async def count_unfinished(self, owner: str) -> int:
        """Runs pending or running on the threads of ``owner`` (an API key's id)."""
        rows = await self._rows(
            "SELECT count(*) AS n FROM runs JOIN threads USING (thread_id) "
            "WHERE threads.owner = %s AND runs.status IN ('pending', 'running')",
            (owner,),
        )
        return int(rows[0]["n"]) if rows else 0

    async def cancel_pending(self, run_id: str) -> bool:
        """Mark a run that no worker started yet ``interrupted``; False if one did."""
        return await self._cancel(run_id, ["pending"])

    async def cancel_run(self, run_id: str) -> bool:
        """Mark a pending or running run ``interrupted`` (its server stops it)."""
        return await self._cancel(run_id, ["pending", "running"])

    async def _cancel(self, run_id: str, among: list[str]) -> bool:
        changed = await self._write(
            "UPDATE runs SET status = 'interrupted', error = 'cancelled', updated_at = %s "
            "WHERE run_id = %s AND status = ANY(%s)",
            (time.time(), run_id, among),
        )
        return changed > 0

    async def run_status(self, run_id: str) -> str | None:
        rows = await self._rows("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        return str(rows[0]["status"]) if rows else None

    async def add_event(self, run_id: str, event: str, data: Any) -> None:
        await self._write(
            "INSERT INTO run_events (run_id, event, data) VALUES (%s, %s, %s)",
            (run_id, event, Jsonb(data, dumps=lambda v: json.dumps(v, default=str))),
        )

    async def events_after(self, run_id: str, after: int) -> list[tuple[int, str, Any]]:
        """The run's stored events with an id above ``after``, oldest first."""
        rows = await self._rows(
            "SELECT id, event, data FROM run_events WHERE run_id = %s AND id > %s ORDER BY id",
            (run_id, after),
        )
        return [(int(r["id"]), str(r["event"]), r["data"]) for r in rows]

    async def abandon_unfinished(self) -> int:
        """Runs left pending or running by servers that stopped (their liveness lock is
        gone): marked ``error``. Runs of live servers are left alone."""
        return await self._write(
            "UPDATE runs SET status = 'error', error = 'the server stopped before the run "
            "finished', updated_at = %s WHERE status IN ('pending', 'running') "
            "AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) AND l.classid = %s::oid "
            "AND l.objid = runs.server_key::oid AND l.objsubid = 2)",
            (time.time(), _LIVE_NS),
        )


def _thread(r: Mapping[str, Any]) -> ThreadRow:
    return ThreadRow(r["thread_id"], r["owner"], r["created_at"], r["updated_at"], r["metadata"])


def _run(r: Mapping[str, Any]) -> RunRow:
    return RunRow(
        run_id=r["run_id"],
        thread_id=r["thread_id"],
        assistant_id=r["assistant_id"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        status=r["status"],
        multitask_strategy=r["multitask_strategy"],
        metadata=r["metadata"],
        kwargs=r["kwargs"],
        record=r["record"],
        error=r["error"],
    )
