"""The strongest layer: bubblewrap (user, pid, net, mount, ipc, uts namespaces).

The child sees only a read-only ``/usr`` (plus the ``/bin``, ``/lib*`` links), a fresh
``/proc`` of its own pid namespace, a minimal read-only ``/dev``, and a size-capped tmpfs
``/sandbox`` as working dir (``/tmp`` points there); its network namespace holds only ``lo``;
its environment is built from nothing. Inside, the bootstrap applies rlimits and the baseline
seccomp filter before exec'ing the user's code.

Lifetime: the sandbox's pid-namespace init is the child bwrap clones; when it exits the kernel
kills everything left in the namespace (double-fork + setsid does not escape it). bwrap's
``--json-status-fd`` tells us that init's pid; we hold a pidfd on it, kill it ourselves after
the run and wait until it is gone, so no sandbox process outlives :meth:`run`.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
from pathlib import Path

from tierflow.tools.sandbox.base import (
    SANDBOX_GID,
    SANDBOX_UID,
    SandboxLimits,
    SandboxResult,
    SandboxSetupFailed,
    boot_argv,
    child_argv,
    child_env,
    drop_to_sandbox_user,
    rlimits,
)
from tierflow.tools.sandbox.boot import MARK, SETUP_FAILED
from tierflow.tools.sandbox.process import run_capped

WORKDIR = "/sandbox"
MAIN_PY = "/run/sandbox/main.py"
_CHILD_PID = re.compile(rb'"child-pid":\s*(\d+)')
_TEARDOWN_S = 5.0
_MIN_VERSION = (0, 8, 0)
BWRAP_HINT = "apt-get install -y bubblewrap"


def _system_dirs() -> list[str]:
    """Bind/symlink arguments for the top-level system dirs next to ``/usr``: on a merged-/usr
    system they are links into it, elsewhere real dirs bound read-only."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    return args


class BubblewrapSandbox:
    """Runs code under ``bwrap``; see the module docstring for what it isolates."""

    name = "bubblewrap"
    weak = False

    def __init__(self, bwrap: str) -> None:
        self._bwrap = bwrap

    @classmethod
    def find(cls) -> BubblewrapSandbox | str:
        """The layer, or why it cannot be used (before trying it)."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            return f"bwrap not found ({BWRAP_HINT})"
        try:
            out = subprocess.run(
                [bwrap, "--version"], capture_output=True, text=True, timeout=10, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{bwrap} --version failed: {exc}"
        version = tuple(int(n) for n in re.findall(r"\d+", out)[:3])
        if version < _MIN_VERSION:
            # --size (capped tmpfs) came in 0.7, --disable-userns in 0.8.
            return f"{out.strip()} is too old: need bubblewrap >= 0.8.0"
        return cls(bwrap)

    def argv(self, limits: SandboxLimits, *, code_fd: int, status_fd: int) -> list[str]:
        env = child_env(WORKDIR)
        config = {
            "rlimits": rlimits(limits, nproc=True),
            "seccomp": "baseline",
            "argv": child_argv(MAIN_PY),
        }
        # fmt: off
        return [
            self._bwrap,
            "--unshare-all", "--unshare-user", "--disable-userns",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), "--cap-drop", "ALL",
            "--die-with-parent", "--new-session", "--json-status-fd", str(status_fd),
            *_system_dirs(),
            "--proc", "/proc",
            "--dev", "/dev", "--remount-ro", "/dev",
            "--size", str(limits.disk_mb << 20), "--tmpfs", WORKDIR,
            "--symlink", WORKDIR, "/tmp",
            "--ro-bind-data", str(code_fd), MAIN_PY,
            "--remount-ro", "/",
            "--chdir", WORKDIR,
            "--clearenv", *[a for k, v in env.items() for a in ("--setenv", k, v)],
            "--", *boot_argv(config),
        ]
        # fmt: on

    def run(self, code: str, limits: SandboxLimits) -> SandboxResult:
        # The code reaches the sandbox as a read-only file copied from a memfd: no host file
        # the sandbox uid would need to read, no argv length limit.
        code_fd = os.memfd_create("main.py", 0)
        with os.fdopen(code_fd, "wb", closefd=False) as fh:
            fh.write(code.encode("utf-8", errors="surrogatepass"))
        os.lseek(code_fd, 0, os.SEEK_SET)
        status_r, status_w = os.pipe()
        init = _NamespaceInit()
        try:
            done = run_capped(
                self.argv(limits, code_fd=code_fd, status_fd=status_w),
                env={"PATH": "/usr/bin:/bin"},  # bwrap's own env is readable as /proc/1/environ
                timeout_s=limits.timeout_s,
                max_chars=limits.max_output_chars,
                popen_kwargs={"pass_fds": (code_fd, status_w), **drop_to_sandbox_user()},
                status_fd=status_r,
                on_status=init.feed,
                close_after_spawn=(code_fd, status_w),
            )
        finally:
            init.kill_and_wait()
            os.close(status_r)
        if not init.started and not done.timed_out:
            raise SandboxSetupFailed(f"bwrap could not start the sandbox: {done.stderr.strip()}")
        if done.returncode == SETUP_FAILED and MARK in done.stderr:
            raise SandboxSetupFailed(done.stderr.split(MARK, 1)[1].strip())
        status = done.returncode
        if 128 < status <= 128 + 64 and not done.timed_out:
            # bwrap reports a child killed by signal N as 128 + N (as a shell does).
            status = -(status - 128)
        return SandboxResult(
            stdout=done.stdout,
            stderr=done.stderr,
            exit_status=status,
            duration_ms=done.duration_ms,
            stdout_truncated=done.stdout_truncated,
            stderr_truncated=done.stderr_truncated,
            timed_out=done.timed_out,
            sandbox=self.name,
        )


class _NamespaceInit:
    """Tracks the sandbox's pid-namespace init through a pidfd, from bwrap's status JSON."""

    def __init__(self) -> None:
        self._buf = b""
        self._pidfd: int | None = None
        self.started = False

    def feed(self, chunk: bytes) -> None:
        if self.started:
            return
        self._buf += chunk
        match = _CHILD_PID.search(self._buf)
        if match is None:
            return
        self.started = True
        pid = int(match.group(1))
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return  # already gone, and with it the whole namespace
        # The pid may have been reused if the sandbox already ended: only a pid that is 1 in
        # its own namespace is ours (the pidfd pins the process we just checked).
        try:
            nspid = Path(f"/proc/{pid}/status").read_text().split("NSpid:", 1)[1].split("\n")[0]
        except (OSError, IndexError):
            nspid = ""
        if nspid.split()[-1:] == ["1"] and not _exited(pidfd, 0):
            self._pidfd = pidfd
        else:
            os.close(pidfd)

    def kill_and_wait(self) -> None:
        if self._pidfd is None:
            return
        try:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            if not _exited(self._pidfd, _TEARDOWN_S):  # pragma: no cover - kernel guarantee
                raise SandboxSetupFailed("the sandbox's processes did not exit after SIGKILL")
        finally:
            os.close(self._pidfd)
            self._pidfd = None


def _exited(pidfd: int, timeout_s: float) -> bool:
    # A pidfd polls readable once the process has exited; for a pid-namespace init that is
    # after every other process of the namespace has been killed and reaped.
    ready, _, _ = select.select([pidfd], [], [], timeout_s)
    return bool(ready)
