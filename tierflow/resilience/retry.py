"""Retries of one backend: the policy and the loop that applies it (private).

Import these names from :mod:`tierflow.resilience`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from tierflow.budget import BudgetExceeded
from tierflow.resilience.breaker import BreakerState, CircuitBreaker, Permit
from tierflow.resilience.classify import Failure, classify
from tierflow.telemetry import record_retry

T = TypeVar("T")

_rng = random.Random()


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often, and how patiently, one backend is asked again before the chain moves on.

    - ``max_attempts``: requests to the backend per call, the first included (1: no retry).
    - Backoff is exponential with full jitter: before retry *n* wait a uniform random time
      in ``[0, min(backoff_max_s, backoff_base_s * 2**(n-1))]``, so clients that failed
      together do not come back together.
    - ``Retry-After`` (seconds or an HTTP date, or OpenAI's ``retry-after-ms``) is honoured
      exactly; if it asks for more than ``max_retry_after_s`` the backend is not waited
      for: the chain falls back instead.
    - ``deadline_s`` bounds all attempts of one call together (a stalled connection is
      also cut by the client's read timeout, ``[resilience] request_timeout_s``). A
      deadline of the caller (an ``asyncio.timeout`` around the call) cancels everything.
    - ``with_fallback``: what to do with a retryable failure while a later backend of the
      chain can still take the call. ``"retry"`` retries this one first (keeps the
      conversation on the preferred model); ``"retry_after"`` (default) retries only when
      the server asked for it with a short ``Retry-After`` and otherwise fails over at
      once, since a healthy next backend answers sooner than a backoff does. The last
      backend that can take the call always gets every attempt.

    Only what can succeed on a second try is retried: connect errors, timeouts, dropped
    connections and cut streams, HTTP 408/409/429/5xx. Never 400/401/403/404/422. A
    malformed body, an empty choice list or invalid tool-call JSON are failures of the
    backend that are *not* retried: a server that just produced garbage for this request
    tends to do so again, and the next backend is the better bet.
    """

    max_attempts: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    max_retry_after_s: float = 20.0
    deadline_s: float | None = 120.0
    with_fallback: Literal["retry", "retry_after"] = "retry_after"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if min(self.backoff_base_s, self.backoff_max_s, self.max_retry_after_s) < 0:
            raise ValueError("retry delays must be >= 0")

    @classmethod
    def single(cls) -> RetryPolicy:
        """One request, no retry, no deadline of its own (tiers built in code, tests)."""
        return cls(max_attempts=1, deadline_s=None)

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``retry`` (1-based), full jitter."""
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, retry - 1))
        return (rng or _rng).uniform(0.0, cap)

    def delay(self, retry: int, failure: Failure, rng: random.Random | None = None) -> float | None:
        """The wait before retry ``retry`` after ``failure``; ``None``: do not wait for it."""
        if failure.retry_after_s is not None:
            if failure.retry_after_s > self.max_retry_after_s:
                return None
            return failure.retry_after_s
        return self.backoff(retry, rng)


@dataclass(kw_only=True)
class RetryResult(Generic[T]):
    """How the requests to one backend ended: a value, or the last failure and why."""

    value: T | None = None
    ok: bool = False
    failure: Failure | None = None
    error: BaseException | None = None
    retry_reasons: list[str] = field(default_factory=list)
    retry_delays_s: list[float] = field(default_factory=list)
    gave_up: str | None = None
    breaker: BreakerState | None = None  # set when these requests changed the breaker


async def call_with_retry(
    request: Callable[[int], Awaitable[T]],
    *,
    backend: str,
    policy: RetryPolicy,
    breaker: CircuitBreaker | None = None,
    permit: Permit | None = None,
    can_fall_back: Callable[[], bool] = lambda: False,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> RetryResult[T]:
    """Call ``request(attempt)`` until it succeeds or ``policy`` says stop.

    Every failure is classified (:func:`classify`) and reported to ``breaker``; once the
    breaker is no longer closed, retrying stops. :class:`BudgetExceeded` and cancellation
    propagate untouched (the permit is released, the breaker unchanged).
    """
    out: RetryResult[T] = RetryResult()
    loop = asyncio.get_running_loop()
    deadline = None if policy.deadline_s is None else loop.time() + policy.deadline_s
    attempt = 0
    try:
        while True:
            attempt += 1
            remaining = None if deadline is None else deadline - loop.time()
            try:
                async with asyncio.timeout(remaining) as scope:
                    value = await request(attempt)
            except BudgetExceeded:
                raise
            except Exception as exc:  # every provider error is classified, none escapes
                failure = classify(exc)
                if isinstance(exc, TimeoutError) and scope.expired():
                    failure = Failure(
                        kind=failure.kind,
                        reason=f"deadline: no answer within {policy.deadline_s:g}s",
                        error_type="TimeoutError",
                    )
                out.failure, out.error = failure, exc
                changed = breaker.record_failure(permit, failure) if breaker else None
                out.breaker = changed or out.breaker
                why, wait = _next_step(policy, attempt, failure, breaker, can_fall_back, rng)
                if wait is not None and deadline is not None and wait >= deadline - loop.time():
                    why, wait = f"deadline: a {wait:.2f}s wait would pass it", None
                if wait is None:
                    out.gave_up = why
                    return out
                out.retry_reasons.append(failure.reason)
                out.retry_delays_s.append(round(wait, 3))
                record_retry(backend, attempt + 1, failure.reason, wait)
                await sleep(wait)
                if breaker is not None and permit is not None and not permit.probe:
                    permit = breaker.acquire()  # the breaker may have opened meanwhile
                    if permit is None:
                        out.gave_up = "breaker opened while waiting to retry"
                        return out
                continue
            if breaker is not None:
                out.breaker = breaker.record_success(permit) or out.breaker
            out.value, out.ok = value, True
            return out
    finally:
        if breaker is not None:
            breaker.release(permit)  # cancelled or budget spent: no verdict on health


def _next_step(
    policy: RetryPolicy,
    attempt: int,
    failure: Failure,
    breaker: CircuitBreaker | None,
    can_fall_back: Callable[[], bool],
    rng: random.Random | None,
) -> tuple[str, float | None]:
    """Why to stop, or the wait before the next attempt."""
    if not failure.retryable:
        return f"not retryable ({failure.kind.value})", None
    if breaker is not None and breaker.state is not BreakerState.CLOSED:
        return "breaker opened", None
    if attempt >= policy.max_attempts:
        return f"retries spent ({attempt} attempts)", None
    wait = policy.delay(attempt, failure, rng)
    if wait is None:
        return (
            f"Retry-After {failure.retry_after_s:g}s exceeds the "
            f"{policy.max_retry_after_s:g}s maximum"
        ), None
    asked = failure.retry_after_s is not None
    if policy.with_fallback == "retry_after" and not asked and can_fall_back():
        return "failing over: another backend can take the call", None
    return "", wait
