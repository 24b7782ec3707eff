"""Undo the obvious obfuscations an injection hides behind, so the heuristics see it.

Each function returns the decoded text (empty when there is nothing to decode), and the
injection guardrail rescans what comes back, naming the layer that found it:
``decoded:base64``, ``decoded:rot13``, ``decoded:unicode_tags``, ``leetspeak``,
``spacing``. All work on the already normalised (lower-case) text except base64 and the
tags, which need the original.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re

from tierflow.guardrails.builtin.size import decode_tags

_B64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_LEET_WORD = re.compile(r"\b(?=[a-z0-9@$!|]*[a-z])(?=[a-z@$!|]*[0134578@$!|])[a-z0-9@$!|]{3,}\b")
# A leet word has a digit between letters (``1gn0r3``); ``30days``, ``2kb``, ``v2`` and
# e-mail addresses do not count. Two of them, or nothing is rescanned.
_LEET_HINT = re.compile(r"[a-z][0134578][a-z0-9@$]*[a-z]|\b[0134578][a-z]+[0134578]")
_LEET = str.maketrans("0134578@$!|", "oieastbasil")
# Five or more single letters separated by one space, dot, dash, underscore or star.
_SPACED = re.compile(r"(?<!\w)(?:\w[ .\-_*+/]{1,3}){4,}\w(?!\w)")
_SEPARATORS = re.compile(r"[ .\-_*+/]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_ROT13_HINT = re.compile(r"\brot[ -]?13\b|\bcaesar cipher\b")


def decoded_base64(text: str) -> str:
    """The printable texts hidden in base64 runs of ``text``, joined by newlines."""
    out: list[str] = []
    for m in _B64.finditer(text):
        blob = m.group()
        if blob.isalpha() or blob.isdigit():  # a long word or number, not base64
            continue
        padded = blob + "=" * (-len(blob) % 4)
        try:
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            continue
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        printable = sum(ch.isprintable() or ch in "\n\t" for ch in decoded)
        if decoded and printable / len(decoded) > 0.9 and any(ch == " " for ch in decoded):
            out.append(decoded)
    return "\n".join(out)


def decoded_rot13(normalized: str) -> str:
    """The ROT13 reading of the text, when the text talks about ROT13 or Caesar."""
    return codecs.encode(normalized, "rot13") if _ROT13_HINT.search(normalized) else ""


def decoded_tags(text: str) -> str:
    """ASCII text smuggled in Unicode tag characters (invisible on screen)."""
    return decode_tags(text) if not text.isascii() else ""


def unleet(normalized: str) -> str:
    """``1gn0r3 pr3v10us`` -> ``ignore previous``; only words mixing letters and digits."""
    if len(_LEET_HINT.findall(normalized)) < 2:
        return ""
    # Only the sentences that hold leet words are rescanned: product codes and versions
    # in ordinary text should not cost a second pass over all of it.
    sentences = [s for s in _SENTENCE.split(normalized) if _LEET_HINT.search(s)]
    return "\n".join(_LEET_WORD.sub(lambda m: m.group().translate(_LEET), s) for s in sentences)


def unspace(normalized: str) -> str:
    """``i g n o r e  p r e v i o u s`` -> ``ignore previous``.

    Inside a run of spaced letters a wider gap (two or more separators) is a word break.
    """
    changed = False

    def sub(m: re.Match[str]) -> str:
        nonlocal changed
        changed = True
        words = re.split(r"[ .\-_*+/]{2,}", m.group())
        return " ".join(_SEPARATORS.sub("", w) for w in words)

    out = _SPACED.sub(sub, normalized)
    return out if changed else ""
