"""DuckDB behind :class:`~tierflow.tools.sql.backends.SqlBackend`: the only module
importing ``duckdb``.

The file is opened ``read_only`` with external access off (no files, URLs, ATTACH, COPY,
replacement scans like ``FROM '/etc/passwd'``), extension install and autoload off, and
the configuration locked so a query cannot turn any of that back on. DuckDB's own parser
must see exactly one SELECT-type statement, and a timer interrupts a query at its deadline.
"""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb

from tierflow.tools.sql.backends import (
    BackendConfigError,
    ColumnInfo,
    QueryResult,
    QueryTimeout,
    SqlEngineError,
    TableInfo,
    result_from,
)

__all__ = ["DuckDbBackend"]


class DuckDbBackend:
    """A DuckDB file, read-only and sealed; see the module docstring."""

    dialect = "duckdb"
    schemas = frozenset({"main"})

    def __init__(self, path: Path, *, memory_mb: int = 512, threads: int = 1) -> None:
        self.path = path
        self._lock = threading.Lock()
        config: dict[str, str | bool | int | float | list[str]] = {
            "access_mode": "READ_ONLY",
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "memory_limit": f"{memory_mb}MB",
            "threads": threads,
            "temp_directory": "",  # no spill files beside the database: fail instead
            "lock_configuration": True,  # last: SET/RESET cannot undo any of the above
        }
        try:
            self._conn = duckdb.connect(str(path), read_only=True, config=config)
        except duckdb.Error as exc:
            raise BackendConfigError(f"cannot open {path} read-only: {exc}") from None

    def tables(self) -> list[TableInfo]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_catalog = current_database() AND table_schema = current_schema() "
                "ORDER BY table_name, ordinal_position"
            ).fetchall()
        columns: dict[str, list[ColumnInfo]] = {}
        for table, column, type_ in rows:
            columns.setdefault(str(table), []).append(ColumnInfo(name=str(column), type=str(type_)))
        return [TableInfo(name=t, columns=tuple(c)) for t, c in columns.items()]

    def execute(self, sql: str, *, max_rows: int, timeout_s: float) -> QueryResult:
        with self._lock:
            try:
                statements = self._conn.extract_statements(sql)
            except duckdb.Error as exc:
                raise SqlEngineError(str(exc)) from None
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                kinds = ", ".join(s.type.name for s in statements) or "nothing"
                raise SqlEngineError(f"only one SELECT statement may run; got {kinds}")
            timer = threading.Timer(timeout_s, self._conn.interrupt)
            timer.start()
            try:
                cursor = self._conn.execute(statements[0])
                rows = cursor.fetchmany(max_rows + 1)
                return result_from(cursor.description, rows, max_rows)
            except duckdb.InterruptException:
                raise QueryTimeout(f"query exceeded {timeout_s:g}s") from None
            except duckdb.Error as exc:
                raise SqlEngineError(str(exc)) from None
            finally:
                timer.cancel()
                timer.join()  # an interrupt in flight lands before the next query starts

    def close(self) -> None:
        with self._lock:
            self._conn.close()
