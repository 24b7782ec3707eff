"""The runner: compiles a graph with a checkpointer and turns one question into a
:class:`RunRecord`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Command
from opentelemetry.trace import Status, StatusCode

from tierflow.errors import UserError
from tierflow.graphs.registry import BuildContext, GraphFactory, get_graph
from tierflow.record import RunRecord, Step, Usage
from tierflow.settings import TierflowSettings, load_settings
from tierflow.telemetry import finish_workflow, format_trace_id, workflow_span
from tierflow.tiers import Tier, TierSet

EventHandler = Callable[[dict[str, Any]], None]

INTERRUPT = "__interrupt__"  # LangGraph's channel for interrupts (stream and checkpoint)

MAX_QUESTION_CHARS = 100_000


class Runner:
    """Runs named graphs over a set of tiers, checkpointing every thread in SQLite.

    Example::

        runner = Runner()                       # settings from tierflow.toml + env
        record = await runner.ask("What is 2+2?")
        print(record.answer, record.steps[-1].backend)

    Used as ``async with Runner() as runner:``, it keeps the checkpoint database open and
    the compiled graphs cached across ``ask`` calls (a server would do this); otherwise
    each ``ask`` opens and closes them.
    """

    def __init__(
        self,
        settings: TierflowSettings | None = None,
        *,
        tiers: Mapping[str, Tier] | None = None,
        graphs: Mapping[str, GraphFactory] | None = None,
        checkpoint_path: Path | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.tiers = TierSet.from_settings(self.settings, overrides=tiers)
        self._graphs = dict(graphs or {})  # this runner's own graphs, before the registry
        self.context = BuildContext(self.tiers, self.settings)
        self.checkpoint_path = checkpoint_path or self.settings.state_dir / "checkpoints.sqlite"
        self._stack: AsyncExitStack | None = None
        self._saver: AsyncSqliteSaver | None = None
        self._apps: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        self._saver = await stack.enter_async_context(self._open_saver())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._saver = self._stack, None, None
        self._apps.clear()
        if stack is not None:
            await stack.aclose()

    @asynccontextmanager
    async def _open_saver(self) -> AsyncIterator[AsyncSqliteSaver]:
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(str(self.checkpoint_path)) as saver:
            await saver.setup()  # WAL journal
            # In WAL mode NORMAL keeps every committed checkpoint through a process crash
            # (SIGKILL); only an OS crash can lose the last ones. FULL cost ~10 ms a run.
            await saver.conn.execute("PRAGMA synchronous=NORMAL")
            yield saver

    def _factory(self, graph: str) -> GraphFactory:
        return self._graphs.get(graph) or get_graph(graph)

    async def _app(self, graph: str, saver: AsyncSqliteSaver) -> Any:
        if self._saver is saver and graph in self._apps:
            return self._apps[graph]
        app = self._factory(graph)(self.context).compile(checkpointer=saver)
        if self._saver is saver:
            self._apps[graph] = app
        return app

    async def ask(
        self,
        question: str,
        *,
        graph: str = "default",
        thread_id: str | None = None,
        on_event: EventHandler | None = None,
        stream_tokens: bool = False,
    ) -> RunRecord:
        """Run ``graph`` on ``question``; ``thread_id`` continues an earlier conversation.

        ``on_event`` receives progress events as they happen: ``node_started``,
        ``node_finished``, ``tool_call``, ``tool_result`` and, with ``stream_tokens``,
        ``token``. A run that reaches a tool needing approval returns with
        ``status == "awaiting_approval"``; continue it with :meth:`resume`.
        """
        question = question.strip()
        if not question:
            raise UserError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise UserError(f"the question is too long ({len(question)} > {MAX_QUESTION_CHARS})")
        self._factory(graph)  # UnknownGraph before any work
        thread_id = thread_id or uuid.uuid4().hex[:16]
        inputs = {
            "messages": [HumanMessage(question)],
            "route": None,
            "graph": graph,
            "steps": None,  # merge_steps: a new run starts a new list
        }
        return await self._run(graph, thread_id, inputs, on_event, stream_tokens, new=True)

    async def resume(
        self,
        thread_id: str,
        decision: Literal["approve", "reject"],
        *,
        on_event: EventHandler | None = None,
        stream_tokens: bool = False,
    ) -> RunRecord:
        """Continue a run paused for approval, approving or rejecting the pending calls."""
        async with AsyncExitStack() as stack:
            saver = self._saver
            if saver is None:
                saver = await stack.enter_async_context(self._open_saver())
            saved = await saver.aget_tuple({"configurable": {"thread_id": thread_id}})
        if saved is None:
            raise UserError(f"no conversation with thread id '{thread_id}'")
        graph = str(saved.checkpoint["channel_values"].get("graph") or "default")
        return await self._run(
            graph, thread_id, Command(resume=decision), on_event, stream_tokens, new=False
        )

    async def _run(
        self,
        graph: str,
        thread_id: str,
        inputs: Any,
        on_event: EventHandler | None,
        stream_tokens: bool,
        *,
        new: bool,
    ) -> RunRecord:
        with workflow_span(graph, thread_id, self.settings) as span:
            trace_id = format_trace_id(span)
            async with AsyncExitStack() as stack:
                saver = self._saver
                if saver is None:
                    saver = await stack.enter_async_context(self._open_saver())
                app = await self._app(graph, saver)
                config: Any = {"configurable": {"thread_id": thread_id}}
                # The saved checkpoint's pending writes say if a run is paused; cheaper than
                # aget_state, which also prepares the next tasks.
                saved = await saver.aget_tuple(config)
                paused = saved is not None and any(
                    w[1] == INTERRUPT for w in saved.pending_writes or []
                )
                if new and paused:
                    raise UserError(
                        f"thread '{thread_id}' is waiting for approval of a tool call; "
                        "continue it with --approve or --reject"
                    )
                if not new and not paused:
                    raise UserError(f"thread '{thread_id}' has no run waiting for approval")
                # Stream only what someone listens to: unused modes still cost per event.
                modes = ["values"]
                if on_event is not None:
                    modes += ["custom", *(["messages"] if stream_tokens else [])]
                stream: Any = app.astream(inputs, config, stream_mode=modes)
                state: dict[str, Any] = {}
                async for mode, chunk in stream:
                    if mode == "values":
                        state = chunk
                    elif on_event is None:
                        continue
                    elif mode == "custom":
                        on_event(chunk)
                    else:
                        message, meta = chunk
                        # Only what a model produced (it carries ls_model_type), not the
                        # copies nodes write to the state.
                        from_model = "ls_model_type" in meta
                        if from_model and isinstance(message, AIMessage) and message.content:
                            node = meta.get("langgraph_node")
                            on_event({"event": "token", "node": node, "text": message.content})
            pending = [i.value for i in state.pop(INTERRUPT, ())]
            record = _record(
                state,
                trace_id=trace_id,
                thread_id=thread_id,
                settings=self.settings,
                pending=pending,
            )
            finish_workflow(span, record)
            if record.degraded:
                span.set_status(Status(StatusCode.ERROR, "degraded"))
            return record


def _record(
    state: Mapping[str, Any],
    *,
    trace_id: str,
    thread_id: str,
    settings: TierflowSettings,
    pending: list[Any],
) -> RunRecord:
    steps = [Step.model_validate(s) for s in state.get("steps") or []]
    messages = state.get("messages") or []
    outcomes = {
        m.tool_call_id: m.artifact
        for m in messages
        if isinstance(m, ToolMessage) and isinstance(m.artifact, dict)
    }
    for step in steps:
        for call in step.tool_calls:
            outcome = outcomes.get(call.id)
            if outcome is not None:
                call.ok = bool(outcome.get("ok"))
                error = outcome.get("error") or {}
                call.error = f"{error.get('type')}: {error.get('message')}" if error else None
                call.duration_ms = outcome.get("duration_ms")
    answer = ""
    last = messages[-1] if messages else None
    if isinstance(last, AIMessage) and not last.tool_calls:
        answer = str(last.content)
    usage = sum((s.usage for s in steps), Usage())
    jaeger = settings.telemetry.jaeger_ui_url
    waiting = bool(pending)
    return RunRecord(
        answer=answer,
        route=state.get("route"),
        trace_id=trace_id,
        thread_id=thread_id,
        status="awaiting_approval" if waiting else "completed",
        pending_approval=pending,
        degraded=not waiting
        and (any(s.degraded for s in steps if s.node != "router") or not answer),
        steps=steps,
        usage=usage,
        trace_url=f"{jaeger.rstrip('/')}/trace/{trace_id}" if jaeger else None,
    )
