"""PostgreSQL behind :class:`~tierflow.tools.sql.backends.SqlBackend`: the only module
importing ``psycopg``.

Every query runs as ``DECLARE ... CURSOR FOR <query>`` through a psycopg server-side cursor
inside a ``READ ONLY`` transaction that is always rolled back:

- ``DECLARE`` accepts only a query (SELECT, VALUES, TABLE, set operations, WITH) and
  refuses data-modifying statements even inside WITH; psycopg sends it with the extended
  protocol, which refuses a second statement;
- the read-only transaction refuses writes (``SELECT ... FOR UPDATE``, ``nextval`` ...), and
  its snapshot is taken before the query runs, so the query cannot turn it read-write;
- ``default_transaction_read_only`` and ``statement_timeout`` are set for the session at
  connect time; anything a query sets with ``set_config`` is undone by the rollback;
- only ``max_rows + 1`` rows are ever fetched from the server.

The server can still read what the role may read, so the role must not be a superuser nor
hold ``pg_read_server_files``, ``pg_write_server_files`` or ``pg_execute_server_program``:
the backend refuses to run otherwise. Grant the role SELECT on the tables it may show.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg import conninfo, errors

from tierflow.tools.sql.backends import (
    BackendConfigError,
    ColumnInfo,
    QueryResult,
    QueryTimeout,
    SqlEngineError,
    TableInfo,
    result_from,
)

__all__ = ["PostgresBackend"]

_CONNECT_TIMEOUT_S = 5
# Roles that would let a read-only query read or run anything on the server itself.
_FILE_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")
_ROLE_CHECK = (
    "SELECT r.rolsuper, "
    + ", ".join(f"pg_has_role(current_user, '{role}', 'MEMBER')" for role in _FILE_ROLES)
    + " FROM pg_roles r WHERE r.rolname = current_user"
)
_SCHEMA = (
    "SELECT table_name, column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
)


class PostgresBackend:
    """A PostgreSQL database read through a sealed read-only session; see the module doc."""

    dialect = "postgres"

    def __init__(self, url: str, *, statement_timeout_s: float = 30.0) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._timeout_ms = max(1, round(statement_timeout_s * 1000))
        self._conn = self._connect()
        self.schemas = frozenset({self._current_schema()})

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        params = conninfo.conninfo_to_dict(self._url)
        options = str(params.get("options") or "")
        params["options"] = (
            f"{options} -c default_transaction_read_only=on -c statement_timeout={self._timeout_ms}"
        ).strip()
        params.setdefault("connect_timeout", _CONNECT_TIMEOUT_S)
        try:
            conn = psycopg.connect(conninfo.make_conninfo("", **params), autocommit=False)
        except psycopg.Error as exc:
            raise BackendConfigError(f"cannot connect to PostgreSQL: {exc}") from None
        conn.read_only = True  # psycopg opens each transaction with BEGIN READ ONLY
        try:
            row = conn.execute(_ROLE_CHECK).fetchone()
            conn.rollback()
        except psycopg.Error as exc:
            conn.close()
            raise BackendConfigError(f"cannot check the PostgreSQL role: {exc}") from None
        if row is None or any(row):
            conn.close()
            raise BackendConfigError(
                "the PostgreSQL role may read or run server files (superuser or "
                f"{', '.join(_FILE_ROLES)}); connect as a role with only SELECT grants"
            )
        return conn

    def _current_schema(self) -> str:
        with self._lock:
            try:
                row = self._conn.execute("SELECT current_schema()").fetchone()
            finally:
                self._conn.rollback()
        return str(row[0]) if row and row[0] else "public"

    def _ready(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def tables(self) -> list[TableInfo]:
        with self._lock:
            conn = self._ready()
            try:
                rows = conn.execute(_SCHEMA).fetchall()
            finally:
                conn.rollback()
        columns: dict[str, list[ColumnInfo]] = {}
        for table, column, type_ in rows:
            columns.setdefault(str(table), []).append(ColumnInfo(name=str(column), type=str(type_)))
        return [TableInfo(name=t, columns=tuple(c)) for t, c in columns.items()]

    def execute(self, sql: str, *, max_rows: int, timeout_s: float) -> QueryResult:
        timeout_ms = max(1, round(timeout_s * 1000))
        with self._lock:
            conn = self._ready()
            try:
                # SET LOCAL runs before the query and ends with the transaction.
                conn.execute(f"SET LOCAL statement_timeout = {min(timeout_ms, self._timeout_ms)}")
                with conn.cursor(name="tierflow_sql", scrollable=False) as cursor:
                    cursor.execute(sql)
                    rows = cursor.fetchmany(max_rows + 1)
                    return result_from(cursor.description, rows, max_rows)
            except errors.QueryCanceled:
                raise QueryTimeout(f"query exceeded {timeout_s:g}s") from None
            except psycopg.Error as exc:
                raise SqlEngineError(exc.diag.message_primary or str(exc)) from None
            finally:
                self._reset(conn)

    @staticmethod
    def _reset(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        if conn.closed or conn.broken:
            return  # _ready() reconnects next time
        conn.rollback()
        # Session-level advisory locks survive a rollback: drop any a query took.
        conn.execute("SELECT pg_advisory_unlock_all()")
        conn.rollback()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
