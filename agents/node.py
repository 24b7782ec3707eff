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
from langgraph.graph import END, StateGraph
from langgraph.types import Send, interrupt
from pydantic import ValidationError

from tierflow.agents._recover import new_call_id, recover_tool_calls
from tierflow.agents._shared import (
    _failures,
    call_runner,
    degraded_reply,
    guard_answer,
)
from tierflow.agents._turn import AgentTurnPlan, ModelTurn
from tierflow.agents.agent import Agent
from tierflow.agents.context import ContextOverflow, fit_messages, window_of
from tierflow.agents.policy import run_guards
from tierflow.agents.step import (
    ModelStep,
    NodeFn,
    degraded_step,
    emit,
    step_from_result,
)
from tierflow.agents.workflow import (
    answering_backend,
    run_workflow,
    uses_workflow,
    verify_answer,
)
from tierflow.guardrails.base import Action
from tierflow.guardrails.runtime import (
    RunGuards,
    input_refusal,
    verdict_records,
)
from tierflow.models.tiers import TierSet, parse_structured
from tierflow.record import Attempt, ToolCallRecord
from tierflow.state import GraphState, VerdictEntry, run_messages
from tierflow.telemetry import trace_agent
from tierflow.tools.tool import UNAVAILABLE, ToolOutcome

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
        sensitive = guards.sensitive
        if uses_workflow(agent, tier, sensitive) and isinstance(question, HumanMessage):
            asked = str(update["messages"][0].content if update else question.content)
            out_update = await run_workflow(agent, tier, step, state, guards, asked, this_run)
            out_update["messages"] = [*update.get("messages", []), *out_update["messages"]]
            out_update["guardrails"] = [*verdicts, *out_update.get("guardrails", [])]
            return out_update
        window = window_of(answering_backend(tier, sensitive, agent.local_only))
        try:
            messages = fit_messages([SystemMessage(agent.instructions), *history], window)
        except ContextOverflow as exc:
            step.step = degraded_step(
                agent.name,
                tier.name,
                [Attempt(backend="(tier)", outcome="failed", reason=str(exc))],
                step.started,
            )
            reply = AIMessage(f"[degraded] No answer: {exc}.", name=agent.name)
            return step.finish({**update, "messages": [*update.get("messages", []), reply]})
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
            out: list[BaseMessage] = [degraded_reply(agent, tier, step)]
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
            elif not step.step.degraded:  # tool-less agents too: their numbers are unsourced
                text = await _verified(step, agent, messages, text, this_run)
            text, own = await guard_answer(guards, agent, text, this_run)
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


def _evidence(this_run: Sequence[BaseMessage]) -> list[str]:
    """What an answer's numbers may come from: the question, the tool calls' arguments
    (code and SQL that ran) and their successful results."""
    out = [str(this_run[0].content)] if this_run else []
    for m in this_run:
        if isinstance(m, AIMessage):
            out += [json.dumps(c["args"], ensure_ascii=False) for c in m.tool_calls]
        elif isinstance(m, ToolMessage) and isinstance(m.artifact, dict) and m.artifact.get("ok"):
            out.append(str(m.content))
    return out


async def _verified(
    step: ModelStep,
    agent: Agent,
    messages: Sequence[BaseMessage],
    text: str,
    this_run: Sequence[BaseMessage],
) -> str:
    """The answer after the grounding rule (one repair turn, else marked unverified)."""
    assert step.step is not None

    async def repair(missing: list[str]) -> str | None:
        ask = HumanMessage(
            f"These numbers in your answer appear in no tool result: {', '.join(missing)}. "
            "Answer again using only numbers from the tool results above."
        )
        plan = AgentTurnPlan(agent.tools, allow_tools=False)
        result = await step.call(
            [*messages, AIMessage(text), ask],
            plan=plan,
            local_only=agent.local_only,
            retry=agent.retry,
        )
        return result.parsed.text if result is not None else None

    first = step.step
    text, verified = await verify_answer(text, _evidence(this_run), repair)
    step.step = step.step or first
    step.step.verified = verified
    return text


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


def _decision(value: Any) -> tuple[bool, dict[str, Any] | None]:
    """Read an approval decision: ``"approve"``/``True``, ``"reject"``/``False``, or
    ``{"action": "approve"|"reject", "args": {...}}`` (approve with edited arguments)."""
    if isinstance(value, Mapping):
        action = value.get("action", "approve")
        args = value.get("args")
        approved = action in ("approve", "approved", "edit", True)
        return approved, dict(args) if approved and isinstance(args, Mapping) else None
    return value in (True, "approve", "approved", "yes"), None


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

    one = call_runner(agent)

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
