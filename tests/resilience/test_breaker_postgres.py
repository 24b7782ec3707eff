"""Breaker states in PostgreSQL (``TIERFLOW_DATABASE_URL``): a breaker another process
opens is honoured by a breaker already in use here, and a dead database leaves breakers
working in memory."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tierflow.resilience import (
    BreakerPolicy,
    BreakerState,
    CircuitBreaker,
    Failure,
    FailureKind,
    breaker_store,
)
from tierflow.resilience.postgres import MIGRATIONS, PostgresBreakerStore
from tierflow.settings import load_settings

_OPENER = textwrap.dedent(
    """
    from tierflow.resilience import Failure, FailureKind, breaker_for
    from tierflow.settings import load_settings

    breaker = breaker_for(load_settings(False), "vllm:shared")  # TIERFLOW_DATABASE_URL
    failure = Failure(kind=FailureKind.AUTH, reason="HTTP 401 from the other process",
                      error_type="X")
    assert breaker.record_failure(breaker.acquire(), failure) is not None
    """
)


def test_a_breaker_opened_by_another_process_is_honoured_here(
    tmp_path: Path, postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.new_database("breakers")
    store = PostgresBreakerStore(url)
    store.refresh_s = 0.0  # re-read on every decision (the default is once a second)
    mine = CircuitBreaker("vllm:shared", BreakerPolicy(), store=store)
    assert mine.acquire() is not None  # closed, and loaded before the other process runs
    monkeypatch.setenv("TIERFLOW_DATABASE_URL", url)
    done = subprocess.run(
        [sys.executable, "-c", _OPENER], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert mine.acquire() is None  # skipped: the other process opened it
    assert mine.state is BreakerState.OPEN
    assert "HTTP 401 from the other process" in mine.skip_reason()
    # doctor's view (breaker_store) reads the same row
    shown = breaker_store(load_settings(False, state_dir=tmp_path)).load_all()
    assert shown["vllm:shared"].to_json()["state"] == "open"
    assert not (tmp_path / "breakers.sqlite").exists()
    store.close()
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM schema_version WHERE component = 'breakers'")
        assert row.fetchone() == (len(MIGRATIONS),)


def test_an_unreachable_database_leaves_breakers_in_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = PostgresBreakerStore(f"postgresql://u:s3cret@127.0.0.1:{port}/x", timeout_s=1)
    breaker = CircuitBreaker("b", BreakerPolicy(failure_threshold=2), store=store)
    failure = Failure(kind=FailureKind.SERVER, reason="HTTP 503", error_type="X")
    with caplog.at_level(logging.WARNING, "tierflow.resilience"):
        assert breaker.record_failure(breaker.acquire(), failure) is None
        assert breaker.record_failure(breaker.acquire(), failure) is BreakerState.OPEN
        assert breaker.acquire() is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "breaker state not shared" in warnings[0]
    assert "s3cret" not in warnings[0] and "refused" in warnings[0].lower()
