"""CircuitBreaker transitions on an injected clock (no sleeps), and its SQLite store:
shared between instances and processes, never corrupted by concurrent writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tierflow.resilience import (
    BreakerPolicy,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
    Failure,
    FailureKind,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def fail(kind: FailureKind = FailureKind.SERVER, reason: str = "HTTP 503") -> Failure:
    return Failure(kind=kind, reason=reason, error_type="X")


def make(tmp_path: Path, clock: Clock, **policy: object) -> CircuitBreaker:
    store = BreakerStore.in_dir(tmp_path)
    return CircuitBreaker("b", BreakerPolicy(**policy), store=store, clock=clock)  # type: ignore[arg-type]


def test_threshold_cooldown_probe_cycle(tmp_path: Path) -> None:
    clock = Clock()
    br = make(tmp_path, clock, failure_threshold=3, cooldown_s=30)
    for _ in range(2):
        assert br.record_failure(br.acquire(), fail()) is None
    assert br.state is BreakerState.CLOSED and br.snapshot().failures == 2
    assert br.record_failure(br.acquire(), fail(reason="HTTP 502")) is BreakerState.OPEN
    assert br.acquire() is None  # open: skip without I/O
    assert br.skip_reason() == "breaker open after HTTP 502; next probe in 30s"

    clock.now += 29.9
    assert br.acquire() is None
    clock.now += 0.1
    assert br.state.value == "half_open"
    probe = br.acquire()
    assert probe is not None and probe.probe
    assert br.acquire() is None  # a single probe at a time
    assert "probe" in br.skip_reason()
    assert br.record_failure(probe, fail()) is BreakerState.OPEN  # failed probe: re-open
    assert br.snapshot().retry_at == clock.now + 30

    clock.now += 30
    probe = br.acquire()
    assert probe is not None and probe.probe
    assert br.record_success(probe) is BreakerState.CLOSED
    snap = br.snapshot()
    assert (snap.state, snap.failures, snap.opened_at) == (BreakerState.CLOSED, 0, None)
    assert snap.last_error == "HTTP 503"  # kept for doctor
    ok = br.acquire()
    assert ok is not None and not ok.probe


def test_a_success_resets_the_count_and_client_errors_do_not_count(tmp_path: Path) -> None:
    br = make(tmp_path, Clock(), failure_threshold=2)
    br.record_failure(br.acquire(), fail())
    br.record_success(br.acquire())
    br.record_failure(br.acquire(), fail())
    assert br.state is BreakerState.CLOSED
    for _ in range(5):
        br.record_failure(br.acquire(), fail(FailureKind.CLIENT, "HTTP 400"))
    assert br.state is BreakerState.CLOSED and br.snapshot().failures == 1


@pytest.mark.parametrize("kind", [FailureKind.AUTH, FailureKind.CONNECT])
def test_auth_and_connect_errors_open_at_once(tmp_path: Path, kind: FailureKind) -> None:
    br = make(tmp_path, Clock(), failure_threshold=5)
    assert br.record_failure(br.acquire(), fail(kind)) is BreakerState.OPEN


def test_connect_errors_can_count_like_others(tmp_path: Path) -> None:
    br = make(tmp_path, Clock(), failure_threshold=2, open_on_connect_error=False)
    assert br.record_failure(br.acquire(), fail(FailureKind.CONNECT)) is None
    assert br.record_failure(br.acquire(), fail(FailureKind.CONNECT)) is BreakerState.OPEN
    # auth still opens at once
    br2 = make(tmp_path / "2", Clock(), open_on_connect_error=False)
    assert br2.record_failure(br2.acquire(), fail(FailureKind.AUTH)) is BreakerState.OPEN


def test_a_probe_with_no_verdict_lets_the_next_call_probe(tmp_path: Path) -> None:
    clock = Clock()
    br = make(tmp_path, clock, cooldown_s=10)
    br.record_failure(br.acquire(), fail(FailureKind.AUTH))
    clock.now += 10
    probe = br.acquire()
    assert probe is not None and br.acquire() is None
    br.release(probe)  # cancelled, budget spent...: no verdict
    assert br.acquire() is not None


def test_state_is_shared_through_the_store(tmp_path: Path) -> None:
    clock = Clock()
    first = make(tmp_path, clock, cooldown_s=30)
    first.record_failure(first.acquire(), fail(FailureKind.CONNECT, "ConnectError: refused"))
    second = make(tmp_path, clock, cooldown_s=30)  # another runner, or another process
    assert second.acquire() is None
    assert second.snapshot().last_error == "ConnectError: refused"
    clock.now += 30
    probe = second.acquire()
    assert probe is not None and probe.probe
    second.record_success(probe)
    third = make(tmp_path, clock)
    assert third.state is BreakerState.CLOSED
    shown = BreakerStore.in_dir(tmp_path).load_all()["b"].to_json(now=clock.now)
    assert shown["state"] == "closed" and shown["last_error"] == "ConnectError: refused"


def test_a_long_lived_breaker_sees_another_process_open_it(tmp_path: Path) -> None:
    clock = Clock()
    store = BreakerStore.in_dir(tmp_path)
    assert store.refresh_s == 1.0
    store.refresh_s = 0.0  # re-read on every decision, not once a second
    mine = CircuitBreaker("b", BreakerPolicy(cooldown_s=30), store=store, clock=clock)
    assert mine.acquire() is not None  # closed, and its row read before the other opens it
    other = make(tmp_path, clock, cooldown_s=30)  # a worker process of the same batch
    other.record_failure(other.acquire(), fail(FailureKind.CONNECT, "ConnectError: refused"))
    assert mine.acquire() is None
    assert mine.snapshot().last_error == "ConnectError: refused"


def test_doctor_view_of_an_open_breaker(tmp_path: Path) -> None:
    clock = Clock()
    br = make(tmp_path, clock, cooldown_s=30)
    br.record_failure(br.acquire(), fail(FailureKind.AUTH, "AuthenticationError: bad key"))
    snap = BreakerStore.in_dir(tmp_path).load("b")
    assert snap is not None
    view = snap.to_json(now=clock.now)
    assert view["state"] == "open" and view["failures"] == 1
    assert view["opened_at"] is not None and view["opened_at"].endswith("+00:00")
    assert snap.to_json(now=clock.now + 31)["state"] == "half_open"


def test_an_unwritable_store_leaves_the_breaker_working(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    br = CircuitBreaker(
        "b", BreakerPolicy(), store=BreakerStore(blocker / "breakers.sqlite"), clock=Clock()
    )
    assert br.record_failure(br.acquire(), fail(FailureKind.AUTH)) is BreakerState.OPEN
    assert br.acquire() is None


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tierflow.resilience import BreakerPolicy, BreakerStore, CircuitBreaker
    from tierflow.resilience import Failure, FailureKind

    folder = Path(sys.argv[1])
    store = BreakerStore.in_dir(folder)
    mine = CircuitBreaker(sys.argv[2], BreakerPolicy(failure_threshold=1000), store=store)
    shared = CircuitBreaker("shared", BreakerPolicy(failure_threshold=1000), store=store)
    fail = Failure(kind=FailureKind.SERVER, reason="HTTP 503 from " + sys.argv[2], error_type="X")
    print("ready", flush=True)
    sys.stdin.readline()  # both start writing together
    for i in range(25):
        for br in (mine, shared):
            br.record_failure(br.acquire(), fail)
    print("done")
    """
)


def test_two_processes_writing_at_once_do_not_corrupt_the_store(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("one", "two")
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        out, err = p.communicate("go\n", timeout=60)
        assert p.returncode == 0, err
        assert out.strip() == "done" and "not persisted" not in err
    with sqlite3.connect(tmp_path / "breakers.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = BreakerStore.in_dir(tmp_path).load_all()
    assert rows["one"].failures == 25 and rows["two"].failures == 25
    assert rows["one"].last_error == "HTTP 503 from one"
    # each loaded "shared" once, on first use, then wrote its own count: whole rows only
    assert 25 <= rows["shared"].failures <= 50
    assert rows["shared"].last_error in ("HTTP 503 from one", "HTTP 503 from two")
