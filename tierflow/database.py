"""PostgreSQL state (``[state] database_url``, env ``TIERFLOW_DATABASE_URL``): connecting
with one-line errors, and the migrations each component applies at start.

Nothing here runs unless a URL is set; psycopg (the ``postgres`` extra) is imported on
first use. Every error names the database without its password.

Migrations: each component (``server``, ``breakers``) has an ordered list of SQL
scripts; ``schema_version`` holds one row per component with how many were applied.
:func:`migrate` applies the missing ones in one transaction that first takes a
transaction-level advisory lock, so servers starting together on one database apply
each script once (the second waits, then finds nothing to do), and a failing script
leaves the schema as it was.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from tierflow.errors import DatabaseUnavailable, UserError

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

_LOCK_WAIT_S = 120.0  # another process setting up the same tables
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
_SCHEMA_VERSION = (
    "CREATE TABLE IF NOT EXISTS schema_version "
    "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)
_SET_VERSION = (
    "INSERT INTO schema_version VALUES (%s, %s) "
    "ON CONFLICT (component) DO UPDATE SET version = excluded.version"
)


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    url = _PASSWORD.sub(r"\1***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def describe(url: str, exc: BaseException) -> str:
    """``exc`` as one line naming the database (without its password)."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return f"database {redact(url)}: {redact(detail)}"


def lock_key(name: str) -> int:
    """A stable 32-bit advisory-lock key for ``name``."""
    return zlib.crc32(f"tierflow:{name}".encode()) - 2**31


def drivers() -> Any:
    """psycopg, or a one-line UserError naming the extra that installs it."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401  (the pool comes with the extra too)
    except ImportError:
        raise UserError(
            "TIERFLOW_DATABASE_URL needs PostgreSQL drivers: pip install 'tierflow[postgres]'"
        ) from None
    return psycopg


def check(url: str, timeout_s: float = 5.0) -> None:
    """Connect once and run ``SELECT 1``: a one-line :class:`DatabaseUnavailable` if the
    database is unreachable or refuses us (``tierflow serve`` calls it before starting)."""
    psycopg = drivers()
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout_s))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise DatabaseUnavailable(describe(url, exc)) from None


@asynccontextmanager
async def open_pool(
    url: str, *, size: int, timeout_s: float = 5.0, **kwargs: Any
) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """An open async pool on ``url`` (``kwargs`` go to each connection), closed on exit.

    A first direct connection reports why the database cannot be used (refused, bad
    password, no such database) as one line, rather than the pool's timeout.
    """
    psycopg = drivers()
    from psycopg_pool import AsyncConnectionPool

    timeout = max(1, round(timeout_s))
    try:
        first = await psycopg.AsyncConnection.connect(url, connect_timeout=timeout)
        await first.close()
    except psycopg.Error as exc:
        raise DatabaseUnavailable(describe(url, exc)) from None
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=size,
        kwargs={"connect_timeout": timeout, **kwargs},
        open=False,
        name="tierflow",
    )
    try:
        await pool.open(wait=True, timeout=timeout_s)
    except Exception as exc:
        await pool.close()
        raise DatabaseUnavailable(describe(url, exc)) from None
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def session_lock(pool: AsyncConnectionPool[Any], name: str) -> AsyncIterator[None]:
    """A session-level advisory lock held on one pooled connection for the block (for
    setup code that cannot run in one transaction, such as ``CREATE INDEX
    CONCURRENTLY``)."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        # Polled, not waited for in one statement: a waiting statement is a transaction,
        # and the holder's CREATE INDEX CONCURRENTLY waits for every open transaction.
        for _ in range(int(_LOCK_WAIT_S / 0.05)):
            if await _value(conn, "SELECT pg_try_advisory_lock(%s)", lock_key(name)):
                break
            await asyncio.sleep(0.05)
        else:
            raise DatabaseUnavailable(f"waited {_LOCK_WAIT_S:.0f} s for the '{name}' set-up lock")
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))


async def _value(conn: Any, sql: str, *args: Any) -> Any:
    row = await (await conn.execute(sql, args)).fetchone()
    return row[0] if not isinstance(row, dict) else next(iter(row.values()))


async def migrate(pool: AsyncConnectionPool[Any], component: str, migrations: Sequence[str]) -> int:
    """Apply ``component``'s missing ``migrations`` (one transaction, under a
    transaction-level advisory lock); returns how many were applied."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("migrations"),))
        await conn.execute(_SCHEMA_VERSION)
        cur = await conn.execute(
            "SELECT version AS v FROM schema_version WHERE component = %s", (component,)
        )
        row = await cur.fetchone()  # a tuple or a dict, per the pool's row factory
        done = 0 if row is None else int(row["v"] if isinstance(row, dict) else row[0])
        for script in migrations[done:]:
            await conn.execute(script)
        if len(migrations) > done:
            await conn.execute(_SET_VERSION, (component, len(migrations)))
        return max(0, len(migrations) - done)


def connect_sync(url: str, timeout_s: float = 5.0) -> psycopg.Connection[Any]:
    """One autocommit connection (for the breaker store, whose callers are synchronous)."""
    pg = drivers()
    try:
        conn: psycopg.Connection[Any] = pg.connect(
            url, connect_timeout=max(1, round(timeout_s)), autocommit=True
        )
    except pg.Error as exc:
        raise DatabaseUnavailable(describe(url, exc)) from None
    return conn


def migrate_sync(conn: psycopg.Connection[Any], component: str, migrations: Sequence[str]) -> int:
    """:func:`migrate` on a synchronous connection."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("migrations"),))
        conn.execute(_SCHEMA_VERSION)
        row = conn.execute(
            "SELECT version FROM schema_version WHERE component = %s", (component,)
        ).fetchone()
        done = 0 if row is None else int(row[0])
        for script in migrations[done:]:
            conn.execute(script)
        if len(migrations) > done:
            conn.execute(_SET_VERSION, (component, len(migrations)))
        return max(0, len(migrations) - done)
