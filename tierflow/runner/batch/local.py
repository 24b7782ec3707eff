"""A batch in this process: one Runner, ``concurrency`` questions in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import HumanMessage

from tierflow.errors import TierflowError
from tierflow.runner.batch.items import (
    BatchItem,
    BatchOptions,
    OnResult,
    Result,
    failed_result,
    record_result,
)
from tierflow.runner.control import read_thread

if TYPE_CHECKING:
    from tierflow.runner.runner import Runner


async def run_local(items: Sequence[BatchItem], options: BatchOptions, write: OnResult) -> None:
    """Run ``items`` on one Runner in this process, ``concurrency`` at a time."""
    from tierflow.runner.runner import Runner
    from tierflow.settings import load_settings

    async with Runner(load_settings(options.config)) as runner:

        async def one(item: BatchItem) -> Result:
            try:
                # A batch waits for a busy thread (e.g. one still leased by a batch that was
                # killed, until its lease lapses) rather than failing the line.
                if await cut_off(runner, item):
                    record = await runner.resume(str(item.thread_id), on_busy="wait")
                else:
                    record = await runner.ask(
                        item.question,
                        graph=item.graph or options.graph,
                        thread_id=item.thread_id,
                        on_busy="wait",
                    )
            except TierflowError as exc:
                return failed_result(item, f"line {item.line}: {exc}")
            except Exception as exc:  # one line's failure must not end the batch
                return failed_result(item, f"line {item.line}: {type(exc).__name__}: {exc}")
            return record_result(item, record.model_dump(mode="json"), options.full)

        await bounded(items, options.concurrency, one, write)


async def cut_off(runner: Runner, item: BatchItem) -> bool:
    """Whether the line's thread holds this very question's run, cut off (the batch was
    killed mid-run): it is continued from its checkpoint, so no completed step (a tool
    call) runs again. A new thread (no ``thread_id``) has nothing to continue."""
    if item.thread_id is None:
        return False
    config = {"configurable": {"thread_id": item.thread_id}}
    saved = await runner.checkpointer.aget_tuple(config)  # type: ignore[arg-type]
    if saved is None:
        return False
    values = saved.checkpoint["channel_values"]
    app = runner.compile(str(values.get("graph") or "default"), runner.checkpointer)
    if (await read_thread(app, config, saved)).status != "unfinished":
        return False
    # Killed right after the run's input was checkpointed, before ``__start__`` ran, the
    # question is still in the ``__start__`` channel, not yet in ``messages``.
    start = values.get("__start__")
    pending = start.get("messages", []) if isinstance(start, dict) else []
    asked = [m for m in [*values.get("messages", []), *pending] if isinstance(m, HumanMessage)]
    return bool(asked) and asked[-1].content == item.question.strip()


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
