"""Resilience: retries of one backend, circuit breakers, and what a fallback must normalise.
Layer: resilience; may import only telemetry and the core (state, budget, settings, errors, record).

DESIGN.md keeps three separate layers; this module holds the first two and the shared
classification, and :class:`tierflow.models.tiers.Tier` applies them while it walks its chain
(the third, degradation, is the agent node's):

1. **Retry** (:class:`RetryPolicy`, :func:`call_with_retry`): the same backend again, with
   bounded attempts, exponential backoff with full jitter, ``Retry-After`` honoured (or,
   past a maximum, not waited for), a deadline over all attempts. Only what
   :func:`classify` calls retryable is retried. Provider SDK retries are off.
2. **Circuit breaker** (:class:`CircuitBreaker`, :class:`BreakerPolicy`), one per backend:
   a backend known dead is skipped with no network I/O (an attempt with outcome
   ``breaker_open``) until its cool-down ends; then one call probes it while the others
   still skip. State is persisted (:class:`BreakerStore`) so ``tierflow doctor`` and the
   next process see it.
3. **Fallback** is the tier's chain itself; before each request the conversation is made
   provider-neutral (:func:`normalise_messages`), a stream that broke mid-answer is
   announced (``stream_restarted`` event) before the next request, and a sensitive run
   never leaves the local backends (:class:`ResidencyExhausted` when none is left).

Where policies come from, most specific first: the call (``Agent.retry`` for an agent's
node), the tier (``Tier.retry`` / ``[tiers.NAME.retry]``), the backend
(``[resilience.backends."ID".retry]``), then ``[resilience.retry]``. A tier or backend
built in code without a policy makes one request (``RetryPolicy.single()``) and has no
breaker. Breaker policies are per backend (``[resilience.backends."ID".breaker]`` over
``[resilience.breaker]``), because a breaker's state is the backend's, whoever calls it.

Failure classes (:class:`FailureKind`) and what each layer does with them:

=================  =========  =================================  ===========================
kind               retried    breaker                            examples
=================  =========  =================================  ===========================
connect            yes [1]_   opens at once [1]_                 refused, connect timeout
timeout            yes        counts                             read timeout, the deadline
dropped            yes        counts                             reset, truncated stream
rate_limited       yes        counts                             429 (+ Retry-After)
server             yes        counts                             5xx, 408, 409
auth               no         opens at once                      401, 403
client             no         ignored (the request is wrong)     400, 404, 422
invalid_response   no         counts                             bad JSON, no choices
error              no         counts                             anything else
=================  =========  =================================  ===========================

.. [1] with ``open_on_connect_error`` (default): the breaker opens, so the chain moves on
   at once and the next call skips the backend without paying the connect again.
"""

from __future__ import annotations

from collections.abc import Sequence

from tierflow.errors import TierExhausted
from tierflow.record import Attempt
from tierflow.resilience.breaker import (
    BreakerPolicy,
    BreakerSnapshot,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
    Permit,
    StateStore,
)
from tierflow.resilience.classify import (
    Failure,
    FailureKind,
    InvalidResponse,
    StreamCut,
    check_response,
    classify,
    describe,
    parse_retry_after,
    retry_after_from,
)
from tierflow.resilience.messages import neutral_call_id, normalise_messages
from tierflow.resilience.retry import RetryPolicy, RetryResult, call_with_retry
from tierflow.resilience.stream import PARTIAL_MARK, StreamWatch
from tierflow.settings import TierflowSettings, TierSettings

__all__ = [
    "PARTIAL_MARK",
    "BreakerPolicy",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "Failure",
    "FailureKind",
    "InvalidResponse",
    "Permit",
    "ResidencyExhausted",
    "RetryPolicy",
    "RetryResult",
    "StateStore",
    "StreamCut",
    "StreamWatch",
    "breaker_for",
    "breaker_store",
    "call_with_retry",
    "check_response",
    "classify",
    "describe",
    "neutral_call_id",
    "normalise_messages",
    "parse_retry_after",
    "retry_after_from",
    "retry_policy_for",
    "tier_retry_policy",
]


class ResidencyExhausted(TierExhausted):
    """A sensitive (or ``local_only``) call found no local backend able to answer.

    Hosted backends were skipped, never called: residency is not traded for an answer.
    """

    def __init__(
        self, tier: str, attempts: Sequence[Attempt], why: str, *, pin: str = "sensitive data"
    ) -> None:
        super().__init__(tier, attempts)
        #: Why the call was pinned: "sensitive data", "tier is local_only" or
        #: "caller is local_only".
        self.pin = pin
        self.args = (
            f"tier '{tier}': {why}, so only local backends may serve this call, and none "
            f"could ({self.detail or 'no backends'})",
        )


def retry_policy_for(settings: TierflowSettings, backend_id: str) -> RetryPolicy:
    """``[resilience.retry]`` with ``[resilience.backends."ID".retry]`` over it."""
    base = settings.resilience.retry
    own = settings.resilience.backends.get(backend_id)
    if own is not None and own.retry is not None:
        base = base.model_copy(update=own.retry.model_dump(exclude_unset=True))
    return RetryPolicy(**base.model_dump())


def tier_retry_policy(settings: TierflowSettings, tier: TierSettings) -> RetryPolicy | None:
    """``[tiers.NAME.retry]`` over ``[resilience.retry]``; ``None`` if the tier sets none."""
    if tier.retry is None:
        return None
    merged = settings.resilience.retry.model_copy(update=tier.retry.model_dump(exclude_unset=True))
    return RetryPolicy(**merged.model_dump())


def breaker_store(settings: TierflowSettings) -> StateStore:
    """Where breaker states persist: PostgreSQL with ``[state] database_url`` (one shared
    store per process), else ``<state_dir>/breakers.sqlite``."""
    state = settings.state
    if state.url:
        from tierflow.resilience.postgres import shared_store

        return shared_store(state.url, state.connect_timeout_s)
    return BreakerStore.in_dir(settings.state_dir)


def breaker_for(
    settings: TierflowSettings, backend_id: str, store: StateStore | None = None
) -> CircuitBreaker:
    """The breaker of one configured backend, persisted where :func:`breaker_store` says."""
    base = settings.resilience.breaker
    own = settings.resilience.backends.get(backend_id)
    if own is not None and own.breaker is not None:
        base = base.model_copy(update=own.breaker.model_dump(exclude_unset=True))
    return CircuitBreaker(
        backend_id,
        BreakerPolicy(**base.model_dump()),
        store=store or breaker_store(settings),
    )
