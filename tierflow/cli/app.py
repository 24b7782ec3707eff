"""The ``tierflow`` command line (typer + rich).

Exit codes (DESIGN.md): 0 success, 2 usage error, 1 run failure, always with a one-line
message on stderr and never a traceback (set ``TIERFLOW_DEBUG=1`` to see one).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tierflow.cli import console
from tierflow.cli.state import state_app
from tierflow.errors import RunError, TierflowError, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Agent graphs over model tiers: local models route, hosted models reason.",
)
local_app = typer.Typer(no_args_is_help=True, help="The embedded llama.cpp model.")
app.add_typer(local_app, name="local")

out = Console()
err = Console(stderr=True)

T = TypeVar("T")


def _run_async(coro: Any) -> Any:
    # asyncio is imported by the commands that need it: it costs ~45 ms of `--help`.
    import asyncio

    return asyncio.run(coro)


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (default: $TIERFLOW_CONFIG, ./tierflow.toml)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _fail(message: str, code: int) -> NoReturn:
    # Escaped: messages name settings sections ("[state] ..."), which rich reads as markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn`` turning tierflow errors into one-line messages and exit codes."""
    try:
        return fn()
    except UserError as exc:
        _fail(str(exc), 2)
    except TierflowError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("TIERFLOW_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (TIERFLOW_DEBUG=1 for details)", 1)


