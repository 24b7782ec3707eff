"""The graph that ``tierflow worker`` subprocesses run in test_workers.py (imported there as
``worker_graph:factory``, so it must stay importable without side effects).

Its tools leave their traces in files under ``$WORKER_TEST_DIR``: how many times ``count``
completed, and which process ran each call (``where``, which also waits for a gate file).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from langgraph.graph import START, StateGraph

from tierflow import Agent, BuildContext, add_agent, tool
from tierflow.state import GraphState

DIR_ENV = "WORKER_TEST_DIR"


def _folder() -> Path:
    return Path(os.environ[DIR_ENV])


@tool
def count(note: str) -> str:
    """Count this call in a file.

    Args:
        note: Anything.
    """
    path = _folder() / "count"
    done = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(done))
    with (_folder() / "count-pids").open("a") as f:
        f.write(f"{os.getpid()}\n")
    return f"counted {done}"


@tool
def where(note: str) -> str:
    """Record which process runs this call, then wait for the gate file (``gate``, or
    ``gate-<note>`` for this call alone).

    Args:
        note: Anything.
    """
    with (_folder() / "where").open("a") as f:
        f.write(f"{os.getpid()} {note}\n")
    gates = (_folder() / "gate", _folder() / f"gate-{note}")
    deadline = time.monotonic() + 60  # only so a broken test cannot hang forever
    while not any(g.exists() for g in gates) and time.monotonic() < deadline:
        time.sleep(0.02)
    return f"ran in {os.getpid()}"


def factory(ctx: BuildContext) -> StateGraph[GraphState]:
    """One agent with both tools."""
    agent = Agent(name="clerk", tier="t", tools=[count, where], instructions="Use tools.")
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
    return graph
