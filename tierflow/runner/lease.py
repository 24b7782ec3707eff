"""Thread leases: one run at a time on a thread, across processes.

Two runs on one thread would both start from the same checkpoint and the last write would
win, silently dropping the other run's question and answer. So every run holds its
thread's lease, a row in the database, for as long as it lasts:

| event | what happens |
| --- | --- |
| run starts | ``acquire``: one statement takes the row if free, expired or ours |
| while it runs | a heartbeat renews it every ``ttl / 3`` |
| run ends, fails or is cancelled | ``release`` deletes the row |
| holder crashes (SIGKILL) | nobody renews: the lease expires ``ttl`` after its last renewal |
| renewal finds the lease taken | the run is cancelled and raises :class:`LeaseLost` |
| thread busy, ``reject`` | :class:`ThreadBusy` at once (the CLI: one line, exit 1) |
| thread busy, ``wait`` / ``enqueue`` | poll until free; :class:`ThreadBusy` after ``wait_s`` |

Expiry is measured on the database's clock, so processes with skewed clocks agree.
``enqueue`` is ``wait`` here; a server keeps its own queue in front of the lease. Waiters
poll, so the order among several waiters is not FIFO.

:class:`ThreadLeases` is the interface (``acquire`` / ``renew`` / ``release``);
:class:`SqliteThreadLeases` keeps the rows in ``<state_dir>/leases.sqlite``, and
:class:`PostgresThreadLeases` in PostgreSQL with ``[state] database_url`` (the same three
statements), so processes on several machines share them. Use :meth:`ThreadLeases.hold`::

    leases = SqliteThreadLeases.in_dir(settings.state_dir)
    async with leases.hold(thread_id, strategy="reject", ttl_s=30):
        ...  # this task owns the thread until the block ends

A task that already holds a thread's lease (and the tasks it starts) holds it again
without a second acquire, so a server can take the lease at admission and then call
:meth:`tierflow.runner.Runner.ask`, which holds it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from tierflow.errors import LeaseLost, ThreadBusy

log = logging.getLogger(__name__)

#: What a run does when its thread is busy with another run.
BusyStrategy = Literal["wait", "reject", "enqueue"]

STORE_FILE = "leases.sqlite"

# (store key, thread id) pairs held by this task and the tasks it started.
_held: ContextVar[frozenset[tuple[str, str]]] = ContextVar("tierflow_leases", default=frozenset())


class ThreadLeases(ABC):
    """A lease per thread: at most one holder, until it releases or its TTL passes.

    Implementations make each method one atomic statement; ``holder`` is an opaque id
    unique to one run.
    """

    #: Identifies the store (a file path, a database URL): leases held in one store
    #: are re-entrant for the task holding them.
    key: str

    @abstractmethod
    async def acquire(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        """Take the lease if it is free, expired or ``holder``'s; True if now held."""

    @abstractmethod
    async def renew(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        """Push the expiry ``ttl_s`` from now; False if ``holder`` no longer holds it."""

    @abstractmethod
    async def release(self, thread_id: str, holder: str) -> None:
        """Give the lease up (a no-op if ``holder`` does not hold it)."""

    @asynccontextmanager
    async def hold(
        self,
        thread_id: str,
        *,
        strategy: BusyStrategy = "reject",
        ttl_s: float = 30.0,
        wait_s: float = 300.0,
        poll_s: float = 0.05,
    ) -> AsyncIterator[None]:
        """Hold ``thread_id``'s lease for the block, renewing it in the background.

        Raises :class:`ThreadBusy` when the thread is busy (``reject``) or stays busy
        for ``wait_s`` (``wait``, ``enqueue``), and :class:`LeaseLost` from the block if
        the lease could not be renewed in time and the block was cancelled for it.
        """
        mark = (self.key, thread_id)
        if mark in _held.get():
            yield  # this task holds it already
            return
        holder = uuid.uuid4().hex
        await self._take(thread_id, holder, strategy, ttl_s, wait_s, poll_s)
        token = _held.set(_held.get() | {mark})
        task = asyncio.current_task()
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(thread_id, holder, ttl_s, task, lost))
        try:
            yield
        except asyncio.CancelledError:
            if lost.is_set() and task is not None and task.uncancel() == 0:
                raise LeaseLost(
                    f"thread '{thread_id}': the run's lease expired and another run took "
                    "the thread; this run was stopped"
                ) from None
            raise
        finally:
            _held.reset(token)
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            # Shielded: a cancelled run still frees its thread (else it waits out the TTL).
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self.release(thread_id, holder))

    async def _take(
        self,
        thread_id: str,
        holder: str,
        strategy: BusyStrategy,
        ttl_s: float,
        wait_s: float,
        poll_s: float,
    ) -> None:
        deadline = time.monotonic() + wait_s
        delay = poll_s
        while not await self.acquire(thread_id, holder, ttl_s):
            if strategy == "reject":
                raise ThreadBusy(thread_id)
            if time.monotonic() + delay > deadline:
                raise ThreadBusy(
                    thread_id, f"thread '{thread_id}' is still busy after {wait_s:g} s; try again"
                )
            await asyncio.sleep(delay)  # polls the database; a release is seen on the next
            delay = min(delay * 1.5, 0.5, ttl_s / 3)

    async def _heartbeat(
        self,
        thread_id: str,
        holder: str,
        ttl_s: float,
        task: asyncio.Task[object] | None,
        lost: asyncio.Event,
    ) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(ttl_s / 3)
            try:
                ok = await self.renew(thread_id, holder, ttl_s)
            except Exception as exc:  # a locked or unreachable store: try again next beat
                log.warning("renewing the lease of thread %r failed: %s", thread_id, exc)
                ok = time.monotonic() - renewed < ttl_s * 2 / 3
            else:
                renewed = time.monotonic() if ok else renewed
            if not ok:
                lost.set()
                if task is not None:
                    task.cancel()
                return


_NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # unix seconds, the database's clock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    thread_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
)
"""

_ACQUIRE = f"""
INSERT INTO leases (thread_id, holder, expires_at) VALUES (?1, ?2, {_NOW} + ?3)
ON CONFLICT (thread_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leases.expires_at <= {_NOW} OR leases.holder = excluded.holder
"""

_RENEW = f"UPDATE leases SET expires_at = {_NOW} + ?3 WHERE thread_id = ?1 AND holder = ?2"

_RELEASE = "DELETE FROM leases WHERE thread_id = ?1 AND holder = ?2"


class SqliteThreadLeases(ThreadLeases):
    """Leases in a SQLite file, safe for concurrent processes on one machine.

    Each process keeps one connection (opened on first use, reopened after a fork) and
    runs each statement on it in a worker thread. It used to open a connection per call
    and commit with a sync to disk: ~4 ms of CPU and ~40 ms of waiting per run on a
    loaded 2-core machine, for two statements. ``synchronous=NORMAL`` in WAL mode still
    survives a killed process (what leases are for); after a power loss every lease is
    stale anyway and expires with its TTL.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key = f"sqlite:{path}"
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()  # one statement at a time on the shared connection

    @classmethod
    def in_dir(cls, state_dir: Path) -> SqliteThreadLeases:
        return cls(state_dir / STORE_FILE)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None or self._pid != os.getpid():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # timeout: how long to wait for another process's write lock.
                conn = sqlite3.connect(
                    self.path, timeout=10.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
                self._conn, self._pid = conn, os.getpid()
            yield self._conn

    def close(self) -> None:
        """Close this process's connection (the next call opens another)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    def _write(self, sql: str, *args: object) -> bool:
        with self._connect() as conn:
            return conn.execute(sql, args).rowcount == 1

    async def acquire(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        return await asyncio.to_thread(self._write, _ACQUIRE, thread_id, holder, ttl_s)

    async def renew(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        return await asyncio.to_thread(self._write, _RENEW, thread_id, holder, ttl_s)

    async def release(self, thread_id: str, holder: str) -> None:
        await asyncio.to_thread(self._write, _RELEASE, thread_id, holder)

    def holder(self, thread_id: str) -> str | None:
        """Who holds the thread now (None: free or expired); for tests and diagnostics."""
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT holder FROM leases WHERE thread_id = ? AND expires_at > {_NOW}",
                (thread_id,),
            ).fetchone()
        return None if row is None else str(row[0])


_PG_MIGRATIONS = (
    """
    CREATE TABLE thread_leases (
        thread_id TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    """,
)
_PG_ACQUIRE = (
    "INSERT INTO thread_leases (thread_id, holder, expires_at) "
    "VALUES (%(thread)s, %(holder)s, now() + make_interval(secs => %(ttl)s)) "
    "ON CONFLICT (thread_id) DO UPDATE SET holder = EXCLUDED.holder, "
    "expires_at = EXCLUDED.expires_at "
    "WHERE thread_leases.expires_at <= now() OR thread_leases.holder = EXCLUDED.holder"
)
_PG_RENEW = (
    "UPDATE thread_leases SET expires_at = now() + make_interval(secs => %(ttl)s) "
    "WHERE thread_id = %(thread)s AND holder = %(holder)s"
)
_PG_RELEASE = "DELETE FROM thread_leases WHERE thread_id = %(thread)s AND holder = %(holder)s"


class PostgresThreadLeases(ThreadLeases):
    """Leases in PostgreSQL (``[state] database_url``): several machines share them.

    The same three statements as SQLite's, on the database's clock; each call opens a
    short autocommit connection in a worker thread, as :class:`SqliteThreadLeases` does.
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        # Imported here: only a PostgreSQL deployment needs the driver.
        from tierflow import database

        self._db = database
        self.url = url
        self.key = f"postgres:{database.redact(url)}"
        self.timeout_s = connect_timeout_s
        self._ready = False

    def _write(self, sql: str, **args: object) -> bool:
        with closing(self._db.connect_sync(self.url, self.timeout_s)) as conn:
            if not self._ready:
                self._db.migrate_sync(conn, "leases", _PG_MIGRATIONS)
                self._ready = True
            return bool(conn.execute(sql, args).rowcount == 1)

    async def acquire(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        return await asyncio.to_thread(
            self._write, _PG_ACQUIRE, thread=thread_id, holder=holder, ttl=ttl_s
        )

    async def renew(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        return await asyncio.to_thread(
            self._write, _PG_RENEW, thread=thread_id, holder=holder, ttl=ttl_s
        )

    async def release(self, thread_id: str, holder: str) -> None:
        await asyncio.to_thread(self._write, _PG_RELEASE, thread=thread_id, holder=holder)


def leases_for(state_dir: Path, database_url: str | None, timeout_s: float = 5.0) -> ThreadLeases:
    """PostgreSQL leases with a database URL, else SQLite in ``state_dir``."""
    if database_url:
        return PostgresThreadLeases(database_url, connect_timeout_s=timeout_s)
    return SqliteThreadLeases.in_dir(state_dir)
