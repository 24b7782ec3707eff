"""The README's composition example (examples/triage.py: three nodes and a custom tool)
runs, with scripted tiers standing in for models."""

from __future__ import annotations

import runpy
from pathlib import Path

from langchain_core.messages import AIMessage

from tierflow import Runner, TierflowSettings
from tierflow.models.tiers import Tier
from tierflow.testing import ScriptedBackend, ScriptedChatModel, scripted_tier

EXAMPLE = Path(__file__).parents[1] / "examples" / "triage.py"


async def test_triage_example_keeps_billing_local_and_uses_its_tool(
    settings: TierflowSettings,
) -> None:
    triage_graph = runpy.run_path(str(EXAMPLE))["triage_graph"]
    hosted = ScriptedChatModel(default="hosted answer")
    lookup = AIMessage(
        content="",
        tool_calls=[
            {
                "name": "invoice_status",
                "args": {"invoice_id": "INV-1042"},
                "id": "c1",
                "type": "tool_call",
            }
        ],
    )
    local = ScriptedChatModel().enqueue(lookup, "INV-1042 was paid twice; a refund is pending.")
    reasoning = Tier(
        name="reasoning",
        backends=[
            ScriptedBackend(hosted, id="mistral:mistral-large-latest", local=False),
            ScriptedBackend(local, id="local"),
        ],
    )
    routing = ScriptedChatModel().enqueue({"route": "billing"}, {"route": "tech"})
    runner = Runner(
        settings,
        tiers={"router": scripted_tier("router", routing), "reasoning": reasoning},
        graphs={"triage": triage_graph},
    )

    record = await runner.ask("Invoice INV-1042 was charged twice", graph="triage")

    assert record.route == "billing"
    assert record.answer == "INV-1042 was paid twice; a refund is pending."
    assert hosted.calls == []  # residency: the billing agent is local_only
    assert record.steps[1].attempts[0].reason == "residency: caller is local_only"
    call = record.steps[1].tool_calls[0]
    assert (call.name, call.ok) == ("invoice_status", True)
    assert '"status": "paid twice"' in str(local.calls[1].messages[-1].content)

    record = await runner.ask("The app crashes on start", graph="triage")
    assert (record.route, record.answer) == ("tech", "hosted answer")
