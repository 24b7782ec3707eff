"""The runner's guardrail stages: the graph's input stage before a run, its output stage
after it (agent nodes run the tool stages; see :mod:`tierflow.guardrails.runtime`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from tierflow.guardrails.base import Action, StageResult
from tierflow.guardrails.runtime import (
    RunGuards,
    answer_after,
    retrieved_passages,
    verdict_records,
)
from tierflow.record import GuardrailVerdict, RunRecord, Usage


def _verdicts(result: StageResult) -> list[GuardrailVerdict]:
    return [GuardrailVerdict.model_validate(v) for v in verdict_records(result)]


async def input_stage(
    guards: RunGuards, inputs: dict[str, Any]
) -> tuple[dict[str, Any], RunRecord | None]:
    """The graph's input guardrails on the question, before any model call or tool.

    A block returns a refusal record and the question never enters the thread.
    """
    question = str(inputs["messages"][0].content)
    guards.user_text = question
    result = await guards.check("input", question)
    verdicts = verdict_records(result)
    if result.action is Action.BLOCK:
        refusal = RunRecord(
            answer=f"I can't help with this request: {result.reason}",
            route=None,
            trace_id="",
            thread_id="",
            status="blocked",
            degraded=False,
            steps=[],
            guardrails=_verdicts(result),
            usage=Usage(),
        )
        return inputs, refusal
    return {
        **inputs,
        "messages": [HumanMessage(result.text)],
        "input_guardrails": verdicts,
        "guardrails": None,  # a new run's list
        **guards.state_update(),
    }, None


async def guard_partial(guards: RunGuards, record: RunRecord) -> RunRecord:
    """The graph's output guardrails on a stopped run's partial answer.

    Only what the user is shown changes: the thread must stay as its checkpoint left it so
    the run can be continued (rewriting the message would also move the graph on).
    """
    result = await guards.check("output", record.answer)
    return record.model_copy(
        update={
            "answer": answer_after(result, record.answer),
            "guardrails": [*record.guardrails, *_verdicts(result)],
        }
    )


async def output_stage(
    app: Any, config: Any, guards: RunGuards, state: Mapping[str, Any], record: RunRecord
) -> RunRecord:
    """The graph's output guardrails on the final answer; a change is saved to the thread."""
    messages = state.get("messages") or []
    question_at = max(
        (i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1
    )
    if not guards.user_text and question_at >= 0:
        guards.user_text = str(messages[question_at].content)
    result = await guards.check(
        "output", record.answer, passages=retrieved_passages(messages[question_at + 1 :])
    )
    answer = answer_after(result, record.answer)
    if answer != record.answer:
        last = messages[-1]
        node = last.name if last.name in app.nodes else None
        replaced = AIMessage(content=answer, id=last.id, name=last.name)
        await app.aupdate_state(
            config,
            {"messages": [replaced], "guardrails": verdict_records(result)},
            as_node=node,
        )
    return record.model_copy(
        update={"answer": answer, "guardrails": [*record.guardrails, *_verdicts(result)]}
    )
