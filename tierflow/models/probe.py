"""A contract test of a live OpenAI-compatible server (``tierflow doctor --probe BACKEND``).

``tierflow doctor`` only asks ``GET /models``: a server can answer that and still break
what tierflow relies on. The probe sends three real chat completions, each checking one
promise of the protocol, and says which held:

- ``tool_call``: one tool and a ``tool_choice`` naming it. Passes when the reply holds a
  call to that tool whose arguments are a JSON object that validates.
- ``tool_call_ids``: an assistant turn calling the tool with a 9-character id (the ids
  tierflow writes, the only shape Mistral accepts), then its tool result. Passes on
  HTTP 200 with a text answer: the server took the id back.
- ``json_schema``: ``response_format`` ``json_schema`` (strict) and a prompt that does
  not ask for JSON. Passes when the answer parses and validates against the schema.

The checks speak the wire protocol with httpx rather than through the LangChain client,
so a failure names what the server did (status, error message, finish reason, the start
of the text) rather than how a client library reacted to it. They run one after the
other with the backend's own timeouts (at temperature 0 on self-hosted servers; hosted
models get their default); a check that fails does not stop the next.

A backend whose agents use constrained decoding (``Backend.tool_mode``, the default for
``local`` and ``vllm``) does not need native tool calls for tierflow's agents; a failed
``tool_call`` check then carries a note saying so (it still matters for
``Tier.bind_tools``). The packaged 0.5B embedded model is such a case: llama.cpp returns
its tool call as text, not as ``tool_calls``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from tierflow.errors import UserError
from tierflow.models.backends import (
    Endpoint,
    OpenAICompatibleBackend,
    ToolMode,
    build_backend,
)
from tierflow.settings import BackendKind, BackendRef, TierflowSettings

if TYPE_CHECKING:
    from tierflow.models.tiers import TierSet

#: The tool-call id sent back in the round trip: 9 alphanumerics, as tierflow writes them.
ROUND_TRIP_ID = "pRb7Kq2Zx"
_MAX_TOKENS = 256
_SHOWN = 120  # characters of a reply quoted in a reason


class WeatherArgs(BaseModel):
    """Arguments of the probe's tool (its JSON schema is derived from this model)."""

    model_config = ConfigDict(extra="forbid")
    city: str


class Capital(BaseModel):
    """The structured answer the ``json_schema`` check asks for."""

    model_config = ConfigDict(extra="forbid")
    city: str
    country: str


_TOOL_NAME = "get_weather"
_TOOL = {
    "type": "function",
    "function": {
        "name": _TOOL_NAME,
        "description": "Get the current weather in a city.",
        "parameters": WeatherArgs.model_json_schema(),
        "strict": True,
    },
}
_QUESTION = "What is the weather in Paris right now?"


@dataclass(frozen=True, kw_only=True)
class ProbeCheck:
    """One check's outcome. ``detail`` says what the server did, on one line."""

    name: str
    ok: bool
    detail: str
    duration_ms: float
    #: Why a failure may not matter to tierflow's agents (or ``None``).
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class ProbeReport:
    backend: str
    model: str
    base_url: str
    checks: list[ProbeCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "base_url": self.base_url,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
        }


#: What each check covers, for tables.
CHECK_TITLES = {
    "tool_call": "forced tool choice returns a tool call",
    "tool_call_ids": "9-character tool-call id round trip",
    "json_schema": "response_format json_schema honoured",
}


class _CheckFailed(Exception):
    """A check's verdict: the message is the one-line reason."""


