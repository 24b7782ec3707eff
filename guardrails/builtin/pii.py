"""PII detection: e-mail, phone, IBAN, payment card and national identifiers.

Each kind is found in two steps: a precompiled regular expression proposes candidates by
shape, then a validator accepts only real values, so an order number or a date is not
redacted as a phone number and a mistyped IBAN is not redacted at all:

- IBAN: ISO 13616 country length and mod-97 checksum (``python-stdnum``);
- card: Luhn checksum (``python-stdnum``) and a card-network first digit (2-6);
- phone: Google's libphonenumber metadata (``phonenumbers``): numbers written with ``+`` or
  ``00`` are checked for their own country, national numbers (leading ``0``) against the
  European plans in ``_NATIONAL_REGIONS``, ``(555) 123-4567`` against the NANP. Only
  candidates are parsed (~50 µs each), which keeps a 2 KB text well under a millisecond;
  the library's own ``PhoneNumberMatcher`` scans every digit run and is ~10x slower.
- national identifiers with a checksum (``python-stdnum``): French NIR, Spanish DNI and
  NIE, Italian codice fiscale, German Steuer-ID, Dutch BSN, Belgian national number. The
  last three have weak checksums (about one random number in 11, or in 97), so a bare run
  of digits counts only next to a word that names it (``BSN``, ``Steuer-ID``...) or in the
  number's printed format (``1234.56.782``, ``85.07.30-033.28``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import phonenumbers
from stdnum import iban, luhn
from stdnum.be import nn as be_nn
from stdnum.de import idnr as de_idnr
from stdnum.es import dni as es_dni
from stdnum.es import nie as es_nie
from stdnum.fr import nir as fr_nir
from stdnum.it import codicefiscale as it_cf
from stdnum.nl import bsn as nl_bsn

from tierflow.guardrails.base import Finding, GuardContext, PlaceholderVault, Stage, Verdict
from tierflow.guardrails.builtin.common import redaction
from tierflow.settings import GuardrailsSettings

_NATIONAL_REGIONS = (
    "FR", "DE", "ES", "IT", "NL", "BE", "AT", "CH", "GB", "IE", "PT", "LU", "PL", "SE", "DK",
    "FI", "NO", "CZ", "GR",
)  # fmt: skip

# Most shapes start with a character class and check the character before it in a
# lookbehind placed after it (``\\d(?<!\\w\\d)`` is ``\\b\\d``): the regex engine then skips
# to candidate characters instead of testing a word boundary at every position (2-3x).
_EMAIL = re.compile(
    r"[A-Za-z0-9](?<![\w.+-][A-Za-z0-9])[A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
    r"\.[A-Za-z]{2,}\b"
)
_IBAN = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"[2-6](?<![\w-][2-6])\d{3}(?:[ -]?\d){9,15}(?![\w-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"(?:\+|00)[1-9]\d{0,2}[ .-]?(?:\(0?\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{1,4}){1,5}"
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|0\d{1,4}(?:[ ./-]\d{2,8}){1,4}"  # 06 12 34 56 78, 030 1234567, 01512 3456789
    r"|0\d{9,10}"  # 0612345678: a bare run only at a national length
    r"|[3-9]\d{2}(?:[ .-]\d{2,4}){2,3}"  # no trunk 0: 612 34 56 78 (ES), 312 345 6789 (IT)
    r")(?![\w])"
)
_NO_TRUNK_REGIONS = ("ES", "IT", "PT", "GR", "DK", "NO", "LU")
_DATE = re.compile(r"\d{1,4}[-./]\d{1,2}[-./]\d{1,4}")
_NIR = re.compile(
    r"[12](?<!\w[12]) ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b"
)
_DNI = re.compile(r"\d(?<!\w\d)\d{7}-?[A-Z]\b")
_NIE = re.compile(r"[XYZ](?<!\w[XYZ])-?\d{7}-?[A-Z]\b")
_CF_DIGIT = "[0-9LMNPQRSTUVlmnpqrstuv]"  # a digit, or its omocodia letter
_CF = re.compile(
    rf"[A-Za-z](?<!\w[A-Za-z])[A-Za-z]{{5}}{_CF_DIGIT}{{2}}[A-EHLMPR-Ta-ehlmpr-t]"
    rf"{_CF_DIGIT}{{2}}[A-Za-z]{_CF_DIGIT}{{3}}[A-Za-z]\b"
)
# A codice fiscale has its birth date as digit, month letter, digit: cheap to look for first.
_CF_HINT = re.compile(r"\d[A-EHLMPR-Ta-ehlmpr-t]\d")
_IDNR = re.compile(r"[1-9](?<!\w[1-9])\d(?: ?\d{3}){3}\b")
_BSN = re.compile(r"\d(?<!\w\d)(?:\d{3}\.\d{2}\.\d{3}|\d{8})\b")
_BE_NN = re.compile(r"\d(?<!\w\d)(?:\d\.\d{2}\.\d{2}-\d{3}\.\d{2}|\d{10})\b")
# Words that name a weak-checksum identifier; looked for just before the number.
_DE_CONTEXT = re.compile(r"steuer|idnr|identifikationsnummer|tax id|\btin\b", re.IGNORECASE)
_NL_CONTEXT = re.compile(r"\bbsn\b|burgerservice|sofi", re.IGNORECASE)
_BE_CONTEXT = re.compile(
    r"rijksregister|registre national|num[ée]ro national|national (?:number|id)|insz|niss|rrn",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PiiMatch:
    """One validated value: its kind (``EMAIL``, ``PHONE``...), span and compact form."""

    kind: str
    start: int
    end: int
    value: str  # compact: what identifies the value (same value -> same placeholder)
    label: str  # human name of the kind, for reasons


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


# Words that say a number is a phone number, looked for just before it (or right after:
# "... unter +49 151 7135241 an"): then a number libphonenumber calls possible (right
# length for its country) counts, not only a valid one (known ranges).
_PHONE_CUE = re.compile(
    r"\b(?:call|calls|calling|phone|mobile|cell|number|tel|telephone|whatsapp|sms|text me"
    r"|num[ée]ro|t[ée]l[ée]phone|portable|appel\w*|joindre|telefon\w*|unter|handy|anruf\w*"
    r"|rufnummer|nummer|llam\w*|tel[ée]fono|m[óo]vil|n[úu]mero|chiam\w*|cellulare)\b",
    re.IGNORECASE,
)


def _phone_numbers(candidate: str) -> Iterator[phonenumbers.PhoneNumber]:
    """The readings of ``candidate``: its own country for ``+``/``00``, else the plans
    it could belong to."""
    if candidate.startswith(("+", "00")):
        yield phonenumbers.parse("+" + candidate[2:] if candidate[0] == "0" else candidate)
        return
    if candidate.startswith("("):
        yield phonenumbers.parse(candidate, "US")
        return
    for region in _NATIONAL_REGIONS if candidate[0] == "0" else _NO_TRUNK_REGIONS:
        yield phonenumbers.parse(candidate, region)


def _phone_check(candidate: str, possible: bool) -> bool:
    """Valid, or (``possible``: a cue stands near it) possible for its country."""
    if _DATE.fullmatch(candidate):
        return False
    if not 7 <= len(_digits(candidate)) <= 15:
        return False
    check = phonenumbers.is_possible_number if possible else phonenumbers.is_valid_number
    try:
        return any(check(num) for num in _phone_numbers(candidate))
    except phonenumbers.NumberParseException:
        return False


# Where a cue stops counting: the end of a clause, or another number.
_CLAUSE = re.compile(r"[.!?;:()\[\]\n]|\d")


def _cued(text: str, start: int, end: int) -> bool:
    """A cue word in the same clause, up to 40 characters before or 8 after the number."""
    before = _CLAUSE.split(text[max(0, start - 40) : start].rstrip(" :"))[-1]
    after = _CLAUSE.split(text[end : end + 8])[0]
    return _PHONE_CUE.search(before) is not None or _PHONE_CUE.search(after) is not None


def _phones(text: str, free: Free) -> Iterator[PiiMatch]:
    for m in _PHONE.finditer(text):
        value = m.group()
        if not free(m.start(), m.end()):
            continue
        cued = value.startswith(("+", "00")) or _cued(text, m.start(), m.end())
        if _phone_check(value, possible=False) or (cued and _phone_check(value, possible=True)):
            key = re.sub(r"[\s.\-()]", "", value).upper()
            yield PiiMatch("PHONE", m.start(), m.end(), key, "phone number")


def _card_ok(candidate: str) -> bool:
    digits = _digits(candidate)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn.is_valid(digits)


def _with_context(context: re.Pattern[str] | None, text: str, start: int) -> bool:
    return context is not None and context.search(text, max(0, start - 40), start) is not None


def _iban_matches(text: str) -> Iterator[PiiMatch]:
    for m in _IBAN.finditer(text):
        raw = m.group()
        # The shape regex may run into a following code (``... 3000 BIC``): shorten to the
        # longest prefix that validates.
        end = len(raw)
        while end >= 15:
            if raw[end - 1] != " " and iban.is_valid(raw[:end]):
                yield PiiMatch("IBAN", m.start(), m.start() + end, iban.compact(raw[:end]), "IBAN")
                break
            end -= 1


Free = Callable[[int, int], bool]  # is this span still unclaimed by an earlier finder?


def _simple(
    pattern: re.Pattern[str], kind: str, label: str, ok: Callable[[str], bool], compact: bool
) -> Callable[[str, Free], Iterator[PiiMatch]]:
    def find(text: str, free: Free) -> Iterator[PiiMatch]:
        for m in pattern.finditer(text):
            value = m.group()
            if free(m.start(), m.end()) and ok(value):
                key = re.sub(r"[\s.\-()]", "", value).upper() if compact else value.lower()
                yield PiiMatch(kind, m.start(), m.end(), key, label)

    return find


def _emails(text: str, free: Free) -> Iterator[PiiMatch]:
    # The regex starts with a letter, which is everywhere; an address has an "@": look
    # only around each one.
    at = text.find("@")
    while at != -1:
        after = at + 1
        for m in _EMAIL.finditer(text, max(0, at - 64), at + 256):
            if m.start() <= at < m.end():
                if free(m.start(), m.end()):
                    yield PiiMatch("EMAIL", m.start(), m.end(), m.group().lower(), "e-mail address")
                after = m.end()
                break
        at = text.find("@", after)


def _national(text: str, free: Free) -> Iterator[PiiMatch]:
    # (shape, validator, label, the words that must precede a bare run of digits)
    checks: tuple[
        tuple[re.Pattern[str], Callable[[str], bool], str, re.Pattern[str] | None], ...
    ] = (
        (_NIR, fr_nir.is_valid, "French NIR", None),
        (_DNI, es_dni.is_valid, "Spanish DNI", None),
        (_NIE, es_nie.is_valid, "Spanish NIE", None),
        (_CF, lambda s: it_cf.is_valid(s.upper()), "Italian codice fiscale", None),
        (_IDNR, de_idnr.is_valid, "German tax id", _DE_CONTEXT),
        (_BSN, nl_bsn.is_valid, "Dutch BSN", _NL_CONTEXT),
        (_BE_NN, be_nn.is_valid, "Belgian national number", _BE_CONTEXT),
    )
    for pattern, ok, label, context in checks:
        if pattern is _CF and not _CF_HINT.search(text):
            continue
        weak = context is not None
        for m in pattern.finditer(text):
            value = m.group()
            if not free(m.start(), m.end()):
                continue
            if weak and value.isdigit() and not _with_context(context, text, m.start()):
                continue
            if ok(value):
                key = re.sub(r"[\s.\-]", "", value).upper()
                yield PiiMatch("NATIONAL_ID", m.start(), m.end(), key, label)


_FINDERS: tuple[Callable[[str, Free], Iterator[PiiMatch]], ...] = (
    _emails,
    _simple(_CARD, "CARD", "payment card number", _card_ok, compact=True),
    _national,
    _phones,
)


def find_pii(text: str) -> list[PiiMatch]:
    """Every validated PII value in ``text``, left to right, without overlaps.

    Finders run from the most specific (IBAN, e-mail, card, national id) to the least
    (phone); a later match that overlaps an earlier one is dropped.
    """
    if not any(ch.isdigit() for ch in text) and "@" not in text:
        return []
    # An IBAN-shaped run that fails its checksum is a typo or a look-alike: nothing inside
    # it may be read as a phone or a card number either.
    taken = list(_iban_matches(text))
    taken += [
        PiiMatch("", m.start(), m.end(), "", "")
        for m in _IBAN.finditer(text)
        if not any(m.start() <= t.start and t.end <= m.end() for t in taken)
    ]

    def free(start: int, end: int) -> bool:
        # Checked before validating: parsing a phone number costs ~30 µs per region.
        return all(end <= t.start or start >= t.end for t in taken)

    for finder in _FINDERS:
        for match in finder(text, free):
            if free(match.start, match.end):
                taken.append(match)
    return sorted((t for t in taken if t.kind), key=lambda t: t.start)


def redact_pii(text: str, vault: PlaceholderVault | None = None) -> str:
    """``text`` with every PII value replaced by its placeholder (``<EMAIL_1>``...).

    With a run's ``vault`` the numbering is the run's; without one it starts at 1. Used
    for span content in tracing, so traces and guardrails mask the same way.

    >>> redact_pii("write to ann@example.com or call +33 6 12 34 56 78")
    'write to <EMAIL_1> or call <PHONE_1>'
    """
    vault = vault if vault is not None else PlaceholderVault()
    out: list[str] = []
    pos = 0
    for m in find_pii(text):
        out.append(text[pos : m.start])
        out.append(vault.placeholder(m.kind, m.value))
        pos = m.end
    out.append(text[pos:])
    return "".join(out)


class PiiGuardrail:
    """Find PII and redact it (``<EMAIL_1>``), block, or only report it (``pii_action``).

    At the output stage a value the user wrote in this run is theirs to see again: it is
    reported (allow) and left in place.
    """

    name = "pii"
    stages: frozenset[Stage] = frozenset({"input", "tool_call", "tool_result", "output"})

    def __init__(self, cfg: GuardrailsSettings) -> None:
        self._action = cfg.pii_action

    def __call__(self, text: str, ctx: GuardContext) -> Verdict:
        matches = find_pii(text)
        if not matches:
            return Verdict.allow(self.name)
        own: set[str] = set()
        if ctx.stage == "output" and ctx.user_text:
            own = {m.value for m in find_pii(ctx.user_text)}
        leaks: list[Finding] = []
        theirs: list[Finding] = []
        for m in matches:
            if m.value in own:
                theirs.append(self._finding(m, "the user's own " + m.label, None))
            else:
                replacement = ctx.vault.placeholder(m.kind, m.value)
                leaks.append(self._finding(m, m.label, replacement))
        if not leaks:
            return Verdict.allow(self.name, theirs)
        if self._action == "block":
            kinds = ", ".join(dict.fromkeys(f.reason for f in leaks))
            return Verdict.block(
                self.name, f"the text contains personal data ({kinds})", leaks, sensitive=True
            )
        if self._action == "flag":
            flagged = [
                Finding(name=f.name, reason=f.reason, kind=f.kind, span=f.span) for f in leaks
            ]
            return Verdict.allow(self.name, flagged + theirs, sensitive=True)
        return redaction(self.name, text, leaks + theirs)

    def _finding(self, m: PiiMatch, reason: str, replacement: str | None) -> Finding:
        return Finding(
            name=self.name,
            reason=reason,
            kind=m.kind.lower(),
            span=(m.start, m.end),
            replacement=replacement,
            layer="validated",
        )
