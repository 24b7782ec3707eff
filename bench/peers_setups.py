"""The peers benchmark's setups: one task (an agent, the ``add`` tool, two model calls) in
each framework, each opened against a backend URL and returning its final text.

Every setup is an async context manager yielding ``one(a, b, marker) -> str``. The peers
are written the way each framework's own docs write a tool-calling agent: no tuning, no
framework feature turned off except the Agents SDK's tracing (it exports to OpenAI's
servers; there is no network here). The LangGraph setups use langchain-openai's
``ChatOpenAI``, the client tierflow uses for OpenAI-compatible backends, with the same
``max_retries=0``. Peer libraries are imported inside their setup: they come from the
``peers`` extra, never from tierflow's runtime dependencies.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from tierflow.bench.peers_backend import question, tool_result

One = Callable[[int, int, str], Awaitable[str]]
MODEL = "scripted-model"
KEY = "not-needed"
SYSTEM = "You add numbers with the add tool."

SETUPS: dict[str, str] = {
    "openai": "bare openai client loop (AsyncOpenAI)",
    "langgraph": "LangGraph StateGraph + ChatOpenAI, no checkpointer",
    "langgraph-sqlite": 'LangGraph + AsyncSqliteSaver (file), durability="sync"',
    "agents-sdk": "OpenAI Agents SDK (Runner.run, chat-completions model, tracing off)",
    "pydantic-ai": "PydanticAI (Agent.run, OpenAI chat model)",
    "tierflow": "tierflow Runner, defaults (SQLite checkpointer, guardrails, tracing)",
    "tierflow-stateless": 'tierflow Runner(checkpointer="none"), guardrails and tracing on',
    # Not a goal of its own: shows what the input stage's injection classifier (MiniLM,
    # on by default) costs a run; every other guardrail and tracing stay on.
    "tierflow-no-classifier": "tierflow defaults but [guardrails] classifier = false",
}


class Unavailable(Exception):
    """A setup this installation cannot run (its message says why)."""


def _tool_spec() -> Any:
    return {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }


@contextlib.asynccontextmanager
async def _openai(url: str) -> AsyncIterator[One]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0)

    async def one(a: int, b: int, marker: str) -> str:
        messages: list[Any] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question(a, b, marker)},
        ]
        while True:
            reply = await client.chat.completions.create(
                model=MODEL, messages=messages, tools=[_tool_spec()]
            )
            message = reply.choices[0].message
            if not message.tool_calls:
                return message.content or ""
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                args = json.loads(call.function.arguments)  # type: ignore[union-attr]
                content = tool_result(int(args["a"]), int(args["b"]))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})

    try:
        yield one
    finally:
        await client.close()


def _langgraph_builder(url: str) -> Any:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition
    from pydantic import SecretStr

    @tool
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return tool_result(a, b)

    model = ChatOpenAI(model=MODEL, base_url=url, api_key=SecretStr(KEY), max_retries=0)
    bound = model.bind_tools([add])

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([add]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder


def _lg_input(a: int, b: int, marker: str) -> dict[str, Any]:
    return {"messages": [("system", SYSTEM), ("user", question(a, b, marker))]}


@contextlib.asynccontextmanager
async def _langgraph(url: str) -> AsyncIterator[One]:
    graph = _langgraph_builder(url).compile()

    async def one(a: int, b: int, marker: str) -> str:
        out = await graph.ainvoke(_lg_input(a, b, marker))
        return str(out["messages"][-1].content)

    yield one


@contextlib.asynccontextmanager
async def _langgraph_sqlite(url: str, work: Path) -> AsyncIterator[One]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(work / "langgraph.sqlite")) as saver:
        graph = _langgraph_builder(url).compile(checkpointer=saver)

        async def one(a: int, b: int, marker: str) -> str:
            config = {"configurable": {"thread_id": marker}}
            out = await graph.ainvoke(_lg_input(a, b, marker), config, durability="sync")
            return str(out["messages"][-1].content)

        yield one


def _agents_sdk_module() -> Any:
    """The OpenAI Agents SDK's import name is ``agents``, also the name of this repo's
    ``agents/`` folder: run from a source checkout (``python -m``, pytest), the folder
    would shadow the SDK, so checkouts are left off ``sys.path`` for this one import."""
    import importlib
    import sys

    saved = sys.path[:]
    sys.path[:] = [p for p in saved if not (Path(p or ".") / "tierflow" / "__init__.py").exists()]
    try:
        module = importlib.import_module("agents")
    finally:
        sys.path[:] = saved
    if not hasattr(module, "function_tool"):
        raise ImportError(f"'agents' is {module.__file__}, not the OpenAI Agents SDK")
    return module


@contextlib.asynccontextmanager
async def _agents_sdk(url: str) -> AsyncIterator[One]:
    from openai import AsyncOpenAI

    sdk = _agents_sdk_module()
    Agent, Runner, function_tool = sdk.Agent, sdk.Runner, sdk.function_tool
    sdk.set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0)

    @function_tool  # type: ignore[untyped-decorator]  # (the SDK is imported by name)
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return tool_result(a, b)

    model = sdk.OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
    agent = Agent(name="adder", instructions=SYSTEM, tools=[add], model=model)

    async def one(a: int, b: int, marker: str) -> str:
        result = await Runner.run(agent, question(a, b, marker))
        return str(result.final_output)

    try:
        yield one
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def _pydantic_ai(url: str) -> AsyncIterator[One]:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=url, api_key=KEY))
    agent = Agent(model, instructions=SYSTEM)

    @agent.tool_plain
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return tool_result(a, b)

    async def one(a: int, b: int, marker: str) -> str:
        result = await agent.run(question(a, b, marker))
        return str(result.output)

    yield one


def _tierflow_config(url: str, work: Path, classifier: bool) -> Path:
    """Settings as shipped, with one tier on the scripted server (native tool calls)."""
    path = work / "tierflow.toml"
    path.write_text(
        f'state_dir = "{work / "state"}"\n'
        + ("" if classifier else "[guardrails]\nclassifier = false\n")
        + f'[tiers.t]\nbackends = ["vllm:{MODEL}"]\n'
        f'[backends.vllm]\nbase_url = "{url}"\ntool_calling = "native"\n'
    )
    return path


@contextlib.asynccontextmanager
async def _tierflow(
    url: str, work: Path, stateless: bool = False, classifier: bool = True
) -> AsyncIterator[One]:
    from tierflow import Agent, Runner, load_settings, tool

    @tool
    def add(a: int, b: int) -> str:
        """Add two integers.

        Args:
            a: The first integer.
            b: The second integer.
        """
        return tool_result(a, b)

    agent = Agent(name="adder", tier="t", tools=[add], instructions=SYSTEM)
    settings = load_settings(_tierflow_config(url, work, classifier))
    # Stateless: no checkpointer, so no thread to name (each run is one-shot).
    runner = Runner(settings, checkpointer="none") if stateless else Runner(settings)

    async def one(a: int, b: int, marker: str) -> str:
        thread_id = None if stateless else marker
        record = await runner.ask(question(a, b, marker), agent=agent, thread_id=thread_id)
        if record.status != "completed":
            raise RuntimeError(f"tierflow run {marker} ended {record.status}")
        return record.answer or ""

    async with runner:
        yield one


@contextlib.asynccontextmanager
async def open_setup(name: str, url: str) -> AsyncIterator[One]:
    """Open setup ``name`` against ``url``; raises :class:`Unavailable` if it cannot run."""
    with tempfile.TemporaryDirectory(prefix=f"peers-{name}-") as tmp:
        work = Path(tmp)
        opened: contextlib.AbstractAsyncContextManager[One]
        if name == "openai":
            opened = _openai(url)
        elif name == "langgraph":
            opened = _langgraph(url)
        elif name == "langgraph-sqlite":
            opened = _langgraph_sqlite(url, work)
        elif name == "agents-sdk":
            opened = _agents_sdk(url)
        elif name == "pydantic-ai":
            opened = _pydantic_ai(url)
        elif name == "tierflow-no-classifier":
            opened = _tierflow(url, work, classifier=False)
        elif name in ("tierflow", "tierflow-stateless"):
            opened = _tierflow(url, work, stateless=name == "tierflow-stateless")
        else:
            raise ValueError(f"unknown setup {name!r}")
        async with opened as one:
            yield one
