"""The planner and supervisor shapes, the escape hatch, and token streaming."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from tierflow import (
    Agent,
    BuildContext,
    Route,
    Runner,
    TierflowSettings,
    add_agent,
    planner_graph,
    supervisor_graph,
    tool,
)
from tierflow.state import GraphState
from tierflow.testing import ScriptedChatModel, scripted_tier

DONE: list[str] = []


@tool
def do(task: str) -> str:
    """Carry out a task.

    Args:
        task: What to do.
    """
    DONE.append(task)
    return f"did {task}"


def _call(task: str) -> dict[str, Any]:
    from langchain_core.messages import AIMessage

    return AIMessage(
        content="",
        tool_calls=[{"name": "do", "args": {"task": task}, "id": "x", "type": "tool_call"}],
    )  # type: ignore[return-value]


async def test_planner_executes_each_step_then_answers(settings: TierflowSettings) -> None:
    DONE.clear()
    planner = ScriptedChatModel().enqueue({"steps": ["find the data", "sum it"]})
    executor = ScriptedChatModel().enqueue(
        _call("find"), "found it", _call("sum"), "summed", "The total is forty-two."
    )
    agent = Agent(name="executor", tier="reasoning", tools=[do], instructions="Work.")

    def factory(ctx: BuildContext) -> StateGraph[GraphState]:
        return planner_graph(ctx.tiers, planner_tier="router", executor=agent)

    runner = Runner(
        settings,
        tiers={
            "router": scripted_tier("router", planner),
            "reasoning": scripted_tier("r", executor),
        },
        graphs={"plan": factory},
    )
    events: list[dict[str, Any]] = []
    record = await runner.ask("What is the total?", graph="plan", on_event=events.append)
    assert DONE == ["find", "sum"]
    assert record.answer == "The total is forty-two."
    assert [s.node for s in record.steps] == ["planner", *["executor"] * 5]
    assert next(e for e in events if e["node"] == "planner" and e["event"] == "node_finished")[
        "plan"
    ] == ["find the data", "sum it"]
    step_prompts = [
        str(c.messages[-1].content) for c in executor.calls if c.messages[-1].type == "human"
    ]
    assert step_prompts == [
        "Step 1 of 2: find the data",
        "Step 2 of 2: sum it",
        "All steps are done. Now answer the original request in full.",
    ]


async def test_supervisor_delegates_until_finish(settings: TierflowSettings) -> None:
    supervisor = ScriptedChatModel().enqueue(
        {"next": "researcher"}, {"next": "writer"}, {"next": "FINISH"}
    )
    workers = {
        "researcher": Route(
            description="finds facts",
            agent=Agent(name="researcher", tier="reasoning", instructions="Find."),
        ),
        "writer": Route(
            description="writes the answer",
            agent=Agent(name="writer", tier="reasoning", instructions="Write."),
        ),
    }
    # no digits: a tool-less agent's numbers would be ungrounded (one repair turn each)
    team = ScriptedChatModel().enqueue(
        "fact: water boils at a hundred degrees", "Water boils at a hundred degrees."
    )

    def factory(ctx: BuildContext) -> StateGraph[GraphState]:
        return supervisor_graph(ctx.tiers, supervisor_tier="router", workers=workers)

    runner = Runner(
        settings,
        tiers={
            "router": scripted_tier("router", supervisor),
            "reasoning": scripted_tier("r", team),
        },
        graphs={"team": factory},
    )
    record = await runner.ask("When does water boil?", graph="team")
    assert record.answer == "Water boils at a hundred degrees."
    assert [s.node for s in record.steps] == [
        "supervisor",
        "researcher",
        "supervisor",
        "writer",
        "supervisor",
    ]
    enum = supervisor.calls[0].kwargs["response_format"]["json_schema"]["schema"]["properties"][
        "next"
    ]
    assert enum["enum"] == ["researcher", "writer", "FINISH"]


async def test_escape_hatch_any_langgraph_node(settings: TierflowSettings) -> None:
    def factory(ctx: BuildContext) -> StateGraph[GraphState]:
        graph: StateGraph[GraphState] = StateGraph(GraphState)
        graph.add_node("mark_sensitive", lambda state: {"sensitive": True})
        agent = Agent(name="clerk", tier="reasoning", instructions="Help.")
        graph.add_edge(START, "mark_sensitive")
        graph.add_edge("mark_sensitive", add_agent(graph, agent, ctx.tiers, then=END))
        return graph

    from tierflow.models.tiers import Tier
    from tierflow.testing import ScriptedBackend

    hosted = ScriptedChatModel(default="hosted")
    local = ScriptedChatModel(default="local")
    reasoning = Tier(
        name="reasoning",
        backends=[ScriptedBackend(hosted, id="openai:gpt-4o", local=False), ScriptedBackend(local)],
    )
    runner = Runner(settings, tiers={"reasoning": reasoning}, graphs={"custom": factory})
    record = await runner.ask("my IBAN is ...", graph="custom")
    assert record.answer == "local" and hosted.calls == []


async def test_token_events_stream(settings: TierflowSettings) -> None:
    model = ScriptedChatModel(default="streamed answer")
    runner = Runner(settings, tiers={"reasoning": scripted_tier("reasoning", model)})
    events: list[dict[str, Any]] = []
    record = await runner.ask("hi", graph="direct", on_event=events.append, stream_tokens=True)
    tokens = [e for e in events if e["event"] == "token"]
    assert tokens and "".join(str(t["text"]) for t in tokens) == record.answer
    assert {t["node"] for t in tokens} == {"generalist"}
