"""Tiers: a named, ordered chain of backends, and the walk along it.

``Tier.ainvoke`` tries each backend in order, and the resilience layers
(:mod:`tierflow.resilience`) sit around each step of the walk:

- residency first: a sensitive call (or a ``local_only`` tier) skips every backend not
  marked local, without a call; if no local backend can answer it stops with
  :class:`~tierflow.resilience.ResidencyExhausted`;
- a backend with no key is ``unavailable``; one whose circuit breaker is open is
  ``breaker_open``; both are skipped without any network I/O;
- otherwise the backend is called under its retry policy (retries, backoff, Retry-After,
  a deadline), the run's budget is asked before every request, and the breaker hears
  every outcome;
- a failure moves the chain on; the conversation is sent provider-neutral (tool-call ids),
  and a stream that broke mid-answer is announced before the next backend streams; with
  no backend left, the longest broken stream is returned, marked partial.

Every backend lands in the result as one :class:`~tierflow.record.Attempt` (with its
retries), so the run record can say which backend answered and why the others did not.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.utils.function_calling import convert_to_openai_function
from pydantic import BaseModel, ValidationError

from tierflow._resilience_request import BackendRequest, usage_of
from tierflow.backends import Backend, build_backend
from tierflow.errors import BackendUnavailable, ConfigError, TierExhausted
from tierflow.record import Attempt, Usage
from tierflow.resilience import (
    PARTIAL_MARK,
    ChainExhausted,
    Failure,
    ResidencyExhausted,
    RetryPolicy,
    RetryResult,
    StreamWatch,
    call_with_retry,
    classify,
    normalise_messages,
    tier_retry_policy,
)
from tierflow.settings import Price, TierflowSettings
from tierflow.telemetry import trace_fallback

T = TypeVar("T", bound=BaseModel)


class CallPlan(Protocol):
    """How to ask one backend for one turn, and how to read its answer.

    ``prepare`` may rewrite the messages and add call arguments per backend (e.g. a JSON
    schema for a local backend, native ``tools`` for a hosted one); ``parse`` turns the
    answer into a value and raises ``ValueError`` if it is unusable, which moves the chain on.
    """

    def prepare(
        self, backend: Backend, messages: Sequence[BaseMessage]
    ) -> tuple[list[BaseMessage], dict[str, Any]]: ...

    def parse(self, backend: Backend, message: AIMessage) -> Any: ...


@dataclass(frozen=True)
class StructuredOutput:
    """The plan for a pydantic output type: a strict JSON schema on every backend."""

    output_type: type[BaseModel]

    def prepare(
        self, backend: Backend, messages: Sequence[BaseMessage]
    ) -> tuple[list[BaseMessage], dict[str, Any]]:
        return list(messages), {"response_format": strict_schema(self.output_type)}

    def parse(self, backend: Backend, message: AIMessage) -> BaseModel:
        return parse_structured(message, self.output_type)


@dataclass(frozen=True, kw_only=True)
class TierResult:
    """A successful call: the message, who answered, and every attempt on the way."""

    message: AIMessage
    backend: Backend
    attempts: list[Attempt]
    usage: Usage
    parsed: Any = None
    #: The answer is what a broken stream delivered; no backend was left to finish it.
    partial: bool = False

    @property
    def fallback_from(self) -> str | None:
        first = self.attempts[0].backend
        return first if first != self.backend.id else None

    @property
    def fallback_reason(self) -> str | None:
        failed = [a for a in self.attempts if a.outcome != "ok"]
        if not failed:
            return None
        return "; ".join(f"{a.backend}: {a.reason}" for a in failed)


@functools.lru_cache(maxsize=256)
def strict_schema(output_type: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI ``response_format`` for a pydantic model, strict mode.

    Used for every tier: on a local llama.cpp/vLLM server it becomes a grammar that
    constrains decoding, which is what makes a 0.5B model emit valid structure.
    """
    fn = convert_to_openai_function(output_type, strict=True)
    return {
        "type": "json_schema",
        "json_schema": {"name": fn["name"], "schema": fn["parameters"], "strict": True},
    }


def parse_structured(message: AIMessage, output_type: type[T]) -> T:
    """Validate a model's JSON answer, tolerating a Markdown fence around it."""
    text = message.text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    return output_type.model_validate_json(text)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


