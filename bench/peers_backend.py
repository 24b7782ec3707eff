"""The peers benchmark's model: a ScriptedServer answering by rule, in a process of its own.

Each run asks ``Add A and B. [run MARKER]``. The rule answers by request content, so any
number of runs can be in flight at once: a request without a tool message gets a call to
``add(a=A, b=B)``; one with a tool message gets ``The sum is N.``, N read from the tool
result (``sum=N``), so the right final text proves the tool ran and its result went back.
Every reply waits ``latency`` seconds first (``Reply.delay``: the handler thread sleeps).

The server counts every HTTP request it receives by the run marker in its body (a request
without one counts under ``""``), and hands the counts over on request through its stdin
and stdout, so the parent checks each run made exactly two calls. It runs in a child
process: its CPU is in no framework's figure.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

MARKER = re.compile(r"\[run ([\w-]+)\]")
_OPERANDS = re.compile(r"Add (-?\d+) and (-?\d+)")
_SUM = re.compile(r"sum=(-?\d+)")


def question(a: int, b: int, marker: str) -> str:
    return f"Add {a} and {b}. [run {marker}]"


def answer(a: int, b: int) -> str:
    """The final text every framework must return."""
    return f"The sum is {a + b}."


def tool_result(a: int, b: int) -> str:
    """What the ``add`` tool returns, in every framework."""
    return f"sum={a + b}"


def _text(content: Any) -> str:
    """A message's content as text (a string, or a list of text parts)."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _rule(latency: float) -> Any:
    from tierflow.testing import Reply

    def rule(body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        tools = [_text(m.get("content")) for m in messages if m.get("role") == "tool"]
        if tools:
            found = _SUM.search(tools[-1])
            text = f"The sum is {found.group(1)}." if found else "no tool result"
            return Reply.text(text, delay=latency)
        users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        operands = _OPERANDS.search(users[-1] if users else "")
        if operands is None:
            return Reply.text("no question", delay=latency)
        a, b = int(operands.group(1)), int(operands.group(2))
        return Reply.tool_calls([("add", {"a": a, "b": b})], delay=latency)

    return rule


def backend_main(latency: float) -> None:
    """Serve until stdin closes; print the base URL first. Each ``counts`` line on stdin
    is answered with one JSON line: requests per run marker since the previous one."""
    from tierflow.testing import ScriptedServer

    with ScriptedServer() as server:
        server.set_default(_rule(latency))
        print(server.base_url, flush=True)
        seen = 0
        for line in sys.stdin:
            if line.strip() != "counts":
                continue
            requests = server.requests
            counts: Counter[str] = Counter()
            for r in requests[seen:]:
                found = MARKER.search(r.raw.decode("utf-8", "replace"))
                counts[found.group(1) if found else ""] += 1
            seen = len(requests)
            print(json.dumps(counts), flush=True)


class Backend:
    """The parent's handle on a backend process: its URL and its request counts."""

    def __init__(self, latency: float) -> None:
        code = f"from tierflow.bench.peers_backend import backend_main; backend_main({latency!r})"
        self.latency = latency
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the scripted backend did not start (got {self.url!r})")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def counts(self) -> Counter[str]:
        """Requests per run marker since the previous call."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("counts\n")
        self._proc.stdin.flush()
        return Counter(json.loads(self._proc.stdout.readline()))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self._proc.stdin:
                self._proc.stdin.close()
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)


@contextlib.contextmanager
def backends(*latencies: float) -> Iterator[dict[float, Backend]]:
    """One backend process per latency, all stopped at the end."""
    started: dict[float, Backend] = {}
    try:
        for latency in latencies:
            started[latency] = Backend(latency)
        yield started
    finally:
        for b in started.values():
            b.stop()
