"""What a compiled graph enforces on every run: its guardrail stages and its budget.

A :class:`RunPolicy` travels in the graph's own config (``configurable["tierflow"]``,
bound by :func:`tierflow.graph` with ``with_config``), so a graph invoked with plain
LangGraph applies the same guardrails and budget as one driven by the ``Runner``. What a
run learns (placeholders, residency, what it spent) lives in the graph state, so a run
resumed from a checkpoint goes on where it stopped. No process-global switch is involved.

The ``Runner`` may add a :class:`RunTicket` (``configurable["tierflow_run"]``): the run's
id, start time and a per-run budget override.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from langgraph.config import get_config

from tierflow.budget import BudgetExceeded, RunBudget, budget_scope
from tierflow.guardrails.base import Guardrail, PlaceholderVault
from tierflow.guardrails.runtime import RunGuards, StageMap, graph_guardrails
from tierflow.settings import BudgetSettings, GuardrailsSettings, TierflowSettings
from tierflow.state import BudgetUse, run_question

POLICY_KEY = "tierflow"
TICKET_KEY = "tierflow_run"

log = logging.getLogger("tierflow")


@dataclass(frozen=True, kw_only=True)
class RunPolicy:
    """The guardrail stages and budget limits a compiled graph applies to each run."""

    stages: StageMap
    guardrails: GuardrailsSettings
    budget: BudgetSettings
    #: Merged stage maps per agent (an agent's own guardrails plus ``[guardrails.agents]``),
    #: built once per graph rather than once per node call.
    agent_stages: dict[str, StageMap] = field(default_factory=dict, compare=False)

    @classmethod
    def from_settings(
        cls,
        settings: TierflowSettings,
        graph: str = "default",
        guardrails: tuple[Guardrail, ...] = (),
        budget: BudgetSettings | None = None,
    ) -> RunPolicy:
        """The policy of ``graph`` under ``settings``: ``[guardrails]`` (its
        ``[guardrails.graphs.NAME]`` entry, or the default stages) plus ``guardrails``, and
        ``budget`` (default ``[budget]``)."""
        return cls(
            stages=graph_guardrails(settings.guardrails, graph, guardrails),
            guardrails=settings.guardrails,
            budget=budget or settings.budget,
        )


@dataclass(frozen=True, kw_only=True)
class RunTicket:
    """One invocation's identity, given by a driver (the ``Runner``): a continued run gets
    a new ticket, hence a fresh budget."""

    run_id: str
    started_at: float
    budget: BudgetSettings | None = None


def _configurable() -> Mapping[str, Any]:
    try:
        return get_config().get("configurable") or {}
    except RuntimeError:  # outside a LangGraph run
        return {}


@functools.lru_cache(maxsize=1)
def _fallback_policy() -> RunPolicy:
    log.warning(
        "a tierflow agent runs in a graph compiled without tierflow's run policy; it uses "
        "the default [guardrails] and [budget] of the settings (compile with tierflow.graph "
        "or tierflow.compile_graph to choose)"
    )
    from tierflow.settings import load_settings

    return RunPolicy.from_settings(load_settings())


def current_policy() -> RunPolicy:
    """The policy of the graph this node runs in; a graph compiled without one (plain
    ``StateGraph.compile``) gets the settings' defaults, never no guardrails at all."""
    policy = _configurable().get(POLICY_KEY)
    return policy if isinstance(policy, RunPolicy) else _fallback_policy()


def current_ticket() -> RunTicket | None:
    ticket = _configurable().get(TICKET_KEY)
    return ticket if isinstance(ticket, RunTicket) else None


def run_guards(state: Mapping[str, Any], policy: RunPolicy | None = None) -> RunGuards:
    """This run's guardrails as a node sees them: the graph's stages, the thread's
    placeholders and residency, and the question (for checks that compare with it)."""
    policy = policy or current_policy()
    return RunGuards(
        stages=policy.stages,
        cfg=policy.guardrails,
        vault=PlaceholderVault.from_dict(state.get("guard_vault")),
        sensitive=bool(state.get("sensitive")),
        user_text=run_question(state),
        _agent_cache=policy.agent_stages,
    )


def run_identity(state: Mapping[str, Any]) -> tuple[str, float]:
    """``(run id, wall-clock start)`` of the run this node belongs to."""
    ticket = current_ticket()
    if ticket is not None:
        return ticket.run_id, ticket.started_at
    return str(state.get("run_id") or ""), float(state.get("run_started_at") or time.time())


@dataclass(kw_only=True)
class Spend:
    """What one node spent of the run's budget (written back to the state)."""

    run_id: str
    budget: RunBudget
    base: BudgetUse

    def update(self) -> dict[str, Any]:
        b, base = self.budget, self.base
        used: BudgetUse = {
            "run": self.run_id,
            "model_calls": b.model_calls - base.get("model_calls", 0),
            "tokens": b.tokens - base.get("tokens", 0),
            "cost_usd": round(b.cost_usd - base.get("cost_usd", 0.0), 8),
        }
        if not (used["model_calls"] or used["tokens"] or used["cost_usd"]):
            return {}
        return {"budget_used": used}


@asynccontextmanager
async def spending(state: Mapping[str, Any]) -> AsyncIterator[Spend]:
    """Run a node's model calls under the run's budget and wall-time deadline.

    Every request asks the budget first (:class:`~tierflow.budget.RunBudget`); a spent
    budget raises :class:`~tierflow.budget.BudgetExceeded`, which ends the invocation with
    every completed step checkpointed, so the run can be continued.
    """
    ticket = current_ticket()
    limits = (ticket.budget if ticket else None) or current_policy().budget
    run_id, started_at = run_identity(state)
    used = state.get("budget_used") or {}
    base: BudgetUse = dict(used) if used.get("run") == run_id else {}  # type: ignore[assignment]
    budget = RunBudget(
        max_model_calls=limits.max_model_calls,
        max_tokens=limits.max_tokens,
        max_cost_usd=limits.max_cost_usd,
        max_wall_s=limits.max_wall_s,
        model_calls=base.get("model_calls", 0),
        tokens=base.get("tokens", 0),
        cost_usd=base.get("cost_usd", 0.0),
    )
    spend = Spend(run_id=run_id, budget=budget, base=base)
    remaining = None
    if limits.max_wall_s is not None:
        remaining = limits.max_wall_s - (time.time() - started_at)
        if remaining <= 0:
            raise _wall_spent(limits.max_wall_s)
    with budget_scope(budget):
        try:
            async with asyncio.timeout(remaining) as deadline:
                yield spend
        except TimeoutError:
            if not deadline.expired():  # a TimeoutError of the node's own, not ours
                raise
            assert limits.max_wall_s is not None
            raise _wall_spent(limits.max_wall_s) from None


def _wall_spent(max_wall_s: float) -> BudgetExceeded:
    return BudgetExceeded(
        "wall_s", max_wall_s, max_wall_s, f"budget exceeded: wall time {max_wall_s:g} s"
    )
