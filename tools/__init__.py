"""Tool declaration (:func:`tool`) and the built-in tools (web, sandbox, SQL, retrieval).
Layer: tools; may import only models, resilience, telemetry and the core.

Each tool family (``sql``, ``sandbox``, ``retrieval``, ``web_search``) is independent of the
others: none imports another.
"""

from tierflow.tools.tool import (
    Tool,
    ToolContext,
    ToolError,
    ToolErrorInfo,
    ToolOutcome,
    ToolPolicy,
    tool,
)

__all__ = ["Tool", "ToolContext", "ToolError", "ToolErrorInfo", "ToolOutcome", "ToolPolicy", "tool"]
