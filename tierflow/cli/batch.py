"""What ``tierflow batch`` shows while it runs: the progress bar and the bad-line notes.
The batch itself is :mod:`tierflow.runner.batch`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tierflow.runner.batch.items import BatchOptions, Result, read_batch
from tierflow.runner.batch.log import BatchSummary
from tierflow.runner.batch.run import run_batch


@contextmanager
def _bar(err: Console, show: bool) -> Iterator[Any]:
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as progress:
        yield progress


def run(file: Path, out: Path, options: BatchOptions, *, err: Console, quiet: bool) -> BatchSummary:
    """Run the batch with a progress bar on ``err`` (none when quiet or not a terminal)."""
    items = read_batch(file)
    with _bar(err, not quiet and err.is_terminal) as progress:
        task: Any = None

        def on_start(pending: int) -> None:
            nonlocal task
            if progress is not None:
                task = progress.add_task("batch", total=pending)

        def on_result(result: Result) -> None:
            if result["status"] == "failed" and not quiet:
                err.print(
                    f"[red]failed:[/] {escape(str(result['error']))}",
                    highlight=False,
                    soft_wrap=True,
                )
            if progress is not None:
                progress.advance(task)

        return run_batch(items, out, options, on_start=on_start, on_result=on_result)


def summary_line(summary: BatchSummary, out: Path) -> str | None:
    """``12 of 60 failed (10 error, 2 degraded); see results.jsonl``, or None when every
    line is done."""
    if summary.failed == 0:
        return None
    detail = ", ".join(f"{n} {kind}" for kind, n in sorted(summary.not_done.items()))
    return f"{summary.failed} of {summary.total} failed ({detail}); see {out}"
