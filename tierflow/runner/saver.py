"""The Runner's checkpointer, per ``[state] checkpointer`` (or ``Runner(checkpointer=...)``):
a saver given in code; ``sqlite`` at ``<state_dir>/checkpoints.sqlite``; ``postgres`` on
``[state] database_url`` (``langgraph-checkpoint-postgres``); ``memory`` (LangGraph's
``InMemorySaver``, gone with the process); ``none``, stateless (no checkpointer: the graph
is compiled without one). ``auto`` is postgres with a ``database_url``, else sqlite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal, get_args

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from tierflow import database
from tierflow.errors import UserError
from tierflow.runner.sqlite_saver import OneHopSqliteSaver
from tierflow.settings import Checkpointer, Durability, TierflowSettings

SaverKind = Literal["sqlite", "postgres", "memory", "none"]

#: The error of every feature that needs a checkpoint, in stateless mode.
STATELESS = '[state] checkpointer = "none" (stateless: one-shot questions only)'


def stateless_error(feature: str) -> UserError:
    """``feature`` (resume, approvals...) is unavailable without a checkpointer."""
    return UserError(f"{feature} needs a checkpoint, unavailable with {STATELESS}")


def saver_kind(
    settings: TierflowSettings, given: BaseCheckpointSaver[Any] | str | None
) -> SaverKind | None:
    """The checkpointer to open (None: the saver given in code)."""
    if isinstance(given, BaseCheckpointSaver):
        return None
    if given is None or given == "auto":
        return settings.state.saver_kind
    if given not in get_args(Checkpointer):
        choices = ", ".join(get_args(Checkpointer))
        raise UserError(f"unknown checkpointer '{given}' (expected a saver or one of {choices})")
    if given == "postgres" and settings.state.url is None:
        raise UserError('checkpointer "postgres" needs [state] database_url')
    kind: SaverKind = given  # type: ignore[assignment]  # checked against the Literal above
    return kind


def check_durability(value: str) -> Durability:
    """``value`` if it is a durability mode, else a one-line error."""
    if value not in get_args(Durability):
        expected = ", ".join(get_args(Durability))
        raise UserError(f"unknown durability '{value}' (expected one of {expected})")
    durability: Durability = value  # type: ignore[assignment]  # checked above
    return durability


def open_saver(
    settings: TierflowSettings,
    path: Path,
    given: BaseCheckpointSaver[Any] | None = None,
    kind: SaverKind | None = None,
) -> AbstractAsyncContextManager[BaseCheckpointSaver[Any] | None]:
    """The checkpointer of a runner, to open for a block (see the module docstring); None
    in stateless mode. One context manager, not a generator wrapping another: a runner
    left open when its loop ends must leave no nested async generators to finalise."""
    kind = kind or settings.state.saver_kind
    if given is not None:
        return nullcontext(given)
    if kind == "none":
        return nullcontext(None)
    if kind == "memory":
        return nullcontext(InMemorySaver())
    if kind == "postgres":
        return _postgres_saver(settings)
    return sqlite_saver(path)


@asynccontextmanager
async def sqlite_saver(path: Path) -> AsyncIterator[OneHopSqliteSaver]:
    """LangGraph's ``SqliteSaver`` on ``path`` (created), WAL journal,
    ``synchronous=NORMAL``, each async call one hop to its own thread
    (:mod:`tierflow.runner.sqlite_saver` says why not ``AsyncSqliteSaver``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A daemon-like executor: its thread is idle between calls, and a runner left open
    # when its event loop ends must not hold the interpreter at exit (nothing is pending
    # then: every write was awaited).
    executor = ThreadPoolExecutor(1, thread_name_prefix="tierflow-checkpoints")
    loop = asyncio.get_running_loop()
    saver = await loop.run_in_executor(executor, OneHopSqliteSaver.connect, path, executor)
    try:
        yield saver
    finally:
        await saver.call(saver.conn.close)
        executor.shutdown(wait=False)


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
