"""Tool declaration: a typed function becomes a :class:`Tool` with a strict JSON schema.

::

    @tool(timeout_s=5)
    def get_weather(city: str, days: int = 1) -> dict[str, object]:
        \"\"\"Forecast for a city.

        Args:
            city: City name, e.g. "Paris".
            days: How many days ahead (1-7).
        \"\"\"
        ...

The schema comes from the signature and the Google-style docstring (langchain-core's
parser). Arguments are validated before the call; a bad argument, a timeout, a
:class:`ToolError` or any other exception becomes a :class:`ToolOutcome` with
``ok=False`` and a message the model can act on. Nothing a tool does raises into the
graph.

A parameter annotated :class:`ToolContext` (any name) is not an argument the model
sees or sets: the caller supplies it (the run's thread id, sensitive flag, settings and
the builder's own ``deps``)::

    @tool
    async def my_orders(limit: int, ctx: ToolContext) -> list[str]:
        \"\"\"The current user's latest orders.\"\"\"
        return await ctx.deps.orders(ctx.thread_id, limit)
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import time
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from langchain_core.tools.base import FILTERED_ARGS, create_schema_from_function
from langchain_core.utils.function_calling import convert_to_openai_function
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

if TYPE_CHECKING:
    from tierflow.settings import TierflowSettings

#: Error types that mean "the service behind the tool is not there", not "bad call".
UNAVAILABLE = frozenset({"search_unavailable", "sandbox_unavailable", "unavailable", "timeout"})


class ToolError(Exception):
    """Raise from a tool for an expected failure; ``type`` and the message reach the model."""

    def __init__(self, message: str, *, type: str = "tool_error") -> None:
        super().__init__(message)
        self.type = type


class ToolErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    message: str


class ToolOutcome(BaseModel):
    """What a tool call produced: the ``tierflow tool --json`` contract."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    output: Any = None
    error: ToolErrorInfo | None = None
    truncated: bool = False
    duration_ms: float = 0.0
    #: Set when a configured alternative answered (see :meth:`Tool.with_fallback`).
    answered_by: str | None = None
    fallback_reason: str | None = None

    @classmethod
    def failure(cls, type: str, message: str, duration_ms: float = 0.0) -> ToolOutcome:
        return cls(
            ok=False, error=ToolErrorInfo(type=type, message=message), duration_ms=duration_ms
        )

    def for_model(self) -> str:
        """The text the model reads back: the output as JSON, or the error."""
        if self.ok:
            text = (
                self.output
                if isinstance(self.output, str)
                else json.dumps(self.output, default=str)
            )
            if self.answered_by:
                text = f"[answered by {self.answered_by}: {self.fallback_reason}]\n{text}"
            return text + ("\n[output truncated]" if self.truncated else "")
        assert self.error is not None
        return f"ERROR ({self.error.type}): {self.error.message}"


@dataclass(frozen=True, kw_only=True)
class ToolContext:
    """What a tool may know about the run calling it; declare a parameter of this type.

    Filled in by the agent's tools node: ``thread_id`` from the LangGraph config,
    ``sensitive`` from the run's state (residency: keep such data local), ``deps`` from
    ``config["configurable"]["deps"]`` (the builder's own clients, user, ...),
    ``settings`` from ``config["configurable"]["settings"]``. A tool run without a
    context (``tierflow tool``, tests) gets this default, empty one.
    """

    thread_id: str | None = None
    sensitive: bool = False
    settings: TierflowSettings | None = None
    deps: Any = None