async def probe_backend(backend_id: str, settings: TierflowSettings) -> ProbeReport:
    """Run the three checks against the backend ``backend_id`` (``local``, ``vllm:<model>``,
    ``openai:<model>``) as configured in ``settings``. Raises :class:`UserError` for an id
    that does not parse or a backend that is not an OpenAI-compatible server, and
    :class:`~tierflow.errors.BackendUnavailable` when it cannot be used (no API key)."""
    try:
        ref = BackendRef.parse(backend_id)
    except ValueError as exc:
        raise UserError(f"--probe: {exc}") from None
    if ref.kind is BackendKind.MISTRAL:
        raise UserError(
            f"--probe checks OpenAI-compatible servers (local, vllm:<model>, openai:<model>); "
            f"'{ref.id}' uses Mistral's own API"
        )
    backend = build_backend(ref, settings)
    assert isinstance(backend, OpenAICompatibleBackend)
    endpoint = await backend.endpoint()
    return await probe_endpoint(
        endpoint,
        model=backend.model_name,
        backend_id=backend.id,
        tool_mode=backend.tool_mode,
        # self-hosted servers: deterministic; hosted models may refuse a temperature
        temperature=None if ref.kind is BackendKind.OPENAI else 0.0,
    )


async def probe_endpoint(
    endpoint: Endpoint,
    *,
    model: str,
    backend_id: str,
    tool_mode: ToolMode = "native",
    temperature: float | None = None,
) -> ProbeReport:
    """Run the three checks against any OpenAI-compatible ``endpoint``. ``temperature``
    ``None`` sends none (some hosted models accept only their default)."""
    report = ProbeReport(backend=backend_id, model=model, base_url=endpoint.base_url)
    async with httpx.AsyncClient(timeout=endpoint.timeout, headers=endpoint.headers()) as client:

        async def chat(body: dict[str, Any]) -> dict[str, Any]:
            if temperature is not None:
                body = {"temperature": temperature, **body}
            return await _chat(client, endpoint.base_url, model, body)

        checks: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("tool_call", lambda: _check_tool_call(chat)),
            ("tool_call_ids", lambda: _check_tool_call_ids(chat)),
            ("json_schema", lambda: _check_json_schema(chat)),
        ]
        for name, check in checks:
            started = time.perf_counter()
            try:
                ok, detail = True, await check()
            except _CheckFailed as exc:
                ok, detail = False, str(exc)
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__} at {endpoint.base_url}"
            note = None
            if not ok and name == "tool_call" and tool_mode == "constrained":
                note = (
                    f"{backend_id} uses constrained decoding for agents' tool calls "
                    "(tool_calling = constrained), so they do not need native ones"
                )
            ms = round((time.perf_counter() - started) * 1000, 1)
            report.checks.append(
                ProbeCheck(name=name, ok=ok, detail=detail, duration_ms=ms, note=note)
            )
    return report


Chat = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def _check_tool_call(chat: Chat) -> str:
    message, finish = _message(
        await chat(
            {
                "messages": [{"role": "user", "content": _QUESTION}],
                "tools": [_TOOL],
                "tool_choice": {"type": "function", "function": {"name": _TOOL_NAME}},
            }
        )
    )
    calls = message.get("tool_calls") or []
    if not calls:
        raise _CheckFailed(
            f"no tool call in the reply (finish_reason {finish}); the text was: "
            f"{_quote(message.get('content'))}"
        )
    fn = calls[0].get("function") or {}
    if fn.get("name") != _TOOL_NAME:
        raise _CheckFailed(f"called {fn.get('name')!r}, not the forced {_TOOL_NAME!r}")
    try:
        WeatherArgs.model_validate_json(fn.get("arguments") or "")
    except ValidationError as exc:
        raise _CheckFailed(f"arguments do not validate: {_errors(exc)}") from None
    call_id = calls[0].get("id")
    if not isinstance(call_id, str) or not call_id:
        raise _CheckFailed("the tool call has no id")
    return f"{_TOOL_NAME}({fn['arguments']}), id {call_id!r}"


