"""One request of the retry loop to one backend (private; used by :mod:`tierflow.models.tiers`).

Each request (the first and every retry) asks the run's budget first, watches what it
streams (so a break can be announced, :mod:`tierflow.resilience.stream`), and checks
that a 200 answer is usable (:func:`tierflow.resilience.check_response`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig

from tierflow.budget import current_budget
from tierflow.models.backends import Backend
from tierflow.record import Usage
from tierflow.resilience.classify import check_response, describe
from tierflow.resilience.stream import StreamWatch
from tierflow.settings import Price
from tierflow.telemetry import traced_chat


def usage_of(message: AIMessage, price: Price | None) -> Usage:
    """Tokens and cost of one answer, from its usage metadata and the price table."""
    meta = message.usage_metadata
    tokens_in = int(meta["input_tokens"]) if meta else 0
    tokens_out = int(meta["output_tokens"]) if meta else 0
    cost = 0.0
    if price is not None:
        cost = (tokens_in * price.input + tokens_out * price.output) / 1_000_000
    return Usage(input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=round(cost, 8))


@dataclass(frozen=True, kw_only=True)
class BackendRequest:
    """One request to one backend (called again for each retry)."""

    tier: str  # the tier's name, for spans and events
    backend: Backend
    model: BaseChatModel
    sent: list[BaseMessage]
    kwargs: dict[str, Any]
    config: RunnableConfig | None
    price: Price | None
    watch: StreamWatch
    can_fall_back: Callable[[], bool]

    async def __call__(self, attempt: int) -> AIMessage:
        budget = current_budget()
        if budget is not None:
            budget.before_call(self.backend.id)  # BudgetExceeded stops the run, not the chain
        self.watch.begin(self.backend.id, self.tier)
        try:
            call = self.model.ainvoke(
                self.sent, config=self.watch.config(self.config), **self.kwargs
            )
            message = await traced_chat(self.tier, self.backend, call, self.sent)
            if not isinstance(message, AIMessage):
                raise TypeError(f"expected an AIMessage, got {type(message).__name__}")
            if budget is not None:
                budget.after_call(usage_of(message, self.price))  # billed even if unusable
            check_response(
                message, streamed=bool(self.watch.parts), can_fall_back=self.can_fall_back()
            )
        except Exception as exc:
            self.watch.broke(describe(exc))
            raise
        return message
