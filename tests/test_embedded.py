"""The real embedded model: llama.cpp via xllamacpp serving the packaged GGUF.

These run in the default test command (the model ships in the `local` extra); each CLI
test is a real subprocess with no API keys and no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

from tierflow.models.backends import BackendState, LocalBackend
from tierflow.models.tiers import Tier
from tierflow.settings import BackendRef, TierflowSettings

pytestmark = pytest.mark.embedded


class Sentiment(BaseModel):
    label: Literal["positive", "negative"]
    confidence: Literal["low", "high"]


async def test_embedded_server_answers_under_constrained_decoding(
    settings: TierflowSettings,
) -> None:
    backend = LocalBackend(BackendRef.parse("local"), settings=settings)
    tier = Tier(name="router", backends=[backend])
    result = await tier.acall(
        [SystemMessage("Classify the review."), HumanMessage("I loved it, wonderful product!")],
        output_type=Sentiment,
    )
    assert isinstance(result.parsed, Sentiment)
    assert result.parsed.label == "positive"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    # the server really is a loopback OpenAI-compatible endpoint
    url = backend.server().base_url
    assert url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(timeout=5) as client:
        models = (await client.get(url + "/models")).json()
    assert models["object"] == "list"
    status = await backend.probe()
    assert status.state is BackendState.MODEL_LOADED


def _cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tierflow", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=full_env,
        cwd=cwd,
    )


def test_ask_json_end_to_end_falls_back_to_local(tmp_path: Path) -> None:
    proc = _cli(
        "ask",
        "--json",
        "--graph",
        "direct",
        "--thread",
        "e2e",
        "What is the capital of France?",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    record: dict[str, Any] = json.loads(proc.stdout)
    assert set(record) >= {
        "answer",
        "route",
        "trace_id",
        "degraded",
        "steps",
        "guardrails",
        "usage",
    }
    assert record["degraded"] is False
    assert record["answer"].strip()  # what a 0.5B model says is the answer benchmark's job
    assert record["route"] is None  # the direct graph has no router
    assert len(record["trace_id"]) == 32
    (answer,) = record["steps"]
    assert answer["node"] == "generalist" and answer["tier"] == "reasoning"
    assert answer["backend"] == "local"
    assert answer["model"] == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert answer["fallback_from"] == "mistral:mistral-large-latest"
    assert "mistral:mistral-large-latest: no API key" in answer["fallback_reason"]
    assert "openai:gpt-4o: no API key" in answer["fallback_reason"]
    assert [a["outcome"] for a in answer["attempts"]] == ["unavailable", "unavailable", "ok"]
    for step in record["steps"]:
        assert set(step) >= {"node", "tier", "backend", "model", "fallback_from", "tool_calls"}
    usage = record["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0 and usage["cost_usd"] == 0.0

    # the thread continues in a new process, from the SQLite checkpoint
    again = _cli(
        "ask", "--json", "--graph", "direct", "--thread", "e2e", "And of Italy?", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["thread_id"] == "e2e" and second["answer"].strip()
    # the model was sent the first exchange too: the thread was read back from the file
    assert second["usage"]["input_tokens"] > usage["input_tokens"]


def test_ask_plain_output_says_which_backend_answered(tmp_path: Path) -> None:
    proc = _cli("ask", "--graph", "direct", "Say hello.", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "tier reasoning · local" in proc.stdout
    assert "no API key" in proc.stdout


def test_doctor_reports_each_backend(tmp_path: Path) -> None:
    proc = _cli("doctor", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    states = {b["backend"]: b["state"] for b in report["backends"]}
    assert states == {
        "local": "model loaded",
        "mistral:mistral-large-latest": "unavailable",
        "openai:gpt-4o": "unavailable",
    }
    assert report["tiers"]["reasoning"] == [
        "mistral:mistral-large-latest",
        "openai:gpt-4o",
        "local",
    ]


def test_missing_model_file_is_a_one_line_error(tmp_path: Path) -> None:
    proc = _cli(
        "ask", "hi", env={"TIERFLOW_LOCAL_MODEL": str(tmp_path / "none.gguf")}, cwd=tmp_path
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "local model file not found" in lines[0] and "Traceback" not in proc.stderr


def test_local_serve_runs_in_the_foreground_until_terminated(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierflow", "local", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the model is loaded
        assert line.startswith("serving qwen2.5-coder-0.5b-instruct-q4_k_m at http://127.0.0.1:")
        url = line.split(" at ", 1)[1].strip()
        reply = httpx.post(
            url + "/chat/completions",
            json={"messages": [{"role": "user", "content": "Say OK"}], "max_tokens": 5},
            timeout=60,
        ).json()
        assert reply["choices"][0]["message"]["content"]
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


@pytest.mark.parametrize(
    ("question", "route", "node", "tool"),
    [
        ("How many orders came from customers in France?", "data", "analyst", "sql_"),
        ("Write and run Python code that prints 2**20.", "code", "coder", "run_python"),
        ("How many days do I have to return an item?", "docs", "librarian", "retrieve"),
        (
            "What is the latest news about the European Central Bank?",
            "web",
            "researcher",
            "web_search",
        ),
    ],
    ids=["sql", "code", "docs", "web"],
)
def test_default_graph_routes_to_the_specialist_and_uses_its_tool(
    tmp_path: Path, question: str, route: str, node: str, tool: str
) -> None:
    proc = _cli("ask", "--json", question, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr  # 1: a clearly degraded answer
    assert "Traceback" not in proc.stderr
    record = json.loads(proc.stdout)
    assert record["route"] == route
    # decided before the model: by its cue words, else by the semantic router
    assert record["steps"][0]["backend"] in ("keywords", "semantic")
    calls = [c for s in record["steps"] if s["node"] == node for c in s["tool_calls"]]
    assert calls and all(c["name"].startswith(tool) for c in calls)
    # the embedded model is small: the specialist followed its workflow, and the answer's
    # numbers were checked against the tool results (plumbing, not wording)
    assert record["steps"][-1]["verified"] in (True, False)
    assert record["verified"] is all(s["verified"] is not False for s in record["steps"])
    if route == "web":  # no network here: the documents answer instead, and say so
        assert calls[0]["ok"] is True and calls[0]["answered_by"] == "retrieve"
        assert "web is unavailable" in record["answer"]
    else:
        assert any(c["ok"] for c in calls)
        assert proc.returncode == 0 and record["answer"]
    if route == "data":  # the answer shows the SQL that ran
        ran = [c["args"]["query"] for c in calls if c["name"] == "sql_query" and c["ok"]]
        # the first query that ran is the answer's; a second one cross-checks it
        assert ran and ran[0] in record["answer"]
