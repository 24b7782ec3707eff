"""The guardrail contract: one callable type, four stages, three actions.

A guardrail looks at one piece of text at one stage and returns a :class:`Verdict`:

- ``allow`` (possibly with findings, e.g. "contains PII" for the residency classifier),
- ``redact`` with the rewritten text and the spans it changed,
- ``block`` with a reason that is safe to show a user.

Stages: ``input`` (the user's message), ``tool_call`` (a tool's arguments, as JSON, before
it runs), ``tool_result`` (what a tool returned, before a model reads it: indirect
injection lives there) and ``output`` (the final answer).

Writing one::

    @guardrail(stages=("input", "output"))
    def no_competitors(text: str, ctx: GuardContext) -> Verdict:
        if "acme corp" in text.lower():
            return Verdict.block("no_competitors", "I can't discuss other vendors.")
        return Verdict.allow("no_competitors")

A stage runs its guardrails concurrently (:func:`run_stage`): any block wins; the
redactions of several guardrails are merged span by span on the original text (overlapping
spans become one edit over their union). A rewrite that its spans do not describe cannot be
merged: it is used alone, and if another guardrail also rewrote the text the stage blocks.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, Protocol, get_args, overload, runtime_checkable

from pydantic import BaseModel

Stage = Literal["input", "tool_call", "tool_result", "output"]
STAGES: tuple[Stage, ...] = get_args(Stage)


class Action(StrEnum):
    ALLOW = "allow"
    REDACT = "redact"
    BLOCK = "block"


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One thing a guardrail noticed.

    ``span`` is ``(start, end)`` in the text the guardrail was given; ``replacement`` is
    what a redaction puts there (``None``: nothing is rewritten). ``layer`` says which
    detection layer fired (e.g. ``heuristic``, ``decoded:base64``, ``classifier``).
    """

    name: str
    reason: str
    kind: str | None = None
    span: tuple[int, int] | None = None
    replacement: str | None = None
    layer: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "reason": self.reason}
        if self.kind is not None:
            out["kind"] = self.kind
        if self.span is not None:
            out["span"] = list(self.span)
        if self.layer is not None:
            out["layer"] = self.layer
        return out


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What one guardrail decided about one text."""

    guardrail: str
    action: Action
    text: str | None = None  # the rewritten text (redact)
    reason: str | None = None  # safe to show a user (block); a summary otherwise
    findings: tuple[Finding, ...] = ()
    sensitive: bool = False  # residency: this text must stay on local backends

    @classmethod
    def allow(
        cls, guardrail: str, findings: Sequence[Finding] = (), *, sensitive: bool = False
    ) -> Verdict:
        reason = "; ".join(f.reason for f in findings) or None
        return cls(
            guardrail=guardrail,
            action=Action.ALLOW,
            reason=reason,
            findings=tuple(findings),
            sensitive=sensitive,
        )

    @classmethod
    def redact(
        cls, guardrail: str, text: str, findings: Sequence[Finding], *, sensitive: bool = False
    ) -> Verdict:
        reason = "; ".join(dict.fromkeys(f.reason for f in findings)) or None
        return cls(
            guardrail=guardrail,
            action=Action.REDACT,
            text=text,
            reason=reason,
            findings=tuple(findings),
            sensitive=sensitive,
        )

    @classmethod
    def block(
        cls,
        guardrail: str,
        reason: str,
        findings: Sequence[Finding] = (),
        *,
        sensitive: bool = False,
    ) -> Verdict:
        return cls(
            guardrail=guardrail,
            action=Action.BLOCK,
            reason=reason,
            findings=tuple(findings),
            sensitive=sensitive,
        )


class PlaceholderVault:
    """Run-scoped placeholders: the same value gets the same ``<KIND_n>`` within a run.

    Kept in the graph state (``as_dict``/``from_dict``) so a run resumed from a
    checkpoint keeps numbering where it stopped.
    """

    def __init__(self, mapping: dict[str, dict[str, str]] | None = None) -> None:
        self._by_kind: dict[str, dict[str, str]] = {k: dict(v) for k, v in (mapping or {}).items()}

    def placeholder(self, kind: str, value: str) -> str:
        key = kind.upper()
        seen = self._by_kind.setdefault(key, {})
        if value not in seen:
            seen[value] = f"<{key}_{len(seen) + 1}>"
        return seen[value]

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in self._by_kind.items()}

    def __len__(self) -> int:
        """How many placeholders it holds (it only ever grows)."""
        return sum(len(v) for v in self._by_kind.values())

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, str]] | None) -> PlaceholderVault:
        return cls(data)


@dataclass(kw_only=True)
class GuardContext:
    """What a guardrail may know besides the text.

    ``tool`` names the tool at the tool stages; ``user_text`` is what the user wrote in
    this run (an output that repeats the user's own e-mail is not a leak);
    ``output_type`` is the agent's structured output model, if any; ``passages`` are the
    texts retrieval returned in this run (for grounding); ``sensitive`` is the run's
    residency class so far.
    """

    stage: Stage
    vault: PlaceholderVault = field(default_factory=PlaceholderVault)
    tool: str | None = None
    user_text: str = ""
    output_type: type[BaseModel] | None = None
    passages: Sequence[str] = ()
    sensitive: bool = False


VerdictOrAwaitable = Verdict | Awaitable[Verdict]


@runtime_checkable
class Guardrail(Protocol):
    """A typed callable ``(text, ctx) -> Verdict`` (sync or async) with a name and stages."""

    name: str
    stages: frozenset[Stage]

    def __call__(self, text: str, ctx: GuardContext) -> VerdictOrAwaitable: ...


@dataclass(frozen=True)
class FunctionGuardrail:
    """A plain function made into a :class:`Guardrail` by :func:`guardrail`."""

    fn: Callable[[str, GuardContext], VerdictOrAwaitable]
    name: str
    stages: frozenset[Stage]

    def __call__(self, text: str, ctx: GuardContext) -> VerdictOrAwaitable:
        return self.fn(text, ctx)


@overload
def guardrail(fn: Callable[[str, GuardContext], VerdictOrAwaitable], /) -> FunctionGuardrail: ...


@overload
def guardrail(
    *, name: str | None = None, stages: Sequence[Stage] = STAGES
) -> Callable[[Callable[[str, GuardContext], VerdictOrAwaitable]], FunctionGuardrail]: ...


def guardrail(
    fn: Callable[[str, GuardContext], VerdictOrAwaitable] | None = None,
    /,
    *,
    name: str | None = None,
    stages: Sequence[Stage] = STAGES,
) -> Any:
    """Make ``fn(text, ctx) -> Verdict`` a guardrail for ``stages`` (all four by default)."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown guardrail stage(s) {sorted(unknown)}; use {list(STAGES)}")

    def wrap(f: Callable[[str, GuardContext], VerdictOrAwaitable]) -> FunctionGuardrail:
        return FunctionGuardrail(f, name or f.__name__, frozenset(stages))

    return wrap(fn) if fn is not None else wrap


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """The combined verdict of one stage: what happens to the text, and every verdict."""

    stage: Stage
    action: Action
    text: str  # the text to use from now on (redacted if needed; the original if blocked)
    verdicts: tuple[Verdict, ...] = ()
    sensitive: bool = False
    # The span edits applied to the original text, overlapping ones merged into one
    # (:func:`merged_edits`); empty when nothing was redacted or a rewrite was used as is.
    edits: tuple[Finding, ...] = ()

    @property
    def reason(self) -> str | None:
        """The first block's user-safe reason, if blocked."""
        for v in self.verdicts:
            if v.action is Action.BLOCK:
                return v.reason
        return None

    def as_dict(self) -> dict[str, Any]:
        """The ``tierflow guard --json`` shape."""
        findings = [
            {**f.as_dict(), "action": v.action.value} for v in self.verdicts for f in v.findings
        ]
        for v in self.verdicts:  # a block or redact without findings still says why
            if not v.findings and v.action is not Action.ALLOW:
                findings.append({"name": v.guardrail, "reason": v.reason, "action": v.action.value})
        return {
            "stage": self.stage,
            "action": self.action.value,
            "text": self.text,
            "reason": self.reason,
            "sensitive": self.sensitive,
            "findings": findings,
        }


