"""Ground truths of ``tierflow bench answers``, computed at bench time (never typed).

Data questions: the SQL runs on the demo shop database and a plain-Python expression
recomputes it over the same rows; the two must agree. Document questions: the quoted
sentence must occur in its file (the PDF read with pypdf) and contain the value. Code
questions: two expressions compute the value; they must agree. A disagreement is a bug of
the question set, raised as one line before any model runs.
"""

from __future__ import annotations

import math
import re
import sqlite3
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from tierflow.errors import UserError
from tierflow.guardrails.builtin.output import numbers_in

ROUTES = ("data", "docs", "code", "web")
RIGHT_TOOLS = {
    "data": {"sql_query"},
    "docs": {"retrieve"},
    "code": {"run_python"},
    "web": {"web_search", "retrieve"},
}


def _numbers(text: str) -> list[set[Decimal]]:
    return [values for _, values in numbers_in(text)]


@dataclass
class Question:
    id: str
    lang: str
    route: str
    text: str
    #: what a right answer states: a number (Decimal) or a word
    value: Decimal | str | None
    words: list[str] = field(default_factory=list)
    reject: list[Decimal | str] = field(default_factory=list)
    tolerance: Decimal = Decimal(0)
    unavailable: bool = False  # offline web: the right answer says the web is unavailable
    routes: set[str] = field(default_factory=set)  # routes that count as right
    evidence: str = ""  # the SQL, the quote with its file, or the expressions


def _as_value(v: Any) -> Decimal | str:
    if isinstance(v, bool):
        raise UserError(f"answers: a truth is a boolean ({v})")
    if isinstance(v, int | float):
        return Decimal(str(v))
    s = str(v)
    try:
        return Decimal(s)
    except InvalidOperation:
        return s


def _agree(a: Decimal | str, b: Decimal | str, tolerance: Decimal) -> bool:
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return abs(a - b) <= tolerance
    return str(a).lower() == str(b).lower()


class _Shop:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        self.conn.row_factory = sqlite3.Row
        tables = {
            t: [dict(r) for r in self.conn.execute(f"SELECT * FROM {t}")]
            for t in ("customers", "products", "orders", "order_items")
        }
        self.env: dict[str, Any] = {
            "customers": tables["customers"],
            "products": tables["products"],
            "orders": tables["orders"],
            "items": tables["order_items"],
            "cust": {c["id"]: c for c in tables["customers"]},
            "prod": {p["id"]: p for p in tables["products"]},
            "order": {o["id"]: o for o in tables["orders"]},
        }

    def sql(self, query: str) -> Decimal | str:
        row = self.conn.execute(query).fetchone()
        if row is None or row[0] is None:
            raise UserError(f"answers: no value from {query!r}")
        return _as_value(row[0])


def _primes_below(n: int) -> list[int]:
    sieve = [True] * n
    sieve[:2] = [False, False]
    for i in range(2, math.isqrt(n) + 1):
        if sieve[i]:
            sieve[i * i :: i] = [False] * len(sieve[i * i :: i])
    return [i for i, p in enumerate(sieve) if p]


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


_HELPERS: dict[str, Any] = {
    "math": math,
    "Counter": Counter,
    "Decimal": Decimal,
    "date": date,
    "timedelta": timedelta,
    "fib": _fib,
    "primes_below": _primes_below,
    "digit_sum": lambda n: sum(map(int, str(n))),
}


def _py(expr: str, env: dict[str, Any]) -> Decimal | str:
    # eval of our own question file (not user input): the second, independent way of
    # computing a truth, written as the plain-Python one-liner a reviewer can read.
    builtins = {n: __builtins__[n] if isinstance(__builtins__, dict) else getattr(__builtins__, n)
                for n in ("len", "sum", "max", "min", "next", "round", "range", "int", "str",
                          "all", "any", "sorted", "set", "abs", "pow")}  # fmt: skip
    return _as_value(eval(expr, {"__builtins__": builtins, **_HELPERS, **env}))


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("**", "")).strip()


def _doc_text(docs: Path, name: str) -> str:
    path = docs / name
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        return _flat(" ".join(p.extract_text() or "" for p in PdfReader(path).pages))
    return _flat(path.read_text(encoding="utf-8"))


