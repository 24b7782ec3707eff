"""One agent turn on one backend: how to ask for tool calls and how to read the answer.

Two modes, chosen per backend (``Backend.tool_mode``), so a tier can fall back from a
hosted model to a local one in the middle of a conversation:

- ``native``: the provider's tool calling (``tools=[...]``). Tool calls written as text are
  recovered (``_recover``).
- ``constrained``: the reply is constrained by a JSON schema (``response_format``) that
  admits either ``{"tool_calls": [...]}`` over this agent's tools or ``{"answer": ...}``.
  The conversation's tool calls and results are rewritten as plain text turns, since
  small local models and their chat templates handle those more reliably.

The conversation itself is stored provider-neutral (LangChain messages, 9-character
tool-call ids that every provider accepts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from pydantic import BaseModel

from tierflow.agents._recover import new_call_id, recover_tool_calls
from tierflow.models.backends import Backend
from tierflow.models.tiers import strict_schema
from tierflow.tools.tool import Tool

MAX_CALLS_PER_TURN = 4


@dataclass(frozen=True)
class ModelTurn:
    """What the model decided: tool calls to run, or a final text."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_calls: list[dict[str, Any]] = field(default_factory=list)
    recovered: bool = False  # tool calls were recovered from text


# Keywords llama.cpp compiles into very large grammars (maxLength 500 becomes 500 nested
# optional rules; measured: a 20 s turn became a >40 s timeout). Bounds are still checked
# by the tool's own validation, whose error the model reads and can act on.
_GRAMMAR_HEAVY = frozenset(
    {
        "maxLength",
        "minLength",
        "maximum",
        "minimum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "pattern",
        "format",
        "maxItems",
        "minItems",
        "maxProperties",
        "minProperties",
    }
)


def grammar_friendly(schema: Any) -> Any:
    """``schema`` without the keywords that make constrained decoding slow."""
    if isinstance(schema, dict):
        return {k: grammar_friendly(v) for k, v in schema.items() if k not in _GRAMMAR_HEAVY}
    if isinstance(schema, list):
        return [grammar_friendly(v) for v in schema]
    return schema


def turn_schema(
    tools: Sequence[Tool],
    output_type: type[BaseModel] | None,
    allow_tools: bool,
    require_tool: bool = False,
) -> dict[str, Any]:
    """The JSON schema a constrained turn must match."""
    answer_schema: dict[str, Any] = {"type": "string"}
    if output_type is not None:
        answer_schema = strict_schema(output_type)["json_schema"]["schema"]
    answer = {
        "type": "object",
        "properties": {"answer": answer_schema},
        "required": ["answer"],
        "additionalProperties": False,
    }
    if not tools or not allow_tools:
        return answer
    items = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [t.name]},
                "arguments": grammar_friendly(t.parameters),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    calls = {
        "type": "object",
        "properties": {
            "tool_calls": {
                "type": "array",
                "items": {"anyOf": items},
                "minItems": 1,  # small bounds are cheap; the tool cap is enforced in parse
            }
        },
        "required": ["tool_calls"],
        "additionalProperties": False,
    }
    return calls if require_tool else {"anyOf": [calls, answer]}


def _signature(tool: Tool) -> str:
    """``name(arg: type = default, ...)``: the grammar enforces the full schema, so the
    prompt only needs what helps the model choose (long schemas cost prompt time)."""
    parts = []
    for name, spec in tool.parameters.get("properties", {}).items():
        part = f"{name}: {spec.get('type', 'any')}"
        if "default" in spec:
            part += f" = {json.dumps(spec['default'])}"
        parts.append(part)
    return f"{tool.name}({', '.join(parts)})"


def _catalogue(tools: Sequence[Tool], allow_tools: bool) -> str:
    if not tools or not allow_tools:
        return (
            "Now write your final answer for the user, from the results above. "
            'Reply with JSON: {"answer": "<your final answer>"}.'
        )
    lines = [f"- {_signature(t)}: {t.description}" for t in tools]
    return (
        "You can call these tools:\n" + "\n".join(lines) + "\n"
        'To call tools reply with JSON {"tool_calls": [{"name": ..., "arguments": {...}}]}. '
        "You will then receive the results. When you have what you need, reply with JSON "
        '{"answer": <your final answer>}. Do not invent tool results.'
    )


