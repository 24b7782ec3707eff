"""Circuit breakers, one per backend, with their state persisted in the state dir (private).

Import these names from :mod:`tierflow.resilience`.

The state lives in ``<state_dir>/breakers.sqlite``, one row per backend, so that
``tierflow doctor`` (another process) can show it, the next ``tierflow ask`` (another
process again) skips a backend an earlier run found dead, and the worker processes of
one batch or server re-read it at most once a second. SQLite rather than a JSON file:
each change is a one-row upsert in a transaction, so two processes updating different (or
the same) backends never lose each other's rows or leave a torn file, with no lock files
of our own. A store that cannot be written (read-only disk...) is logged once and the
breaker keeps working in memory.

With ``[state] database_url`` the rows live in PostgreSQL instead
(:class:`~tierflow.resilience.postgres.PostgresBreakerStore`), shared by every process on
the database, and a breaker re-reads its row at most once a second, so a breaker one
server opened is honoured by the others.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from tierflow.resilience.classify import Failure, FailureKind
from tierflow.telemetry import record_breaker

log = logging.getLogger("tierflow.resilience")

STORE_FILE = "breakers.sqlite"


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through; consecutive failures are counted
    OPEN = "open"  # calls skip the backend without any I/O until the cool-down ends
    HALF_OPEN = "half_open"  # cool-down over: the next call probes, the others still skip


@dataclass(frozen=True, kw_only=True)
class BreakerPolicy:
    """When a backend's breaker opens and how long it stays open.

    ``failure_threshold`` consecutive failed requests open it (5xx, 429, timeouts,
    dropped connections, invalid responses; a 4xx other than 401/403 does not count). An
    authentication error (401/403) opens it at once, and so does a connection-level
    failure (refused, unreachable, connect timeout) while ``open_on_connect_error``: a
    closed port is a service that is down, and opening at once is what makes the *next*
    call skip it instead of paying the connect again. After ``cooldown_s`` one call
    probes the backend; its success closes the breaker, its failure re-opens it.
    """

    failure_threshold: int = 3
    cooldown_s: float = 30.0
    open_on_connect_error: bool = True

    def opens_at_once(self, failure: Failure) -> bool:
        if failure.kind is FailureKind.AUTH:
            return True
        return self.open_on_connect_error and failure.kind is FailureKind.CONNECT


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, kw_only=True)
class BreakerSnapshot:
    """A breaker's state as stored (times are Unix seconds)."""

    backend: str
    state: BreakerState = BreakerState.CLOSED  # only closed or open are stored
    failures: int = 0
    opened_at: float | None = None
    retry_at: float | None = None  # when the cool-down ends and a probe may go
    last_error: str | None = None
    last_error_at: float | None = None
    updated_at: float = 0.0

    def effective_state(self, now: float) -> BreakerState:
        """``half_open`` once an open breaker's cool-down is over."""
        if self.state is BreakerState.OPEN and self.retry_at is not None and now >= self.retry_at:
            return BreakerState.HALF_OPEN
        return self.state

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """What ``tierflow doctor --json`` shows (ISO-8601 UTC times)."""
        return {
            "state": self.effective_state(time.time() if now is None else now).value,
            "failures": self.failures,
            "opened_at": _iso(self.opened_at),
            "retry_at": _iso(self.retry_at),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
        }


_COLUMNS = (
    "backend",
    "state",
    "failures",
    "opened_at",
    "retry_at",
    "last_error",
    "last_error_at",
    "updated_at",
)
_SCHEMA = f"CREATE TABLE IF NOT EXISTS breakers ({', '.join(_COLUMNS)}, PRIMARY KEY (backend))"
_UPSERT = (
    f"INSERT INTO breakers ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT(backend) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
)


def snapshot_row(snap: BreakerSnapshot) -> tuple[Any, ...]:
    """A snapshot as a row of ``_COLUMNS``."""
    return (
        snap.backend,
        snap.state.value,
        snap.failures,
        snap.opened_at,
        snap.retry_at,
        snap.last_error,
        snap.last_error_at,
        snap.updated_at,
    )


