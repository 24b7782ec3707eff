"""From a database URL to the read-only :class:`~tierflow.tools.sql.backends.SqlBackend`
that serves it (SQLite, DuckDB, PostgreSQL; the drivers are imported when first used)."""

from __future__ import annotations

from tierflow.tools.sql.backends import (
    BackendConfigError,
    SqlBackend,
    SqliteBackend,
    file_from_url,
)


def open_backend(url: str, *, memory_mb: int = 512, timeout_s: float = 30.0) -> SqlBackend:
    """The backend for ``url``: ``sqlite:///rel.db``, ``sqlite:////abs.db``,
    ``duckdb:///x.duckdb`` or ``postgresql://user@host/db``. Never creates a database.

    ``memory_mb`` bounds DuckDB; ``timeout_s`` is PostgreSQL's session statement timeout
    (each query also gets its own deadline from :meth:`SqlBackend.execute`)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return SqliteBackend(file_from_url(url))
    if scheme == "duckdb":
        # Imported here: each driver is an optional extra.
        from tierflow.tools.sql.duckdb_backend import DuckDbBackend

        duck: SqlBackend = DuckDbBackend(file_from_url(url), memory_mb=memory_mb)
        return duck
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        from tierflow.tools.sql.postgres_backend import PostgresBackend

        pg: SqlBackend = PostgresBackend(
            "postgresql" + url[len(scheme) :], statement_timeout_s=timeout_s
        )
        return pg
    raise BackendConfigError(
        f"unsupported database URL scheme {scheme or url!r}: use sqlite:///path.db, "
        "duckdb:///path.duckdb or postgresql://user@host/db"
    )
