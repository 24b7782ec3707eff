"""Running an :class:`Agent` inside a LangGraph graph.

An agent is two nodes: ``<name>`` (one model turn on the agent's tier) and, if it has
tools, ``<name>_tools`` (runs the requested calls in parallel). They loop until the
model answers or ``max_tool_rounds`` is spent. Because each round is its own graph step,
the checkpointer saves after every tool round: a resumed run does not repeat a tool call
that completed, and a tool marked ``requires_approval`` can pause the run (LangGraph
``interrupt``) before anything runs.

A tier whose every backend is down does not crash the graph: the node answers with a
clearly marked degraded message and its step says so (DESIGN.md, layer 3).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, StateGraph
from langgraph.types import interrupt
from pydantic import ValidationError

from tierflow.agents._recover import new_call_id, recover_tool_calls
from tierflow.agents._turn import AgentTurnPlan, ModelTurn
from tierflow.agents.agent import Agent
from tierflow.errors import TierExhausted
from tierflow.guardrails.runtime import (
    RunGuards,
    answer_after,
    current_guards,
    guard_tool_call,
    guard_tool_result,
    retrieved_passages,
    verdict_records,
)
from tierflow.record import Attempt, Step, ToolCallRecord
from tierflow.resilience import ResidencyExhausted
from tierflow.state import GraphState
from tierflow.telemetry import trace_agent, trace_tool_call
from tierflow.tiers import Tier, TierResult, TierSet, parse_structured
from tierflow.tools.tool import UNAVAILABLE, ToolContext, ToolOutcome


class NodeFn(Protocol):
    """What tierflow's node factories return: an async LangGraph node over GraphState."""

    def __call__(self, state: GraphState) -> Awaitable[dict[str, Any]]: ...


def emit(event: str, **data: Any) -> None:
    """Send a progress event to whoever streams the run (no-op outside a stream)."""
    try:
        writer = get_stream_writer()
    except RuntimeError:  # called outside a LangGraph run
        return
    writer({"event": event, **data})


