"""Leases: what a run's thread lease costs on SQLite, with the connection kept open (today)
and with a connection per statement (before; rebuilt here as a subclass).

Each hold is an acquire and a release (a run holds one; a heartbeat renews only past
``ttl / 3``). Sequential holds show the latency a run pays; 200 at once the CPU when many
runs start together. Rotated, interleaved rounds; CPU is ``time.process_time`` (the
worker threads' too).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from tierflow.runner.lease import SqliteThreadLeases

HOLDS = 200
ROUNDS = 3


class PerStatement(SqliteThreadLeases):
    """The former store: a new connection for every statement, closed after it (closing
    the file's last connection checkpoints the WAL and syncs it)."""

    _made = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._made:
            with super()._connect():  # the schema and WAL mode, once
                pass
            self.close()  # no kept connection: each statement's close is the last one
            self._made = True
        with closing(sqlite3.connect(self.path, timeout=10.0, isolation_level=None)) as conn:
            yield conn


async def _holds(leases: SqliteThreadLeases, together: bool) -> tuple[float, float]:
    async def one(i: int) -> None:
        async with leases.hold(f"t{i}"):
            pass

    await one(-1)  # creates the file
    cpu, wall = time.process_time(), time.perf_counter()
    if together:
        await asyncio.gather(*(one(i) for i in range(HOLDS)))
    else:
        for i in range(HOLDS):
            await one(i)
    return (time.process_time() - cpu) * 1000 / HOLDS, (time.perf_counter() - wall) * 1000 / HOLDS


def run() -> dict[str, Any]:
    load_before = os.getloadavg()
    stores: dict[str, type[SqliteThreadLeases]] = {
        "per_statement_before": PerStatement,
        "kept_open_after": SqliteThreadLeases,
    }
    figures: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS):
            names = list(stores) if r % 2 == 0 else list(stores)[::-1]
            for name in names:
                for together in (False, True):
                    leases = stores[name](Path(tmp) / f"{name}-{r}-{together}.sqlite")
                    figures.setdefault((name, together), []).append(
                        asyncio.run(_holds(leases, together))
                    )
                    leases.close()
    out: dict[str, Any] = {"holds": HOLDS, "rounds": ROUNDS}
    for (name, together), runs in figures.items():
        key = f"{name}_{'200_at_once' if together else 'sequential'}"
        out[key] = {
            "cpu_ms_per_hold": round(statistics.median(c for c, _ in runs), 3),
            "wall_ms_per_hold": round(statistics.median(w for _, w in runs), 3),
        }
    out["loadavg_before"] = [round(x, 2) for x in load_before]
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out["note"] = (
        "a hold = acquire + release; sequential wall is the latency a run pays, 200 at "
        "once is amortised; medians of rotated rounds on a shared 2-core machine"
    )
    return out
