"""Spike: how long Celery + Redis takes to hand a task over after ``kill -9`` of its worker,
measured the way ``tests/server/test_workers.py`` measures the DBOS queue (2.0 s).

Not part of ``tierflow bench`` and not a dependency: it needs ``pip install celery==5.7.0
redis==8.1.0`` and Debian's ``redis-server``. Run ``python -m tierflow.bench.celery_spike``;
it prints JSON (recorded in ``bench/results/celery-spike.json``).

Set-up, as Celery's documentation prescribes for tasks that must survive a worker's death:
``task_acks_late`` (acknowledged only once finished), ``task_reject_on_worker_lost``,
prefetch 1, the Redis transport's ``visibility_timeout`` set low (default: 1 h). Two
workers (``--pool solo``) on one Redis started on 127.0.0.1; one task that records its
start and then runs past the measurement; ``kill -9`` of the worker running it. Measured:
the time from the kill to the task starting again on the other worker, with kombu's
restore sweep tuned to every second and at its default. Everything started here is
stopped; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BROKER_ENV = "TIERFLOW_SPIKE_BROKER"
DIR_ENV = "TIERFLOW_SPIKE_DIR"
SWEEP_ENV = "TIERFLOW_SPIKE_SWEEP"  # "1": kombu's restore sweep every second
VISIBILITY_S = 5.0
WAIT_S = 130.0
_SWEEP = {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}

CONF: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_transport_options": {
        "visibility_timeout": VISIBILITY_S,
        # kombu's defaults scan for expired messages every 10th tick of 10 s: ~100 s
        **(_SWEEP if os.environ.get(SWEEP_ENV) == "1" else {}),
    },
    "broker_connection_retry_on_startup": True,
}


def hold() -> None:
    """The task: record its start, then run past the measurement."""
    with (Path(os.environ[DIR_ENV]) / "starts").open("a") as f:
        f.write(f"{os.getpid()} {time.time()}\n")
    time.sleep(WAIT_S * 2)


@functools.cache
def _app() -> Any:
    # Imported here: celery is not a dependency of tierflow (pip install it for the spike).
    celery = importlib.import_module("celery")
    app = celery.Celery("spike", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))
    app.conf.update(CONF)
    app.task(name="spike.hold")(hold)
    return app


def __getattr__(name: str) -> Any:
    """``app`` for ``celery -A tierflow.bench.celery_spike:app worker``."""
    if name == "app":
        return _app()
    raise AttributeError(name)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def _worker(name: str, env: dict[str, str], work: Path) -> subprocess.Popen[bytes]:
    args = ["-m", "celery", "-A", "tierflow.bench.celery_spike:app", "worker", "--pool", "solo"]
    args += ["-n", f"{name}@spike", "--without-gossip", "--without-mingle", "-l", "warning"]
    return subprocess.Popen(
        [sys.executable, *args], env=env, stdout=(work / f"{name}.log").open("wb"), stderr=-2
    )


def _starts(work: Path) -> list[tuple[int, float]]:
    path = work / "starts"
    if not path.exists():
        return []
    return [(int(p), float(t)) for p, t in (ln.split() for ln in path.read_text().splitlines())]


def _wait(cond: Any, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def trial(fast_sweep: bool) -> dict[str, Any]:
    """One kill -9; seconds from the kill to the task starting on the other worker."""
    with tempfile.TemporaryDirectory() as tmp, _procs() as procs:
        work = Path(tmp)
        port = _port()
        redis = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        procs.append(subprocess.Popen([*redis, "--appendonly", "no"], stdout=-3))
        broker = f"redis://127.0.0.1:{port}/0"
        env = {**os.environ, BROKER_ENV: broker, DIR_ENV: tmp, SWEEP_ENV: str(int(fast_sweep))}
        workers = {name: _worker(name, env, work) for name in ("a", "b")}
        procs.extend(workers.values())
        time.sleep(3)  # both connected (a worker's start-up is not observable otherwise)
        client = importlib.import_module("celery").Celery("spike", broker=broker)
        client.conf.update(CONF)
        client.send_task("spike.hold")
        if not _wait(lambda: len(_starts(work)) >= 1, 30):
            return {"error": "the task never started"}
        victim = _starts(work)[0][0]
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        redelivered = _wait(lambda: len(_starts(work)) >= 2, WAIT_S)
        sweep = "every 1 s" if fast_sweep else "kombu's default (every 10th tick of 10 s)"
        out: dict[str, Any] = {"restore_sweep": sweep}
        if redelivered:
            pid, started = _starts(work)[1]
            out["seconds_to_restart"] = round(started - killed, 2)
            out["restarted_on"] = next((n for n, p in workers.items() if p.pid == pid), "?")
        else:
            out["seconds_to_restart"] = None
            out["note"] = f"not started again within {WAIT_S:g} s"
            out["surviving_worker_log_tail"] = (work / "b.log").read_text()[-600:]
        return out


def run() -> dict[str, Any]:
    return {
        "setup": (
            "celery 5.7.0, redis-py 8.1.0, redis-server (Debian); task_acks_late, "
            "task_reject_on_worker_lost, prefetch 1, --pool solo, visibility_timeout "
            f"{VISIBILITY_S:g} s (default 3600 s)"
        ),
        "trials": [trial(fast_sweep=True), trial(fast_sweep=False)],
        "dbos_for_comparison_s": 2.0,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
