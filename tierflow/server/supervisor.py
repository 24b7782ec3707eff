"""``tierflow serve --workers N``: the API process starts N ``tierflow worker`` processes
(the DBOS queue's executors, ``executor.py``), keeps them running and stops them on exit.

- once the API has started (its lifespan created the queue's tables): the N workers
  start, with ids ``<host>-<port>-w<i>``;
- a worker that exits on its own (a crash, ``kill -9``) is started again with the same
  id, so it recovers its own runs at once (a peer would after ``[server]
  worker_lease_s``); one that dies within 5 s of its start 5 times in a row is given
  up, with one line;
- when the API stops (SIGTERM, SIGINT), every worker gets SIGTERM: each drains for
  ``[server] drain_s``, then hands back, and is killed if still there 10 s later;
- when the API process is killed, each worker notices it was orphaned
  (``--exit-with-parent``) and stops as on SIGTERM.

The workers are ordinary subprocesses of ``tierflow worker`` with the same ``--config``
and ``--graph`` options; their output goes to the API's. Supervision is a thread polling
every 0.2 s rather than a process manager: the workers are the API's own children, and
systemd or Kubernetes supervise the API itself.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("tierflow.server")

FAST_DEATH_S = 5.0
GIVE_UP_AFTER = 5


@dataclass
class _Slot:
    worker_id: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    fast_deaths: int = 0
    given_up: bool = False


class WorkerPool:
    """N supervised ``tierflow worker`` processes (see the module docstring)."""

    def __init__(
        self,
        count: int,
        worker_args: Sequence[str],
        *,
        name: str,
        grace_s: float,
        say: Callable[[str], None] = print,
    ) -> None:
        host = socket.gethostname()
        self.slots = [_Slot(f"{host}-{name}-w{i}") for i in range(count)]
        self.args = list(worker_args)
        self.grace_s = grace_s
        self.say = say
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    def _spawn(self, slot: _Slot) -> None:
        cmd = [sys.executable, "-m", "tierflow", "worker", *self.args]
        cmd += ["--id", slot.worker_id, "--exit-with-parent"]
        slot.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        slot.started = time.monotonic()
        self.say(f"worker {slot.worker_id} started (pid {slot.proc.pid})")

    def start_when(self, ready: Callable[[], bool], gone: Callable[[], bool]) -> None:
        """Start the workers once ``ready()`` (the API answers), then supervise them;
        nothing if ``gone()`` first (the API failed to start)."""

        def run() -> None:
            while not ready():
                if gone() or self._stopping.wait(0.05):
                    return
            with self._lock:
                if self._stopping.is_set():
                    return
                for slot in self.slots:
                    self._spawn(slot)
            while not self._stopping.wait(0.2):
                self._check()

        self._watch = threading.Thread(target=run, name="tierflow-workers", daemon=True)
        self._watch.start()

    def _check(self) -> None:
        with self._lock:
            for slot in self.slots:
                proc = slot.proc
                if self._stopping.is_set() or slot.given_up or proc is None:
                    continue
                code = proc.poll()
                if code is None:
                    continue
                quick = time.monotonic() - slot.started < FAST_DEATH_S
                slot.fast_deaths = slot.fast_deaths + 1 if quick else 0
                if slot.fast_deaths >= GIVE_UP_AFTER:
                    slot.given_up = True
                    self.say(
                        f"worker {slot.worker_id} exited {GIVE_UP_AFTER} times within "
                        f"{FAST_DEATH_S:g} s of starting (last code {code}); not restarting it"
                    )
                    continue
                self.say(f"worker {slot.worker_id} exited (code {code}); starting it again")
                self._spawn(slot)

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def stop(self) -> None:
        """SIGTERM every worker, wait up to ``grace_s`` for them to drain, then kill."""
        with self._lock:
            self._stopping.set()
            procs = [s.proc for s in self.slots if s.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._watch is not None:
            self._watch.join(5)
