"""Run a sandbox's supervisor process with a wall-clock deadline and capped output.

Written by hand because ``subprocess.run(timeout=...)`` waits for the pipes to close after
the kill (a grandchild holding stdout open hangs it) and buffers a flood in full. Here both
pipes are read non-blocking against one deadline, bytes past the cap are read and dropped
(so a flooding child is not blocked into a fake timeout), and after the process is gone we
give the pipes a short grace and then stop reading, whoever still holds them.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_CHUNK = 65536
_TICK_S = 0.05
_PIPE_GRACE_S = 0.25  # after the process exits, how long output may still arrive
_REAP_S = 2.0  # a SIGKILLed process is gone well within this


@dataclass(kw_only=True)
class Stream:
    """Bytes read from one pipe, up to ``limit``; the rest is counted and dropped."""

    limit: int
    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        self.data += chunk[: max(room, 0)]
        self.dropped += max(len(chunk) - max(room, 0), 0)

    def text(self, max_chars: int) -> tuple[str, bool]:
        text = self.data.decode("utf-8", errors="replace")
        return text[:max_chars], self.dropped > 0 or len(text) > max_chars


@dataclass(frozen=True, kw_only=True)
class Completed:
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    returncode: int
    timed_out: bool
    killed_reason: str | None  # set when ``watch`` asked for the kill
    duration_ms: float


def run_capped(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout_s: float,
    max_chars: int,
    cwd: str = "/",
    popen_kwargs: Mapping[str, Any] | None = None,
    status_fd: int | None = None,
    on_status: Callable[[bytes], None] | None = None,
    close_after_spawn: Sequence[int] = (),
    watch: Callable[[], str | None] | None = None,
) -> Completed:
    """Spawn ``argv`` in a new session and collect stdout/stderr until it exits or the
    deadline passes, then SIGKILL its process group.

    ``status_fd`` (the read end of a pipe whose write end the child holds) is read in the
    same loop and each chunk handed to ``on_status``; ``close_after_spawn`` are fds passed to
    the child that the parent closes once it has been spawned. ``watch`` is called every tick; a
    non-None answer is a reason to kill now (e.g. the working dir is over its size cap).
    """
    started = time.monotonic()
    deadline = started + timeout_s
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            close_fds=True,
            start_new_session=True,
            **(popen_kwargs or {}),
        )
    finally:
        for fd in close_after_spawn:  # our copies of fds only the child should hold
            os.close(fd)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Stream(limit=max_chars * 4 + 4), Stream(limit=max_chars * 4 + 4)
    sel = selectors.DefaultSelector()
    for pipe, stream in ((proc.stdout, out), (proc.stderr, err)):
        os.set_blocking(pipe.fileno(), False)
        sel.register(pipe.fileno(), selectors.EVENT_READ, stream.feed)
    if status_fd is not None:
        os.set_blocking(status_fd, False)
        sel.register(status_fd, selectors.EVENT_READ, on_status or (lambda _b: None))
    # The pidfd wakes the loop when the process exits, even after it closed both pipes.
    pidfd = os.pidfd_open(proc.pid)
    sel.register(pidfd, selectors.EVENT_READ, None)
    timed_out, reason = False, None
    exited_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            streams = len(sel.get_map()) - (exited_at is None)
            if exited_at is not None and (streams == 0 or now >= exited_at + _PIPE_GRACE_S):
                break  # done; or someone else holds a pipe open, which is not our wait
            if now >= deadline:
                timed_out = True
                break
            if watch is not None and (reason := watch()) is not None:
                break
            wait = deadline - now
            if exited_at is not None:
                wait = min(wait, exited_at + _PIPE_GRACE_S - now)
            if watch is not None:
                wait = min(wait, _TICK_S)
            for key, _ in sel.select(timeout=max(wait, 0)):
                if key.fd == pidfd:
                    exited_at = time.monotonic()
                    sel.unregister(pidfd)
                    continue
                try:
                    chunk = os.read(key.fd, _CHUNK)
                except BlockingIOError:
                    continue
                if chunk:
                    key.data(chunk)
                else:
                    sel.unregister(key.fd)
    finally:
        sel.close()
        os.close(pidfd)
        # Before reaping, so the group id cannot have been reused: anything left in it
        # (only possible in the weak layer) goes too.
        _kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL is not ignorable
            proc.wait(timeout=_REAP_S)
        proc.stdout.close()
        proc.stderr.close()
    stdout, stdout_cut = out.text(max_chars)
    stderr, stderr_cut = err.text(max_chars)
    return Completed(
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=stdout_cut,
        stderr_truncated=stderr_cut,
        returncode=proc.returncode if proc.returncode is not None else -signal.SIGKILL,
        timed_out=timed_out,
        killed_reason=reason,
        duration_ms=round((time.monotonic() - started) * 1000, 2),
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # in case it left its group
