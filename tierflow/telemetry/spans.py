"""GenAI semantic-convention spans for runs, agent nodes and model calls.

One trace per run: the runner opens ``invoke_workflow {graph}``; every node, model call
and tool call started while it runs is its descendant, because LangGraph's node tasks and
``asyncio.gather`` copy the current context (the OpenTelemetry context and the run's
conversation id / capture choice are all context variables).

Span helpers never change what the code they wrap does: they read its results (the
``Step`` a node returns, the ``AIMessage`` a model returns) and re-raise what it raises.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from langgraph.errors import GraphBubbleUp
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from tierflow.telemetry import content as content
from tierflow.telemetry import metrics as meters
from tierflow.telemetry.setup import recording, recording_setting, tracer
from tierflow.telemetry.shapes import BackendLike, TierLike

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from tierflow.record import Attempt, RunRecord
    from tierflow.settings import TierflowSettings

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")
NodeT = TypeVar("NodeT", bound=Callable[..., Awaitable[dict[str, Any]]])

# Attribute names (GenAI semantic conventions, development status).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
AGENT_NAME = "gen_ai.agent.name"
CONVERSATION = "gen_ai.conversation.id"
WORKFLOW_NAME = "gen_ai.workflow.name"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"

_conversation: ContextVar[str | None] = ContextVar("tierflow_conversation", default=None)
_log = logging.getLogger("tierflow.telemetry")

Attrs = dict[str, AttributeValue]


def quiet(default: R) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Recording telemetry must never break a run: a failure in ``fn`` is logged (debug)
    and ``default`` returned instead."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except Exception:
                _log.debug("tierflow telemetry: %s failed", fn.__name__, exc_info=True)
                return default

        return run

    return wrap


def error_type(exc: BaseException) -> str:
    """``error.type`` for an exception: its class name (low cardinality)."""
    return type(exc).__qualname__


@quiet(None)
def fail(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: status, ``error.type``, and the exception event.

    The message goes through the redactor (it can quote a prompt or a model's output)
    and so does the stack trace's last line, which repeats it.
    """
    if isinstance(exc, GraphBubbleUp):  # a LangGraph interrupt is control flow, not an error
        span.set_attribute("tierflow.interrupted", True)
        span.add_event("tierflow.interrupt", {"tierflow.interrupt.type": type(exc).__name__})
        return
    kind = "cancelled" if _cancelled(exc) else error_type(exc)
    message = content.scrub(str(exc), 500)
    span.set_attribute(ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}" if message else kind))
    if kind == "cancelled":
        return
    stack = "".join(traceback.format_tb(exc.__traceback__))
    span.record_exception(
        exc,
        attributes={
            "exception.message": message,
            "exception.stacktrace": (
                f"Traceback (most recent call last):\n{stack}{type(exc).__qualname__}: {message}"
            ),
        },
    )


def _cancelled(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError)


@contextmanager
def span(name: str, kind: SpanKind, attributes: Attrs) -> Iterator[Span]:
    """A current span that records failures the tierflow way (see :func:`fail`)."""
    with tracer().start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            fail(current, exc)
            raise


def conversation_id() -> str | None:
    """The thread id of the run being traced here, if any."""
    return _conversation.get()


@contextmanager
def workflow_span(
    graph: str, thread_id: str, settings: TierflowSettings | None = None
) -> Iterator[Span]:
    """The root span of one run: ``invoke_workflow {graph}``.

    Everything the run does below it inherits the conversation id, whether it is traced
    at all (``[telemetry] enabled``: if not, this and every span below it is a
    non-recording span that only carries the caller's trace context) and whether content
    is captured (``settings``; see :mod:`tierflow.telemetry.content`).
    """
    attrs: Attrs = {
        OPERATION: "invoke_workflow",
        WORKFLOW_NAME: graph,
        CONVERSATION: thread_id,
    }
    token = _conversation.set(thread_id)
    try:
        with (
            recording(recording_setting(settings)),
            content.capture_scope(content.capture_setting(settings)),
            span(f"invoke_workflow {graph}", SpanKind.INTERNAL, attrs) as root,
        ):
            yield root
    finally:
        _conversation.reset(token)


