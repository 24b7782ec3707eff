"""Ready-made workflows for the default graph's specialists (see :mod:`.workflow`).

Measured on the embedded 0.5B model (issue 13's prototype, then ``tierflow bench
answers``): long strings such as code and SQL come out far better as a fenced block in
free text than as a JSON-schema string (the model emits "python3" as the code), so those
steps ask for a fenced block; choices (which sentence answers) are constrained by a
JSON schema. The answers are composed from what the tools returned (the rows, the
printed output, the quoted sentence with its citation), so their numbers are grounded.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage
from pydantic import BaseModel, create_model

from tierflow.agents.workflow import WorkflowRun
from tierflow.tools.tool import ToolOutcome

__all__ = ["CodeWorkflow", "DocsWorkflow", "SqlWorkflow", "WebWorkflow", "fenced_block"]

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def fenced_block(text: str, languages: tuple[str, ...]) -> str:
    """The first fenced block in one of ``languages`` (or untagged), else the text."""
    blocks = _FENCE.findall(text)
    for lang, body in blocks:
        if lang.lower() in languages or not lang:
            return str(body).strip()
    return str(blocks[0][1]).strip() if blocks else text.strip().strip("`").strip()


def _error(outcome: ToolOutcome) -> str:
    return outcome.error.message if outcome.error is not None else "failed"


# ---------------------------------------------------------------------------- analyst


def describe_schema(schema: dict[str, Any]) -> str:
    """The tables as ``CREATE TABLE`` statements with ``REFERENCES`` for foreign keys and
    a comment listing the values of small text columns (one example of the others).

    Measured on the embedded 0.5B coder model: with this DDL form it joins orders to
    customers to filter on ``country = 'FR'``; with a one-line-per-table listing and a
    join example it filtered ``orders.country``, a column that does not exist."""
    out = []
    for table in schema.get("tables", []):
        refs = dict(fk.split(" -> ", 1) for fk in table.get("foreign_keys", []))
        cols = []
        for c in table.get("columns", []):
            line = f"  {c['name']} {c['type']}"
            if c["name"] in refs:
                ref_table, _, ref_col = refs[c["name"]].partition(".")
                line += f" REFERENCES {ref_table}({ref_col})"
            cols.append((line, _values_comment(c.get("samples") or [])))
        body = "\n".join(
            f"{line},{note}" if i < len(cols) - 1 else f"{line}{note}"
            for i, (line, note) in enumerate(cols)
        )
        out.append(f"CREATE TABLE {table['name']} (\n{body}\n);")
    return "\n".join(out)


def _values_comment(samples: list[Any]) -> str:
    if not samples:
        return ""
    if len(samples) > 3:  # a small set: every value (so "France" maps to 'FR')
        return " -- values: " + ", ".join(f"'{v}'" for v in samples)
    return f" -- e.g. '{samples[0]}'"


def column_hint(error: str, schema: dict[str, Any]) -> str:
    """For "no such column: X", which tables have a column X (so the model can join)."""
    if re.search(r"no such function: (YEAR|MONTH|DAY)", error, re.IGNORECASE):
        return " In SQLite use strftime('%Y', column) = '2025' (or '%m' for the month)."
    match = re.search(r"no such column: (?:\w+\.)?(\w+)", error)
    if not match:
        return ""
    name = match.group(1)
    owners = [
        t["name"]
        for t in schema.get("tables", [])
        if any(c["name"] == name for c in t.get("columns", []))
    ]
    if not owners:
        return f" There is no column {name}."
    return f" {name} is a column of {', '.join(owners)}: JOIN that table."


def _rows_text(output: dict[str, Any]) -> str:
    columns, rows = output.get("columns", []), output.get("rows", [])
    if len(rows) == 1 and len(columns) == 1:
        return f"**{rows[0][0]}**"
    head = "| " + " | ".join(map(str, columns)) + " |\n|" + " --- |" * len(columns)
    body = "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows[:20])
    more = f"\n({output.get('row_count')} rows, first 20 shown)" if len(rows) > 20 else ""
    return f"{head}\n{body}{more}"


def _empty(output: Any) -> bool:
    rows = output.get("rows") if isinstance(output, dict) else None
    return not rows or all(v is None for v in rows[0])


@dataclass(frozen=True)
class SqlWorkflow:
    """Schema with sample values -> one SQL statement -> run -> repair from the error (at
    most ``max_repairs``) -> the answer from the rows, with the SQL shown."""

    schema_tool: str = "sql_schema"
    query_tool: str = "sql_query"
    max_repairs: int = 2
    #: how the model writes its SQL: "fenced" (a ```sql block) or "json" ({"sql": ...})
    form: Literal["fenced", "json"] = "fenced"

    async def __call__(self, run: WorkflowRun) -> str:
        schema = await run.tool(self.schema_tool, {})
        if not schema.ok:
            run.failed = True
            return f"I could not read the database schema: {_error(schema)}."
        tables = describe_schema(schema.output)
        dialect = schema.output.get("dialect", "SQL")
        prompt = (
            f"{tables}\n\nQuestion: {run.question}\n"
            f"Write ONE {dialect} SELECT statement that answers the question. Use the stored "
            "values listed in the comments (e.g. country codes). "
            + (
                "Reply with the statement in a ```sql block."
                if self.form == "fenced"
                else 'Reply with JSON {"sql": "<the statement>"}.'
            )
        )
        system = f"You write {dialect} queries for a read-only database."
        history: list[Any] = []
        sql, outcome = "", None
        for attempt in range(self.max_repairs + 1):
            sql = await self._write(run, prompt, system, history)
            outcome = await run.tool(self.query_tool, {"query": sql})
            if outcome.ok and not _empty(outcome.output):
                break
            why = (
                _error(outcome) + column_hint(_error(outcome), schema.output)
                if not outcome.ok
                else "it returned no rows (or NULL): check the values against the samples"
            )
            if attempt < self.max_repairs:
                history += [HumanMessage(prompt), AIMessage(f"```sql\n{sql}\n```")]
                prompt = f"The statement failed: {why}\nWrite a corrected statement."
        assert outcome is not None
        shown = f"\n\n```sql\n{sql}\n```"
        if not outcome.ok:
            run.failed = True
            return f"I could not answer: the query failed ({_error(outcome)}).{shown}"
        return f"Result: {_rows_text(outcome.output)}{shown}"

    async def _write(self, run: WorkflowRun, prompt: str, system: str, history: list[Any]) -> str:
        if self.form == "json":
            reply = await run.ask(prompt, system=system, history=history, output_type=_Sql)
            return str(reply.sql).strip().rstrip(";")
        text = await run.ask(prompt, system=system, history=history)
        return fenced_block(str(text), ("sql", "sqlite")).rstrip(";").strip()


class _Sql(BaseModel):
    sql: str


# ---------------------------------------------------------------------------- coder


def with_print(code: str) -> str:
    """``code`` printing its last expression when it prints nothing (as a REPL would)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    prints = any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        for n in ast.walk(tree)
    )
    if prints or not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return code
    last = tree.body[-1]
    lines = code.splitlines()
    start, end = last.lineno - 1, (last.end_lineno or last.lineno)
    expr = "\n".join(lines[start:end])
    return "\n".join([*lines[:start], f"print({expr.strip()})", *lines[end:]])


