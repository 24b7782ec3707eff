"""A batch in this process: one Runner, ``concurrency`` questions in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tierflow.errors import TierflowError
from tierflow.runner.batch.items import (
    BatchItem,
    BatchOptions,
    OnResult,
    Result,
    failed_result,
    record_result,
)


async def run_local(items: Sequence[BatchItem], options: BatchOptions, write: OnResult) -> None:
    """Run ``items`` on one Runner in this process, ``concurrency`` at a time."""
    from tierflow.runner.runner import Runner
    from tierflow.settings import load_settings

    async with Runner(load_settings(options.config)) as runner:

        async def one(item: BatchItem) -> Result:
            try:
                record = await runner.ask(
                    item.question, graph=item.graph or options.graph, thread_id=item.thread_id
                )
            except TierflowError as exc:
                return failed_result(item, f"line {item.line}: {exc}")
            except Exception as exc:  # one line's failure must not end the batch
                return failed_result(item, f"line {item.line}: {type(exc).__name__}: {exc}")
            return record_result(item, record.model_dump(mode="json"), options.full)

        await bounded(items, options.concurrency, one, write)


async def bounded(
    items: Iterable[BatchItem],
    concurrency: int,
    one: Callable[[BatchItem], Any],
    write: OnResult,
) -> None:
    """``one(item)`` for each item, ``concurrency`` at once, writing each result as it
    ends. Lines of one thread run one after the other, in input order."""
    queue: asyncio.Queue[BatchItem] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    locks: dict[str, asyncio.Lock] = {}

    async def worker() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            if item.thread_id is None:
                write(await one(item))
                continue
            async with locks.setdefault(item.thread_id, asyncio.Lock()):
                write(await one(item))

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
