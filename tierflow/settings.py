"""Typed settings: ``tierflow.toml`` plus environment overrides.

Precedence, highest first: values passed in code, ``TIERFLOW_*`` variables (nested with
``__``, e.g. ``TIERFLOW_BACKENDS__VLLM__BASE_URL``), the standard variables users already
have (``MISTRAL_API_KEY``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``TIERFLOW_LOCAL_MODEL``),
the TOML file, then defaults. ``OTEL_*`` variables are read by the OpenTelemetry SDK itself.

Backend ids such as ``mistral:mistral-large-latest`` are parsed here, once, into
:class:`BackendRef`; nothing else in tierflow splits those strings.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tierflow.errors import ConfigError

CONFIG_FILE_NAME = "tierflow.toml"


class BackendKind(StrEnum):
    """The protocols tierflow can talk to."""

    LOCAL = "local"  # the embedded llama.cpp server (OpenAI protocol on 127.0.0.1)
    VLLM = "vllm"  # any OpenAI-compatible server: vLLM, llama.cpp, TGI...
    OPENAI = "openai"
    MISTRAL = "mistral"  # La Plateforme


_DEFAULT_MODELS = {
    BackendKind.OPENAI: "gpt-4o",
    BackendKind.MISTRAL: "mistral-large-latest",
}


class BackendRef(BaseModel):
    """One entry of a tier chain: a backend kind and, where it has a choice, a model."""

    model_config = ConfigDict(frozen=True)

    kind: BackendKind
    model: str | None = None

    @classmethod
    def parse(cls, text: str) -> BackendRef:
        """Parse ``kind`` or ``kind:model`` (the model may itself contain ``/`` or ``:``)."""
        kind_text, _, model = text.strip().partition(":")
        try:
            kind = BackendKind(kind_text)
        except ValueError:
            expected = ", ".join(k.value for k in BackendKind)
            raise ValueError(
                f"unknown backend kind '{kind_text}' in '{text}' (expected one of {expected})"
            ) from None
        if kind is BackendKind.VLLM and not model:
            raise ValueError(f"'{text}' needs a model name, e.g. 'vllm:mistralai/Ministral-8B'")
        return cls(kind=kind, model=model or _DEFAULT_MODELS.get(kind))

    @property
    def id(self) -> str:
        """The canonical string form, as written in config and shown in run records."""
        return self.kind.value if self.model is None else f"{self.kind.value}:{self.model}"

    def __str__(self) -> str:
        return self.id


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TierSettings(_Section):
    """A named, ordered chain of backends. The first available, healthy one answers."""

    backends: list[BackendRef] = Field(min_length=1)
    local_only: bool = False  # residency: only backends marked local may serve this tier
    #: This tier's retry policy, over ``[resilience.retry]`` field by field.
    retry: RetrySettings | None = None

    @field_validator("backends", mode="before")
    @classmethod
    def _parse_backends(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [BackendRef.parse(v) if isinstance(v, str) else v for v in value]
        return value


#: How a backend is asked for tool calls (``Backend.tool_mode``): ``native`` sends the
#: provider's ``tools=[...]``; ``constrained`` sends a JSON schema (``response_format``) that
#: admits either tool calls or an answer; ``auto`` is the kind's default (constrained for
#: ``local`` and ``vllm``, native for ``openai`` and ``mistral``).
ToolCalling = Literal["native", "constrained", "auto"]


class LocalSettings(_Section):
    """The embedded llama.cpp server."""

    model_path: Path | None = None  # a GGUF file; default: the packaged Qwen2.5-Coder-0.5B
    base_url: str | None = None  # use an already running `tierflow local serve` instead
    n_ctx: int = Field(default=4096, ge=256)
    # A cap on each reply: a small model under a grammar can otherwise loop to the limit.
    max_tokens: int = Field(default=512, ge=16)
    # CPU generation is slow (~30 tokens/s on 2 cores): a longer read deadline than hosted.
    request_timeout_s: float = Field(default=240.0, gt=0)
    threads: int | None = Field(default=None, ge=1)
    startup_timeout_s: float = Field(default=120.0, gt=0)
    tool_calling: ToolCalling = "auto"


class VllmSettings(_Section):
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: SecretStr | None = None
    local: bool = True  # self-hosted: allowed for sensitive data
    # "native" for a server whose model and chat template emit good native tool calls
    # (vLLM with --enable-auto-tool-choice); "auto" is constrained decoding.
    tool_calling: ToolCalling = "auto"
    #: The served model's context window (vLLM's --max-model-len), so requests are
    #: trimmed to fit; unset: not trimmed.
    context_window: int | None = Field(default=None, ge=256)


class OpenAISettings(_Section):
    api_key: SecretStr | None = None
    base_url: str = "https://api.openai.com/v1"
    local: bool = False
    tool_calling: ToolCalling = "auto"


class MistralSettings(_Section):
    api_key: SecretStr | None = None
    base_url: str = "https://api.mistral.ai/v1"
    local: bool = False
    tool_calling: ToolCalling = "auto"


class BackendsSettings(_Section):
    local: LocalSettings = LocalSettings()
    vllm: VllmSettings = VllmSettings()
    openai: OpenAISettings = OpenAISettings()
    mistral: MistralSettings = MistralSettings()


class Price(_Section):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


def _default_tiers() -> dict[str, TierSettings]:
    return {
        "router": TierSettings(backends=[BackendRef.parse("local")]),
        "reasoning": TierSettings(
            backends=[
                BackendRef.parse("mistral:mistral-large-latest"),
                BackendRef.parse("openai:gpt-4o"),
                BackendRef.parse("local"),
            ]
        ),
    }


def _default_prices() -> dict[str, Price]:
    # List prices at the time of writing; override in [prices] when they change.
    return {
        "mistral:mistral-large-latest": Price(input=2.0, output=6.0),
        "mistral:mistral-small-latest": Price(input=0.1, output=0.3),
        "openai:gpt-4o": Price(input=2.5, output=10.0),
        "openai:gpt-4o-mini": Price(input=0.15, output=0.6),
    }


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tierflow"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tierflow"


class RetrySettings(_Section):
    """``[resilience.retry]``: retries of one backend (also ``[tiers.NAME.retry]`` and
    ``[resilience.backends."ID".retry]``, which override these field by field).
    Turned into :class:`tierflow.resilience.RetryPolicy`, which documents each field."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    max_retry_after_s: float = Field(default=20.0, ge=0)
    deadline_s: float | None = Field(default=120.0, gt=0)
    with_fallback: Literal["retry", "retry_after"] = "retry_after"


