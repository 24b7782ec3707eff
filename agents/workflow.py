"""Workflows: fixed steps for an agent whose model is small.

A 0.5B model will not plan a tool loop well: it answers from memory, prints SQL instead
of running it, writes code that prints nothing. A workflow fixes the steps and leaves the
model only the small decisions (write this one query, pick this sentence). An
:class:`~tierflow.agents.Agent` declares one with ``workflow=``; the agent node runs it
instead of the free tool loop when the backend that will answer is small, that is in
``constrained`` tool mode (``local`` and ``vllm`` by default). Hosted backends keep the
free tool loop, unchanged.

A workflow is any async callable taking a :class:`WorkflowRun` and returning the answer
text::

    async def lookup(run: WorkflowRun) -> str:
        outcome = await run.tool("retrieve", {"query": run.question})
        best = await run.ask(f"Question: {run.question}\\nPassages: {outcome.output}")
        return best

    Agent(name="helper", tier="reasoning", tools=[...], instructions="...", workflow=lookup)

:meth:`WorkflowRun.ask` calls the agent's tier (budget, fallback, records), optionally
under a JSON schema (``output_type``: constrained decoding, right for choices and short
arguments); :meth:`WorkflowRun.tool` runs a tool through the agent's guardrails and
records the call. Tool calls and results enter the conversation as they would in the
loop, so the record lists them. After the workflow, the answer's numbers are checked
against what the tools returned (:func:`verify_answer`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from pydantic import BaseModel

from tierflow.agents._recover import new_call_id
from tierflow.agents._shared import call_runner, degraded_reply, guard_answer
from tierflow.agents.agent import Agent
from tierflow.agents.context import ContextOverflow, fit_messages, window_of
from tierflow.agents.step import ModelStep, degraded_step, emit
from tierflow.guardrails.builtin.output import ungrounded_numbers
from tierflow.guardrails.runtime import RunGuards
from tierflow.models.backends import Backend
from tierflow.models.tiers import Tier
from tierflow.record import Attempt, Step, ToolCallRecord
from tierflow.state import GraphState, VerdictEntry
from tierflow.tools.tool import ToolOutcome

__all__ = [
    "Workflow",
    "WorkflowDegraded",
    "WorkflowRun",
    "answering_backend",
    "run_workflow",
    "uses_workflow",
    "verify_answer",
]


class Workflow(Protocol):
    """Fixed steps of an agent on a small model: returns the answer text."""

    def __call__(self, run: WorkflowRun) -> Awaitable[str]: ...


class WorkflowDegraded(Exception):
    """Every backend of the tier failed during a workflow step."""


@dataclass
class WorkflowRun:
    """What a workflow step may do: ask the model, run a tool, read the question."""

    agent: Agent
    step: ModelStep
    state: GraphState
    guards: RunGuards
    question: str
    window: int | None = None
    #: Messages this workflow adds to the conversation (tool calls and their results).
    messages: list[BaseMessage] = field(default_factory=list)
    #: Texts a final answer's numbers may come from: the question, the tool calls'
    #: arguments and their successful results.
    evidence: list[str] = field(default_factory=list)
    calls: list[ToolCallRecord] = field(default_factory=list)
    verdicts: list[VerdictEntry] = field(default_factory=list)
    #: Set by a workflow that could not do its job (e.g. code still failing after its
    #: repairs): the step is degraded, so the run is too.
    failed: bool = False
    #: Set by a workflow whose own cross-check failed (e.g. two programs printed different
    #: results): the answer is marked unverified with this reason, whatever its numbers.
    unverified: str | None = None

    async def ask(
        self,
        prompt: str,
        *,
        system: str | None = None,
        output_type: type[BaseModel] | None = None,
        history: Sequence[BaseMessage] = (),
    ) -> Any:
        """One model turn: the text, or the validated ``output_type`` value."""
        messages = [
            SystemMessage(system or self.agent.instructions),
            *history,
            HumanMessage(prompt),
        ]
        result = await self.step.call(
            fit_messages(messages, self.window),
            output_type=output_type,
            local_only=self.agent.local_only,
            retry=self.agent.retry,
        )
        if result is None:
            raise WorkflowDegraded
        return result.parsed if output_type is not None else result.message.text

    async def tool(self, name: str, args: dict[str, Any]) -> ToolOutcome:
        """Run the agent's tool ``name``; the call and its result join the conversation."""
        call = ToolCall(name=name, args=args, id=new_call_id(), type="tool_call")
        emit("tool_call", node=self.agent.name, tool=name, id=call["id"], args=args)
        run_one = call_runner(self.agent)
        message: ToolMessage = await run_one(
            call, self.state, self.guards, self.verdicts, False, dict(args)
        )
        self.messages += [AIMessage(content="", tool_calls=[call], name=self.agent.name), message]
        self.calls.append(ToolCallRecord(id=call["id"] or "", name=name, args=args))
        outcome = ToolOutcome.model_validate(message.artifact)
        if outcome.ok:
            self.evidence += [json.dumps(args, ensure_ascii=False), str(message.content)]
        return outcome


