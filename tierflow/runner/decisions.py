"""Approval decisions: how a resume value reaches LangGraph's interrupts (the Runner's
``resume`` and the server's ``command={"resume": ...}`` share it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langgraph.types import Command

from tierflow.errors import UserError

#: An approval decision: "approve", "reject", or {"action": "approve", "args": {...}}.
Decision = Literal["approve", "reject"] | Mapping[str, Any]


def resume_command(interrupts: Sequence[Any], resume: Any) -> Command[Any]:
    """``Command(resume=...)`` for the pending ``interrupts``.

    A mapping keyed by tool-call ids (tierflow's approval cards name each call) becomes
    LangGraph's ``{interrupt id: decision}``; a mapping keyed by interrupt ids passes as
    is; any other value decides every pending interrupt.
    """
    ids = {i.id for i in interrupts}
    if isinstance(resume, Mapping) and resume and not set(resume) <= ids:
        return Command(resume=resume_map(interrupts, resume))
    if isinstance(resume, Mapping) and resume:
        return Command(resume=dict(resume))
    if len(interrupts) > 1:
        # One decision for every waiting call: LangGraph wants it per interrupt.
        return Command(resume={i.id: resume for i in interrupts})
    return Command(resume=resume)


def resume_map(interrupts: Sequence[Any], decisions: Mapping[str, Decision]) -> dict[str, Any]:
    """``{interrupt id: decision}`` for the pending approvals named by tool-call id."""
    out: dict[str, Any] = {}
    for pending in interrupts:
        value = pending.value if isinstance(pending.value, Mapping) else {}
        for call in value.get("calls") or []:
            if call.get("id") in decisions:
                out[pending.id] = decisions[call["id"]]
    missing = set(decisions) - {
        c.get("id")
        for p in interrupts
        if isinstance(p.value, Mapping)
        for c in p.value.get("calls") or []
    }
    if missing:
        raise UserError(f"no tool call waiting for approval with id {', '.join(sorted(missing))}")
    return out
