"""`tierflow doctor --probe BACKEND`: the contract test of an OpenAI-compatible server.

Scripted servers (real HTTP on 127.0.0.1) that behave by rule: a compliant one passes
every check; one that rewrites tool-call ids, ignores `response_format` or ignores
`tool_choice` fails exactly the check about that. Then the real embedded llama.cpp
server, where the packaged 0.5B model cannot pass the native tool-call check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tierflow.errors import BackendUnavailable, UserError
from tierflow.models.probe import ROUND_TRIP_ID, probe_backend
from tierflow.settings import TierflowSettings, load_settings
from tierflow.testing import Fault, Reply, ScriptedServer

Body = dict[str, Any]


def _answers_tool_calls(body: Body) -> Reply | None:
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        return Reply.tool_calls([(choice["function"]["name"], {"city": "Paris"})])
    return None


def _answers_json(body: Body) -> Reply | None:
    if (body.get("response_format") or {}).get("type") == "json_schema":
        return Reply.json({"city": "Paris", "country": "France"})
    return None


def _unmatched_tool_results(messages: list[Body]) -> list[str]:
    """Tool results whose id answers no call of an assistant turn (OpenAI refuses them)."""
    called = {c["id"] for m in messages for c in m.get("tool_calls") or []}
    results = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    return [i for i in results if i not in called]


def _round_trip(body: Body, rewrite_ids: bool = False) -> Reply | Fault:
    messages = body["messages"]
    if rewrite_ids:  # a gateway giving every forwarded call its own id
        for i, m in enumerate(messages):
            for c in m.get("tool_calls") or []:
                c["id"] = f"call_gateway{i}"
    if bad := _unmatched_tool_results(messages):
        error = {"error": {"message": f"tool_call_id {bad[0]} answers no tool call"}}
        return Fault.status(400, body=error)
    return Reply.text("It is sunny in Paris, 18 °C.")


def compliant(body: Body) -> Reply | Fault:
    return _answers_tool_calls(body) or _answers_json(body) or _round_trip(body)


def rewrites_ids(body: Body) -> Reply | Fault:
    return _answers_tool_calls(body) or _answers_json(body) or _round_trip(body, True)


def ignores_response_format(body: Body) -> Reply | Fault:
    return _answers_tool_calls(body) or Reply.text("The capital of France is Paris.")


def wrong_json(body: Body) -> Reply | Fault:
    if body.get("response_format"):
        return Reply.json({"capital": "Paris"})
    return compliant(body)


def ignores_tool_choice(body: Body) -> Reply | Fault:
    if body.get("tool_choice"):
        return Reply.text('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    return compliant(body)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def _settings(srv: ScriptedServer, tmp_path: Path, tool_calling: str = "auto") -> TierflowSettings:
    return load_settings(
        False,
        state_dir=tmp_path / "state",
        backends={"vllm": {"base_url": srv.base_url, "tool_calling": tool_calling}},
    )


async def test_a_compliant_server_passes_every_check(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.set_default(compliant)
    report = await probe_backend("vllm:scripted-model", _settings(server, tmp_path))
    assert report.ok, report.to_json()
    assert [c.name for c in report.checks] == ["tool_call", "tool_call_ids", "json_schema"]
    assert report.backend == "vllm:scripted-model" and report.base_url == server.base_url
    # what the server was sent: a forced tool choice, the 9-character id both in the
    # assistant's call and in the tool result, a strict json_schema
    forced, trip, structured = (r.body for r in server.requests)
    assert forced["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert forced["model"] == "scripted-model" and forced["temperature"] == 0
    assert len(ROUND_TRIP_ID) == 9 and ROUND_TRIP_ID.isalnum()
    assert trip["messages"][1]["tool_calls"][0]["id"] == ROUND_TRIP_ID
    assert trip["messages"][2] == {
        "role": "tool",
        "tool_call_id": ROUND_TRIP_ID,
        "content": '{"temperature_c": 18, "sky": "sunny"}',
    }
    fmt = structured["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert set(fmt["json_schema"]["schema"]["required"]) == {"city", "country"}
    assert "sunny" in report.checks[1].detail


@pytest.mark.parametrize(
    ("behaviour", "failing", "reason"),
    [
        (rewrites_ids, "tool_call_ids", f"HTTP 400: 'tool_call_id {ROUND_TRIP_ID} answers no"),
        (ignores_response_format, "json_schema", "the answer is not JSON: 'The capital"),
        (wrong_json, "json_schema", "does not match the schema: city: Field required"),
        (ignores_tool_choice, "tool_call", "no tool call in the reply (finish_reason stop)"),
    ],
)
async def test_a_faulty_server_fails_the_check_about_its_fault(
    server: ScriptedServer,
    tmp_path: Path,
    behaviour: Callable[[Body], Reply | Fault],
    failing: str,
    reason: str,
) -> None:
    server.set_default(behaviour)
    report = await probe_backend("vllm:scripted-model", _settings(server, tmp_path))
    assert not report.ok
    verdicts = {c.name: c.ok for c in report.checks}
    assert verdicts == {name: name != failing for name in verdicts}
    failed = next(c for c in report.checks if c.name == failing)
    assert reason in failed.detail
    assert "\n" not in failed.detail


async def test_a_failed_tool_call_check_says_when_agents_do_not_need_native_calls(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.set_default(ignores_tool_choice)
    constrained = await probe_backend("vllm:m", _settings(server, tmp_path))
    native = await probe_backend("vllm:m", _settings(server, tmp_path, tool_calling="native"))
    assert "constrained decoding" in (constrained.checks[0].note or "")
    assert native.checks[0].note is None


async def test_an_unreachable_server_fails_each_check_with_the_address(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        settings = _settings(srv, tmp_path)
    report = await probe_backend("vllm:gone", settings)
    assert [c.ok for c in report.checks] == [False, False, False]
    assert all(c.detail == f"ConnectError at {srv.base_url}" for c in report.checks)


async def test_backend_ids_are_parsed_once_and_mistral_is_refused(tmp_path: Path) -> None:
    settings = load_settings(False, state_dir=tmp_path)
    with pytest.raises(UserError, match="unknown backend kind 'vlm'"):
        await probe_backend("vlm:x", settings)
    with pytest.raises(UserError, match="uses Mistral's own API"):
        await probe_backend("mistral:mistral-large-latest", settings)
    with pytest.raises(BackendUnavailable, match="no API key"):
        await probe_backend("openai:gpt-4o", settings)


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "tierflow", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**full_env, **env},
        cwd=cwd,
    )


def test_cli_exit_codes_table_and_json(server: ScriptedServer, tmp_path: Path) -> None:
    env = {"TIERFLOW_BACKENDS__VLLM__BASE_URL": server.base_url, "COLUMNS": "200"}
    server.set_default(compliant)
    ok = _cli("doctor", "--probe", "vllm:scripted-model", "--json", env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True

    server.set_default(ignores_response_format)
    bad = _cli("doctor", "--probe", "vllm:scripted-model", env=env, cwd=tmp_path)
    assert bad.returncode == 1
    assert "response_format json_schema honoured" in bad.stdout
    assert "failed" in bad.stdout and "the answer is not JSON" in bad.stdout

    usage = _cli("doctor", "--probe", "nope", env=env, cwd=tmp_path)
    assert usage.returncode == 2
    assert usage.stderr.count("\n") == 1 and "unknown backend kind 'nope'" in usage.stderr


@pytest.mark.embedded
async def test_the_embedded_server_runs_the_contract(settings: TierflowSettings) -> None:
    """The packaged Qwen2.5-Coder-0.5B under llama.cpp: the id round trip and the
    json_schema (a grammar) pass; a *native* tool call cannot: for a forced tool_choice
    the model writes the call as text, so the check fails, with the note that tierflow's
    agents drive this backend by constrained decoding instead."""
    report = await probe_backend("local", settings)
    checks = {c.name: c for c in report.checks}
    assert report.base_url.startswith("http://127.0.0.1:")
    assert checks["json_schema"].ok, checks["json_schema"].detail
    assert '"country":"France"' in checks["json_schema"].detail
    assert checks["tool_call_ids"].ok, checks["tool_call_ids"].detail
    assert not checks["tool_call"].ok
    assert checks["tool_call"].detail.startswith("no tool call in the reply")
    assert "constrained decoding" in (checks["tool_call"].note or "")
    assert not report.ok
