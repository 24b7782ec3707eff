"""API-key auth (tierflow.server.auth): a tiny FastAPI app using the dependency, served
by uvicorn on 127.0.0.1 and called with httpx, as `langgraph-sdk` would call the server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI

from tierflow.errors import ConfigError, UserError
from tierflow.server.auth import (
    check_bind,
    is_loopback,
    key_id,
    load_api_keys,
    require_key,
    use_api_keys,
)

KEYS = frozenset({"k-alpha-0123456789", "k-beta-9876543210"})


def _app(keys: frozenset[str] | None) -> FastAPI:
    app = FastAPI()
    use_api_keys(app, keys)

    @app.get("/whoami")
    async def whoami(owner: str | None = Depends(require_key)) -> dict[str, str | None]:
        return {"owner": owner}

    return app


@pytest.fixture
def serve() -> Iterator[Callable[[FastAPI], str]]:
    """Serve apps with uvicorn in a thread. The socket is bound and listening before the
    server starts, so a request made at once waits in the backlog: no polling for start."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: FastAPI) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_missing_and_wrong_keys_get_401_with_a_one_line_json_error(
    serve: Callable[[FastAPI], str],
) -> None:
    url = serve(_app(KEYS))
    with httpx.Client(base_url=url, timeout=5) as client:
        missing = client.get("/whoami")
        wrong = client.get("/whoami", headers={"x-api-key": "k-alpha-012345678"})  # a prefix
        bearer = client.get("/whoami", headers={"authorization": "Bearer k-alpha-0123456789"})
    for resp in (missing, wrong, bearer):
        assert resp.status_code == 401
        assert resp.headers["content-type"] == "application/json"
        assert "\n" not in resp.text
        assert resp.headers["www-authenticate"] == 'ApiKey header="x-api-key"'
    assert missing.json() == {"detail": "missing API key: send it in the x-api-key header"}
    assert wrong.json() == {"detail": "invalid API key"}
    assert "k-alpha" not in wrong.text


def test_the_right_key_gets_200_and_its_owner_id_not_the_key(
    serve: Callable[[FastAPI], str],
) -> None:
    url = serve(_app(KEYS))
    with httpx.Client(base_url=url, timeout=5) as client:
        alpha = client.get("/whoami", headers={"x-api-key": "k-alpha-0123456789"})
        beta = client.get("/whoami", headers={"x-api-key": "k-beta-9876543210"})
    assert alpha.status_code == beta.status_code == 200
    owner = alpha.json()["owner"]
    assert owner == key_id("k-alpha-0123456789")
    assert len(owner) == 16 and "k-alpha" not in owner
    assert beta.json()["owner"] == key_id("k-beta-9876543210") != owner
    # stable: the same key names the same owner in another process or deployment
    assert key_id("k-alpha-0123456789") == "09e6392768e8b79e"  # a change orphans every thread


def test_without_keys_every_caller_is_anonymous(serve: Callable[[FastAPI], str]) -> None:
    url = serve(_app(None))
    resp = httpx.get(url + "/whoami", headers={"x-api-key": "anything"}, timeout=5)
    assert resp.status_code == 200 and resp.json() == {"owner": None}


def test_an_app_that_never_set_keys_fails_closed(serve: Callable[[FastAPI], str]) -> None:
    app = FastAPI()

    @app.get("/whoami")
    async def whoami(owner: str | None = Depends(require_key)) -> dict[str, str | None]:
        return {"owner": owner}

    resp = httpx.get(serve(app) + "/whoami", timeout=5)
    assert resp.status_code == 500


def test_keys_from_the_environment() -> None:
    assert load_api_keys({}) is None
    assert load_api_keys({"TIERFLOW_API_KEYS": "  "}) is None
    assert load_api_keys({"TIERFLOW_API_KEYS": " a1, b2 ,,a1 "}) == {"a1", "b2"}
    with pytest.raises(ConfigError, match="no key in ','"):
        load_api_keys({"TIERFLOW_API_KEYS": " , "})


def test_keys_from_a_file(tmp_path: Path, serve: Callable[[FastAPI], str]) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("k-one-aaaaaaaaaa\n\n   \n  k-two-bbbbbbbbbb  \n")
    keys = load_api_keys({"TIERFLOW_API_KEYS": f"@{path}"})
    assert keys == {"k-one-aaaaaaaaaa", "k-two-bbbbbbbbbb"}
    url = serve(_app(keys))
    resp = httpx.get(url + "/whoami", headers={"x-api-key": "k-two-bbbbbbbbbb"}, timeout=5)
    assert resp.json() == {"owner": key_id("k-two-bbbbbbbbbb")}

    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError) as exc:
        load_api_keys({"TIERFLOW_API_KEYS": f"@{missing}"})
    assert str(exc.value) == (
        f"TIERFLOW_API_KEYS: cannot read the key file {missing}: No such file or directory"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ConfigError, match="holds no key"):  # never "auth off" by accident
        load_api_keys({"TIERFLOW_API_KEYS": f"@{empty}"})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "localhost", "::1", "[::1]"])
def test_loopback_may_be_served_without_keys(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "api.example.com"])
def test_beyond_loopback_needs_keys(host: str) -> None:
    with pytest.raises(UserError) as exc:
        check_bind(host, None)
    message = str(exc.value)
    assert "\n" not in message and "TIERFLOW_API_KEYS" in message
    with pytest.raises(UserError):
        check_bind(host, frozenset())
    check_bind(host, KEYS)
