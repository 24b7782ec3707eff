"""The output file of a batch, and what it holds once the batch ends."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierflow.errors import UserError
from tierflow.runner.batch.items import BatchItem, Result, result_key

#: Statuses that count as done: what ``tierflow ask`` would exit 0 for, but a question
#: waiting on a human approval is not done.
OK_STATUSES = frozenset({"completed", "blocked"})


@dataclass(kw_only=True)
class BatchSummary:
    """What the output holds once the batch ends: ``total`` input lines, ``skipped``
    (already in the output when it started), and what is not done by kind (``error``,
    ``degraded``, ``awaiting_approval``, ``stopped``, ``not run``)."""

    total: int
    skipped: int = 0
    not_done: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.not_done.values())

    def count(self, results: Iterable[Result]) -> None:
        seen = 0
        for result in results:
            seen += 1
            if result["status"] == "failed":
                self.not_done["error"] += 1
            elif result["status"] not in OK_STATUSES:
                self.not_done[str(result["status"])] += 1
            elif result.get("degraded"):
                self.not_done["degraded"] += 1
        if seen < self.total:
            self.not_done["not run"] += self.total - seen


class ResultLog:
    """The output file: append-only with a flush per line while the batch runs (a kill
    loses nothing completed), rewritten in input order when it ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: Any = None

    def done(self) -> set[str]:
        """Keys of the lines already in the file. A torn last line (the process was
        killed mid-write) is cut off so appends start on a line of their own."""
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            with self.path.open("r+b") as f:
                f.truncate(len(data))
        keys: set[str] = set()
        for raw in data.decode("utf-8", "replace").splitlines():
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                raise UserError(
                    f"{self.path}: not a results file of tierflow batch (use another --out)"
                ) from None
            if isinstance(value, dict) and value.get("id") is not None:
                keys.add(result_key(value))
        return keys

    def __enter__(self) -> ResultLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()
        self._file = None

    def write(self, result: Result) -> None:
        line = json.dumps(result, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def reorder(self, items: Sequence[BatchItem]) -> list[Result]:
        """Rewrite the file in input order (atomically: a temporary file, then a rename);
        returns the results of ``items`` it holds."""
        order = {i.key: i.line for i in items}
        rows: list[tuple[float, int, str]] = []
        mine: list[Result] = []
        for k, raw in enumerate(self.path.read_text(encoding="utf-8").splitlines()):
            value = json.loads(raw)
            key = result_key(value)
            rows.append((order.get(key, float("inf")), k, raw))
            if key in order:
                mine.append(value)
        rows.sort()
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(raw + "\n" for _, _, raw in rows)
        os.replace(tmp, self.path)
        return mine
