"""``tierflow ui``: the Streamlit console (``ui/app.py``) as a client of a ``tierflow
serve``, which it starts itself on a free loopback port when none is given.

The CLI never imports the console (they are independent drivers): it runs
``streamlit run`` on the app file, found by name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

SERVER_ENV = "TIERFLOW_SERVER_URL"
KEY_ENV = "TIERFLOW_API_KEY"
#: How long a self-started server may take to answer /ok (it loads no model to start).
START_TIMEOUT_S = 60.0


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def app_file() -> Path:
    """``ui/app.py`` of the installed package (``tierflow.ui``), found without importing it."""
    spec = importlib.util.find_spec("tierflow.ui")
    if spec is None or spec.origin is None:
        raise _fail("the console package tierflow.ui is not installed")
    return Path(spec.origin).parent / "app.py"


def sign_in_configured(cwd: Path | None = None) -> bool:
    """Streamlit's OIDC sign-in (``st.login``) is configured: an ``[auth]`` table in
    ``.streamlit/secrets.toml`` (here or in the home folder)."""
    import tomllib

    for folder in (cwd or Path.cwd(), Path.home()):
        path = folder / ".streamlit" / "secrets.toml"
        try:
            if "auth" in tomllib.loads(path.read_text(encoding="utf-8")):
                return True
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
    return False


def _loopback(host: str) -> bool:
    """``tierflow.server.auth.is_loopback``, restated: importing the server package loads
    the whole engine (about 4 s), too slow for refusing a bad ``--host``."""
    import ipaddress

    host = host.strip().removeprefix("[").removesuffix("]")
    try:
        return host.lower() == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> str | None:
    """None once ``url``/ok answers; otherwise why not (the server exited, or timed out)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            last = [line for line in err.splitlines() if line.strip()][-1:] or ["no output"]
            return f"tierflow serve exited ({proc.returncode}): {last[0]}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ok", timeout=1.0).status_code == 200:
                return None
        time.sleep(0.1)  # polling a port that is not open yet: nothing to wait on instead
    return f"tierflow serve did not answer on {url} within {timeout_s:.0f} s"


@contextlib.contextmanager
def own_server(config: Path | None) -> Iterator[str]:
    """``tierflow serve`` on a free loopback port for as long as the block runs."""
    port = free_port()
    cmd = [sys.executable, "-m", "tierflow", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        why = _ready(url, proc, START_TIMEOUT_S)
        if why is not None:
            raise _fail(why)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ui(
    server: Annotated[
        str | None,
        typer.Option(
            help=f"URL of a tierflow serve (default ${SERVER_ENV}; none: start one on "
            f"loopback). The API key comes from ${KEY_ENV}."
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port of the console.", min=1, max=65535)] = 8501,
    host: Annotated[
        str, typer.Option(help="Address to bind (loopback unless sign-in is configured).")
    ] = "127.0.0.1",
    config: Annotated[
        Path | None, typer.Option(help="tierflow.toml for the server this starts.")
    ] = None,
) -> None:
    """The Streamlit console: chat with the graphs, approve tool calls, follow runs."""
    if importlib.util.find_spec("streamlit") is None:
        raise _fail("tierflow ui needs streamlit: pip install 'tierflow[ui]'")
    if not _loopback(host) and not sign_in_configured():
        raise _fail(
            f"refusing to listen on {host} without sign-in: configure [auth] in "
            ".streamlit/secrets.toml (st.login), or listen on 127.0.0.1"
        )
    target = app_file()
    url = server or os.environ.get(SERVER_ENV) or None
    # SIGTERM ends the console like Ctrl-C, so the server it started stops too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        if url is None:
            typer.echo("starting tierflow serve on loopback…", err=True)
            url = stack.enter_context(own_server(config))
        env = {**os.environ, SERVER_ENV: url.rstrip("/")}
        cmd = [
            sys.executable, "-m", "streamlit", "run", str(target),
            "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
        ]  # fmt: skip
        typer.echo(f"console on http://{host}:{port} (server {url})", err=True)
        proc = subprocess.Popen(cmd, env=env)
        try:
            code = proc.wait()
        except (KeyboardInterrupt, SystemExit):
            proc.terminate()
            code = proc.wait()
        if code not in (0, -signal.SIGTERM, 143):
            raise typer.Exit(1)