@app.command()
def ask(
    question: Annotated[
        str | None, typer.Argument(help="The question; '-' reads it from stdin.")
    ] = None,
    graph: Annotated[str, typer.Option("--graph", "-g", help="Graph to run.")] = "default",
    thread: Annotated[
        str | None,
        typer.Option(
            "--thread",
            "-t",
            help="Continue this conversation; without QUESTION, continue its unfinished run.",
        ),
    ] = None,
    approve: Annotated[
        bool, typer.Option("--approve", help="Approve the tool calls a paused run waits on.")
    ] = False,
    reject: Annotated[
        bool, typer.Option("--reject", help="Reject the tool calls a paused run waits on.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="If another run is busy on the thread, wait for it ([state] lease_wait_s) "
            "instead of failing.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Ask a question; the default graph routes it to a specialist that uses its tools.

    One run at a time holds a thread: a second one fails at once (exit 1, "thread ... is
    busy"), or with --wait runs after the first, on the thread as the first left it.
    """
    from tierflow.runner import Runner
    from tierflow.settings import load_settings

    decision = _decision(question, thread, approve, reject)
    if question == "-":
        question = sys.stdin.read()

    on_busy: Literal["wait", "reject"] = "wait" if wait else "reject"

    async def go(runner: Runner, on_event: Any = None) -> Any:
        if decision is not None:
            assert thread is not None
            how = None if decision == "continue" else decision
            return await runner.resume(thread, how, on_event=on_event, on_busy=on_busy)
        return await runner.ask(
            question or "", graph=graph, thread_id=thread, on_event=on_event, on_busy=on_busy
        )

    def run() -> Any:
        runner = Runner(load_settings(config))
        if as_json:
            return _run_async(go(runner))
        with err.status("Starting…", spinner="dots") as status:

            def on_event(event: dict[str, Any]) -> None:
                kind = event.get("event")
                if kind == "node_started":
                    status.update(f"{event['node']} on tier '{event['tier']}'…")
                elif kind == "tool_call":
                    status.update(f"{event['node']}: running {event['tool']}…")

            return _run_async(go(runner, on_event))

    record = _guard(run)
    if as_json:
        print(record.model_dump_json())
    else:
        _print_record(record)
    if record.status == "stopped":
        _fail(
            f"run stopped ({record.stopped_reason}); continue it with: "
            f"tierflow ask --thread {record.thread_id}",
            1,
        )
    if record.degraded:
        _fail(f"degraded answer: {_degraded_reason(record)}", 1)


def _decision(
    question: str | None, thread: str | None, approve: bool, reject: bool
) -> Literal["approve", "reject", "continue"] | None:
    """What to do with the thread: answer its paused run, continue its unfinished run
    (``--thread ID`` alone: after a crash or a spent budget), or ask (``None``)."""
    if approve and reject:
        _fail("choose one of --approve and --reject", 2)
    if not (approve or reject):
        if question is None and thread is not None:
            return "continue"
        if question is None:
            _fail("missing QUESTION (or --thread ID to continue an unfinished run)", 2)
        return None
    if thread is None:
        _fail("--approve and --reject need --thread ID", 2)
    if question is not None:
        _fail("--approve and --reject take no QUESTION", 2)
    return "approve" if approve else "reject"


def _print_record(record: Any) -> None:
    if record.status == "awaiting_approval":
        for pending in record.pending_approval:
            for call in pending.get("calls", []):
                args = ", ".join(f"{k}={v!r}" for k, v in call["args"].items())
                out.print(f"[yellow]needs approval:[/] {call['name']}({args})", highlight=False)
        out.print(
            f"Paused. Continue with: tierflow ask --thread {record.thread_id} --approve "
            "(or --reject)",
            highlight=False,
        )
        return
    if record.status == "stopped" and not record.answer:
        out.print("[dim](no answer before the run stopped)[/]", highlight=False)
    else:
        out.print(record.answer, highlight=False, markup=False, soft_wrap=True)
    out.print()
    for step in record.steps:
        where = step.backend or "no backend"
        if step.model:  # a router decided by cue words or embeddings names no model
            where += f" ({step.model})"
        line = f"[dim]{step.node} · tier {step.tier} · {where}"
        if step.fallback_reason:
            line += f" · fell back: {step.fallback_reason}"
        for call in step.tool_calls:
            status = "ok" if call.ok else f"failed: {call.error}"
            line += f"\n  tool {call.name} · {status}"
        out.print(line + "[/]", highlight=False)
    for g in record.guardrails:
        if g.action != "allow":
            out.print(f"[dim]guardrail {g.stage}/{g.name} · {g.action}[/]", highlight=False)
    if record.sensitive:
        out.print("[dim]residency: sensitive data, local backends only[/]", highlight=False)
    u = record.usage
    out.print(
        f"[dim]route {record.route} · {u.input_tokens}+{u.output_tokens} tokens · "
        f"${u.cost_usd:.6f} · thread {record.thread_id} · trace {record.trace_id}[/]",
        highlight=False,
    )


@app.command("tool")
def run_tool(
    name: Annotated[str, typer.Argument(help="Built-in tool: sql_query, sql_schema, ...")],
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object.")] = "{}",
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Run one built-in tool exactly as an agent would (validation, limits, sandbox)."""
    from tierflow.guardrails.runtime import guarded_tool_run
    from tierflow.settings import load_settings
    from tierflow.telemetry import recording
    from tierflow.tools.builtin import BuiltinTools

    try:
        parsed = json.loads(args)
    except json.JSONDecodeError as exc:
        _fail(f"--args is not valid JSON: {exc}", 2)
    if not isinstance(parsed, dict):
        _fail("--args must be a JSON object", 2)

    def run() -> Any:
        settings = load_settings(config)
        tool = BuiltinTools(settings).get(name)
        with recording(settings.telemetry.enabled):
            return _run_async(guarded_tool_run(settings, tool, parsed))

    outcome, verdicts = _guard(run)
    if as_json:
        shown = outcome.model_dump(
            include={"ok", "output", "error", "truncated", "duration_ms", "answered_by"},
            exclude_none=False,
        )
        print(json.dumps({**shown, "guardrails": verdicts}, default=str))
    elif outcome.ok:
        text = (
            outcome.output
            if isinstance(outcome.output, str)
            else json.dumps(outcome.output, indent=2, default=str)
        )
        out.print(text, highlight=False, markup=False, soft_wrap=True)
    for v in verdicts:
        if v["action"] != "allow" and not as_json:
            err.print(f"guardrail {v['stage']}/{v['name']}: {v['action']} ({v['reason']})")
    if not outcome.ok:
        assert outcome.error is not None
        _fail(f"{name}: {outcome.error.type}: {outcome.error.message}", 1)


@app.command("guard")
def guard(
    text: Annotated[
        str | None, typer.Argument(help="Text to check; '-' or nothing reads stdin.")
    ] = None,
    stage: Annotated[
        str, typer.Option("--stage", "-s", help="input, tool_call, tool_result or output.")
    ] = "input",
    jsonl: Annotated[
        Path | None,
        typer.Option("--jsonl", help='Check each {"text": ...} line of FILE; one verdict a line.'),
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Run one stage's configured guardrails on TEXT, stdin or a JSONL corpus.

    A block is a verdict, not an error: the exit code is 0 for every verdict.
    """
    from tierflow.cli.guard import check_texts, read_jsonl, render
    from tierflow.guardrails.base import STAGES

    if stage not in STAGES:
        _fail(f"--stage must be one of {', '.join(STAGES)} (got '{stage}')", 2)
    if jsonl is not None and text is not None:
        _fail("give TEXT or --jsonl FILE, not both", 2)
    if jsonl is not None:
        texts = _guard(lambda: read_jsonl(jsonl))  # validated whole before any output
    else:
        texts = [sys.stdin.read() if text in (None, "-") else str(text)]
    results = _guard(lambda: _run_async(check_texts(stage, texts, config)))
    for result in results:
        if as_json or jsonl is not None:
            print(json.dumps(result.as_dict(), ensure_ascii=False))
        else:
            out.print(render(result), highlight=False, soft_wrap=True)


def _degraded_reason(record: Any) -> str:
    for step in record.steps:
        if step.degraded and step.kind == "agent":
            return f"tier '{step.tier}' had no working backend ({step.fallback_reason})"
    return "the graph produced no answer"


@app.command()
def doctor(
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    probe: Annotated[
        str | None,
        typer.Option(
            "--probe",
            metavar="BACKEND",
            help="Contract-test one OpenAI-compatible backend (local, vllm:<model>, "
            "openai:<model>): a forced tool call, a 9-character tool-call id round trip, "
            "response_format json_schema. Exit 0 if all pass, 1 otherwise.",
        ),
    ] = None,
) -> None:
    """Show each configured backend, its state and its circuit breaker (starts the
    embedded model). Breaker states are those the last runs persisted in the state dir."""
    if probe is not None:
        _probe(probe, as_json, config)
        return

    from rich.markup import escape

    from tierflow.models.probe import backend_table
    from tierflow.models.tiers import TierSet
    from tierflow.settings import load_settings

    def run() -> Any:
        settings = load_settings(config)
        table = backend_table(settings, TierSet.from_settings(settings))
        if as_json:
            return _run_async(table)
        with err.status("Checking backends…", spinner="dots"):
            return _run_async(table)

    doctor: dict[str, Any] = _guard(run)
    if as_json:
        print(json.dumps(doctor))
        return
    table = Table(title="tierflow backends")
    for col in ("backend", "state", "detail", "local", "tiers"):
        table.add_column(col)
    colours = {"reachable": "green", "model loaded": "green", "unavailable": "yellow"}
    for row in doctor["backends"]:
        colour = colours.get(row["state"], "red")
        table.add_row(
            row["backend"],
            f"[{colour}]{row['state']}[/]",
            row["detail"],
            "yes" if row["local"] else "no",
            ", ".join(row["tiers"]),
        )
    out.print(table)
    # Breakers below the table (it has no room for them in 80 columns): only those with news.
    for backend, b in ((row["backend"], row["breaker"]) for row in doctor["backends"]):
        if b["state"] == "closed" and not b["last_error"]:
            continue
        colour = "yellow" if b["state"] == "half_open" else "red"
        since = f" since {b['opened_at']}" if b["opened_at"] else ""
        line = f"breaker {escape(backend)}: [{colour}]{b['state']}[/]{since}"
        line += f", {b['failures']} failure(s)" if b["failures"] else ""
        if b["last_error"]:
            line += f"; last error at {b['last_error_at']}: {escape(b['last_error'])}"
        out.print(line, highlight=False, soft_wrap=True)


def _probe(backend_id: str, as_json: bool, config: Path | None) -> None:
    from rich.markup import escape

    from tierflow.models.probe import CHECK_TITLES, probe_backend
    from tierflow.settings import load_settings

    def run() -> Any:
        settings = load_settings(config)
        if as_json:
            return _run_async(probe_backend(backend_id, settings))
        with err.status(f"Probing {backend_id}…", spinner="dots"):
            return _run_async(probe_backend(backend_id, settings))

    report = _guard(run)
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        table = Table(title=f"probe {escape(report.backend)} ({escape(report.base_url)})")
        for col in ("check", "result", "detail"):
            table.add_column(col)
        for c in report.checks:
            result = "[green]ok[/]" if c.ok else "[red]failed[/]"
            detail = escape(c.detail) + (f"\n[yellow]note:[/] {escape(c.note)}" if c.note else "")
            table.add_row(CHECK_TITLES.get(c.name, c.name), result, detail)
        out.print(table)
    if not report.ok:
        raise typer.Exit(1)


@local_app.command("fetch")
def local_fetch(config: ConfigOpt = None) -> None:
    """Assemble and verify the embedded model file; print its path."""
    from tierflow.models.local_model import resolve_model_path
    from tierflow.settings import load_settings

    def run() -> Path:
        settings = load_settings(config)
        return resolve_model_path(settings.backends.local.model_path, settings.cache_dir)

    print(_guard(run))


@local_app.command("serve")
def local_serve(
    port: Annotated[int, typer.Option(help="Port (0: any free port).", min=0, max=65535)] = 8080,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    config: ConfigOpt = None,
) -> None:
    """Run the embedded OpenAI-compatible server in the foreground until Ctrl-C."""
    from tierflow.models.local_model import DEFAULT_MODEL, resolve_model_path
    from tierflow.models.local_server import LocalServer, LocalServerConfig
    from tierflow.settings import load_settings

    def start() -> LocalServer:
        settings = load_settings(config)
        local = settings.backends.local
        path = resolve_model_path(local.model_path, settings.cache_dir)
        server = LocalServer(
            LocalServerConfig(
                model_path=path,
                model_name=local.model_path.stem if local.model_path else DEFAULT_MODEL.name,
                n_ctx=local.n_ctx,
                threads=local.threads,
                host=host,
                port=port,
            )
        )
        server.start()
        return server

    with err.status("Loading the embedded model…", spinner="dots"):
        server = _guard(start)
    print(f"serving {server.config.model_name} at {server.base_url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.stop()


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind (loopback unless API keys are set).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=0, max=65535)] = 8123,
    config: ConfigOpt = None,
    worker_engine: Annotated[
        str | None,
        typer.Option(
            help="Where runs execute: inprocess, or dbos (on `tierflow worker` processes); "
            "default [server] worker."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Start and supervise this many `tierflow worker` processes (implies "
            "--worker-engine dbos); 0: runs execute as [server] worker says.",
            min=0,
        ),
    ] = 0,
    graph: Annotated[
        list[str] | None,
        typer.Option(help="A graph factory to serve as well, as NAME=module.path:factory."),
    ] = None,
) -> None:
    """Serve the graphs over HTTP: the Agent Protocol / LangGraph Server API that
    langgraph-sdk speaks (OpenAPI at /docs)."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        _fail(f"tierflow serve needs {', '.join(missing)}: pip install 'tierflow[server]'", 2)
    if worker_engine not in (None, "inprocess", "dbos"):
        _fail(f"--worker-engine: expected inprocess or dbos (got {worker_engine!r})", 2)
    if workers and worker_engine == "inprocess":
        _fail("--workers: worker processes need --worker-engine dbos (or none)", 2)
    if workers:
        worker_engine = "dbos"

    def build() -> Any:
        from tierflow.runner import Runner
        from tierflow.server import create_app
        from tierflow.server.auth import check_bind, load_api_keys
        from tierflow.settings import load_settings

        keys = load_api_keys()
        # Without keys anyone who can reach the port can run the graphs (and their tools).
        check_bind(host, keys)
        overrides = {"server": {"worker": worker_engine}} if worker_engine else {}
        settings = load_settings(config, **overrides)
        if settings.state.url:
            from tierflow import database

            # Here, as one line, rather than as uvicorn's traceback of a failed startup.
            database.check(settings.state.url, settings.state.connect_timeout_s)
        return create_app(Runner(settings, graphs=_graphs(graph)), api_keys=keys), settings

    server_app, settings = _guard(build)
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(server_app, host=host, port=port, log_level="warning"))
    print(f"serving on http://{host}:{port} (OpenAPI at /docs)", flush=True)
    if not workers:
        server.run()
        return
    from tierflow.server.supervisor import WorkerPool

    args = [*(["--config", str(config)] if config else []), *(f"--graph={g}" for g in graph or [])]
    grace = settings.server.drain_s + 10
    pool = WorkerPool(workers, args, name=str(port), grace_s=grace, say=_say)
    pool.start_when(lambda: server.started, lambda: server.should_exit)
    # uvicorn re-raises the signal that stopped it once its own handlers are gone: caught
    # here, so the workers are stopped (drained) before this process exits, with 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        pool.stop()


def _say(line: str) -> None:
    print(line, flush=True)


def _graphs(specs: list[str] | None) -> dict[str, Any]:
    """``--graph NAME=module.path:factory`` options as the Runner's graphs."""
    from tierflow.graphs.registry import get_graph

    graphs: dict[str, Any] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep:
            raise UserError(f"--graph: expected NAME=module.path:factory (got {spec!r})")
        graphs[name] = get_graph(path)
    return graphs


@app.command()
def worker(
    config: ConfigOpt = None,
    graph: Annotated[
        list[str] | None,
        typer.Option(help="A graph factory to serve as well, as NAME=module.path:factory."),
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option("--id", help="This worker's id (default: host-pid-random).")
    ] = None,
    exit_with_parent: Annotated[
        bool, typer.Option(hidden=True, help="Stop when the parent process is gone.")
    ] = False,
) -> None:
    """Execute the runs that `tierflow serve --worker-engine dbos` queues (one process;
    start several to share the load). SIGTERM drains, then hands the rest back."""
    import importlib.util

    missing = [m for m in ("fastapi", "dbos") if importlib.util.find_spec(m) is None]
    if missing:
        _fail(f"tierflow worker needs {', '.join(missing)}: pip install 'tierflow[server]'", 2)

    def build() -> Any:
        from tierflow.runner import Runner
        from tierflow.settings import load_settings

        runner = Runner(load_settings(config), graphs=_graphs(graph))
        runner.require_checkpoints("tierflow worker (its runs)")
        return runner

    runner = _guard(build)
    from tierflow.server.executor import run_worker

    run_worker(runner, executor_id=worker_id, exit_with_parent=exit_with_parent)


@app.command()
def batch(
    file: Annotated[Path, typer.Argument(help='JSON Lines: {"question": ..., "id"?, ...} a line.')],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Results, one JSON line per input line.")
    ] = Path("results.jsonl"),
    graph: Annotated[
        str, typer.Option("--graph", "-g", help="Graph for lines naming none.")
    ] = "default",
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-n", min=1, help="Questions in flight, in all.")
    ] = 4,
    processes: Annotated[
        int, typer.Option("--processes", "-p", min=1, help="Worker processes (in-process runs).")
    ] = 1,
    server: Annotated[
        str | None,
        typer.Option("--server", metavar="URL", help="Run through tierflow serve at URL."),
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Add each run's full record.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run many questions: concurrently, over several processes or a server. Run it
    again with the same --out to resume: lines already there are skipped."""
    from tierflow.cli.batch import run, summary_line
    from tierflow.runner.batch.items import BatchOptions

    if server is not None and processes > 1:
        _fail("--processes is for in-process runs; with --server the server's workers run", 2)
    options = BatchOptions(
        graph=graph,
        concurrency=concurrency,
        processes=processes,
        full=full,
        config=config,
        server=server,
        api_key=os.environ.get("TIERFLOW_API_KEY") or None,
    )
    summary = _guard(lambda: run(file, out, options, err=err, quiet=quiet))
    line = summary_line(summary, out)
    if line is not None:
        _fail(line, 1)


@app.command()
def bench(
    name: Annotated[str | None, typer.Argument(help="Benchmark to run (default: all).")] = None,
    results: Annotated[Path, typer.Option(help="Folder for the recorded results.")] = Path(
        "bench/results"
    ),
    route: Annotated[
        str | None, typer.Option(help="answers: only this route (data, docs, code, web).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="answers: questions per route; overhead: runs per setup (300)."),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(help="answers, profile: record as NAME-TAG.json (e.g. before)."),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="load: also over P worker processes, interleaved with 1 "
            "(records load-processes-P.json).",
        ),
    ] = None,
    ids: Annotated[
        str | None, typer.Option(help="answers: only these question ids (comma-separated).")
    ] = None,
    routing: Annotated[
        bool, typer.Option(help="answers: the router alone, with and without its cue words.")
    ] = False,
) -> None:
    """Run the benchmarks and record their results."""
    from tierflow.bench import run_benchmarks

    _guard(
        lambda: run_benchmarks(
            name,
            results,
            route=route,
            limit=limit,
            tag=tag,
            processes=processes,
            ids=ids,
            routing=routing,
        )
    )


app.command("ui")(console.ui)
app.add_typer(state_app(_guard, out.print), name="state")


def main() -> None:
    try:
        app()
    except RunError as exc:  # raised outside _guard, e.g. by an atexit hook
        _fail(str(exc), 1)
    finally:
        # Flush spans and metrics to the OTLP endpoint, if a command set telemetry up
        # (bounded wait); `--help` and friends never load it.
        telemetry = sys.modules.get("tierflow.telemetry")
        if telemetry is not None:
            telemetry.shutdown()
