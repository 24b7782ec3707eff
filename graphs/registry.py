"""Named graphs that ``tierflow ask --graph NAME`` can run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tierflow.errors import UnknownGraph
from tierflow.graphs.context import GraphFactory
from tierflow.guardrails.base import Guardrail


@dataclass(frozen=True)
class GraphEntry:
    """A graph a runner can run by name: its factory and the guardrails it adds to its
    stages (besides ``[guardrails]``). ``Runner(graphs={name: entry})`` scopes one to a
    runner; :func:`register_graph` makes one visible process-wide (``--graph NAME``)."""

    factory: GraphFactory
    guardrails: tuple[Guardrail, ...] = ()
    agent: Any = None  # the Agent of a one-agent graph (Runner.ask(agent=...))


_GRAPHS: dict[str, GraphEntry] = {}


def register_graph(
    name: str, factory: GraphFactory, *, guardrails: Sequence[Guardrail] = ()
) -> None:
    """Make ``factory`` runnable as ``--graph name``, with extra ``guardrails`` for it."""
    if not name or not name.replace("-", "_").isidentifier():
        raise ValueError(f"invalid graph name {name!r}")
    _GRAPHS[name] = GraphEntry(factory, tuple(guardrails))


def get_graph(name: str) -> GraphFactory:
    """The factory of :func:`get_entry`."""
    return get_entry(name).factory


def get_entry(name: str) -> GraphEntry:
    """The factory registered as ``name``, or imported from ``module.path:factory``.

    The import form lets ``tierflow ask --graph my_pkg.graphs:build`` run a graph that
    was never registered (a builder's own, a test's). As with ``python -m`` and uvicorn,
    the current directory is importable.
    """
    if ":" in name:
        return GraphEntry(_import_graph(name))
    _load_builtin_graphs()
    try:
        return _GRAPHS[name]
    except KeyError:
        known = ", ".join(graph_names())
        raise UnknownGraph(f"unknown graph '{name}' (available: {known})") from None


def _import_graph(path: str) -> GraphFactory:
    # Imported here: only the import form needs them (kept inside get_graph's region).
    import importlib.util
    import os
    import sys

    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UnknownGraph(f"graph '{path}': expected 'module.path:factory'")
    try:
        # The current directory only if the module is not importable otherwise (the
        # console script's sys.path does not hold it; `python -m` does).
        top, cwd = module_name.partition(".")[0], os.getcwd()
        if cwd not in sys.path and importlib.util.find_spec(top) is None:
            sys.path.insert(0, cwd)
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure is the user's module, not ours
        why = next(iter(str(exc).splitlines()), "")
        raise UnknownGraph(
            f"graph '{path}': cannot import '{module_name}' ({type(exc).__name__}: {why})"
        ) from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UnknownGraph(f"graph '{path}': '{module_name}' has no attribute '{attr}'")
    if not callable(obj):
        raise UnknownGraph(f"graph '{path}': '{attr}' is not a graph factory (not callable)")
    factory: GraphFactory = obj
    return factory


def graph_names() -> list[str]:
    _load_builtin_graphs()
    return sorted(_GRAPHS)


def _load_builtin_graphs() -> None:
    # Imported when first needed: building the ready-made graphs' module costs imports.
    from tierflow.graphs import default

    for name, factory in default.BUILTIN_GRAPHS.items():
        _GRAPHS.setdefault(name, GraphEntry(factory))
