"""Values shared by the sandbox layers: limits, results, the ``Sandbox`` interface, and the
command line of the in-sandbox bootstrap (``_sandbox_boot.py``)."""

from __future__ import annotations

import json
import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# The sandboxed child runs the distribution's Python, not ours: a pyenv or venv interpreter
# under /root is unreadable to the unprivileged uid the child runs as.
SYSTEM_PYTHON = "/usr/bin/python3"
SYSTEM_PYTHON_HINT = "apt-get install -y python3-minimal"
# The child's uid (and, when we are root, the uid its supervisor drops to): never root,
# because root ignores RLIMIT_NPROC and can read every other process's /proc entries.
SANDBOX_UID = 65534
SANDBOX_GID = 65534
BOOT_SOURCE = (Path(__file__).with_name("boot.py")).read_text()


@dataclass(frozen=True, kw_only=True)
class SandboxLimits:
    """What one run may use. ``memory_mb`` caps each process's address space."""

    timeout_s: float = 10.0  # wall clock, from spawn to kill
    memory_mb: int = 512
    disk_mb: int = 64  # the writable working dir (size-capped tmpfs) and any one file
    max_output_chars: int = 20_000  # per stream
    nproc: int = 16  # processes + threads; also bounds the aggregate of memory_mb
    nofile: int = 256


@dataclass(frozen=True, kw_only=True)
class SandboxResult:
    """One run's outcome: the ``run_python`` tool's output, see :meth:`to_output`."""

    stdout: str
    stderr: str
    exit_status: int  # negative: killed by that signal
    duration_ms: float
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    sandbox: str
    weak: bool = False

    def to_output(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_status": self.exit_status,
            "duration_ms": self.duration_ms,
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "timed_out": self.timed_out,
            "sandbox": self.sandbox,
        }
        if self.weak:
            out["weak"] = True
        return out


class Sandbox(Protocol):
    """A way to run untrusted Python source in a separate, contained process."""

    @property
    def name(self) -> str:
        """The layer's name, reported in every result (e.g. ``"bubblewrap"``)."""
        ...

    @property
    def weak(self) -> bool:
        """True when this layer does not isolate the filesystem and network."""
        ...

    def run(self, code: str, limits: SandboxLimits) -> SandboxResult:
        """Run ``code`` under ``limits``; never leaves a process behind."""
        ...


class SandboxUnavailable(RuntimeError):
    """No sandbox layer that this configuration accepts works on this machine."""


class SandboxSetupFailed(RuntimeError):
    """The sandbox could not be built for this run; the user code did not run."""


def rlimits(limits: SandboxLimits, *, nproc: bool) -> list[list[int]]:
    """``[resource, soft, hard]`` triples for the bootstrap to apply before the user code."""
    cpu = math.ceil(limits.timeout_s) + 1  # backstop only: the wall-clock kill comes first
    disk = limits.disk_mb << 20
    out = [
        [resource.RLIMIT_AS, limits.memory_mb << 20, limits.memory_mb << 20],
        [resource.RLIMIT_CPU, cpu, cpu + 1],
        [resource.RLIMIT_FSIZE, disk, disk],
        [resource.RLIMIT_NOFILE, limits.nofile, limits.nofile],
        [resource.RLIMIT_CORE, 0, 0],
    ]
    if nproc:
        out.append([resource.RLIMIT_NPROC, limits.nproc, limits.nproc])
    return out


def boot_argv(config: dict[str, Any]) -> list[str]:
    """The system Python running the bootstrap, which applies ``config`` then execs."""
    return [SYSTEM_PYTHON, "-I", "-S", "-c", BOOT_SOURCE, json.dumps(config)]


def child_argv(main_py: str) -> list[str]:
    # -I: ignore PYTHON* variables and user site; -u: unbuffered, so output written before a
    # timeout kill still reaches the caller.
    return [SYSTEM_PYTHON, "-I", "-u", main_py]


def child_env(workdir: str) -> dict[str, str]:
    """The whole environment the user code sees: nothing inherited from the agent."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
    }


def system_python_problem() -> str | None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"no system Python at {SYSTEM_PYTHON} ({SYSTEM_PYTHON_HINT})"
    return None


def drop_to_sandbox_user() -> dict[str, Any]:
    """``Popen`` keywords that start the child as the sandbox uid when we are root.

    Done by ``subprocess`` itself between fork and exec (no ``preexec_fn``, which is unsafe in
    the worker thread a sync tool runs in).
    """
    if os.geteuid() != 0:
        return {}
    return {"user": SANDBOX_UID, "group": SANDBOX_GID, "extra_groups": []}
