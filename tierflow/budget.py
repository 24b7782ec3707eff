"""Per-run budgets: model calls, tokens, cost and wall time.

Each model-backed node opens a :class:`RunBudget` for its calls (:func:`budget_scope`,
from ``tierflow.agents.policy.spending``, with what the run spent so far); the tier chain
asks it before every request to a backend (:meth:`RunBudget.before_call`) and tells it
what the request used (:meth:`RunBudget.after_call`). A spent budget raises
:class:`BudgetExceeded`, which is not a backend failure: it stops the run with every
completed step checkpointed, and the runner returns what the run had produced so far.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from tierflow.errors import RunError
from tierflow.record import Usage


class BudgetExceeded(RunError):
    """A run spent one of its budgets; ``limit`` names which."""

    def __init__(self, limit: str, used: float, maximum: float, message: str | None = None) -> None:
        self.limit = limit
        self.used = used
        self.maximum = maximum
        super().__init__(message or f"budget exceeded: {limit} {used:g} of {maximum:g}")


@dataclass(kw_only=True)
class RunBudget:
    """Limits for one run (``None``: unlimited) and what the run has used so far."""

    max_model_calls: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_wall_s: float | None = None
    model_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def before_call(self, backend: str) -> None:
        """Raise :class:`BudgetExceeded` if another request to ``backend`` is not allowed."""
        if self.max_model_calls is not None and self.model_calls >= self.max_model_calls:
            raise BudgetExceeded("model_calls", self.model_calls, self.max_model_calls)
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            raise BudgetExceeded("tokens", self.tokens, self.max_tokens)
        if self.max_cost_usd is not None and self.cost_usd >= self.max_cost_usd:
            raise BudgetExceeded("cost_usd", self.cost_usd, self.max_cost_usd)
        self.model_calls += 1

    def after_call(self, usage: Usage) -> None:
        self.tokens += usage.input_tokens + usage.output_tokens
        self.cost_usd += usage.cost_usd


_current: ContextVar[RunBudget | None] = ContextVar("tierflow_run_budget", default=None)


def current_budget() -> RunBudget | None:
    """The budget of the run this task belongs to, if any."""
    return _current.get()


@contextmanager
def budget_scope(budget: RunBudget | None) -> Iterator[RunBudget | None]:
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)
