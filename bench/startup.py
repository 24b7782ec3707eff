"""Start-up cost: modules loaded and wall time of ``import tierflow``, ``tierflow --help``
and the full runtime import, each in a fresh interpreter, repeated.

``tierflow bench startup`` measures this install. To compare with another checkout (an
older commit in its own worktree and venv), run::

    python -m tierflow.bench.startup --before /tmp/tf-old/.venv/bin/python

which measures both installs with the same probes, interleaved, and records the other one
under ``"before"`` (with its git commit) in ``bench/results/startup.json``.

Probes (each a new process; the parent times it from spawn to exit):

- ``baseline``: ``python -c pass``, the interpreter alone;
- ``import``: ``python -c "import tierflow"``;
- ``help``: the ``tierflow --help`` console script of the venv;
- ``runtime``: ``python -c "import tierflow; tierflow.Runner"``, the full runtime import.

The python probes wrap their statement in a few lines that count ``sys.modules`` before and
after it and time it in-process; ``help``'s module count comes from an extra run of the
CLI's ``main`` in ``python -c``. Processes run in an empty folder with ``PYTHONPATH``
unset, so a checkout in the current folder cannot shadow the installed package. One
warm-up round (compiling ``.pyc`` files, filling the page cache) is not counted.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tierflow.bench.record import record_results

RUNS = 15

# The statement each python probe runs, between the counting prelude and the report.
_STATEMENTS = {
    "baseline": "pass",
    "import": "import tierflow",
    "runtime": "import tierflow; tierflow.Runner",
}
_PROBE = (
    "import sys, time\n"
    "n0 = len(sys.modules); t0 = time.perf_counter()\n"
    "{statement}\n"
    "t1 = time.perf_counter()\n"
    "print('STARTUP', n0, len(sys.modules), t1 - t0, file=sys.stderr)\n"
)
# `tierflow --help` as the console script runs it, counting modules at the end.
_HELP_COUNT = (
    "import sys\n"
    "n0 = len(sys.modules)\n"
    "sys.argv = ['tierflow', '--help']\n"
    "from tierflow.cli import main\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
    "print('STARTUP', n0, len(sys.modules), 0.0, file=sys.stderr)\n"
)


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Wall time (ms) of one process from spawn to exit, and its stderr."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:2]} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed, done.stderr


def _counts(stderr: str) -> tuple[int, int, float]:
    line = next(x for x in stderr.splitlines() if x.startswith("STARTUP "))
    _, before, after, seconds = line.split()
    return int(before), int(after), float(seconds) * 1000


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest rank
    return {"median": round(statistics.median(ordered), 1), "p90": round(p90, 1)}


def _source_commit(python: str, cwd: Path, env: dict[str, str]) -> str | None:
    """The git commit of the checkout the interpreter imports tierflow from ("-dirty" if
    it has uncommitted changes), or None outside a git checkout."""
    done = subprocess.run(
        [python, "-c", "import os, tierflow; print(os.path.dirname(tierflow.__file__))"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        return None
    where = done.stdout.strip()
    try:
        commit = subprocess.run(
            ["git", "-C", where, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


class _Install:
    """The probes of one venv and the samples they collected."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.script = str(Path(python).parent / "tierflow")
        self.wall: dict[str, list[float]] = {p: [] for p in (*_STATEMENTS, "help")}
        self.inproc: dict[str, list[float]] = {p: [] for p in _STATEMENTS}
        self.modules: dict[str, list[tuple[int, int]]] = {p: [] for p in (*_STATEMENTS, "help")}

    def round(self, cwd: Path, env: dict[str, str], record: bool) -> None:
        for probe, statement in _STATEMENTS.items():
            code = _PROBE.format(statement=statement)
            wall, err = _run([self.python, "-c", code], cwd, env)
            before, after, inproc = _counts(err)
            if record:
                self.wall[probe].append(wall)
                self.inproc[probe].append(inproc)
                self.modules[probe].append((before, after))
        wall, _ = _run([self.script, "--help"], cwd, env)
        _, err = _run([self.python, "-c", _HELP_COUNT], cwd, env)
        before, after, _ = _counts(err)
        if record:
            self.wall["help"].append(wall)
            self.modules["help"].append((before, after))

    def figures(self, commit: str | None) -> dict[str, Any]:
        commands = {
            "baseline": "python -c pass",
            "import": 'python -c "import tierflow"',
            "help": "tierflow --help",
            "runtime": 'python -c "import tierflow; tierflow.Runner"',
        }
        probes: dict[str, Any] = {}
        for probe, command in commands.items():
            counts = self.modules[probe]
            totals = [after for _, after in counts]
            loaded = [after - before for before, after in counts]
            entry: dict[str, Any] = {
                "command": command,
                "wall_ms": _stats(self.wall[probe]),
                "modules_total": int(statistics.median(totals)),
                "modules_loaded": int(statistics.median(loaded)),
            }
            if probe in self.inproc:
                entry["in_process_ms"] = _stats(self.inproc[probe])
            if min(totals) != max(totals):
                entry["modules_total_range"] = [min(totals), max(totals)]
            probes[probe] = entry
        return {"python": self.python, "commit": commit, "probes": probes}


def measure(
    python: str | None = None, *, before: str | None = None, runs: int = RUNS, warmup: int = 1
) -> dict[str, Any]:
    """Start-up figures of the venv of ``python`` (default: this interpreter), and of the
    venv of ``before`` under ``"before"`` when given; rounds alternate between the two."""
    installs = [_Install(python or sys.executable)]
    if before is not None:
        installs.append(_Install(before))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        commits = [_source_commit(i.python, cwd, env) for i in installs]
        for n in range(warmup + runs):
            for install in installs:
                install.round(cwd, env, record=n >= warmup)
    out = installs[0].figures(commits[0])
    out["runs"] = runs
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    out["note"] = (
        "wall_ms: spawn to exit, seen by the parent; in_process_ms: the statement alone; "
        "modules_loaded: len(sys.modules) after the statement minus before it (help: the "
        "CLI's main run in python -c); median and p90 (nearest rank) over runs"
    )
    if before is not None:
        out["before"] = installs[1].figures(commits[1])
    return out


def run() -> dict[str, Any]:
    """The figures of ``tierflow bench startup`` (this install only)."""
    return measure()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tierflow.bench.startup")
    parser.add_argument("--before", help="python of another venv to measure as 'before'")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    command = "python -m tierflow.bench.startup"
    if args.before:
        command += f" --before {args.before}"
    if args.runs != RUNS:
        command += f" --runs {args.runs}"
    figures = measure(before=args.before, runs=args.runs)
    record_results("startup", figures, args.results, command=command)


if __name__ == "__main__":
    main()
