"""Each backend kind through its real client (langchain-openai / langchain-mistralai)
against the scripted HTTP server: real sockets, real request bodies, real errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

from tierflow import Runner
from tierflow.agents._turn import AgentTurnPlan, ModelTurn
from tierflow.errors import TierExhausted
from tierflow.models.backends import BackendState, build_backend
from tierflow.models.tiers import Tier, TierSet
from tierflow.settings import BackendRef, TierflowSettings, load_settings
from tierflow.testing import Fault, Reply, ScriptedServer
from tierflow.tools import tool

Q = [HumanMessage("Hello?")]


class Route(BaseModel):
    route: str


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(tmp_path: Path, **backends: dict[str, object]) -> TierflowSettings:
    return load_settings(state_dir=tmp_path / "state", backends=backends)


@pytest.mark.parametrize(
    ("backend_id", "section", "flavor", "provider"),
    [
        ("openai:gpt-4o", "openai", "openai", "openai"),
        ("vllm:mistralai/Ministral-8B-Instruct-2410", "vllm", "openai", "vllm"),
        ("mistral:mistral-large-latest", "mistral", "mistral", "mistral_ai"),
    ],
)
async def test_backend_kind_through_its_real_client(
    tmp_path: Path, backend_id: str, section: str, flavor: str, provider: str
) -> None:
    with ScriptedServer(flavor=flavor, api_key="sk-test") as srv:  # type: ignore[arg-type]
        settings = _settings(
            tmp_path, **{section: {"base_url": srv.base_url, "api_key": "sk-test"}}
        )
        backend = build_backend(BackendRef.parse(backend_id), settings)
        assert backend.provider == provider
        srv.enqueue(Reply.text("Hi there", input_tokens=11, output_tokens=2))
        message = await backend.chat_model().ainvoke(Q)
        assert message.content == "Hi there"
        assert message.usage_metadata is not None
        assert (
            message.usage_metadata["input_tokens"],
            message.usage_metadata["output_tokens"],
        ) == (11, 2)
        body = srv.requests[-1].body
        assert body["model"] == BackendRef.parse(backend_id).model
        assert body["messages"][-1] == {"role": "user", "content": "Hello?"}
        assert srv.requests[-1].headers["authorization"] == "Bearer sk-test"

        status = await backend.probe()
        assert status.state is BackendState.REACHABLE and status.latency_ms is not None


@pytest.mark.parametrize(("section", "flavor"), [("openai", "openai"), ("mistral", "mistral")])
async def test_structured_output_sends_a_strict_json_schema(
    tmp_path: Path, section: str, flavor: str
) -> None:
    with ScriptedServer(flavor=flavor) as srv:  # type: ignore[arg-type]
        settings = _settings(tmp_path, **{section: {"base_url": srv.base_url, "api_key": "k"}})
        settings = settings.model_copy(
            update={
                "tiers": {
                    "t": settings.tiers["reasoning"].model_copy(
                        update={"backends": [BackendRef.parse(section)]}
                    )
                }
            }
        )
        srv.enqueue(Reply.json({"route": "code"}))
        result = await TierSet.from_settings(settings)["t"].acall(Q, output_type=Route)
        assert result.parsed == Route(route="code")
        fmt = srv.requests[-1].body["response_format"]
        assert fmt["type"] == "json_schema"
        assert fmt["json_schema"]["strict"] is True
        assert fmt["json_schema"]["schema"]["properties"]["route"]["type"] == "string"


async def test_hosted_without_key_is_unavailable_and_never_called(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        settings = _settings(tmp_path, openai={"base_url": srv.base_url})
        backend = build_backend(BackendRef.parse("openai:gpt-4o"), settings)
        assert backend.unavailable_reason() == "no API key (set OPENAI_API_KEY)"
        status = await backend.probe()
        assert status.state is BackendState.UNAVAILABLE
        assert srv.requests == []


async def test_chain_falls_back_from_a_dead_backend_to_the_next(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    with ScriptedServer() as srv:
        settings = load_settings(
            state_dir=tmp_path,
            backends={
                "mistral": {"base_url": dead, "api_key": "k"},
                "openai": {"base_url": srv.base_url, "api_key": "k"},
            },
        )
        srv.enqueue(Reply.text("from openai"))
        tier = TierSet.from_settings(settings)["reasoning"]
        result = await tier.acall(Q)
        assert result.message.content == "from openai"
        assert result.backend.id == "openai:gpt-4o"
        assert result.fallback_from == "mistral:mistral-large-latest"
        first = result.attempts[0]
        assert first.outcome == "failed" and first.error_type is not None
        assert "Connect" in first.error_type or "Connect" in (first.reason or "")


@pytest.mark.parametrize(
    "fault",
    [
        Fault.status(503, body={"error": {"message": "overloaded"}}),
        Fault.malformed(),
        Fault.empty_choices(),
        Fault.drop(),
    ],
    ids=["503", "malformed", "empty-choices", "drop"],
)
async def test_a_failing_hosted_call_falls_back_with_a_reason(tmp_path: Path, fault: Fault) -> None:
    with ScriptedServer() as hosted, ScriptedServer() as vllm:
        settings = load_settings(
            state_dir=tmp_path,
            tiers={"reasoning": {"backends": ["openai:gpt-4o", "vllm:small"]}},
            backends={
                "openai": {"base_url": hosted.base_url, "api_key": "k"},
                "vllm": {"base_url": vllm.base_url},
            },
        )
        hosted.enqueue(fault)
        vllm.enqueue(Reply.text("self-hosted answer"))
        result = await TierSet.from_settings(settings)["reasoning"].acall(Q)
        assert result.message.content == "self-hosted answer"
        assert result.attempts[0].outcome == "failed" and result.attempts[0].reason
        assert len(hosted.requests) == 1  # SDK retries are off: this layer owns the budget


async def test_stalled_backend_is_cut_by_the_request_timeout(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        settings = load_settings(
            state_dir=tmp_path,
            tiers={"reasoning": {"backends": ["openai:gpt-4o"]}},
            backends={"openai": {"base_url": srv.base_url, "api_key": "k"}},
            resilience={"request_timeout_s": 0.5},
        )
        srv.enqueue(Fault.stall(seconds=30))
        with pytest.raises(TierExhausted, match="Timeout"):
            await TierSet.from_settings(settings)["reasoning"].acall(Q)


async def test_probe_reports_auth_failure_and_unreachable(tmp_path: Path) -> None:
    with ScriptedServer(api_key="right") as srv:
        settings = load_settings(
            state_dir=tmp_path,
            backends={
                "openai": {"base_url": srv.base_url, "api_key": "wrong"},
                "vllm": {"base_url": f"http://127.0.0.1:{_closed_port()}/v1"},
            },
        )
        openai = build_backend(BackendRef.parse("openai:gpt-4o"), settings)
        assert (await openai.probe()).state is BackendState.AUTH_FAILED
        vllm = build_backend(BackendRef.parse("vllm:x"), settings)
        assert (await vllm.probe()).state is BackendState.UNREACHABLE


async def test_local_backend_can_use_an_external_server_url(tmp_path: Path) -> None:
    """`TIERFLOW_LOCAL_URL` points `local` at a running `tierflow local serve` (or vLLM)."""
    with ScriptedServer() as srv:
        settings = load_settings(state_dir=tmp_path, backends={"local": {"base_url": srv.base_url}})
        backend = build_backend(BackendRef.parse("local"), settings)
        srv.enqueue(Reply.text("external"))
        assert (await backend.chat_model().ainvoke(Q)).content == "external"
        assert (await backend.probe()).state is BackendState.REACHABLE


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


WEATHER = [HumanMessage("Weather in Paris?")]


async def test_vllm_with_native_tool_calling_sends_tools(tmp_path: Path) -> None:
    """A self-hosted server with good native tool calls: `vllm:` (residency-local), no
    dummy `openai:` key, `tools=[...]` on the wire and no schema."""
    with ScriptedServer() as srv:
        settings = _settings(tmp_path, vllm={"base_url": srv.base_url, "tool_calling": "native"})
        backend = build_backend(BackendRef.parse("vllm:Qwen/Qwen2.5-72B-Instruct"), settings)
        assert (backend.tool_mode, backend.local) == ("native", True)
        srv.enqueue(Reply.tool_calls([("get_weather", {"city": "Paris"})]))
        # sensitive: only a local backend may take it, and this one is local
        result = await Tier(name="t", backends=[backend]).acall(
            WEATHER, plan=AgentTurnPlan([get_weather]), sensitive=True
        )
    body = srv.requests[-1].body
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]
    assert "response_format" not in body
    assert body["messages"] == [{"role": "user", "content": "Weather in Paris?"}]
    assert isinstance(result.parsed, ModelTurn)
    assert [(c["name"], c["args"]) for c in result.parsed.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]


@pytest.mark.parametrize("tool_calling", ["constrained", "auto"])
async def test_vllm_with_constrained_tool_calling_sends_a_schema(
    tmp_path: Path, tool_calling: str
) -> None:
    with ScriptedServer() as srv:
        settings = _settings(
            tmp_path, vllm={"base_url": srv.base_url, "tool_calling": tool_calling}
        )
        backend = build_backend(BackendRef.parse("vllm:small"), settings)
        assert backend.tool_mode == "constrained"
        call = {"name": "get_weather", "arguments": {"city": "Oslo"}}
        srv.enqueue(Reply.json({"tool_calls": [call]}))
        result = await Tier(name="t", backends=[backend]).acall(
            WEATHER, plan=AgentTurnPlan([get_weather])
        )
    body = srv.requests[-1].body
    assert "tools" not in body
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "agent_turn"
    assert "get_weather(city: string)" in body["messages"][0]["content"]  # the catalogue
    assert isinstance(result.parsed, ModelTurn)
    assert [(c["name"], c["args"]) for c in result.parsed.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]


@pytest.mark.parametrize(
    ("backend_id", "section", "tool_calling", "mode"),
    [
        ("local", "local", "auto", "constrained"),
        ("local", "local", "native", "native"),
        ("openai:gpt-4o", "openai", "auto", "native"),
        ("openai:gpt-4o", "openai", "constrained", "constrained"),
        ("mistral", "mistral", "auto", "native"),
        ("mistral", "mistral", "constrained", "constrained"),
    ],
)
def test_tool_mode_comes_from_the_setting(
    tmp_path: Path, backend_id: str, section: str, tool_calling: str, mode: str
) -> None:
    settings = _settings(tmp_path, **{section: {"tool_calling": tool_calling}})
    assert build_backend(BackendRef.parse(backend_id), settings).tool_mode == mode


async def test_runner_builds_each_client_once_when_it_opens(tmp_path: Path) -> None:
    """Clients are built when the runner opens, not per call; the embedded server is not
    started for it (its model file here does not even exist): only a request would."""
    with ScriptedServer() as srv:
        settings = load_settings(
            False,
            state_dir=tmp_path / "state",
            tiers={"reasoning": {"backends": ["local", "vllm:small"]}},
            backends={
                "vllm": {"base_url": srv.base_url},
                "local": {"model_path": str(tmp_path / "missing.gguf")},
            },
        )
        srv.set_default(Reply.text("hello"))
        runner = Runner(settings)
        local, vllm = runner.tiers["reasoning"].backends
        assert local.built_model() is None and vllm.built_model() is None
        async with runner:
            built = local.built_model(), vllm.built_model()
            assert built[0] is not None and built[1] is not None  # before any call
            first = await runner.ask("Hi?", graph="direct")
            second = await runner.ask("Hi again?", graph="direct")
            assert (local.built_model(), vllm.built_model()) == built
            assert local.built_model() is built[0] and vllm.built_model() is built[1]
    assert len(srv.requests) == 2
    for record in (first, second):
        assert record.answer == "hello"
        (step,) = record.steps
        local_attempt = step.attempts[0]
        assert local_attempt.backend == "local" and local_attempt.outcome == "failed"
        assert "local model file not found" in (local_attempt.reason or "")


async def test_a_runner_not_opened_builds_its_clients_on_first_use(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        settings = load_settings(
            False,
            state_dir=tmp_path / "state",
            tiers={"reasoning": {"backends": ["vllm:small"]}},
            backends={"vllm": {"base_url": srv.base_url}},
        )
        srv.set_default(Reply.text("hello"))
        runner = Runner(settings)
        (vllm,) = runner.tiers["reasoning"].backends
        assert vllm.built_model() is None
        await runner.ask("Hi?", graph="direct")
        built = vllm.built_model()
        assert built is not None
        await runner.ask("Hi again?", graph="direct")
        assert vllm.built_model() is built
    assert len(srv.requests) == 2
