"""The ``retrieve`` tool: hybrid (dense + BM25) search over a folder of documents.
Layer: tools (no other tool family); may import only models, resilience, telemetry, the core.

The folder is ``settings.tools.retrieval.docs_dir`` (env ``TIERFLOW_DOCS_DIR``), by default
the demo corpus shipped in ``tierflow.tools.demo`` (policies and handbook pages of a small
European online shop). Markdown, text and PDF files are cut into passages (headings, then
paragraphs, with a size cap and a small overlap), embedded with all-MiniLM-L6-v2 (int8
ONNX, CPU, offline) and kept in one SQLite file under ``settings.tools.retrieval.index_dir``
(default ``<state_dir>/index``), one index per corpus folder.

Every call first brings the index in line with the folder: unchanged files cost a
``stat``, changed ones are re-embedded, deleted ones dropped. The first call therefore
loads the model and embeds the corpus (a few seconds for the demo corpus); later calls take
milliseconds. The index survives restarts and may be shared by several processes.

::

    retrieve = make_retrieve_tool(load_settings())
    outcome = await retrieve.run({"query": "how many days do I have to return an item"})
    outcome.output["passages"][0]
    # {"text": "## Return window\\n\\nYou have **30 days** ...", "source": "returns-and-refunds.md",
    #  "position": 1, "start": 332, "end": 898, "section": "Returns and Refunds Policy >
    #  Return window", "score": 0.03279}
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

import tierflow.tools.demo
from tierflow.models.embeddings import Embedder, MiniLMEmbedder
from tierflow.settings import TierflowSettings
from tierflow.tools.retrieval.index import Index, IndexMismatch, IngestReport, Passage
from tierflow.tools.retrieval.store import SqliteVectorStore, VectorStore
from tierflow.tools.tool import Tool, ToolError, tool

__all__ = [
    "Embedder",
    "Index",
    "IngestReport",
    "MiniLMEmbedder",
    "Passage",
    "SqliteVectorStore",
    "VectorStore",
    "demo_docs_dir",
    "index_dir_for",
    "make_retrieve_tool",
]

MAX_K = 10


def demo_docs_dir() -> Path:
    """The packaged demo corpus."""
    return Path(tierflow.tools.demo.__file__).parent / "docs"


def index_dir_for(base: Path, docs_dir: Path) -> Path:
    """One index folder per corpus under ``base``, so switching folders wipes no index."""
    resolved = docs_dir.resolve()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", resolved.name).strip("-") or "docs"
    return base / f"{slug}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"


def make_retrieve_tool(settings: TierflowSettings, *, embedder: Embedder | None = None) -> Tool:
    """Build the ``retrieve`` tool. Cheap: the model and the index load on the first call.

    ``embedder`` replaces the process-wide MiniLM model (``tierflow.models.embeddings``), which
    the semantic router shares.
    """
    docs_dir = settings.tools.retrieval.docs_dir or demo_docs_dir()
    index_base = settings.tools.retrieval.index_dir or settings.state_dir / "index"
    default_k = min(settings.tools.retrieval.top_k, MAX_K)
    state: dict[str, Index] = {}
    lock = threading.Lock()

    def open_index() -> Index:
        with lock:  # concurrent first calls build one model and one index
            if "index" not in state:
                try:
                    if embedder is None:
                        from tierflow.models.embeddings import shared_embedder

                        model: Embedder = shared_embedder()
                    else:
                        model = embedder
                except ImportError as exc:
                    raise ToolError(
                        f"retrieval needs its model packages ({exc.name} is missing): "
                        "reinstall tierflow (they are core dependencies)",
                        type="unavailable",
                    ) from None
                state["index"] = Index(index_dir_for(index_base, docs_dir), model)
            return state["index"]

    def retrieve(
        query: str, k: Annotated[int, Field(ge=1, le=MAX_K)] = default_k
    ) -> dict[str, Any]:
        """Search the document collection (company policies, handbooks, runbooks) for passages.

        Returns the best passages with their source file and position; cite them in the
        answer as [source#position].

        Args:
            query: What to look for, in natural language or keywords.
            k: How many passages to return (1-10).
        """
        if not query.strip():
            raise ToolError("query is empty: say what to look for", type="invalid_arguments")
        if not docs_dir.is_dir():
            raise ToolError(
                f"document folder {docs_dir} does not exist "
                "(set TIERFLOW_DOCS_DIR or tools.retrieval.docs_dir)",
                type="config_error",
            )
        index = open_index()
        try:
            index.ingest(docs_dir)
            passages = index.search(query, k)
        except FileNotFoundError as exc:  # the folder vanished between the check and the scan
            raise ToolError(str(exc), type="config_error") from None
        except IndexMismatch as exc:
            raise ToolError(str(exc), type="index_error") from None
        return {"passages": [p.as_dict() for p in passages]}

    # Generous: the first call loads the model and embeds the whole folder.
    built: Tool = tool(timeout_s=120, max_output_chars=16_000)(retrieve)
    return built
