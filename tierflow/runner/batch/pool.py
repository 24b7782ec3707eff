"""``tierflow batch --processes P``: the pending lines over P spawned worker processes.

An asyncio process runs on one core; a batch whose runs are CPU-bound (many questions in
flight on fast backends) goes faster over several. Each worker has its own event loop
and its own ``Runner`` (hence its own model clients and checkpointer connection on the
shared SQLite file) and gets the lines whose position is its number modulo P (a
thread's lines all go to one worker, so they still run in order). Workers send each
result back over a queue; the parent alone writes the output file. A worker ends itself
when the parent dies (even by SIGKILL), so no orphan keeps calling the models.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import threading
import zlib
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from tierflow.errors import RunError, UserError
from tierflow.runner.batch.items import BatchItem, BatchOptions, OnResult, Result
from tierflow.runner.batch.local import run_local

_DONE = "__done__"
_FAILED = "__worker_failed__"


def shards(items: Sequence[BatchItem], processes: int) -> list[list[BatchItem]]:
    """Deal the items out by position; every line of one thread goes to the same shard."""
    out: list[list[BatchItem]] = [[] for _ in range(processes)]
    for k, item in enumerate(items):
        n = k if item.thread_id is None else zlib.crc32(item.thread_id.encode())
        out[n % processes].append(item)
    return [s for s in out if s]


def run_pool(items: Sequence[BatchItem], options: BatchOptions, write: OnResult) -> int:
    """Run ``items`` over ``options.processes`` workers, writing each result as it comes
    back; returns how many lines got no result (a worker died)."""
    parts = shards(items, options.processes)
    # The in-flight budget is shared: P processes with N/P questions each.
    per = max(1, -(-options.concurrency // len(parts)))
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    workers = [
        ctx.Process(
            target=_worker,
            args=([asdict(i) for i in part], replace(options, concurrency=per), results),
            name=f"tierflow-batch-{k}",
            daemon=True,
        )
        for k, part in enumerate(parts)
    ]
    for w in workers:
        w.start()
    written = 0
    running = len(workers)
    try:
        while running:
            try:
                message = results.get(timeout=0.5)
            except queue_mod.Empty:
                if not any(w.is_alive() for w in workers):
                    break  # every worker is gone without saying so: it died
                continue
            if message == _DONE:
                running -= 1
            elif _FAILED in message:
                error = UserError if message["usage"] else RunError
                raise error(f"batch worker: {message[_FAILED]}")
            else:
                write(message)
                written += 1
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
            w.join(5)
    return len(items) - written


def _worker(states: list[dict[str, Any]], options: BatchOptions, results: Any) -> None:
    # Ctrl-C reaches the whole process group: the parent decides, workers keep quiet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = mp.parent_process()
    if parent is not None:

        def orphaned() -> None:
            parent.join()  # returns when the parent process ends, however it ends
            os._exit(1)

        threading.Thread(target=orphaned, daemon=True, name="parent-watch").start()
    items = [BatchItem(**s) for s in states]

    def send(result: Result) -> None:
        results.put(result)

    try:
        asyncio.run(run_local(items, options, send))
    except Exception as exc:  # e.g. a config error: the parent reports it in one line
        results.put({_FAILED: str(exc), "usage": isinstance(exc, UserError)})
    finally:
        results.put(_DONE)
