"""Backends: where a tier's model calls go.

One client per protocol, each vendor SDK imported here and nowhere else:
``langchain-openai`` for every OpenAI-compatible server (OpenAI, vLLM, the embedded
llama.cpp server) and ``langchain-mistralai`` for La Plateforme. Provider SDK retries are
off: tierflow's retry layer owns the failure budget (:mod:`tierflow.resilience`). Every
client has a connect timeout and a read timeout (``[resilience]``), so a server that
accepts and never answers is cut.

A hosted backend with no API key is *unavailable*: the tier skips it and records why,
rather than failing the run. A backend built from settings (:func:`build_backend`) also
carries its retry policy and its circuit breaker, persisted in the state dir.

How a backend is asked for tool calls (``Backend.tool_mode``) is the setting
``[backends.<kind>] tool_calling``: ``auto`` keeps the kind's default (constrained
decoding for ``local`` and ``vllm``, native tool calls for ``openai`` and ``mistral``), so a
self-hosted server with good native tool calls stays a residency-local ``vllm:`` backend.

Clients are built once and without I/O (a :class:`~tierflow.runner.runner.Runner` builds them all
when it opens, :meth:`tierflow.models.tiers.TierSet.build_clients`); the embedded llama.cpp
server still starts on its first request (:meth:`Backend.ready`), since that takes seconds.
"""

from __future__ import annotations

import abc
import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import httpx
from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from tierflow.errors import BackendUnavailable, TierflowError
from tierflow.models.local_model import DEFAULT_MODEL, resolve_model_path
from tierflow.models.local_server import LocalServer, LocalServerConfig, shared_server
from tierflow.resilience import CircuitBreaker, RetryPolicy, breaker_for, retry_policy_for
from tierflow.settings import BackendKind, BackendRef, TierflowSettings, ToolCalling

if TYPE_CHECKING:
    from collections.abc import Callable


ToolMode = Literal["native", "constrained"]

#: Small self-hosted models follow a JSON schema far better than they emit native tool
#: calls; hosted APIs' native tool calling is reliable.
_DEFAULT_TOOL_MODES: dict[BackendKind, ToolMode] = {
    BackendKind.LOCAL: "constrained",
    BackendKind.VLLM: "constrained",
    BackendKind.OPENAI: "native",
    BackendKind.MISTRAL: "native",
}


def tool_mode_for(kind: BackendKind, tool_calling: ToolCalling) -> ToolMode:
    """The tool mode of a backend of ``kind`` whose ``tool_calling`` setting is given."""
    return _DEFAULT_TOOL_MODES[kind] if tool_calling == "auto" else tool_calling


