"""The SQLite store shared by processes (the API and ``tierflow worker``s write one
``server.sqlite``): concurrent reads and writes on one connection never fail with
"database is locked" while another connection writes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from tierflow.server.store import RunRow, SqliteStore


async def test_interleaved_reads_and_writes_never_lock_against_another_writer(
    tmp_path: Path,
) -> None:
    # The API serves many requests on one connection. A read that kept its statement (and
    # so its snapshot) open while another request wrote on the same connection made that
    # write fail at once (SQLITE_BUSY / SQLITE_BUSY_SNAPSHOT: no busy timeout applies)
    # whenever a worker process wrote the file meanwhile.
    path = tmp_path / "server.sqlite"
    store = SqliteStore(path)
    await store.open()
    stop = threading.Event()
    writer = threading.Thread(target=lambda: other_process())

    def other_process() -> None:  # a worker writing its run's events, one a millisecond
        with sqlite3.connect(path, timeout=30, isolation_level=None) as conn:
            while not stop.wait(0.001):
                conn.execute("INSERT INTO run_events (run_id, event, data) VALUES ('r0', 'x', '0')")

    try:
        await store.create_thread("t", {}, None)
        now = time.time()
        runs = [f"r{i}" for i in range(10)]
        for run_id in runs:
            await store.create_run(RunRow(run_id, "t", "g", now, now, "pending", "reject"))
        writer.start()

        async def request(n: int, run_id: str) -> None:
            for i in range(20):
                if n % 2:  # out of step with the others: reads and writes interleave
                    await store.add_event(run_id, "values", {"i": i})
                await store.run_status(run_id)
                await store.get_thread("t")
                if not n % 2:
                    await store.add_event(run_id, "values", {"i": i})
            await store.set_run_status(run_id, "success")

        await asyncio.gather(*(request(n, r) for n, r in enumerate(runs)))
        assert {await store.run_status(r) for r in runs} == {"success"}
        assert len(await store.events_after("r1", 0)) == 20
    finally:
        stop.set()
        if writer.is_alive():
            writer.join(10)
        await store.close()
