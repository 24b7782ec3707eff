"""`tierflow ask` as a real subprocess exporting over OTLP to real receivers on 127.0.0.1:
oteltap (http/protobuf) and a gRPC collector service; a collector that is down; no
endpoint at all (no traffic); telemetry switched off in the settings (no traffic even with
an endpoint); and an application that brought its own provider.

The model backends are `tierflow.testing.ScriptedServer` (OpenAI protocol), so no model
loads: a hosted `openai:gpt-4o` that fails with HTTP 500 and a `vllm:` model that answers,
calls two SQL tools in parallel, then answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

from tierflow.testing import Fault, Reply, ScriptedServer

TREE = {  # span -> parent, for the scripted run below (two analyst turns)
    "invoke_workflow default": None,
    "invoke_agent router": "invoke_workflow default",
    "chat router-model": "invoke_agent router",
    "invoke_agent analyst": "invoke_workflow default",
    "chat gpt-4o": "invoke_agent analyst",
    "chat big-model": "invoke_agent analyst",
    "execute_tool sql_schema": "invoke_workflow default",
    "execute_tool sql_query": "invoke_workflow default",
    "apply_guardrail input": "invoke_workflow default",
    "apply_guardrail output": "invoke_workflow default",
    "apply_guardrail tool_call": ("execute_tool sql_schema", "execute_tool sql_query"),
    "apply_guardrail tool_result": ("execute_tool sql_schema", "execute_tool sql_query"),
}
# workflow, router + chat, 2 x (analyst + 2 chats), 2 tools each with 2 guardrail stages,
# input and output guardrails
SPANS = 17
OVERLOADED = Fault.status(500, body={"error": {"message": "overloaded"}})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _models(srv: ScriptedServer, folder: Path) -> None:
    """Point every tier at ``srv`` (tierflow.toml in ``folder``) and queue the replies."""
    (folder / "tierflow.toml").write_text(
        '[tiers.router]\nbackends = ["vllm:router-model"]\n'
        '[tiers.reasoning]\nbackends = ["openai:gpt-4o", "vllm:big-model"]\n'
        f'[backends.vllm]\nbase_url = "{srv.base_url}"\n'
        "[router]\nsemantic = false\n"
    )
    calls = [
        {"name": "sql_schema", "arguments": {}},
        {"name": "sql_query", "arguments": {"query": "SELECT 42 AS answer"}},
    ]
    srv.enqueue(
        Reply.json({"route": "data"}),
        OVERLOADED,
        Reply.json({"tool_calls": calls}),
        OVERLOADED,
        Reply.json({"answer": "42"}),
    )


@dataclass
class Run:
    code: int
    record: dict[str, Any]
    stderr: str


async def _run(argv: list[str], folder: Path, env: dict[str, str]) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TIERFLOW_"))} | env
    env["XDG_STATE_HOME"] = str(folder / "state")
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=folder, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    record = json.loads(out) if out.strip() else {}
    return Run(proc.returncode, record, err.decode())


async def ask(folder: Path, *prefix: str, **otel: str) -> tuple[Run, int]:
    """`tierflow ask --json` in ``folder`` against its own scripted server; the run and the
    server's port."""
    argv = [
        *(prefix or (sys.executable, "-m", "tierflow")),
        "ask",
        "--json",
        "What is six times seven?",
    ]
    with ScriptedServer() as srv:
        _models(srv, folder)
        keys = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": srv.base_url}
        run = await _run(argv, folder, keys | otel)
        port = int(srv.base_url.rsplit(":", 1)[1].split("/")[0])
    return run, port


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attrs(span: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in span.attributes}


