"""Reading an answer out of passages: the candidate sentences and the model's choice.

Used by the librarian and the researcher (:mod:`.specialists`). The model only chooses,
under a JSON schema (a number), among sentences cut from the retrieved passages, so the
quote it returns is always the documents' own text.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, create_model

from tierflow.agents.workflow import WorkflowRun
from tierflow.guardrails.builtin.output import content_words

__all__ = ["NOT_FOUND", "asks_quantity", "on_topic", "pick_sentence", "sentences"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9€\"(])")
_BLOCK_START = re.compile(r"^\s*(?:[-*+] |\d+\. |\||#)")
NOT_FOUND = "This is not in the documents."
_WORD = re.compile(r"[^\W\d_]{3,}")


# Questions asking for a quantity, in the four languages: their answer holds a number.
_QUANTITY = re.compile(
    r"how (?:many|much|long|often)|what (?:amount|temperature|percent)|up to what|at what|"
    r"within how|combien|quel(?:le)? (?:montant|température|pourcentage)|à quelle|"
    r"wie (?:viele?|lange|hoch|oft)|welche[rn]? (?:betrag|temperatur)|nach wie|bei wie|"
    r"cu[aá]nt[oa]s?|qu[eé] (?:cantidad|temperatura|porcentaje)",
    re.IGNORECASE,
)
_NUMBER_WORDS = re.compile(
    r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|once|twice|"
    r"hundred|thousand)\b",
    re.IGNORECASE,
)


def _lines(text: str) -> list[str]:
    """Logical lines: wrapped paragraph lines joined, list items, table rows and
    headings kept apart."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            out.append("")
        elif (
            out and out[-1] and not _BLOCK_START.match(line) and not out[-1].startswith(("|", "#"))
        ):
            out[-1] += " " + line
        else:
            out.append(line)
    return [x for x in out if x]


def sentences(
    passages: list[dict[str, Any]], query: str = "", limit: int = 8, *, numbers: bool = False
) -> list[tuple[str, str]]:
    """(sentence, citation) from the passages: the ``limit`` sharing most words with
    ``query``, best first (ties in retrieval order: the 0.5B model favours the first
    candidates it is shown). Headings and table rules are dropped; a table row is kept
    whole, after its table's header ("Zone | Countries | Standard cost: 2 | Germany, ...
    | €6.95"), which is not a candidate (a row ranked with its header's words still
    beats its table's other rows on its own cells: "Germany")."""
    out: list[tuple[str, str]] = []
    for p in passages:
        cite = f"[{p.get('source')}#{p.get('position')}]"
        header = ""
        for line in _lines(str(p.get("text", ""))):
            line = " ".join(line.replace("**", "").split())
            if line.startswith("|"):
                if set(line) <= set("|-: "):
                    continue
                if not header:
                    header = line.strip("| ")
                    continue
                out.append((f"{header}: {line.strip('| ')}", cite))
                continue
            header = ""
            if line.startswith("#"):
                continue
            for s in _SENTENCE_END.split(line.lstrip("-*+ ")):
                if len(s) >= 20:
                    out.append((s, cite))
    if numbers:  # only sentences stating a number (the question asks for one)
        out = [x for x in out if _NUMBER_WORDS.search(x[0])]
    words = {w[:5] for w in _WORD.findall(query.lower())}
    if words:
        out.sort(key=lambda x: -len(words & {w[:5] for w in _WORD.findall(x[0].lower())}))
    return out[:limit]


def asks_quantity(question: str) -> bool:
    """Whether ``question`` asks for a number (how many, combien, wie viele, cuántos...)."""
    return bool(_QUANTITY.search(question))


def _choice(n: int) -> type[BaseModel]:
    return create_model("Choice", sentence=(Literal[tuple(range(n + 1))], ...))  # type: ignore[arg-type]


async def pick_sentence(
    run: WorkflowRun, passages: list[dict[str, Any]], query: str = ""
) -> str | None:
    """The sentence (with its citation) the model says answers the question, or None."""
    # A sentence without a number cannot answer "how many": offered them, the 0.5B model
    # picked table headers and titles for such questions.
    found = sentences(passages, query or run.question, numbers=asks_quantity(run.question))
    if not found:
        return None
    listed = "\n".join(f"{i}. {s}" for i, (s, _) in enumerate(found, start=1))
    choice = await run.ask(
        f"Question: {run.question}\n\nSentences from the company documents:\n{listed}\n\n"
        "Which sentence answers the question? Reply with its number, or 0 if none does.",
        system="You find the sentence that answers a question.",
        output_type=_choice(len(found)),
    )
    index = int(choice.sentence)
    if index == 0:
        return None
    sentence, cite = found[index - 1]
    return f'"{sentence}" {cite}'


def on_topic(quote: str, query: str, shared: int = 2, *, half: bool = True) -> bool:
    """Whether ``quote`` shares at least ``shared`` of ``query``'s content words and, with
    ``half``, at least half of them. Measured on the benchmark's offline web questions:
    an exchange-rate sentence shares 2 of 5 words with "latest news euro exchange rate"
    and does not answer it; the return-window sentence shares 3 of 5 with its question."""
    wanted = content_words(query)
    need = max(shared, (len(wanted) + 1) // 2) if half else shared
    return len(content_words(quote) & wanted) >= need
