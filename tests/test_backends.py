"""Each backend kind through its real client (langchain-openai / langchain-mistralai)
against the scripted HTTP server: real sockets, real request bodies, real errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

from tierflow.errors import TierExhausted
from tierflow.models.backends import BackendState, build_backend
from tierflow.models.tiers import TierSet
from tierflow.settings import BackendRef, TierflowSettings, load_settings
from tierflow.testing import Fault, Reply, ScriptedServer

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
