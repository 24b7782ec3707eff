"""The persistent hybrid index: ingest a folder incrementally, search it dense + BM25."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from tierflow.models.embeddings import Embedder
from tierflow.tools.retrieval.loaders import SUFFIXES, Chunk, UnreadableDocument, chunk_document
from tierflow.tools.retrieval.rank import KeywordIndex, reciprocal_rank_fusion
from tierflow.tools.retrieval.store import (
    SqliteVectorStore,
    VectorStore,
    data_version,
    open_database,
)

DB_NAME = "retrieval.sqlite"
MAX_FILE_BYTES = 20 * 1024 * 1024
CANDIDATES = 20  # depth of each ranked list fed to the fusion

SearchMode = Literal["hybrid", "dense", "keyword"]


class IndexMismatch(Exception):
    """The index holds vectors of another embedding model: ingest again to rebuild it."""


@dataclass(frozen=True, kw_only=True)
class Passage:
    """One search hit, with what the answer needs to cite it as ``[source#position]``."""

    text: str
    source: str  # path relative to the corpus root, '/'-separated
    position: int  # chunk index within the file
    start: int  # character offsets of ``text`` in the file's text (the page's, for PDF)
    end: int
    page: int | None  # 1-based, PDF only
    section: str
    score: float  # reciprocal-rank-fusion score: higher is better, comparable within a query

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "source": self.source,
            "position": self.position,
            "start": self.start,
            "end": self.end,
        }
        if self.page is not None:
            out["page"] = self.page
        out |= {"section": self.section, "score": self.score}
        return out


@dataclass(frozen=True, kw_only=True)
class IngestReport:
    """What an :meth:`Index.ingest` did. ``chunks_embedded == 0`` means nothing was re-embedded."""

    files_seen: int
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason): unreadable or too large
    chunks_embedded: int = 0
    chunks_removed: int = 0
    duration_ms: float = 0.0


@dataclass
class _Prepared:
    path: str
    sha256: str
    size: int
    mtime_ns: int
    chunks: list[Chunk] = field(default_factory=list)
    vectors: NDArray[np.float32] | None = None


