"""Graph state shared by tierflow graphs, and the one definition of "this run".

A thread's ``messages`` accumulate across its runs; everything else here describes the
current run and is reset when a new question starts one (the graph's input stage does
that, so a graph invoked with plain LangGraph behaves as under the ``Runner``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict  # pydantic (graph schemas) needs it before 3.12

#: A step of the run record (:class:`tierflow.record.Step`) as stored in the state: plain
#: JSON, so checkpoints stay portable and cheap to (de)serialise.
StepEntry = dict[str, Any]


class VerdictEntry(TypedDict):
    """A guardrail verdict as stored in the state (the shape of
    :class:`tierflow.record.GuardrailVerdict` and of ``ask --json``'s ``guardrails``)."""

    stage: str
    name: str
    action: str  # allow | redact | block
    reason: str | None


def merge_steps(left: list[StepEntry] | None, right: list[StepEntry] | None) -> list[StepEntry]:
    """Append a node's steps; ``None`` starts a new run's list."""
    if right is None:
        return []
    return [*(left or []), *right]


def merge_verdicts(
    left: list[VerdictEntry] | None, right: list[VerdictEntry] | None
) -> list[VerdictEntry]:
    """Append a stage's verdicts; ``None`` starts a new run's list."""
    if right is None:
        return []
    return [*(left or []), *right]


def merge_vault(
    left: Mapping[str, Mapping[str, str]] | None, right: Mapping[str, Mapping[str, str]] | None
) -> dict[str, dict[str, str]]:
    """Guardrail placeholders (``<EMAIL_1>`` -> value, by kind): only ever added to."""
    out = {k: dict(v) for k, v in (left or {}).items()}
    for kind, values in (right or {}).items():
        out.setdefault(kind, {}).update(values)
    return out


def either(left: bool | None, right: bool | None) -> bool:
    """Residency is sticky: once a thread holds sensitive data it stays sensitive."""
    return bool(left) or bool(right)


class BudgetUse(TypedDict, total=False):
    """What a run has spent so far, for its budget (``run`` names the run it belongs to)."""

    run: str
    model_calls: int
    tokens: int
    cost_usd: float


def add_budget_use(left: BudgetUse | None, right: BudgetUse | None) -> BudgetUse:
    """Nodes write what they spent; another run's figures (or ``None``) start over."""
    if right is None:
        return {}
    if not left or left.get("run") != right.get("run"):
        return dict(right)  # type: ignore[return-value]
    return {
        "run": str(right.get("run", "")),
        "model_calls": left.get("model_calls", 0) + right.get("model_calls", 0),
        "tokens": left.get("tokens", 0) + right.get("tokens", 0),
        "cost_usd": round(left.get("cost_usd", 0.0) + right.get("cost_usd", 0.0), 8),
    }


class GraphState(TypedDict, total=False):
    """Conversation messages (kept across a thread's turns) plus this run's bookkeeping."""

    messages: Annotated[list[AnyMessage], add_messages]
    route: str | None
    graph: str  # the graph this thread runs (to resume a paused run)
    #: Index in ``messages`` of the question that started this run (see run_messages).
    run_start: int
    run_id: str  # this run's id (budget accounting)
    run_started_at: float  # wall-clock start of this run (time.time(); the wall budget)
    #: Why the input stage refused this run's question (the run ended there), if it did.
    blocked: str | None
    steps: Annotated[list[StepEntry], merge_steps]
    #: Every guardrail verdict of this run, in order: input, tool stages, output.
    guardrails: Annotated[list[VerdictEntry], merge_verdicts]
    budget_used: Annotated[BudgetUse, add_budget_use]
    sensitive: Annotated[bool, either]  # residency: only local backends from now on
    guard_vault: Annotated[dict[str, dict[str, str]], merge_vault]


def question_index(messages: Sequence[BaseMessage]) -> int:
    """Index of the last message a user wrote (not a node's prompt), or -1."""
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, HumanMessage) and message.name is None:
            return i
    return -1


def run_messages(state: Mapping[str, Any]) -> list[AnyMessage]:
    """This run's messages: its question and everything after it.

    The one definition every node and stage uses. The input stage stores where the run
    starts (``run_start``); a state without it (a graph run without tierflow's stages)
    starts at the last message a user wrote.
    """
    messages: list[AnyMessage] = list(state.get("messages") or [])
    start = state.get("run_start")
    if not isinstance(start, int) or not 0 <= start < len(messages):
        start = max(question_index(messages), 0)
    return messages[start:]


def run_question(state: Mapping[str, Any]) -> str:
    """The text of the question that started this run ('' if none)."""
    for message in run_messages(state)[:1]:
        if isinstance(message, HumanMessage):
            return str(message.content)
    return ""
