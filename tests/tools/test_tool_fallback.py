"""A tool whose service is unavailable answers through its configured alternative."""

from __future__ import annotations

from pathlib import Path

from tierflow.settings import load_settings
from tierflow.tools.builtin import BuiltinTools
from tierflow.tools.tool import ToolError, tool


@tool
def search(query: str, max_results: int = 5) -> str:
    """Search the web.

    Args:
        query: What to look for.
        max_results: How many results.
    """
    if query == "bad":
        raise ToolError("query too vague", type="invalid_arguments")
    raise ToolError("no network", type="search_unavailable")


@tool
def docs(query: str, k: int = 3) -> dict[str, object]:
    """Search the documents.

    Args:
        query: What to look for.
        k: How many passages.
    """
    return {"passages": [{"text": f"about {query}", "source": "a.md"}], "k": k}


async def test_unavailable_tool_answers_through_the_alternative() -> None:
    both = search.with_fallback(docs)

    outcome = await both.run({"query": "refunds", "max_results": 2})

    assert outcome.ok and outcome.answered_by == "docs"
    assert outcome.output == {"passages": [{"text": "about refunds", "source": "a.md"}], "k": 3}
    assert outcome.fallback_reason == "search failed (search_unavailable: no network)"
    assert outcome.for_model().startswith("[answered by docs: search failed")


async def test_other_errors_do_not_fall_back() -> None:
    outcome = await search.with_fallback(docs).run({"query": "bad"})

    assert not outcome.ok and outcome.error is not None
    assert outcome.error.type == "invalid_arguments" and outcome.answered_by is None


async def test_builtin_web_search_falls_back_to_retrieval_by_config(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state")
    assert BuiltinTools(settings).get("web_search").fallback is not None
    off = load_settings(state_dir=tmp_path / "state", tools={"fallbacks": {}})
    assert BuiltinTools(off).get("web_search").fallback is None