@dataclass(frozen=True)
class CodeWorkflow:
    """Python in a fenced block -> run in the sandbox -> code that fails or prints
    nothing goes back with the error (at most ``max_repairs``) -> the printed output."""

    tool: str = "run_python"
    max_repairs: int = 2

    async def __call__(self, run: WorkflowRun) -> str:
        prompt = (
            f"Task: {run.question}\nWrite a short Python 3 program that computes the answer "
            "and prints it with print(). Reply with the program in a ```python block."
        )
        system = "You are a Python programmer. Your programs print their result."
        history: list[Any] = []
        code, printed, why = "", "", ""
        for attempt in range(self.max_repairs + 1):
            text = await run.ask(prompt, system=system, history=history)
            code = with_print(fenced_block(str(text), ("python", "py", "python3")))
            outcome = await run.tool(self.tool, {"code": code})
            out = outcome.output if outcome.ok and isinstance(outcome.output, dict) else {}
            printed = str(out.get("stdout", "")).strip()
            status = out.get("exit_status", 1)
            if outcome.ok and status == 0 and printed:
                break
            if not outcome.ok:
                why = _error(outcome)
            elif status != 0:
                why = str(out.get("stderr", "")).strip()[-600:] or f"exit status {status}"
            else:
                why = "it printed nothing; print the result with print()"
            printed = ""
            if attempt < self.max_repairs:
                history += [HumanMessage(prompt), AIMessage(f"```python\n{code}\n```")]
                prompt = f"The program failed: {why}\nReply with the corrected program."
        shown = f"\n\n```python\n{code}\n```"
        if not printed:
            run.failed = True
            return f"I could not compute this: the code failed ({why[:300]}).{shown}"
        return f"Output: {printed[:1500]}{shown}"


