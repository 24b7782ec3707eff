"""Fixtures for the tool tests: the demo shop as SQLite, DuckDB and a real PostgreSQL server
(a ``shop`` database in the session's ``postgres`` cluster, tests/conftest.py)."""

from __future__ import annotations

import csv
import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tierflow.tools.demo.shop import build_shop_db

SHOP_TABLES = ("customers", "products", "orders", "order_items")
# The shop's columns as typed tables in the engines with real DATE and DECIMAL types.
_TYPED_DDL = (
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, email VARCHAR, "
    "country VARCHAR, city VARCHAR, signup_date DATE)",
    "CREATE TABLE products (id INTEGER PRIMARY KEY, name VARCHAR, category VARCHAR, "
    "unit_price_eur DECIMAL(10, 2))",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, order_date DATE, "
    "status VARCHAR)",
    "CREATE TABLE order_items (order_id INTEGER, product_id INTEGER, quantity INTEGER, "
    "unit_price_eur DECIMAL(10, 2), PRIMARY KEY (order_id, product_id))",
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shop_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in SHOP_TABLES}
    finally:
        conn.close()


@pytest.fixture(scope="session")
def shop_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo shop as a SQLite file (shared: tests must leave it byte-identical)."""
    path: Path = build_shop_db(tmp_path_factory.mktemp("shop") / "shop.db")
    return path


@pytest.fixture(scope="session")
def duck_db(shop_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo shop as a DuckDB file, loaded from CSV (row inserts take seconds)."""
    import duckdb

    folder = tmp_path_factory.mktemp("duck")
    path = folder / "shop.duckdb"
    conn = duckdb.connect(str(path))
    try:
        for ddl in _TYPED_DDL:
            conn.execute(ddl)
        for table, rows in _shop_rows(shop_db).items():
            data = folder / f"{table}.csv"
            with data.open("w", newline="") as fh:
                csv.writer(fh).writerows(rows)
            conn.execute(f"COPY {table} FROM '{data}' (HEADER false)")
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    return path


@dataclass(frozen=True)
class PgServer:
    port: int
    admin_url: str  # superuser: for setting up and checking, never given to the tool
    url: str  # the read-only role the tool uses: SELECT on the shop tables, nothing else

    def fingerprint(self) -> list[tuple[object, ...]]:
        """What the database holds: relations, large objects and each table's contents."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            parts = conn.execute(
                "SELECT relname::text, relkind::text FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE nspname NOT IN ('pg_catalog', "
                "'information_schema', 'pg_toast') ORDER BY 1"
            ).fetchall()
            parts += conn.execute(
                "SELECT count(*)::text, '' FROM pg_largeobject_metadata"
            ).fetchall()
            for table in SHOP_TABLES:
                parts += conn.execute(
                    f"SELECT '{table}', md5(string_agg(t::text, '|' ORDER BY t::text)) "
                    f"FROM {table} t"
                ).fetchall()
        return parts


@pytest.fixture(scope="session")
def pg_server(shop_db: Path, postgres: Any) -> PgServer:
    """A real PostgreSQL on 127.0.0.1 holding the shop, for this test session only."""
    import psycopg

    port, admin = postgres.port, postgres.admin
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE shop")
    with psycopg.connect(f"{admin}/shop", autocommit=True) as conn:
        for ddl in _TYPED_DDL:
            conn.execute(ddl)
        for table, rows in _shop_rows(shop_db).items():
            with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        conn.execute("CREATE SEQUENCE order_numbers")
        conn.execute("CREATE ROLE analyst LOGIN")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO analyst")
    return PgServer(
        port=port, admin_url=f"{admin}/shop", url=f"postgresql://analyst@127.0.0.1:{port}/shop"
    )
