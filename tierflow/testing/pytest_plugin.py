"""pytest plugin (registered as ``tierflow``): no unplanned network in tests.

Every test runs with outbound connections limited to loopback and Unix sockets; anything
else raises :class:`UnplannedNetworkCall`, so a test that would silently reach a real API
fails instead. Mark a test ``@pytest.mark.network`` to opt out. Sockets opened by native
code (llama.cpp's server, ddgs's Rust client) are not seen by this guard.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class UnplannedNetworkCall(AssertionError):
    """A test tried to connect somewhere other than this machine."""


def _is_local(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) and address else address
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(real: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        if self.family != socket.AF_UNIX and not _is_local(address):
            raise UnplannedNetworkCall(f"test tried to connect to {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def _tierflow_no_network(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("network"):
        yield
        return
    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", _guarded(_real_connect))
    mp.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))
    try:
        yield
    finally:
        mp.undo()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "network: the test may open non-loopback connections")
