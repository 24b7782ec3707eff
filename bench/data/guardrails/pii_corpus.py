"""Regenerate ``pii.jsonl``: synthetic but realistic PII in short multilingual messages.

    .venv/bin/python bench/data/guardrails/pii_corpus.py

Every value is made to pass its real validator (IBAN mod-97 and national BBAN checks,
Luhn, NIR key, DNI/NIE letter, codice fiscale check letter, Steuer-ID, BSN 11-proof,
Belgian mod-97, phone numbers valid for their numbering plan), and every message also
carries look-alikes that must NOT be redacted: the same formats with a wrong checksum,
dates, order numbers, prices, versions, ISBNs, IP addresses. Seeded, so the file is stable.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import phonenumbers
from stdnum import iban, luhn
from stdnum.be import nn as be_nn
from stdnum.de import idnr
from stdnum.it import codicefiscale
from stdnum.nl import bsn

OUT = Path(__file__).with_name("pii.jsonl")
rng = random.Random(4242)

BBAN = {  # country: (length of the BBAN, alphabet per position: d digit, a letter)
    "DE": "d" * 18,
    "FR": "d" * 10 + "d" * 11 + "dd",
    "ES": "d" * 20,
    "IT": "a" + "d" * 10 + "d" * 12,
    "NL": "aaaa" + "d" * 10,
    "BE": "d" * 12,
    "AT": "d" * 16,
    "GB": "aaaa" + "d" * 14,
    "CH": "d" * 17,
    "PT": "d" * 21,
    "IE": "aaaa" + "d" * 14,
    "LU": "d" * 16,
}
REGIONS = ["FR", "DE", "ES", "IT", "NL", "BE", "GB", "AT", "PT", "IE", "CH"]
NAMES = ["anna.schmidt", "marco.rossi", "lucia.garcia", "jean.dupont", "j.de.vries", "tom_b"]
DOMAINS = ["example.com", "mail.example.org", "posteo.example", "firma.example.de"]


def _digits(n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def make_iban(country: str) -> str:
    while True:
        bban = "".join(
            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") if c == "a" else rng.choice("0123456789")
            for c in BBAN[country]
        )
        check = iban.calc_check_digits(country + "00" + bban)
        value = country + check + bban
        if iban.is_valid(value):
            return iban.format(value) if rng.random() < 0.7 else value


def make_card() -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15)])
    body = prefix + _digits(length - len(prefix) - 1)
    number = body + luhn.calc_check_digit(body)
    if length == 15:
        return f"{number[:4]} {number[4:10]} {number[10:]}"
    if rng.random() < 0.5:
        return " ".join(number[i : i + 4] for i in range(0, 16, 4))
    return "-".join(number[i : i + 4] for i in range(0, 16, 4)) if rng.random() < 0.5 else number


def make_phone(region: str, international: bool) -> str:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    national = str(example.national_number)
    while True:
        candidate = national[:3] + _digits(len(national) - 3)
        num = phonenumbers.parse("+" + str(example.country_code) + candidate)
        if phonenumbers.is_valid_number(num):
            fmt = (
                phonenumbers.PhoneNumberFormat.INTERNATIONAL
                if international
                else phonenumbers.PhoneNumberFormat.NATIONAL
            )
            return phonenumbers.format_number(num, fmt)


def make_nir() -> str:
    body = f"{rng.choice('12')}{rng.randint(40, 99):02d}{rng.randint(1, 12):02d}"
    body += f"{rng.randint(1, 95):02d}{_digits(3)}{_digits(3)}"
    key = 97 - int(body) % 97
    return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:13]} {key:02d}"


def make_dni() -> str:
    n = rng.randint(10_000_000, 99_999_999)
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def make_nie() -> str:
    lead = rng.choice("XYZ")
    n = rng.randint(1_000_000, 9_999_999)
    full = int(str("XYZ".index(lead)) + str(n))
    return f"{lead}{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[full % 23]}"


def make_cf() -> str:
    letters = "".join(rng.choice("BCDFGLMNPRSTVZ") for _ in range(6))
    body = f"{letters}{rng.randint(40, 99):02d}{rng.choice('ABCDEHLMPRST')}"
    day = rng.randint(1, 28) + rng.choice([0, 40])  # +40: born female
    body += f"{day:02d}{rng.choice(['H501', 'F205', 'L219', 'G273'])}"
    return body + codicefiscale.calc_check_digit(body)


def _loop(make: object, valid: object) -> str:
    while True:
        value = make()  # type: ignore[operator]
        if valid(value):  # type: ignore[operator]
            return str(value)


def make_idnr() -> str:
    return _loop(lambda: str(rng.randint(1, 9)) + _digits(10), idnr.is_valid)


def make_bsn() -> str:
    return _loop(lambda: _digits(9), bsn.is_valid)


def make_be_nn() -> str:
    def make() -> str:
        return (
            f"{rng.randint(40, 99):02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{_digits(3)}"
        )

    def with_key(body: str) -> str:
        return body + f"{97 - int(body) % 97:02d}"

    value = _loop(lambda: with_key(make()), be_nn.is_valid)
    return f"{value[:2]}.{value[2:4]}.{value[4:6]}-{value[6:9]}.{value[9:]}"


def _broken(value: str) -> str:
    """The same value with its last digit changed, so its checksum fails."""
    for i in range(len(value) - 1, -1, -1):
        if value[i].isdigit():
            return value[:i] + str((int(value[i]) + 1) % 10) + value[i + 1 :]
    return value


def _wrong_dni() -> str:
    n = rng.randint(10_000_000, 99_999_999)
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[(n + 1) % 23]}"


def negatives() -> list[str]:
    card = make_card().replace(" ", "").replace("-", "")
    return [
        _broken(make_iban(rng.choice(list(BBAN)))),
        _broken(card),
        _wrong_dni(),
        rng.choice(["2024-03-15", "15/03/2024", "03.11.2025", "2025-12-01 14:30"]),
        f"{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
        rng.choice(["v2.14.3", "1 234,56 €", "EUR 12.500,00", "ISBN 978-3-16-148410-0"]),
        f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        str(rng.randint(100_000_000, 999_999_999)),  # bare 9 digits, no "BSN" near it
        f"order {rng.randint(100000, 999999)}",
    ]


TEMPLATES = {
    "en": [
        ("email", "Please send the invoice to {v}, thanks."),
        ("phone_int", "You can reach me on {v} after 6 pm."),
        ("phone_nat", "My number is {v}, call anytime."),
        ("iban", "Refund to my account {v} please."),
        ("card", "I paid with card {v} and was charged twice."),
    ],
    "fr": [
        ("nir", "Mon numéro de sécurité sociale est le {v}."),
        ("iban", "Voici mon IBAN : {v}."),
        ("phone_nat", "Rappelez-moi au {v} s'il vous plaît."),
        ("email", "Écrivez-moi à {v}."),
    ],
    "de": [
        ("idnr", "Meine Steuer-ID ist {v}."),
        ("iban", "Bitte überweisen Sie auf {v}."),
        ("phone_nat", "Telefonisch erreichbar unter {v}."),
        ("card", "Karte {v} wurde abgelehnt."),
    ],
    "es": [
        ("dni", "Mi DNI es {v} y necesito cambiar la dirección."),
        ("nie", "Tengo NIE {v}, ¿puedo abrir una cuenta?"),
        ("iban", "Mi cuenta es {v}."),
        ("phone_nat", "Llámame al {v}."),
    ],
    "it": [
        ("cf", "Il mio codice fiscale è {v}."),
        ("iban", "Il mio IBAN è {v}."),
        ("phone_nat", "Il mio cellulare è {v}."),
        ("email", "Scrivimi a {v}."),
    ],
    "nl": [("bsn", "Mijn BSN is {v}."), ("phone_nat", "Bel me op {v}.")],
    "be": [("be_nn", "Mon numéro national est le {v}.")],
}
NAT_REGION = {"en": "GB", "fr": "FR", "de": "DE", "es": "ES", "it": "IT", "nl": "NL", "be": "BE"}
IBAN_COUNTRY = {"en": "GB", "fr": "FR", "de": "DE", "es": "ES", "it": "IT", "nl": "NL", "be": "BE"}


def value_for(kind: str, lang: str) -> str:
    makers = {
        "email": lambda: f"{rng.choice(NAMES)}@{rng.choice(DOMAINS)}",
        "phone_int": lambda: make_phone(rng.choice(REGIONS), True),
        "phone_nat": lambda: make_phone(NAT_REGION[lang], False),
        "iban": lambda: make_iban(
            IBAN_COUNTRY[lang] if rng.random() < 0.6 else rng.choice(list(BBAN))
        ),
        "card": make_card,
        "nir": make_nir,
        "dni": make_dni,
        "nie": make_nie,
        "cf": make_cf,
        "idnr": make_idnr,
        "bsn": make_bsn,
        "be_nn": make_be_nn,
    }
    return makers[kind]()


def main() -> None:
    lines: list[dict[str, object]] = []
    for round_ in range(12):
        for lang, templates in TEMPLATES.items():
            for kind, template in templates:
                value = value_for(kind, lang)
                negs = rng.sample(negatives(), 2)
                text = template.format(v=value) + f" (ref {negs[0]}; see also {negs[1]})"
                lines.append(
                    {
                        "id": f"pii-{len(lines)}",
                        "lang": lang,
                        "text": text,
                        "values": [{"kind": kind, "value": value}],
                        "negatives": negs,
                        "round": round_,
                    }
                )
    OUT.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    print(f"{OUT}: {len(lines)} messages")


if __name__ == "__main__":
    main()
