"""Breaker states in PostgreSQL (``[state] database_url``), shared by every process on the
database: the same rows and contract as the SQLite :class:`BreakerStore`.

Callers are synchronous (a breaker decides under a thread lock), so this uses one
synchronous psycopg connection per process and database, kept open and guarded by a
lock. Each write is a one-row upsert; reads happen on a breaker's first use and then at
most every :attr:`PostgresBreakerStore.refresh_s` seconds (about 0.3 ms on a local
database). A database that cannot be reached is logged once; the breaker keeps working in
memory, and the store tries to reconnect at most every ``retry_s`` seconds, so a dead
database never costs a connect timeout on every call.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from tierflow import database
from tierflow.errors import DatabaseUnavailable
from tierflow.resilience.breaker import (
    _COLUMNS,
    BreakerSnapshot,
    row_snapshot,
    snapshot_row,
)

log = logging.getLogger("tierflow.resilience")

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE breakers (
        backend TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        opened_at DOUBLE PRECISION,
        retry_at DOUBLE PRECISION,
        last_error TEXT,
        last_error_at DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL DEFAULT 0
    )
    """,
)
_UPSERT = (
    f"INSERT INTO breakers ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "
    "ON CONFLICT (backend) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM breakers"

_STORES: dict[str, PostgresBreakerStore] = {}
_STORES_LOCK = threading.Lock()


def shared_store(url: str, timeout_s: float = 5.0) -> PostgresBreakerStore:
    """The process's store for ``url`` (one connection, whatever the number of breakers)."""
    with _STORES_LOCK:
        store = _STORES.get(url)
        if store is None:
            store = _STORES[url] = PostgresBreakerStore(url, timeout_s)
        return store


class PostgresBreakerStore:
    """Breaker rows in the ``breakers`` table, migrated on first use."""

    refresh_s: float | None = 1.0
    retry_s = 30.0  # after a failure, how long before connecting again

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._conn: Any = None
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._warned = False

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]] | None:
        """Run one statement; None if the database is unavailable (logged once)."""
        with self._lock:
            if self._conn is None:
                if time.monotonic() < self._down_until:
                    return None
                try:
                    conn = database.connect_sync(self.url, self.timeout_s)
                    database.migrate_sync(conn, "breakers", MIGRATIONS)
                except Exception as exc:
                    self._failed(exc)
                    return None
                self._conn = conn
            try:
                cur = self._conn.execute(sql, args)
                return list(cur.fetchall()) if cur.description else []
            except Exception as exc:
                self._failed(exc)
                return None

    def _failed(self, exc: Exception) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._down_until = time.monotonic() + self.retry_s
        if not self._warned:
            self._warned = True
            detail = (
                str(exc)
                if isinstance(exc, DatabaseUnavailable)
                else (database.describe(self.url, exc))
            )
            log.warning("breaker state not shared: %s", detail)

    def save(self, snap: BreakerSnapshot) -> None:
        self._run(_UPSERT, snapshot_row(snap))

    def load(self, backend: str) -> BreakerSnapshot | None:
        rows = self._run(f"{_SELECT} WHERE backend = %s", (backend,))
        return row_snapshot(rows[0]) if rows else None

    def load_all(self) -> dict[str, BreakerSnapshot]:
        return {r[0]: row_snapshot(r) for r in self._run(_SELECT) or []}

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
