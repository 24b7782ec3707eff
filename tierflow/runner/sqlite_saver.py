"""The SQLite checkpointer: LangGraph's own ``SqliteSaver`` (its tables, SQL and
serialisation, unchanged), whose async methods each run in ONE hop on a thread of its own.

Why not ``AsyncSqliteSaver``: through aiosqlite every statement, commit and cursor close is
a round trip between the event loop and aiosqlite's thread (3-4 per ``aput``, ~40 per run
of the default graph), each two thread wake-ups. Measured on the shared 2-core machine, a
checkpoint write took 0.9 ms at p50 but 15-19 ms at p95 (waiting for the threads to be
scheduled), which made the tail of a whole run. Here a write is one hop: the statement and
its commit run together on the saver's thread (bench/results/overhead.json).

The data on disk is the same as ``AsyncSqliteSaver``'s: either reads the other's file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.sqlite import SqliteSaver

T = TypeVar("T")


class OneHopSqliteSaver(SqliteSaver):
    """``SqliteSaver`` with async methods, each one call on the saver's own thread."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        super().__init__(conn)
        self._executor = executor

    @classmethod
    def connect(cls, path: Path, executor: ThreadPoolExecutor) -> OneHopSqliteSaver:
        """On ``path``, WAL journal, ``synchronous=NORMAL`` (called on ``executor``)."""
        # Several processes (a server's workers) may write the file: wait for their locks.
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        saver = cls(conn, executor)
        saver.setup()  # WAL journal, tables
        # In WAL mode NORMAL keeps every committed checkpoint through a process crash
        # (SIGKILL); only an OS crash can lose the last ones. FULL cost ~10 ms a run.
        conn.execute("PRAGMA synchronous=NORMAL")
        return saver

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the saver's thread (one hop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.call(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def read() -> list[CheckpointTuple]:
            return list(self.list(config, filter=filter, before=before, limit=limit))

        for item in await self.call(read):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self.call(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self.call(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self.call(self.delete_thread, thread_id)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, Any]:
        return await self.call(self.get_delta_channel_history, config=config, channels=channels)
