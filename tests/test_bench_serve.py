"""``tierflow bench serve``'s measuring function at a tiny size: the shape of its result
(timings are the benchmark's business, not a test's)."""

from __future__ import annotations

import os

import pytest

from tierflow.bench.serve import cpu_seconds, goals, measure

pytest.importorskip("uvicorn")
pytest.importorskip("langgraph_sdk")

KEYS = {
    "concurrency",
    "loadavg_1m",
    "runs",
    "completed",
    "failed",
    "wall_s",
    "throughput_runs_s",
    "p50_s",
    "p99_s",
    "max_s",
    "cpu_ms_per_run",
    "client_cpu_ms_per_run",
    "errors",
}


def test_cpu_seconds_reads_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0


def test_measure_runner_and_serve_at_a_tiny_size() -> None:
    results = measure(
        setups=("runner", "serve"), levels=(2,), runs_per_client=2, latency=0.0, deadline_s=60
    )
    assert list(results) == ["runner", "serve"]
    for rows in results.values():
        (row,) = rows
        assert set(row) == KEYS
        assert row["concurrency"] == 2 and row["runs"] == 4
        assert row["completed"] == 4 and row["failed"] == 0 and row["errors"] == {}
        assert row["p50_s"] <= row["p99_s"] <= row["max_s"]
        assert row["cpu_ms_per_run"] > 0
    judged = goals(results, latency=0.2)
    assert set(judged["cpu_overhead_vs_runner"]) == {"serve"}
    assert isinstance(judged["cpu_overhead_vs_runner"]["serve"]["met"], bool)
    assert set(judged["p99_vs_ideal"]) == {"runner", "serve"}
    assert "two_workers_vs_one" not in judged
