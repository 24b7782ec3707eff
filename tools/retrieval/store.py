"""The retrieval index's storage: one SQLite file holding files, chunks and vectors.

Vectors are float32 blobs in the same database as the chunks, searched by brute force
with numpy (:class:`SqliteVectorStore`). Chosen by measurement over sqlite-vec, FAISS and
LanceDB (``bench/retrieval_store.py``): at this scale (hundreds to tens of thousands of
chunks) an exact dot product over a matrix in memory answers in well under a few
milliseconds, adds no dependency, and keeps chunks and vectors in one transaction, so
an ingest is all-or-nothing and two processes can share the file (SQLite's locks, WAL).
sqlite-vec needs ``enable_load_extension``, which this Python's sqlite3 lacks; FAISS and
LanceDB keep vectors in separate files that would need their own locking and recovery.

Concurrency: WAL journal, so readers never wait for a writer; writers take SQLite's
write lock (``BEGIN IMMEDIATE``) and wait up to ``BUSY_TIMEOUT_S`` for each other. A
database that cannot be opened (corrupt, not SQLite) is moved aside and rebuilt: it is
a cache of the documents, never the only copy of anything.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

SCHEMA_VERSION = "1"
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,          -- relative to the corpus root, '/'-separated
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL REFERENCES files(path) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    section TEXT NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    page INTEGER,
    UNIQUE (path, position)
);
CREATE TABLE IF NOT EXISTS vectors (
    chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
    vector BLOB NOT NULL            -- little-endian float32, L2-normalised
);
"""


@runtime_checkable
class VectorStore(Protocol):
    """Nearest-neighbour search over chunk vectors, by inner product (cosine: unit vectors).

    ``write`` runs inside the index's transaction when the store shares its database, so
    chunks and their vectors commit or roll back together.
    """

    def write(
        self, ids: Sequence[int], vectors: NDArray[np.float32], removed: Sequence[int]
    ) -> None: ...

    def search(self, query: NDArray[np.float32], k: int) -> list[tuple[int, float]]: ...


class SqliteVectorStore:
    """Vectors as blobs in the index database; exact search over a cached numpy matrix.

    The matrix is reloaded when this connection wrote vectors or another connection
    committed (``PRAGMA data_version``): a few ms per thousand vectors.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._ids = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._version: int | None = None  # data_version the cache was loaded at
        self._dirty = True

    def write(
        self, ids: Sequence[int], vectors: NDArray[np.float32], removed: Sequence[int]
    ) -> None:
        self._dirty = True
        self._conn.executemany("DELETE FROM vectors WHERE chunk_id = ?", [(i,) for i in removed])
        blobs = np.ascontiguousarray(vectors, dtype="<f4")
        self._conn.executemany(
            "INSERT OR REPLACE INTO vectors (chunk_id, vector) VALUES (?, ?)",
            [(int(i), blobs[row].tobytes()) for row, i in enumerate(ids)],
        )

    def search(self, query: NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        self._refresh()
        if not len(self._ids) or k <= 0:
            return []
        scores = self._matrix @ np.asarray(query, dtype=np.float32)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self._ids[i]), float(scores[i])) for i in top]

    def _refresh(self) -> None:
        version = data_version(self._conn)
        if not self._dirty and version == self._version:
            return
        rows = self._conn.execute(
            "SELECT chunk_id, vector FROM vectors ORDER BY chunk_id"
        ).fetchall()
        self._ids = np.array([r[0] for r in rows], dtype=np.int64)
        self._matrix = (
            np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
            if rows
            else np.zeros((0, 0), dtype=np.float32)
        )
        self._version, self._dirty = version, False


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the database."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def open_database(path: Path) -> sqlite3.Connection:
    """Open (or create) the index database; a corrupt one is moved aside and recreated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _open(path)
    except sqlite3.DatabaseError as exc:
        # Only a damaged file is replaced; "database is locked" and I/O errors are raised.
        if exc.sqlite_errorname not in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            raise
        aside = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
        path.rename(aside)
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return _open(path)


def _open(path: Path) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT). The
    # connection is shared by threads under the index's lock.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        stored = conn.execute(
            "SELECT value FROM meta WHERE key = 'schema'"
            if _has_table(conn, "meta")
            else "SELECT NULL WHERE 0"
        ).fetchone()
        if stored is not None and stored[0] != SCHEMA_VERSION:
            for table in ("vectors", "chunks", "files", "meta"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        if stored is None or stored[0] != SCHEMA_VERSION:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
    return row.fetchone() is not None
