"""The runner: a thin driver over a compiled graph. It opens the checkpointer, keeps the
thread bookkeeping (what state a thread is in, what to refuse), streams the run and turns
the final state into a :class:`RunRecord`.

Guardrails, budget and residency are not here: the compiled graph carries them
(:func:`tierflow.graphs.compile_graph`), so the same graph invoked with plain LangGraph
behaves the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command
from opentelemetry.trace import Status, StatusCode

from tierflow.agents.agent import Agent
from tierflow.agents.policy import TICKET_KEY, RunPolicy, RunTicket, run_guards
from tierflow.errors import UserError
from tierflow.graphs.context import BuildContext, GraphFactory
from tierflow.graphs.registry import GraphEntry
from tierflow.guardrails.base import Guardrail
from tierflow.models.tiers import Tier, TierSet
from tierflow.record import RunRecord
from tierflow.runner.catalog import GraphCatalog
from tierflow.runner.control import INTERRUPT, check_thread, read_thread
from tierflow.runner.decisions import Decision, resume_command
from tierflow.runner.events import EventHandler, RunEvent, consume, events_of
from tierflow.runner.guards import guard_partial
from tierflow.runner.lease import BusyStrategy, ThreadLeases, leases_for
from tierflow.runner.record import run_record
from tierflow.runner.retention import start_pruning, stop_pruning
from tierflow.runner.saver import check_durability, open_saver, saver_kind, stateless_error
from tierflow.settings import BudgetSettings, TierflowSettings, load_settings
from tierflow.telemetry import finish_workflow, format_trace_id, workflow_span

MAX_QUESTION_CHARS = 100_000


class Runner:
    """Runs named graphs over a set of tiers, checkpointing every thread.

    Example::

        runner = Runner()                       # settings from tierflow.toml + env
        record = await runner.ask("What is 2+2?")
        print(record.answer, record.steps[-1].backend)

        # one agent, no graph to write
        record = await Runner().ask("Summarise this", agent=Agent(name="a", ...))

    Used as ``async with Runner() as runner:``, it keeps the checkpointer open and the
    compiled graphs cached across ``ask`` calls (a server would do this); otherwise each
    ``ask`` opens and closes them, so nothing is left open at exit. Model clients are
    built once, when the runner opens (or on its first run), not per call.

    ``checkpointer`` takes any LangGraph checkpointer, or one of ``"sqlite"``,
    ``"postgres"``, ``"memory"``, ``"none"`` (default ``[state] checkpointer``: PostgreSQL
    when ``[state] database_url`` is set, else SQLite at ``<state_dir>/checkpoints.sqlite``).
    ``"none"`` is stateless: one-shot questions only; resume, approvals and continuing a
    thread raise :class:`~tierflow.errors.UserError`. ``durability`` (default
    ``[state] durability``, ``"sync"``) says when checkpoints are written: ``"sync"``
    before each next step (crash-safe), ``"async"`` alongside it, ``"exit"`` at the end.
    ``leases`` keeps one run at a time on a thread, across processes
    (:mod:`tierflow.runner.lease`); the default is SQLite at ``<state_dir>/leases.sqlite``.
    """

    def __init__(
        self,
        settings: TierflowSettings | None = None,
        *,
        tiers: Mapping[str, Tier] | None = None,
        graphs: Mapping[str, GraphFactory | GraphEntry] | None = None,
        checkpoint_path: Path | None = None,
        checkpointer: BaseCheckpointSaver[Any] | str | None = None,
        durability: str | None = None,
        guardrails: Sequence[Guardrail] = (),
        budget: BudgetSettings | None = None,
        deps: Any = None,
        leases: ThreadLeases | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        #: What tools that declare a ToolContext get as ``context.deps`` (a database
        #: handle, an API client...); the run's settings come along as ``context.settings``.
        self.deps = deps
        #: Each run's limits (``[budget]`` unless given); ``ask(budget=...)`` overrides.
        self.budget = budget or self.settings.budget
        self.tiers = TierSet.from_settings(self.settings, overrides=tiers)
        self.context = BuildContext(self.tiers, self.settings)
        self.graphs = GraphCatalog(graphs or {}, self.context, guardrails)
        self.checkpoint_path = checkpoint_path or self.settings.state_dir / "checkpoints.sqlite"
        self._kind = saver_kind(self.settings, checkpointer)
        self._checkpointer = checkpointer if isinstance(checkpointer, BaseCheckpointSaver) else None
        state = self.settings.state
        #: When checkpoints are written (``sync``, ``async``, ``exit``).
        self.durability = check_durability(durability or state.durability)
        self.leases = leases or leases_for(
            self.settings.state_dir, state.url, state.connect_timeout_s
        )
        self._stack: AsyncExitStack | None = None
        self._saver: BaseCheckpointSaver[Any] | None = None
        self._clients_built = False

    async def _build_clients(self) -> None:
        if not self._clients_built:
            # Off the loop: each client loads its TLS certificates.
            await asyncio.to_thread(self.tiers.build_clients)
            self._clients_built = True

    async def __aenter__(self) -> Self:
        await self._build_clients()
        stack = AsyncExitStack()
        self._saver = await stack.enter_async_context(self._open_saver())
        pruner = start_pruning(self._saver, self.settings.state)  # [state] keep_*
        if pruner is not None:
            stack.push_async_callback(stop_pruning, pruner)
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def stateless(self) -> bool:
        """No checkpointer (``[state] checkpointer = "none"``): one-shot questions only."""
        return self._kind == "none"

    def require_checkpoints(self, what: str) -> None:
        """Refuse ``what`` (a server, a feature) in stateless mode, with a one-line error."""
        if self.stateless:
            raise stateless_error(what)

    @property
    def checkpointer(self) -> BaseCheckpointSaver[Any]:
        """The open checkpointer (inside ``async with``): a server shares it across runs."""
        self.require_checkpoints("Runner.checkpointer")
        if self._saver is None:
            raise RuntimeError("the runner is not open: use `async with Runner() as runner`")
        return self._saver

    def run_config(
        self, thread_id: str, budget: BudgetSettings | None = None, run_id: str | None = None
    ) -> Any:
        """The LangGraph config of one run on ``thread_id``: its ticket (run id, start,
        budget), the runner's settings and deps."""
        ticket = RunTicket(
            run_id=run_id or uuid.uuid4().hex, started_at=time.time(), budget=budget or self.budget
        )
        return {
            "configurable": {
                "thread_id": thread_id,
                TICKET_KEY: ticket,
                "settings": self.settings,
                "deps": self.deps,
            }
        }

    async def finish(
        self,
        graph: str,
        app: Any,
        config: Any,
        state: dict[str, Any] | None,
        *,
        trace_id: str = "",
        stopped: str | None = None,
    ) -> RunRecord:
        """The record of a run that ended with ``state`` (None: read the checkpoint)."""
        thread_id = str(config["configurable"]["thread_id"])
        if app.checkpointer is None:
            state = dict(state or {})  # stateless: the stream's last state is all there is
            if state.get(INTERRUPT):
                raise stateless_error("approving a tool call")
        elif state is None or stopped is not None:
            # A stopped run's partial result is what its checkpoint holds.
            state = dict((await app.aget_state(config)).values)
        pending: list[Any] = []
        if state.pop(INTERRUPT, None):
            # Every interrupt still waiting (one per tool call needing approval);
            # the stream's last chunk may carry only some of them.
            snapshot = await app.aget_state(config)
            pending = [i.value for i in snapshot.interrupts]
        record = run_record(
            state,
            trace_id=trace_id,
            thread_id=thread_id,
            settings=self.settings,
            pending=pending,
            stopped=stopped,
        )
        if record.status == "stopped" and record.answer:
            guards = run_guards(state, self.policy(graph))
            record = await guard_partial(guards, record)
        return record

    async def aclose(self) -> None:
        """Close the checkpointer (``async with`` does this)."""
        stack, self._stack, self._saver = self._stack, None, None
        self.graphs.forget()
        if stack is not None:
            await stack.aclose()

    def _open_saver(self) -> AbstractAsyncContextManager[BaseCheckpointSaver[Any] | None]:
        return open_saver(self.settings, self.checkpoint_path, self._checkpointer, self._kind)

    def hold(self, thread_id: str, on_busy: BusyStrategy = "reject") -> Any:
        """The thread's lease for one run, per ``[state]``; none in stateless mode, where
        every run has a thread of its own that nothing else can name."""
        if self.stateless:
            return contextlib.nullcontext()
        state = self.settings.state
        return self.leases.hold(
            thread_id, strategy=on_busy, ttl_s=state.lease_ttl_s, wait_s=state.lease_wait_s
        )

    def graph_names(self) -> list[str]:
        """Every graph this runner can run: its own, then the process-wide registry."""
        return self.graphs.names()

    def entry(self, graph: str) -> GraphEntry:
        """The graph's registration (``UnknownGraph`` if there is none)."""
        return self.graphs.entry(graph)

    def policy(self, graph: str) -> RunPolicy:
        """What ``graph`` enforces under this runner: guardrails and budget."""
        return self.graphs.policy(graph, self.settings, self.budget)

    def compile(self, graph: str = "default", saver: BaseCheckpointSaver[Any] | None = None) -> Any:
        """``graph`` compiled with its run stages and policy. Cached while the runner is
        open (a server does this), for a checkpointer given to the runner, or stateless."""
        if saver is None:
            keep = self.stateless
        else:
            keep = saver is self._saver or saver is self._checkpointer
        return self.graphs.compile(graph, self.policy(graph), saver, keep=keep)

    async def ask(
        self,
        question: str,
        *,
        graph: str = "default",
        agent: Agent | None = None,
        thread_id: str | None = None,
        on_event: EventHandler | None = None,
        stream_tokens: bool = False,
        budget: BudgetSettings | None = None,
        on_busy: BusyStrategy = "reject",
    ) -> RunRecord:
        """Run ``graph`` (or just ``agent``) on ``question``; ``thread_id`` continues an
        earlier conversation.

        ``on_event`` receives progress events as they happen: ``node_started``,
        ``node_finished``, ``tool_call``, ``tool_result`` and, with ``stream_tokens``,
        ``token`` (:meth:`stream` gives them as typed values). A run that reaches a tool
        needing approval returns with ``status == "awaiting_approval"``; continue it
        with :meth:`resume`.

        ``budget`` (default: the runner's) bounds model calls, tokens, cost and wall time;
        a run that spends it returns ``status == "stopped"`` with its partial result and
        can be continued with :meth:`resume`. A thread whose last run is unfinished
        (stopped, or its process killed) refuses a new question until it is continued.

        The run holds the thread's lease from start to end. ``on_busy`` says what to do
        when another run (in any process) holds it: ``"reject"`` raises
        :class:`~tierflow.errors.ThreadBusy`; ``"wait"`` (or ``"enqueue"``) waits up to
        ``[state] lease_wait_s`` and then runs on the thread as the other run left it.
        """
        question = question.strip()
        if not question:
            raise UserError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise UserError(f"the question is too long ({len(question)} > {MAX_QUESTION_CHARS})")
        if agent is not None:
            graph = self.graphs.add_agent(agent)
        self.entry(graph)  # UnknownGraph before any work
        if thread_id is not None and self.stateless:
            raise stateless_error(f"continuing thread '{thread_id}'")
        thread_id = thread_id or uuid.uuid4().hex[:16]
        inputs = {"messages": [HumanMessage(question)]}
        async with self.hold(thread_id, on_busy):
            return await self._run(graph, thread_id, inputs, on_event, stream_tokens, budget)

    async def stream(
        self,
        question: str,
        *,
        graph: str = "default",
        agent: Agent | None = None,
        thread_id: str | None = None,
        tokens: bool = True,
        budget: BudgetSettings | None = None,
        on_busy: BusyStrategy = "reject",
    ) -> AsyncIterator[RunEvent]:
        """Run like :meth:`ask`, yielding typed events as they happen (with ``tokens``,
        the answer's tokens), then :class:`~tierflow.runner.events.RunFinished` with the
        record. Leaving the loop early cancels the run (it can be continued later)."""

        def run(forward: EventHandler) -> Awaitable[RunRecord]:
            return self.ask(
                question,
                graph=graph,
                agent=agent,
                thread_id=thread_id,
                on_event=forward,
                stream_tokens=tokens,
                budget=budget,
                on_busy=on_busy,
            )

        async for event in events_of(run):
            yield event

    async def resume(
        self,
        thread_id: str,
        decision: Decision | None = None,
        *,
        decisions: Mapping[str, Decision] | None = None,
        on_event: EventHandler | None = None,
        stream_tokens: bool = False,
        budget: BudgetSettings | None = None,
        on_busy: BusyStrategy = "reject",
    ) -> RunRecord:
        """Continue a thread's last run from its checkpoint.

        A run paused for approval goes on with ``decision`` for every pending call, or
        ``decisions`` by tool-call id (each ``"approve"``, ``"reject"`` or
        ``{"action": "approve", "args": {...}}`` to run it with edited arguments). Without
        either, a run that was cut off (its process killed, or a budget spent) re-runs only
        the steps that had not completed: a tool call that completed is not repeated. A
        continued run gets a fresh ``budget``. The thread's lease is held as in :meth:`ask`.
        """
        if self.stateless:
            raise stateless_error("resuming a run")
        async with self.hold(thread_id, on_busy):
            return await self._resume(
                thread_id, decision, decisions, on_event, stream_tokens, budget
            )

    async def _resume(
        self,
        thread_id: str,
        decision: Decision | None,
        decisions: Mapping[str, Decision] | None,
        on_event: EventHandler | None,
        stream_tokens: bool,
        budget: BudgetSettings | None,
    ) -> RunRecord:
        async with AsyncExitStack() as stack:
            saver = self._saver
            if saver is None:
                saver = await stack.enter_async_context(self._open_saver())
            assert saver is not None  # not stateless (checked by resume)
            saved = await saver.aget_tuple({"configurable": {"thread_id": thread_id}})
            if saved is None:
                raise UserError(f"no conversation with thread id '{thread_id}'")
            graph = str(saved.checkpoint["channel_values"].get("graph") or "default")
            inputs: Command[Any] | None = None  # continue, re-running only unfinished steps
            if decisions or decision is not None:
                app = self.compile(graph, saver)
                snapshot = await app.aget_state({"configurable": {"thread_id": thread_id}})
                inputs = resume_command(snapshot.interrupts, decisions or decision)
        return await self._run(graph, thread_id, inputs, on_event, stream_tokens, budget)

    async def _run(
        self,
        graph: str,
        thread_id: str,
        inputs: Any,
        on_event: EventHandler | None,
        stream_tokens: bool,
        budget: BudgetSettings | None,
    ) -> RunRecord:
        await self._build_clients()
        with workflow_span(graph, thread_id, self.settings) as span:
            trace_id = format_trace_id(span)
            async with AsyncExitStack() as stack:
                saver = self._saver
                if saver is None:
                    saver = await stack.enter_async_context(self._open_saver())
                app = self.compile(graph, saver)
                config = self.run_config(thread_id, budget)
                if saver is not None:  # stateless: every run is a new thread
                    saved = await saver.aget_tuple(config)
                    check_thread(thread_id, await read_thread(app, config, saved), inputs)
                # Stream only what someone listens to: unused modes still cost per event.
                modes = ["values"]
                if on_event is not None:
                    modes += ["custom", *(["messages"] if stream_tokens else [])]
                # durability="sync" (the default): a step's checkpoint is committed before
                # the next step starts, so a process killed at any point never re-runs a
                # completed step (a tool's side effects) on resume.
                durability = self.durability if saver is not None else None
                stream = app.astream(inputs, config, stream_mode=modes, durability=durability)
                async with aclosing(stream):
                    state, stopped = await consume(stream, on_event)
                record = await self.finish(
                    graph, app, config, state, trace_id=trace_id, stopped=stopped
                )
            finish_workflow(span, record)
            if record.degraded:
                span.set_status(Status(StatusCode.ERROR, record.stopped_reason or "degraded"))
            return record