@dataclass(kw_only=True)
class Tier:
    """A named chain of backends. ``local_only`` pins it to backends marked local.

    ``retry`` is this tier's :class:`~tierflow.resilience.RetryPolicy` (over each
    backend's own); breakers belong to the backends (``Backend.breaker``).
    """

    name: str
    backends: Sequence[Backend]
    local_only: bool = False
    prices: Mapping[str, Price] = field(default_factory=dict)
    retry: RetryPolicy | None = None

    async def ainvoke(
        self,
        messages: Sequence[BaseMessage],
        *,
        output_type: type[BaseModel] | None = None,
        plan: CallPlan | None = None,
        sensitive: bool = False,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> TierResult:
        """Call the first backend that works. Raises :class:`TierExhausted` if none does.

        ``output_type`` asks for a validated pydantic value (``result.parsed``); ``plan``
        is the general form (see :class:`CallPlan`). ``retry`` overrides the tier's and the
        backends' retry policies for this call. ``BudgetExceeded`` from the run's budget
        (checked before every request) propagates: it is not a backend failure.
        """
        attempts: list[Attempt] = []
        config = kwargs.pop("config", None)  # the caller's; the stream watch joins it
        if output_type is not None:
            plan = StructuredOutput(output_type)
        neutral = normalise_messages(messages)
        watch = StreamWatch()
        for index, backend in enumerate(self.backends):
            trace_fallback(self, attempts, backend, sensitive)
            why = self._forbidden(backend, sensitive)
            if why is not None:
                attempts.append(Attempt(backend=backend.id, outcome="skipped", reason=why))
                continue
            breaker = backend.breaker
            permit = breaker.acquire() if breaker is not None else None
            if breaker is not None and permit is None:  # no I/O for a backend known dead
                attempts.append(
                    Attempt(
                        backend=backend.id, outcome="breaker_open", reason=breaker.skip_reason()
                    )
                )
                continue
            started = time.perf_counter()
            try:
                # Built up front by the Runner; the embedded server may start here.
                model = await backend.ready()
                sent, extra = plan.prepare(backend, neutral) if plan else (list(neutral), {})
            except BackendUnavailable as exc:
                if breaker is not None:
                    breaker.release(permit)
                reason = str(exc).removeprefix(f"{backend.id}: ")
                attempts.append(Attempt(backend=backend.id, outcome="unavailable", reason=reason))
                continue
            except Exception as exc:  # e.g. the embedded model file is missing
                if breaker is not None:
                    breaker.release(permit)
                attempts.append(_failed(backend, classify(exc), started))
                continue
            price = self.prices.get(backend.id)
            request = BackendRequest(
                tier=self.name,
                backend=backend,
                model=model,
                sent=sent,
                kwargs={**kwargs, **extra},
                config=config,
                price=price,
                watch=watch,
                can_fall_back=functools.partial(self._can_fall_back, index, sensitive),
            )
            outcome = await call_with_retry(
                request,
                backend=backend.id,
                policy=retry or self.retry or backend.retry or RetryPolicy.single(),
                breaker=breaker,
                permit=permit,
                can_fall_back=request.can_fall_back,
            )
            if not outcome.ok or outcome.value is None:
                attempts.append(_from_retry(backend, outcome, started))
                continue
            message = outcome.value
            try:
                parsed = plan.parse(backend, message) if plan else None
            except (ValidationError, ValueError) as exc:  # JSONDecodeError is a ValueError
                attempts.append(_failed(backend, classify(exc), started, "invalid output"))
                watch.broke("invalid output", partial=False)  # the next one streams anew
                continue
            attempts.append(_from_retry(backend, outcome, started))
            return TierResult(
                message=message,
                backend=backend,
                attempts=attempts,
                usage=usage_of(message, price),
                parsed=parsed,
            )
        partial = self._partial(watch, attempts, plan)
        if partial is not None:
            return partial
        trace_fallback(self, attempts, None, sensitive)
        raise self._exhausted(attempts, sensitive)

    def _forbidden(self, backend: Backend, sensitive: bool) -> str | None:
        """Why residency keeps this call away from ``backend`` (``None``: it may go)."""
        if (self.local_only or sensitive) and not backend.local:
            return "residency: " + ("tier is local_only" if self.local_only else "sensitive data")
        return None

    def _can_fall_back(self, index: int, sensitive: bool) -> bool:
        """Whether a backend after ``index`` could take this call now (no I/O)."""
        return any(
            self._forbidden(b, sensitive) is None
            and b.unavailable_reason() is None
            and (b.breaker is None or b.breaker.would_allow())
            for b in self.backends[index + 1 :]
        )

    def _partial(
        self, watch: StreamWatch, attempts: list[Attempt], plan: CallPlan | None
    ) -> TierResult | None:
        """With no backend left, the last stream that broke (what the listener shows after
        the last ``stream_restarted``), marked partial."""
        if watch.broken is None:
            return None
        backend_id, text = watch.broken
        backend = next(b for b in self.backends if b.id == backend_id)
        message = AIMessage(content=text + PARTIAL_MARK.format(backend=backend_id))
        try:
            parsed = plan.parse(backend, message) if plan else None
        except (ValidationError, ValueError):
            return None  # half a JSON value is no answer
        i = max(i for i, a in enumerate(attempts) if a.backend == backend_id)
        attempts[i] = attempts[i].model_copy(update={"outcome": "partial"})
        return TierResult(
            message=message,
            backend=backend,
            attempts=attempts,
            usage=Usage(),
            parsed=parsed,
            partial=True,
        )

    def _exhausted(self, attempts: list[Attempt], sensitive: bool) -> TierExhausted:
        if any(a.outcome == "skipped" for a in attempts):
            why = "the tier is local_only" if self.local_only else "the data is sensitive"
            return ResidencyExhausted(self.name, attempts, why)
        return ChainExhausted(self.name, attempts)


def _failed(
    backend: Backend, failure: Failure, started: float, prefix: str | None = None
) -> Attempt:
    return Attempt(
        backend=backend.id,
        outcome="failed",
        reason=f"{prefix}: {failure.reason}" if prefix else failure.reason,
        error_type=failure.error_type,
        failure=failure.kind.value if prefix is None else "invalid_output",
        duration_ms=_ms(started),
    )


def _from_retry(backend: Backend, outcome: RetryResult[AIMessage], started: float) -> Attempt:
    """The record of one backend's requests: ok, or the last failure and why it stopped."""
    failure = None if outcome.ok else outcome.failure
    return Attempt(
        backend=backend.id,
        outcome="ok" if outcome.ok else "failed",
        reason=failure.reason if failure else None,
        error_type=failure.error_type if failure else None,
        failure=failure.kind.value if failure else None,
        status_code=failure.status_code if failure else None,
        duration_ms=_ms(started),
        retries=len(outcome.retry_reasons),
        retry_reasons=outcome.retry_reasons,
        retry_delays_s=outcome.retry_delays_s,
        gave_up=outcome.gave_up,
        breaker=outcome.breaker.value if outcome.breaker else None,
    )


class TierSet(Mapping[str, Tier]):
    """The tiers a graph can use, by name; built from settings, overridable in code."""

    def __init__(self, tiers: Mapping[str, Tier]) -> None:
        self._tiers = dict(tiers)

    @classmethod
    def from_settings(
        cls, settings: TierflowSettings, overrides: Mapping[str, Tier] | None = None
    ) -> TierSet:
        prices = dict(settings.prices)
        shared: dict[str, Backend] = {}  # one Backend (and client) per id across tiers
        tiers: dict[str, Tier] = {}
        for name, cfg in settings.tiers.items():
            for ref in cfg.backends:
                if ref.id not in shared:
                    shared[ref.id] = build_backend(ref, settings)
            backends = [shared[ref.id] for ref in cfg.backends]
            tiers[name] = Tier(
                name=name,
                backends=backends,
                local_only=cfg.local_only,
                prices=prices,
                retry=tier_retry_policy(settings, cfg),
            )
        tiers.update(overrides or {})
        return cls(tiers)

    def __getitem__(self, name: str) -> Tier:
        try:
            return self._tiers[name]
        except KeyError:
            known = ", ".join(sorted(self._tiers))
            raise ConfigError(f"unknown tier '{name}' (configured: {known})") from None

    def __iter__(self) -> Any:
        return iter(self._tiers)

    def __len__(self) -> int:
        return len(self._tiers)

    def backends(self) -> list[Backend]:
        seen: dict[str, Backend] = {}
        for tier in self._tiers.values():
            for backend in tier.backends:
                seen.setdefault(backend.id, backend)
        return list(seen.values())

    def build_clients(self) -> None:
        """Build the client of every usable backend now (no network I/O: the embedded
        server still starts on its first request), once, instead of on a first call.

        A backend whose client cannot be built is left for its first call, which
        records why as a failed attempt.
        """
        for tier in self._tiers.values():
            for backend in tier.backends:
                if backend.built_model() is None and backend.unavailable_reason() is None:
                    with contextlib.suppress(Exception):
                        backend.chat_model()