class BackendState(StrEnum):
    REACHABLE = "reachable"
    MODEL_LOADED = "model loaded"
    UNAVAILABLE = "unavailable"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth failed"
    ERROR = "error"


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where an OpenAI-compatible backend's requests go, for code that speaks the wire
    protocol itself (``tierflow doctor --probe``)."""

    base_url: str  # ends in /v1
    api_key: SecretStr | None
    timeout: httpx.Timeout

    def headers(self) -> dict[str, str]:
        key = self.api_key.get_secret_value() if self.api_key else None
        return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True, kw_only=True)
class BackendStatus:
    """What ``tierflow doctor`` reports for one backend."""

    backend: str
    state: BackendState
    detail: str
    local: bool
    latency_ms: float | None = None


class Backend(abc.ABC):
    """A model endpoint a tier can call. Subclasses build a LangChain chat model."""

    #: Value of ``gen_ai.provider.name`` for this backend.
    provider: str = "unknown"
    #: How agents ask this backend for tool calls: ``native`` tool calling or
    #: ``constrained`` decoding against a JSON schema; from settings, see :func:`tool_mode_for`.
    tool_mode: ToolMode = "native"
    #: The model's context window in tokens, when known (prompt and reply together):
    #: ``n_ctx`` for the embedded model, ``[backends.vllm] context_window`` for vLLM,
    #: :data:`KNOWN_WINDOWS` for hosted models. ``None``: unknown, nothing is trimmed.
    context_window: int | None = None
    #: The longest reply requested of it (kept free of the window), when capped.
    reply_tokens: int = 1024

    def __init__(self, *, id: str, model_name: str, local: bool) -> None:
        self.id = id  # as written in a tier chain, e.g. "mistral:mistral-large-latest"
        self.model_name = model_name
        self.local = local  # residency: may receive sensitive data
        self._model: BaseChatModel | None = None
        #: This backend's retry policy (``None``: one request, unless the tier or call sets one).
        self.retry: RetryPolicy | None = None
        #: This backend's circuit breaker (``None``: never skipped for past failures).
        self.breaker: CircuitBreaker | None = None

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot be used at all now (e.g. no key); ``None`` if usable."""
        return None

    def chat_model(self) -> BaseChatModel:
        """The LangChain chat model, built once. Raises :class:`BackendUnavailable`."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"{self.id}: {reason}")
        if self._model is None:
            self._model = self._build()
        return self._model

    def built_model(self) -> BaseChatModel | None:
        """The chat model if it is already built and the backend is usable, else ``None``."""
        if self._model is not None and self.unavailable_reason() is None:
            return self._model
        return None

    async def ready(self) -> BaseChatModel:
        """The chat model, ready for a request: built if it was not yet (off the event
        loop: a client loads its TLS certificates) and its server started if it runs here.
        Raises :class:`BackendUnavailable`, or what starting the server raised."""
        model = self.built_model()
        if model is None:  # not built up front, e.g. a tier used without a Runner
            model = await asyncio.to_thread(self.chat_model)
        return model

    @abc.abstractmethod
    def _build(self) -> BaseChatModel: ...

    async def probe(self, http_timeout_s: float = 3.0) -> BackendStatus:
        """Check the backend without spending tokens."""
        reason = self.unavailable_reason()
        if reason is not None:
            return self._status(BackendState.UNAVAILABLE, reason)
        return await self._probe(http_timeout_s)

    async def _probe(self, http_timeout_s: float) -> BackendStatus:
        return self._status(BackendState.REACHABLE, "no probe for this backend")

    def _status(
        self, state: BackendState, detail: str, latency_ms: float | None = None
    ) -> BackendStatus:
        return BackendStatus(
            backend=self.id, state=state, detail=detail, local=self.local, latency_ms=latency_ms
        )

    async def _probe_models_endpoint(
        self, base_url: str, api_key: SecretStr | None, http_timeout_s: float
    ) -> BackendStatus:
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
        started = time.perf_counter()
        try:
            async with httpx.AsyncClient(timeout=http_timeout_s) as client:
                resp = await client.get(base_url.rstrip("/") + "/models", headers=headers)
        except httpx.HTTPError as exc:
            return self._status(BackendState.UNREACHABLE, f"{type(exc).__name__} at {base_url}")
        ms = (time.perf_counter() - started) * 1000
        if resp.status_code in (401, 403):
            return self._status(BackendState.AUTH_FAILED, f"HTTP {resp.status_code}", ms)
        if resp.status_code >= 400:
            return self._status(BackendState.ERROR, f"HTTP {resp.status_code}", ms)
        return self._status(BackendState.REACHABLE, base_url, ms)


def _timeout(settings: TierflowSettings, read_s: float | None = None) -> httpx.Timeout:
    r = settings.resilience
    return httpx.Timeout(read_s or r.request_timeout_s, connect=r.connect_timeout_s)


class OpenAICompatibleBackend(Backend):
    """OpenAI, vLLM or any server speaking OpenAI chat completions."""

    def __init__(
        self,
        ref: BackendRef,
        *,
        local: bool,
        base_url: str,
        api_key: SecretStr | None,
        needs_key: bool,
        settings: TierflowSettings,
        provider: str,
        temperature: float | None = None,
        tool_mode: ToolMode = "native",
        self_hosted: bool = False,
        max_tokens: int | None = None,
        request_timeout_s: float | None = None,
    ) -> None:
        super().__init__(id=ref.id, model_name=ref.model or ref.kind.value, local=local)
        self.tool_mode = tool_mode
        self._self_hosted = self_hosted  # llama.cpp / vLLM: response_format as is
        self._base_url = base_url
        self._api_key = api_key
        self._needs_key = needs_key
        self._settings = settings
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._request_timeout_s = request_timeout_s
        self.provider = provider

    def unavailable_reason(self) -> str | None:
        if self._needs_key and self._api_key is None:
            return "no API key (set OPENAI_API_KEY)"
        return None

    def _build(self) -> BaseChatModel:
        from langchain_openai import ChatOpenAI

        key = self._api_key or SecretStr("not-needed")
        # A self-hosted server gets response_format as is, whatever the tool mode: the
        # router's structured output goes through it in native mode too.
        cls = _grammar_client(ChatOpenAI) if self._self_hosted else ChatOpenAI
        return cls(
            model=self.model_name,
            base_url=self._base_url,
            api_key=key,
            max_retries=0,
            timeout=_timeout(self._settings, self._request_timeout_s),
            temperature=self._temperature,
            max_completion_tokens=self._max_tokens,
            stream_usage=True,
            **self._http_clients(),
        )

    def _http_clients(self) -> dict[str, Any]:
        """``http_client`` / ``http_async_client`` for ChatOpenAI (default: its own)."""
        return {}

    async def endpoint(self) -> Endpoint:
        """The server's base URL, key and timeouts (the embedded server is started first).
        Raises :class:`BackendUnavailable` when the backend cannot be used (no key)."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"{self.id}: {reason}")
        return Endpoint(
            base_url=self._base_url,
            api_key=self._api_key,
            timeout=_timeout(self._settings, self._request_timeout_s),
        )

    async def _probe(self, http_timeout_s: float) -> BackendStatus:
        return await self._probe_models_endpoint(self._base_url, self._api_key, http_timeout_s)


