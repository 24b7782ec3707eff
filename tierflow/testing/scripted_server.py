"""A scripted OpenAI/Mistral-compatible HTTP server for testing model clients.

Mocking a client library's transport only proves the mock agrees with itself; the
clients we ship (langchain-openai, langchain-mistralai) parse real HTTP, pool real
connections and time out on real sockets. This server speaks the real wire format on
127.0.0.1, replays queued replies, injects the faults that production endpoints
produce (errors with Retry-After, stalls, dropped sockets, garbage bodies, cut-off
streams) and records every request so tests can assert on what the client sent.

It uses only the standard library so it can run in any test environment.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

from tierflow.testing import _wire as wire
from tierflow.testing._replies import Fault, RecordedRequest, Reply, Responder, Script
from tierflow.testing._wire import Flavor, JSONDict, WireToolCall

__all__ = ["Fault", "Flavor", "RecordedRequest", "Reply", "Responder", "ScriptedServer"]

_NO_REPLY = "scripted server: no reply queued"
_BROKEN_JSON = b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "mess'
_BROKEN_ARGS = '{"city": "Par'
_CUT_STREAMS = ("truncated_stream", "unfinished_stream")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # load tests open hundreds of connections at once

    def __init__(self, owner: ScriptedServer, port: int = 0) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", port), _Handler)


class ScriptedServer:
    """Serve queued replies and faults on 127.0.0.1 until stop() (or the with block) ends."""

    def __init__(
        self,
        *,
        flavor: Flavor = "openai",
        models: Sequence[str] = ("scripted-model",),
        api_key: str | None = None,
        port: int = 0,
    ) -> None:
        """`port` 0 picks a free one; a fixed port lets a test bring a dead backend back."""
        self.flavor: Flavor = flavor
        self.models = tuple(models)
        self.api_key = api_key
        self._cond = threading.Condition()
        self._queue: deque[Script] = deque()
        self._default: Script | None = None
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._stopped = False
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._httpd = _HTTPServer(self, port)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # keeps stop() prompt
            name=f"scripted-server-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        """What to pass as the clients' base_url/endpoint."""
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *items: Script) -> None:
        """Queue replies/faults; each chat-completions request consumes one, in order.
        A :data:`Responder` (a function of the request body) decides when its turn comes."""
        with self._cond:
            self._queue.extend(items)

    def set_default(self, item: Script | None) -> None:
        """What to answer once the queue is empty (None: a 500 naming the mistake)."""
        with self._cond:
            self._default = item

    @property
    def pending(self) -> int:
        """Queued items not yet consumed; lets a test assert its script was used up."""
        with self._cond:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least `n` requests were recorded; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= n, timeout)

    def stop(self) -> None:
        """Shut down, end stalls and delays, cut open connections and join threads."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._cond:
            live = dict(self._connections)
        for sock in live:  # wakes handlers blocked reading the next keep-alive request
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in live.values():
            thread.join(timeout=5)
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- used by the handler threads -------------------------------------------------

    def _track(self, sock: socket.socket, alive: bool) -> None:
        with self._cond:
            if alive and self._stopped:  # accepted just as stop() ran: end it now
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            elif alive:
                self._connections[sock] = threading.current_thread()
            else:
                self._connections.pop(sock, None)

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    def _next_script(self) -> Script | None:
        with self._cond:
            return self._queue.popleft() if self._queue else self._default

    def _hold(self, until: threading.Event | None) -> bool:
        """Wait for ``until`` (if any); True if the server is stopping."""
        while until is not None and not until.wait(0.05):
            if self._stopping.is_set():
                return True
        return False

    def _wait(self, seconds: float) -> bool:
        """Sleep interruptibly; True if the server is stopping."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like real APIs
    server_version = "ScriptedServer/1.0"
    # TCP_NODELAY: headers and body go out in two writes, and with Nagle's algorithm the
    # second waits for the client's delayed ACK (~40 ms a reply on Linux), which no real
    # API adds; the peers benchmark times replies of 0 ms.
    disable_nagle_algorithm = True

    @property
    def owner(self) -> ScriptedServer:
        return cast(_HTTPServer, self.server).owner

    def setup(self) -> None:
        super().setup()
        self.owner._track(self.connection, alive=True)

    def handle(self) -> None:
        """Treat a client resetting its connection (pool teardown, timeout) as normal."""
        with contextlib.suppress(OSError):
            super().handle()

    def finish(self) -> None:
        self.owner._track(self.connection, alive=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging; tests inspect `requests` instead."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_POST

    # -- plumbing ---------------------------------------------------------------------

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.owner._record(
            RecordedRequest(method=self.command, path=path, headers=headers, body=body, raw=raw)
        )
        try:
            self._route(path, headers, body)
        except OSError:
            self.close_connection = True  # the client went away (e.g. timed out)
        except Exception as exc:  # a bug here: tell the client, then let socketserver log it
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send_json(500, wire.error(self.owner.flavor, f"scripted server bug: {exc!r}"))
            raise

    def _send_json(self, status: int, payload: Any, extra: Mapping[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send_event(self, data: str) -> None:
        payload = f"data: {data}\n\n".encode()
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")

    def _send_stream(self, chunks: Sequence[JSONDict]) -> None:
        self._start_stream()
        for chunk in chunks:
            self._send_event(json.dumps(chunk))
        self._send_event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")

    # -- behaviour --------------------------------------------------------------------

    def _route(self, path: str, headers: Mapping[str, str], body: Any) -> None:
        owner, flavor = self.owner, self.owner.flavor
        route = path.removeprefix("/v1")
        if owner.api_key is not None and headers.get("authorization") != f"Bearer {owner.api_key}":
            self._send_json(401, wire.unauthorized(flavor))
        elif route == "/models" and self.command == "GET":
            self._send_json(200, wire.models_list(owner.models))
        elif route != "/chat/completions" or self.command != "POST":
            self._send_json(404, wire.error(flavor, f"Unknown route {self.command} {path}"))
        elif not isinstance(body, dict):
            self._send_json(400, wire.error(flavor, "Request body must be a JSON object"))
        elif flavor == "mistral" and (bad := wire.bad_mistral_tool_ids(body)):
            msg = f"Tool call id was {bad[0]} but must be a-z, A-Z, 0-9, with a length of 9."
            self._send_json(422, wire.error(flavor, msg))
        else:
            script = owner._next_script()
            if script is not None and not isinstance(script, Reply | Fault):
                script = script(body)
            if script is None:
                self._send_json(500, wire.error(flavor, _NO_REPLY, kind="server_error"))
            elif isinstance(script, Fault):
                self._fault(script, body)
            else:
                self._reply(script, body)

    def _model(self, body: JSONDict, override: str | None = None) -> str:
        requested = body.get("model")
        return override or (requested if isinstance(requested, str) else self.owner.models[0])

    def _reply(self, reply: Reply, body: JSONDict) -> None:
        if self.owner._wait(reply.delay) or self.owner._hold(reply.until):
            self.close_connection = True
            return
        flavor = self.owner.flavor
        ids = reply.ids or [wire.new_tool_call_id(flavor) for _ in reply.calls]
        calls = [
            WireToolCall(id=i, name=name, arguments=args)
            for i, (name, args) in zip(ids, reply.calls, strict=True)
        ]
        self._answer(
            body, reply.content, calls, reply.model, reply.input_tokens, reply.output_tokens
        )

    def _answer(
        self,
        body: JSONDict,
        content: str | None,
        calls: Sequence[WireToolCall],
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        flavor = self.owner.flavor
        prompt_chars = len(json.dumps(body.get("messages", "")))
        answer_chars = len(content or "") + sum(len(c.name) + len(c.arguments) for c in calls)
        usage = wire.usage(
            input_tokens if input_tokens is not None else max(1, prompt_chars // 4),
            output_tokens if output_tokens is not None else max(1, answer_chars // 4),
        )
        kwargs: dict[str, Any] = {
            "model": self._model(body, model),
            "content": content,
            "tool_calls": calls,
            "usage_obj": usage,
        }
        if body.get("stream") is True:
            options = body.get("stream_options")
            include = isinstance(options, dict) and options.get("include_usage") is True
            self._send_stream(wire.stream_chunks(flavor, include_usage=include, **kwargs))
        else:
            self._send_json(200, wire.completion(flavor, **kwargs))

    def _fault(self, fault: Fault, body: JSONDict) -> None:
        flavor, stream = self.owner.flavor, body.get("stream") is True
        if fault.kind == "status":
            self._status(fault)
        elif fault.kind == "stall":
            self.owner._wait(fault.seconds)
            self.close_connection = True
        elif fault.kind == "drop" or (fault.kind in _CUT_STREAMS and not stream):
            self.close_connection = True
        elif fault.kind == "malformed":
            self._send_json(200, _BROKEN_JSON)
        elif fault.kind == "empty_choices":
            empty = wire.completion(
                flavor,
                model=self._model(body),
                content=None,
                tool_calls=(),
                usage_obj=wire.usage(1, 0),
                empty_choices=True,
            )
            if stream:
                self._send_stream([{**empty, "object": "chat.completion.chunk"}])
            else:
                self._send_json(200, empty)
        elif fault.kind in (*_CUT_STREAMS, "reset"):
            if stream:
                self._start_stream()
                chunks = wire.truncated_chunks(
                    flavor,
                    model=self._model(body),
                    text=fault.text,
                    after_chunks=fault.after_chunks,
                )
                for chunk in chunks:
                    self._send_event(json.dumps(chunk))
            if fault.kind == "unfinished_stream":
                self.wfile.write(b"0\r\n\r\n")  # a clean end, but no finish reason, no [DONE]
            elif fault.kind == "reset":
                self._reset()
            self.close_connection = True  # truncated_stream: no [DONE], no closing chunk
        else:  # invalid_tool_json
            call_id = wire.new_tool_call_id(flavor)
            self._answer(
                body, None, [WireToolCall(id=call_id, name=fault.tool_name, arguments=_BROKEN_ARGS)]
            )

    def _reset(self) -> None:
        """Close with an RST: SO_LINGER 0, and no FIN first (the socket's files closed too,
        or close() would wait for them)."""
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        sock.close()

    def _status(self, fault: Fault) -> None:
        extra = {}
        if fault.retry_after is not None:
            extra["Retry-After"] = f"{fault.retry_after:g}"
        payload: Any
        if fault.body is None:
            message = f"scripted status {fault.status_code}"
            payload = wire.error(self.owner.flavor, message, kind="api_error")
        elif isinstance(fault.body, str):
            payload = fault.body.encode()
        else:
            payload = dict(fault.body)
        self._send_json(fault.status_code, payload, extra)
