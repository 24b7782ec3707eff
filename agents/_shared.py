"""Helpers shared by the agent's tool loop (``node``) and its workflows (``workflow``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolCall, ToolMessage
from langgraph.config import get_config

from tierflow.agents.agent import Agent
from tierflow.agents.policy import spending
from tierflow.agents.step import ModelStep, emit
from tierflow.guardrails.runtime import (
    RunGuards,
    answer_after,
    guard_tool_call,
    guard_tool_result,
    retrieved_passages,
    verdict_records,
)
from tierflow.models.tiers import Tier
from tierflow.resilience import ResidencyExhausted
from tierflow.state import VerdictEntry, run_messages
from tierflow.telemetry import trace_tool_call
from tierflow.tools.tool import ToolContext, ToolOutcome


def degraded_reply(agent: Agent, tier: Tier, step: ModelStep) -> AIMessage:
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


async def guard_answer(
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


def tool_context(state: Mapping[str, Any]) -> ToolContext:
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


def _failures(messages: Sequence[BaseMessage]) -> list[ToolMessage]:
    return [
        m
        for m in messages
        if isinstance(m, ToolMessage) and isinstance(m.artifact, dict) and not m.artifact.get("ok")
    ]


def _call_args(messages: Sequence[BaseMessage], call_id: str) -> dict[str, Any]:
    for m in messages:
        if isinstance(m, AIMessage):
            for c in m.tool_calls:
                if c["id"] == call_id:
                    return dict(c["args"])
    return {}


def _args_key(args: dict[str, Any]) -> str:
    return json.dumps(args, sort_keys=True, default=str)


def call_runner(agent: Agent) -> Callable[..., Awaitable[ToolMessage]]:
    """Runs one tool call of ``agent`` with its guardrails (tool-call and tool-result
    stages), the run's wall-time budget and a span: the tool loop's tools node and the
    workflows (``workflow``) both call tools through it."""

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
                outcome = await tool.run(args, tool_context(state))
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

    return one