# ---------------------------------------------------------------------------- librarian

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9€\"(])")
_BLOCK_START = re.compile(r"^\s*(?:[-*+] |\d+\. |\||#)")
NOT_FOUND = "This is not in the documents."
_WORD = re.compile(r"[^\W\d_]{3,}")


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
    passages: list[dict[str, Any]], query: str = "", limit: int = 8
) -> list[tuple[str, str]]:
    """(sentence, citation) from the passages: the ``limit`` sharing most words with
    ``query``, in passage order. Headings and table rules are dropped; a table row is
    kept whole, after its table's header ("Zone | Countries | Standard cost: 2 | Germany,
    ... | €6.95"), which is not a candidate."""
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
    words = {w[:5] for w in _WORD.findall(query.lower())}
    if words and len(out) > limit:
        ranked = sorted(
            range(len(out)),
            key=lambda i: -len(words & {w[:5] for w in _WORD.findall(out[i][0].lower())}),
        )
        keep = set(ranked[:limit])
        out = [x for i, x in enumerate(out) if i in keep]
    return out[:limit]


def _choice(n: int) -> type[BaseModel]:
    return create_model("Choice", sentence=(Literal[tuple(range(n + 1))], ...))  # type: ignore[arg-type]


async def pick_sentence(
    run: WorkflowRun, passages: list[dict[str, Any]], query: str = ""
) -> str | None:
    """The sentence (with its citation) the model says answers the question, or None."""
    found = sentences(passages, query or run.question)
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


async def _english(run: WorkflowRun) -> str:
    """The question as an English search query (the document index is English)."""
    text = await run.ask(
        f"Translate into English, as a short search query (no answer, no comment):\n{run.question}",
        system="You translate questions into short English search queries.",
    )
    line = next((x.strip() for x in str(text).splitlines() if x.strip()), "")
    return line.strip('"').strip() or run.question


def _passages(outcome: ToolOutcome) -> list[dict[str, Any]]:
    out = outcome.output if outcome.ok and isinstance(outcome.output, dict) else {}
    return [p for p in out.get("passages") or [] if isinstance(p, dict)]


@dataclass(frozen=True)
class DocsWorkflow:
    """Retrieve (with an English query) -> the model picks the answering sentence -> the
    quoted sentence with its citation, or "not in the documents"."""

    tool: str = "retrieve"
    k: int = 3

    async def __call__(self, run: WorkflowRun) -> str:
        query = await _english(run)
        outcome = await run.tool(self.tool, {"query": query, "k": self.k})
        if not outcome.ok:
            run.failed = True
            return f"I could not search the documents: {_error(outcome)}."
        quoted = await pick_sentence(run, _passages(outcome), query)
        return quoted if quoted is not None else NOT_FOUND


@dataclass(frozen=True)
class WebWorkflow:
    """Search the web; offline (or answered by the documents instead), say the web is
    unavailable and answer from the documents when they hold the answer."""

    tool: str = "web_search"

    async def __call__(self, run: WorkflowRun) -> str:
        query = await _english(run)
        outcome = await run.tool(self.tool, {"query": query})
        if outcome.ok and outcome.answered_by is None:
            results = (outcome.output or {}).get("results", [])
            if not results:
                return "The web search found nothing for this."
            passages = [
                {"text": r.get("snippet", ""), "source": r.get("url"), "position": 1}
                for r in results
                if isinstance(r, dict)
            ]
            quoted = await pick_sentence(run, passages, query)
            return quoted or "The web results do not answer this."
        unavailable = "The web is unavailable (offline), so I could not search it."
        quoted = await pick_sentence(run, _passages(outcome), query)
        if quoted is None:
            return f"{unavailable} The company documents do not answer this either."
        return f"{unavailable} The company documents say: {quoted}"
