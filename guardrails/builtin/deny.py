"""Deny list: topics a deployment does not discuss (``guardrails.deny_topics``).

A topic is a word or phrase, matched on word boundaries ignoring case, accents and
look-alike letters (on :func:`normalize`d text), or a regular expression written as
``/.../`` (matched on the same normalised text).
"""

from __future__ import annotations

import re

from tierflow.errors import ConfigError
from tierflow.guardrails.base import Finding, GuardContext, Stage, Verdict
from tierflow.guardrails.builtin.size import _strip_marks, normalize
from tierflow.settings import GuardrailsSettings


def _compile(topic: str) -> tuple[str, re.Pattern[str]]:
    if len(topic) >= 2 and topic.startswith("/") and topic.endswith("/"):
        source = topic[1:-1]
        try:
            return source, re.compile(source, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(
                f"guardrails.deny_topics: invalid regular expression {topic!r}: {exc}"
            ) from None
    phrase = _strip_marks(normalize(topic))
    if not phrase:
        raise ConfigError("guardrails.deny_topics: empty topic")
    words = r"\s+".join(re.escape(w) for w in phrase.split())
    return topic.strip(), re.compile(rf"(?<!\w){words}(?!\w)")


class DenyGuardrail:
    """Block text about a denied topic: "this assistant does not discuss <topic>"."""

    name = "deny"
    stages: frozenset[Stage] = frozenset({"input", "output"})

    def __init__(self, cfg: GuardrailsSettings) -> None:
        self._topics = [_compile(t) for t in cfg.deny_topics]

    def __call__(self, text: str, ctx: GuardContext) -> Verdict:
        if not self._topics:
            return Verdict.allow(self.name)
        normalized = normalize(text)
        for label, pattern in self._topics:
            m = pattern.search(normalized)
            if m:
                finding = Finding(
                    name=self.name, reason=f"denied topic '{label}'", kind="topic", layer="list"
                )
                return Verdict.block(
                    self.name, f"this assistant does not discuss {label}", [finding]
                )
        return Verdict.allow(self.name)
