"""Running an :class:`Agent` inside a LangGraph graph.

An agent is two nodes: ``<name>`` (one model turn on the agent's tier) and, if it has
tools, ``<name>_tools``, which runs ONE tool call: the model node's edge sends each
requested call to it as its own task (LangGraph ``Send``). Each call's result is therefore
written to the checkpoint on its own as soon as it completes, so a process killed in the
middle of a round re-runs only the calls that had not finished. The agent loops until the
model answers or ``max_tool_rounds`` is spent. A tool marked ``requires_approval`` pauses
its own call (LangGraph ``interrupt``) for a decision per call: approve, reject, or
approve with edited arguments.

Before its first model call in a run, the agent runs its own input guardrails on the
question (``Agent.guardrails`` and ``[guardrails.agents.NAME]``); its own output guardrails
run on its answer. The graph's stages run around the whole graph (:mod:`tierflow.graphs.stages`).

A tier whose every backend is down does not crash the graph: the node answers with a
clearly marked degraded message and its step says so (DESIGN.md, layer 3).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langgraph.config import get_config
from langgraph.graph import END, StateGraph
from langgraph.types import Send, interrupt
from pydantic import ValidationError

from tierflow.agents._recover import new_call_id, recover_tool_calls
from tierflow.agents._turn import AgentTurnPlan, ModelTurn
from tierflow.agents.agent import Agent
from tierflow.agents.policy import run_guards, spending
from tierflow.agents.step import (
    ModelStep,
    NodeFn,
    degraded_step,
    emit,
    step_from_result,
)
from tierflow.guardrails.base import Action
from tierflow.guardrails.runtime import (
    RunGuards,
    answer_after,
    guard_tool_call,
    guard_tool_result,
    input_refusal,
    retrieved_passages,
    verdict_records,
)
from tierflow.models.tiers import Tier, TierSet, parse_structured
from tierflow.record import Attempt, ToolCallRecord
from tierflow.resilience import ResidencyExhausted
from tierflow.state import GraphState, VerdictEntry, run_messages
from tierflow.telemetry import trace_agent, trace_tool_call
from tierflow.tools.tool import UNAVAILABLE, ToolContext, ToolOutcome

__all__ = [
    "NodeFn",
    "add_agent",
    "agent_node",
    "degraded_step",
    "emit",
    "step_from_result",
    "tools_node",
]

#: Tool error types that will not change on retry within a run: the tool is withdrawn.
#: (A timeout may pass; a missing service or a bad configuration will not.)
PERMANENT_ERRORS = (UNAVAILABLE - {"timeout"}) | {"config_error", "unknown_tool"}

#: The key under which the model node sends one tool call to the tools node.
CALL_KEY = "tool_call"


def _failures(messages: Sequence[BaseMessage]) -> list[ToolMessage]:
    return [
        m
        for m in messages
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
    return sum(1 for m in messages if isinstance(m, AIMessage) and m.tool_calls and m.name == agent)


def _has_spoken(messages: Sequence[BaseMessage], agent: str) -> bool:
    return any(isinstance(m, AIMessage) and m.name == agent for m in messages)


def _degraded_reply(agent: Agent, tier: Tier, step: ModelStep) -> AIMessage:
    assert step.step is not None
    why = f"every backend of the '{tier.name}' tier failed"
    if isinstance(step.failure, ResidencyExhausted):
        held = {
            "sensitive data": "this conversation holds sensitive data, which",
            "tier is local_only": f"the '{tier.name}' tier is local-only: this conversation",
            "caller is local_only": f"agent '{agent.name}' is local-only: its conversation",
        }[step.failure.pin]
        why = (
            f"{held} may only go to local backends, and no local backend of the "
            f"'{tier.name}' tier answered"
        )
    return AIMessage(
        content=(
            f"[degraded] No answer: {why} ({step.step.fallback_reason}). "
            "Nothing was lost; ask again to retry."
        ),
        name=agent.name,
    )


async def _agent_input(
    guards: RunGuards, agent: Agent, question: HumanMessage
) -> tuple[HumanMessage | None, str | None, list[VerdictEntry]]:
    """The agent's own input guardrails on the question: (redacted question or None,
    block reason or None, verdicts)."""
    result = await guards.check(
        "input",
        str(question.content),
        agent=agent.name,
        agent_guardrails=agent.guardrails,
        include_graph=False,
    )
    verdicts = verdict_records(result)
    if result.action is Action.BLOCK:
        return None, result.reason or "refused", verdicts
    if result.text != question.content:
        return HumanMessage(result.text, id=question.id, name=question.name), None, verdicts
    return None, None, verdicts


def agent_node(agent: Agent, tiers: TierSet) -> NodeFn:
    """The model-turn node of ``agent`` (see :func:`add_agent` for the whole agent)."""
    tier = tiers[agent.tier]  # fail at build time on an unknown tier

    @trace_agent(agent.name, tier)
    async def run(state: GraphState) -> dict[str, Any]:
        step = ModelStep(agent.name, tier, state)
        guards = run_guards(state)
        history: list[BaseMessage] = list(state.get("messages", []))
        this_run = run_messages(state)
        update: dict[str, Any] = {}
        verdicts: list[VerdictEntry] = []
        own_input = guards.applies(
            "input", agent=agent.name, agent_guardrails=agent.guardrails, include_graph=False
        )
        question = this_run[0] if this_run else None
        first_turn = not _has_spoken(this_run, agent.name)
        if own_input and first_turn and isinstance(question, HumanMessage):
            redacted, blocked, verdicts = await _agent_input(guards, agent, question)
            if blocked is not None:
                reply = AIMessage(input_refusal(blocked), name=agent.name)
                return step.finish(
                    {"messages": [reply], "guardrails": verdicts, **guards.state_update()}
                )
            if redacted is not None:
                history = [redacted if m.id == question.id else m for m in history]
                update["messages"] = [redacted]
        messages = [SystemMessage(agent.instructions), *history]
        sensitive = guards.sensitive
        rounds = _tool_rounds(this_run, agent.name)
        plan = AgentTurnPlan(
            agent.tools,
            agent.output_type,
            allow_tools=rounds < agent.limits.max_tool_rounds,
            withdrawn=_withdrawn(this_run),
            require_tool=agent.tool_choice == "required_first" and rounds == 0,
        )
        try:
            async with asyncio.timeout(agent.limits.timeout_s):
                result = await step.call(
                    messages,
                    plan=plan,
                    sensitive=sensitive,
                    local_only=agent.local_only,
                    retry=agent.retry,
                )
        except TimeoutError:
            timed_out = Attempt(
                backend="(tier)",
                outcome="failed",
                reason=f"timed out after {agent.limits.timeout_s:g}s",
            )
            step.step = degraded_step(agent.name, tier.name, [timed_out], step.started)
            result = None
        if result is None:
            out: list[BaseMessage] = [_degraded_reply(agent, tier, step)]
            return step.finish(
                {**update, "messages": [*update.get("messages", []), *out], "guardrails": verdicts}
            )

        assert step.step is not None
        turn: ModelTurn = result.parsed
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
            step.step.tool_calls = [
                ToolCallRecord(id=c["id"] or "", name=c["name"], args=c["args"]) for c in calls
            ]
            for c in calls:
                emit("tool_call", node=agent.name, tool=c["name"], id=c["id"], args=c["args"])
        else:
            text = turn.text
            if agent.tools and recover_tool_calls(text, {t.name for t in agent.tools}):
                # The model kept asking for tools after they were withdrawn: answer honestly
                # instead of passing tool-call JSON to the user.
                why = _failure_summary(this_run) or "the tool budget was spent"
                text = f"I could not complete this request: {why}."
                step.step.degraded = True
            if agent.output_type is not None:
                text = await _validated(step, agent, messages, text, sensitive)
            text, own = await _guard_answer(guards, agent, text, this_run)
            verdicts += own
            out = [
                AIMessage(
                    content=text,
                    name=agent.name,
                    response_metadata={"backend": result.backend.id},
                    usage_metadata=result.message.usage_metadata,
                )
            ]
        update["messages"] = [*update.get("messages", []), *out]
        if verdicts:
            update.update(guardrails=verdicts, **guards.state_update())
        return step.finish(update)

    return run


async def _validated(
    step: ModelStep, agent: Agent, messages: Sequence[BaseMessage], text: str, sensitive: bool
) -> str:
    """The answer as valid ``output_type`` JSON, after at most one repair turn."""
    assert agent.output_type is not None and step.step is not None
    try:
        return parse_structured(AIMessage(text), agent.output_type).model_dump_json()
    except (ValidationError, ValueError) as exc:
        error = str(exc)[:300]
    ask = HumanMessage(
        f"Your answer did not match the required schema ({error}). "
        "Reply again with only the corrected JSON."
    )
    first = step.step
    repaired = await step.call(
        [*messages, AIMessage(text), ask],
        output_type=agent.output_type,
        sensitive=sensitive,
        local_only=agent.local_only,
        retry=agent.retry,
    )
    if repaired is None:  # the repair's tier call failed: keep the first turn's step
        step.step = first
        step.step.degraded = True
        return text
    assert repaired.parsed is not None
    return str(repaired.parsed.model_dump_json())


async def _guard_answer(
    guards: RunGuards, agent: Agent, text: str, this_run: Sequence[BaseMessage]
) -> tuple[str, list[VerdictEntry]]:
    """The agent's own output guardrails (the graph's run in its output stage)."""
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
        passages=retrieved_passages(this_run),
    )
    return answer_after(result, text), verdict_records(result)


def _decision(value: Any) -> tuple[bool, dict[str, Any] | None]:
    """Read an approval decision: ``"approve"``/``True``, ``"reject"``/``False``, or
    ``{"action": "approve"|"reject", "args": {...}}`` (approve with edited arguments)."""
    if isinstance(value, Mapping):
        action = value.get("action", "approve")
        args = value.get("args")
        approved = action in ("approve", "approved", "edit", True)
        return approved, dict(args) if approved and isinstance(args, Mapping) else None
    return value in (True, "approve", "approved", "yes"), None


def _tool_context(state: Mapping[str, Any]) -> ToolContext:
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
    """Runs one tool call of ``agent``'s last turn (sent by :func:`add_agent`'s edge)."""

    def approval(call: ToolCall) -> tuple[bool, dict[str, Any]]:
        """(rejected, arguments to run with) after a human decision, if the tool needs one."""
        tool = agent.tool(call["name"])
        args = dict(call["args"])
        if tool is None or not tool.policy.requires_approval:
            return False, args
        # Before anything runs (and outside the tool's span): on resume this task starts
        # over and gets the decision.
        decision = interrupt(
            {
                "type": "approval",
                "agent": agent.name,
                "calls": [{"id": call["id"], "name": call["name"], "args": call["args"]}],
            }
        )
        approved, edited = _decision(decision)
        return not approved, edited if edited is not None else args

    @trace_tool_call(agent)
    async def one(
        call: ToolCall,
        state: Mapping[str, Any],
        guards: RunGuards,
        verdicts: list[VerdictEntry],
        rejected: bool,
        args: dict[str, Any],
    ) -> ToolMessage:
        tool = agent.tool(call["name"])
        blocked: str | None = None
        this_run = run_messages(state)
        failed_before = {
            (str(m.name), _args_key(_call_args(this_run, m.tool_call_id)))
            for m in _failures(this_run)
        }
        if tool is not None and not rejected:
            args, blocked = await guard_tool_call(
                guards, call["name"], args, verdicts, agent.name, agent.guardrails
            )
        if rejected:
            outcome = ToolOutcome.failure("rejected", "a human reviewer rejected this call")
        elif blocked is not None:
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
        else:
            async with spending(state):  # the run's wall-time budget bounds tools too
                outcome = await tool.run(args, _tool_context(state))
        content = outcome.for_model()
        if blocked is None and not rejected:
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

    async def run(state: GraphState) -> dict[str, Any]:
        call = cast("ToolCall | None", state.get(CALL_KEY))  # the Send payload adds it
        if call is None:
            return {}
        rejected, args = approval(call)
        guards = run_guards(state)
        verdicts: list[VerdictEntry] = []
        message = await one(call, state, guards, verdicts, rejected, args)
        if not verdicts:
            return {"messages": [message]}
        return {"messages": [message], "guardrails": verdicts, **guards.state_update()}

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


def add_agent(graph: StateGraph[Any], agent: Agent, tiers: TierSet, *, then: str = END) -> str:
    """Add ``agent`` (model node + tools node) to ``graph``; continue to ``then``.

    Returns the entry node's name (the agent's name), for edges into it.
    """
    graph.add_node(agent.name, agent_node(agent, tiers))
    if not agent.tools:
        graph.add_edge(agent.name, then)
        return agent.name
    tools_name = f"{agent.name}_tools"
    graph.add_node(tools_name, tools_node(agent))

    def next_step(state: GraphState) -> Any:
        messages = state.get("messages", [])
        last = messages[-1] if messages else None
        if isinstance(last, ToolMessage):
            # invalid calls are answered in the same turn: pick up the ones left, if any
            last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
            if not (isinstance(last, AIMessage) and last.name == agent.name):
                return agent.name
        if not (isinstance(last, AIMessage) and last.tool_calls and last.name == agent.name):
            return then
        answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
        pending = [c for c in last.tool_calls if c["id"] not in answered]
        if not pending:
            return agent.name
        # One task per call: each call's result is checkpointed on its own.
        return [Send(tools_name, {**state, CALL_KEY: c}) for c in pending]

    graph.add_conditional_edges(agent.name, next_step, [tools_name, agent.name, then])
    graph.add_edge(tools_name, agent.name)
    return agent.name
