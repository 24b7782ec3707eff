"""The no-network guard that every test runs under."""

from __future__ import annotations

import socket

import pytest

from tierflow.testing import UnplannedNetworkCall


def test_connecting_beyond_loopback_fails_the_test() -> None:
    with socket.socket() as s, pytest.raises(UnplannedNetworkCall, match=r"192\.0\.2\.1"):
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed


def test_loopback_is_allowed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.socket() as client:
            client.connect(server.getsockname())