class BreakerSettings(_Section):
    """``[resilience.breaker]``: the circuit breaker of each backend (per backend:
    ``[resilience.backends."ID".breaker]``). See :class:`tierflow.resilience.BreakerPolicy`."""

    failure_threshold: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    open_on_connect_error: bool = True


class BackendResilienceSettings(_Section):
    """``[resilience.backends."ID"]``: one backend's own retry and breaker policies."""

    retry: RetrySettings | None = None
    breaker: BreakerSettings | None = None


class ResilienceSettings(_Section):
    """``[resilience]``: timeouts, and the defaults of the retry and breaker policies."""

    request_timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    #: Per backend id (as written in a tier chain, e.g. ``"openai:gpt-4o"``).
    backends: dict[str, BackendResilienceSettings] = Field(default_factory=dict)

    @field_validator("backends", mode="after")
    @classmethod
    def _backend_ids(
        cls, value: dict[str, BackendResilienceSettings]
    ) -> dict[str, BackendResilienceSettings]:
        # Canonical ids, so "openai" and "openai:gpt-4o" name the same backend.
        return {BackendRef.parse(key).id: policy for key, policy in value.items()}


class SqlToolSettings(_Section):
    # sqlite:///path.db, duckdb:///path.duckdb or postgresql://...; env TIERFLOW_SQL_URL.
    # None: the demo shop database built by `tierflow demo` in the state dir.
    url: str | None = None
    max_rows: int = Field(default=200, ge=1)
    timeout_s: float = Field(default=5.0, gt=0)


