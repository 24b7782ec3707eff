"""Thread control for the runner: where a thread stands before a run, and what to refuse.

A thread is in one of four states before a run:
``new`` (no checkpoint), ``idle`` (its last run finished), ``paused`` (waiting for a
human to approve a tool call) or ``unfinished`` (its last run was cut off: the process was
killed, or a budget stopped it). An unfinished run is continued from its checkpoint with
``astream(None, config)``: LangGraph re-runs only the steps that had not completed, so a
tool call that completed (and was checkpointed) is not repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from langgraph.types import Command

from tierflow.errors import UserError

INTERRUPT = "__interrupt__"  # LangGraph's channel for interrupts (stream and checkpoint)

ThreadStatus = Literal["new", "idle", "paused", "unfinished"]


@dataclass(frozen=True)
class ThreadState:
    """Where a thread stands; ``pending`` names the nodes an unfinished run still owes."""

    status: ThreadStatus
    pending: tuple[str, ...] = ()


async def read_thread(app: Any, config: Any, saved: Any) -> ThreadState:
    """Classify the thread from its saved checkpoint (``saver.aget_tuple``)."""
    if saved is None:
        return ThreadState("new")
    if any(w[1] == INTERRUPT for w in saved.pending_writes or []):
        return ThreadState("paused")
    # Only the checkpoint's next tasks tell a finished run from one that was cut off;
    # aget_state computes them (~1 ms on SQLite, measured), and only for existing threads.
    snapshot = await app.aget_state(config)
    if snapshot.next:
        return ThreadState("unfinished", tuple(snapshot.next))
    return ThreadState("idle")


def check_thread(thread_id: str, state: ThreadState, inputs: Any) -> None:
    """Refuse a run that does not fit the thread's state, with what to do instead.

    ``inputs`` says what the caller wants: a new question (a dict), an approval decision
    (a ``Command``) or to continue an unfinished run (``None``). A new question on a thread
    whose last run is unfinished is refused rather than run over it: starting a new run
    would drop the unfinished steps (LangGraph discards them), which can leave a tool call
    without its result in the conversation. The user continues it first.
    """
    how = f"continue it first with: tierflow ask --thread {thread_id}"
    if state.status == "paused" and not isinstance(inputs, Command):
        raise UserError(
            f"thread '{thread_id}' is waiting for approval of a tool call; "
            "continue it with --approve or --reject"
        )
    if isinstance(inputs, Command):
        if state.status != "paused":
            raise UserError(f"thread '{thread_id}' has no run waiting for approval")
    elif inputs is None:
        if state.status == "new":
            raise UserError(f"no conversation with thread id '{thread_id}'")
        if state.status == "idle":
            raise UserError(
                f"thread '{thread_id}' has no unfinished run; ask a question to continue it"
            )
    elif state.status == "unfinished":
        raise UserError(
            f"thread '{thread_id}' has an unfinished run (stopped or interrupted before "
            f"{', '.join(state.pending)}); {how}"
        )
