"""The built-in tools by name, built lazily from settings.

Each tool lives in its own module behind a small backend interface; importing them only
when asked keeps ``tierflow ask`` from loading an embedding model or a search client a
question does not need.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from tierflow.errors import UserError
from tierflow.settings import TierflowSettings
from tierflow.tools.tool import Tool

# tool name -> (module, factory); a factory returns one Tool or a list of them
_FACTORIES: dict[str, tuple[str, str]] = {
    "web_search": ("tierflow.tools.web_search", "make_web_search_tool"),
    "run_python": ("tierflow.tools.sandbox", "make_run_python_tool"),
    "sql_query": ("tierflow.tools.sql", "make_sql_tools"),
    "sql_schema": ("tierflow.tools.sql", "make_sql_tools"),
    "retrieve": ("tierflow.tools.retrieval", "make_retrieve_tool"),
}


def builtin_tool_names() -> list[str]:
    return sorted(_FACTORIES)


class BuiltinTools:
    """Built-in tools for one settings object, each built once on first use."""

    def __init__(self, settings: TierflowSettings) -> None:
        self.settings = settings
        self._built: dict[str, Tool] = {}

    def get(self, name: str) -> Tool:
        if name not in self._built:
            try:
                module_name, factory_name = _FACTORIES[name]
            except KeyError:
                known = ", ".join(builtin_tool_names())
                raise UserError(f"unknown tool '{name}' (built-in tools: {known})") from None
            factory: Callable[[TierflowSettings], Tool | list[Tool]] = getattr(
                importlib.import_module(module_name), factory_name
            )
            made = factory(self.settings)
            for tool in made if isinstance(made, list) else [made]:
                self._built[tool.name] = tool
            alternative = self.settings.tools.fallbacks.get(name)
            if alternative and alternative != name:
                self._built[name] = self._built[name].with_fallback(self.get(alternative))
        return self._built[name]

    def __call__(self, *names: str) -> list[Tool]:
        return [self.get(n) for n in names]