def row_snapshot(r: Sequence[Any]) -> BreakerSnapshot:
    """A row of ``_COLUMNS`` as a snapshot (half-open is never stored: closed)."""
    return BreakerSnapshot(
        backend=r[0],
        state=BreakerState(r[1]) if r[1] == "open" else BreakerState.CLOSED,
        failures=int(r[2] or 0),
        opened_at=r[3],
        retry_at=r[4],
        last_error=r[5],
        last_error_at=r[6],
        updated_at=r[7] or 0.0,
    )


class StateStore(Protocol):
    """Where breaker states persist: SQLite in the state dir (:class:`BreakerStore`) or
    PostgreSQL (:class:`~tierflow.resilience.postgres.PostgresBreakerStore`)."""

    #: How often a breaker re-reads its row (seconds): another process may have opened
    #: or closed it. ``None``: read once, on first use.
    refresh_s: float | None

    def save(self, snap: BreakerSnapshot) -> None: ...
    def load(self, backend: str) -> BreakerSnapshot | None: ...
    def load_all(self) -> dict[str, BreakerSnapshot]: ...


class BreakerStore:
    """Breaker rows in ``<state_dir>/breakers.sqlite``, safe for concurrent processes."""

    #: Long-lived processes share the file too (``tierflow batch --processes``, ``serve
    #: --workers``, ``worker``): a breaker re-reads its row at most once a second (a
    #: read-only connection and one SELECT, ~0.1 ms), so one another process opened is
    #: honoured here within a second, as with PostgreSQL.
    refresh_s: float | None = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False
        self._warned = False

    @classmethod
    def in_dir(cls, state_dir: Path) -> BreakerStore:
        return cls(state_dir / STORE_FILE)

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        if write and not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}" + ("" if write else "?mode=ro")
        # timeout: how long to wait for another process's write lock (a write takes ~ms).
        with closing(sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)) as conn:
            if write and not self._ready:
                conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
                conn.execute(_SCHEMA)
                self._ready = True
            yield conn

    def save(self, snap: BreakerSnapshot) -> None:
        row = snapshot_row(snap)
        try:
            with self._connect(write=True) as conn:
                # WAL + NORMAL cannot corrupt the file on a crash. A change costs ~2.5 ms
                # (the last connection's close checkpoints), paid only on failures and
                # state changes: a healthy call and a skipped one write nothing.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_UPSERT, row)
        except (sqlite3.Error, OSError) as exc:
            self._warn(exc)

    def load(self, backend: str) -> BreakerSnapshot | None:
        return self._select("WHERE backend = ?", (backend,)).get(backend)

    def load_all(self) -> dict[str, BreakerSnapshot]:
        return self._select("", ())

    def _select(self, where: str, args: tuple[Any, ...]) -> dict[str, BreakerSnapshot]:
        if not self.path.exists():
            return {}
        try:
            with self._connect(write=False) as conn:
                rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM breakers {where}", args)
                return {r[0]: row_snapshot(r) for r in rows.fetchall()}
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._warn(exc)
            return {}

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            log.warning("breaker state not persisted (%s): %s", self.path, exc)


class Permit:
    """Leave to call a backend, from :meth:`CircuitBreaker.acquire`; settle it once."""

    __slots__ = ("probe", "settled")

    def __init__(self, probe: bool) -> None:
        self.probe = probe  # the single half-open probe
        self.settled = False


