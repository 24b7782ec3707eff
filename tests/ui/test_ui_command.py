"""``tierflow ui`` as a user runs it: a real subprocess that starts its own ``tierflow
serve`` on loopback, serves the console, and stops both on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import free_port


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    return {**env, "TIERFLOW_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path)}


def test_ui_starts_its_own_server_and_stops_it_on_exit(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierflow", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = ""
        while "console on" not in line:
            line = proc.stderr.readline()
            assert line, f"tierflow ui exited early ({proc.poll()})"
        server = re.search(r"\(server (http://127\.0\.0\.1:\d+)\)", line)
        assert server is not None, line
        assert httpx.get(f"{server[1]}/ok", timeout=5).json() == {"ok": True}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)  # streamlit is not listening yet
        else:
            pytest.fail("the console never answered")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server[1]}/ok", timeout=2)  # the server it started is gone


def test_ui_refuses_a_public_address_without_sign_in(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tierflow", "ui", "--host", "0.0.0.0"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: refusing to listen on 0.0.0.0 without sign-in: configure [auth] in "
        ".streamlit/secrets.toml (st.login), or listen on 127.0.0.1"
    ]
