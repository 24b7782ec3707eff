"""Residency: classify text as sensitive (validated PII or a confidential marker).

A sensitive run may only use backends marked local for its remaining model calls
(DESIGN.md); the runner reads ``Verdict.sensitive``. This guardrail never rewrites.
"""

from __future__ import annotations

import re

from tierflow.guardrails.base import Finding, GuardContext, Stage, Verdict
from tierflow.guardrails.builtin.pii import find_pii
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


class ResidencyGuardrail:
    """Mark text with PII or a confidential marker ``sensitive`` (allow, with findings)."""

    name = "residency"
    stages: frozenset[Stage] = frozenset({"input", "tool_result"})

    def __init__(self, cfg: GuardrailsSettings) -> None:
        self._markers = _marker_pattern(cfg.confidential_markers)

    def __call__(self, text: str, ctx: GuardContext) -> Verdict:
        findings = [
            Finding(name=self.name, reason=f"contains a {label}", kind="pii", layer="validated")
            for label in dict.fromkeys(m.label for m in find_pii(text))
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