class PythonToolSettings(_Section):
    timeout_s: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=512, ge=64)
    # Allow a weaker sandbox when no strong one works here; marked in every result.
    allow_weak_sandbox: bool = False


class WebSearchToolSettings(_Section):
    backend: Literal["ddgs", "searxng"] = "ddgs"
    searxng_url: str | None = None  # a SearxNG instance's base URL, JSON format enabled
    timeout_s: float = Field(default=8.0, gt=0)  # overall deadline for one search
    max_results: int = Field(default=5, ge=1, le=20)


class RetrievalToolSettings(_Section):
    docs_dir: Path | None = None  # env TIERFLOW_DOCS_DIR; None: the demo corpus
    index_dir: Path | None = None  # None: <state_dir>/index
    top_k: int = Field(default=4, ge=1, le=20)


class ToolsSettings(_Section):
    sql: SqlToolSettings = SqlToolSettings()
    python: PythonToolSettings = PythonToolSettings()
    web_search: WebSearchToolSettings = WebSearchToolSettings()
    retrieval: RetrievalToolSettings = RetrievalToolSettings()
    #: A built-in tool that fails because its service is unavailable answers through
    #: another: ``{"web_search": "retrieve"}`` searches the documents when the web is out.
    fallbacks: dict[str, str] = Field(default_factory=lambda: {"web_search": "retrieve"})


class RouterSettings(_Section):
    # Route by embedding similarity first (all-MiniLM-L6-v2, ~20 ms); the router tier's
    # model decides only when the best route does not lead by `margin`.
    semantic: bool = True
    margin: float = Field(default=0.03, ge=0.0, le=1.0)


class TelemetrySettings(_Section):
    # false: tierflow records no spans or metrics and installs no provider or exporter
    # (an application's own providers are never replaced either way).
    enabled: bool = True
    jaeger_ui_url: str | None = None  # e.g. http://127.0.0.1:16686 turns trace ids into links
    # Record prompts, tool arguments and results in spans (after PII redaction). Off by
    # default; OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true also turns it on.
    capture_content: bool = False


class ServerSettings(_Section):
    """``tierflow serve``: limits of the HTTP API (env e.g. ``TIERFLOW_SERVER__MAX_QUEUE``)."""

    max_body_bytes: int = Field(default=1_000_000, ge=1024)  # larger request bodies get 413
    max_queue: int = Field(default=64, ge=1)  # runs pending or running; past it, 429
    max_concurrency: int = Field(default=4, ge=1)  # runs executing at once (in-process worker)
    cors_origins: list[str] = Field(default_factory=list)  # empty: no CORS headers at all
    #: Runs pending or running per API key (``TIERFLOW_API_KEYS``); past it, 429.
    max_runs_per_key: int | None = Field(default=None, ge=1)
    #: Where runs execute: in the server's process, or on ``tierflow worker`` processes
    #: fed by a DBOS queue (docs/architecture.md, "Workers").
    worker: Literal["inprocess", "dbos"] = "inprocess"
    #: The DBOS queue's database (SQLAlchemy URL); default ``<state_dir>/queue.sqlite``.
    queue_url: str | None = None
    #: A worker silent for this long is dead: a peer hands its runs to the queue again.
    worker_lease_s: float = Field(default=5.0, gt=0)
    #: On SIGTERM a worker finishes its runs for up to this long, then hands them back.
    drain_s: float = Field(default=30.0, ge=0)


#: ``[state] checkpointer`` and ``durability`` (see :class:`StateSettings`).
Checkpointer = Literal["auto", "sqlite", "postgres", "memory", "none"]
Durability = Literal["sync", "async", "exit"]


