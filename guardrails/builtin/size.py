"""Size and encoding: length limits, invisible characters, homoglyphs; and ``normalize``.

Attackers hide instructions from people, not from models: zero-width characters split a
keyword so a filter misses it, bidi overrides make text read differently on screen, the
Unicode *tags* block (U+E0000..U+E007F) carries a whole ASCII sentence invisibly, and
Cyrillic look-alikes spell ``ignоre`` with an ``о`` that is not an ``o``. The ``size``
guardrail strips the invisible ones (a redaction with findings) and reports mixed-script
words; :func:`normalize` gives every detector the same folded text to match on.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import cache
from pathlib import Path

from tierflow.guardrails.base import Finding, GuardContext, Stage, Verdict
from tierflow.settings import GuardrailsSettings

# Always invisible and never needed in a prompt: zero width space, word joiner and
# invisible operators, bidi embeddings/overrides/isolates, BOM, Mongolian vowel separator,
# the tags block. Soft hyphen too (invisible unless a line breaks there).
_INVISIBLE = re.compile(
    "[\u00ad\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
    "\U000e0000-\U000e007f]"
)
# ZWNJ/ZWJ are real characters in Persian, Indic scripts and emoji sequences; they are
# only an evasion trick between two ASCII letters or digits (``ig\u200dnore``).
_JOINER_IN_ASCII = re.compile("(?<=[A-Za-z0-9])[\u200c\u200d]+(?=[A-Za-z0-9])")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TAGS = re.compile("[\U000e0020-\U000e007e]+")
_WORD = re.compile(r"\w+")
# Only what needs rewriting: two or more spaces, or one tab / no-break space... (a pattern
# that matched every single space would rewrite them all, ~5x slower on prose).
_SPACES = re.compile(r"[^\S\n]{2,}|[^\S \n]")
_NEWLINES = re.compile(r" ?\n\s*")

_KINDS = {
    "\u202a": "bidi",
    "\u202b": "bidi",
    "\u202c": "bidi",
    "\u202d": "bidi",
    "\u202e": "bidi",
    "\u2066": "bidi",
    "\u2067": "bidi",
    "\u2068": "bidi",
    "\u2069": "bidi",
    "\u200e": "bidi",
    "\u200f": "bidi",
}


@cache
def _confusables() -> dict[str, str]:
    # Generated from the Unicode confusables data by bench/data/guardrails/confusables.py.
    path = Path(__file__).with_name("confusables.json")
    table: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return table


def _fold_word(word: str, table: dict[str, str]) -> str | None:
    """The ASCII look-alike of a mixed-script word, or ``None`` if it is not one."""
    if word.isascii():
        return None
    letters = [ch for ch in word if ch.isalpha()]
    look_alikes = sum(1 for ch in letters if ch in table)
    if not look_alikes:
        return None
    has_ascii = any(ch.isascii() for ch in letters)
    # Mixed (``ignоre``), or made only of look-alikes (``іgnоrе`` all Cyrillic); a real
    # Russian or Greek word has letters with no Latin twin and is left alone.
    if has_ascii or (look_alikes == len(letters) and len(letters) >= 2):
        return "".join(table.get(ch, ch) for ch in word)
    return None


def fold_homoglyphs(text: str) -> str:
    """Replace mixed-script look-alike words by their ASCII spelling (case kept)."""
    if text.isascii():
        return text
    table = _confusables()
    if table.keys().isdisjoint(set(text)):  # the common case: accents, dashes, euro signs
        return text

    def sub(m: re.Match[str]) -> str:
        folded = _fold_word(m.group(), table)
        return m.group() if folded is None else folded

    return _WORD.sub(sub, text)


def decode_tags(text: str) -> str:
    """The ASCII text hidden in Unicode tag characters (U+E0020..U+E007E), if any."""
    return " ".join(
        "".join(chr(ord(ch) - 0xE0000) for ch in m.group()) for m in _TAGS.finditer(text)
    )


# Combining marks of Latin, Greek and Cyrillic letters (accents, cedillas, the Turkish
# dot): what separates "précédentes" from "precedentes".
_MARKS = re.compile("[\u0300-\u036f]")


def _strip_marks(text: str) -> str:
    if text.isascii():
        return text
    return _MARKS.sub("", unicodedata.normalize("NFD", text))


def normalize(text: str) -> str:
    """The form detectors match on: NFKC, no invisible or control characters, look-alike
    letters folded to ASCII, lower case, no accents, single spaces (newlines kept).

    ``ＩＧＮＯＲＥ`` (full width), ``ig\u200bnore`` (zero width), ``ignоre`` (Cyrillic o) and
    ``Ignóre`` all become ``ignore``. Lengths change, so spans found on the normalised text
    do not point into the original: detectors that redact match on the original instead.
    """
    if text.isascii():
        out = _CONTROL.sub(" ", text).lower()
    else:
        out = unicodedata.normalize("NFKC", text)
        out = _INVISIBLE.sub("", out)
        if "\u200c" in out or "\u200d" in out:
            out = _JOINER_IN_ASCII.sub("", out)
        out = fold_homoglyphs(_CONTROL.sub(" ", out))
        # Turkish dotted/dotless i would survive casefold as "i̇"/"ı"; marks go below.
        out = _strip_marks(out.replace("ı", "i").casefold())
    # Runs of spaces become one; newlines stay (role labels are matched at line starts).
    return _NEWLINES.sub("\n", _SPACES.sub(" ", out)).strip()


def _limit(stage: Stage, cfg: GuardrailsSettings) -> int:
    return cfg.max_tool_result_chars if stage == "tool_result" else cfg.max_input_chars


def _too_long(stage: Stage, size: int, limit: int) -> str:
    what = {
        "input": "the message",
        "output": "the answer",
        "tool_call": "the tool arguments",
        "tool_result": "the tool result",
    }[stage]
    reason = f"{what} is too long ({size:,} characters; the limit is {limit:,})"
    return f"the tool result was withheld: {reason}" if stage == "tool_result" else reason


class SizeGuardrail:
    """Length limit (block), invisible and control characters (strip), homoglyphs (report)."""

    name = "size"
    stages: frozenset[Stage] = frozenset({"input", "tool_call", "tool_result", "output"})

    def __init__(self, cfg: GuardrailsSettings) -> None:
        self._cfg = cfg

    def __call__(self, text: str, ctx: GuardContext) -> Verdict:
        limit = _limit(ctx.stage, self._cfg)
        if len(text) > limit:
            return Verdict.block(self.name, _too_long(ctx.stage, len(text), limit))
        findings: list[Finding] = []
        for m in _CONTROL.finditer(text):
            findings.append(self._strip(m, "control", "control character removed"))
        if not text.isascii():
            for m in _INVISIBLE.finditer(text):
                kind = "tag" if m.group() >= "\U000e0000" else _KINDS.get(m.group(), "invisible")
                findings.append(self._strip(m, kind, f"{kind} character removed"))
            for m in (
                _JOINER_IN_ASCII.finditer(text) if "\u200d" in text or "\u200c" in text else ()
            ):
                findings.append(self._strip(m, "invisible", "invisible character removed"))
            findings.extend(self._homoglyphs(text))
        if any(f.replacement is not None for f in findings):
            return Verdict.redact(self.name, _apply(text, findings), findings)
        return Verdict.allow(self.name, findings)

    def _strip(self, m: re.Match[str], kind: str, reason: str) -> Finding:
        return Finding(
            name=self.name,
            reason=reason,
            kind=kind,
            span=(m.start(), m.end()),
            replacement="",
            layer="encoding",
        )

    def _homoglyphs(self, text: str) -> list[Finding]:
        table = _confusables()
        found: list[Finding] = []
        if table.keys().isdisjoint(set(text)):
            return found
        for m in _WORD.finditer(unicodedata.normalize("NFC", text)):
            folded = _fold_word(m.group(), table)
            if folded is not None:
                found.append(
                    Finding(
                        name=self.name,
                        reason=f"mixed-script word reads as '{folded}'",
                        kind="homoglyph",
                        layer="homoglyph",
                    )
                )
        return found


def _apply(text: str, findings: list[Finding]) -> str:
    out: list[str] = []
    pos = 0
    for f in sorted((f for f in findings if f.span and f.replacement is not None), key=_start):
        assert f.span is not None and f.replacement is not None
        if f.span[0] < pos:
            continue
        out.append(text[pos : f.span[0]])
        out.append(f.replacement)
        pos = f.span[1]
    out.append(text[pos:])
    return "".join(out)


def _start(f: Finding) -> int:
    return f.span[0] if f.span else 0