def to_plain_turns(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Rewrite tool calls and results as ordinary turns, for constrained mode."""
    names: dict[str, str] = {}
    out: list[BaseMessage] = []
    for m in messages:
        if isinstance(m, AIMessage) and m.tool_calls:
            for c in m.tool_calls:
                names[c["id"] or ""] = c["name"]
            calls = [{"name": c["name"], "arguments": c["args"]} for c in m.tool_calls]
            out.append(AIMessage(content=json.dumps({"tool_calls": calls})))
        elif isinstance(m, ToolMessage):
            name = names.get(m.tool_call_id, "tool")
            out.append(HumanMessage(f"[result of {name}]\n{m.content}"))
        else:
            out.append(m)
    return out


_PARTIAL_ANSWER = re.compile(r'^\s*\{\s*"answer"\s*:\s*"((?:[^"\\]|\\.)*)', re.DOTALL)


def _loads_or_salvage(text: str) -> Any:
    """Parse a constrained reply; an answer cut off at the token limit keeps its text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        match = _PARTIAL_ANSWER.match(text)
        if not match or not match.group(1).strip():
            raise
        partial = match.group(1).rstrip("\\")
        return {"answer": json.loads(f'"{partial}"').rstrip() + " [cut off at the length limit]"}


@dataclass(frozen=True)
class AgentTurnPlan:
    """A :class:`tierflow.models.tiers.CallPlan` for one agent turn."""

    tools: Sequence[Tool]
    output_type: type[BaseModel] | None = None
    allow_tools: bool = True
    #: Tools withdrawn for this turn (e.g. unavailable): not offered, not accepted.
    withdrawn: frozenset[str] = frozenset()
    #: The turn must call a tool (OpenAI tool_choice "required", Mistral "any").
    require_tool: bool = False

    def offered(self) -> list[Tool]:
        if not self.allow_tools:
            return []
        return [t for t in self.tools if t.name not in self.withdrawn]

    def prepare(
        self, backend: Backend, messages: Sequence[BaseMessage]
    ) -> tuple[list[BaseMessage], dict[str, Any]]:
        offered = self.offered()
        if backend.tool_mode == "constrained":
            sent = to_plain_turns(messages)
            if not self._constrains():
                return sent, {}  # a plain answer: no schema, so no JSON-escaped prose
            guide = _catalogue(offered, bool(offered))
            if sent and isinstance(sent[0], SystemMessage):
                sent[0] = SystemMessage(f"{sent[0].content}\n\n{guide}")
            else:
                sent.insert(0, SystemMessage(guide))
            schema = turn_schema(
                offered, self.output_type, bool(offered), self.require_tool and bool(offered)
            )
            fmt = {"type": "json_schema", "json_schema": {"name": "agent_turn", "schema": schema}}
            return sent, {"response_format": fmt}
        extra: dict[str, Any] = {}
        if offered:
            extra["tools"] = [t.spec() for t in offered]
            if self.require_tool:
                extra["tool_choice"] = "any" if backend.provider == "mistral_ai" else "required"
        elif self.output_type is not None:
            extra["response_format"] = strict_schema(self.output_type)
        return list(messages), extra

    def _constrains(self) -> bool:
        # An agent with tools keeps the schema even when the tools are withdrawn: replayed
        # tool turns would otherwise lead a small model to write tool-call JSON as prose.
        return bool(self.tools) or self.output_type is not None

    def parse(self, backend: Backend, message: AIMessage) -> ModelTurn:
        names = {t.name for t in self.offered()}
        text = message.text
        if backend.tool_mode == "constrained" and self._constrains():
            data = _loads_or_salvage(text)  # ValueError moves the tier chain on
            if isinstance(data, dict) and isinstance(data.get("tool_calls"), list) and names:
                calls = [
                    ToolCall(
                        name=c["name"], args=c["arguments"], id=new_call_id(), type="tool_call"
                    )
                    for c in data["tool_calls"]
                    if isinstance(c, dict)
                    and c.get("name") in names
                    and isinstance(c.get("arguments"), dict)
                ]
                if calls:
                    return ModelTurn(text="", tool_calls=calls[:MAX_CALLS_PER_TURN])
            if isinstance(data, dict) and "answer" in data:
                answer = data["answer"]
                return ModelTurn(text=answer if isinstance(answer, str) else json.dumps(answer))
            raise ValueError("reply matched neither tool_calls nor answer")
        if message.tool_calls and names:
            calls = [
                ToolCall(name=c["name"], args=c["args"], id=new_call_id(), type="tool_call")
                for c in message.tool_calls
            ]
            invalid = [dict(c) for c in message.invalid_tool_calls]
            return ModelTurn(text=text, tool_calls=calls, invalid_calls=invalid)
        if message.invalid_tool_calls and names:
            return ModelTurn(text=text, invalid_calls=[dict(c) for c in message.invalid_tool_calls])
        recovered = recover_tool_calls(text, names) if names else []
        if recovered:
            return ModelTurn(text="", tool_calls=recovered[:MAX_CALLS_PER_TURN], recovered=True)
        return ModelTurn(text=text)
