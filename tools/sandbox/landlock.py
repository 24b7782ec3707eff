"""The layer for machines without user namespaces (CI runners and Docker often forbid them):
an unprivileged uid, Landlock for the filesystem, seccomp for sockets and new processes.

The child runs as uid 65534 when we are root (as the calling user otherwise), with a clean
environment, in a fresh per-run directory on the host. The bootstrap then restricts itself
before exec'ing the user code: Landlock allows reading and executing ``/usr`` (and the
``/bin``, ``/lib*`` links), reading the code file, writing the working dir, and nothing else
(``/proc`` included, so no other process's ``environ``); seccomp refuses ``socket``, ``fork``,
``vfork``, non-thread ``clone`` and signals to other processes. With no way to fork, the
child is one process and the wall-clock kill of its group ends it.

Without a size-capped tmpfs (mounting one needs privileges this machine kind lacks), disk use
is bounded by RLIMIT_FSIZE per file and by a watchdog that kills the run when the working dir
grows past ``disk_mb``; the directory is deleted after every run.

The *weak* variant (``allow_weak_sandbox``) keeps the uid drop, clean environment, rlimits and
kill, but no Landlock or seccomp: the code can read world-readable files and use the network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
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
from tierflow.tools.sandbox.boot import MARK, SETUP_FAILED, landlock_abi
from tierflow.tools.sandbox.process import run_capped

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_MAX_ENTRIES = 10_000  # a working dir with more entries than this counts as over its cap


class LandlockSandbox:
    """Runs code as an unprivileged process confined by Landlock and seccomp.

    ``confine=False`` is the weak variant (see the module docstring).
    """

    def __init__(self, *, confine: bool = True) -> None:
        self._confine = confine
        self.name = "landlock-seccomp" if confine else "rlimits"
        self.weak = not confine

    @classmethod
    def find(cls, *, confine: bool = True) -> LandlockSandbox | str:
        if confine and (abi := landlock_abi()) < 1:
            return f"Landlock is not available in this kernel ({os.strerror(-abi)})"
        return cls(confine=confine)

    def _config(self, limits: SandboxLimits, main_py: Path, work: Path) -> dict[str, object]:
        as_root = os.geteuid() == 0
        config: dict[str, object] = {
            # Not as the calling user: RLIMIT_NPROC would count all of that user's processes.
            "rlimits": rlimits(limits, nproc=as_root),
            "argv": child_argv(str(main_py)),
        }
        if self._confine:
            rules = [[d, "read_exec"] for d in _SYSTEM_DIRS if os.path.exists(d)]
            rules += [
                [str(main_py), "read_file"],
                [str(work), "write"],
                ["/dev/null", "rw_file"],
                ["/dev/zero", "read_file"],
                ["/dev/urandom", "read_file"],
            ]
            config["landlock"] = rules
            config["seccomp"] = "strict"
        return config

    def run(self, code: str, limits: SandboxLimits) -> SandboxResult:
        root = Path(tempfile.mkdtemp(prefix="tierflow-sandbox-"))
        try:
            root.chmod(0o711)  # the sandbox uid may traverse it, not list it
            main_py, work = root / "main.py", root / "work"
            main_py.write_text(code, encoding="utf-8", errors="surrogatepass")
            main_py.chmod(0o444)
            work.mkdir(mode=0o700)
            if os.geteuid() == 0:
                os.chown(work, SANDBOX_UID, SANDBOX_GID)
            cap = limits.disk_mb << 20
            done = run_capped(
                boot_argv(self._config(limits, main_py, work)),
                env=child_env(str(work)),
                timeout_s=limits.timeout_s,
                max_chars=limits.max_output_chars,
                cwd=str(work),
                popen_kwargs=drop_to_sandbox_user(),
                watch=lambda: _over_cap(work, cap),
            )
        finally:
            _remove(root)
        if done.returncode == SETUP_FAILED and MARK in done.stderr:
            raise SandboxSetupFailed(done.stderr.split(MARK, 1)[1].strip())
        stderr = done.stderr
        if done.killed_reason:
            stderr += f"\n[sandbox: killed: {done.killed_reason}]\n"
        return SandboxResult(
            stdout=done.stdout,
            stderr=stderr,
            exit_status=done.returncode,
            duration_ms=done.duration_ms,
            stdout_truncated=done.stdout_truncated,
            stderr_truncated=done.stderr_truncated,
            timed_out=done.timed_out,
            sandbox=self.name,
            weak=self.weak,
        )


def _over_cap(work: Path, cap: int) -> str | None:
    # Apparent sizes, as RLIMIT_FSIZE counts them (block counts include filesystem overhead,
    # so one file at exactly the per-file limit would look over the cap); a dir counts 4 KiB.
    used, entries = 0, 0
    stack = [str(work)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    if entry.is_dir(follow_symlinks=False):
                        used += 4096
                        stack.append(entry.path)
                    else:
                        used += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue  # vanished or unreadable: the next tick sees it again
        if used > cap or entries > _MAX_ENTRIES:
            return f"working directory over its {cap >> 20} MiB / {_MAX_ENTRIES} entries cap"
    return None


def _remove(root: Path) -> None:
    # The code may have made its own dirs unwritable; as a non-root owner we undo that first.
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.chmod(path, stat.S_IRWXU)
    shutil.rmtree(root, ignore_errors=True)