class StateSettings(_Section):
    """``[state]``: where checkpoints, threads, runs, leases and breaker states live.

    ``database_url`` (env ``TIERFLOW_DATABASE_URL``): ``postgresql://user:pw@host:port/db``
    moves them all to PostgreSQL, so several processes (two ``tierflow serve``) share them;
    ``None`` keeps SQLite files in ``state_dir``.
    """

    database_url: SecretStr | None = None  # a secret: it may hold the password
    pool_size: int = Field(default=10, ge=1)  # connections per pool (checkpoints, server)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    #: Thread leases (``tierflow.runner.lease``): a run renews its thread's lease every
    #: third of this; a crashed holder's lease frees the thread this long after its last
    #: renewal.
    lease_ttl_s: float = Field(default=30.0, gt=0)
    #: How long a run that waits for a busy thread (``ask --wait``) waits at most.
    lease_wait_s: float = Field(default=300.0, ge=0)
    #: Where checkpoints go (env ``TIERFLOW_STATE__CHECKPOINTER``): ``auto`` is PostgreSQL
    #: with ``database_url``, else SQLite at ``<state_dir>/checkpoints.sqlite``; ``memory``
    #: lives as long as the process; ``none`` is stateless: one-shot questions only (no
    #: resume, approvals or thread continuation).
    checkpointer: Checkpointer = "auto"
    #: When a step's checkpoint is written (``TIERFLOW_STATE__DURABILITY``): ``sync``
    #: before the next step starts (crash-safe: a killed process never repeats a completed
    #: tool call); ``async`` while the next step runs (a crash may lose the last step);
    #: ``exit`` once, when the run ends (a crash loses the run's progress).
    durability: Durability = "sync"
    #: Checkpoint retention (0: keep everything): threads idle for more than
    #: ``keep_days`` days, and all but the ``keep_threads`` most recent threads, are
    #: deleted in the background (every ``prune_every_s``) and by ``tierflow state prune``.
    keep_days: float = Field(default=0, ge=0)
    keep_threads: int = Field(default=0, ge=0)
    prune_every_s: float = Field(default=600.0, gt=0)

    @field_validator("database_url", mode="after")
    @classmethod
    def _postgres_url(cls, secret: SecretStr | None) -> SecretStr | None:
        value = secret.get_secret_value().strip() if secret is not None else ""
        if not value:
            return None
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("postgresql", "postgres"):
            # Never echo the URL: it may hold a password.
            raise ValueError(
                f"expected a postgresql://user:password@host:port/dbname URL (got scheme "
                f"'{scheme or 'none'}')"
            )
        return SecretStr(value)

    @model_validator(mode="after")
    def _postgres_needs_url(self) -> StateSettings:
        if self.checkpointer == "postgres" and self.database_url is None:
            raise ValueError('checkpointer = "postgres" needs database_url (a postgresql:// URL)')
        return self

    @property
    def saver_kind(self) -> Literal["sqlite", "postgres", "memory", "none"]:
        """The checkpointer ``checkpointer`` names (``auto`` resolved)."""
        if self.checkpointer == "auto":
            return "postgres" if self.database_url is not None else "sqlite"
        return self.checkpointer

    @property
    def url(self) -> str | None:
        """``database_url`` in clear, for the driver; None: SQLite."""
        return self.database_url.get_secret_value() if self.database_url else None


class GuardrailStageSettings(_Section):
    """Which built-in guardrails run at each stage, by name (see ``tierflow.guardrails``)."""

    input: list[str] = Field(
        default_factory=lambda: ["size", "injection", "secrets", "deny", "residency"]
    )
    tool_call: list[str] = Field(default_factory=lambda: ["size", "secrets"])
    tool_result: list[str] = Field(
        default_factory=lambda: ["size", "injection", "secrets", "residency"]
    )
    output: list[str] = Field(
        default_factory=lambda: ["secrets", "pii", "schema", "grounding", "deny"]
    )


InjectionLayer = Literal["heuristics", "classifier", "judge"]


