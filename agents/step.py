"""The one skeleton of a model-backed node: call a tier, build the step (or a degraded
step), spend the run's budget, emit progress events.

The agent, router, planner and supervisor nodes all run through :class:`ModelStep`, so
each records the same thing: the backend that answered, every attempt with its retries
and breaker state, usage, and a ``node_started``/``node_finished`` pair of events.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Literal, Protocol

from langchain_core.messages import BaseMessage
from langgraph.config import get_stream_writer

from tierflow.agents.policy import Spend, spending
from tierflow.errors import TierExhausted
from tierflow.models.tiers import Tier, TierResult
from tierflow.record import Attempt, Step
from tierflow.state import GraphState

StepKind = Literal["agent", "router", "planner", "supervisor"]


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


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


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
        duration_ms=_ms(started),
    )


def degraded_step(node: str, tier: str, attempts: Sequence[Attempt], started: float) -> Step:
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
        duration_ms=_ms(started),
    )


class ModelStep:
    """One execution of a model-backed node.

    Example (a custom node)::

        async def judge(state: GraphState) -> dict[str, Any]:
            step = ModelStep("judge", tiers["router"], state)
            result = await step.call(messages, output_type=Verdict)
            verdict = result.parsed if result else None  # None: the tier was down
            return step.finish({"route": ...}, route=...)
    """

    def __init__(
        self, node: str, tier: Tier, state: Mapping[str, Any], *, kind: StepKind = "agent"
    ) -> None:
        self.node = node
        self.kind: StepKind = kind
        self.tier = tier
        self.state = state
        self.started = time.perf_counter()
        self.step: Step | None = None
        self.failure: TierExhausted | None = None
        self._spent: dict[str, Any] = {}
        emit("node_started", node=node, tier=tier.name)

    @property
    def sensitive(self) -> bool:
        return bool(self.state.get("sensitive"))

    async def call(self, messages: Sequence[BaseMessage], **kwargs: Any) -> TierResult | None:
        """Call the tier under the run's budget. ``None`` means every backend failed: the
        step is then degraded and :attr:`failure` says why. A spent budget raises
        :class:`~tierflow.budget.BudgetExceeded` (the run stops, resumable)."""
        kwargs.setdefault("sensitive", self.sensitive)
        async with spending(self.state) as spend:
            try:
                result = await self.tier.acall(messages, **kwargs)
            except TierExhausted as exc:
                self._add_spend(spend)
                self.failure = exc
                self.step = degraded_step(self.node, self.tier.name, exc.attempts, self.started)
                return None
            self._add_spend(spend)
        if self.step is None:
            self.step = step_from_result(self.node, self.tier.name, result, self.started)
        else:  # a second call of the same node (a repair): one step, summed usage
            self.step.usage = self.step.usage + result.usage
            self.step.attempts = [*self.step.attempts, *result.attempts]
        return result

    def _add_spend(self, spend: Spend) -> None:
        update = spend.update().get("budget_used")
        if not update:
            return
        old = self._spent.get("budget_used")
        if old:
            for key in ("model_calls", "tokens", "cost_usd"):
                update[key] = old[key] + update[key]
        self._spent = {"budget_used": update}

    def skipped(self, step: Step) -> None:
        """Record a step that needed no tier call (e.g. a confident semantic route)."""
        self.step = step

    def finish(self, update: dict[str, Any] | None = None, **event: Any) -> dict[str, Any]:
        """The node's state update: ``update`` plus its step and what it spent; emits
        ``node_finished`` with ``event``'s fields."""
        out = dict(update or {})
        if self.step is not None:
            self.step.kind = self.kind
            self.step.duration_ms = _ms(self.started)
            out["steps"] = [*out.get("steps", []), self.step.model_dump()]
        out.update(self._spent)
        backend = self.step.backend if self.step is not None else None
        emit("node_finished", node=self.node, tier=self.tier.name, backend=backend, **event)
        return out
