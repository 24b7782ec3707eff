"""The issue's "done when", through the real command line in separate processes: the
reasoning tier's first backend is a hosted one that is down (a closed port); ``ask
--json`` still answers through the next backend and says why; the *next* process skips
the dead backend through its persisted open breaker (no connect at all); ``doctor
--json`` shows the breaker and the last error. Costs ~3 CLI start-ups (~2 s each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tierflow.testing import Reply, ScriptedServer
from tierflow.testing.sockets import closed_port


def _cli(cwd: Path, *args: str) -> tuple[int, Any, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tierflow", *args],
        cwd=cwd,
        env={**os.environ, "TIERFLOW_CONFIG": str(cwd / "tierflow.toml")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else proc.stdout
    return proc.returncode, out, proc.stderr


def test_a_dead_hosted_backend_costs_one_refused_connect_then_nothing(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    with ScriptedServer(flavor="openai", api_key="sk-ok") as openai:
        openai.set_default(Reply.text("Answered by the next backend."))
        (tmp_path / "tierflow.toml").write_text(
            f"""
state_dir = "{tmp_path / "state"}"
[tiers.router]
backends = ["vllm:none"]
[tiers.reasoning]
backends = ["mistral:mistral-large-latest", "openai:gpt-4o"]
[backends.mistral]
base_url = "{dead}"
api_key = "sk-mistral"
[backends.openai]
base_url = "{openai.base_url}"
api_key = "sk-ok"
[backends.vllm]
base_url = "{dead}"
"""
        )
        code, first, err = _cli(tmp_path, "ask", "What is a tier?", "--graph", "direct", "--json")
        assert code == 0, err
        step = first["steps"][-1]
        assert first["answer"] == "Answered by the next backend."
        assert (step["backend"], step["fallback_from"]) == (
            "openai:gpt-4o",
            "mistral:mistral-large-latest",
        )
        dead_attempt = step["attempts"][0]
        assert dead_attempt["outcome"] == "failed" and dead_attempt["failure"] == "connect"
        assert dead_attempt["breaker"] == "open" and dead_attempt["retries"] == 0
        assert step["fallback_reason"].startswith("mistral:mistral-large-latest: ConnectError")

        code, second, err = _cli(tmp_path, "ask", "And a backend?", "--graph", "direct", "--json")
        assert code == 0, err
        skipped = second["steps"][-1]["attempts"][0]
        assert skipped["outcome"] == "breaker_open"  # a new process, and no connect at all
        assert skipped["reason"].startswith("breaker open after ConnectError")
        assert skipped["duration_ms"] is None
        assert second["answer"] == "Answered by the next backend."

        code, doctor, err = _cli(tmp_path, "doctor", "--json")
        assert code == 0, err
        shown = {b["backend"]: b for b in doctor["backends"]}
        mistral = shown["mistral:mistral-large-latest"]
        assert mistral["state"] == "unreachable"
        assert mistral["breaker"]["state"] == "open" and mistral["breaker"]["failures"] == 1
        assert mistral["breaker"]["last_error"].startswith("ConnectError")
        assert mistral["breaker"]["opened_at"] and mistral["breaker"]["retry_at"]
        assert shown["openai:gpt-4o"]["breaker"] == {
            "state": "closed",
            "failures": 0,
            "opened_at": None,
            "retry_at": None,
            "last_error": None,
            "last_error_at": None,
        }


def test_a_bad_key_opens_the_breaker_at_once_and_doctor_says_so(tmp_path: Path) -> None:
    with ScriptedServer(flavor="mistral", api_key="right") as mistral:
        with ScriptedServer(flavor="openai") as openai:
            openai.set_default(Reply.text("fallback answer"))
            (tmp_path / "tierflow.toml").write_text(
                f"""
state_dir = "{tmp_path / "state"}"
[tiers.router]
backends = ["openai:gpt-4o"]
[tiers.reasoning]
backends = ["mistral:mistral-large-latest", "openai:gpt-4o"]
[backends.mistral]
base_url = "{mistral.base_url}"
api_key = "wrong"
[backends.openai]
base_url = "{openai.base_url}"
api_key = "k"
"""
            )
            code, record, err = _cli(tmp_path, "ask", "Hi?", "--graph", "direct", "--json")
            assert code == 0, err
            attempt = record["steps"][-1]["attempts"][0]
            assert (attempt["failure"], attempt["status_code"], attempt["retries"]) == (
                "auth",
                401,
                0,
            )
            assert attempt["breaker"] == "open"
            chats = [r for r in mistral.requests if r.path.endswith("/chat/completions")]
            assert len(chats) == 1  # not retried
            code, doctor, err = _cli(tmp_path, "doctor", "--json")
        assert code == 0, err
        row = next(b for b in doctor["backends"] if b["backend"].startswith("mistral"))
        assert row["state"] == "auth failed"
        assert row["breaker"]["state"] == "open"
        assert "401" in row["breaker"]["last_error"]
