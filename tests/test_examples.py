"""The README's composition example runs, with scripted tiers standing in for models."""

from __future__ import annotations

import runpy
from pathlib import Path

from tierflow import Runner, TierflowSettings
from tierflow.testing import ScriptedBackend, ScriptedChatModel, scripted_tier
from tierflow.tiers import Tier

EXAMPLE = Path(__file__).parents[1] / "examples" / "triage.py"


async def test_triage_example_routes_billing_to_local_backends_only(
    settings: TierflowSettings,
) -> None:
    triage_graph = runpy.run_path(str(EXAMPLE))["triage_graph"]
    hosted = ScriptedChatModel(default="hosted answer")
    local = ScriptedChatModel(default="We will refund the duplicate charge.")
    reasoning = Tier(
        name="reasoning",
        backends=[
            ScriptedBackend(hosted, id="mistral:mistral-large-latest", local=False),
            ScriptedBackend(local, id="local"),
        ],
    )
    routing = ScriptedChatModel().enqueue({"route": "billing"}, {"route": "tech"})
    router = scripted_tier("router", routing)
    runner = Runner(
        settings, tiers={"router": router, "reasoning": reasoning}, graphs={"triage": triage_graph}
    )

    record = await runner.ask("I was charged twice this month", graph="triage")

    assert record.route == "billing"
    assert record.answer == "We will refund the duplicate charge."
    assert hosted.calls == []  # residency: the billing agent is local_only
    assert record.steps[-1].attempts[0].reason == "residency: sensitive data"

    record = await runner.ask("The app crashes on start", graph="triage")
    assert (record.route, record.answer) == ("tech", "hosted answer")
