"""The input lines of a batch and the output line of each."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierflow.errors import UserError

#: One output line (``id, line, question, status, answer, route, degraded, ...``).
Result = dict[str, Any]
OnResult = Callable[[Result], None]


@dataclass(frozen=True, kw_only=True)
class BatchItem:
    """One input line: its question, or why the line is bad (``error``)."""

    line: int
    id: str | int
    question: str = ""
    graph: str | None = None
    thread_id: str | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        """What identifies the line in the output: its id, else its line number."""
        return f"line:{self.id}" if isinstance(self.id, int) else f"id:{self.id}"


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """How to run a batch (see ``tierflow batch --help``)."""

    graph: str = "default"
    concurrency: int = 4
    processes: int = 1
    full: bool = False
    config: Path | None = None
    server: str | None = None
    api_key: str | None = None


def read_batch(path: Path) -> list[BatchItem]:
    """Parse ``path`` into items; a bad line becomes an item with ``error``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({exc})") from None
    items: list[BatchItem] = []
    seen: set[str] = set()
    objects = 0
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            items.append(BatchItem(line=n, id=n, error=f"line {n}: not valid JSON ({exc.msg})"))
            continue
        if isinstance(value, dict):
            objects += 1
        item = _item(n, value)
        if item.error is None and item.key in seen:
            item = BatchItem(line=n, id=n, error=f"line {n}: duplicate id {item.id!r}")
        seen.add(item.key)
        items.append(item)
    if objects == 0:
        first = next((i.error for i in items if i.error), "it is empty")
        raise UserError(f"{path}: not JSON Lines ({first})")
    return items


def _item(n: int, value: Any) -> BatchItem:
    if not isinstance(value, dict):
        return BatchItem(line=n, id=n, error=f"line {n}: expected a JSON object")
    given = value.get("id")
    ident: str | int = n if given is None else given
    if not isinstance(ident, str | int) or isinstance(ident, bool):
        return BatchItem(line=n, id=n, error=f"line {n}: 'id' must be a string or a number")
    ident = str(ident) if given is not None else n
    question = value.get("question")
    if not isinstance(question, str) or not question.strip():
        return BatchItem(line=n, id=ident, error=f"line {n}: missing 'question' (a string)")
    for name in ("graph", "thread_id"):
        if value.get(name) is not None and not isinstance(value[name], str):
            return BatchItem(line=n, id=ident, error=f"line {n}: '{name}' must be a string")
    return BatchItem(
        line=n,
        id=ident,
        question=question,
        graph=value.get("graph"),
        thread_id=value.get("thread_id"),
    )


def failed_result(item: BatchItem, error: str) -> Result:
    return {
        "id": item.id,
        "line": item.line,
        "question": item.question,
        "status": "failed",
        "answer": None,
        "route": None,
        "degraded": False,
        "error": error,
    }


def record_result(item: BatchItem, record: dict[str, Any], full: bool) -> Result:
    """The output line of a run that produced ``record`` (a ``RunRecord`` as JSON)."""
    result: Result = {
        "id": item.id,
        "line": item.line,
        "question": item.question,
        "status": record["status"],
        "answer": record["answer"],
        "route": record["route"],
        "degraded": record["degraded"],
        "thread_id": record["thread_id"],
    }
    if full:
        result["record"] = record
    return result


def result_key(result: Result) -> str:
    """The :attr:`BatchItem.key` of an output line."""
    ident = result.get("id")
    return f"line:{ident}" if isinstance(ident, int) else f"id:{ident}"
