"""Recover tool calls that a model wrote as text instead of native tool calls.

Small and mid-size models often answer ``<tool_call>{"name": ..., "arguments": ...}
</tool_call>`` (Hermes/Qwen style) or a fenced JSON block. No library normalises these
variants, so this module does, conservatively: only objects naming a known tool count.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Collection, Iterator
from typing import Any

from langchain_core.messages import ToolCall

_ALNUM = string.ascii_letters + string.digits
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_FENCED = re.compile(r"```(?:json|tool_code|tool_call)?\s*\n?(.*?)```", re.DOTALL)


def new_call_id() -> str:
    """A tool-call id every provider accepts: Mistral requires 9 alphanumerics."""
    return "".join(secrets.choice(_ALNUM) for _ in range(9))


def _candidates(text: str) -> Iterator[Any]:
    blocks = _TAGGED.findall(text) or _FENCED.findall(text)
    stripped = text.strip()
    if not blocks and stripped[:1] in "[{":
        blocks = [stripped]
    for block in blocks:
        try:
            yield json.loads(block)
        except json.JSONDecodeError:
            continue


def _flatten(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, list):
        for item in obj:
            yield from _flatten(item)
    elif isinstance(obj, dict):
        if isinstance(obj.get("tool_calls"), list):
            yield from _flatten(obj["tool_calls"])
        elif isinstance(obj.get("function"), dict):
            yield obj["function"]
        else:
            yield obj


def recover_tool_calls(text: str, tool_names: Collection[str]) -> list[ToolCall]:
    """Tool calls found in ``text`` for tools in ``tool_names`` (empty if none)."""
    calls: list[ToolCall] = []
    for candidate in _candidates(text):
        for obj in _flatten(candidate):
            name = obj.get("name")
            args = obj.get("arguments", obj.get("parameters", obj.get("args", {})))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    continue
            if isinstance(name, str) and name in tool_names and isinstance(args, dict):
                calls.append(ToolCall(name=name, args=args, id=new_call_id(), type="tool_call"))
    return calls
