"""Output checks: structured answers match their schema; retrieval answers are grounded.

Grounding is lexical, on purpose: a small local model paraphrases, so the check asks for
evidence rather than entailment. A factual sentence of the answer (three content words or
a number) is supported when it cites a retrieved passage (``[source#position]``, the form
the retrieve tool asks for) or when most of its content words (compared on a 5-letter
prefix, which absorbs plurals and conjugations) and all of its numbers occur in one
passage. Unsupported sentences are reported (allow with findings) unless
``guardrails.grounding_action = "block"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from pydantic import ValidationError

from tierflow.guardrails.base import Finding, GuardContext, Stage, Verdict
from tierflow.settings import GuardrailsSettings

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_CITATION = re.compile(r"\[([^\[\]\s#]+)#(\d+)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[^\W\d_]{3,}")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# Function words of the five languages the guardrails support; not evidence of anything.
# A word list reads better as prose than as a list literal.
_STOP = frozenset(
    """the and for are but not you your with this that from have has had was were will
    would can could should may might must its their there they them then than what when
    where which who whom how why all any each few more most other some such only own same
    too very just also into over under about above below between after before again once
    here out off our ours yes does did doing being been because while until per via
    les des une pour que qui dans par sur avec pas est sont ont aux ces cette votre vous
    nous mais ou donc car der die das und ist sind mit von den dem des ein eine einer
    auch nicht fur auf aus bei wie oder los las del con para por una como pero mas sus
    son che per non gli della delle sono con una come anche""".split()  # noqa: SIM905
)


def strip_fence(text: str) -> str:
    m = _FENCE.match(text)
    return m.group(1) if m else text.strip()


class SchemaGuardrail:
    """With ``ctx.output_type`` set, the answer must validate as that pydantic model."""

    name = "schema"
    stages: frozenset[Stage] = frozenset({"output"})

    def __call__(self, text: str, ctx: GuardContext) -> Verdict:
        if ctx.output_type is None:
            return Verdict.allow(self.name)
        try:
            ctx.output_type.model_validate_json(strip_fence(text))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the answer"
            reason = f"the answer does not match the expected format ({where}: {first['msg']})"
            return Verdict.block(
                self.name, reason, [Finding(name=self.name, reason=reason, kind="schema")]
            )
        return Verdict.allow(self.name)


def _stem(word: str) -> str:
    return word[:5]


def _content(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP}


def content_words(text: str) -> set[str]:
    """The content words of ``text`` (no function words), on a 5-letter prefix."""
    return _content(text)


@dataclass
class _Evidence:
    texts: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # "source#position"
    sources: set[str] = field(default_factory=set)


def _passages(raw: Iterable[str]) -> _Evidence:
    """Passages as plain text, or as the retrieve tool's JSON (one passage or its output)."""
    ev = _Evidence()
    for item in raw:
        try:
            data = json.loads(item) if item.lstrip().startswith("{") else None
        except json.JSONDecodeError:
            data = None
        entries = data.get("passages", [data]) if isinstance(data, dict) else []
        if not entries:
            ev.texts.append(item)
            continue
        for p in entries:
            if not isinstance(p, dict):
                continue
            ev.texts.append(str(p.get("text", "")))
            if "source" in p:
                ev.sources.add(str(p["source"]))
                if "position" in p:
                    ev.keys.add(f"{p['source']}#{p['position']}")
    return ev


