"""Orchestration overhead: the same graph in raw LangGraph and in tierflow.

Graph: a router picks a route (structured JSON), a specialist asks for one tool call,
the tool runs, the specialist answers. Models are scripted and answer instantly, both
sides checkpoint to SQLite with the same settings, so the difference is what tierflow
adds: tier chains, attempt records, run records, residency checks, events.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool as lc_tool
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from tierflow import Agent, BuildContext, Route, Runner, load_settings, router_graph, tool
from tierflow.testing import ScriptedChatModel, scripted_tier

WARMUP = 20
RUNS = 200


def _tool_call() -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[
            {"name": "lookup", "args": {"key": "k"}, "id": "abcdefghi", "type": "tool_call"}
        ],
    )


class _Turns(ScriptedChatModel):
    """Scripted specialist: a tool call, then (after the tool result) an answer."""

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self.enqueue("done" if isinstance(messages[-1], ToolMessage) else _tool_call())
        return super()._generate(messages, stop, run_manager, **kw)


async def _raw(db: Path, go: asyncio.Queue[int], done: asyncio.Queue[float]) -> None:
    router_model = ScriptedChatModel(default='{"route": "lookup"}')
    specialist = _Turns()

    @lc_tool
    def lookup(key: str) -> str:
        """Look up a key."""
        return f"value of {key}"

    class State(MessagesState):
        route: str

    async def router(state: State) -> dict[str, Any]:
        reply = await router_model.ainvoke([SystemMessage("route"), state["messages"][-1]])
        return {"route": json.loads(str(reply.content))["route"]}

    async def agent(state: State) -> dict[str, Any]:
        reply = await specialist.ainvoke([SystemMessage("use tools"), *state["messages"]])
        return {"messages": [reply]}

    graph = StateGraph(State)
    graph.add_node("router", router)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([lookup]))
    graph.add_edge(START, "router")
    graph.add_conditional_edges("router", lambda s: s["route"], {"lookup": "agent"})
    graph.add_conditional_edges(
        "agent", lambda s: "tools" if s["messages"][-1].tool_calls else END, ["tools", END]
    )
    graph.add_edge("tools", "agent")
    async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
        await saver.setup()
        await saver.conn.execute("PRAGMA synchronous=NORMAL")
        app: Any = graph.compile(checkpointer=saver)
        while (i := await go.get()) >= 0:
            started = time.perf_counter()
            await app.ainvoke(
                {"messages": [HumanMessage("q")]}, {"configurable": {"thread_id": f"r{i}"}}
            )
            await done.put((time.perf_counter() - started) * 1000)


def tierflow_setup() -> tuple[dict[str, Any], dict[str, Any]]:
    """The benchmark graph in tierflow (graphs and tiers for a Runner); shared with
    bench/tracing.py so both measure the same thing."""

    @tool
    def lookup(key: str) -> str:
        """Look up a key.

        Args:
            key: The key.
        """
        return f"value of {key}"

    def factory(ctx: BuildContext) -> Any:
        agent = Agent(name="agent", tier="reasoning", instructions="use tools", tools=[lookup])
        return router_graph(ctx.tiers, {"lookup": Route(description="lookups", agent=agent)})

    tiers = {
        "router": scripted_tier("router", ScriptedChatModel(default='{"route": "lookup"}')),
        "reasoning": scripted_tier("reasoning", _Turns()),
    }
    return {"bench": factory}, tiers


async def _tierflow(state_dir: Path, go: asyncio.Queue[int], done: asyncio.Queue[float]) -> None:
    graphs, tiers = tierflow_setup()
    settings = load_settings(state_dir=state_dir)
    async with Runner(settings, tiers=tiers, graphs=graphs) as runner:
        while (i := await go.get()) >= 0:
            started = time.perf_counter()
            record = await runner.ask("q", graph="bench", thread_id=f"t{i}")
            await done.put((time.perf_counter() - started) * 1000)
            assert record.answer == "done" and record.steps[1].tool_calls[0].ok


async def _alternate(tmp: Path) -> tuple[list[float], list[float]]:
    """Run the two sides in turn, one run each, so load changes hit both alike."""
    queues = [(asyncio.Queue[int](), asyncio.Queue[float]()) for _ in range(2)]
    tasks = [
        asyncio.create_task(_raw(tmp / "raw.sqlite", *queues[0])),
        asyncio.create_task(_tierflow(tmp, *queues[1])),
    ]
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(WARMUP + RUNS):
        for side, (go, done) in enumerate(queues):
            await go.put(i)
            elapsed = await done.get()
            if i >= WARMUP:
                times[side].append(elapsed)
    for go, _ in queues:
        await go.put(-1)
    await asyncio.gather(*tasks)
    return times


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        raw, ours = asyncio.run(_alternate(Path(tmp)))
    raw_p50, ours_p50 = statistics.median(raw), statistics.median(ours)
    nodes = 4  # router, agent, tools, agent
    return {
        "graph": "router -> specialist -> one tool call -> answer (scripted, instant models)",
        "runs": RUNS,
        "raw_langgraph_ms_p50": round(raw_p50, 2),
        "tierflow_ms_p50": round(ours_p50, 2),
        "ratio_p50": round(ours_p50 / raw_p50, 3),
        "raw_langgraph_ms_per_node": round(raw_p50 / nodes, 2),
        "tierflow_ms_per_node": round(ours_p50 / nodes, 2),
        "note": "both sides checkpoint to SQLite (WAL, synchronous=NORMAL); runs alternate",
    }
