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
from pydantic import BaseModel

from tierflow.agents.reading import NOT_FOUND, on_topic, pick_sentence
from tierflow.agents.workflow import WorkflowRun
from tierflow.guardrails.builtin.output import numbers_in, readings
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


def _last_value(printed: str) -> str:
    """The last number printed (as written), else the last line: what two programs that
    answer the same question must agree on."""
    found = numbers_in(printed)
    if found:
        return found[-1][0]
    lines = printed.strip().splitlines()
    return lines[-1].strip() if lines else ""


def _same_result(a: str, b: str) -> bool:
    x, y = _last_value(a), _last_value(b)
    return x == y or bool(readings(x) & readings(y))


_SQL_CHECK_SYSTEM = "You are a careful analyst. You check which table holds each column."


def _first_cell(output: dict[str, Any]) -> str:
    rows = output.get("rows") or [[None]]
    return str(rows[0][0] if rows[0] else "")


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
    #: write a second statement independently and mark the answer unverified when its
    #: first value differs (measured: the 0.5B model's wrong SQL often runs cleanly)
    cross_check: bool = True

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
        if self.cross_check and not _empty(outcome.output):
            first = self._history_free_prompt(tables, run.question, dialect)
            second_sql = await self._write(run, first, _SQL_CHECK_SYSTEM, [])
            second = await run.tool(self.query_tool, {"query": second_sql})
            if second.ok and not _empty(second.output):
                a, b = _first_cell(outcome.output), _first_cell(second.output)
                if not _same_result(a, b):
                    run.unverified = f"a second query returned {b[:60]}, not {a[:60]}"
        return f"Result: {_rows_text(outcome.output)}{shown}"

    def _history_free_prompt(self, tables: str, question: str, dialect: str) -> str:
        return (
            f"{tables}\n\nQuestion: {question}\nWrite ONE {dialect} SELECT statement that "
            "answers the question, joining tables through their REFERENCES where a value "
            "lives in another table. Reply with the statement in a ```sql block."
        )

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


_CHECK_SYSTEM = (
    "You are a careful Python programmer. Compute the answer step by step from first "
    "principles, without shortcuts, and print only the final result."
)


@dataclass(frozen=True)
class CodeWorkflow:
    """Python in a fenced block -> run in the sandbox -> code that fails or prints
    nothing goes back with the error (at most ``max_repairs``) -> the printed output.

    With ``cross_check``, a second program is written independently (another prompt, no
    sight of the first) and run once; when both print and their results differ, the
    answer is marked unverified. Measured on ``bench answers``: the 0.5B model's wrong
    programs run cleanly (7 * 60 * 60 for the seconds of a week), so running is no proof."""

    tool: str = "run_python"
    max_repairs: int = 2
    cross_check: bool = True

    async def __call__(self, run: WorkflowRun) -> str:
        code, printed, why = await self._program(
            run, "You are a Python programmer. Your programs print their result.", self.max_repairs
        )
        shown = f"\n\n```python\n{code}\n```"
        if not printed:
            run.failed = True
            return f"I could not compute this: the code failed ({why[:300]}).{shown}"
        if self.cross_check:
            _, second, _ = await self._program(run, _CHECK_SYSTEM, 0)
            if second and not _same_result(second, printed):
                run.unverified = (
                    f"a second program printed {_last_value(second)[:60]}, "
                    f"not {_last_value(printed)[:60]}"
                )
        return f"Output: {printed[:1500]}{shown}"

    async def _program(self, run: WorkflowRun, system: str, repairs: int) -> tuple[str, str, str]:
        """(code, printed output or "" on failure, why it failed)."""
        prompt = (
            f"Task: {run.question}\nWrite a short Python 3 program that computes the answer "
            "and prints it with print(). Reply with the program in a ```python block."
        )
        history: list[Any] = []
        code, why = "", ""
        for attempt in range(repairs + 1):
            text = await run.ask(prompt, system=system, history=history)
            code = with_print(fenced_block(str(text), ("python", "py", "python3")))
            outcome = await run.tool(self.tool, {"code": code})
            out = outcome.output if outcome.ok and isinstance(outcome.output, dict) else {}
            printed = str(out.get("stdout", "")).strip()
            status = out.get("exit_status", 1)
            if outcome.ok and status == 0 and printed:
                return code, printed, ""
            if not outcome.ok:
                why = _error(outcome)
            elif status != 0:
                why = str(out.get("stderr", "")).strip()[-600:] or f"exit status {status}"
            else:
                why = "it printed nothing; print the result with print()"
            if attempt < repairs:
                history += [HumanMessage(prompt), AIMessage(f"```python\n{code}\n```")]
                prompt = f"The program failed: {why}\nReply with the corrected program."
        return code, "", why


# ---------------------------------------------------------------------------- librarian


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
        if quoted is not None and not on_topic(quoted, query, half=False):
            # measured (bench answers, docs): the wrong picks that remained shared at most
            # one content word with the query (a VAT sentence for a washing temperature)
            quoted = None
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
        if quoted is not None and not on_topic(quoted, query):
            # the documents were searched in the web's place: an off-topic quote (card
            # payments for "the euro exchange rate") would read as the answer
            quoted = None
        if quoted is None:
            return f"{unavailable} The company documents do not answer this either."
        return f"{unavailable} The company documents say: {quoted}"
