"""Tool declaration (:func:`tool`) and the built-in tools (web search, sandboxed code,
read-only SQL, retrieval)."""

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
