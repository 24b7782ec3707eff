"""Residency: classify text as sensitive (validated PII or a confidential marker).

Values in ``[guardrails] residency_allow`` (the company's own public contacts) do not
count.

A sensitive run may only use backends marked local for its remaining model calls
(DESIGN.md); the runner reads ``Verdict.sensitive``. This guardrail never rewrites.
"""

from __future__ import annotations

import re

from tierflow.guardrails.base import Finding, GuardContext, Stage, Verdict
from tierflow.guardrails.builtin.pii import PiiMatch, find_pii
from tierflow.guardrails.builtin.size import _strip_marks, normalize
from tierflow.settings import GuardrailsSettings


def _marker_pattern(markers: list[str]) -> re.Pattern[str] | None:
    words = [normalize(m) for m in markers if m.strip()]
    if not words:
        return None
    alternatives = "|".join(
        r"\s+".join(re.escape(_strip_marks(part)) for part in w.split())
        for w in sorted(words, key=len, reverse=True)
    )
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class _Allowed:
    """``[guardrails] residency_allow``: addresses, domains and phone numbers."""

    def __init__(self, entries: list[str]) -> None:
        cleaned = [e.strip().lower().lstrip("@") for e in entries if e.strip()]
        self.addresses = {e for e in cleaned if "@" in e}
        self.domains = {e for e in cleaned if "@" not in e and not _digits(e)}
        self.phones = {_digits(e)[-9:] for e in cleaned if len(_digits(e)) >= 7}

    def __contains__(self, m: PiiMatch) -> bool:
        if m.kind == "EMAIL":
            return m.value in self.addresses or m.value.rpartition("@")[2] in self.domains
        if m.kind == "PHONE":
            return _digits(m.value)[-9:] in self.phones
        return False


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


class ResidencyGuardrail:
    """Mark text with PII or a confidential marker ``sensitive`` (allow, with findings)."""

    name = "residency"
    stages: frozenset[Stage] = frozenset({"input", "tool_result"})

    def __init__(self, cfg: GuardrailsSettings) -> None:
        self._markers = _marker_pattern(cfg.confidential_markers)
        self._allowed = _Allowed(cfg.residency_allow)

    def __call__(self, text: str, ctx: GuardContext) -> Verdict:
        found = [m for m in find_pii(text) if m not in self._allowed]
        findings = [
            Finding(name=self.name, reason=f"contains a {label}", kind="pii", layer="validated")
            for label in dict.fromkeys(m.label for m in found)
        ]
        if self._markers is not None:
            # Markers are written by data owners, not attackers: case and accents are
            # folded, look-alike letters are not (normalising 20 KB costs ~3 ms).
            m = self._markers.search(text) or (
                None if text.isascii() else self._markers.search(_strip_marks(text))
            )
            if m:
                findings.append(
                    Finding(
                        name=self.name,
                        reason=f"marked confidential ('{m.group()}')",
                        kind="marker",
                        layer="marker",
                    )
                )
        return Verdict.allow(self.name, findings, sensitive=bool(findings))