async def _check_tool_call_ids(chat: Chat) -> str:
    args = json.dumps({"city": "Paris"})
    result = json.dumps({"temperature_c": 18, "sky": "sunny"})
    fn = {"name": _TOOL_NAME, "arguments": args}
    call = {"id": ROUND_TRIP_ID, "type": "function", "function": fn}
    message, finish = _message(
        await chat(
            {
                "messages": [
                    {"role": "user", "content": _QUESTION},
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": ROUND_TRIP_ID, "content": result},
                ],
                "tools": [_TOOL],
                "tool_choice": "none",
            }
        )
    )
    content = message.get("content")
    if message.get("tool_calls"):
        raise _CheckFailed(f"answered with a tool call although tool_choice was 'none' ({finish})")
    if not isinstance(content, str) or not content.strip():
        raise _CheckFailed(f"no text answer (finish_reason {finish})")
    return f"id {ROUND_TRIP_ID!r} accepted; answered {_quote(content)}"


async def _check_json_schema(chat: Chat) -> str:
    schema = Capital.model_json_schema()
    message, finish = _message(
        await chat(
            {
                "messages": [{"role": "user", "content": "Which city is the capital of France?"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "capital", "schema": schema, "strict": True},
                },
            }
        )
    )
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise _CheckFailed(f"no text answer (finish_reason {finish})")
    try:
        json.loads(content)
    except ValueError:
        raise _CheckFailed(f"the answer is not JSON: {_quote(content)}") from None
    try:
        value = Capital.model_validate_json(content)
    except ValidationError as exc:
        raise _CheckFailed(f"the answer does not match the schema: {_errors(exc)}") from None
    return f"valid: {value.model_dump_json()}"


async def _chat(
    client: httpx.AsyncClient, base_url: str, model: str, body: dict[str, Any]
) -> dict[str, Any]:
    # max_completion_tokens: OpenAI's newer models refuse max_tokens; llama.cpp and vLLM
    # take both.
    payload = {"model": model, "max_completion_tokens": _MAX_TOKENS, **body}
    resp = await client.post(base_url.rstrip("/") + "/chat/completions", json=payload)
    if resp.status_code >= 400:
        raise _CheckFailed(f"HTTP {resp.status_code}: {_error_message(resp)}")
    try:
        data = resp.json()
    except ValueError:
        raise _CheckFailed(f"HTTP {resp.status_code} with a body that is not JSON") from None
    if not isinstance(data, dict):
        raise _CheckFailed("the reply is not a JSON object")
    return data


def _message(data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _CheckFailed("the reply has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise _CheckFailed("the reply's first choice has no message")
    return message, str(choices[0].get("finish_reason"))


def _error_message(resp: httpx.Response) -> str:
    """The server's own error message: OpenAI ``{error: {message}}``, vLLM/Mistral
    ``{message}``, FastAPI ``{detail}``, else the start of the body."""
    try:
        body = resp.json()
    except ValueError:
        return _quote(resp.text)
    if isinstance(body, dict):
        err = body.get("error")
        for candidate in (
            err.get("message") if isinstance(err, dict) else err,
            body.get("message"),
            body.get("detail"),
        ):
            if candidate:
                return _quote(candidate if isinstance(candidate, str) else json.dumps(candidate))
    return _quote(json.dumps(body))


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
    )


def _quote(text: Any) -> str:
    if not isinstance(text, str) or not text:
        return "(empty)"
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= _SHOWN else flat[:_SHOWN] + "…")


async def backend_table(settings: TierflowSettings, tiers: TierSet) -> dict[str, Any]:
    """``tierflow doctor --json`` (and the console's Backends page): each backend's state,
    the tiers it serves, and its circuit breaker as the last runs persisted it."""
    from tierflow.resilience import BreakerSnapshot, breaker_store

    breakers = await asyncio.to_thread(lambda: breaker_store(settings).load_all())
    statuses = await asyncio.gather(*(b.probe() for b in tiers.backends()))
    tier_map = {name: [b.id for b in tier.backends] for name, tier in tiers.items()}
    return {
        "backends": [
            {
                "backend": s.backend,
                "state": s.state.value,
                "detail": s.detail,
                "local": s.local,
                "latency_ms": s.latency_ms,
                "tiers": [n for n, ids in tier_map.items() if s.backend in ids],
                "breaker": breakers.get(s.backend, BreakerSnapshot(backend=s.backend)).to_json(),
            }
            for s in statuses
        ],
        "tiers": tier_map,
    }
