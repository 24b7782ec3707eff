"""The run's own stages, inside the graph: the input guardrails before the first node and
the output guardrails before the end, and :func:`compile_graph`, which wires them in.

The compiled graph is the product: whoever invokes it (the ``Runner``, ``tierflow serve``
or plain LangGraph ``ainvoke``) gets the same guardrails, budget and residency. The stages
also start a run's bookkeeping (where its messages start, its id and clock, fresh lists of
steps and verdicts), so the final state holds everything a run record needs.

``compile_graph`` rewires a factory's ``StateGraph`` before compiling it: edges out of
``START`` leave from ``run_input`` instead, and edges into ``END`` go to ``run_output``.
A node that ends the graph by returning ``Command(goto=END)`` bypasses the output stage,
so tierflow's own nodes never do.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Hashable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph._branch import BranchSpec
from langgraph.types import Overwrite, Send

from tierflow.agents.node import emit
from tierflow.agents.policy import POLICY_KEY, RunPolicy, current_ticket, run_guards
from tierflow.guardrails.base import Action
from tierflow.guardrails.runtime import answer_after, retrieved_passages, verdict_records
from tierflow.state import GraphState, question_index, run_messages

RUN_INPUT = "run_input"
RUN_OUTPUT = "run_output"


def input_node(graph_name: str) -> Any:
    async def run_input(state: GraphState) -> dict[str, Any]:
        """Start a run: its bookkeeping, then the graph's input guardrails on the question.

        A block removes the question from the thread (it never enters the conversation)
        and ends the run before any model call or tool."""
        messages = list(state.get("messages") or [])
        at = question_index(messages)
        ticket = current_ticket()
        update: dict[str, Any] = {
            "graph": graph_name,
            "route": None,
            "blocked": None,
            "run_start": max(at, 0),
            "run_id": ticket.run_id if ticket else uuid.uuid4().hex,
            "run_started_at": ticket.started_at if ticket else time.time(),
            "steps": Overwrite([]),
            "budget_used": Overwrite({}),
        }
        if at < 0:
            return {**update, "guardrails": Overwrite([])}
        question = messages[at]
        guards = run_guards({**state, **update})
        text = str(question.content)
        if not guards.applies("input"):
            return {**update, "guardrails": Overwrite([])}
        result = await guards.check("input", text)
        update["guardrails"] = Overwrite(verdict_records(result))
        if result.action is Action.BLOCK:
            emit("blocked", stage="input", reason=result.reason)
            assert question.id is not None
            return {**update, "messages": [RemoveMessage(id=question.id)], "blocked": result.reason}
        if result.text != text:
            update["messages"] = [HumanMessage(result.text, id=question.id, name=question.name)]
        return {**update, **guards.state_update()}

    return run_input


async def run_output(state: GraphState) -> dict[str, Any]:
    """The graph's output guardrails on the run's answer; a change replaces it in the
    thread (same message id), so the next turn's history holds what the user read."""
    messages = run_messages(state)
    last = messages[-1] if messages else None
    if not isinstance(last, AIMessage) or last.tool_calls or not last.content:
        return {}
    guards = run_guards(state)
    if not guards.applies("output"):
        return {}
    text = str(last.content)
    result = await guards.check("output", text, passages=retrieved_passages(messages[1:]))
    update: dict[str, Any] = {"guardrails": verdict_records(result), **guards.state_update()}
    answer = answer_after(result, text)
    if answer != text:
        update["messages"] = [
            AIMessage(
                content=answer,
                id=last.id,
                name=last.name,
                response_metadata=last.response_metadata,
                usage_metadata=last.usage_metadata,
            )
        ]
    return update


def _remap_end(value: Any) -> Any:
    if value == END:
        return RUN_OUTPUT
    if isinstance(value, Send) and value.node == END:
        return Send(RUN_OUTPUT, value.arg)
    if isinstance(value, list | tuple):
        return [_remap_end(v) for v in value]
    return value


def _branch(spec: BranchSpec, ends: dict[Hashable, str] | None, path: Runnable[Any, Any]) -> Any:
    return spec._replace(path=path, ends=ends)


def with_run_stages(builder: StateGraph[Any], name: str = "graph") -> StateGraph[Any]:
    """Wire the run stages into ``builder`` (in place) and return it.

    ``START -> x`` becomes ``START -> run_input -> x`` (``run_input -> END`` when the input
    stage blocks), and every way into ``END`` (edges, branch maps, branch paths returning
    ``END``) goes through ``run_output`` first.
    """
    for stage in (RUN_INPUT, RUN_OUTPUT):
        if stage in builder.nodes:
            raise ValueError(f"node name {stage!r} is reserved for tierflow's run stages")
    # 1. every way into END goes to run_output
    builder.edges = {(a, RUN_OUTPUT if b == END else b) for a, b in builder.edges}
    builder.waiting_edges = {
        (starts, RUN_OUTPUT if end == END else end) for starts, end in builder.waiting_edges
    }
    for branches in list(builder.branches.values()):
        for key, spec in list(branches.items()):
            if spec.ends is not None:
                ends = {k: (RUN_OUTPUT if v == END else v) for k, v in spec.ends.items()}
                branches[key] = _branch(spec, ends, spec.path)
            else:
                branches[key] = _branch(spec, None, spec.path | RunnableLambda(_remap_end))
    # 2. START leads to run_input; what START led to now follows it, unless it blocked
    starts = sorted(b for a, b in builder.edges if a == START)
    builder.edges = {(a, b) for a, b in builder.edges if a != START}
    start_branches = builder.branches.pop(START, {})
    builder.add_node(RUN_INPUT, input_node(name))
    builder.add_node(RUN_OUTPUT, run_output)
    builder.add_edge(START, RUN_INPUT)
    builder.add_edge(RUN_OUTPUT, END)

    def gate(state: Any) -> Sequence[str] | str:
        return END if state.get("blocked") else starts

    builder.add_conditional_edges(RUN_INPUT, gate, [*starts, END])
    for key, spec in start_branches.items():
        branch_ends = None if spec.ends is None else {**spec.ends, END: END}
        builder.branches[RUN_INPUT][f"start_{key}"] = _branch(
            spec, branch_ends, _unless_blocked_path(spec.path)
        )
    return builder


def _unless_blocked_path(path: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """``path``, or ``END`` when the input stage blocked the run."""

    def run(state: Any, config: RunnableConfig) -> Any:
        return END if state.get("blocked") else path.invoke(state, config)

    async def arun(state: Any, config: RunnableConfig) -> Any:
        return END if state.get("blocked") else await path.ainvoke(state, config)

    return RunnableLambda(run, afunc=arun)


def compile_graph(
    builder: StateGraph[Any],
    policy: RunPolicy,
    *,
    name: str = "graph",
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> Any:
    """Compile ``builder`` with the run stages and bind ``policy`` to it, so any caller
    of the compiled graph gets the same guardrails and budget."""
    app = with_run_stages(builder, name).compile(checkpointer=checkpointer, name=name)
    return app.with_config({"configurable": {POLICY_KEY: policy}})


__all__ = [
    "RUN_INPUT",
    "RUN_OUTPUT",
    "compile_graph",
    "input_node",
    "run_output",
    "with_run_stages",
]
