"""The embedded llama.cpp server (the only module that imports ``xllamacpp``).

``xllamacpp`` runs llama.cpp's own HTTP server inside this process, on 127.0.0.1 and a
free port, speaking the OpenAI chat-completions protocol. tierflow then talks to it with
the same client it uses for vLLM, so the embedded default exercises the production code
path. The server starts lazily on first use and stops at interpreter exit.
"""

from __future__ import annotations

import atexit
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tierflow.errors import LocalModelError


@dataclass(frozen=True, kw_only=True)
class LocalServerConfig:
    model_path: Path
    model_name: str
    n_ctx: int = 4096
    threads: int | None = None
    host: str = "127.0.0.1"
    port: int = 0  # 0: the OS picks a free port
    parallel: int = 2


class LocalServer:
    """One running embedded server. Use :func:`shared_server` for the process-wide one."""

    def __init__(self, config: LocalServerConfig) -> None:
        self.config = config
        self._server: Any = None
        self._url: str | None = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``http://127.0.0.1:PORT/v1``); starts the server."""
        self.start()
        assert self._url is not None
        return self._url + "/v1"

    def start(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            try:
                import xllamacpp
            except ImportError:
                raise LocalModelError(
                    "the embedded model runtime is not installed: pip install 'tierflow[local]'"
                ) from None
            params = xllamacpp.CommonParams()
            params.model.path = str(self.config.model_path)
            params.model_alias = {self.config.model_name}
            params.n_ctx = self.config.n_ctx * self.config.parallel
            params.n_parallel = self.config.parallel
            params.hostnames = [self.config.host]
            params.port = self.config.port
            params.verbosity = -1  # llama.cpp logs would drown the CLI's output
            if self.config.threads:
                params.cpuparams.n_threads = self.config.threads
                params.cpuparams_batch.n_threads = self.config.threads
            started = time.perf_counter()
            try:
                server = xllamacpp.Server(params)
            except Exception as exc:  # the binding raises plain RuntimeError/ValueError
                raise LocalModelError(
                    f"embedded server failed to load {self.config.model_path.name}: {exc}"
                ) from exc
            url = str(server.listening_address).rstrip("/")
            _wait_healthy(url, timeout=30.0)
            self.load_seconds = time.perf_counter() - started
            self._server, self._url = server, url

    def stop(self) -> None:
        with self._lock:
            server, self._server, self._url = self._server, None, None
        del server  # the binding stops its threads when the object is released


def _wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            try:
                resp = client.get(url + "/health")
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.05)
    raise LocalModelError(f"embedded server at {url} not healthy after {timeout:.0f}s ({last})")


_shared: dict[LocalServerConfig, LocalServer] = {}
_shared_lock = threading.Lock()


def shared_server(config: LocalServerConfig) -> LocalServer:
    """The process-wide server for this config (not started until first used)."""
    with _shared_lock:
        server = _shared.get(config)
        if server is None:
            server = _shared[config] = LocalServer(config)
        return server


@atexit.register
def _stop_all() -> None:
    with _shared_lock:
        servers = list(_shared.values())
        _shared.clear()
    for server in servers:
        server.stop()
