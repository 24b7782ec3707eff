"""``run_python``: model-written Python in a sandbox that fails closed.
Layer: tools (no other tool family); may import only models, resilience, telemetry, the core.

The code runs in a separate process under the strongest sandbox layer that actually works
on this machine, found once per process by running a probe that attacks it
(:func:`probe_sandboxes`):

1. ``bubblewrap``: user/pid/net/mount namespaces, see ``_sandbox_bwrap``;
2. ``landlock-seccomp``: for machines without user namespaces, see ``_sandbox_landlock``;
3. ``rlimits`` (weak, only with ``tools.python.allow_weak_sandbox``): a clean, unprivileged,
   resource-limited process with no filesystem or network isolation; every result says
   ``weak: true``.

With no acceptable layer the tool returns the error ``sandbox_unavailable`` saying why; it
never falls back to running the code unconfined. In-process interpreters (RestrictedPython,
AST walkers) are not used: they are policy, not a boundary.

::

    tool = make_run_python_tool(load_settings())
    outcome = await tool.run({"code": "print(sum(range(10)))"})
    outcome.output["stdout"]  # '45\\n'
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from tierflow.settings import TierflowSettings
from tierflow.tools.sandbox.base import (
    Sandbox,
    SandboxLimits,
    SandboxResult,
    SandboxSetupFailed,
    SandboxUnavailable,
    system_python_problem,
)
from tierflow.tools.sandbox.bwrap import BWRAP_HINT, BubblewrapSandbox
from tierflow.tools.sandbox.landlock import LandlockSandbox
from tierflow.tools.tool import Tool, ToolError, tool

__all__ = [
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "SandboxSetupFailed",
    "SandboxUnavailable",
    "detect_sandbox",
    "make_run_python_tool",
    "probe_sandboxes",
]

STRONG_LAYERS = ("bubblewrap", "landlock-seccomp")
WEAK_LAYER = "rlimits"
_ALLOWED_ENV = {"PATH", "HOME", "TMPDIR", "LANG", "PWD"}
_PROBE_LIMITS = SandboxLimits(timeout_s=5.0, memory_mb=256)
# Tool.run's own timeout only backs ours up: the first call also probes (<= 2 x 5 s).
_TOOL_MARGIN_S = 15.0

_lock = threading.Lock()
_probed: dict[str, Sandbox | str] = {}  # layer name -> the layer, or why it is unusable

_PROBE_CODE = """
import json, os, socket
def attempt(fn):
    try:
        fn()
        return True
    except OSError:
        return False
