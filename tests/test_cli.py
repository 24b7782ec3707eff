"""CLI contracts: exit codes and one-line errors for bad input, and `ask --json` against
backends served by the scripted server (no model load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langgraph.graph import START, StateGraph
from typer.testing import CliRunner

from tierflow import Agent, BuildContext, add_agent, register_graph, tool
from tierflow.cli import app
from tierflow.state import GraphState
from tierflow.testing import Fault, Reply, ScriptedServer

runner = CliRunner()


def _one_line_error(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("error: ")
    return str(lines[0])


@pytest.mark.parametrize(
    ("args", "config", "code", "message"),
    [
        (["ask", ""], None, 2, "the question is empty"),
        (["ask", "--graph", "nope", "hi"], None, 2, "unknown graph 'nope'"),
        (["ask", "hi"], "[tiers.reasoning\n", 2, "invalid TOML"),
        (
            ["ask", "hi"],
            '[tiers.reasoning]\nbackends = ["gemini:pro"]\n',
            2,
            "tiers.reasoning.backends: unknown backend kind 'gemini'",
        ),
        (["doctor"], "[backends.openai]\ntimeout = 3\n", 2, "backends.openai.timeout: unknown key"),
        (["ask", "--config", "missing.toml", "hi"], None, 2, "config file not found"),
    ],
)
def test_bad_input_gets_one_line_and_an_exit_code(
    tmp_path: Path, args: list[str], config: str | None, code: int, message: str
) -> None:
    if config is not None:
        (tmp_path / "tierflow.toml").write_text(config)
    result = runner.invoke(app, args)
    assert result.exit_code == code
    assert message in _one_line_error(result)
    assert result.stdout == ""


def test_usage_error_exits_2() -> None:
    result = runner.invoke(app, ["ask"])
    assert result.exit_code == 2
    assert "missing QUESTION" in _one_line_error(result)
    assert runner.invoke(app, ["ask", "--no-such-flag", "hi"]).exit_code == 2


def _config(tmp_path: Path, url: str) -> None:
    (tmp_path / "tierflow.toml").write_text(
        '[tiers.router]\nbackends = ["vllm:router-model"]\n'
        '[tiers.reasoning]\nbackends = ["mistral:mistral-large-latest", "vllm:big-model"]\n'
        f'[backends.vllm]\nbase_url = "{url}"\n'
        # native: the specialists keep the free tool loop (constrained would run their
        # small-model workflows, tests/test_workflows.py)
        'tool_calling = "native"\n'
        "[router]\nsemantic = false\n"  # exercise the router tier's model
    )


def test_ask_json_contract_against_scripted_backends(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        _config(tmp_path, srv.base_url)
        srv.enqueue(
            Reply.json({"route": "data"}),
            Reply.text("forty-two", input_tokens=30, output_tokens=4),
        )
        result = runner.invoke(app, ["ask", "--json", "--thread", "th", "What is six times seven?"])
        assert result.exit_code == 0, result.stderr
        record = json.loads(result.stdout)
        assert (
            record["answer"] == "forty-two"
            and record["route"] == "data"
            and record["thread_id"] == "th"
        )
        assert record["degraded"] is False
        # every verdict of the default stages is in the record; none fired on this question
        assert {g["stage"] for g in record["guardrails"]} == {"input", "output"}
        assert {g["action"] for g in record["guardrails"]} == {"allow"}
        router, analyst = record["steps"]
        assert (router["backend"], router["model"]) == ("vllm:router-model", "router-model")
        assert analyst["node"] == "analyst" and analyst["backend"] == "vllm:big-model"
        assert analyst["fallback_from"] == "mistral:mistral-large-latest"
        assert analyst["fallback_reason"] == (
            "mistral:mistral-large-latest: no API key (set MISTRAL_API_KEY)"
        )
        assert record["usage"]["output_tokens"] >= 1
        assert [r.body["model"] for r in srv.requests] == ["router-model", "big-model"]


def test_ask_human_output_names_the_cue_words_router_without_a_model(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        _config(tmp_path, srv.base_url)
        srv.enqueue(Reply.text("forty-two"))  # the analyst only: cue words route
        result = runner.invoke(app, ["ask", "How many orders are there?"])
        assert result.exit_code == 0, result.stderr
        assert "router · tier router · keywords\n" in result.stdout
        assert "(None)" not in result.stdout
        assert [r.body["model"] for r in srv.requests] == ["big-model"]


def test_ask_exits_1_with_the_record_when_no_backend_can_answer(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        _config(tmp_path, srv.base_url)
        srv.enqueue(
            Reply.json({"route": "web"}), Fault.status(500, body={"error": {"message": "x"}})
        )
        result = runner.invoke(app, ["ask", "--json", "hi"])
        assert result.exit_code == 1
        assert json.loads(result.stdout)["degraded"] is True
        assert "tier 'reasoning' had no working backend" in _one_line_error(result)


def test_doctor_table_and_json(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        _config(tmp_path, srv.base_url)
        result = runner.invoke(app, ["doctor", "--json"])
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        states = {b["backend"]: b["state"] for b in report["backends"]}
        assert states == {
            "vllm:router-model": "reachable",
            "vllm:big-model": "reachable",
            "mistral:mistral-large-latest": "unavailable",
        }
        table = runner.invoke(app, ["doctor"])
        assert table.exit_code == 0 and "unavailable" in table.stdout


@tool(requires_approval=True)
def cancel_order(order_id: str) -> str:
    """Cancel an order (a human must approve).

    Args:
        order_id: The order to cancel.
    """
    return f"order {order_id} cancelled"


def _approval_graph(ctx: BuildContext) -> StateGraph[GraphState]:
    agent = Agent(name="clerk", tier="reasoning", tools=[cancel_order], instructions="Help.")
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
    return graph


def test_approve_and_reject_from_the_cli(tmp_path: Path) -> None:
    register_graph("clerk-test", _approval_graph)
    with ScriptedServer() as srv:
        (tmp_path / "tierflow.toml").write_text(
            '[tiers.reasoning]\nbackends = ["vllm:m"]\n'
            f'[backends.vllm]\nbase_url = "{srv.base_url}"\n'
        )
        call = {"tool_calls": [{"name": "cancel_order", "arguments": {"order_id": "A7"}}]}
        srv.enqueue(Reply.json(call), Reply.json({"answer": "Order A7 is cancelled."}))
        paused = runner.invoke(app, ["ask", "--graph", "clerk-test", "-t", "c1", "cancel A7"])
        assert paused.exit_code == 0, paused.stderr
        assert "needs approval: cancel_order(order_id='A7')" in paused.stdout
        assert "tierflow ask --thread c1 --approve" in paused.stdout
        # constrained decoding over the agent's tools reached the (vLLM-shaped) server
        schema = srv.requests[0].body["response_format"]["json_schema"]["schema"]
        assert schema["anyOf"][0]["properties"]["tool_calls"]["items"]["anyOf"][0]["properties"][
            "name"
        ]["enum"] == ["cancel_order"]

        done = runner.invoke(app, ["ask", "--json", "-t", "c1", "--approve"])
        assert done.exit_code == 0, done.stderr
        record = json.loads(done.stdout)
        assert record["status"] == "completed" and record["answer"] == "Order A7 is cancelled."
        assert record["steps"][0]["tool_calls"][0]["ok"] is True
        assert "order A7 cancelled" in str(srv.requests[1].body["messages"])

        srv.enqueue(Reply.json(call), Reply.json({"answer": "Nothing was cancelled."}))
        runner.invoke(app, ["ask", "--graph", "clerk-test", "-t", "c2", "cancel A7"])
        rejected = runner.invoke(app, ["ask", "--json", "-t", "c2", "--reject"])
        assert json.loads(rejected.stdout)["steps"][0]["tool_calls"][0]["error"].startswith(
            "rejected:"
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "-t", "x", "--approve", "--reject"], "choose one of --approve and --reject"),
        (["ask", "--approve"], "--approve and --reject need --thread ID"),
        (["ask", "-t", "x", "--approve", "why"], "--approve and --reject take no QUESTION"),
        (["ask", "-t", "nothing-here", "--approve"], "no conversation with thread id"),
        (["tool", "no_such_tool"], "unknown tool 'no_such_tool'"),
        (["tool", "sql_query", "--args", "{oops"], "--args is not valid JSON"),
        (["tool", "sql_query", "--args", "[1]"], "--args must be a JSON object"),
    ],
)
def test_more_bad_input(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in _one_line_error(result)
