"""sql_schema / sql_query against real SQLite, DuckDB and PostgreSQL databases.

Each guard layer is attacked alone: layer (a), the sqlglot guard, with no database behind
it; layer (b), the backends, by sending malicious statements straight to the connection;
then both together through the tool. Every attack must leave the database unchanged
(byte-identical files, or the same relations and contents on PostgreSQL) and create no file.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tierflow.settings import TierflowSettings, load_settings
from tierflow.tools.demo.shop import CUSTOMERS_PER_COUNTRY, SHOP_VERSION, build_shop_db
from tierflow.tools.sql import make_sql_tools
from tierflow.tools.sql.backends import (
    QueryTimeout,
    SqlEngineError,
    SqliteBackend,
)
from tierflow.tools.sql.connect import open_backend
from tierflow.tools.sql.guard import QueryGuard, QueryRejected
from tierflow.tools.tool import Tool, ToolOutcome

KINDS = ("sqlite", "duckdb", "postgres")
SHOP_TABLES = frozenset({"customers", "products", "orders", "order_items"})
FOREVER = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r"
HUGE = "SELECT * FROM order_items a, order_items b, order_items c"  # ~10^9 rows

# fmt: off
# (database, query, expected refusal), sent to the tool and to the guard alone. {out} is a
# path that must not exist afterwards.
ATTACKS: list[tuple[str, str, str]] = [
    ("all", "INSERT INTO orders VALUES (9999, 1, '2025-01-01', 'x')", "got INSERT"),
    ("all", "UPDATE orders SET status = 'x'", "got UPDATE"),
    ("all", "DELETE FROM orders", "got DELETE"),
    ("all", "DROP TABLE orders", "got DROP"),
    ("all", "CREATE TABLE t (x INT)", "got CREATE"),
    ("all", "ALTER TABLE orders ADD COLUMN x INT", "got ALTER"),
    ("all", "SELECT 1; DROP TABLE orders", "got 2 statements"),
    ("all", "SeLeCt 1 /* ; */; dElEtE FROM orders -- x", "got 2 statements"),
    ("all", "/* SELECT */ DeLeTe FROM orders", "got DELETE"),
    ("all", "WITH x AS (SELECT 1) DELETE FROM orders", "got DELETE"),
    ("all", "EXPLAIN SELECT 1", "EXPLAIN is not allowed"),
    ("all", "EXPLAIN ANALYZE DELETE FROM orders", "EXPLAIN is not allowed"),
    ("all", "SELECT * FROM orders FOR UPDATE", "LOCK is not allowed"),
    ("all", "SELECT * INTO stolen FROM orders", "INTO is not allowed"),
    ("all", "SELECT * FROM nope", "table 'nope' is not in the schema"),
    ("all", "SELECT * FROM information_schema.tables", "schema 'information_schema'"),
    # A CTE is visible only in its own query: outside it, the name is a real table.
    ("all", "SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x", "table 'x' is not"),
    ("all", "WITH a AS (SELECT * FROM a) SELECT * FROM a", "table 'a' is not"),
    ("all", "SELECT ? FROM orders", "PLACEHOLDER is not allowed"),
    ("all", "  -- nothing", "empty"),
    ("sqlite", "ATTACH DATABASE '{out}' AS evil", "got ATTACH"),
    ("sqlite", "VACUUM INTO '{out}'", "got VACUUM"),
    ("sqlite", "PRAGMA writable_schema = ON", "got PRAGMA"),
    ("sqlite", "SELECT load_extension('{out}')", "load_extension"),
    ("sqlite", "SELECT readfile('/etc/passwd')", "readfile"),
    ("sqlite", "SELECT writefile('{out}', 'x')", "writefile"),
    ("sqlite", "SELECT * FROM sqlite_master", "sqlite_master"),
    ("sqlite", "SELECT sql FROM sqlite_schema", "sqlite_schema"),
    ("sqlite", "SELECT * FROM pragma_table_info('orders')", "only plain table names"),
    ("sqlite", "SELECT * FROM temp.sqlite_master", "schema 'temp'"),
    ("sqlite", "REPLACE INTO orders VALUES (1, 1, '2025-01-01', 'x')", "got REPLACE"),
    ("sqlite", "SELECT zeroblob(1000000000)", "zeroblob"),
    ("sqlite", "BEGIN", "got BEGIN"),
    ("duckdb", "FROM '/etc/passwd'", "'/etc/passwd' is not in the schema"),
    ("duckdb", 'SELECT * FROM "/etc/passwd"', "'/etc/passwd' is not in the schema"),
    ("duckdb", "SELECT * FROM read_csv('/etc/passwd')", "only plain table names"),
    ("duckdb", "SELECT * FROM read_text('/etc/passwd')", "only plain table names"),
    ("duckdb", "SELECT read_csv_auto('/etc/passwd')", "read_csv_auto"),
    ("duckdb", "COPY orders TO '{out}'", "got COPY"),
    ("duckdb", "INSTALL httpfs", "got INSTALL"),
    ("duckdb", "LOAD httpfs", "got LOAD"),
    ("duckdb", "SET enable_external_access = true", "got SET"),
    ("duckdb", "ATTACH '{out}' AS evil", "got ATTACH"),
    ("duckdb", "EXPORT DATABASE '{out}'", "got EXPORT"),
    ("duckdb", "SELECT getenv('HOME')", "getenv"),
    ("duckdb", "SELECT * FROM glob('/*')", "only plain table names"),
    ("duckdb", "SELECT * FROM duckdb_settings()", "only plain table names"),
    ("duckdb", "SELECT current_setting('threads')", "current_setting"),
    ("duckdb", "SELECT * FROM query_table('orders')", "only plain table names"),
    ("duckdb", "SUMMARIZE orders", "got SUMMARIZE"),
    ("duckdb", "SELECT repeat('x', 1000000000)", "repeat"),
    ("postgres", "WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x", "got DELETE"),
    ("postgres", "SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    ("postgres", "SELECT pg_catalog.pg_read_file('/etc/passwd')", "DOT is not allowed"),
    ("postgres", "SELECT lo_import('/etc/passwd')", "lo_import"),
    ("postgres", "COPY orders TO PROGRAM 'id'", "got COPY"),
    ("postgres", "COPY (SELECT 1) TO '{out}'", "got COPY"),
    ("postgres", "SELECT * FROM dblink('dbname=shop', 'DELETE FROM orders') AS t(a int)", "only plain"),  # noqa: E501
    ("postgres", "SELECT 'pg_authid'::regclass", "OBJECTIDENTIFIER"),
    ("postgres", "SET TRANSACTION READ WRITE", "got SET"),
    ("postgres", "SELECT set_config('default_transaction_read_only', 'off', false)", "set_config"),
    ("postgres", "SELECT * FROM pg_catalog.pg_authid", "schema 'pg_catalog'"),
    ("postgres", "SELECT * FROM pg_stat_activity", "pg_stat_activity"),
    ("postgres", "SELECT pg_sleep(10)", "pg_sleep"),
    ("postgres", "DO $$ BEGIN DELETE FROM orders; END $$", "got DO"),
    ("postgres", "SELECT nextval('order_numbers')", "nextval"),
    ("postgres", "SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
    ("postgres", "SELECT '<a/>'::xml", "cast to XML"),
    ("postgres", "SELECT lpad('x', 1000000000)", "lpad"),
]

# Statements sent straight to a backend, bypassing the guard: each must fail in the engine.
_WRITES = [
    "INSERT INTO orders VALUES (9999, 1, '2025-01-01', 'x')", "UPDATE orders SET status = 'x'",
    "DELETE FROM orders", "DROP TABLE orders", "CREATE TABLE t (x INT)",
    "ALTER TABLE orders ADD COLUMN x INT", "SELECT 1; DROP TABLE orders",
]
CONNECTION_ATTACKS: list[tuple[str, str]] = [(k, q) for k in KINDS for q in _WRITES] + [
    ("sqlite", "ATTACH DATABASE '{out}' AS evil"),
    ("sqlite", "VACUUM INTO '{out}'"),
    ("sqlite", "PRAGMA writable_schema = ON"),
    ("sqlite", "PRAGMA query_only = OFF"),
    ("sqlite", "SELECT load_extension('{out}')"),
    ("sqlite", "SELECT * FROM sqlite_master"),
    ("sqlite", "SELECT randomblob(10)"),
    ("sqlite", "BEGIN IMMEDIATE"),
    ("duckdb", "FROM '/etc/passwd'"),
    ("duckdb", "SELECT * FROM read_csv('/etc/passwd')"),
    ("duckdb", "COPY orders TO '{out}'"),
    ("duckdb", "INSTALL httpfs"),
    ("duckdb", "LOAD httpfs"),
    ("duckdb", "SET enable_external_access = true"),
    ("duckdb", "ATTACH '{out}' AS evil"),
    ("duckdb", "EXPORT DATABASE '{out}'"),
    ("duckdb", "CREATE TEMP TABLE t AS SELECT 1"),
    ("duckdb", "SELECT * FROM glob('/*')"),
    ("postgres", "WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x"),
    ("postgres", "SET TRANSACTION READ WRITE"),
    ("postgres", "SELECT set_config('transaction_read_only', 'off', true), * FROM orders"),
    ("postgres", "SELECT pg_read_file('/etc/passwd')"),
    ("postgres", "SELECT lo_import('/etc/passwd')"),
    ("postgres", "COPY orders TO PROGRAM 'id'"),
    ("postgres", "SELECT * INTO stolen FROM orders"),
    ("postgres", "SELECT * FROM orders FOR UPDATE"),
    ("postgres", "SELECT nextval('order_numbers')"),
    ("postgres", "DO $$ BEGIN DELETE FROM orders; END $$"),
]

# Analyst queries that must pass: "all" in every dialect, the others in their own.
BENIGN: list[tuple[str, str]] = [
    ("all", "SELECT c.country, COUNT(*) AS n FROM customers c GROUP BY c.country ORDER BY n DESC"),
    ("all", "SELECT o.id, c.name, SUM(i.quantity * i.unit_price_eur) AS total FROM orders o "
            "JOIN customers c ON c.id = o.customer_id JOIN order_items i ON i.order_id = o.id "
            "GROUP BY o.id, c.name ORDER BY total DESC, o.id LIMIT 5"),
    ("all", "SELECT name, RANK() OVER (PARTITION BY category ORDER BY unit_price_eur DESC) AS r, "
            "LAG(unit_price_eur) OVER (ORDER BY id) AS prev FROM products ORDER BY id"),
    ("all", "WITH fr AS (SELECT id FROM customers WHERE country = 'FR') "
            "SELECT COUNT(*) FROM orders WHERE customer_id IN (SELECT id FROM fr)"),
    ("all", "SELECT status, COUNT(*) FROM orders WHERE order_date >= '2025-01-01' "
            "AND order_date < '2026-01-01' GROUP BY status HAVING COUNT(*) > 1 ORDER BY status"),
    ("all", "SELECT COUNT(DISTINCT customer_id), MIN(order_date), MAX(order_date) FROM orders"),
    ("all", "SELECT CASE WHEN quantity >= 3 THEN 'bulk' ELSE 'small' END AS kind, COUNT(*), "
            "AVG(quantity) FROM order_items GROUP BY 1 ORDER BY 1"),
    ("all", "SeLeCt /* a comment */ COUNT(*) -- trailing comment\n FROM Orders"),
    ("all", "SELECT COALESCE(NULL, city), UPPER(name), LOWER(email), LENGTH(name), CAST(id AS "
            "VARCHAR), name || ' (' || country || ')' FROM customers ORDER BY id LIMIT 3"),
    ("all", "SELECT 1 AS x UNION ALL SELECT 2 ORDER BY x"),
    ("all", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) "
            "SELECT SUM(n) FROM r"),
    ("all", "SELECT * FROM customers c LEFT JOIN orders o ON o.customer_id = c.id "
            "WHERE o.id IS NULL ORDER BY c.id"),
    ("all", "SELECT ROW_NUMBER() OVER w, NTILE(4) OVER w, DENSE_RANK() OVER w, "
            "FIRST_VALUE(name) OVER w FROM products WINDOW w AS (ORDER BY unit_price_eur, id)"),
    ("all", "SELECT EXISTS (SELECT 1 FROM orders), NULLIF(1, 2), ABS(-1), ROUND(2.567, 1)"),
    ("all", "(SELECT id FROM orders ORDER BY id LIMIT 1)"),
    ("sqlite", "SELECT strftime('%Y-%m', order_date) AS month, COUNT(*) FROM orders "
               "WHERE order_date < date('2026-01-01') GROUP BY 1 ORDER BY 1"),
    ("sqlite", "SELECT julianday('2026-01-01') - julianday(signup_date), date(signup_date, "
               "'+1 month'), instr(email, '@'), total(id), group_concat(name, ', '), "
               "iif(id > 3, 1, 0), printf('%.2f', 1.0), substr(name, 1, 3), ifnull(city, '-') "
               "FROM customers"),
    ("sqlite", "SELECT CAST(strftime('%m', order_date) AS INTEGER) AS m, COUNT(*) FROM orders "
               "GROUP BY m"),
    ("sqlite", "SELECT date('now'), typeof(1), count(*) FILTER (WHERE status = 'delivered') "
               "FROM orders"),
    ("sqlite", "SELECT * FROM main.orders ORDER BY id LIMIT 1"),
    ("duckdb", "SELECT date_trunc('month', order_date) AS m, COUNT(*) FROM orders GROUP BY ALL "
               "ORDER BY ALL"),
    ("duckdb", "FROM customers SELECT country, count(*) GROUP BY country"),
    ("duckdb", "SELECT extract(year FROM order_date), year(order_date), strftime(order_date, "
               "'%Y-%m'), date_part('dow', order_date), datediff('day', DATE '2025-01-01', "
               "order_date), order_date + INTERVAL 1 DAY FROM orders LIMIT 3"),
    ("duckdb", "SELECT median(unit_price_eur), quantile_cont(unit_price_eur, 0.9), string_agg("
               "name, ', '), count_if(unit_price_eur > 10), arg_max(name, unit_price_eur) "
               "FROM products"),
    ("duckdb", "SELECT name FROM products QUALIFY row_number() OVER (PARTITION BY category "
               "ORDER BY unit_price_eur) = 1"),
    ("duckdb", "SELECT * EXCLUDE (email) FROM customers WHERE signup_date >= DATE '2025-01-01' "
               "AND country ILIKE 'f%'"),
    ("postgres", "SELECT date_trunc('month', order_date) AS m, COUNT(*) FROM orders GROUP BY 1 "
                 "ORDER BY 1"),
    ("postgres", "SELECT extract(year FROM order_date), to_char(order_date, 'YYYY-MM'), "
                 "order_date + INTERVAL '1 day', age(order_date::timestamp), make_date(2025, "
                 "1, 1), now() - interval '30 days' FROM orders LIMIT 3"),
    ("postgres", "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY unit_price_eur), "
                 "string_agg(name, ', ' ORDER BY name), bool_and(unit_price_eur > 1), "
                 "count(*) FILTER (WHERE unit_price_eur > 10) FROM products"),
    ("postgres", "SELECT name ILIKE '%tea%', position('a' in name), split_part(email, '@', 2), "
                 "initcap(name), length(name)::numeric(10, 2) FROM customers"),
    ("postgres", "SELECT DISTINCT ON (category) category, name FROM products "
                 "ORDER BY category, unit_price_eur DESC"),
    ("postgres", "SELECT * FROM public.orders ORDER BY id FETCH FIRST 5 ROWS ONLY"),
]
# fmt: on


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


DIALECT = {"sqlite": "sqlite", "duckdb": "duckdb", "postgres": "postgres"}
SCHEMAS = {"sqlite": {"main"}, "duckdb": {"main"}, "postgres": {"public"}}


@dataclass(frozen=True)
class Db:
    kind: str
    url: str
    state: Callable[[], object]  # what must not change


def _folder_state(path: Path) -> object:
    # The file's bytes, and no journal/WAL/spill file or stray output beside it.
    return sha256(path), sorted(p.name for p in path.parent.iterdir())


def _db(request: pytest.FixtureRequest, kind: str) -> Db:
    if kind == "postgres":
        pg = request.getfixturevalue("pg_server")
        return Db(kind, pg.url, pg.fingerprint)
    path: Path = request.getfixturevalue("shop_db" if kind == "sqlite" else "duck_db")
    return Db(kind, f"{kind}:///{path}", lambda: _folder_state(path))


@pytest.fixture(params=KINDS)
def db(request: pytest.FixtureRequest) -> Db:
    return _db(request, request.param)


def _tools(tmp_path: Path, url: str | None, **sql: Any) -> tuple[Tool, Tool]:
    settings: TierflowSettings = load_settings(
        state_dir=tmp_path / "state",
        tools={"sql": {"url": url, "max_rows": 50, "timeout_s": 2.0, **sql}},
    )
    schema, query = make_sql_tools(settings)
    return schema, query


async def _ask(tool: Tool, sql: str) -> ToolOutcome:
    return await tool.run({"query": sql})


def _rows(outcome: ToolOutcome) -> list[list[Any]]:
    assert outcome.ok, outcome.error
    return list(outcome.output["rows"])


# --- layer (a) alone: the parser, no database -------------------------------------------


def _each_dialect(cases: list[Any]) -> list[Any]:
    return [(k, *rest) for kind, *rest in cases for k in (KINDS if kind == "all" else [kind])]


@pytest.mark.parametrize(("kind", "sql", "why"), _each_dialect(ATTACKS))
def test_guard_alone_rejects(kind: str, sql: str, why: str, tmp_path: Path) -> None:
    guard = QueryGuard(dialect=DIALECT[kind], tables=SHOP_TABLES, schemas=frozenset(SCHEMAS[kind]))
    with pytest.raises(QueryRejected, match=why):
        guard.check(sql.format(out=tmp_path / "out"))


@pytest.mark.parametrize(("kind", "sql"), _each_dialect(BENIGN))
def test_guard_alone_accepts(kind: str, sql: str) -> None:
    guard = QueryGuard(dialect=DIALECT[kind], tables=SHOP_TABLES, schemas=frozenset(SCHEMAS[kind]))
    assert guard.check(sql)


def test_regenerated_sql_returns_what_the_original_returns(shop_db: Path) -> None:
    # The engine runs the SQL regenerated from the checked tree, not the text sent: for
    # every benign SQLite query both must give the same rows.
    guard = QueryGuard(dialect="sqlite", tables=SHOP_TABLES, schemas=frozenset({"main"}))
    conn = sqlite3.connect(f"{shop_db.as_uri()}?mode=ro", uri=True)
    try:
        for kind, sql in BENIGN:
            # "now" differs between two runs; "(SELECT ...)" is only valid once regenerated.
            if kind in ("sqlite", "all") and "now" not in sql and not sql.startswith("("):
                assert conn.execute(guard.check(sql)).fetchall() == conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_message_names_the_statement_and_the_fix() -> None:
    guard = QueryGuard(dialect="postgres", tables=SHOP_TABLES, schemas=frozenset({"public"}))
    with pytest.raises(QueryRejected) as exc:
        guard.check("delete from orders")
    assert str(exc.value) == "only a single SELECT is allowed; got DELETE"
    with pytest.raises(QueryRejected, match="available tables: customers, order_items"):
        guard.check("SELECT * FROM pg_stat_activity")


# --- layer (b) alone: malicious statements straight to the connection ------------------


@pytest.mark.parametrize(("kind", "sql"), CONNECTION_ATTACKS)
def test_connection_alone_refuses(
    kind: str, sql: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    database = _db(request, kind)
    out = tmp_path / "out"
    before = database.state()
    backend = open_backend(database.url)
    try:
        with pytest.raises(SqlEngineError):
            backend.execute(sql.format(out=out), max_rows=10, timeout_s=5)
        # The connection is still usable afterwards, and still sealed.
        assert backend.execute("SELECT COUNT(*) FROM orders", max_rows=1, timeout_s=5).rows == [
            [400]
        ]
    finally:
        backend.close()
    assert database.state() == before
    assert not out.exists()


def test_sqlite_read_only_mode_alone_would_let_vacuum_into_create_a_file(
    shop_db: Path, tmp_path: Path
) -> None:
    # Why the authorizer and the ATTACH limit exist: mode=ro is not enough.
    plain = sqlite3.connect(f"{shop_db.as_uri()}?mode=ro", uri=True)
    plain.execute(f"VACUUM INTO '{tmp_path / 'copy.db'}'")
    plain.close()
    assert (tmp_path / "copy.db").exists()
    with pytest.raises(SqlEngineError):
        SqliteBackend(shop_db).execute(
            f"VACUUM INTO '{tmp_path / 'x.db'}'", max_rows=1, timeout_s=5
        )
    assert not (tmp_path / "x.db").exists()


def test_connection_alone_enforces_the_deadline(db: Db) -> None:
    backend = open_backend(db.url)
    try:
        # FOREVER never ends on its own: only the engine interrupting it at the deadline
        # raises QueryTimeout (a wait without an interrupt would hang, not raise)
        with pytest.raises(QueryTimeout, match=r"query exceeded 0\.3s"):
            backend.execute(FOREVER, max_rows=10, timeout_s=0.3)
        # and the interrupted statement is really gone: the connection runs the next one
        assert backend.execute("SELECT 1", max_rows=1, timeout_s=5).rows == [[1]]
    finally:
        backend.close()


def test_connection_alone_fetches_at_most_max_rows(db: Db) -> None:
    backend = open_backend(db.url)
    try:
        # 10^9 rows: fetching them all would run into the deadline and raise QueryTimeout
        result = backend.execute(HUGE, max_rows=7, timeout_s=5)
        assert (len(result.rows), result.truncated) == (7, True)
    finally:
        backend.close()


def test_postgres_connection_drops_advisory_locks(pg_server: Any) -> None:
    import psycopg

    backend = open_backend(pg_server.url)
    try:
        backend.execute("SELECT pg_advisory_lock(42)", max_rows=1, timeout_s=5)
        with psycopg.connect(pg_server.admin_url, autocommit=True) as other:
            (free,) = other.execute("SELECT pg_try_advisory_lock(42)").fetchone() or (None,)
        assert free is True
    finally:
        backend.close()


# --- both layers: the tools ------------------------------------------------------------


async def test_schema_lists_tables_and_columns(db: Db, tmp_path: Path) -> None:
    schema, _ = _tools(tmp_path, db.url)
    outcome = await schema.run({})
    assert outcome.ok, outcome.error
    tables = {t["name"]: [c["name"] for c in t["columns"]] for t in outcome.output["tables"]}
    assert tables == {
        "customers": ["id", "name", "email", "country", "city", "signup_date"],
        "products": ["id", "name", "category", "unit_price_eur"],
        "orders": ["id", "customer_id", "order_date", "status"],
        "order_items": ["order_id", "product_id", "quantity", "unit_price_eur"],
    }
    assert outcome.output["dialect"] == DIALECT[db.kind]
    assert all(c["type"] for t in outcome.output["tables"] for c in t["columns"])


async def test_benign_queries_pass_with_the_same_answers_everywhere(db: Db, tmp_path: Path) -> None:
    _, query = _tools(tmp_path, db.url)
    for kind, sql in BENIGN:
        if kind in ("all", db.kind):
            outcome = await _ask(query, sql)
            assert outcome.ok, (sql, outcome.error)
    per_country = await _ask(query, "SELECT country, COUNT(*) FROM customers GROUP BY country")
    assert dict(map(tuple, _rows(per_country))) == CUSTOMERS_PER_COUNTRY
    france = await _ask(
        query,
        "SELECT COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id "
        "WHERE c.country = 'FR' AND o.order_date >= '2025-01-01' AND o.order_date < '2026-01-01'",
    )
    assert _rows(france) == [[43]]


async def test_attacks_through_the_tool_are_rejected_and_change_nothing(
    db: Db, tmp_path: Path
) -> None:
    _, query = _tools(tmp_path, db.url)
    out = tmp_path / "out"
    before = db.state()
    for kind, sql, _ in ATTACKS:
        if kind in ("all", db.kind):
            outcome = await _ask(query, sql.format(out=out))
            assert outcome.error is not None, sql
            assert outcome.error.type == "query_rejected", (sql, outcome.error)
    assert db.state() == before
    assert not out.exists()


async def test_time_limit_stops_a_query_that_runs_forever(db: Db, tmp_path: Path) -> None:
    _, query = _tools(tmp_path, db.url, timeout_s=0.3)
    await _ask(query, "SELECT 1")  # connect first: the deadline is about the query
    outcome = await _ask(query, FOREVER)
    assert outcome.error is not None and outcome.error.type == "timeout", outcome.error
    assert "0.3s time limit" in outcome.error.message
    assert _rows(await _ask(query, "SELECT 2")) == [[2]]  # the connection survived


async def test_row_cap_truncates_a_huge_cross_join(db: Db, tmp_path: Path) -> None:
    _, query = _tools(tmp_path, db.url, max_rows=25)
    outcome = await _ask(query, HUGE)
    assert outcome.ok, outcome.error
    assert (outcome.output["row_count"], outcome.output["truncated"]) == (25, True)
    assert len(outcome.output["rows"]) == 25 and len(outcome.output["columns"]) == 12
    small = await _ask(query, "SELECT id FROM products ORDER BY id")
    assert (small.output["row_count"], small.output["truncated"]) == (24, False)


async def test_engine_errors_are_sql_errors(db: Db, tmp_path: Path) -> None:
    _, query = _tools(tmp_path, db.url)
    outcome = await _ask(query, "SELECT no_such_column FROM orders")
    assert outcome.error is not None and outcome.error.type == "sql_error"
    assert "no_such_column" in outcome.error.message


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mysql://root@localhost/shop", "unsupported database URL scheme 'mysql'"),
        ("sqlite:///missing.db", "database file not found: missing.db"),
        ("duckdb:///missing.duckdb", "database file not found: missing.duckdb"),
        ("sqlite://host/shop.db", "bad file database URL"),
    ],
)
async def test_bad_url_is_a_config_error_and_creates_nothing(
    url: str, why: str, tmp_path: Path
) -> None:
    schema, query = _tools(tmp_path, url)  # cwd is tmp_path (tests/conftest.py)
    for outcome in (await schema.run({}), await _ask(query, "SELECT 1")):
        assert outcome.error is not None and outcome.error.type == "config_error"
        assert why in outcome.error.message
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - a test's check, not I/O to await


async def test_relative_sqlite_url_is_relative_to_the_working_directory(
    shop_db: Path, tmp_path: Path
) -> None:
    shutil.copy(shop_db, tmp_path / "copy.db")
    _, query = _tools(tmp_path, "sqlite:///copy.db")
    assert _rows(await _ask(query, "SELECT COUNT(*) FROM products")) == [[24]]
    # A table created by someone else later is found: the schema is re-read once.
    with sqlite3.connect(tmp_path / "copy.db") as writer:
        writer.execute("CREATE TABLE returns (order_id INTEGER, reason TEXT)")
    writer.close()
    assert _rows(await _ask(query, "SELECT COUNT(*) FROM returns")) == [[0]]


async def test_postgres_superuser_is_refused(pg_server: Any, tmp_path: Path) -> None:
    _, query = _tools(tmp_path, pg_server.admin_url)
    outcome = await _ask(query, "SELECT 1")
    assert outcome.error is not None and outcome.error.type == "config_error"
    assert "superuser" in outcome.error.message


async def test_no_url_uses_the_demo_shop_built_once(tmp_path: Path) -> None:
    demo = tmp_path / "state" / "demo" / "shop.db"
    _, query = _tools(tmp_path, None)
    assert _rows(await _ask(query, "SELECT COUNT(*) FROM orders")) == [[400]]
    built = demo.stat().st_mtime_ns
    _, again = _tools(tmp_path, None)
    assert _rows(await _ask(again, "SELECT COUNT(*) FROM customers")) == [[120]]
    assert demo.stat().st_mtime_ns == built  # current version: reused, not rebuilt
    with sqlite3.connect(demo) as conn:
        conn.execute(f"PRAGMA user_version = {SHOP_VERSION + 1}")
    _, stale = _tools(tmp_path, None)
    assert _rows(await _ask(stale, "SELECT COUNT(*) FROM customers")) == [[120]]
    with sqlite3.connect(demo) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SHOP_VERSION,)


# --- the demo shop ----------------------------------------------------------------------


def test_demo_shop_is_one_transaction_deterministic_and_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    with monkeypatch.context() as patch:
        patch.setattr(sqlite3, "connect", traced)
        first = build_shop_db(tmp_path / "a" / "shop.db")
    # What keeps the build fast: every row goes in one transaction (one commit, one sync),
    # not a transaction per row.
    kinds = [s.split(None, 1)[0].upper() for s in statements]
    assert kinds.count("BEGIN") == kinds.count("COMMIT") == 1
    begin, commit = kinds.index("BEGIN"), kinds.index("COMMIT")
    assert "INSERT" not in kinds[:begin] + kinds[commit:]
    with sqlite3.connect(first) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)
    conn.close()
    assert kinds.count("INSERT") == rows > 0
    digest = sha256(first)
    assert sha256(build_shop_db(first)) == digest  # rebuilt in place: identical
    assert sha256(build_shop_db(tmp_path / "b" / "shop.db")) == digest
    assert [p.name for p in first.parent.iterdir()] == ["shop.db"]  # no temp file left


def test_demo_shop_known_answers(shop_db: Path) -> None:
    conn = sqlite3.connect(f"{shop_db.as_uri()}?mode=ro", uri=True)

    def one(sql: str) -> Any:
        return conn.execute(sql).fetchall()

    by_country = dict(one("SELECT country, COUNT(*) FROM customers GROUP BY country"))
    assert by_country == CUSTOMERS_PER_COUNTRY
    span = "SELECT COUNT(*), MIN(order_date), MAX(order_date) FROM orders"
    assert one(span) == [(400, "2025-01-02", "2026-12-31")]
    fr = "FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.country = 'FR'"
    assert one(f"SELECT COUNT(*) {fr}") == [(79,)]
    assert one(f"SELECT COUNT(*) {fr} AND o.order_date LIKE '2025%'") == [(43,)]
    assert dict(one("SELECT status, COUNT(*) FROM orders GROUP BY 1")) == {
        "delivered": 266, "shipped": 44, "cancelled": 40, "returned": 28, "processing": 22,
    }  # fmt: skip
    assert one("SELECT COUNT(*), COUNT(DISTINCT category) FROM products") == [(24, 5)]
    assert one("SELECT COUNT(*) FROM order_items") == [(1007,)]
    revenue = (
        "SELECT ROUND(SUM(i.quantity * i.unit_price_eur), 2) FROM order_items i "
        "JOIN orders o ON o.id = i.order_id WHERE o.status = 'delivered' "
        "AND o.order_date BETWEEN '2025-01-01' AND '2025-12-31'"
    )
    assert one(revenue) == [(51948.08,)]
    assert one("SELECT COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id "
               "WHERE o.order_date < c.signup_date") == [(0,)]  # fmt: skip
    conn.close()
