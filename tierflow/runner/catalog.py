"""The graphs a runner can run: its own (``Runner(graphs=...)``, one-agent graphs of
``ask(agent=...)``), then the process-wide registry; each compiled with its run stages
and policy, and cached per checkpointer while the runner is open."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph

from tierflow.agents.agent import Agent
from tierflow.agents.node import add_agent
from tierflow.agents.policy import RunPolicy
from tierflow.graphs.context import BuildContext, GraphFactory
from tierflow.graphs.registry import GraphEntry, get_entry, graph_names
from tierflow.graphs.stages import compile_graph
from tierflow.guardrails.base import Guardrail
from tierflow.settings import BudgetSettings, TierflowSettings
from tierflow.state import GraphState


class GraphCatalog:
    def __init__(
        self,
        graphs: Mapping[str, GraphFactory | GraphEntry],
        context: BuildContext,
        guardrails: Sequence[Guardrail] = (),
    ) -> None:
        # This runner's own graphs, looked up before the process-wide registry.
        self._own: dict[str, GraphEntry] = {
            name: g if isinstance(g, GraphEntry) else GraphEntry(g) for name, g in graphs.items()
        }
        self.context = context
        self._guardrails = tuple(guardrails)  # added to every graph's stages
        self._apps: dict[tuple[str, int], Any] = {}
        # Policies per graph, with what they were built from: building one constructs every
        # guardrail of its stages (~0.3-0.8 ms), and the runner asks for it on each run.
        self._policies: dict[
            str, tuple[GraphEntry, TierflowSettings, BudgetSettings, RunPolicy]
        ] = {}

    def entry(self, graph: str) -> GraphEntry:
        """The graph's registration (``UnknownGraph`` if there is none)."""
        return self._own.get(graph) or get_entry(graph)

    def names(self) -> list[str]:
        return sorted({*self._own, *graph_names()})

    def policy(self, graph: str, settings: TierflowSettings, budget: BudgetSettings) -> RunPolicy:
        entry = self.entry(graph)
        cached = self._policies.get(graph)
        # identity, not equality: comparing settings models costs what building does
        made_from = (entry, settings, budget)
        if cached is not None and all(a is b for a, b in zip(cached[:3], made_from, strict=True)):
            return cached[3]
        extra = (*entry.guardrails, *self._guardrails)
        policy = RunPolicy.from_settings(settings, graph, extra, budget)
        self._policies[graph] = (entry, settings, budget, policy)
        return policy

    def compile(
        self, graph: str, policy: RunPolicy, saver: BaseCheckpointSaver[Any] | None, *, keep: bool
    ) -> Any:
        """``graph`` compiled under ``policy``; cached for ``saver`` when ``keep``."""
        key = (graph, id(saver))
        if key in self._apps:
            return self._apps[key]
        builder = self.entry(graph).factory(self.context)
        app = compile_graph(builder, policy, name=graph, checkpointer=saver)
        if keep:
            self._apps[key] = app
        return app

    def forget(self) -> None:
        """Drop the compiled graphs (their checkpointer closed)."""
        self._apps.clear()
        self._policies.clear()

    def add_agent(self, agent: Agent) -> str:
        """Register a one-agent graph for ``agent``; returns its name."""
        name = f"agent-{agent.name}"
        if name not in self._own or self._own[name].agent is not agent:

            def factory(ctx: BuildContext) -> StateGraph[GraphState]:
                builder: StateGraph[GraphState] = StateGraph(GraphState)
                builder.add_edge(START, add_agent(builder, agent, ctx.tiers))
                return builder

            self._own[name] = GraphEntry(factory, agent=agent)
            self._apps = {k: v for k, v in self._apps.items() if k[0] != name}
        return name
