"""Secrets: API keys, tokens and private keys, redacted as ``<SECRET_1>`` at every stage.

Hand-written patterns rather than ``detect-secrets``: its plugins scan files line by line
and report line numbers, not spans, and its generic high-entropy plugins flag any long
hex or base64 string (hashes, ids), which in chat text is mostly noise. The provider
formats below are documented prefixes (``sk-``, ``AKIA``, ``ghp_``, ``xox?-``, ``AIza``,
``sk_live_``...), so a regex each is exact; unprefixed keys (Mistral's are 32 plain
characters) are caught when they are assigned to a name that says what they are, and only
when the value looks random (Shannon entropy), so ``password = <your password>`` stays.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from tierflow.guardrails.base import Finding, GuardContext, Stage, Verdict
from tierflow.guardrails.builtin.common import redaction

# (kind, strings one of which must occur for the pattern to be tried, pattern); group
# "secret" (if present) is the part to redact. The cheap substring test first keeps a
# 2 KB text at a few microseconds per kind.
_PATTERNS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (kind, gate, re.compile(p))
    for kind, gate, p in (
        (
            "private_key",
            ("PRIVATE KEY",),
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]{0,10000}?"
            r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        ),
        ("openai_key", ("sk-",), r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"),
        (
            "aws_access_key",
            ("AKIA", "ASIA", "ABIA", "ACCA"),
            r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        ),
        (
            "github_token",
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b",
        ),
        ("slack_token", ("xox",), r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
        (
            "slack_webhook",
            ("hooks.slack.com",),
            r"https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+",
        ),
        ("google_api_key", ("AIza",), r"\bAIza[0-9A-Za-z_-]{35}\b"),
        ("stripe_key", ("_live_", "_test_"), r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}\b"),
        ("huggingface_token", ("hf_",), r"\bhf_[A-Za-z0-9]{30,}\b"),
        ("jwt", ("eyJ",), r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        ("bearer_token", ("earer",), r"\b[Bb]earer\s+(?P<secret>[A-Za-z0-9._~+/-]{20,}=*)"),
        ("url_password", ("://",), r"://[^\s:/@]+:(?P<secret>[^\s@/]{3,})@"),
        (
            "assigned_secret",
            ("key", "KEY", "Key", "ecret", "ECRET", "oken", "OKEN", "ass", "ASS", "wd", "WD"),
            r"(?i)(?:api[_-]?key|apikey|secret|token|passw(?:or)?d|pwd|access[_-]?key"
            r"|auth[_-]?key)[\w.-]*[\"']?\s*(?:[:=]|=>|\bis\b)\s*"
            r"[\"']?(?P<secret>[^\s\"',;<>{}()]{12,})",
        ),
    )
)
# Values of an assignment that are references, not secrets.
_NOT_SECRET = re.compile(
    r"(?i)^(?:\$|os\.|env|process\.env|getenv|none|null|true|false|your|<|xxx|\*+$|example)"
)
_MIN_ENTROPY = 3.0  # bits per character; English words score ~2.5-3, random keys 4+


def _entropy(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def find_secrets(text: str) -> list[tuple[str, int, int]]:
    """``(kind, start, end)`` of every secret in ``text``, without overlaps."""
    found: list[tuple[str, int, int]] = []
    for kind, gate, pattern in _PATTERNS:
        if not any(g in text for g in gate):
            continue
        for m in pattern.finditer(text):
            start, end = m.span("secret") if "secret" in pattern.groupindex else m.span()
            value = text[start:end]
            if kind == "assigned_secret" and (
                _NOT_SECRET.match(value) or _entropy(value) < _MIN_ENTROPY
            ):
                continue
            if all(end <= s or start >= e for _, s, e in found):
                found.append((kind, start, end))
    return sorted(found, key=lambda f: f[1])


class SecretsGuardrail:
    """Redact API keys, tokens and private keys (``<SECRET_1>``); never block."""

    name = "secrets"
    stages: frozenset[Stage] = frozenset({"input", "tool_call", "tool_result", "output"})

    def __call__(self, text: str, ctx: GuardContext) -> Verdict:
        found = find_secrets(text)
        if not found:
            return Verdict.allow(self.name)
        findings = [
            Finding(
                name=self.name,
                reason=f"{kind.replace('_', ' ')} removed",
                kind=kind,
                span=(start, end),
                replacement=ctx.vault.placeholder("SECRET", text[start:end]),
                layer="pattern",
            )
            for kind, start, end in found
        ]
        return redaction(self.name, text, findings)
