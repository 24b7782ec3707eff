"""The retrieval index and the ``retrieve`` tool, with the real MiniLM model on real files.

The model loads once (the process-wide instance) and the demo corpus is embedded once
(module fixtures); tests that change files use small corpora of their own in tmp_path.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from tierflow.models.embeddings import shared_embedder
from tierflow.settings import TierflowSettings, load_settings
from tierflow.tools.retrieval import (
    Embedder,
    Index,
    MiniLMEmbedder,
    demo_docs_dir,
    index_dir_for,
    make_retrieve_tool,
)
from tierflow.tools.retrieval.demo_pdf import PDF_PATH, build_pdf
from tierflow.tools.retrieval.loaders import MAX_CHARS, OVERLAP_CHARS, chunk_document
from tierflow.tools.retrieval.rank import reciprocal_rank_fusion


class CountingEmbedder:
    """The real embedder, counting how often it is asked (and optionally renamed)."""

    def __init__(self, inner: Embedder, model_id: str | None = None) -> None:
        self.inner = inner
        self._model_id = model_id or inner.model_id
        self.calls = 0
        self.texts = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls += 1
        self.texts += len(texts)
        vectors: NDArray[np.float32] = self.inner.embed(texts)
        return vectors


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    """The process-wide model, the one the tool uses when given none."""
    shared = shared_embedder()
    assert isinstance(shared, MiniLMEmbedder)
    return shared


@pytest.fixture(scope="module")
def index_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("retrieval-index")


@pytest.fixture(scope="module")
def demo_index(embedder: Embedder, index_base: Path) -> Iterator[Index]:
    """The packaged demo corpus, indexed where the tool with ``index_base`` looks."""
    index = Index(index_dir_for(index_base, demo_docs_dir()), embedder)
    report = index.ingest(demo_docs_dir())
    assert report.files_seen == 11 and report.chunks_embedded > 40 and not report.skipped
    yield index
    index.close()


def _settings(tmp_path: Path, **retrieval: object) -> TierflowSettings:
    return load_settings(state_dir=tmp_path / "state", tools={"retrieval": retrieval})


def _write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())


SMALL = {
    "returns.md": """
        # Returns

        ## Return window

        You can return any item within 30 days of delivery for a full refund.

        ## Exceptions

        Engraved items and opened coffee cannot be returned.
        """,
    "shipping.md": """
        # Shipping

        We deliver to Germany in 2 to 4 business days; shipping costs 6.95 euro.
        We do not ship to the Canary Islands.
        """,
    "notes.txt": "Warehouse notes\n\nThe warehouse in Nieuwegein closes at 17:00.\n",
}


# -- retrieval quality on the demo corpus -------------------------------------------------


@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("how many days do I have to return an item", "returns-and-refunds.md"),
        ("Do you deliver to the Canary Islands?", "shipping.md"),
        ("How long do you keep my invoices?", "privacy-notice.md"),
        ("How many vacation days do full-time employees get?", "employee-handbook.md"),
        ("How quickly must a SEV1 page be acknowledged?", "on-call-runbook.md"),
        ("Can I use SMS codes as a second factor?", "security-policy.md"),
        ("The enamel on my pot chipped, is that covered?", "product-warranty.md"),
        ("Do you take Apple Pay?", "payments-faq.txt"),
    ],
)
def test_questions_retrieve_their_source(demo_index: Index, question: str, source: str) -> None:
    passages = demo_index.search(question, k=4)
    assert len(passages) == 4
    assert source in [p.source for p in passages], [(p.source, p.section) for p in passages]


def test_the_return_window_passage_holds_the_answer(demo_index: Index) -> None:
    top = demo_index.search("how many days do I have to return an item", k=1)[0]
    assert top.section == "Returns and Refunds Policy > Return window"
    assert "30 days" in top.text


def test_pdf_text_is_retrieved_with_its_page(demo_index: Index) -> None:
    top = demo_index.search("How often should I oil my wooden chopping board?", k=4)[0]
    assert (top.source, top.page) == ("product-care-guide.pdf", 2)
    assert "every four weeks" in " ".join(top.text.split())
    assert top.section == "Fernhill Product Care Guide > page 2"


def test_committed_pdf_is_what_the_generator_writes() -> None:
    assert build_pdf() == PDF_PATH.read_bytes()


def test_hybrid_ranking_uses_both_lists(demo_index: Index) -> None:
    # An exact token only BM25 can see ranks its document; a paraphrase only dense sees.
    keyword = demo_index.search("patronictl", k=1, mode="keyword")
    assert keyword[0].source == "on-call-runbook.md"
    assert demo_index.search("patronictl", k=1)[0].source == "on-call-runbook.md"
    dense = demo_index.search("I am sick today, who do I tell?", k=1, mode="dense")
    assert dense[0].source == "employee-handbook.md"


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1]])
    assert [doc for doc, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


# -- incremental ingest and persistence ---------------------------------------------------


def test_reingest_of_unchanged_files_embeds_nothing(tmp_path: Path, embedder: Embedder) -> None:
    docs = tmp_path / "docs"
    _write(docs, SMALL)
    counting = CountingEmbedder(embedder)
    with Index(tmp_path / "index", counting) as index:
        first = index.ingest(docs)
        assert sorted(first.added) == ["notes.txt", "returns.md", "shipping.md"]
        assert first.chunks_embedded == counting.texts > 0
        counting.calls = 0

        again = index.ingest(docs)
        assert (again.chunks_embedded, again.unchanged, again.added) == (0, 3, ())
        notes = docs / "notes.txt"
        mtime = notes.stat().st_mtime_ns + 10**9
        os.utime(notes, ns=(mtime, mtime))  # new mtime, same content: hashed, not embedded
        touched = index.ingest(docs)
        assert (touched.chunks_embedded, touched.changed, touched.unchanged) == (0, (), 3)
        assert counting.calls == 0

    # Reopened from disk (a new process would do the same): no re-embedding, same answers.
    with Index(tmp_path / "index", counting) as reopened:
        assert reopened.ingest(docs).chunks_embedded == 0
        assert counting.calls == 0
        hit = reopened.search("can I send back an engraved board", k=1)[0]
        assert hit.source == "returns.md" and "Engraved" in hit.text
        assert counting.calls == 1  # the query only


def test_changed_file_is_reindexed_and_deleted_file_disappears(
    tmp_path: Path, embedder: Embedder
) -> None:
    docs = tmp_path / "docs"
    _write(docs, SMALL)
    counting = CountingEmbedder(embedder)
    with Index(tmp_path / "index", counting) as index:
        index.ingest(docs)
        path = docs / "returns.md"
        path.write_text(path.read_text().replace("30 days", "45 days"))
        (docs / "shipping.md").unlink()
        before = counting.texts

        report = index.ingest(docs)
        assert report.changed == ("returns.md",) and report.removed == ("shipping.md",)
        assert report.chunks_embedded == counting.texts - before == 2  # returns.md only
        assert report.chunks_removed == 2 + 1  # returns.md's old chunks and shipping.md's

        window = index.search("how long is the return window", k=1)[0]
        assert "45 days" in window.text
        sources = {p.source for p in index.search("deliver to the Canary Islands", k=10)}
        assert sources == {"returns.md", "notes.txt"}


def test_a_new_embedding_model_reembeds_everything(tmp_path: Path, embedder: Embedder) -> None:
    docs = tmp_path / "docs"
    _write(docs, SMALL)
    with Index(tmp_path / "index", CountingEmbedder(embedder)) as index:
        chunks = index.ingest(docs).chunks_embedded
    renamed = CountingEmbedder(embedder, model_id="another-model")
    with Index(tmp_path / "index", renamed) as index:
        report = index.ingest(docs)
    assert report.chunks_embedded == renamed.texts == chunks
    assert len(report.added) == 3


def test_unreadable_files_are_skipped_not_fatal(tmp_path: Path, embedder: Embedder) -> None:
    docs = tmp_path / "docs"
    _write(docs, {"notes.txt": SMALL["notes.txt"]})
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf")
    (docs / "image.png").write_bytes(b"\x89PNG")  # unsupported type: ignored
    (docs / ".hidden.md").write_text("# Hidden\n\nnot indexed")
    with Index(tmp_path / "index", embedder) as index:
        report = index.ingest(docs)
        assert report.added == ("notes.txt",)
        assert [path for path, _ in report.skipped] == ["broken.pdf"]
        assert "PDF" in report.skipped[0][1]
        assert {p.source for p in index.search("warehouse", k=10)} == {"notes.txt"}


def test_a_corrupt_index_file_is_rebuilt(tmp_path: Path, embedder: Embedder) -> None:
    docs = tmp_path / "docs"
    _write(docs, {"notes.txt": SMALL["notes.txt"]})
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "retrieval.sqlite").write_bytes(b"garbage, not sqlite" * 100)
    with Index(tmp_path / "index", embedder) as index:
        assert index.ingest(docs).chunks_embedded == 1
    assert list((tmp_path / "index").glob("retrieval.sqlite.corrupt-*"))


_OTHER_PROCESS = """
import sys
from pathlib import Path
from tierflow.tools.retrieval import Index, MiniLMEmbedder
index = Index(Path(sys.argv[1]), MiniLMEmbedder())
print("ready", flush=True)
sys.stdin.readline()
report = index.ingest(Path(sys.argv[2]))
print(report.chunks_embedded, flush=True)
"""


def test_two_processes_ingesting_at_once_leave_one_consistent_index(
    tmp_path: Path, embedder: Embedder
) -> None:
    docs = tmp_path / "docs"
    _write(docs, SMALL)
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, str(tmp_path / "index"), str(docs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdin is not None and other.stdout is not None
    assert other.stdout.readline().strip() == "ready"  # model loaded, index open
    with Index(tmp_path / "index", embedder) as index:
        other.stdin.write("go\n")
        other.stdin.flush()
        mine = index.ingest(docs).chunks_embedded
        theirs = int(other.stdout.readline())
        assert other.wait(timeout=60) == 0
        # Whoever wrote second found the files already indexed: each chunk is there once.
        assert mine + theirs == 4
        rows = index._conn.execute("SELECT path, position FROM chunks").fetchall()
        assert len(rows) == len(set(rows)) == 4
        assert index._conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert index.ingest(docs).chunks_embedded == 0
        assert index.search("Canary Islands", k=1)[0].source == "shipping.md"


# -- chunking -----------------------------------------------------------------------------


def test_chunks_are_exact_slices_under_headings_with_a_size_cap() -> None:
    long_paragraph = " ".join(
        f"Sentence number {i} says something about refunds." for i in range(60)
    )
    text = (
        f"# Policy\n\nIntro line.\n\n## Refunds\n\n{long_paragraph}\n\n"
        "## Empty\n\n### Deeper\n\nLast.\n"
    )
    chunks = chunk_document("policy.md", text.encode())
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert len(c.text) <= MAX_CHARS + OVERLAP_CHARS
    assert chunks[0].section == "Policy"
    assert {c.section for c in chunks[1:-1]} == {"Policy > Refunds"}
    assert chunks[-1].section == "Policy > Empty > Deeper"
    refunds = chunks[1:-1]
    assert len(refunds) >= 3
    assert all(a.start < b.start < a.end for a, b in itertools.pairwise(refunds))


def test_pdf_chunks_carry_their_page() -> None:
    chunks = chunk_document("guide.pdf", PDF_PATH.read_bytes())
    assert [c.page for c in chunks] == [1, 2, 3]
    assert "220 degrees" in " ".join(chunks[0].text.split())


# -- the tool -----------------------------------------------------------------------------


async def test_tool_returns_citable_passages(
    tmp_path: Path, demo_index: Index, index_base: Path, embedder: Embedder
) -> None:
    counting = CountingEmbedder(embedder)
    retrieve = make_retrieve_tool(_settings(tmp_path, index_dir=index_base), embedder=counting)
    assert retrieve.name == "retrieve"
    k_schema = retrieve.parameters["properties"]["k"]
    assert (k_schema["minimum"], k_schema["maximum"], k_schema["default"]) == (1, 10, 4)

    outcome = await retrieve.run({"query": "how many days do I have to return an item", "k": 3})
    assert outcome.ok, outcome.error
    assert counting.texts == 1  # the demo index was already built: only the query embedded
    passages = outcome.output["passages"]
    assert len(passages) == 3
    assert passages[0]["source"] == "returns-and-refunds.md"
    assert [p["score"] for p in passages] == sorted((p["score"] for p in passages), reverse=True)
    for p in passages:
        assert set(p) == {"text", "source", "position", "start", "end", "section", "score"}
        source_text = (demo_docs_dir() / p["source"]).read_text()
        assert source_text[p["start"] : p["end"]] == p["text"]

    pdf = await retrieve.run({"query": "washing linen tea towels temperature", "k": 1})
    assert pdf.output["passages"][0]["page"] == 3
    assert pdf.output["passages"][0]["source"] == "product-care-guide.pdf"


@pytest.mark.parametrize("args", [{"query": "refund", "k": 0}, {"query": "refund", "k": 11}])
async def test_k_out_of_bounds_is_rejected(
    tmp_path: Path, args: dict[str, object], embedder: Embedder
) -> None:
    retrieve = make_retrieve_tool(_settings(tmp_path), embedder=embedder)
    outcome = await retrieve.run(args)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.type == "invalid_arguments" and "k" in outcome.error.message


async def test_empty_query_is_rejected(tmp_path: Path, embedder: Embedder) -> None:
    retrieve = make_retrieve_tool(_settings(tmp_path), embedder=embedder)
    outcome = await retrieve.run({"query": "   "})
    assert outcome.error is not None and outcome.error.type == "invalid_arguments"


async def test_missing_folder_is_a_config_error(tmp_path: Path, embedder: Embedder) -> None:
    retrieve = make_retrieve_tool(
        _settings(tmp_path, docs_dir=tmp_path / "nowhere"), embedder=embedder
    )
    outcome = await retrieve.run({"query": "refund"})
    assert outcome.error is not None and outcome.error.type == "config_error"
    assert "nowhere" in outcome.error.message


async def test_tool_follows_the_folder_between_calls(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    _write(docs, {"notes.txt": SMALL["notes.txt"]})
    monkeypatch.setenv("TIERFLOW_DOCS_DIR", str(docs))
    # No embedder given: the tool takes the process-wide one (already loaded by the fixture).
    retrieve = make_retrieve_tool(load_settings(state_dir=tmp_path / "state"))
    first = await retrieve.run({"query": "when does the warehouse close", "k": 2})
    assert [p["source"] for p in first.output["passages"]] == ["notes.txt"]
    shutil.copy(demo_docs_dir() / "gift-cards.txt", docs / "gift-cards.txt")
    second = await retrieve.run({"query": "how long is a gift card valid", "k": 1})
    assert second.output["passages"][0]["source"] == "gift-cards.txt"
    assert list((tmp_path / "state" / "index").glob("docs-*/retrieval.sqlite"))