class InjectionLayerSettings(_Section):
    """``[guardrails.injection_layers]``: which layers of the ``injection`` guardrail run
    at each stage, in order: ``heuristics`` (patterns and decoding, microseconds),
    ``classifier`` (MiniLM embedding + logistic regression, ~10-40 ms), ``judge`` (the
    router tier's local model, for the classifier's grey zone only)."""

    # The judge is opt-in: on the embedded 0.5B model it never answered within its 4 s
    # budget in `bench guardrails-eval` (same verdicts, +4 s on ~11 % of benign inputs).
    # With a fast local model (vLLM) add it: input = ["heuristics", "classifier", "judge"].
    input: list[InjectionLayer] = Field(
        default_factory=lambda: list[InjectionLayer](["heuristics", "classifier"])
    )
    # Documents read differently from requests: the classifier, trained on requests,
    # misreads ordinary prose, so tool results get the heuristics only by default.
    tool_result: list[InjectionLayer] = Field(
        default_factory=lambda: list[InjectionLayer](["heuristics"])
    )


class GuardrailsSettings(_Section):
    """``[guardrails]``: the stages of every graph, per-graph and per-agent additions,
    and the built-ins' options."""

    enabled: bool = True
    stages: GuardrailStageSettings = GuardrailStageSettings()
    #: ``[guardrails.graphs.NAME]``: replaces ``stages`` for that graph.
    graphs: dict[str, GuardrailStageSettings] = Field(default_factory=dict)
    #: ``[guardrails.agents.NAME]``: guardrails added for that agent's stages.
    agents: dict[str, GuardrailStageSettings] = Field(default_factory=dict)
    max_input_chars: int = Field(default=20_000, ge=1)
    max_tool_result_chars: int = Field(default=200_000, ge=1)
    #: What the ``pii`` guardrail does with what it finds: rewrite to ``<EMAIL_1>``,
    #: refuse the text, or only report it.
    pii_action: Literal["redact", "block", "flag"] = "redact"
    #: Words that mark a text confidential (residency), in addition to detected PII.
    confidential_markers: list[str] = Field(
        default_factory=lambda: [
            "confidential",
            "internal only",
            "vertraulich",
            "confidentiel",
            "confidencial",
            "riservato",
        ]
    )
    #: ``residency``: known public contacts that do not make a text sensitive: e-mail
    #: addresses, e-mail domains (``"example.com"`` covers ``sales@example.com``) and
    #: phone numbers (compared by their last nine digits, so ``+31 30 800 4120`` also
    #: covers ``030 800 4120``). PII redaction is unaffected.
    residency_allow: list[str] = Field(default_factory=list)
    #: ``deny``: topics (words or regular expressions) a run must not discuss.
    deny_topics: list[str] = Field(default_factory=list)
    #: ``injection``: the layers per stage (see ``InjectionLayerSettings``).
    injection_layers: InjectionLayerSettings = InjectionLayerSettings()
    #: ``injection``: shorthand kept from before the layers were configurable: ``false``
    #: drops the classifier and the judge from every stage, ``true`` adds the classifier
    #: to the input stage; unset, ``injection_layers`` decides.
    classifier: bool | None = None
    #: ``injection`` judge: the tier whose local backends judge the grey zone, and how
    #: long a verdict may take before the classifier's threshold decides alone.
    judge_tier: str = "router"
    judge_timeout_s: float = Field(default=4.0, gt=0)
    #: ``grounding``: report unsupported answer sentences ("flag") or refuse the answer.
    grounding_action: Literal["flag", "block"] = "flag"
    #: ``grounding``: share of a sentence's content words one passage must contain.
    grounding_min_support: float = Field(default=0.5, ge=0.0, le=1.0)


# Which file the settings sources should read; set by load_settings for one construction.
_config_file: ContextVar[Path | None] = ContextVar("tierflow_config_file", default=None)


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


class _StandardEnvSource(PydanticBaseSettingsSource):
    """The variables users set for other tools too, mapped into our nested settings."""

    _MAP: Mapping[str, tuple[str, ...]] = {
        "MISTRAL_API_KEY": ("backends", "mistral", "api_key"),
        "OPENAI_API_KEY": ("backends", "openai", "api_key"),
        "OPENAI_BASE_URL": ("backends", "openai", "base_url"),
        "MISTRAL_BASE_URL": ("backends", "mistral", "base_url"),
        "TIERFLOW_LOCAL_MODEL": ("backends", "local", "model_path"),
        "TIERFLOW_LOCAL_URL": ("backends", "local", "base_url"),
        "TIERFLOW_SQL_URL": ("tools", "sql", "url"),
        "TIERFLOW_DOCS_DIR": ("tools", "retrieval", "docs_dir"),
        "TIERFLOW_DATABASE_URL": ("state", "database_url"),
    }

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for var, path in self._MAP.items():
            value = os.environ.get(var)
            if not value:
                continue
            node = out
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        return out


