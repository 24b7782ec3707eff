"""The specialists' small-model workflows, with scripted models over real HTTP.

The reasoning tier's ``local`` backend points at a ScriptedServer (``backends.local.
base_url``), so it is in constrained tool mode and the agents follow their workflows; a
hosted (``openai:``) backend on the same kind of server keeps the free tool loop. The
real embedded model runs the same workflows in tests/test_embedded.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from tierflow.agents.context import ContextOverflow, estimate_tokens, fit_messages
from tierflow.agents.specialists import column_hint, describe_schema, fenced_block, with_print
from tierflow.models.tiers import Tier
from tierflow.runner import Runner
from tierflow.settings import TierflowSettings, load_settings
from tierflow.testing import ScriptedChatModel, ScriptedServer, scripted_tier
from tierflow.testing.scripted_server import Reply

FRANCE = (
    "SELECT COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.country = 'FR'"
)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(flavor="openai", models=("gpt-4o",)) as srv:
        yield srv


def _local(tmp_path: Path, server: ScriptedServer, **extra: Any) -> TierflowSettings:
    return load_settings(
        False,
        state_dir=tmp_path / "state",
        backends={"local": {"base_url": server.base_url}},
        tiers={"reasoning": {"backends": ["local"]}},
        router={"semantic": False},  # the scripted router tier decides
        **extra,
    )


def _router(route: str) -> Tier:
    return scripted_tier("router", ScriptedChatModel(default=json.dumps({"route": route})))


def _prompts(server: ScriptedServer) -> list[str]:
    return [json.dumps(r.body["messages"], ensure_ascii=False) for r in server.requests]


def _calls(record: Any) -> list[Any]:
    return [c for s in record.steps for c in s.tool_calls]


async def test_analyst_repairs_its_sql_from_the_error_and_answers_from_the_rows(
    tmp_path: Path, server: ScriptedServer
) -> None:
    server.enqueue(
        Reply.text("```sql\nSELECT COUNT(*) FROM order_list WHERE country = 'France'\n```"),
        Reply.text(f"```sql\n{FRANCE}\n```"),
        Reply.text(f"```sql\n{FRANCE.replace('COUNT(*)', 'COUNT(o.id)')}\n```"),  # agrees
    )
    runner = Runner(_local(tmp_path, server), tiers={"router": _router("data")})
    record = await runner.ask("How many orders came from customers in France?")

    assert record.route == "data"
    # schema, the failing statement, its repair, then the independent cross-check
    assert [c.name for c in _calls(record)] == ["sql_schema"] + ["sql_query"] * 3
    assert [c.ok for c in _calls(record)] == [True, False, True, True]
    first, repair, check = _prompts(server)
    assert "order_list" not in check  # written without the first attempt in sight
    assert "'FR'" in first and "REFERENCES customers(id)" in first  # values, foreign keys
    assert "order_list" in repair and "corrected statement" in repair  # and its error
    assert "**79**" in record.answer and FRANCE in record.answer  # rows, and the SQL shown
    assert record.verified and not record.degraded
    assert record.steps[-1].verified is True


async def test_analyst_whose_second_query_disagrees_is_marked_unverified(
    tmp_path: Path, server: ScriptedServer
) -> None:
    spain = FRANCE.replace("'FR'", "'ES'")
    server.enqueue(Reply.text(f"```sql\n{FRANCE}\n```"), Reply.text(f"```sql\n{spain}\n```"))
    runner = Runner(_local(tmp_path, server), tiers={"router": _router("data")})
    record = await runner.ask("How many orders came from customers in Spain?")

    assert "**79**" in record.answer and "(unverified: a second query returned" in record.answer
    assert record.verified is False and not record.degraded


async def test_coder_repairs_code_that_prints_nothing_and_quotes_the_output(
    tmp_path: Path, server: ScriptedServer
) -> None:
    server.enqueue(
        Reply.text("```python\nresult = 2 ** 100\n```"),
        Reply.text("```python\nprint(2 ** 100)\n```"),
        Reply.text("```python\nx = 1\nfor _ in range(100):\n    x *= 2\nprint(x)\n```"),
    )
    runner = Runner(_local(tmp_path, server), tiers={"router": _router("code")})
    record = await runner.ask("Compute 2**100 exactly.")

    # the first try, its repair, then the independent second program (the cross-check)
    assert [c.name for c in _calls(record)] == ["run_python"] * 3
    assert "printed nothing" in _prompts(server)[1]
    assert "print(2 ** 100)" not in _prompts(server)[2]  # it never saw the first program
    assert f"Output: {2**100}" in record.answer
    assert record.verified and not record.degraded


async def test_coder_whose_second_program_disagrees_is_marked_unverified(
    tmp_path: Path, server: ScriptedServer
) -> None:
    server.enqueue(
        Reply.text("```python\nprint(7 * 60 * 60)\n```"),  # runs cleanly, but wrong
        Reply.text("```python\nprint(7 * 24 * 60 * 60)\n```"),
    )
    runner = Runner(_local(tmp_path, server), tiers={"router": _router("code")})
    record = await runner.ask("How many seconds are in a week? Use Python.")

    assert "Output: 25200" in record.answer
    assert "(unverified: a second program printed 604800, not 25200)" in record.answer
    assert record.verified is False and record.steps[-1].verified is False


async def test_coder_that_never_prints_is_degraded_not_a_guess(
    tmp_path: Path, server: ScriptedServer
) -> None:
    server.enqueue(*[Reply.text("```python\nx = 1\n```")] * 3)
    runner = Runner(_local(tmp_path, server), tiers={"router": _router("code")})
    record = await runner.ask("Compute 2**100 exactly.")

    assert len(_calls(record)) == 3  # the first try and two repairs
    assert record.degraded and record.answer.startswith("I could not compute this")


async def test_librarian_may_answer_not_in_the_documents(
    tmp_path: Path, server: ScriptedServer
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "returns.md").write_text("# Returns\n\nYou may return an item within 30 days.\n")
    server.enqueue(Reply.text("pet policy office dogs"), Reply.text('{"sentence": 0}'))
    settings = _local(tmp_path, server, tools={"retrieval": {"docs_dir": docs}})
    record = await Runner(settings, tiers={"router": _router("docs")}).ask(
        "Peut-on amener son chien au bureau ?"
    )

    assert [c.name for c in _calls(record)] == ["retrieve"]
    assert _calls(record)[0].args["query"] == "pet policy office dogs"  # the English query
    assert record.answer == "This is not in the documents."
    assert record.verified and not record.degraded
    # the choice was constrained to the listed sentences (0 = none)
    schema = server.requests[1].body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["sentence"]["enum"] == [0, 1]


async def test_librarian_quotes_the_sentence_with_its_citation(
    tmp_path: Path, server: ScriptedServer
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "returns.md").write_text("# Returns\n\nYou may return an item within 30 days.\n")
    server.enqueue(Reply.text("return window days"), Reply.text('{"sentence": 1}'))
    settings = _local(tmp_path, server, tools={"retrieval": {"docs_dir": docs}})
    record = await Runner(settings, tiers={"router": _router("docs")}).ask(
        "How many days do I have to return an item?"
    )
    assert record.answer == '"You may return an item within 30 days." [returns.md#0]'
    assert record.verified


async def test_a_hosted_tier_keeps_the_free_tool_loop(
    tmp_path: Path, server: ScriptedServer
) -> None:
    server.enqueue(
        Reply.tool_calls([("sql_query", {"query": FRANCE})]),
        Reply.text("79 orders came from customers in France."),
    )
    settings = load_settings(
        False,
        state_dir=tmp_path / "state",
        backends={"openai": {"base_url": server.base_url, "api_key": "sk-test"}},
        tiers={"reasoning": {"backends": ["openai:gpt-4o"]}},
        router={"semantic": False},
    )
    record = await Runner(settings, tiers={"router": _router("data")}).ask(
        "How many orders came from customers in France?"
    )
    first = server.requests[0].body
    assert {t["function"]["name"] for t in first["tools"]} == {"sql_schema", "sql_query"}
    assert "Sample" not in json.dumps(first) and "```sql" not in json.dumps(first)
    assert [c.name for c in _calls(record)] == ["sql_query"]
    assert record.answer == "79 orders came from customers in France."
    assert record.verified and record.steps[-1].verified is True


async def test_a_number_no_tool_returned_gets_one_repair_then_is_marked_unverified(
    tmp_path: Path, server: ScriptedServer
) -> None:
    server.enqueue(
        Reply.tool_calls([("sql_query", {"query": FRANCE})]),
        Reply.text("100 orders came from France."),
        Reply.text("About 100 orders."),  # the repair turn repeats the invented number
    )
    settings = load_settings(
        False,
        state_dir=tmp_path / "state",
        backends={"openai": {"base_url": server.base_url, "api_key": "sk-test"}},
        tiers={"reasoning": {"backends": ["openai:gpt-4o"]}},
        router={"semantic": False},
    )
    record = await Runner(settings, tiers={"router": _router("data")}).ask(
        "How many orders came from customers in France?"
    )
    assert len(server.requests) == 3
    assert "appear in no tool result: 100" in json.dumps(server.requests[2].body)
    assert "(unverified: 100" in record.answer
    assert record.verified is False and record.steps[-1].verified is False


def test_trimming_keeps_the_system_prompt_question_and_latest_tool_result() -> None:
    old = [HumanMessage("old question " * 40), AIMessage("old answer " * 40)]
    call = AIMessage("", tool_calls=[{"name": "t", "args": {}, "id": "abcdefghi"}])
    latest = ToolMessage("result " * 30, tool_call_id="abcdefghi", name="t")
    messages = [SystemMessage("be brief"), *old, HumanMessage("current question"), call, latest]
    budget = estimate_tokens(messages) - 50  # the oldest turn no longer fits

    fitted = fit_messages(messages, budget)

    assert estimate_tokens(fitted) <= budget
    assert fitted[0].content == "be brief" and fitted[-1] is latest and call in fitted
    assert old[0] not in fitted and old[1] in fitted  # oldest first
    fitted = fit_messages(messages, budget - estimate_tokens(old[1:]))
    assert fitted == [messages[0], messages[3], call, latest]
    assert fit_messages(messages, None) == messages
    with pytest.raises(ContextOverflow, match="window"):
        fit_messages(messages, 20)


async def test_a_question_too_long_for_the_window_is_one_clear_error(
    tmp_path: Path, server: ScriptedServer
) -> None:
    settings = load_settings(
        False,
        state_dir=tmp_path / "state",
        backends={"local": {"base_url": server.base_url, "n_ctx": 1024, "max_tokens": 256}},
        tiers={"reasoning": {"backends": ["local"]}},
        router={"semantic": False},
    )
    record = await Runner(settings, tiers={"router": _router("code")}).ask(
        "Compute this sum: " + " + ".join(str(n) for n in range(600))
    )
    assert record.degraded and "window" in record.answer
    assert server.requests == []  # never sent: no 400 from the server


def test_workflow_helpers() -> None:
    assert fenced_block("Here:\n```sql\nSELECT 1\n```\nDone", ("sql",)) == "SELECT 1"
    assert fenced_block("SELECT 2", ("sql",)) == "SELECT 2"
    assert with_print("x = 3\nx * 2") == "x = 3\nprint(x * 2)"
    assert with_print("print(1)\n2") == "print(1)\n2"
    countries = ["FR", "DE", "ES", "IT"]
    schema = {
        "tables": [
            {
                "name": "customers",
                "columns": [{"name": "country", "type": "TEXT", "samples": countries}],
            },
            {
                "name": "orders",
                "columns": [
                    {"name": "customer_id", "type": "INTEGER"},
                    {"name": "day", "type": "DATE", "samples": ["2025-01-02"]},
                ],
                "foreign_keys": ["customer_id -> customers.id"],
            },
        ]
    }
    assert describe_schema(schema) == (
        "CREATE TABLE customers (\n  country TEXT -- values: 'FR', 'DE', 'ES', 'IT'\n);\n"
        "CREATE TABLE orders (\n  customer_id INTEGER REFERENCES customers(id),\n"
        "  day DATE -- e.g. '2025-01-02'\n);"
    )
    assert "country is a column of customers" in column_hint("no such column: country", schema)