@dataclass(frozen=True, kw_only=True)
class ToolPolicy:
    """Per-tool limits."""

    timeout_s: float = 30.0
    max_output_chars: int = 16_000
    requires_approval: bool = False  # pause the run (LangGraph interrupt) before calling


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A callable the model may invoke. Build with :func:`tool`."""

    name: str
    description: str
    args_model: type[BaseModel]
    fn: Callable[..., Any]
    policy: ToolPolicy = field(default_factory=ToolPolicy)
    #: A hand-written JSON schema, for tools declared by schema (see from_json_schema).
    schema: dict[str, Any] | None = None
    #: Another tool to call when this one fails with one of ``fallback_on`` error types
    #: (see :meth:`with_fallback`).
    fallback: Tool | None = None
    fallback_on: frozenset[str] = frozenset()
    #: The name of ``fn``'s :class:`ToolContext` parameter, if it declares one.
    context_param: str | None = None

    def with_fallback(self, alternative: Tool, on: Collection[str] = UNAVAILABLE) -> Tool:
        """This tool, answering through ``alternative`` when it fails with an error type in
        ``on`` (by default: the backend behind it is unavailable), e.g. web search falling
        back to document retrieval. The model sees which tool answered and why."""
        return dataclasses.replace(self, fallback=alternative, fallback_on=frozenset(on))

    @classmethod
    def from_json_schema(
        cls,
        name: str,
        description: str,
        parameters: dict[str, Any],
        fn: Callable[..., Any],
        policy: ToolPolicy | None = None,
    ) -> Tool:
        """A tool whose schema comes from elsewhere (an API spec, a benchmark, MCP).

        Arguments are checked against the schema's required keys only; ``fn`` validates
        the rest.
        """
        required = set(parameters.get("required", []))
        fields: dict[str, Any] = {k: (Any, ...) for k in required}
        model = create_model(f"{name}_args", __config__=ConfigDict(extra="allow"), **fields)
        return cls(
            name=name,
            description=description,
            args_model=model,
            fn=fn,
            policy=policy or ToolPolicy(),
            schema=parameters,
        )

    @functools.cached_property
    def parameters(self) -> dict[str, Any]:
        """The strict JSON schema of the arguments."""
        if self.schema is not None:
            return dict(self.schema)
        fn = convert_to_openai_function(self.args_model, strict=True)
        return dict(fn["parameters"])

    def spec(self) -> dict[str, Any]:
        """The OpenAI/Mistral ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
                "strict": True,
            },
        }

    def validate_args(self, args: Any) -> dict[str, Any]:
        """Validated arguments, or a :class:`ToolError` saying what to fix."""
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolError(
                    f"arguments are not valid JSON: {exc}", type="invalid_arguments"
                ) from None
        if not isinstance(args, dict):
            raise ToolError("arguments must be a JSON object", type="invalid_arguments")
        try:
            model = self.args_model.model_validate(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            expected = ", ".join(self.parameters.get("properties", {}))
            raise ToolError(
                f"{problems} (expected arguments: {expected})", type="invalid_arguments"
            ) from None
        return (
            model.model_dump()
            if self.schema is not None
            else {k: getattr(model, k) for k in type(model).model_fields}
        )

    async def run(self, args: Any, context: ToolContext | None = None) -> ToolOutcome:
        """Validate, call with the timeout, cap the output. Never raises.

        ``context`` reaches a tool that declares a :class:`ToolContext` parameter (an
        empty one if ``None``); other tools ignore it.
        """
        outcome = await self._run(args, context)
        if outcome.ok or self.fallback is None or outcome.error is None:
            return outcome
        if outcome.error.type not in self.fallback_on:
            return outcome
        alt = self.fallback
        accepted = set(alt.parameters.get("properties", {}))
        given = args if isinstance(args, dict) else {}
        second = await alt.run({k: v for k, v in given.items() if k in accepted}, context)
        if not second.ok:
            return outcome  # the original error says more about what the model asked for
        return second.model_copy(
            update={
                "answered_by": alt.name,
                "fallback_reason": f"{self.name} failed ({outcome.error.type}: "
                f"{outcome.error.message[:200]})",
                "duration_ms": round(outcome.duration_ms + second.duration_ms, 2),
            }
        )

    async def _run(self, args: Any, context: ToolContext | None) -> ToolOutcome:
        started = time.perf_counter()

        def ms() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        try:
            kwargs = self.validate_args(args)
            if self.context_param is not None:
                kwargs[self.context_param] = context or ToolContext()
            async with asyncio.timeout(self.policy.timeout_s):
                if inspect.iscoroutinefunction(self.fn):
                    output = await self.fn(**kwargs)
                else:
                    output = await asyncio.to_thread(self.fn, **kwargs)
        except ToolError as exc:
            return ToolOutcome.failure(exc.type, str(exc), ms())
        except TimeoutError:
            return ToolOutcome.failure(
                "timeout", f"{self.name} took longer than {self.policy.timeout_s:g}s", ms()
            )
        except Exception as exc:  # a tool bug must not crash the run; the model reads it
            return ToolOutcome.failure(type(exc).__name__, str(exc) or type(exc).__name__, ms())
        return _capped(output, self.policy.max_output_chars, ms())


def _capped(output: Any, limit: int, duration_ms: float) -> ToolOutcome:
    text = output if isinstance(output, str) else json.dumps(output, default=str)
    if len(text) <= limit:
        return ToolOutcome(ok=True, output=output, duration_ms=duration_ms)
    return ToolOutcome(ok=True, output=text[:limit], truncated=True, duration_ms=duration_ms)


def _context_param(fn: Callable[..., Any]) -> str | None:
    """The name of ``fn``'s parameter annotated ``ToolContext`` (or ``ToolContext | None``)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: read the raw ones
        hints = {n: p.annotation for n, p in inspect.signature(fn).parameters.items()}
    for param in inspect.signature(fn).parameters:
        hint = hints.get(param)
        if isinstance(hint, str):  # unresolved: match the name ("ToolContext | None")
            options: tuple[Any, ...] = tuple(p.strip().split(".")[-1] for p in hint.split("|"))
        elif typing.get_origin(hint) in (typing.Union, types.UnionType):
            options = typing.get_args(hint)
        else:
            options = (hint,)
        if any(o is ToolContext or o == "ToolContext" for o in options):
            return param
    return None


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    timeout_s: float = 30.0,
    max_output_chars: int = 16_000,
    requires_approval: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout_s: float = 30.0,
    max_output_chars: int = 16_000,
    requires_approval: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed function (sync or async) with a docstring into a :class:`Tool`."""
    policy = ToolPolicy(
        timeout_s=timeout_s, max_output_chars=max_output_chars, requires_approval=requires_approval
    )

    def build(f: Callable[..., Any]) -> Tool:
        doc = inspect.getdoc(f)
        if not doc:
            raise TypeError(f"tool {f.__name__!r} needs a docstring: it is the model's description")
        tool_name = name or f.__name__
        context_param = _context_param(f)
        hidden = [context_param] if context_param else []
        args_model = create_schema_from_function(
            tool_name,
            f,
            filter_args=[*FILTERED_ARGS, *hidden],
            parse_docstring=True,
            error_on_invalid_docstring=False,
        )
        if not (isinstance(args_model, type) and issubclass(args_model, BaseModel)):
            raise TypeError(f"tool {tool_name!r}: could not derive a pydantic v2 schema")
        description = doc.split("\n\n", 1)[0].strip()
        return Tool(
            name=tool_name,
            description=description,
            args_model=args_model,
            fn=f,
            policy=policy,
            context_param=context_param,
        )

    return build(fn) if fn is not None else build