class CircuitBreaker:
    """Closed / open / half-open, with one probe at a time once the cool-down is over.

    ``clock`` is wall time (Unix seconds) because the state outlives the process; tests
    inject their own. State is loaded from ``store`` on first use and saved on every
    change, so a breaker another process opened is honoured here.
    """

    def __init__(
        self,
        backend: str,
        policy: BreakerPolicy | None = None,
        *,
        store: StateStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.policy = policy or BreakerPolicy()
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._snap = BreakerSnapshot(backend=backend)
        self._loaded = store is None
        self._loaded_at = 0.0  # time.monotonic() of the last read
        self._probing = False

    # -- reading ---------------------------------------------------------------------

    def _load(self) -> None:
        if self._store is None:
            return
        refresh = self._store.refresh_s
        now = time.monotonic()
        if self._loaded and (refresh is None or now - self._loaded_at < refresh):
            return
        self._loaded, self._loaded_at = True, now
        stored = self._store.load(self.backend)
        # A shared row another process wrote since ours: theirs is the news.
        if stored is not None and stored.updated_at >= self._snap.updated_at:
            self._snap = stored

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            self._load()
            return self._snap

    @property
    def state(self) -> BreakerState:
        return self.snapshot().effective_state(self._clock())

    def would_allow(self) -> bool:
        """Whether :meth:`acquire` would let a call through now (changes nothing)."""
        with self._lock:
            self._load()
            state = self._snap.effective_state(self._clock())
            return state is BreakerState.CLOSED or (
                state is BreakerState.HALF_OPEN and not self._probing
            )

    def skip_reason(self) -> str:
        """Why a call skips this backend now (for the run record)."""
        snap = self.snapshot()
        now = self._clock()
        if snap.effective_state(now) is BreakerState.HALF_OPEN:
            return "breaker half-open: a probe of this backend is already in flight"
        wait = max(0.0, (snap.retry_at or now) - now)
        return f"breaker open after {snap.last_error or 'failures'}; next probe in {wait:.0f}s"

    # -- calls -----------------------------------------------------------------------

    def acquire(self) -> Permit | None:
        """A permit to call the backend, or ``None`` to skip it (no I/O at all)."""
        with self._lock:
            self._load()
            state = self._snap.effective_state(self._clock())
            if state is BreakerState.CLOSED:
                return Permit(probe=False)
            if state is BreakerState.OPEN or self._probing:
                return None
            self._probing = True
        record_breaker(self.backend, BreakerState.HALF_OPEN.value, "cool-down over: probing")
        return Permit(probe=True)

    def release(self, permit: Permit | None) -> None:
        """Settle a permit whose call said nothing about the backend's health."""
        if permit is None or permit.settled:
            return
        permit.settled = True
        if permit.probe:
            with self._lock:
                self._probing = False  # the next call probes instead

    def record_success(self, permit: Permit | None) -> BreakerState | None:
        """The backend answered. Returns the new state if this changed it."""
        if permit is not None:
            permit.settled = True
        with self._lock:
            if permit is not None and permit.probe:
                self._probing = False
            snap = self._snap
            closing_probe = permit is not None and permit.probe
            if snap.state is BreakerState.OPEN and not closing_probe:
                return None  # a call from before the breaker opened: the probe decides
            if snap.state is BreakerState.CLOSED and snap.failures == 0:
                return None  # the healthy path: no write at all
            changed = snap.state is not BreakerState.CLOSED
            self._snap = replace(
                snap,
                state=BreakerState.CLOSED,
                failures=0,
                opened_at=None,
                retry_at=None,
                updated_at=self._clock(),
            )
            self._save()
        if changed:
            record_breaker(self.backend, BreakerState.CLOSED.value, "probe succeeded")
            return BreakerState.CLOSED
        return None

    def record_failure(self, permit: Permit | None, failure: Failure) -> BreakerState | None:
        """A request failed. Returns the new state if this opened the breaker."""
        if permit is not None:
            permit.settled = True
        if not failure.counts_against_backend:
            self.release_probe(permit)
            return None
        now = self._clock()
        with self._lock:
            if permit is not None and permit.probe:
                self._probing = False
            snap = self._snap
            failures = snap.failures + 1
            reopen = permit is not None and permit.probe
            trip = snap.state is BreakerState.CLOSED and (
                failures >= self.policy.failure_threshold or self.policy.opens_at_once(failure)
            )
            opens = reopen or trip
            snap = replace(
                snap,
                failures=failures,
                last_error=failure.reason,
                last_error_at=now,
                updated_at=now,
            )
            if opens:
                snap = replace(
                    snap,
                    state=BreakerState.OPEN,
                    opened_at=now,
                    retry_at=now + self.policy.cooldown_s,
                )
            self._snap = snap
            self._save()
        if opens:
            record_breaker(self.backend, BreakerState.OPEN.value, failure.reason)
            return BreakerState.OPEN
        return None

    def release_probe(self, permit: Permit | None) -> None:
        if permit is not None and permit.probe:
            with self._lock:
                self._probing = False

    def _save(self) -> None:
        if self._store is not None:
            self._store.save(self._snap)
