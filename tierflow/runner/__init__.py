"""The runner: drives a compiled graph for one question (checkpointer, thread
bookkeeping, the run record). A driver: it may import every layer below it.

Layer: top (with cli, server, ui, bench); nothing below imports it.
"""

from tierflow.runner.events import (
    Blocked,
    NodeFinished,
    NodeStarted,
    RunEvent,
    RunFinished,
    Token,
    ToolCallEvent,
    ToolResultEvent,
)
from tierflow.runner.record import run_record
from tierflow.runner.runner import Runner

__all__ = [
    "Blocked",
    "NodeFinished",
    "NodeStarted",
    "RunEvent",
    "RunFinished",
    "Runner",
    "Token",
    "ToolCallEvent",
    "ToolResultEvent",
    "run_record",
]