#: The name on the block verdict :func:`run_stage` adds when redactions cannot be merged.
MERGE_GUARDRAIL = "redaction_merge"


def _error_verdict(g: Guardrail, exc: BaseException) -> Verdict:
    # Fail closed: a guardrail that crashed has not cleared the text.
    return Verdict.block(g.name, f"guardrail '{g.name}' failed ({type(exc).__name__})")


async def run_stage(guardrails: Sequence[Guardrail], text: str, ctx: GuardContext) -> StageResult:
    """Run the guardrails of ``ctx.stage`` on ``text`` and combine their verdicts.

    Synchronous guardrails (the heuristics: microseconds) run inline; asynchronous ones
    (a classifier, a remote check) run concurrently. A guardrail that raises blocks.
    """
    applicable = [g for g in guardrails if ctx.stage in g.stages]
    verdicts: list[Verdict | None] = [None] * len(applicable)
    pending: list[tuple[int, Awaitable[Verdict]]] = []
    for i, g in enumerate(applicable):
        try:
            out = g(text, ctx)
        except Exception as exc:  # fail closed, recorded as a verdict
            verdicts[i] = _error_verdict(g, exc)
            continue
        if inspect.isawaitable(out):
            pending.append((i, out))
        else:
            verdicts[i] = out
    if pending:
        results = await asyncio.gather(*(a for _, a in pending), return_exceptions=True)
        for (i, _), res in zip(pending, results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                verdicts[i] = _error_verdict(applicable[i], res)
            else:
                verdicts[i] = res
    done = [v for v in verdicts if v is not None]
    if any(v.action is Action.BLOCK for v in done):
        # A blocked text goes no further, so it cannot make the run sensitive.
        return StageResult(
            stage=ctx.stage,
            action=Action.BLOCK,
            text=text,
            verdicts=tuple(done),
            sensitive=ctx.sensitive,
        )
    sensitive = ctx.sensitive or any(v.sensitive for v in done)
    redactions = [v for v in done if v.action is Action.REDACT]
    if not redactions:
        return StageResult(
            stage=ctx.stage,
            action=Action.ALLOW,
            text=text,
            verdicts=tuple(done),
            sensitive=sensitive,
        )
    try:
        redacted, edits = _apply_redactions(text, redactions)
    except RedactionConflict as exc:
        # Fail closed: no safe rewrite exists, so the text goes no further.
        return StageResult(
            stage=ctx.stage,
            action=Action.BLOCK,
            text=text,
            verdicts=(*done, Verdict.block(MERGE_GUARDRAIL, str(exc))),
            sensitive=ctx.sensitive,
        )
    return StageResult(
        stage=ctx.stage,
        action=Action.REDACT,
        text=redacted,
        verdicts=tuple(done),
        sensitive=sensitive,
        edits=edits,
    )


class RedactionConflict(ValueError):
    """Redactions that cannot be combined without leaving some of the text in clear.

    Raised by :func:`merge_redactions` when a guardrail rewrote the text in a way its spans
    do not describe and another guardrail also rewrote it (applying either rewrite alone
    would undo the other's), or when a redaction has no usable rewrite (neither text nor
    spans, or a span outside the text). :func:`run_stage` blocks instead.
    """


def merge_redactions(text: str, redactions: Sequence[Verdict]) -> str:
    """Apply several guardrails' redactions to the original text (see :func:`merged_edits`).

    Raises :class:`RedactionConflict` when they cannot be combined safely.
    """
    return _apply_redactions(text, redactions)[0]


def _apply_redactions(text: str, redactions: Sequence[Verdict]) -> tuple[str, tuple[Finding, ...]]:
    """The redacted text and the edits applied to ``text`` (empty if a rewrite was used as is).

    A redaction whose findings carry a span and a replacement is a set of edits on the
    original text; the edits of every guardrail are merged (:func:`merged_edits`). A
    redaction whose text is not what its own edits give (no spans, or a rewrite beyond
    them) is used as is only when no other guardrail rewrote the text differently: it
    cannot be merged, and dropping either rewrite would leave that part in clear.
    """
    edits: list[Finding] = []
    rewrites: set[str] = set()  # texts rewritten beyond (or without) their spans
    for v in redactions:
        own = [f for f in v.findings if f.span is not None and f.replacement is not None]
        if any(not 0 <= s <= e <= len(text) for s, e in map(_span, own)):
            raise RedactionConflict(f"guardrail '{v.guardrail}' redacted a span outside the text")
        if v.text is None and not own:
            raise RedactionConflict(
                f"guardrail '{v.guardrail}' asked for a redaction but gave no rewrite"
            )
        if v.text is None or v.text == text or _rewrite(text, merged_edits(own)) == v.text:
            edits.extend(own)  # its text is the original (+ its spans): the spans say it all
        else:
            rewrites.add(v.text)
    if not rewrites:
        merged = merged_edits(edits)
        return _rewrite(text, merged), merged
    if len(rewrites) == 1 and not edits:
        return next(iter(rewrites)), ()
    names = ", ".join(f"'{n}'" for n in dict.fromkeys(v.guardrail for v in redactions))
    raise RedactionConflict(
        f"guardrails {names} rewrote the text in ways that cannot be combined safely"
    )


def merged_edits(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    """The span edits of ``findings`` as disjoint edits on the original text, left to right.

    Overlapping spans become one edit covering their union, so no character of any span is
    left in clear: the replacement is the longest span's (the earliest on a tie, then the
    first given), and the returned finding carries the merged span. Adjacent spans (one
    ends where the next starts) stay two edits. Findings without a span or a replacement
    are not edits and are left out.
    """
    spanned = [f for f in findings if f.span is not None and f.replacement is not None]
    clusters: list[list[Finding]] = []
    end = 0
    for f in sorted(spanned, key=_by_start):
        assert f.span is not None
        if clusters and f.span[0] < end:
            clusters[-1].append(f)
            end = max(end, f.span[1])
        else:
            clusters.append([f])
            end = f.span[1]
    out: list[Finding] = []
    for cluster in clusters:
        union = (min(_span(f)[0] for f in cluster), max(_span(f)[1] for f in cluster))
        winner = min(cluster, key=_by_length)
        out.append(winner if winner.span == union else replace(winner, span=union))
    return tuple(out)


def _span(f: Finding) -> tuple[int, int]:
    assert f.span is not None
    return f.span


def _by_start(f: Finding) -> tuple[int, int]:
    start, end = _span(f)
    return (start, start - end)


def _by_length(f: Finding) -> tuple[int, int]:
    start, end = _span(f)
    return (start - end, start)


def _rewrite(text: str, edits: Sequence[Finding]) -> str:
    out: list[str] = []
    pos = 0
    for f in edits:  # disjoint and sorted (merged_edits)
        assert f.span is not None and f.replacement is not None
        out.append(text[pos : f.span[0]])
        out.append(f.replacement)
        pos = f.span[1]
    out.append(text[pos:])
    return "".join(out)