def step_from_result(node: str, tier: str, result: TierResult, started: float) -> Step:
    return Step(
        node=node,
        tier=tier,
        backend=result.backend.id,
        model=result.message.response_metadata.get("model_name") or result.backend.model_name,
        fallback_from=result.fallback_from,
        fallback_reason=result.fallback_reason,
        attempts=result.attempts,
        usage=result.usage,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def degraded_step(node: str, tier: str, attempts: list[Attempt], started: float) -> Step:
    """The step of a node whose tier gave no answer, with each attempt as the chain kept it."""
    return Step(
        node=node,
        tier=tier,
        backend=None,
        model=None,
        fallback_from=attempts[0].backend if attempts else None,
        fallback_reason="; ".join(f"{a.backend}: {a.summary()}" for a in attempts),
        attempts=list(attempts),
        degraded=True,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _since_last_question(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return list(messages[i + 1 :])
    return list(messages)


#: Tool error types that will not change on retry within a run: the tool is withdrawn.
#: (A timeout may pass; a missing service or a bad configuration will not.)
PERMANENT_ERRORS = (UNAVAILABLE - {"timeout"}) | {"config_error", "unknown_tool"}


def _failures(messages: Sequence[BaseMessage]) -> list[ToolMessage]:
    return [
        m
        for m in _since_last_question(messages)
        if isinstance(m, ToolMessage) and isinstance(m.artifact, dict) and not m.artifact.get("ok")
    ]


def _withdrawn(messages: Sequence[BaseMessage]) -> frozenset[str]:
    """Tools that failed for good in this run; offering them again only invites loops."""
    return frozenset(
        str(m.name)
        for m in _failures(messages)
        if (m.artifact.get("error") or {}).get("type") in PERMANENT_ERRORS
    )


def _failure_summary(messages: Sequence[BaseMessage]) -> str:
    seen: dict[str, str] = {}
    for m in _failures(messages):
        error = m.artifact.get("error") or {}
        seen.setdefault(str(m.name), f"{error.get('type')}: {str(error.get('message'))[:160]}")
    return "; ".join(f"{name} failed ({why})" for name, why in seen.items())


def _tool_rounds(messages: Sequence[BaseMessage], agent: str) -> int:
    return sum(
        1
        for m in _since_last_question(messages)
        if isinstance(m, AIMessage) and m.tool_calls and m.name == agent
    )


async def _repair(
    tier: Tier,
    agent: Agent,
    messages: Sequence[BaseMessage],
    text: str,
    error: str,
    sensitive: bool,
) -> tuple[str, TierResult | None]:
    """One attempt to turn an answer that failed validation into a valid one."""
    assert agent.output_type is not None
    ask = HumanMessage(
        f"Your answer did not match the required schema ({error}). "
        "Reply again with only the corrected JSON."
    )
    try:
        result = await tier.acall(
            [*messages, AIMessage(text), ask],
            output_type=agent.output_type,
            sensitive=sensitive,
            retry=agent.retry,
        )
    except TierExhausted:
        return text, None
    assert result.parsed is not None
    return result.parsed.model_dump_json(), result


def agent_node(agent: Agent, tiers: TierSet) -> NodeFn:
    """The model-turn node of ``agent`` (see :func:`add_agent` for the whole agent)."""
    tier = tiers[agent.tier]  # fail at build time on an unknown tier

    @trace_agent(agent.name, tier)
    async def run(state: GraphState) -> dict[str, Any]:
        started = time.perf_counter()
        emit("node_started", node=agent.name, tier=tier.name)
        history = list(state.get("messages", []))
        messages = [SystemMessage(agent.instructions), *history]
        sensitive = agent.local_only or bool(state.get("sensitive"))
        rounds = _tool_rounds(history, agent.name)
        plan = AgentTurnPlan(
            agent.tools,
            agent.output_type,
            allow_tools=rounds < agent.limits.max_tool_rounds,
            withdrawn=_withdrawn(history),
            require_tool=agent.tool_choice == "required_first" and rounds == 0,
        )
        try:
            async with asyncio.timeout(agent.limits.timeout_s):
                result = await tier.acall(
                    messages, plan=plan, sensitive=sensitive, retry=agent.retry
                )
        except (TierExhausted, TimeoutError) as exc:
            attempts = (
                exc.attempts
                if isinstance(exc, TierExhausted)
                else [
                    Attempt(
                        backend="(tier)",
                        outcome="failed",
                        reason=f"timed out after {agent.limits.timeout_s:g}s",
                    )
                ]
            )
            step = degraded_step(agent.name, tier.name, attempts, started)
            why = f"every backend of the '{tier.name}' tier failed"
            if isinstance(exc, ResidencyExhausted):
                why = (
                    f"this conversation holds sensitive data, which may only go to local "
                    f"backends, and no local backend of the '{tier.name}' tier answered"
                )
            reply = AIMessage(
                content=(
                    f"[degraded] No answer: {why} ({step.fallback_reason}). "
                    "Nothing was lost; ask again to retry."
                ),
                name=agent.name,
            )
            emit("node_finished", node=agent.name, tier=tier.name, backend=None)
            return {"messages": [reply], "steps": [step.model_dump()]}

        turn: ModelTurn = result.parsed
        extra_update: dict[str, Any] = {}
        step = step_from_result(agent.name, tier.name, result, started)
        out: list[BaseMessage] = []
        if turn.tool_calls or turn.invalid_calls:
            calls = list(turn.tool_calls)
            errors: list[BaseMessage] = []
            for bad in turn.invalid_calls:
                call_id = new_call_id()
                calls.append(
                    ToolCall(name=str(bad.get("name")), args={}, id=call_id, type="tool_call")
                )
                errors.append(
                    ToolMessage(
                        content=f"ERROR (invalid_arguments): not valid JSON: {bad.get('args')!r}",
                        tool_call_id=call_id,
                        name=str(bad.get("name")),
                        status="error",
                        artifact=ToolOutcome.failure(
                            "invalid_arguments", "not valid JSON"
                        ).model_dump(),
                    )
                )
            out = [AIMessage(content=turn.text, tool_calls=calls, name=agent.name), *errors]
            step.tool_calls = [
                ToolCallRecord(id=c["id"] or "", name=c["name"], args=c["args"]) for c in calls
            ]
            for c in calls:
                emit("tool_call", node=agent.name, tool=c["name"], id=c["id"], args=c["args"])
        else:
            text = turn.text
            if agent.tools and recover_tool_calls(text, {t.name for t in agent.tools}):
                # The model kept asking for tools after they were withdrawn: answer honestly
                # instead of passing tool-call JSON to the user.
                why = _failure_summary(history) or "the tool budget was spent"
                text = f"I could not complete this request: {why}."
                step.degraded = True
            if agent.output_type is not None:
                try:
                    text = parse_structured(AIMessage(text), agent.output_type).model_dump_json()
                except (ValidationError, ValueError) as exc:
                    text, repaired = await _repair(
                        tier, agent, messages, text, str(exc)[:300], sensitive
                    )
                    if repaired is not None:
                        step.usage = step.usage + repaired.usage
                    else:
                        step.degraded = True
            guards = current_guards()
            if guards is not None:
                text, verdicts = await _guard_answer(guards, agent, text, history)
                extra_update = {"guardrails": verdicts} if verdicts else {}
            out = [
                AIMessage(
                    content=text,
                    name=agent.name,
                    response_metadata={"backend": result.backend.id},
                    usage_metadata=result.message.usage_metadata,
                )
            ]
        emit("node_finished", node=agent.name, tier=tier.name, backend=step.backend)
        return {"messages": out, "steps": [step.model_dump()], **extra_update}

    return run


async def _guard_answer(
    guards: RunGuards, agent: Agent, text: str, history: Sequence[BaseMessage]
) -> tuple[str, list[dict[str, Any]]]:
    """The agent's own output guardrails (the runner runs the graph's on the final answer)."""
    if not guards.applies(
        "output", agent=agent.name, agent_guardrails=agent.guardrails, include_graph=False
    ):
        return text, []
    result = await guards.check(
        "output",
        text,
        agent=agent.name,
        agent_guardrails=agent.guardrails,
        include_graph=False,
        output_type=agent.output_type,
        passages=retrieved_passages(_since_last_question(history)),
    )
    return answer_after(result, text), verdict_records(result)


def _tool_context(state: GraphState) -> ToolContext:
    """What a tool may know of this run: the LangGraph config's thread id, ``deps`` and
    ``settings`` (``configurable``), and the state's sensitive flag."""
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:  # called outside a LangGraph run
        configurable = {}
    thread_id = configurable.get("thread_id")
    return ToolContext(
        thread_id=str(thread_id) if thread_id is not None else None,
        sensitive=bool(state.get("sensitive")),
        settings=configurable.get("settings"),
        deps=configurable.get("deps"),
    )


def tools_node(agent: Agent) -> NodeFn:
    """Runs the tool calls of ``agent``'s last turn, in parallel, after any approvals."""

    async def run(state: GraphState) -> dict[str, Any]:
        messages = list(state.get("messages", []))
        answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
        last = next(
            (m for m in reversed(messages) if isinstance(m, AIMessage) and m.tool_calls), None
        )
        if last is None:
            return {}
        pending = [c for c in last.tool_calls if c["id"] not in answered]
        gated = [c for c in pending if (t := agent.tool(c["name"])) and t.policy.requires_approval]
        approved = True
        if gated:
            # Runs before any tool: on resume this node starts over, so nothing repeats.
            decision = interrupt(
                {
                    "type": "approval",
                    "agent": agent.name,
                    "calls": [{"id": c["id"], "name": c["name"], "args": c["args"]} for c in gated],
                }
            )
            approved = decision in (True, "approve", "approved", "yes")
        gated_ids = {c["id"] for c in gated}

        failed_before = {
            (str(m.name), _args_key(_call_args(messages, m.tool_call_id)))
            for m in _failures(messages)
        }

        guards = current_guards()
        verdicts: list[dict[str, Any]] = []
        context = _tool_context(state)

        @trace_tool_call(agent)
        async def one(call: ToolCall) -> ToolMessage:
            tool = agent.tool(call["name"])
            args = dict(call["args"])
            blocked: str | None = None
            if guards is not None and tool is not None:
                args, blocked = await guard_tool_call(
                    guards, call["name"], args, verdicts, agent.name, agent.guardrails
                )
            if blocked is not None:
                outcome = ToolOutcome.failure("blocked_by_guardrail", blocked)
            elif (call["name"], _args_key(call["args"])) in failed_before:
                outcome = ToolOutcome.failure(
                    "repeated", "this exact call already failed in this run; do not repeat it"
                )
            elif tool is None:
                known = ", ".join(t.name for t in agent.tools)
                outcome = ToolOutcome.failure(
                    "unknown_tool", f"no tool '{call['name']}' (tools: {known})"
                )
            elif call["id"] in gated_ids and not approved:
                outcome = ToolOutcome.failure("rejected", "a human reviewer rejected this call")
            else:
                outcome = await tool.run(args, context)
            content = outcome.for_model()
            if guards is not None and blocked is None:
                content, outcome = await guard_tool_result(
                    guards, call["name"], content, outcome, verdicts, agent.name, agent.guardrails
                )
            emit("tool_result", node=agent.name, tool=call["name"], id=call["id"], ok=outcome.ok)
            return ToolMessage(
                content=content,
                tool_call_id=call["id"] or "",
                name=call["name"],
                status="success" if outcome.ok else "error",
                artifact=outcome.model_dump(),
            )

        results = await asyncio.gather(*(one(c) for c in pending))
        update: dict[str, Any] = {"messages": list(results)}
        if guards is not None:
            update.update(guardrails=verdicts, **guards.state_update())
        return update

    return run


def _call_args(messages: Sequence[BaseMessage], call_id: str) -> dict[str, Any]:
    for m in messages:
        if isinstance(m, AIMessage):
            for c in m.tool_calls:
                if c["id"] == call_id:
                    return dict(c["args"])
    return {}


def _args_key(args: dict[str, Any]) -> str:
    return json.dumps(args, sort_keys=True, default=str)


def _needs_tools(state: GraphState, agent: Agent) -> bool:
    messages = state.get("messages", [])
    last = messages[-1] if messages else None
    if isinstance(last, AIMessage) and last.tool_calls and last.name == agent.name:
        return True
    # invalid calls were answered in the same turn: go back to the model
    return isinstance(last, ToolMessage)


def add_agent(graph: StateGraph[Any], agent: Agent, tiers: TierSet, *, then: str = END) -> str:
    """Add ``agent`` (model node + tools node) to ``graph``; continue to ``then``.

    Returns the entry node's name (the agent's name), for edges into it.
    """
    graph.add_node(agent.name, agent_node(agent, tiers))
    if agent.tools:
        tools_name = f"{agent.name}_tools"
        graph.add_node(tools_name, tools_node(agent))
        graph.add_conditional_edges(
            agent.name,
            lambda s: tools_name if _needs_tools(s, agent) else then,
            [tools_name, then],
        )
        graph.add_edge(tools_name, agent.name)
    else:
        graph.add_edge(agent.name, then)
    return agent.name