class BudgetSettings(_Section):
    """``[budget]``: what one run may spend before it is stopped with its partial result.

    ``None`` means unlimited. A stopped run keeps its checkpoint, so ``tierflow ask
    --thread ID`` continues it (with a fresh budget).
    """

    #: Requests to backends, fallbacks and retries included: a loop cannot run away.
    max_model_calls: int | None = Field(default=50, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    #: Priced from ``[prices]``; backends without a price count as free.
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_wall_s: float | None = Field(default=600.0, gt=0)

    @field_validator("*", mode="before")
    @classmethod
    def _unlimited(cls, value: Any) -> Any:
        # TOML has no null: "unlimited" (file or env) lifts a default limit.
        return None if isinstance(value, str) and value.strip() == "unlimited" else value


class TierflowSettings(BaseSettings):
    """Everything an operator configures. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="TIERFLOW_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    tiers: dict[str, TierSettings] = Field(default_factory=_default_tiers)
    backends: BackendsSettings = BackendsSettings()
    prices: dict[str, Price] = Field(default_factory=_default_prices)
    resilience: ResilienceSettings = ResilienceSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    budget: BudgetSettings = BudgetSettings()
    tools: ToolsSettings = ToolsSettings()
    router: RouterSettings = RouterSettings()
    guardrails: GuardrailsSettings = GuardrailsSettings()
    server: ServerSettings = ServerSettings()
    state: StateSettings = StateSettings()
    state_dir: Path = Field(default_factory=_default_state_dir)
    cache_dir: Path = Field(default_factory=_default_cache_dir)

    @field_validator("tiers", mode="after")
    @classmethod
    def _merge_default_tiers(cls, value: dict[str, TierSettings]) -> dict[str, TierSettings]:
        # A file that configures only [tiers.reasoning] keeps the default router tier.
        return {**_default_tiers(), **value}

    @field_validator("prices", mode="after")
    @classmethod
    def _merge_default_prices(cls, value: dict[str, Price]) -> dict[str, Price]:
        return {**_default_prices(), **value}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        data = _read_toml(path) if path is not None else {}
        return (
            init_settings,
            env_settings,
            _StandardEnvSource(settings_cls),
            _TomlSource(settings_cls, data),
        )

    def price(self, backend: BackendRef) -> Price | None:
        return self.prices.get(backend.id)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def find_config_file(explicit: Path | None = None) -> Path | None:
    """The file to read: an explicit path, ``$TIERFLOW_CONFIG``, or ``./tierflow.toml``."""
    if explicit is not None:
        return explicit
    env = os.environ.get("TIERFLOW_CONFIG")
    if env:
        return Path(env)
    local = Path.cwd() / CONFIG_FILE_NAME
    return local if local.is_file() else None


def load_settings(
    config_file: Path | Literal[False] | None = None, **overrides: Any
) -> TierflowSettings:
    """Load settings; any problem becomes a one-line :class:`ConfigError`.

    ``config_file``: the TOML file to read; ``None`` looks for one (``$TIERFLOW_CONFIG``,
    then ``./tierflow.toml``); ``False`` reads no file at all, whatever exists, so only
    the environment and ``overrides`` apply (tests, and applications configured in code)::

        settings = load_settings(False, tiers={"reasoning": {"backends": ["local"]}})
    """
    path = None if config_file is False else find_config_file(config_file)
    token = _config_file.set(path)
    try:
        return TierflowSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, path)) from None
    finally:
        _config_file.reset(token)


def _one_line(exc: ValidationError, path: Path | None) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in err and err["type"] not in ("missing", "value_error"):
        msg = f"{msg} (got {err['input']!r})"
    source = f"{path}: " if path is not None else "configuration: "
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}{where}: {msg}{more}"