#: Where the embedded server's client points until the server runs: requests are sent to
#: the server's real address by :class:`_EmbeddedTransport` (the port is the OS's choice).
_EMBEDDED_URL = "http://embedded.llama.cpp.invalid/v1"


class LocalBackend(OpenAICompatibleBackend):
    """The embedded llama.cpp server, started on first use (or an external one by URL)."""

    def __init__(self, ref: BackendRef, *, settings: TierflowSettings) -> None:
        local = settings.backends.local
        self._external_url = local.base_url
        self._server_config: LocalServerConfig | None = None
        name = local.model_path.stem if local.model_path else DEFAULT_MODEL.name
        super().__init__(
            BackendRef(kind=ref.kind, model=ref.model or name),
            local=True,
            base_url=self._external_url or _EMBEDDED_URL,
            api_key=None,
            needs_key=False,
            settings=settings,
            provider="llama.cpp",
            temperature=0.0,  # routing and extraction on a tiny model want determinism
            tool_mode=tool_mode_for(BackendKind.LOCAL, local.tool_calling),
            self_hosted=True,
            max_tokens=local.max_tokens,
            request_timeout_s=local.request_timeout_s,
        )
        self.id = ref.id  # "local", not "local:<model>"
        self._settings = settings

    def server(self) -> LocalServer:
        if self._server_config is None:
            local = self._settings.backends.local
            self._server_config = LocalServerConfig(
                model_path=resolve_model_path(local.model_path, self._settings.cache_dir),
                model_name=self.model_name,
                n_ctx=local.n_ctx,
                threads=local.threads,
            )
        return shared_server(self._server_config)

    def _server_url(self) -> str:
        """The embedded server's base URL; resolves the model file and starts the server
        if needed (blocking: seconds)."""
        return self.server().base_url

    def _running_url(self) -> str | None:
        if self._server_config is None:
            return None
        server = shared_server(self._server_config)
        return server.base_url if server.running else None

    def _http_clients(self) -> dict[str, Any]:
        if self._external_url:
            return {}
        transport = _EmbeddedTransport(self._running_url, self._server_url)
        return {
            "http_client": httpx.Client(transport=transport),
            "http_async_client": httpx.AsyncClient(transport=transport),
        }

    async def endpoint(self) -> Endpoint:
        endpoint = await super().endpoint()
        if self._external_url:
            return endpoint
        url = await asyncio.to_thread(self._server_url)
        return Endpoint(base_url=url, api_key=None, timeout=endpoint.timeout)

    async def ready(self) -> BaseChatModel:
        model = await super().ready()
        if not self._external_url and self._running_url() is None:
            # Here rather than inside the request, so a missing model file is a failed
            # attempt with its own message, not a retried connection error.
            await asyncio.to_thread(self._server_url)
        return model

    async def _probe(self, http_timeout_s: float) -> BackendStatus:
        if self._external_url:
            return await self._probe_models_endpoint(self._external_url, None, http_timeout_s)
        try:
            server = self.server()
            server.start()
        except TierflowError as exc:
            return self._status(BackendState.ERROR, str(exc))
        load = f", loaded in {server.load_seconds:.1f}s" if server.load_seconds else ""
        return self._status(
            BackendState.MODEL_LOADED, f"{server.config.model_path.name}{load}", None
        )


class MistralBackend(Backend):
    """Mistral La Plateforme through langchain-mistralai."""

    provider = "mistral_ai"

    def __init__(self, ref: BackendRef, *, settings: TierflowSettings) -> None:
        cfg = settings.backends.mistral
        super().__init__(id=ref.id, model_name=ref.model or "", local=cfg.local)
        self.tool_mode = tool_mode_for(ref.kind, cfg.tool_calling)
        self._settings = settings

    def unavailable_reason(self) -> str | None:
        if self._settings.backends.mistral.api_key is None:
            return "no API key (set MISTRAL_API_KEY)"
        return None

    def _build(self) -> BaseChatModel:
        from langchain_mistralai import ChatMistralAI

        cfg = self._settings.backends.mistral
        assert cfg.api_key is not None
        # Our own httpx clients: ChatMistralAI's take one whole-number timeout, and we
        # want separate connect and read deadlines, as for the OpenAI client.
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {cfg.api_key.get_secret_value()}",
        }
        timeout = _timeout(self._settings)
        return ChatMistralAI(
            model_name=self.model_name,
            base_url=cfg.base_url,
            api_key=cfg.api_key,
            max_retries=0,
            client=httpx.Client(base_url=cfg.base_url, headers=headers, timeout=timeout),
            async_client=httpx.AsyncClient(base_url=cfg.base_url, headers=headers, timeout=timeout),
        )

    async def _probe(self, http_timeout_s: float) -> BackendStatus:
        cfg = self._settings.backends.mistral
        return await self._probe_models_endpoint(cfg.base_url, cfg.api_key, http_timeout_s)


