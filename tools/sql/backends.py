"""Layer (b) of the SQL tool: connections that cannot write or escape on their own.

:class:`SqlBackend` is the interface; :func:`tierflow.tools.sql.connect.open_backend`
turns a database URL into one.
SQLite lives here (stdlib); DuckDB and PostgreSQL live in their own modules, imported only
when a URL asks for them, so their drivers stay optional.

Each backend enforces, without help from the parser layer: read-only access, one
statement per call, no files or extensions beyond the database itself, a deadline, and a
row cap (rows past ``max_rows + 1`` are never fetched).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

__all__ = [
    "BackendConfigError",
    "ColumnInfo",
    "QueryResult",
    "QueryTimeout",
    "SqlBackend",
    "SqlEngineError",
    "SqliteBackend",
    "TableInfo",
]


class BackendConfigError(Exception):
    """The configured database cannot be used (bad URL, missing file, unsafe role)."""


class SqlEngineError(Exception):
    """The engine refused or failed the statement; the message is the engine's."""


class QueryTimeout(Exception):
    """The statement ran past its deadline and was interrupted."""


@dataclass(frozen=True, kw_only=True)
class ColumnInfo:
    name: str
    type: str


@dataclass(frozen=True, kw_only=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    #: (column, referenced table, referenced column); read from SQLite's catalog, empty for
    #: the other backends (their catalogs are not queried yet).
    foreign_keys: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]  # JSON-ready values
    truncated: bool  # more rows existed than max_rows


class SqlBackend(Protocol):
    """A database the SQL tool reads. Implement this to plug in another engine.

    ``execute`` must itself refuse anything but one read-only query and honour the
    deadline and row cap: the parser layer in front of it is a second line, not the only one.
    """

    dialect: str  # sqlglot dialect name
    schemas: frozenset[str]  # qualifiers that name the default schema, e.g. {"main"}

    def tables(self) -> list[TableInfo]:
        """The tables and views a query may read, with their columns."""
        ...

    def execute(self, sql: str, *, max_rows: int, timeout_s: float) -> QueryResult:
        """Run one read-only query; at most ``max_rows`` rows come back."""
        ...

    def close(self) -> None: ...


def file_from_url(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc or not parts.path.startswith("/") or parts.query:
        raise BackendConfigError(
            f"bad file database URL {url!r}: use {parts.scheme}:///relative/path "
            f"or {parts.scheme}:////absolute/path"
        )
    path = Path(unquote(parts.path[1:]))
    if not path.is_file():
        # Connecting would create an empty database: refuse instead.
        raise BackendConfigError(f"database file not found: {path} (from {url})")
    return path


def json_value(value: Any) -> Any:
    """A value the model can read as JSON: numbers stay numbers, the rest becomes text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return str(value)


def result_from(description: Any, rows: Sequence[Sequence[Any]], max_rows: int) -> QueryResult:
    columns = [str(d[0]) for d in description or ()]
    return QueryResult(
        columns=columns,
        rows=[[json_value(v) for v in row] for row in rows[:max_rows]],
        truncated=len(rows) > max_rows,
    )


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# SQLite functions a query may call, checked by the authorizer at prepare time
# (SQLITE_FUNCTION). No load_extension, readfile/writefile, randomblob, sqlite_* ...
_SQLITE_FUNCTIONS = _names(
    """
    count sum total avg min max group_concat string_agg
    abs round ceil ceiling floor trunc sign sqrt pow power exp ln log log2 log10 mod pi
    upper lower length octet_length substr substring trim ltrim rtrim replace instr
    concat concat_ws printf format char unicode hex quote like glob coalesce ifnull iif
    nullif likely unlikely typeof
    date time datetime julianday unixepoch strftime timediff
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value
    last_value nth_value
    """
)
_SQLITE_ALLOWED_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE}
)
_SQLITE_MAX_VALUE_BYTES = 10_000_000  # no string or blob may grow past this (memory bound)


class SqliteBackend:
    """A SQLite file opened read-only (``mode=ro`` URI) with ``query_only``, no ATTACH,
    an authorizer that allows only reads and allowlisted functions, and a progress-handler
    deadline. ``mode=ro`` alone would still let ATTACH and ``VACUUM INTO`` create files."""

    dialect = "sqlite"
    schemas = frozenset({"main"})

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._deadline = math.inf
        self._conn = self._connect()
        self._conn.execute("PRAGMA query_only = ON")
        self._conn.execute("PRAGMA trusted_schema = OFF")  # no unsafe functions via views
        self._conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _SQLITE_MAX_VALUE_BYTES)
        # Last: from here on even our own PRAGMAs are refused.
        self._conn.set_authorizer(_sqlite_authorizer)
        self._conn.set_progress_handler(self._past_deadline, 1000)

    def _connect(self) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        try:
            return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise BackendConfigError(f"cannot open {self.path} read-only: {exc}") from None

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def tables(self) -> list[TableInfo]:
        # A separate plain read-only connection: the query connection's authorizer refuses
        # the catalog, on purpose.
        conn = self._connect()
        try:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
                )
            ]
            return [
                TableInfo(
                    name=name,
                    columns=tuple(
                        ColumnInfo(name=str(c[1]), type=str(c[2]) or "ANY")
                        for c in conn.execute("SELECT * FROM pragma_table_info(?)", (name,))
                    ),
                    foreign_keys=tuple(
                        (str(f[3]), str(f[2]), str(f[4] or "id"))
                        for f in conn.execute("SELECT * FROM pragma_foreign_key_list(?)", (name,))
                    ),
                )
                for name in names
            ]
        finally:
            conn.close()

    def execute(self, sql: str, *, max_rows: int, timeout_s: float) -> QueryResult:
        with self._lock:
            self._deadline = time.monotonic() + timeout_s
            cursor = self._conn.cursor()
            try:
                cursor.execute(sql)
                rows = cursor.fetchmany(max_rows + 1)
                return result_from(cursor.description, rows, max_rows)
            except sqlite3.OperationalError as exc:
                if str(exc) == "interrupted":
                    raise QueryTimeout(f"query exceeded {timeout_s:g}s") from None
                raise SqlEngineError(str(exc)) from None
            except (sqlite3.Error, sqlite3.Warning) as exc:
                raise SqlEngineError(str(exc)) from None
            finally:
                cursor.close()
                self._deadline = math.inf

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _sqlite_authorizer(
    action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
) -> int:
    if action == sqlite3.SQLITE_READ and (arg1 or "").lower().startswith("sqlite_"):
        return sqlite3.SQLITE_DENY  # the catalog: sql_schema covers it
    if action in _SQLITE_ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _SQLITE_FUNCTIONS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY
