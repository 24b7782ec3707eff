"""Write ``pii_context.jsonl``: phone numbers libphonenumber calls possible but not valid.

    .venv/bin/python bench/data/guardrails/pii_context_corpus.py

Issue 14: "+33 6 93 16 19 78" has the length of a French number but lies outside the
ranges in use, so it is not *valid*; the words around it say it is a phone number. Each
message has one such number next to a cue (call, numéro, unter, llamar, chiamare...) to
redact, and one possible-but-invalid run of digits with no cue (an order or a ticket
reference) that must stay. Seeded; the numbers are drawn until libphonenumber agrees.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import phonenumbers

SEED = 1414
# (lang, region, country code, national digits, message with {n} for the number)
TEMPLATES = [
    ("fr", "FR", 33, 9, "Mon numéro est le {n}, rappelle-moi ce soir."),
    ("fr", "FR", 33, 9, "Tu peux m'appeler au {n} demain matin."),
    ("de", "DE", 49, 10, "Rufen Sie mich bitte unter {n} an."),
    ("de", "DE", 49, 10, "Meine Telefonnummer: {n}, ab 18 Uhr erreichbar."),
    ("es", "ES", 34, 9, "Puedes llamarme al {n} por la tarde."),
    ("es", "ES", 34, 9, "Mi teléfono es {n}, escríbeme si no contesto."),
    ("it", "IT", 39, 10, "Puoi chiamarmi al {n} dopo pranzo."),
    ("it", "IT", 39, 10, "Il mio cellulare è {n}."),
    ("en", "GB", 44, 10, "Call me on {n} when you land."),
    ("en", "GB", 44, 10, "My phone number is {n}, text first please."),
]
NEGATIVE = "(ticket {r})"


def _possible_invalid(rng: random.Random, cc: int, digits: int) -> str:
    while True:
        rest = "".join(str(rng.randint(0, 9)) for _ in range(digits - 1))
        national = str(rng.randint(1, 9)) + rest
        num = phonenumbers.parse(f"+{cc}{national}")
        if phonenumbers.is_possible_number(num) and not phonenumbers.is_valid_number(num):
            return national


def _reference(rng: random.Random) -> str:
    """A run of digits (8 to 11) no plan tierflow checks calls valid, but one calls
    possible: only the missing cue keeps it from being redacted."""
    from tierflow.guardrails.builtin.pii import _phone_check

    while True:
        n = rng.randint(8, 11)
        text = rng.choice(["0", ""]) + "".join(str(rng.randint(0, 9)) for _ in range(n))
        shaped = not text.startswith("00") and (text[0] == "0" or text[0] >= "3")
        if shaped and not _phone_check(text, False) and _phone_check(text, True):
            return text


def _spaced(s: str) -> str:
    return " ".join(s[i : i + 2] for i in range(0, len(s), 2))


def main() -> None:
    rng = random.Random(SEED)
    rows: list[dict[str, object]] = []
    for i in range(3):
        for lang, region, cc, digits, template in TEMPLATES:
            national = _possible_invalid(rng, cc, digits)
            # Half written +CC, half national with a trunk 0 (where the plan has one).
            trunk = region != "IT" and i % 2 == 1
            value = f"0{_spaced(national)}" if trunk else f"+{cc} {_spaced(national)}"
            ref_text = _reference(rng)
            text = template.format(n=value) + " " + NEGATIVE.format(r=ref_text)
            rows.append(
                {
                    "id": f"pii-context-{len(rows)}",
                    "lang": lang,
                    "text": text,
                    "values": [{"kind": "phone_possible", "value": value}],
                    "negatives": [ref_text],
                }
            )
    path = Path(__file__).with_name("pii_context.jsonl")
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


if __name__ == "__main__":
    main()
