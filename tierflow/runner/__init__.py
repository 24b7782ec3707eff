"""The runner: drives a compiled graph for one question (checkpointer, threads, run record).
Layer: runner (beside testing, never importing it); may import graphs and every layer below.

A driver: bench, cli and ui use it; nothing below it imports it.
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
