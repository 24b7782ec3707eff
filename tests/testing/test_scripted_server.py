"""Drive the scripted server through the real langchain-openai and langchain-mistralai clients.

These tests pin two things at once: that the server speaks each provider's wire format
well enough for the real clients, and what each client actually does when a fault is
injected (the expectations below were found by running, not assumed).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import httpx_sse
import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_mistralai import ChatMistralAI
from langchain_openai import ChatOpenAI

from tierflow.testing.scripted_server import Fault, Flavor, RecordedRequest, Reply, ScriptedServer

OPENAI_TOOL_ID = re.compile(r"^call_[A-Za-z0-9]{24}$")
MISTRAL_TOOL_ID = re.compile(r"^[A-Za-z0-9]{9}$")
TOOL_ID = {"openai": OPENAI_TOOL_ID, "mistral": MISTRAL_TOOL_ID}


class Models:
    """Builds the real clients pointed at a server, and closes their HTTP pools afterwards."""

    def __init__(self) -> None:
        self.made: list[BaseChatModel] = []

    def openai(self, srv: ScriptedServer, timeout: float = 5, **kw: Any) -> ChatOpenAI:
        # An httpx.Timeout (unhashable) instead of a float keeps langchain-openai from
        # using its process-wide lru_cached httpx clients, which would outlive this test
        # (and its event loop) and be handed back if a later server got the same port.
        model = ChatOpenAI(
            base_url=srv.base_url,
            api_key=kw.pop("api_key", "k"),
            model="m",
            max_retries=kw.pop("max_retries", 0),
            timeout=httpx.Timeout(timeout),
            **kw,
        )
        self.made.append(model)
        return model

    def mistral(self, srv: ScriptedServer, timeout: int = 5, **kw: Any) -> ChatMistralAI:
        model = ChatMistralAI(
            endpoint=srv.base_url,
            api_key=kw.pop("api_key", "k"),
            model="mistral-large-latest",
            max_retries=kw.pop("max_retries", 0),
            timeout=timeout,
            **kw,
        )
        self.made.append(model)
        return model

    def of(self, srv: ScriptedServer, **kw: Any) -> BaseChatModel:
        """The client that matches the server's flavor."""
        return self.openai(srv, **kw) if srv.flavor == "openai" else self.mistral(srv, **kw)

    async def aclose(self) -> None:
        for model in self.made:
            if isinstance(model, ChatOpenAI):
                model.root_client.close()
                await model.root_async_client.close()
            elif isinstance(model, ChatMistralAI):
                model.client.close()
                await model.async_client.aclose()


@pytest.fixture
async def models() -> AsyncIterator[Models]:
    made = Models()
    yield made
    await made.aclose()


@pytest.fixture(params=["openai", "mistral"])
def srv(request: pytest.FixtureRequest) -> Iterator[ScriptedServer]:
    with ScriptedServer(flavor=request.param) as server:
        yield server


@pytest.fixture
def openai_srv() -> Iterator[ScriptedServer]:
    with ScriptedServer(flavor="openai") as server:
        yield server


@pytest.fixture
def mistral_srv() -> Iterator[ScriptedServer]:
    with ScriptedServer(flavor="mistral") as server:
        yield server


def collect(
    model: BaseChatModel, prompt: str = "hi"
) -> tuple[list[AIMessageChunk], Exception | None]:
    """Stream, keeping the chunks that arrived before any error."""
    chunks: list[AIMessageChunk] = []
    try:
        for chunk in model.stream(prompt):
            assert isinstance(chunk, AIMessageChunk)
            chunks.append(chunk)
    except Exception as exc:
        return chunks, exc
    return chunks, None