def check_trace(spans: list[Span], trace_id: str) -> dict[str, list[Span]]:
    """One trace, the printed id, the expected tree; returns the spans by name."""
    assert {s.trace_id.hex() for s in spans} == {trace_id}
    by_id = {s.span_id: s for s in spans}
    by_name: dict[str, list[Span]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    assert set(by_name) == set(TREE)
    assert len(spans) == SPANS
    for s in spans:
        parent = by_id[s.parent_span_id].name if s.parent_span_id else None
        expected = TREE[s.name]
        assert parent in expected if isinstance(expected, tuple) else parent == expected, s.name
    return by_name


@dataclass
class Tap:
    """oteltap's spans and metric names, collected as they stream in."""

    spans: list[Span] = field(default_factory=list)
    metrics: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def collect_spans(self, receiver: OtelTapHttpProtobufReceiver) -> None:
        async for span in receiver.stream_traces():
            self.spans.append(span)
            self._check()

    async def collect_metrics(self, receiver: OtelTapHttpProtobufReceiver) -> None:
        async for metric in receiver.stream_metrics():
            self.metrics.add(metric.name)
            self._check()

    def _check(self) -> None:
        if len(self.spans) >= SPANS and "gen_ai.client.token.usage" in self.metrics:
            self.done.set()


async def _over_http(folder: Path) -> tuple[Run, Tap]:
    port = free_port()
    settings = OtelTapHttpProtobufReceiverSettings(http_port=port)  # binds 127.0.0.1 only
    tap = Tap()
    async with OtelTapHttpProtobufReceiver(settings) as receiver:
        tasks = [
            asyncio.create_task(tap.collect_spans(receiver)),
            asyncio.create_task(tap.collect_metrics(receiver)),
        ]
        run, _ = await ask(
            folder,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        )
        if run.code == 0:  # the CLI exits after the export was acknowledged; oteltap
            await asyncio.wait_for(tap.done.wait(), timeout=10)  # hands it over by polling
        for task in tasks:
            task.cancel()
    return run, tap


class _Collector(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """A minimal OTLP/gRPC collector: keeps what it receives."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: set[str] = set()

    def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
            return trace_service_pb2.ExportTraceServiceResponse()
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                self.metrics.update(m.name for m in scope.metrics)
        return metrics_service_pb2.ExportMetricsServiceResponse()


async def _over_grpc(folder: Path) -> tuple[Run, _Collector]:
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        run, _ = await ask(
            folder,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        )
    finally:
        server.stop(grace=None)
    return run, collector


_REPORTED_EXIT = """
import sys
from opentelemetry.exporter.otlp.proto.http import metric_exporter, trace_exporter
import tierflow.telemetry as telemetry
def record(cls):
    init = cls.__init__
    def recorded(self, *args, **kwargs):
        sys.stderr.write(f"EXPORTER {cls.__name__} timeout={kwargs.get('timeout')}\\n")
        init(self, *args, **kwargs)
    cls.__init__ = recorded
record(trace_exporter.OTLPSpanExporter)
record(metric_exporter.OTLPMetricExporter)
flush = telemetry.shutdown
def reported(*args, **kwargs):
    done = flush(*args, **kwargs)
    sys.stderr.write(f"SHUTDOWN {done}\\n")
    return done
telemetry.shutdown = reported  # the CLI's exit calls it
from tierflow.cli import main
main()
"""


async def _collector_down(folder: Path) -> tuple[Run, int]:
    port = free_port()  # nothing listens there: connections are refused
    run, _ = await ask(
        folder,
        sys.executable,
        "-c",
        _REPORTED_EXIT,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
    )
    return run, port


_AUDIT = """
import json, sys
seen = []
def hook(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple):
        seen.append(list(args[1][:2]))
sys.addaudithook(hook)
from tierflow.cli import main
try:
    main()
finally:
    sys.stderr.write("CONNECTS " + json.dumps(seen) + "\\n")
"""


async def _telemetry_off(folder: Path) -> tuple[Run, int, int]:
    """``[telemetry] enabled = false`` (here from the environment) with an OTLP endpoint
    set: the run, the model server's port and the endpoint's port."""
    endpoint = free_port()
    run, model_port = await ask(
        folder,
        sys.executable,
        "-c",
        _AUDIT,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{endpoint}",
        TIERFLOW_TELEMETRY__ENABLED="false",
    )
    return run, model_port, endpoint


_APP = """
import asyncio, json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

mine = TracerProvider()
exporter = InMemorySpanExporter()
mine.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(mine)

from tierflow import Runner, load_settings, telemetry
from tierflow.testing import ScriptedChatModel, scripted_tier

tiers = {
    "router": scripted_tier("router", ScriptedChatModel(default='{"route": "general"}')),
    "reasoning": scripted_tier("reasoning", ScriptedChatModel(default="ok")),
}
runner = Runner(load_settings(router={"semantic": False}), tiers=tiers)
record = asyncio.run(runner.ask("hi"))
print(json.dumps({
    "kept": trace.get_tracer_provider() is mine,
    "trace_id": record.trace_id,
    "spans": sorted(s.name for s in exporter.get_finished_spans()),
    "traces": sorted({f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans()}),
    "flushed": telemetry.shutdown(),
}))
"""


async def _application_provider(folder: Path) -> Run:
    closed = free_port()  # tierflow must not add its exporter to the app's provider
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}"}
    return await _run([sys.executable, "-c", _APP], folder, env)


@dataclass
class Results:
    http: tuple[Run, Tap]
    grpc: tuple[Run, _Collector]
    down: tuple[Run, int]
    quiet: tuple[Run, int]
    off: tuple[Run, int, int]
    app: Run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """The six subprocess runs, started together: each pays ~2 s of imports, and they
    share nothing (own folder, state, scripted server, receiver)."""

    async def all_runs() -> Results:
        folder = tmp_path_factory.mktemp
        http, grpc_, down, quiet, off, app = await asyncio.gather(
            _over_http(folder("http")),
            _over_grpc(folder("grpc")),
            _collector_down(folder("down")),
            ask(folder("quiet"), sys.executable, "-c", _AUDIT),
            _telemetry_off(folder("off")),
            _application_provider(folder("app")),
        )
        return Results(http, grpc_, down, quiet, off, app)

    return asyncio.run(all_runs())


def test_ask_exports_one_trace_over_otlp_http(runs: Results) -> None:
    run, tap = runs.http
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    spans = check_trace(tap.spans, run.record["trace_id"])

    (root,) = spans["invoke_workflow default"]
    assert attrs(root) == {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "default",
        "gen_ai.conversation.id": run.record["thread_id"],
        "tierflow.route": "data",
        "tierflow.run.status": "completed",
        "gen_ai.usage.input_tokens": run.record["usage"]["input_tokens"],
        "gen_ai.usage.output_tokens": run.record["usage"]["output_tokens"],
    }
    (router_chat,) = spans["chat router-model"]
    chat = attrs(router_chat)
    assert router_chat.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.provider.name"] == "vllm"
    assert chat["gen_ai.request.model"] == chat["gen_ai.response.model"] == "router-model"
    assert chat["gen_ai.usage.input_tokens"] == run.record["steps"][0]["usage"]["input_tokens"]
    assert chat["gen_ai.response.id"].startswith("chatcmpl-")
    assert chat["gen_ai.conversation.id"] == run.record["thread_id"]
    for failed in spans["chat gpt-4o"]:
        assert attrs(failed)["gen_ai.provider.name"] == "openai"
        assert attrs(failed)["error.type"] == "OpenAIAPIError"
        assert failed.status.code == failed.status.STATUS_CODE_ERROR
        assert [e.name for e in failed.events] == ["exception"]
    for turn in spans["invoke_agent analyst"]:
        (event,) = turn.events
        assert event.name == "tierflow.fallback"
        assert {a.key: _value(a.value) for a in event.attributes} == {
            "tierflow.tier": "reasoning",
            "tierflow.fallback.from": "openai:gpt-4o",
            "tierflow.fallback.to": "vllm:big-model",
            "tierflow.fallback.outcome": "failed",
            "tierflow.fallback.reason": "OpenAIAPIError: Error code: 500 - overloaded",
            "error.type": "OpenAIAPIError",
        }
        assert attrs(turn)["gen_ai.agent.name"] == "analyst"
        assert attrs(turn)["gen_ai.provider.name"] == "vllm"
        assert attrs(turn)["tierflow.backend"] == "vllm:big-model"
    ids = {c["id"] for c in run.record["steps"][1]["tool_calls"]}
    tools = spans["execute_tool sql_schema"] + spans["execute_tool sql_query"]
    assert {attrs(s)["gen_ai.tool.call.id"] for s in tools} == ids
    assert all(attrs(s)["tierflow.tool.ok"] is True for s in tools)
    assert {"gen_ai.client.operation.duration", "tierflow.fallbacks"} <= tap.metrics


def test_ask_exports_over_otlp_grpc(runs: Results) -> None:
    run, collector = runs.grpc
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    # the CLI exits only after the collector acknowledged the export: all there already
    check_trace(collector.spans, run.record["trace_id"])
    assert "gen_ai.client.token.usage" in collector.metrics


def test_a_down_collector_costs_the_run_nothing_but_one_warning(runs: Results) -> None:
    run, port = runs.down
    assert run.code == 0 and run.record["answer"] == "42"
    assert run.stderr.strip().splitlines() == [
        # tierflow's export timeout, not the SDK's 10 s (with retries)
        "EXPORTER OTLPSpanExporter timeout=2.0",
        "EXPORTER OTLPMetricExporter timeout=2.0",
        f"tierflow: cannot export telemetry to http://127.0.0.1:{port} (connection refused); "
        "runs are not affected",
        # the exporters gave up on their own inside shutdown's bounded wait: nothing was
        # left to drop at its deadline (which would say so in a second warning)
        "SHUTDOWN True",
    ]


def test_no_endpoint_means_no_telemetry_traffic(runs: Results) -> None:
    run, model_port = runs.quiet
    assert run.code == 0, run.stderr
    *rest, last = run.stderr.strip().splitlines()
    assert rest == []
    connects = json.loads(last.removeprefix("CONNECTS "))
    assert connects and {port for _host, port in connects} == {model_port}


def test_telemetry_disabled_exports_nothing_despite_an_endpoint(runs: Results) -> None:
    run, model_port, endpoint = runs.off
    assert run.code == 0, run.stderr
    *rest, last = run.stderr.strip().splitlines()
    assert rest == []  # no export warning: no exporter was installed
    connects = json.loads(last.removeprefix("CONNECTS "))
    assert {port for _host, port in connects} == {model_port}
    assert endpoint not in {port for _host, port in connects}
    assert run.record["answer"] == "42"
    assert run.record["trace_id"] == "0" * 32


def test_an_application_provider_is_kept(runs: Results) -> None:
    run = runs.app
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    out = run.record
    assert out["kept"] is True and out["flushed"] is True
    assert out["traces"] == [out["trace_id"]]
    names = out["spans"]
    assert names[-1] == "invoke_workflow default" and "invoke_agent router" in names
    assert len([n for n in names if n.startswith("invoke_agent")]) == 2
    assert names.count("chat scripted") == 2