class Index:
    """A folder of Markdown, text and PDF files, indexed for hybrid search; persists on disk.

    ::

        index = Index(Path("state/index/docs"), MiniLMEmbedder())
        report = index.ingest(Path("docs"))  # embeds only new or changed files
        for p in index.search("how many days to return an item", k=4):
            print(f"[{p.source}#{p.position}]", p.text[:80])

    Ingest is incremental: files are keyed by content hash (size and mtime only decide
    whether to hash again), so unchanged files cost a ``stat``, changed files are
    re-chunked and re-embedded, and deleted files disappear. Embedding happens outside
    the database's write lock; the write is one transaction that re-checks what another
    process may have written meanwhile. Two processes may therefore ingest and search the
    same index at once: readers never block, writers queue, nothing is half-written.
    Search fuses a dense ranking and a BM25 ranking by reciprocal rank fusion.
    """

    def __init__(
        self,
        index_dir: Path,
        embedder: Embedder,
        *,
        store: Callable[[sqlite3.Connection], VectorStore] = SqliteVectorStore,
    ) -> None:
        self.path = index_dir / DB_NAME
        self._embedder = embedder
        self._conn = open_database(self.path)
        self._store = store(self._conn)
        self._lock = threading.Lock()  # the connection and the caches
        self._ingest_lock = threading.Lock()  # one ingest at a time per process
        self._keywords: KeywordIndex | None = None
        self._keywords_version: int | None = None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ingest -------------------------------------------------------------------

    def ingest(self, folder: Path) -> IngestReport:
        """Bring the index in line with ``folder``. Raises FileNotFoundError if it is missing."""
        started = time.perf_counter()
        root = folder.resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"document folder not found: {folder}")
        with self._ingest_lock:
            on_disk, skipped = _scan(root)
            with self._lock:
                known = self._known_files(str(root)) or {}
            prepared: list[_Prepared] = []
            touched: list[_Prepared] = []  # content unchanged, only size/mtime moved
            for rel, (size, mtime_ns) in on_disk.items():
                old = known.get(rel)
                if old is not None and old[1:] == (size, mtime_ns):
                    continue
                try:
                    data = (root / rel).read_bytes()
                except OSError as exc:
                    skipped.append((rel, f"cannot read: {exc.strerror or exc}"))
                    continue
                item = _Prepared(rel, hashlib.sha256(data).hexdigest(), size, mtime_ns)
                if old is not None and old[0] == item.sha256:
                    touched.append(item)
                    continue
                try:
                    item.chunks = chunk_document(rel, data)
                except UnreadableDocument as exc:
                    skipped.append((rel, str(exc)))
                    continue
                prepared.append(item)
            unreadable = {rel for rel, _ in skipped}
            removed = sorted(rel for rel in known if rel not in on_disk or rel in unreadable)
            self._embed(prepared)
            with self._lock:
                embedded, dropped = self._write(str(root), prepared, touched, removed)
        return IngestReport(
            files_seen=len(on_disk),
            added=tuple(p.path for p in prepared if p.path not in known),
            changed=tuple(p.path for p in prepared if p.path in known),
            removed=tuple(removed),
            unchanged=len(on_disk) - len(prepared) - len(unreadable & on_disk.keys()),
            skipped=tuple(sorted(skipped)),
            chunks_embedded=embedded,
            chunks_removed=dropped,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def _known_files(self, root: str) -> dict[str, tuple[str, int, int]] | None:
        """What the index holds; None if it was built for another root or model."""
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("root") != root or meta.get("embedder") != self._embedder.model_id:
            return None
        rows = self._conn.execute("SELECT path, sha256, size, mtime_ns FROM files")
        return {path: (sha, size, mtime) for path, sha, size, mtime in rows}

    def _embed(self, prepared: list[_Prepared]) -> None:
        texts = [_indexed_text(c) for p in prepared for c in p.chunks]
        vectors = self._embedder.embed(texts) if texts else np.zeros((0, 0), dtype=np.float32)
        row = 0
        for p in prepared:
            p.vectors = vectors[row : row + len(p.chunks)]
            row += len(p.chunks)

    def _write(
        self, root: str, prepared: list[_Prepared], touched: list[_Prepared], removed: list[str]
    ) -> tuple[int, int]:
        """One transaction; re-reads the files table under the write lock. -> (added, dropped)."""
        if not (prepared or touched or removed) and self._known_files(root) is not None:
            return 0, 0  # nothing to write: no write lock taken
        with self._transaction():
            current = self._known_files(root)
            if current is None:  # a new corpus or model: start from empty
                current = {}
                self._delete_chunks(None)
                self._conn.execute("DELETE FROM files")
                for key, value in (("root", root), ("embedder", self._embedder.model_id)):
                    self._conn.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, value),
                    )
            gone = [rel for rel in removed if rel in current]
            dropped = sum(self._delete_chunks(rel) for rel in gone)
            self._conn.executemany("DELETE FROM files WHERE path = ?", [(r,) for r in gone])
            # Same content under a new mtime, or a version another process just indexed.
            same = [p for p in touched + prepared if current.get(p.path, ("",))[0] == p.sha256]
            self._conn.executemany(
                "UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?",
                [(p.size, p.mtime_ns, p.path) for p in same],
            )
            same_paths = {p.path for p in same}
            embedded = 0
            for item in prepared:
                if item.path in same_paths or item.vectors is None:
                    continue
                dropped += self._delete_chunks(item.path) if item.path in current else 0
                self._conn.execute(
                    "INSERT INTO files (path, sha256, size, mtime_ns) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(path) DO UPDATE SET sha256 = excluded.sha256, "
                    "size = excluded.size, mtime_ns = excluded.mtime_ns",
                    (item.path, item.sha256, item.size, item.mtime_ns),
                )
                ids = [self._insert_chunk(item.path, c) for c in item.chunks]
                self._store.write(ids, item.vectors, removed=[])
                embedded += len(ids)
        self._keywords = None  # this connection wrote: data_version does not show it
        return embedded, dropped

    def _delete_chunks(self, path: str | None) -> int:
        where, args = ("WHERE path = ?", (path,)) if path is not None else ("", ())
        ids = [r[0] for r in self._conn.execute(f"SELECT id FROM chunks {where}", args)]
        if ids:
            self._store.write([], np.zeros((0, 0), dtype=np.float32), removed=ids)
            self._conn.execute(f"DELETE FROM chunks {where}", args)
        return len(ids)

    def _insert_chunk(self, path: str, c: Chunk) -> int:
        cur = self._conn.execute(
            "INSERT INTO chunks (path, position, section, text, start, end, page) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (path, c.position, c.section, c.text, c.start, c.end, c.page),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")  # the write lock, waited for up to the timeout
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- search -------------------------------------------------------------------

    def search(self, query: str, k: int = 4, *, mode: SearchMode = "hybrid") -> list[Passage]:
        """The ``k`` best passages for ``query``: dense and BM25 rankings fused by RRF.

        ``mode`` "dense" or "keyword" uses one ranking alone (for benchmarks and debugging);
        the score is then still 1 / (60 + rank).
        """
        query = query.strip()
        if not query:
            raise ValueError("query is empty")
        if k < 1:
            raise ValueError("k must be at least 1")
        vector = self._embedder.embed([query])[0] if mode != "keyword" else None
        depth = max(k, CANDIDATES)
        with self._lock:
            stored = self._conn.execute("SELECT value FROM meta WHERE key = 'embedder'").fetchone()
            if stored is None:
                return []  # never ingested
            if stored[0] != self._embedder.model_id:
                raise IndexMismatch(f"index built with {stored[0]}; ingest again to rebuild it")
            rankings = []
            if vector is not None:
                rankings.append([i for i, _ in self._store.search(vector, depth)])
            if mode != "dense":
                rankings.append(self._keyword_index().search(query, depth))
            fused = reciprocal_rank_fusion(rankings)[:k]
            if not fused:
                return []
            rows = {
                r[0]: r
                for r in self._conn.execute(
                    "SELECT id, path, position, section, text, start, end, page FROM chunks "
                    f"WHERE id IN ({','.join('?' * len(fused))})",
                    [i for i, _ in fused],
                )
            }
        return [
            Passage(
                text=row[4],
                source=row[1],
                position=row[2],
                section=row[3],
                start=row[5],
                end=row[6],
                page=row[7],
                score=round(score, 5),
            )
            for chunk_id, score in fused
            if (row := rows.get(chunk_id)) is not None
        ]

    def _keyword_index(self) -> KeywordIndex:
        version = data_version(self._conn)  # moves when another process commits
        if self._keywords is None or version != self._keywords_version:
            rows = self._conn.execute("SELECT id, section, text FROM chunks ORDER BY id").fetchall()
            self._keywords = KeywordIndex([r[0] for r in rows], [f"{r[1]}\n{r[2]}" for r in rows])
            self._keywords_version = version
        return self._keywords


def _indexed_text(chunk: Chunk) -> str:
    # The heading path goes with the text, so "Refunds" under "Returns Policy" is findable
    # by both words and by meaning even when the paragraph never repeats them.
    return f"{chunk.section}\n{chunk.text}"


def _scan(root: Path) -> tuple[dict[str, tuple[int, int]], list[tuple[str, str]]]:
    """Supported files under ``root`` (hidden ones skipped) -> {relative path: (size, mtime)}."""
    found: dict[str, tuple[int, int]] = {}
    skipped: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in SUFFIXES:
                continue
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            try:
                st = path.stat()
            except OSError as exc:
                skipped.append((rel, f"cannot read: {exc.strerror or exc}"))
                continue
            if st.st_size > MAX_FILE_BYTES:
                skipped.append((rel, f"larger than {MAX_FILE_BYTES // 2**20} MB"))
                continue
            found[rel] = (st.st_size, st.st_mtime_ns)
    return found, skipped