def merged(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


def chat_body(srv: ScriptedServer, index: int = -1) -> dict[str, Any]:
    request = srv.requests[index]
    assert request.path == "/v1/chat/completions"
    assert isinstance(request.body, dict)
    return request.body


# -- happy paths ---------------------------------------------------------------------------


def test_text_reply_maps_usage(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Reply.text("hello", input_tokens=12, output_tokens=3))
    msg = models.of(srv).invoke("hi")
    assert isinstance(msg, AIMessage)
    assert msg.content == "hello"
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["input_tokens"] == 12
    assert msg.usage_metadata["output_tokens"] == 3
    assert msg.usage_metadata["total_tokens"] == 15
    assert msg.response_metadata["finish_reason"] == "stop"
    assert chat_body(srv)["messages"] == [{"role": "user", "content": "hi"}]
    assert srv.pending == 0


async def test_text_reply_async(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Reply.text("hello async", input_tokens=7, output_tokens=2))
    msg = await models.of(srv).ainvoke("hi")
    assert msg.content == "hello async"
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["total_tokens"] == 9


def test_openai_response_shape_and_model_echo(openai_srv: ScriptedServer, models: Models) -> None:
    openai_srv.enqueue(Reply.text("a"), Reply.text("b", model="gpt-scripted"))
    first = models.openai(openai_srv).invoke("hi")
    assert first.response_metadata["model_name"] == "m"  # echoes the request's model
    assert first.response_metadata["system_fingerprint"] == "fp_scripted"
    assert first.response_metadata["id"].startswith("chatcmpl-")
    second = models.openai(openai_srv).invoke("hi")
    assert second.response_metadata["model_name"] == "gpt-scripted"


def test_mistral_raw_shape_has_no_system_fingerprint(mistral_srv: ScriptedServer) -> None:
    mistral_srv.enqueue(Reply.text("x"))
    body = {"model": "mistral-small", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{mistral_srv.base_url}/chat/completions", json=body)
    data = response.json()
    assert "system_fingerprint" not in data
    assert data["model"] == "mistral-small"
    assert re.fullmatch(r"[0-9a-f]{32}", data["id"])
    assert data["choices"][0]["message"] == {
        "role": "assistant",
        "content": "x",
        "tool_calls": None,
    }


def test_tool_calls_parsed_with_flavor_id_shape(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Reply.tool_calls([("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]))
    msg = models.of(srv).invoke("weather?")
    assert isinstance(msg, AIMessage)
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    for call in msg.tool_calls:
        assert call["id"] is not None
        assert TOOL_ID[srv.flavor].match(call["id"]), call["id"]
    assert msg.response_metadata["finish_reason"] == "tool_calls"


def test_pinned_tool_call_ids(openai_srv: ScriptedServer, models: Models) -> None:
    openai_srv.enqueue(Reply.tool_calls([("f", {})], ids=["call_fixed"]))
    msg = models.openai(openai_srv).invoke("hi")
    assert isinstance(msg, AIMessage)
    assert msg.tool_calls[0]["id"] == "call_fixed"


def test_stream_text_reassembled(srv: ScriptedServer, models: Models) -> None:
    text = "The quick brown fox jumps over the lazy dog"
    srv.enqueue(Reply.text(text, input_tokens=5, output_tokens=9))
    # langchain-openai only asks for usage on custom base URLs when told to.
    extra = {"stream_usage": True} if srv.flavor == "openai" else {}
    chunks, error = collect(models.of(srv, **extra))
    assert error is None
    assert len([c for c in chunks if c.content]) > 1  # really split into pieces
    total = merged(chunks)
    assert total.content == text
    assert total.usage_metadata is not None
    assert total.usage_metadata["input_tokens"] == 5
    assert total.usage_metadata["output_tokens"] == 9
    assert total.response_metadata["finish_reason"] == "stop"
    body = chat_body(srv)
    assert body["stream"] is True
    if srv.flavor == "openai":
        assert body["stream_options"] == {"include_usage": True}


def test_openai_stream_without_include_usage_has_no_usage(
    openai_srv: ScriptedServer, models: Models
) -> None:
    openai_srv.enqueue(Reply.text("no usage please"))
    chunks, error = collect(models.openai(openai_srv))
    assert error is None
    assert "stream_options" not in chat_body(openai_srv)
    assert merged(chunks).usage_metadata is None


async def test_astream_tool_calls_reassembled(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Reply.tool_calls([("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]))
    chunks = [c async for c in models.of(srv).astream("hi")]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    total = merged([c for c in chunks if isinstance(c, AIMessageChunk)])
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert all(TOOL_ID[srv.flavor].match(c["id"] or "") for c in total.tool_calls)


async def test_astream_text(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Reply.text("streamed over asyncio"))
    pieces = [c.content async for c in models.of(srv).astream("hi")]
    assert "".join(str(p) for p in pieces) == "streamed over asyncio"


def test_json_reply_and_response_format_recorded(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Reply.json({"route": "general"}))
    bound = models.of(srv).bind(response_format={"type": "json_object"})
    msg = bound.invoke("route this")
    assert json.loads(str(msg.content)) == {"route": "general"}
    assert chat_body(srv)["response_format"] == {"type": "json_object"}


def test_default_reply_and_missing_reply(openai_srv: ScriptedServer, models: Models) -> None:
    model = models.openai(openai_srv)
    with pytest.raises(openai.InternalServerError, match="no reply queued") as info:
        model.invoke("hi")
    assert info.value.status_code == 500
    openai_srv.set_default(Reply.text("default"))
    assert model.invoke("hi").content == "default"
    assert model.invoke("again").content == "default"


async def test_delay_and_concurrent_requests(openai_srv: ScriptedServer, models: Models) -> None:
    openai_srv.set_default(Reply.text("late", delay=0.2))
    model = models.openai(openai_srv)
    replies = await asyncio.gather(*(model.ainvoke(f"q{i}") for i in range(3)))
    assert [r.content for r in replies] == ["late"] * 3
    assert openai_srv.wait_for_requests(3, timeout=0)

    # Served in parallel threads: three requests are all received while each is still
    # held in its reply's delay (a server handling one at a time would receive the
    # second only after the first delay ended, an hour from now).
    openai_srv.set_default(Reply.text("held", delay=3600))
    held = models.openai(openai_srv, timeout=3600)
    calls = [asyncio.create_task(held.ainvoke(f"h{i}")) for i in range(3)]
    assert await asyncio.to_thread(openai_srv.wait_for_requests, 6, 30)  # 30 s: hang guard
    assert not any(c.done() for c in calls)
    openai_srv.stop()  # ends the delays: the held requests are closed unanswered
    ends = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(e, openai.APIConnectionError) for e in ends), ends


# -- recording, routing, auth --------------------------------------------------------------


def test_requests_recorded(openai_srv: ScriptedServer, models: Models) -> None:
    openai_srv.enqueue(Reply.text("ok"))
    models.openai(openai_srv, temperature=0.25).invoke("hello")
    assert openai_srv.wait_for_requests(1, timeout=1)
    request = openai_srv.requests[0]
    assert isinstance(request, RecordedRequest)
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer k"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.raw) == request.body
    assert request.body["model"] == "m"
    assert request.body["temperature"] == 0.25


def test_wait_for_requests_times_out(openai_srv: ScriptedServer) -> None:
    assert openai_srv.wait_for_requests(1, timeout=0.05) is False


def test_models_endpoint_ignores_faults() -> None:
    with ScriptedServer(models=("tier-small", "tier-large")) as srv:
        srv.enqueue(Fault.drop())
        for path in ("/v1/models", "/models"):
            data = httpx.get(f"http://127.0.0.1:{srv.port}{path}").json()
            assert data["object"] == "list"
            assert [m["id"] for m in data["data"]] == ["tier-small", "tier-large"]
            assert {m["object"] for m in data["data"]} == {"model"}
        assert srv.pending == 1  # the fault waits for a chat completion


def test_unprefixed_chat_path_and_404(openai_srv: ScriptedServer) -> None:
    openai_srv.enqueue(Reply.text("no prefix"))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"http://127.0.0.1:{openai_srv.port}/chat/completions", json=body)
    assert response.json()["choices"][0]["message"]["content"] == "no prefix"
    missing = httpx.post(f"{openai_srv.base_url}/embeddings", json={})
    assert missing.status_code == 404
    assert "error" in missing.json()


@pytest.mark.parametrize("flavor", ["openai", "mistral"])
def test_api_key_401(flavor: Flavor, models: Models) -> None:
    with ScriptedServer(flavor=flavor, api_key="secret") as srv:
        srv.enqueue(Reply.text("authorised"))
        wrong = models.of(srv)  # sends "Bearer k"
        if flavor == "openai":
            with pytest.raises(openai.AuthenticationError) as oa_info:
                wrong.invoke("hi")
            assert oa_info.value.status_code == 401
            assert oa_info.value.code == "invalid_api_key"
            right: BaseChatModel = models.openai(srv, api_key="secret")
        else:
            with pytest.raises(httpx.HTTPStatusError) as mi_info:
                wrong.invoke("hi")
            body = mi_info.value.response.json()
            assert body["message"] == "Unauthorized"
            assert "request_id" in body
            right = models.mistral(srv, api_key="secret")
        assert srv.pending == 1  # rejected requests consume nothing
        assert right.invoke("hi").content == "authorised"
        assert httpx.get(f"{srv.base_url}/models").status_code == 401


# -- mistral tool-call id validation -----------------------------------------------------


def _history(tool_id: str) -> list[Any]:
    return [
        HumanMessage("weather in Paris?"),
        AIMessage(
            "", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": tool_id}]
        ),
        ToolMessage("sunny", tool_call_id=tool_id),
    ]


def test_mistral_422_on_non_mistral_tool_id(mistral_srv: ScriptedServer, models: Models) -> None:
    mistral_srv.enqueue(Reply.text("it is sunny"))
    # ChatOpenAI sends ids untouched, so an OpenAI-style id reaches the server as is.
    with pytest.raises(openai.UnprocessableEntityError) as info:
        models.openai(mistral_srv).invoke(_history("call_abcdefghijklmnopqrstuvwx"))
    assert info.value.status_code == 422
    assert info.value.body == {
        "object": "error",
        "message": (
            "Tool call id was call_abcdefghijklmnopqrstuvwx but must be a-z, A-Z, 0-9, "
            "with a length of 9."
        ),
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert mistral_srv.pending == 1
    # ChatMistralAI normalises the same history to 9-char ids, which the server accepts.
    msg = models.mistral(mistral_srv).invoke(_history("call_abcdefghijklmnopqrstuvwx"))
    assert msg.content == "it is sunny"
    sent = chat_body(mistral_srv)["messages"]
    assert MISTRAL_TOOL_ID.match(sent[1]["tool_calls"][0]["id"])
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]


def test_openai_flavor_accepts_any_tool_id(openai_srv: ScriptedServer, models: Models) -> None:
    openai_srv.enqueue(Reply.text("fine"))
    assert models.openai(openai_srv).invoke(_history("x")).content == "fine"


# -- faults ----------------------------------------------------------------------------------


def test_status_503_with_retry_after(srv: ScriptedServer, models: Models) -> None:
    fault = Fault.status(503, body={"error": {"message": "overloaded"}}, retry_after=2)
    srv.enqueue(fault, fault)
    raw = httpx.post(f"{srv.base_url}/chat/completions", json={"model": "m", "messages": []})
    assert raw.status_code == 503
    assert raw.headers["retry-after"] == "2"
    assert raw.json() == {"error": {"message": "overloaded"}}
    if srv.flavor == "openai":
        with pytest.raises(openai.InternalServerError, match="overloaded") as oa_info:
            models.openai(srv).invoke("hi")
        assert oa_info.value.status_code == 503
        assert oa_info.value.response.headers["retry-after"] == "2"
    else:
        with pytest.raises(httpx.HTTPStatusError, match="overloaded") as mi_info:
            models.mistral(srv).invoke("hi")
        assert mi_info.value.response.status_code == 503
        assert mi_info.value.response.headers["retry-after"] == "2"


def test_openai_client_honours_retry_after(openai_srv: ScriptedServer, models: Models) -> None:
    openai_srv.enqueue(Fault.status(503, retry_after=0.05), Reply.text("second try"))
    assert models.openai(openai_srv, max_retries=1).invoke("hi").content == "second try"
    assert len(openai_srv.requests) == 2


def test_mistral_client_does_not_retry_http_errors(
    mistral_srv: ScriptedServer, models: Models
) -> None:
    # langchain-mistralai retries only transport errors, never a 429/5xx status.
    mistral_srv.enqueue(Fault.status(503, retry_after=0.05), Reply.text("never reached"))
    with pytest.raises(httpx.HTTPStatusError):
        models.mistral(mistral_srv, max_retries=2).invoke("hi")
    assert len(mistral_srv.requests) == 1


@pytest.mark.parametrize("flavor", ["openai", "mistral"])
def test_stall_cut_by_client_timeout(flavor: Flavor, models: Models) -> None:
    before = set(threading.enumerate())
    srv = ScriptedServer(flavor=flavor)
    handlers: list[threading.Thread] = []
    try:
        srv.enqueue(Fault.stall(seconds=30))
        # ChatMistralAI's timeout field is an int, so 1 s is its shortest timeout.
        model = models.openai(srv, timeout=0.5) if flavor == "openai" else models.mistral(srv, 1)
        expected = openai.APITimeoutError if flavor == "openai" else httpx.ReadTimeout
        with pytest.raises(expected):
            model.invoke("hi")
        # the client's timeout ended the call: the server was still stalling it
        handlers = _handler_threads(before)
        assert handlers and all(t.is_alive() for t in handlers)
    finally:
        srv.stop()
    assert _ended(handlers)  # stop() cut the 30 s stall short


def _handler_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """The request-handler threads a ScriptedServer started since ``before`` was taken."""
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.name.endswith("(process_request_thread)")
    ]


def _ended(threads: list[threading.Thread]) -> bool:
    """Whether every thread has finished (the join timeout only guards against a hang)."""
    for t in threads:
        t.join(timeout=10)
    return not any(t.is_alive() for t in threads)


def _post_in_background(srv: ScriptedServer) -> tuple[threading.Thread, list[BaseException]]:
    """Send one chat request from a thread; the list receives the error it ends with."""
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            httpx.post(f"{srv.base_url}/chat/completions", json={"messages": []}, timeout=10)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    return worker, outcome


@pytest.mark.parametrize(
    "script", [Fault.stall(seconds=30), Reply.text("too late", delay=30)], ids=["stall", "delay"]
)
def test_stop_is_prompt_while_a_request_waits(script: Reply | Fault) -> None:
    before = set(threading.enumerate())
    srv = ScriptedServer()
    srv.enqueue(script)
    worker, outcome = _post_in_background(srv)
    assert srv.wait_for_requests(1, timeout=30)  # 30 s: hang guard
    handlers = _handler_threads(before)
    assert handlers and all(t.is_alive() for t in handlers)  # holding the request for 30 s
    srv.stop()
    srv.stop()  # idempotent
    # stop() ended the wait: the handler is gone and the client saw the connection
    # closed with no response (had the wait run on, the client's 10 s timeout would
    # have ended it with a ReadTimeout instead)
    assert _ended(handlers)
    assert _ended([worker])
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.RemoteProtocolError), outcome


def test_drop(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Fault.drop(), Fault.drop())
    expected = openai.APIConnectionError if srv.flavor == "openai" else httpx.RemoteProtocolError
    model = models.of(srv)
    with pytest.raises(expected):
        model.invoke("hi")
    chunks, error = collect(model)
    assert isinstance(error, expected)
    assert chunks == []
    assert srv.wait_for_requests(2, timeout=1)


async def test_drop_async(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Fault.drop())
    expected = openai.APIConnectionError if srv.flavor == "openai" else httpx.RemoteProtocolError
    with pytest.raises(expected):
        await models.of(srv).ainvoke("hi")


def test_malformed_json(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Fault.malformed(), Fault.malformed())
    raw = httpx.post(f"{srv.base_url}/chat/completions", json={"messages": []})
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.content)
    # Both clients let the decoder error escape unwrapped.
    with pytest.raises(json.JSONDecodeError):
        models.of(srv).invoke("hi")


def test_malformed_json_when_streaming(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Fault.malformed())
    chunks, error = collect(models.of(srv))
    assert chunks == []
    if srv.flavor == "openai":
        # The openai SDK finds no SSE events in a JSON body: the stream is just empty.
        assert isinstance(error, ValueError)
        assert "No generation chunks were returned" in str(error)
    else:
        assert isinstance(error, httpx_sse.SSEError)


def test_empty_choices(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Fault.empty_choices(), Fault.empty_choices())
    model = models.of(srv)
    # Neither client checks for an empty `choices` list before indexing it.
    with pytest.raises(IndexError):
        model.invoke("hi")
    chunks, error = collect(model)
    if srv.flavor == "openai":
        # Read as a usage-only chunk: an empty message, no error.
        assert error is None
        assert merged(chunks).content == ""
    else:
        assert isinstance(error, ValueError)
        assert "No generation chunks were returned" in str(error)


def test_truncated_stream(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(
        Fault.truncated_stream(after_chunks=2, text="alpha beta gamma"),
        Fault.truncated_stream(after_chunks=2),
    )
    model = models.of(srv)
    chunks, error = collect(model)
    if srv.flavor == "openai":
        assert isinstance(error, openai.APIConnectionError)
    else:
        assert isinstance(error, httpx.RemoteProtocolError)
        assert "incomplete chunked read" in str(error)
    assert "".join(str(c.content) for c in chunks) == "alpha beta "
    # Without stream=true the fault is a plain drop.
    expected = openai.APIConnectionError if srv.flavor == "openai" else httpx.RemoteProtocolError
    with pytest.raises(expected):
        model.invoke("hi")


def test_truncated_stream_raw_has_no_done(openai_srv: ScriptedServer) -> None:
    openai_srv.enqueue(Fault.truncated_stream(after_chunks=3))
    events: list[str] = []
    body = {"model": "m", "messages": [], "stream": True}
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{openai_srv.base_url}/chat/completions", json=body) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events.extend(sse.data for sse in httpx_sse.EventSource(response).iter_sse())
    assert len(events) == 4  # role chunk + 3 content chunks
    assert "[DONE]" not in events


def test_invalid_tool_json(srv: ScriptedServer, models: Models) -> None:
    srv.enqueue(Fault.invalid_tool_json(), Fault.invalid_tool_json())
    model = models.of(srv)
    msg = model.invoke("hi")
    assert isinstance(msg, AIMessage)
    assert msg.tool_calls == []
    assert len(msg.invalid_tool_calls) == 1
    bad = msg.invalid_tool_calls[0]
    assert (bad["name"], bad["args"]) == ("get_weather", '{"city": "Par')
    assert TOOL_ID[srv.flavor].match(bad["id"] or "")
    # Streaming goes through langchain-core's partial-JSON parser, which *repairs* the
    # truncated arguments into a valid-looking call: callers must not rely on
    # invalid_tool_calls to catch this when streaming.
    chunks, error = collect(model)
    assert error is None
    total = merged(chunks)
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [("get_weather", {"city": "Par"})]
