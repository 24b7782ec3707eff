"""The Runner's checkpointer: the one it was given, else PostgreSQL with ``[state]
database_url`` (``langgraph-checkpoint-postgres``), else SQLite at
``<state_dir>/checkpoints.sqlite``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from tierflow import database
from tierflow.settings import TierflowSettings


@asynccontextmanager
async def open_saver(
    settings: TierflowSettings, path: Path, given: BaseCheckpointSaver[Any] | None = None
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The checkpointer of a runner, open for the block (see the module docstring)."""
    if given is not None:
        yield given
        return
    if settings.state.url:
        async with _postgres_saver(settings) as saver:
            yield saver
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opened by hand rather than with AsyncSqliteSaver.from_conn_string: a runner left
    # open when its event loop ends must not hold the interpreter at exit (aiosqlite's
    # worker thread is not a daemon) nor leave two nested async generators for the loop
    # to finalise (which printed "aclose(): asynchronous generator is already running").
    # Several processes (a server's workers) may write the file: wait for their locks.
    conn = aiosqlite.connect(str(path), timeout=30)
    conn._thread.daemon = True  # aiosqlite has no option for it
    await conn
    try:
        saver = AsyncSqliteSaver(conn)
        await saver.setup()  # WAL journal
        # In WAL mode NORMAL keeps every committed checkpoint through a process crash
        # (SIGKILL); only an OS crash can lose the last ones. FULL cost ~10 ms a run.
        await conn.execute("PRAGMA synchronous=NORMAL")
        yield saver
    finally:
        await conn.close()


@asynccontextmanager
async def _postgres_saver(settings: TierflowSettings) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """``langgraph-checkpoint-postgres`` on a connection pool of ``[state] database_url``;
    its tables are set up once per database (under an advisory lock: two servers starting
    together on a fresh database would otherwise both create them)."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row

    state = settings.state
    assert state.url is not None
    # The saver's own requirements: autocommit, no prepared statements (poolers), dict rows.
    async with database.open_pool(
        state.url,
        size=state.pool_size,
        timeout_s=state.connect_timeout_s,
        autocommit=True,
        prepare_threshold=0,
        row_factory=dict_row,
    ) as pool:
        saver = AsyncPostgresSaver(pool)
        async with database.session_lock(pool, "checkpoints"):
            await saver.setup()
        yield saver