class _EmbeddedTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Sends each request to the embedded server's current address, starting the server
    first if it is not running (in a worker thread for the async client)."""

    def __init__(self, running_url: Callable[[], str | None], start: Callable[[], str]) -> None:
        self._running_url = running_url
        self._start = start
        self._sync = httpx.HTTPTransport()
        self._async = httpx.AsyncHTTPTransport()

    @staticmethod
    def _redirect(request: httpx.Request, base_url: str) -> None:
        target = httpx.URL(base_url)
        request.url = request.url.copy_with(host=target.host, port=target.port)
        request.headers["Host"] = target.netloc.decode("ascii")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._redirect(request, self._running_url() or self._start())
        return self._sync.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = self._running_url()
        if url is None:
            url = await asyncio.to_thread(self._start)
        self._redirect(request, url)
        return await self._async.handle_async_request(request)

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()


def _grammar_client(base: Any) -> Any:
    """ChatOpenAI for llama.cpp/vLLM: ``response_format`` goes into the request body as is.

    With ``response_format`` set, langchain-openai calls the SDK's ``parse()``, which
    raises when a reply stops at the token limit; a small model under a grammar sometimes
    does, and tierflow parses (and salvages) the JSON itself, so the plain path is used.
    """

    class GrammarChatOpenAI(base):  # type: ignore[misc]
        def _get_request_payload(self, input_: Any, *, stop: Any = None, **kwargs: Any) -> Any:
            fmt = kwargs.pop("response_format", None)
            payload = super()._get_request_payload(input_, stop=stop, **kwargs)
            if fmt is not None:
                payload["extra_body"] = {**payload.get("extra_body", {}), "response_format": fmt}
            return payload

    return GrammarChatOpenAI


#: Context windows of hosted models by name prefix (providers' model pages; the longest
#: matching prefix wins).
KNOWN_WINDOWS: dict[str, int] = {
    "gpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4-turbo": 128_000,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "gpt-5": 400_000,
    "mistral-large": 128_000,
    "mistral-medium": 128_000,
    "mistral-small": 128_000,
    "ministral": 128_000,
    "codestral": 256_000,
    "open-mistral-nemo": 128_000,
}


def known_window(model: str) -> int | None:
    """The context window of a hosted model, from :data:`KNOWN_WINDOWS`."""
    matches = [p for p in KNOWN_WINDOWS if model.startswith(p)]
    return KNOWN_WINDOWS[max(matches, key=len)] if matches else None


def build_backend(ref: BackendRef, settings: TierflowSettings) -> Backend:
    """The backend for one entry of a tier chain, with its retry policy and its breaker."""
    backend = _build_backend(ref, settings)
    b = settings.backends
    match ref.kind:
        case BackendKind.LOCAL:
            backend.context_window = b.local.n_ctx
            backend.reply_tokens = b.local.max_tokens
        case BackendKind.VLLM:
            backend.context_window = b.vllm.context_window
        case _:
            backend.context_window = known_window(backend.model_name)
    backend.retry = retry_policy_for(settings, backend.id)
    backend.breaker = breaker_for(settings, backend.id)
    return backend


def _build_backend(ref: BackendRef, settings: TierflowSettings) -> Backend:
    b = settings.backends
    match ref.kind:
        case BackendKind.LOCAL:
            return LocalBackend(ref, settings=settings)
        case BackendKind.VLLM:
            return OpenAICompatibleBackend(
                ref,
                local=b.vllm.local,
                base_url=b.vllm.base_url,
                api_key=b.vllm.api_key,
                needs_key=False,
                settings=settings,
                provider="vllm",
                tool_mode=tool_mode_for(ref.kind, b.vllm.tool_calling),
                self_hosted=True,
            )
        case BackendKind.OPENAI:
            return OpenAICompatibleBackend(
                ref,
                local=b.openai.local,
                base_url=b.openai.base_url,
                api_key=b.openai.api_key,
                needs_key=True,
                settings=settings,
                provider="openai",
                tool_mode=tool_mode_for(ref.kind, b.openai.tool_calling),
            )
        case BackendKind.MISTRAL:
            return MistralBackend(ref, settings=settings)
