"""Batches of runs (closed loops), and the "tierflow, 2 processes" setup of the peers
benchmark: two spawned processes, each with its own Runner, each running half the runs at
half the concurrency, started together and aggregated.

The children stay up for the whole benchmark (no start-up cost in any figure). The parent
sends one JSON line per batch on a child's stdin; the child waits for the shared start
time, runs its half, and answers one JSON line: each run's final text (or error), its
process CPU time over the batch and its wall-clock start and end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from tierflow.bench.peers_setups import One, open_setup

Job = tuple[int, int, str]  # a, b, run marker


def jobs(prefix: str, n: int) -> list[Job]:
    """``n`` runs with distinct operands and markers ``PREFIX-i``."""
    return [(i, 7 * i + 3, f"{prefix}-{i}") for i in range(n)]


@dataclass
class Batch:
    """What a batch of runs returned: final text (or ``error: ...``) and latency per run."""

    texts: dict[str, str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    started: float = 0.0  # wall clock (time.time) at the start
    ended: float = 0.0


async def run_batch(one: One, work: Sequence[Job], concurrency: int) -> Batch:
    """Run ``work`` with ``concurrency`` workers taking the next job as each finishes;
    process CPU and wall time over the whole batch."""
    batch = Batch()
    pending = iter(work)

    async def worker() -> None:
        for a, b, marker in pending:
            t0 = time.perf_counter()
            try:
                batch.texts[marker] = await one(a, b, marker)
            except Exception as exc:
                batch.texts[marker] = f"error: {type(exc).__name__}: {exc}"[:300]
            batch.latencies.append(time.perf_counter() - t0)

    batch.started = time.time()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    batch.cpu_s = time.process_time() - cpu0
    batch.wall_s = time.perf_counter() - wall0
    batch.ended = time.time()
    return batch


# -- the child process ---------------------------------------------------------------------


async def _child(urls: Mapping[str, str]) -> None:
    async with contextlib.AsyncExitStack() as stack:
        ones = {
            lat: await stack.enter_async_context(open_setup("tierflow", url))
            for lat, url in urls.items()
        }
        for lat, one in ones.items():  # warm-up: compile, open the database, import
            await one(1, 1, f"warm-{lat}")
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            order = json.loads(line)
            await asyncio.sleep(max(0.0, order["start_at"] - time.time()))
            work = jobs(order["prefix"], order["runs"])
            batch = await run_batch(ones[order["latency"]], work, order["concurrency"])
            out = {k: getattr(batch, k) for k in ("texts", "cpu_s", "started", "ended")}
            print(json.dumps(out), flush=True)


def child_main(urls: Mapping[str, str]) -> None:
    asyncio.run(_child(urls))


START_TIMEOUT_S = 300.0
BATCH_TIMEOUT_S = 600.0


def _readline(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """One line of a child's stdout, waiting at most ``timeout_s`` (each answer is one
    line, so nothing waits in the file's buffer when select looks at the pipe)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        raise RuntimeError(f"a tierflow benchmark process gave no answer in {timeout_s:.0f} s")
    return proc.stdout.readline()


class TwoProcesses:
    """Two tierflow processes, each serving every backend of ``urls`` (latency -> URL)."""

    def __init__(self, urls: Mapping[str, str], n: int = 2) -> None:
        code = f"from tierflow.bench.peers_procs import child_main; child_main({dict(urls)!r})"
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]

    def wait_ready(self) -> None:
        """Block until every process has opened its runners and warmed up."""
        for p in self.procs:
            line = _readline(p, START_TIMEOUT_S).strip()
            if line != "ready":
                raise RuntimeError(f"a tierflow benchmark process did not start (got {line!r})")

    def batch(self, latency: str, prefix: str, runs: int, concurrency: int) -> Batch:
        """Split ``runs`` and ``concurrency`` between the processes, start them together."""
        n = len(self.procs)
        start_at = time.time() + 0.5
        for i, p in enumerate(self.procs):
            assert p.stdin is not None
            order = {
                "latency": latency,
                "prefix": f"{prefix}-p{i}",
                "runs": runs // n + (1 if i < runs % n else 0),
                "concurrency": max(1, concurrency // n),
                "start_at": start_at,
            }
            p.stdin.write(json.dumps(order) + "\n")
            p.stdin.flush()
        total = Batch(started=float("inf"))
        for p in self.procs:
            line = _readline(p, BATCH_TIMEOUT_S)
            if not line:
                raise RuntimeError(f"a tierflow benchmark process exited ({p.poll()})")
            part = json.loads(line)
            total.texts.update(part["texts"])
            total.cpu_s += part["cpu_s"]
            total.started = min(total.started, part["started"])
            total.ended = max(total.ended, part["ended"])
        total.wall_s = total.ended - total.started
        return total

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(OSError):
                if p.stdin:
                    p.stdin.close()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


@contextlib.contextmanager
def two_processes(urls: Mapping[str, str]) -> Iterator[TwoProcesses]:
    procs = TwoProcesses(urls)
    try:
        yield procs
    finally:
        procs.stop()
