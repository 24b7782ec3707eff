"""``tierflow bench load --processes`` at a tiny size: the conversations really run in two
spawned processes on one state dir, every one ends (checked from the shared checkpoint
file), each process's primary fails half-way, and its breaker row is shared. Plumbing
only: no timing is asserted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tierflow.bench.load_procs import deal, spawned
from tierflow.errors import UserError


def test_deal_splits_every_thread_once() -> None:
    shares = deal(5, 2)
    assert shares == [["load-0", "load-2", "load-4"], ["load-1", "load-3"]]


def test_two_processes_lose_nothing(tmp_path: Path) -> None:
    figures = spawned(6, 2, tmp_path, latency=0.01)

    assert figures["processes"] == 2
    pids = figures["pids"]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert figures["conversations"] == 6
    assert figures["lost"] == 0 and figures["crashed"] == 0
    ended = figures["completed"] + figures["degraded"] + figures["failed_cleanly"]
    assert ended == 6
    # each process's primary served its share's first calls, then refused
    assert figures["primary_refused_after_requests"] == [3, 3]
    assert all(n > 0 for n in figures["primary_refusals"])
    assert figures["fell_back"] > 0
    assert figures["primary_breaker_stored"] is not None
    assert figures["primary_breaker_stored"]["failures"] >= 1
    assert (tmp_path / "checkpoints.sqlite").exists()


def test_processes_option_belongs_to_load(tmp_path: Path) -> None:
    from tierflow.bench import run_benchmarks

    with pytest.raises(UserError, match="--processes"):
        run_benchmarks("batch", tmp_path, processes=2)