def _doc_truth(q: dict[str, Any], docs: Path) -> tuple[Decimal | str, str]:
    quote = _flat(q["quote"])
    if quote not in _doc_text(docs, q["file"]):
        raise UserError(f"answers: {q['id']}: the quote is not in {q['file']}")
    value = _as_value(q["value"])
    found = (
        any(value in r for r in _numbers(quote))
        if isinstance(value, Decimal)
        else value.lower() in quote.lower()
    )
    if not found:
        raise UserError(f"answers: {q['id']}: {q['value']!r} is not in its quote")
    return value, f'{q["file"]}: "{quote}"'


def load_questions(shop_db: Path, docs: Path, path: Path | None = None) -> list[Question]:
    """The question set with every truth computed (and cross-checked)."""
    source = path or Path(str(resources.files("tierflow.bench") / "data/answers/questions.toml"))
    raw = tomllib.loads(source.read_text(encoding="utf-8"))["questions"]
    shop = _Shop(shop_db)
    out: list[Question] = []
    for q in raw:
        tol = Decimal(str(q.get("tolerance", 0)))
        reject: list[Decimal | str] = [_as_value(r) for r in q.get("reject", [])]
        unavailable = q.get("expect") == "unavailable"
        value: Decimal | str | None = None
        if "sql" in q:
            value, second = shop.sql(q["sql"]), _py(q["py"], shop.env)
            if not _agree(value, second, tol):
                raise UserError(f"answers: {q['id']}: SQL says {value}, Python says {second}")
            reject += [shop.sql(r) for r in q.get("reject_sql", [])]
            evidence = q["sql"]
        elif "quote" in q:
            value, evidence = _doc_truth(q, docs)
        elif "py" in q:
            value, second = _py(q["py"], {}), _py(q["py2"], {})
            if not _agree(value, second, tol):
                raise UserError(
                    f"answers: {q['id']}: {q['py']} = {value} but {q['py2']} = {second}"
                )
            reject += [_py(r, {}) for r in q.get("reject_py", [])]
            evidence = q["py"]
        elif unavailable:
            evidence = "offline: no web"
        else:
            raise UserError(f"answers: {q['id']}: no way to compute its truth")
        if value is not None and any(_agree(value, r, tol) for r in reject):
            raise UserError(f"answers: {q['id']}: a rejected reading equals the truth")
        routes = {q["route"]} | ({"docs"} if q["route"] == "web" and "quote" in q else set())
        out.append(
            Question(
                id=q["id"],
                lang=q["lang"],
                route=q["route"],
                text=q["text"],
                value=value,
                words=list(q.get("words", [])),
                reject=reject,
                tolerance=tol,
                unavailable=unavailable,
                routes=routes,
                evidence=evidence,
            )
        )
    return out


_UNAVAILABLE = re.compile(
    r"unavailable|not available|offline|no (?:web|internet) access|cannot (?:search|access)|"
    r"indisponible|nicht verfügbar|no (?:está )?disponible",
    re.IGNORECASE,
)
_WORDS = re.compile(r"\w+")


def _states(text: str, value: Decimal | str, tol: Decimal, found: list[set[Decimal]]) -> bool:
    if isinstance(value, Decimal):
        return any(abs(v - value) <= tol for r in found for v in r)
    words = {w.lower() for w in _WORDS.findall(text)}
    return value.lower() in words or (" " in value and value.lower() in text.lower())


_CITATION = re.compile(r"\[[^\[\]\s]+#\d+\]")
_CODE = re.compile(r"```(?:sql|python|py)\s.*?```", re.DOTALL | re.IGNORECASE)


def score(q: Question, answer: str) -> bool:
    """Right when the answer states the value and no rejected reading. SQL and Python
    shown in fenced blocks are how the answer was found, not what it states."""
    answer = _CITATION.sub(" ", _CODE.sub(" ", answer))  # "[privacy-notice.md#3]" is no 3
    if q.unavailable:
        return bool(_UNAVAILABLE.search(answer)) and not _numbers(re.sub(r"\[[^\]]*\]", "", answer))
    assert q.value is not None
    found = _numbers(answer)
    if any(_states(answer, r, q.tolerance, found) for r in q.reject):
        return False
    return _states(answer, q.value, q.tolerance, found) or any(
        _states(answer, w, q.tolerance, found) for w in q.words
    )