@quiet(None)
def finish_workflow(root: Span, record: RunRecord) -> None:
    """Put the run's outcome on its root span: route, status, totals, degradation."""
    # Only what says something: every attribute costs a few µs to export.
    attrs: Attrs = {
        "tierflow.run.status": record.status,
        INPUT_TOKENS: record.usage.input_tokens,
        OUTPUT_TOKENS: record.usage.output_tokens,
    }
    if record.usage.cost_usd:
        attrs["tierflow.cost_usd"] = record.usage.cost_usd
    if record.route:
        attrs["tierflow.route"] = record.route
    if record.degraded:
        attrs |= {"tierflow.degraded": True, ERROR_TYPE: "degraded"}
    root.set_attributes(attrs)


def _provider(tier: TierLike, backend_id: str | None) -> str | None:
    for backend in tier.backends:
        if backend.id == backend_id:
            return backend.provider
    return None


@quiet(None)
def _annotate_step(current: Span, tier: TierLike, update: Mapping[str, Any]) -> None:
    """The outcome of a node's model turn, read from the ``Step`` it returns."""
    if not isinstance(update, Mapping):  # e.g. a LangGraph Command
        return
    if update.get("route"):
        current.set_attribute("tierflow.route", str(update["route"]))
    if update.get("plan"):
        current.set_attribute("tierflow.plan.steps", len(update["plan"]))
    steps = update.get("steps") or []
    if not steps:
        return
    step = steps[-1]
    usage = step.get("usage") or {}
    cost = float(usage.get("cost_usd", 0.0))
    attrs: Attrs = {
        INPUT_TOKENS: int(usage.get("input_tokens", 0)),
        OUTPUT_TOKENS: int(usage.get("output_tokens", 0)),
    }
    if cost:
        attrs["tierflow.cost_usd"] = cost
    backend = step.get("backend")
    provider = _provider(tier, backend)
    if backend:
        attrs["tierflow.backend"] = backend
    if provider:
        attrs[PROVIDER] = provider
    if step.get("model"):
        attrs[RESPONSE_MODEL] = str(step["model"])
    if step.get("fallback_from"):
        attrs["tierflow.fallback.from"] = str(step["fallback_from"])
        attrs["tierflow.fallback.to"] = backend or ""
        attrs["tierflow.fallback.reason"] = content.scrub(str(step.get("fallback_reason")), 1000)
    if step.get("tool_calls"):
        attrs["tierflow.tool_calls"] = len(step["tool_calls"])
    current.set_attributes(attrs)
    if step.get("degraded"):
        current.set_attributes({"tierflow.degraded": True, ERROR_TYPE: "degraded"})
        current.set_status(Status(StatusCode.ERROR, "degraded: no backend of the tier answered"))
    meters.add_cost(cost, {"tierflow.tier": tier.name, "tierflow.backend": backend or ""})


def trace_agent(name: str, tier: TierLike, *, kind: str = "agent") -> Callable[[NodeT], NodeT]:
    """Decorate a graph node so each run of it is an ``invoke_agent {name}`` span.

    ``kind`` says what the node is (agent, router, planner, supervisor). The span gets the
    answering backend, tokens, cost and fallback from the ``Step`` the node returns.
    """

    # What every run of the node says the same way, built once.
    fixed: Attrs = {
        OPERATION: "invoke_agent",
        AGENT_NAME: name,
        "tierflow.node.kind": kind,
        "tierflow.tier": tier.name,
    }
    if tier.local_only:
        fixed["tierflow.residency.pinned"] = "tier is local_only"
    span_name = f"invoke_agent {name}"

    def wrap(node: NodeT) -> NodeT:
        @functools.wraps(node)
        async def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
            thread = _conversation.get()
            attrs = {**fixed, CONVERSATION: thread} if thread else fixed
            with span(span_name, SpanKind.INTERNAL, attrs) as current:
                update = await node(*args, **kwargs)
                _annotate_step(current, tier, update)
                return update

        return cast(NodeT, run)

    return wrap


