"""What the runner still does with guardrails: the output stage on a stopped run's partial
answer, for display only (the graph's own stages run inside it; see
:mod:`tierflow.graphs.stages`)."""

from __future__ import annotations

from tierflow.guardrails.runtime import RunGuards, answer_after, verdict_records
from tierflow.record import GuardrailVerdict, RunRecord


async def guard_partial(guards: RunGuards, record: RunRecord) -> RunRecord:
    """The graph's output guardrails on a stopped run's partial answer.

    Only what the user is shown changes: the thread must stay as its checkpoint left it so
    the run can be continued (rewriting the message would also move the graph on).
    """
    result = await guards.check("output", record.answer)
    verdicts = [GuardrailVerdict.model_validate(v) for v in verdict_records(result)]
    return record.model_copy(
        update={
            "answer": answer_after(result, record.answer),
            "guardrails": [*record.guardrails, *verdicts],
        }
    )