print(json.dumps({
    "uid": os.getuid(),
    "env": sorted(os.environ),
    "read_host_file": attempt(lambda: open(%(canary)r).read()),
    "read_parent_environ": attempt(lambda: open("/proc/%(ppid)d/environ").read()),
    "write_host_dir": attempt(lambda: open(%(outside)r, "w").close()),
    "connect": attempt(lambda: socket.create_connection(("127.0.0.1", %(port)d), 2).close()),
}))
"""


def probe_sandboxes(*, include_weak: bool = False) -> dict[str, Sandbox | str]:
    """Each layer's name, strongest first, mapped to a working :class:`Sandbox` or to why it
    cannot be used here. Each layer is tried for real (a probe attacks it); the answer is
    cached for the life of the process."""
    names = (*STRONG_LAYERS, WEAK_LAYER) if include_weak else STRONG_LAYERS
    with _lock:
        for name in names:
            if name not in _probed:
                _probed[name] = _try_layer(name)
        return {name: _probed[name] for name in names}


def detect_sandbox(*, allow_weak: bool = False) -> Sandbox:
    """The strongest working layer; :class:`SandboxUnavailable` (saying why each layer
    failed) when none is acceptable. ``allow_weak`` admits the ``rlimits`` layer."""
    layers = probe_sandboxes(include_weak=allow_weak)
    for got in layers.values():
        if not isinstance(got, str):
            return got
    why = "; ".join(f"{name}: {got}" for name, got in layers.items())
    raise SandboxUnavailable(
        f"no sandbox layer works on this machine ({why}). Install bubblewrap "
        f"({BWRAP_HINT}) on a kernel that allows user namespaces, or use a kernel with "
        "Landlock; refusing to run the code unconfined."
    )


def make_run_python_tool(settings: TierflowSettings) -> Tool:
    """The ``run_python`` tool, limited by ``settings.tools.python``."""
    cfg = settings.tools.python
    limits = SandboxLimits(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb)

    def run_python(code: str) -> dict[str, Any]:
        try:
            sandbox = detect_sandbox(allow_weak=cfg.allow_weak_sandbox)
        except SandboxUnavailable as exc:
            raise ToolError(str(exc), type="sandbox_unavailable") from None
        try:
            return sandbox.run(code, limits).to_output()
        except (SandboxSetupFailed, OSError) as exc:
            raise ToolError(
                f"the {sandbox.name} sandbox failed to start; the code did not run: {exc}",
                type="sandbox_failed",
            ) from None

    # The first paragraph is the description the model reads: it states the limits.
    run_python.__doc__ = f"""Run Python 3 code in a fresh isolated sandbox: standard library
        only, no network, files only in the current (empty, temporary) directory, at most
        {limits.timeout_s:g} s, {limits.memory_mb} MB of memory and {limits.disk_mb} MB of files.
        Returns stdout and stderr (each cut at {limits.max_output_chars} characters),
        exit_status (negative: killed by that signal) and timed_out.

        Args:
            code: Python 3 source to run; print() what you want to see.
        """
    # JSON escaping can grow each character up to 6x; the generic cap must never cut our dict.
    max_chars = 12 * limits.max_output_chars + 4_000
    return tool(
        name="run_python", timeout_s=limits.timeout_s + _TOOL_MARGIN_S, max_output_chars=max_chars
    )(run_python)


def _try_layer(name: str) -> Sandbox | str:
    problem = system_python_problem()
    if problem is not None:
        return problem
    found: Sandbox | str
    if name == "bubblewrap":
        found = BubblewrapSandbox.find()
    else:
        found = LandlockSandbox.find(confine=name != WEAK_LAYER)
    if isinstance(found, str):
        return found
    leaks = _attack(found)
    if isinstance(leaks, str):
        return leaks
    if found.weak:  # weak by definition: only a clean, unprivileged process is required
        leaks = [leak for leak in leaks if leak in ("runs as root", "inherits environment")]
    return f"the probe got through: {', '.join(leaks)}" if leaks else found


def _attack(sandbox: Sandbox) -> list[str] | str:
    """Run the probe in ``sandbox``: what got through, or why the probe could not run."""
    with tempfile.TemporaryDirectory(prefix="tierflow-probe-") as tmp, socket.socket() as srv:
        host_dir = Path(tmp)
        host_dir.chmod(0o777)  # writable by anyone: only a sandbox can stop the write
        canary = host_dir / "canary"
        canary.write_text("readable by anyone")
        canary.chmod(0o644)
        outside = host_dir / f"written-{uuid.uuid4().hex}"
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.setblocking(False)
        code = _PROBE_CODE % {
            "canary": str(canary),
            "ppid": os.getpid(),
            "outside": str(outside),
            "port": srv.getsockname()[1],
        }
        try:
            result = sandbox.run(code, _PROBE_LIMITS)
        except (SandboxSetupFailed, OSError) as exc:
            return f"does not start here: {exc}"
        try:
            srv.accept()[0].close()
            accepted = True
        except BlockingIOError:
            accepted = False
        written = outside.exists()
    try:
        seen = json.loads(result.stdout)
    except ValueError:
        return f"the probe did not run (exit {result.exit_status}): {result.stderr.strip()[-300:]}"
    return [what for what, bad in _leaks(seen, accepted, written) if bad]


def _leaks(seen: dict[str, Any], accepted: bool, written: bool) -> list[tuple[str, bool]]:
    return [
        ("runs as root", seen.get("uid") == 0),
        ("inherits environment", not set(seen.get("env", [])) <= _ALLOWED_ENV),
        ("reads host files", bool(seen.get("read_host_file"))),
        ("reads the parent's /proc environ", bool(seen.get("read_parent_environ"))),
        ("writes host files", written),
        ("connects to 127.0.0.1", accepted or bool(seen.get("connect"))),
    ]
