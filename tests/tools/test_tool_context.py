"""A tool may declare a ToolContext parameter: the model never sees or sets it, and the
agent's tools node fills it from the run (thread id, deps, sensitive flag)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph

from tierflow.agents import Agent, add_agent
from tierflow.models.tiers import TierSet
from tierflow.state import GraphState
from tierflow.testing import ScriptedChatModel, scripted_tier
from tierflow.tools import ToolContext, tool

SEEN: list[ToolContext] = []


@tool
async def my_orders(limit: int, run: ToolContext) -> str:
    """The current user's latest orders.

    Args:
        limit: How many orders.
    """
    SEEN.append(run)
    orders = run.deps["orders"] if run.deps else []
    return ", ".join(orders[:limit]) or "none"


@tool
def whoami(ctx: ToolContext | None = None) -> str:
    """Which thread is asking."""
    return f"thread {ctx.thread_id if ctx else '?'}"


def test_the_context_parameter_is_not_in_the_schema_the_model_sees() -> None:
    assert my_orders.context_param == "run"
    assert my_orders.parameters["properties"].keys() == {"limit"}
    assert my_orders.parameters["required"] == ["limit"]
    assert "run" not in my_orders.args_model.model_fields
    assert whoami.context_param == "ctx"  # any name, optional too
    assert whoami.parameters["properties"] == {}
    function = my_orders.spec()["function"]
    assert "run" not in str(function["parameters"])


async def test_without_a_context_the_tool_gets_an_empty_one_and_the_model_cannot_set_it() -> None:
    SEEN.clear()
    outcome = await my_orders.run({"limit": 1, "run": {"thread_id": "forged", "deps": "x"}})
    assert (outcome.ok, outcome.output) == (True, "none")
    [received] = SEEN
    assert received == ToolContext()  # the model's "run" argument was dropped, not passed
    assert (await whoami.run({})).output == "thread None"


async def test_a_compiled_graph_passes_thread_id_deps_and_sensitive_to_the_tool() -> None:
    SEEN.clear()
    model = ScriptedChatModel().enqueue(
        AIMessage(
            content="",
            tool_calls=[{"name": "my_orders", "args": {"limit": 2}, "id": "call_1"}],
        ),
        "You ordered a lamp and a desk.",
    )
    agent = Agent(name="clerk", instructions="Use tools.", tier="t", tools=[my_orders])
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_edge(START, add_agent(graph, agent, TierSet({"t": scripted_tier("t", model)})))
    app = graph.compile(checkpointer=InMemorySaver())
    deps = {"orders": ["lamp", "desk", "chair"]}
    config: Any = {"configurable": {"thread_id": "t1", "deps": deps}}

    out = await app.ainvoke(
        {"messages": [HumanMessage("What did I order?")], "sensitive": True}, config
    )

    [context] = SEEN
    assert (context.thread_id, context.deps, context.sensitive) == ("t1", deps, True)
    assert context.settings is None  # nobody put settings in the config
    result = next(m for m in out["messages"] if m.type == "tool")
    assert result.content == "lamp, desk"
    assert out["messages"][-1].content == "You ordered a lamp and a desk."


async def test_the_runner_passes_its_deps_and_settings(tmp_path: Any) -> None:
    from tierflow import Runner
    from tierflow.settings import load_settings

    SEEN.clear()
    model = ScriptedChatModel().enqueue(
        AIMessage(content="", tool_calls=[{"name": "my_orders", "args": {"limit": 1}, "id": "c"}]),
        "a lamp",
    )
    settings = load_settings(state_dir=tmp_path)
    runner = Runner(
        settings, tiers={"t": scripted_tier("t", model)}, deps={"orders": ["lamp", "desk"]}
    )
    agent = Agent(name="clerk", instructions="Use tools.", tier="t", tools=[my_orders])

    record = await runner.ask("What did I order?", agent=agent, thread_id="r1")

    [context] = SEEN
    assert (context.thread_id, context.deps, context.settings) == (
        "r1",
        {"orders": ["lamp", "desk"]},
        settings,
    )
    assert record.steps[0].tool_calls[0].ok is True
