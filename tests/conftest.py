"""Shared fixtures. Every test runs isolated from the developer's config and keys.

``postgres``: a real PostgreSQL for the session, the Debian ``postgresql`` package's server
(``initdb``/``pg_ctl`` under ``/usr/lib/postgresql/*/bin``) on 127.0.0.1 with a free port,
``fsync=off``, stopped at the end. PostgreSQL refuses to run as root, so as root the server
runs as the ``postgres`` user (``runuser``). Missing binaries fail the tests that need it,
loudly. The SQL tool's shop and the server's state databases live in it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tierflow.settings import TierflowSettings, load_settings

_SCRUB = ("MISTRAL_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "MISTRAL_BASE_URL")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in list(os.environ):
        tierflow_var = var.startswith("TIERFLOW_") and var != "TIERFLOW_DEBUG"
        if var in _SCRUB or tierflow_var or var.startswith("OTEL_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)  # no ./tierflow.toml from the repo
    yield


@pytest.fixture
def settings(tmp_path: Path) -> TierflowSettings:
    """Default settings with state in the test's own folder (the model cache is shared)."""
    return load_settings(state_dir=tmp_path / "state")


APT_HINT = "install the server: apt-get update && apt-get install -y postgresql"


@dataclass
class PgCluster:
    port: int
    admin: str  # postgresql://tierflow@127.0.0.1:PORT (superuser, trust auth), no database
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, dbname: str) -> str:
        return f"{self.admin}/{dbname}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _bindir() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], log: Path | None = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}\n{tail}")


@contextmanager
def running_postgres() -> Iterator[PgCluster]:
    """initdb + pg_ctl start in a temporary folder; stopped and removed on exit."""
    bindir = _bindir()
    if bindir is None:
        pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found; {APT_HINT}")
    as_user: list[str] = []
    # Not tmp_path: as root the server runs as `postgres`, which must own its folder.
    root = Path(tempfile.mkdtemp(prefix="tierflow-pg-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.fail("running as root needs runuser (util-linux) to start PostgreSQL")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, user="postgres")
    data, log, port = root / "data", root / "server.log", _free_port()
    _run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "tierflow",
          "--auth=trust", "-E", "UTF8", "--no-sync"])  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log)]
    _run([*pg_ctl, "-o", options, "-w", "-t", "60", "start"], log)
    try:
        yield PgCluster(port=port, admin=f"postgresql://tierflow@127.0.0.1:{port}")
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """One real PostgreSQL for the session (see the module docstring)."""
    with running_postgres() as cluster:
        yield cluster
