"""Tiers: a named, ordered chain of backends, and the walk along it.

A :class:`Tier` is a LangChain chat model: ``tier.ainvoke(messages)``,
``tier.bind_tools([...])`` and ``tier.with_structured_output(Model)`` walk the chain
like any other call, and the answer's ``response_metadata["tierflow"]`` says which
backend answered and holds every attempt. tierflow's own nodes call
:meth:`Tier.acall`, which returns a :class:`TierResult` (message, backend, attempts,
usage, parsed value).

``Tier.acall`` tries each backend in order, and the resilience layers
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol, TypeVar

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import (
    convert_to_openai_function,
    convert_to_openai_tool,
)
from pydantic import BaseModel, Field, ValidationError

from tierflow.errors import BackendUnavailable, ConfigError, TierExhausted
from tierflow.models.backends import Backend, build_backend
from tierflow.models.request import BackendRequest, usage_of
from tierflow.record import Attempt, Usage
from tierflow.resilience import (
    PARTIAL_MARK,
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


@dataclass(frozen=True)
class NativeTools:
    """The plan of :meth:`Tier.bind_tools`: the tools in each backend's own native form.

    Each backend's LangChain client formats them (``bind_tools`` of ChatOpenAI,
    ChatMistralAI...), so ``tool_choice`` is translated per provider (``"any"`` becomes
    OpenAI's ``"required"``); a client without ``bind_tools`` gets OpenAI-shaped tools.
    """

    tools: tuple[dict[str, Any], ...]
    tool_choice: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    def prepare(
        self, backend: Backend, messages: Sequence[BaseMessage]
    ) -> tuple[list[BaseMessage], dict[str, Any]]:
        try:
            bound = backend.chat_model().bind_tools(
                list(self.tools), tool_choice=self.tool_choice, **dict(self.extra)
            )
        except NotImplementedError:
            choice = {"tool_choice": self.tool_choice} if self.tool_choice else {}
            return list(messages), {"tools": list(self.tools), **choice, **dict(self.extra)}
        return list(messages), dict(getattr(bound, "kwargs", {}))

    def parse(self, backend: Backend, message: AIMessage) -> AIMessage:
        return message


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

    def tagged_message(self, tier: str) -> AIMessage:
        """The message with ``response_metadata["tierflow"]``: the tier, the backend that
        answered, whether the answer is partial, and every attempt (as JSON, read back
        with ``Attempt.model_validate``)."""
        record = {
            "tier": tier,
            "backend": self.backend.id,
            "partial": self.partial,
            "attempts": [a.model_dump(mode="json", exclude_defaults=True) for a in self.attempts],
        }
        meta = {**self.message.response_metadata, "tierflow": record}
        return self.message.model_copy(update={"response_metadata": meta})


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


_RESIDENCY_WHY = {
    "tier is local_only": "the tier is local_only",
    "sensitive data": "the data is sensitive",
    "caller is local_only": "the caller is local_only",
}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


class Tier(BaseChatModel):
    """A named chain of backends, and a LangChain chat model over it.

    ``local_only`` pins it to backends marked local. ``retry`` is this tier's
    :class:`~tierflow.resilience.RetryPolicy` (over each backend's own); breakers belong
    to the backends (``Backend.breaker``).

    As a chat model (``ainvoke``, ``astream``, ``bind_tools``, ``with_structured_output``)
    every call walks the chain; call-time or bound keywords ``sensitive``, ``retry``,
    ``plan`` and ``output_type`` mean what they mean for :meth:`acall`::

        reply = await tiers["reasoning"].bind_tools([get_weather]).ainvoke(messages)
        reply.tool_calls                                    # from whichever backend answered
        reply.response_metadata["tierflow"]["backend"]      # e.g. "vllm:qwen"
        reply.response_metadata["tierflow"]["attempts"]     # each backend, tried or skipped

    When no backend answers, :class:`TierExhausted` (with every attempt) is raised, as
    from :meth:`acall`. It is async only (the backends' clients are); ``astream`` yields
    the whole answer once, while the tokens a backend streams reach LangGraph's
    ``messages`` stream.
    """

    name: str
    backends: Sequence[Backend]
    local_only: bool = False
    prices: Mapping[str, Price] = Field(default_factory=dict)
    retry: RetryPolicy | None = None

    @property
    def _llm_type(self) -> str:
        return "tierflow-tier"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError(
            f"tier '{self.name}' is async only: use ainvoke/astream (or Tier.acall)"
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if stop is not None:
            kwargs["stop"] = stop
        if run_manager is not None:  # the backends' runs become children of this one
            kwargs["config"] = {"callbacks": _child_callbacks(run_manager)}
        result = await self.acall(messages, **kwargs)
        return ChatResult(generations=[ChatGeneration(message=result.tagged_message(self.name))])

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This tier with ``tools`` offered to whichever backend answers, natively.

        Takes what LangChain's ``bind_tools`` takes, plus tierflow :class:`Tool` values.
        Backends in ``constrained`` tool mode get the tools natively too, so their server
        must support tool calls (vLLM with a tool parser, llama.cpp with ``--jinja``);
        tierflow's agents ask those backends under a JSON schema instead.
        """
        specs = tuple(_tool_spec(t) for t in tools)
        plan = NativeTools(specs, tool_choice, tuple(kwargs.items()))
        return self.bind(plan=plan)

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """For a pydantic model: the tier's strict JSON schema on every backend, and an
        answer that does not validate moves the chain on. Other schemas: LangChain's
        tool-calling implementation over :meth:`bind_tools`."""
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        model: type[BaseModel] = schema
        bound = self.bind(
            output_type=model,
            ls_structured_output_format={"kwargs": {"method": "json_schema"}, "schema": model},
        )

        def parse(message: AIMessage) -> BaseModel:  # validated already by the chain walk
            return parse_structured(message, model)

        parser = RunnableLambda(parse)
        if not include_raw:
            return bound | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        return RunnableMap(raw=bound) | parsed

    async def acall(
        self,
        messages: Sequence[BaseMessage],
        *,
        output_type: type[BaseModel] | None = None,
        plan: CallPlan | None = None,
        sensitive: bool = False,
        local_only: bool = False,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> TierResult:
        """Call the first backend that works. Raises :class:`TierExhausted` if none does.

        Residency: ``sensitive`` (the data was classified sensitive) and ``local_only``
        (the caller, e.g. an ``Agent(local_only=True)``, is pinned to local backends) both
        keep the call on backends marked local; the records say which applied.

        ``output_type`` asks for a validated pydantic value (``result.parsed``); ``plan``
        is the general form (see :class:`CallPlan`). ``retry`` overrides the tier's and the
        backends' retry policies for this call. ``BudgetExceeded`` from the run's budget
        (checked before every request) propagates: it is not a backend failure.
        """
        attempts: list[Attempt] = []
        pin = self._pin(sensitive, local_only)
        config = kwargs.pop("config", None)  # the caller's; the stream watch joins it
        if output_type is not None:
            plan = StructuredOutput(output_type)
        neutral = normalise_messages(messages)
        watch = StreamWatch()
        for index, backend in enumerate(self.backends):
            trace_fallback(self, attempts, backend, pin)
            why = self._forbidden(backend, pin)
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
                can_fall_back=functools.partial(self._can_fall_back, index, pin),
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
        trace_fallback(self, attempts, None, pin)
        raise self._exhausted(attempts, pin)

    def _pin(self, sensitive: bool, local_only: bool) -> str | None:
        """Why this call may only go to local backends, if it may."""
        if self.local_only:
            return "tier is local_only"
        if sensitive:
            return "sensitive data"
        if local_only:
            return "caller is local_only"
        return None

    def _forbidden(self, backend: Backend, pin: str | None) -> str | None:
        """Why residency keeps this call away from ``backend`` (``None``: it may go)."""
        if pin is not None and not backend.local:
            return f"residency: {pin}"
        return None

    def _can_fall_back(self, index: int, pin: str | None) -> bool:
        """Whether a backend after ``index`` could take this call now (no I/O)."""
        return any(
            self._forbidden(b, pin) is None
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

    def _exhausted(self, attempts: list[Attempt], pin: str | None) -> TierExhausted:
        if pin is not None and any(a.outcome == "skipped" for a in attempts):
            return ResidencyExhausted(self.name, attempts, _RESIDENCY_WHY[pin], pin=pin)
        return TierExhausted(self.name, attempts)


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


def _child_callbacks(run: AsyncCallbackManagerForLLMRun) -> AsyncCallbackManager:
    """Callbacks for runs nested in ``run`` (an LLM run manager has no ``get_child``)."""
    return AsyncCallbackManager(
        handlers=run.inheritable_handlers,
        inheritable_handlers=run.inheritable_handlers,
        parent_run_id=run.run_id,
        tags=run.inheritable_tags,
        inheritable_tags=run.inheritable_tags,
        metadata=run.inheritable_metadata,
        inheritable_metadata=run.inheritable_metadata,
    )


def _tool_spec(tool: Any) -> dict[str, Any]:
    """An OpenAI ``tools`` entry for a tierflow Tool (its own strict spec) or anything
    LangChain's ``convert_to_openai_tool`` takes."""
    spec = getattr(tool, "spec", None)
    if callable(spec) and not isinstance(tool, type | BaseTool):
        return dict(spec())
    return convert_to_openai_tool(tool)


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
