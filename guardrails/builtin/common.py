"""Small helpers shared by the built-in guardrails."""

from __future__ import annotations

from collections.abc import Sequence

from tierflow.guardrails.base import Finding, Verdict, merge_redactions


def redaction(
    name: str, text: str, findings: Sequence[Finding], *, sensitive: bool = False
) -> Verdict:
    """A redact verdict whose text is ``text`` with every finding's replacement applied."""
    draft = Verdict.redact(name, text, findings, sensitive=sensitive)
    return Verdict.redact(name, merge_redactions(text, [draft]), findings, sensitive=sensitive)


def tool_result_reason(stage: str, reason: str) -> str:
    """At the tool_result stage a block is read by the model, not the user: say so."""
    return f"the tool result was withheld: {reason}" if stage == "tool_result" else reason