class GroundingGuardrail:
    """Report (or block) answer sentences that the retrieved passages do not support."""

    name = "grounding"
    stages: frozenset[Stage] = frozenset({"output"})

    def __init__(self, cfg: GuardrailsSettings) -> None:
        self._block = cfg.grounding_action == "block"
        self._min_support = cfg.grounding_min_support

    def __call__(self, text: str, ctx: GuardContext) -> Verdict:
        if not ctx.passages:
            return Verdict.allow(self.name)
        ev = _passages(ctx.passages)
        vocab = [_content(t) for t in ev.texts]
        numbers = set(_NUMBER.findall(" ".join(ev.texts)))
        findings = [
            Finding(name=self.name, reason=reason, kind=kind, layer="lexical")
            for kind, reason in self._check(text, ev, vocab, numbers)
        ]
        if findings and self._block:
            return Verdict.block(
                self.name, "the answer is not supported by the retrieved documents", findings
            )
        return Verdict.allow(self.name, findings)

    def _check(
        self, text: str, ev: _Evidence, vocab: Sequence[set[str]], numbers: set[str]
    ) -> Iterable[tuple[str, str]]:
        for sentence in _SENTENCE.split(text):
            sentence = sentence.strip()
            cited = [f"{s}#{n}" for s, n in _CITATION.findall(sentence)]
            for key in cited:
                if ev.keys and key not in ev.keys and key.split("#")[0] not in ev.sources:
                    yield "citation", f"cites [{key}], which was not retrieved"
            if any(k in ev.keys or k.split("#")[0] in ev.sources for k in cited):
                continue
            plain = _CITATION.sub("", sentence)
            words = _content(plain)
            nums = set(_NUMBER.findall(plain))
            if sentence.endswith("?") or (len(words) < 3 and not nums):
                continue  # a question, a greeting, a fragment: nothing to ground
            best = max((len(words & v) / len(words) for v in vocab), default=0.0) if words else 1.0
            if best < self._min_support or not nums <= numbers:
                excerpt = plain if len(plain) <= 80 else plain[:77] + "..."
                yield "unsupported", f"not supported by the retrieved passages: '{excerpt}'"


# Numbers as people write them: 1,234.5 / 1.234,5 / 1 234 / 6,95. An ambiguous token has
# every reading, so "1.000" is 1000 and 1.0. No library reads all these locales without
# knowing the locale, and an answer's locale is not known.
# Digits inside a word ("s3cr3t", "SEV1", "2nd") are not quantities.
_WRITTEN_NUMBER = re.compile(
    r"(?<![^\W\d_])(?:\d{1,3}(?:[\u00a0\u202f ]\d{3})+(?!\d)|\d+(?:[.,]\d+)*)(?![^\W\d_])"
)


def readings(token: str) -> set[Decimal]:
    """Every value the written number ``token`` can mean."""
    t = re.sub(r"[\u00a0\u202f ]", "", token)
    out: set[str] = set()
    if "," in t and "." in t:
        dec = "," if t.rfind(",") > t.rfind(".") else "."
        other = "." if dec == "," else ","
        out.add(t.replace(other, "").replace(dec, "."))
    elif "," in t or "." in t:
        sep = "," if "," in t else "."
        parts = t.split(sep)
        if all(len(p) == 3 for p in parts[1:]):
            out.add(t.replace(sep, ""))  # thousands groups
        if len(parts) == 2:
            out.add(t.replace(sep, "."))  # a decimal mark
    else:
        out.add(t)
    values: set[Decimal] = set()
    for s in out:
        try:
            values.add(Decimal(s))
        except InvalidOperation:
            continue
    return values


def numbers_in(text: str) -> list[tuple[str, set[Decimal]]]:
    """Each number written in ``text``, with its readings."""
    return [(m, readings(m)) for m in _WRITTEN_NUMBER.findall(text)]


_JSON_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|[nrtbf\\/\"])")


def ungrounded_numbers(answer: str, evidence: Iterable[str]) -> list[str]:
    """The numbers of ``answer`` that no text of ``evidence`` states (citations such as
    ``[source#3]`` are not claims). The run's grounding rule: every number, date and
    amount of an answer comes from a tool result, or from code that ran."""
    known: set[Decimal] = set()
    for text in evidence:
        # Tool results reach the model as JSON: "\u20ac14.95" and "\n15" hide their
        # numbers behind an escape's letter unless the escape is read as a break.
        text = _JSON_ESCAPE.sub(" ", text)
        for _, values in numbers_in(text):
            known |= values
    plain = _CITATION.sub(" ", answer)
    return list(dict.fromkeys(tok for tok, values in numbers_in(plain) if not values & known))
