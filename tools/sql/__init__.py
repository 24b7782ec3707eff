"""The ``sql_schema`` and ``sql_query`` tools: read-only SQL over one configured database.
Layer: tools (no other tool family); may import only models, resilience, telemetry, the core.

The model never chooses the database: ``settings.tools.sql.url`` (env ``TIERFLOW_SQL_URL``)
does, as ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``duckdb:///x.duckdb`` or
``postgresql://user@host/db``. With no URL the tools read the demo shop database
(``<state_dir>/demo/shop.db``), built on first use.

Read-only holds by construction, in two layers that each hold alone:

(a) the guard (``_sql_guard``) parses the query with sqlglot in the database's dialect,
    accepts one query whose every node, function, cast and table is on an allowlist, and
    hands on SQL regenerated from the checked tree;
(b) the backend (``_sql_backends``, ``_sql_duckdb``, ``_sql_postgres``) opens a connection
    that cannot write or reach files, extensions or other databases, runs one statement
    under a deadline and fetches at most ``max_rows + 1`` rows.

System catalogs (``sqlite_master``, ``information_schema``, ``pg_catalog``, ``duckdb_*``)
are not queryable: ``sql_schema`` gives the tables and columns, and the catalogs would
also expose other schemas, roles, settings and other sessions' queries.

::

    schema_tool, query_tool = make_sql_tools(load_settings())
    outcome = await query_tool.run({"query": "SELECT country, COUNT(*) FROM customers GROUP BY 1"})
    # outcome.output == {"columns": ["country", "COUNT(*)"], "rows": [["AT", 4], ...],
    #                    "row_count": 9, "truncated": False}
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from sqlglot import exp

from tierflow.settings import SqlToolSettings, TierflowSettings
from tierflow.tools.demo.shop import build_shop_db, shop_db_is_current
from tierflow.tools.sql.backends import (
    BackendConfigError,
    ColumnInfo,
    QueryResult,
    QueryTimeout,
    SqlBackend,
    SqlEngineError,
    SqliteBackend,
    TableInfo,
)
from tierflow.tools.sql.connect import open_backend
from tierflow.tools.sql.guard import QueryGuard, QueryRejected, UnknownTable
from tierflow.tools.tool import Tool, ToolError, tool

__all__ = [
    "ColumnInfo",
    "QueryResult",
    "SqlBackend",
    "SqliteBackend",
    "TableInfo",
    "demo_db_path",
    "make_sql_tools",
    "open_backend",
]

_OUTPUT_CHARS = 16_000  # rows are dropped (truncated=True) to keep the JSON under this
_CELL_CHARS = 500  # a longer text value is cut: the model needs a glimpse, not a document
_DUCKDB_MEMORY_MB = 512
_SETUP_S = 10.0  # on top of the query deadline: building the demo db, connecting
_ALL_VALUES = 10  # a text column with at most this many values shows them all
_SAMPLE_CHARS = 40
_TEXT_TYPES = ("CHAR", "TEXT", "CLOB", "STRING", "DATE", "TIME", "ENUM")
_DIALECT_NAMES = {"sqlite": "SQLite", "duckdb": "DuckDB", "postgres": "PostgreSQL"}


def demo_db_path(settings: TierflowSettings) -> Path:
    """Where the demo shop database lives when no SQL URL is configured."""
    return settings.state_dir / "demo" / "shop.db"


def make_sql_tools(settings: TierflowSettings) -> list[Tool]:
    """``[sql_schema, sql_query]`` over the configured database (opened on first use)."""
    session = _SqlSession(settings.tools.sql, demo_db_path(settings))
    dialect = _DIALECT_NAMES[_dialect_of(settings.tools.sql.url)]
    limits = settings.tools.sql

    def sql_schema() -> dict[str, Any]:
        return session.schema()

    sql_schema.__doc__ = (
        f"List the tables of the {dialect} database with their columns (name, type, a "
        "few sample values of text columns) and foreign keys. Call it before writing a query."
    )

    def sql_query(query: str) -> dict[str, Any]:
        return session.query(query)

    # The first paragraph is what the model reads as the description: the facts go there.
    sql_query.__doc__ = f"""Run one read-only SQL query ({dialect} dialect): a single SELECT
        (WITH, joins, GROUP BY, window functions) over the tables listed by sql_schema.
        Returns columns and rows: at most {limits.max_rows} rows (truncated=true when there
        were more); a query running past {limits.timeout_s:g}s is stopped.

        Args:
            query: One SELECT statement, e.g.
                "SELECT country, COUNT(*) AS n FROM customers GROUP BY country".
        """
    timeout = limits.timeout_s + _SETUP_S
    return [
        tool(name="sql_schema", timeout_s=timeout, max_output_chars=_OUTPUT_CHARS * 2)(sql_schema),
        tool(name="sql_query", timeout_s=timeout, max_output_chars=_OUTPUT_CHARS * 2)(sql_query),
    ]


def _dialect_of(url: str | None) -> str:
    scheme = (url or "sqlite:").split(":", 1)[0].lower()
    if scheme.startswith("postgres"):
        return "postgres"
    return scheme if scheme in _DIALECT_NAMES else "sqlite"


class _SqlSession:
    """One lazily opened backend and the guard for its schema, shared by both tools."""

    def __init__(self, settings: SqlToolSettings, demo_path: Path) -> None:
        self._settings = settings
        self._demo_path = demo_path
        self._lock = threading.Lock()
        self._backend: SqlBackend | None = None
        self._guard: QueryGuard | None = None

    def _open(self) -> SqlBackend:
        with self._lock:
            if self._backend is None:
                url = self._settings.url
                if url is None:
                    if not shop_db_is_current(self._demo_path):
                        build_shop_db(self._demo_path)
                    url = f"sqlite:///{self._demo_path.resolve()}"
                try:
                    self._backend = open_backend(
                        url, memory_mb=_DUCKDB_MEMORY_MB, timeout_s=self._settings.timeout_s
                    )
                except BackendConfigError as exc:
                    raise ToolError(str(exc), type="config_error") from None
                except ImportError as exc:
                    raise ToolError(
                        f"the driver for {url.split(':', 1)[0]} is not installed ({exc.name}); "
                        "install tierflow[duckdb] or tierflow[postgres]",
                        type="config_error",
                    ) from None
            return self._backend

    def _tables(self, backend: SqlBackend) -> list[TableInfo]:
        try:
            tables: list[TableInfo] = backend.tables()
        except (SqlEngineError, QueryTimeout, BackendConfigError) as exc:
            raise ToolError(f"cannot read the schema: {exc}", type="sql_error") from None
        return tables

    def _checker(self, backend: SqlBackend, *, refresh: bool = False) -> QueryGuard:
        if self._guard is None or refresh:
            self._guard = QueryGuard(
                dialect=backend.dialect,
                tables=frozenset(t.name.lower() for t in self._tables(backend)),
                schemas=frozenset(s.lower() for s in backend.schemas),
                max_rows_hint=self._settings.max_rows,
            )
        return self._guard

    def schema(self) -> dict[str, Any]:
        backend = self._open()
        tables = self._tables(backend)
        return {
            "dialect": backend.dialect,
            "tables": [
                {
                    "name": t.name,
                    "columns": [
                        {"name": c.name, "type": c.type, **self._samples(backend, t.name, c)}
                        for c in t.columns
                    ],
                    **(
                        {"foreign_keys": [f"{c} -> {rt}.{rc}" for c, rt, rc in t.foreign_keys]}
                        if t.foreign_keys
                        else {}
                    ),
                }
                for t in tables
            ],
        }

    def _samples(self, backend: SqlBackend, table: str, column: ColumnInfo) -> dict[str, Any]:
        """The values of a text column with few (``country``: 'FR', 'DE', ...), so a
        question's "France" can be mapped to the stored 'FR'; one value of a date column."""
        if not any(k in column.type.upper() for k in _TEXT_TYPES):
            return {}
        name = exp.to_identifier(column.name, quoted=True)
        query = (
            exp.select(name, exp.Count(this=exp.Star()).as_("n"))
            .from_(exp.to_table(table, quoted=True))
            .where(exp.Not(this=exp.Is(this=name.copy(), expression=exp.Null())))
            .group_by(name.copy())
            .order_by(exp.Ordered(this=exp.column("n"), desc=True), name.copy())
            .limit(_ALL_VALUES + 1)
        )
        try:
            rows = backend.execute(
                query.sql(dialect=backend.dialect), max_rows=_ALL_VALUES + 1, timeout_s=2.0
            ).rows
        except (SqlEngineError, QueryTimeout):
            return {}
        # Every value of a small set (status, country). Of a large set only a date's format:
        # names and e-mails are personal data, and a tool result holding them makes the
        # run sensitive (residency) for every question about the database.
        if len(rows) > _ALL_VALUES:
            if not any(k in column.type.upper() for k in ("DATE", "TIME")):
                return {}
            rows = rows[:1]
        return {"samples": [_cell(r[0])[:_SAMPLE_CHARS] for r in rows if isinstance(r[0], str)]}

    def query(self, sql: str) -> dict[str, Any]:
        backend = self._open()
        try:
            try:
                checked = self._checker(backend).check(sql)
            except UnknownTable:  # the schema may have grown since we read it
                checked = self._checker(backend, refresh=True).check(sql)
        except QueryRejected as exc:
            raise ToolError(str(exc), type="query_rejected") from None
        timeout_s = self._settings.timeout_s
        try:
            result = backend.execute(checked, max_rows=self._settings.max_rows, timeout_s=timeout_s)
        except QueryTimeout:
            raise ToolError(
                f"the query ran past the {timeout_s:g}s time limit and was stopped; "
                "filter, aggregate or LIMIT it",
                type="timeout",
            ) from None
        except SqlEngineError as exc:
            raise ToolError(str(exc), type="sql_error") from None
        return _output(result)


def _output(result: QueryResult) -> dict[str, Any]:
    rows = [[_cell(v) for v in row] for row in result.rows]
    truncated = result.truncated
    size = len(json.dumps(result.columns, default=str)) + 80
    for kept, row in enumerate(rows):
        size += len(json.dumps(row, default=str)) + 2
        if size > _OUTPUT_CHARS:
            rows, truncated = rows[:kept], True
            break
    return {
        "columns": result.columns,
        "rows": rows,
        "row_count": len(rows),
        "truncated": truncated,
    }


def _cell(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _CELL_CHARS:
        return value[:_CELL_CHARS] + "…"
    return value
