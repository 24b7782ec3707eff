"""Dead endpoints on 127.0.0.1, for testing how clients fail before any HTTP is spoken.

- :func:`closed_port`: nothing listens, so a connect is *refused* at once (a stopped
  service, a wrong port).
- :class:`Blackhole`: something listens but never accepts, and its accept queue is full,
  so the kernel drops further SYNs and a connect *never completes*: the client waits for
  its connect timeout (a server wedged under load, a firewall dropping packets).
"""

from __future__ import annotations

import contextlib
import socket
from types import TracebackType

__all__ = ["Blackhole", "closed_port"]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Blackhole:
    """A listening socket whose backlog is filled, so new connections hang in SYN-SENT.

    Used as ``with Blackhole() as hole: ... hole.base_url``. Filling takes one short
    connect timeout (50 ms): the first connection that does not complete shows the queue
    is full.
    """

    def __init__(self, fill_timeout_s: float = 0.05, max_fill: int = 256) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._fillers: list[socket.socket] = []
        for _ in range(max_fill):
            conn = socket.socket()
            conn.settimeout(fill_timeout_s)
            try:
                conn.connect(("127.0.0.1", self.port))
            except OSError:  # TimeoutError included: the queue is full
                conn.close()
                return
            self._fillers.append(conn)
        self.close()
        raise RuntimeError(f"could not fill the accept queue of port {self.port}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        for conn in self._fillers:
            with contextlib.suppress(OSError):
                conn.close()
        self._fillers.clear()
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
