"""Tiers: a named, ordered chain of backends, and the fallback along it.

``Tier.ainvoke`` tries each backend in order. A backend that is unavailable (no key,
residency forbids it) is skipped without a network call; one that fails is recorded and
the next is tried. Every attempt lands in the result, so the run record can say which
backend answered and why the others did not. Retries of the same backend and circuit
breakers are separate layers (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.utils.function_calling import convert_to_openai_function
from pydantic import BaseModel, ValidationError

from tierflow.backends import Backend, build_backend
from tierflow.errors import BackendUnavailable, ConfigError, TierExhausted
from tierflow.record import Attempt, Usage
from tierflow.settings import Price, TierflowSettings
from tierflow.telemetry import trace_fallback, traced_chat

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


def _usage(message: AIMessage, price: Price | None) -> Usage:
    meta = message.usage_metadata
    tokens_in = int(meta["input_tokens"]) if meta else 0
    tokens_out = int(meta["output_tokens"]) if meta else 0
    cost = 0.0
    if price is not None:
        cost = (tokens_in * price.input + tokens_out * price.output) / 1_000_000
    return Usage(input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=round(cost, 8))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(kw_only=True)
class Tier:
    """A named chain of backends. ``local_only`` pins it to backends marked local."""

    name: str
    backends: Sequence[Backend]
    local_only: bool = False
    prices: Mapping[str, Price] = field(default_factory=dict)

    async def ainvoke(
        self,
        messages: Sequence[BaseMessage],
        *,
        output_type: type[BaseModel] | None = None,
        plan: CallPlan | None = None,
        sensitive: bool = False,
        **kwargs: Any,
    ) -> TierResult:
        """Call the first backend that works. Raises :class:`TierExhausted` if none does.

        ``output_type`` asks for a validated pydantic value (``result.parsed``); ``plan``
        is the general form (see :class:`CallPlan`).
        """
        attempts: list[Attempt] = []
        if output_type is not None:
            plan = StructuredOutput(output_type)
        for backend in self.backends:
            trace_fallback(self, attempts, backend, sensitive)
            if (self.local_only or sensitive) and not backend.local:
                why = "tier is local_only" if self.local_only else "sensitive data"
                attempts.append(
                    Attempt(backend=backend.id, outcome="skipped", reason=f"residency: {why}")
                )
                continue
            started = time.perf_counter()
            try:
                # Building may start the embedded server (seconds): keep the loop free.
                model = backend.built_model()
                if model is None:
                    model = await asyncio.to_thread(backend.chat_model)
            except BackendUnavailable as exc:
                reason = str(exc).removeprefix(f"{backend.id}: ")
                attempts.append(Attempt(backend=backend.id, outcome="unavailable", reason=reason))
                continue
            except Exception as exc:
                attempts.append(_failed(backend, exc, started))
                continue
            try:
                sent, extra = plan.prepare(backend, messages) if plan else (list(messages), {})
                message = await traced_chat(
                    self.name, backend, model.ainvoke(sent, **{**kwargs, **extra}), sent
                )
                if not isinstance(message, AIMessage):
                    raise TypeError(f"expected an AIMessage, got {type(message).__name__}")
            except Exception as exc:  # any provider error moves the chain on
                attempts.append(_failed(backend, exc, started))
                continue
            try:
                parsed = plan.parse(backend, message) if plan else None
            except (ValidationError, ValueError) as exc:  # JSONDecodeError is a ValueError
                attempts.append(_failed(backend, exc, started, "invalid output"))
                continue
            attempts.append(
                Attempt(
                    backend=backend.id,
                    outcome="ok",
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            )
            return TierResult(
                message=message,
                backend=backend,
                attempts=attempts,
                usage=_usage(message, self.prices.get(backend.id)),
                parsed=parsed,
            )
        trace_fallback(self, attempts, None, sensitive)
        raise TierExhausted(self.name, [(a.backend, a.reason or a.outcome) for a in attempts])


def _failed(
    backend: Backend, exc: BaseException, started: float, prefix: str | None = None
) -> Attempt:
    reason = _reason(exc)
    return Attempt(
        backend=backend.id,
        outcome="failed",
        reason=f"{prefix}: {reason}" if prefix else reason,
        error_type=type(exc).__name__,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
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
            backends = [
                shared.setdefault(ref.id, build_backend(ref, settings)) for ref in cfg.backends
            ]
            tiers[name] = Tier(
                name=name, backends=backends, local_only=cfg.local_only, prices=prices
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