async def traced_chat(
    tier: str, backend: BackendLike, call: Awaitable[T], messages: Sequence[BaseMessage] = ()
) -> T:
    """Await one model call (``call``) inside a ``chat {model}`` CLIENT span.

    Records the GenAI attributes, the tokens and the duration metric; with content
    capture on, the redacted input and output messages.
    """
    attrs: Attrs = {
        OPERATION: "chat",
        PROVIDER: backend.provider,
        REQUEST_MODEL: backend.model_name,
        "tierflow.backend": backend.id,
        "tierflow.backend.local": backend.local,
    }
    thread = _conversation.get()
    if thread:
        attrs[CONVERSATION] = thread
    metric: dict[str, AttributeValue] = {
        OPERATION: "chat",
        PROVIDER: backend.provider,
        REQUEST_MODEL: backend.model_name,
        "tierflow.tier": tier,  # latency and tokens per tier; the span's parent has it
    }
    started = time.perf_counter()
    tokens: tuple[int | None, int | None] = (None, None)
    try:
        with span(f"chat {backend.model_name}", SpanKind.CLIENT, attrs) as current:
            if messages and content.capturing():
                current.set_attribute(INPUT_MESSAGES, content.input_messages(messages))
            try:
                message = await call
            except BaseException as exc:
                metric[ERROR_TYPE] = "cancelled" if _cancelled(exc) else error_type(exc)
                raise
            tokens = _annotate_response(current, message, metric)
            return message
    finally:
        meters.record_chat(time.perf_counter() - started, metric, *tokens)


_NO_TOKENS: tuple[int | None, int | None] = (None, None)


@quiet(_NO_TOKENS)
def _annotate_response(
    current: Span, message: Any, metric: dict[str, AttributeValue]
) -> tuple[int | None, int | None]:
    from langchain_core.messages import AIMessage

    if not isinstance(message, AIMessage):
        return None, None
    meta = message.response_metadata or {}
    model = meta.get("model_name") or meta.get("model")
    if model:
        current.set_attribute(RESPONSE_MODEL, str(model))
        metric[RESPONSE_MODEL] = str(model)
    if meta.get("id"):  # the provider's id (LangChain's own message ids say nothing)
        current.set_attribute(RESPONSE_ID, str(meta["id"]))
    if meta.get("finish_reason"):
        current.set_attribute(FINISH_REASONS, [str(meta["finish_reason"])])
    if message.tool_calls:
        current.set_attribute("tierflow.tool_calls", len(message.tool_calls))
    if content.capturing():
        current.set_attribute(OUTPUT_MESSAGES, content.output_messages(message))
    usage = message.usage_metadata
    if not usage:
        return None, None
    tokens_in, tokens_out = int(usage["input_tokens"]), int(usage["output_tokens"])
    current.set_attributes({INPUT_TOKENS: tokens_in, OUTPUT_TOKENS: tokens_out})
    return tokens_in, tokens_out


@quiet(None)
def trace_fallback(
    tier: TierLike,
    attempts: Sequence[Attempt],
    next_backend: BackendLike | None,
    pinned: str | None = None,
) -> None:
    """Call at each step of a tier's chain: before trying ``next_backend`` (``None`` once
    the chain is exhausted). Turns the previous attempt, if it did not answer, into a
    ``tierflow.fallback`` event (from, to, reason) on the current span and a count;
    on the first step, records a residency pin (``pinned``: why the call may only go to
    local backends, e.g. ``sensitive data``)."""
    current = trace.get_current_span()
    if not attempts:
        if pinned:
            current.set_attribute("tierflow.residency.pinned", pinned)
        return
    last = attempts[-1]
    if last.outcome == "ok":
        return
    meters.count_fallback(tier.name, last.backend, last.outcome)
    attrs: Attrs = {
        "tierflow.tier": tier.name,
        "tierflow.fallback.from": last.backend,
        "tierflow.fallback.outcome": last.outcome,
        "tierflow.fallback.reason": content.scrub(last.reason or last.outcome, 500),
    }
    if last.error_type:
        attrs[ERROR_TYPE] = last.error_type
    if next_backend is not None:
        attrs["tierflow.fallback.to"] = next_backend.id
        current.add_event("tierflow.fallback", attrs)
    else:
        current.add_event("tierflow.tier_exhausted", attrs)
