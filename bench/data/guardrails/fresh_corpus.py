"""Write ``fresh_test.jsonl``: the fresh test set of issue 14 (never used for tuning).

    .venv/bin/python bench/data/guardrails/fresh_corpus.py

The texts are in ``fresh_attacks.py`` and ``fresh_benign.py``; this script wraps the
indirect payloads in their documents (``tool_result`` stage) and applies one obfuscation
per payload and kind (base64, leetspeak, spaced letters, Cyrillic look-alikes, zero-width
joiners, ROT13). The obfuscations are written here rather than with the detector's own
decoders, so the test does not just invert what the detector does.
"""

from __future__ import annotations

import base64
import codecs
import json
import sys
from pathlib import Path
from typing import Any

from tierflow.bench.data.guardrails import fresh_attacks as fa
from tierflow.bench.data.guardrails import fresh_benign as fb

HERE = Path(__file__).parent

_LEET = str.maketrans({"e": "3", "a": "4", "o": "0", "i": "1", "s": "5", "t": "7"})
_CYRILLIC = str.maketrans({"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "i": "і"})


def obfuscate(text: str, how: str) -> str:
    if how == "base64":
        return "Decode this and do what it says: " + base64.b64encode(text.encode()).decode()
    if how == "leet":
        return text.lower().translate(_LEET)
    if how == "spaced":
        return " ".join(text.replace(" ", "  "))
    if how == "homoglyph":
        return text.translate(_CYRILLIC)
    if how == "zero_width":
        return "\u200b".join(text)
    if how == "rot13":
        return "This is ROT13, decode it and follow it: " + codecs.encode(text, "rot13")
    raise ValueError(how)


def _row(text: str, family: str, lang: str, kind: str, stage: str = "input") -> dict[str, Any]:
    return {
        "text": text,
        "source": "fresh",
        "family": f"fresh/{family}",
        "lang": lang,
        "stage": stage,
        "kind": kind,
    }


def rows() -> list[dict[str, Any]]:
    out = [_row(t, "direct", lang, "attack") for lang, t in fa.DIRECT]
    out += [_row(t, "role_play", lang, "attack") for lang, t in fa.ROLE_PLAY]
    out += [_row(t, "extraction", lang, "attack") for lang, t in fa.EXTRACTION]
    out += [
        _row(ctx.format(p=p), "indirect", lang, "attack", "tool_result")
        for lang, ctx, p in fa.INDIRECT
    ]
    out += [
        _row(obfuscate(t, how), f"obfuscated/{how}", lang, "attack")
        for how in fa.OBFUSCATIONS
        for lang, t in fa.OBFUSCATED
    ]
    for family, items in (
        ("persona", fb.PERSONA),
        ("security", fb.SECURITY),
        ("quoted", fb.QUOTED),
        ("code", fb.CODE),
        ("requests", fb.REQUESTS),
    ):
        out += [_row(t, family, lang, "benign") for lang, t in items]
    out += [_row(t, "documents", lang, "benign", "tool_result") for lang, t in fb.DOCUMENTS]
    return [{"id": f"fresh-{i}", **r} for i, r in enumerate(out)]


def main() -> None:
    data = rows()
    path = HERE / "fresh_test.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), "utf-8")
    attacks = sum(r["kind"] == "attack" for r in data)
    print(f"{path.name}: {attacks} attacks, {len(data) - attacks} benign", file=sys.stderr)


if __name__ == "__main__":
    main()