def answering_backend(tier: Tier, sensitive: bool, local_only: bool) -> Backend | None:
    """The backend the tier's chain would try first for this call."""
    pinned = sensitive or local_only or tier.local_only
    for backend in tier.backends:
        if backend.unavailable_reason() is None and (backend.local or not pinned):
            return backend
    return None


def uses_workflow(agent: Agent, tier: Tier, sensitive: bool) -> bool:
    """Whether ``agent`` runs its workflow rather than the free tool loop: it has one, no
    tool waits for approvals (a workflow does not pause), and its answering backend is
    small (constrained tool mode)."""
    if agent.workflow is None or any(t.policy.requires_approval for t in agent.tools):
        return False
    backend = answering_backend(tier, sensitive, agent.local_only)
    return backend is not None and backend.tool_mode == "constrained"


Repair = Callable[[list[str]], Awaitable[str | None]]


async def verify_answer(text: str, evidence: Sequence[str], repair: Repair) -> tuple[str, bool]:
    """(answer, verified): every number of the answer must appear in ``evidence``;
    otherwise one repair turn, and failing that the answer is marked unverified."""
    missing = ungrounded_numbers(text, evidence)
    if not missing:
        return text, True
    repaired = await repair(missing)
    if repaired is not None and not ungrounded_numbers(repaired, evidence):
        return repaired, True
    # the repair did not help: the first answer stays, marked
    listed = ", ".join(missing[:5])
    note = f"(unverified: {listed} appear in no tool result of this run)"
    return f"{text}\n\n{note}", False


def _evidence_excerpt(evidence: Sequence[str], chars: int = 1500) -> str:
    return "\n".join(evidence)[-chars:]


async def run_workflow(
    agent: Agent,
    tier: Tier,
    step: ModelStep,
    state: GraphState,
    guards: RunGuards,
    question: str,
    this_run: Sequence[BaseMessage],
) -> dict[str, Any]:
    """The agent node's update when ``agent`` runs its workflow."""
    assert agent.workflow is not None
    backend = answering_backend(tier, guards.sensitive, agent.local_only)
    run = WorkflowRun(
        agent=agent,
        step=step,
        state=state,
        guards=guards,
        question=question,
        window=window_of(backend),
        evidence=[question],
    )
    try:
        text = await agent.workflow(run)
    except WorkflowDegraded:
        reply = degraded_reply(agent, tier, step)
        assert step.step is not None
        step.step.tool_calls = run.calls  # the calls that ran before the tier failed
        return step.finish({"messages": [*run.messages, reply], "guardrails": run.verdicts})
    except ContextOverflow as exc:
        too_long = Attempt(backend="(tier)", outcome="failed", reason=str(exc))
        step.step = degraded_step(agent.name, tier.name, [too_long], step.started)
        step.step.tool_calls = run.calls
        reply = AIMessage(f"[degraded] No answer: {exc}.", name=agent.name)
        return step.finish({"messages": [*run.messages, reply], "guardrails": run.verdicts})

    async def repair(missing: list[str]) -> str | None:
        try:
            fixed = await run.ask(
                f"Question: {question}\nTool results:\n{_evidence_excerpt(run.evidence)}\n\n"
                f"Your answer was: {text}\nThese numbers are in no tool result: "
                f"{', '.join(missing)}. Rewrite the answer using only numbers from the "
                "tool results."
            )
        except WorkflowDegraded:
            return None
        return str(fixed)

    text, verified = await verify_answer(text, run.evidence, repair)
    if run.unverified is not None and verified:
        text, verified = f"{text}\n\n(unverified: {run.unverified})", False
    text, own = await guard_answer(guards, agent, text, [*this_run, *run.messages])
    if step.step is None:  # no model call was needed
        step.skipped(Step(node=agent.name, tier=tier.name, backend=None, model=None))
    assert step.step is not None
    step.step.tool_calls = run.calls
    step.step.verified = verified
    step.step.degraded = step.step.degraded or run.failed
    answer = AIMessage(content=text, name=agent.name)
    update: dict[str, Any] = {"messages": [*run.messages, answer]}
    verdicts = [*run.verdicts, *own]
    if verdicts:
        update.update(guardrails=verdicts, **guards.state_update())
    return step.finish(update)
