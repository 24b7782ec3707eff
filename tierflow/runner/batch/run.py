"""``run_batch``: what is left to do, who does it, and the output put back in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from tierflow.runner.batch.items import BatchItem, BatchOptions, OnResult, Result, failed_result
from tierflow.runner.batch.local import run_local
from tierflow.runner.batch.log import BatchSummary, ResultLog


def run_batch(
    items: Sequence[BatchItem],
    out: Path,
    options: BatchOptions,
    *,
    on_start: Callable[[int], None] | None = None,
    on_result: OnResult | None = None,
) -> BatchSummary:
    """Run the lines of ``items`` not yet in ``out``; ``on_start(pending)`` is called once,
    ``on_result`` after each line is written. Blocks until the batch ends."""
    log = ResultLog(out)
    done = log.done()
    todo = [i for i in items if i.key not in done]
    summary = BatchSummary(total=len(items), skipped=len(items) - len(todo))
    if on_start is not None:
        on_start(len(todo))
    with log:

        def write(result: Result) -> None:
            log.write(result)
            if on_result is not None:
                on_result(result)

        try:
            for item in todo:
                if item.error is not None:
                    write(failed_result(item, item.error))
            runnable = [i for i in todo if i.error is None]
            if options.server is not None:
                from tierflow.runner.batch.remote import run_remote

                asyncio.run(run_remote(runnable, options, write))
            elif options.processes > 1 and len(runnable) > 1:
                from tierflow.runner.batch.pool import run_pool

                run_pool(runnable, options, write)
            else:
                asyncio.run(run_local(runnable, options, write))
        finally:
            summary.count(log.reorder(items))
    return summary
