"""An agent's own guardrails and residency: its input guardrails run before its first
model call, and ``local_only`` pins it to local backends without calling the data
sensitive."""

from __future__ import annotations

from pathlib import Path

from langgraph.graph import START, StateGraph

from tierflow import Agent, BuildContext, Runner, add_agent
from tierflow.guardrails.base import Finding, GuardContext, Verdict, guardrail
from tierflow.settings import TierflowSettings, load_settings
from tierflow.state import GraphState
from tierflow.testing import ScriptedBackend, ScriptedChatModel, scripted_tier


@guardrail(stages=("input", "output"))
def no_payroll(text: str, ctx: GuardContext) -> Verdict:
    if "payroll" in text.lower():
        return Verdict.block("no_payroll", "payroll questions go to HR")
    return Verdict.allow("no_payroll")


@guardrail(stages=("input",))
def mask_badge(text: str, ctx: GuardContext) -> Verdict:
    at = text.find("B-1234")
    if at < 0:
        return Verdict.allow("mask_badge")
    placeholder = ctx.vault.placeholder("BADGE", "B-1234")
    finding = Finding(name="mask_badge", reason="badge", span=(at, at + 6), replacement=placeholder)
    return Verdict.redact("mask_badge", text.replace("B-1234", placeholder), [finding])


def _settings(tmp_path: Path) -> TierflowSettings:
    return load_settings(state_dir=tmp_path / "state", guardrails={"enabled": False})


def _runner(tmp_path: Path, agent: Agent, *backends: ScriptedBackend) -> Runner:
    def factory(ctx: BuildContext) -> StateGraph[GraphState]:
        graph: StateGraph[GraphState] = StateGraph(GraphState)
        graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
        return graph

    return Runner(
        _settings(tmp_path), tiers={"t": scripted_tier("t", *backends)}, graphs={"one": factory}
    )


async def test_an_agents_input_guardrail_blocks_before_its_first_model_call(
    tmp_path: Path,
) -> None:
    model = ScriptedChatModel()
    agent = Agent(name="clerk", instructions="x", tier="t", guardrails=[no_payroll])
    record = await _runner(tmp_path, agent, ScriptedBackend(model)).ask(
        "What is the payroll of the CEO?", graph="one"
    )

    assert model.calls == []  # no model saw the question
    assert "payroll questions go to HR" in record.answer
    assert [(g.stage, g.name, g.action) for g in record.guardrails] == [
        ("input", "no_payroll", "block")
    ]


async def test_an_agents_input_redaction_is_what_its_model_and_the_thread_see(
    tmp_path: Path,
) -> None:
    model = ScriptedChatModel().enqueue("noted", "again")
    agent = Agent(name="clerk", instructions="x", tier="t", guardrails=[mask_badge])
    runner = _runner(tmp_path, agent, ScriptedBackend(model))
    await runner.ask("my badge is B-1234", graph="one", thread_id="b")
    await runner.ask("thanks", graph="one", thread_id="b")

    first = [str(m.content) for m in model.calls[0].messages]
    assert "my badge is <BADGE_1>" in first
    later = [str(m.content) for m in model.calls[1].messages]
    assert not any("B-1234" in t for t in first + later)  # the thread kept the redaction


async def test_local_only_is_residency_not_sensitivity(tmp_path: Path) -> None:
    hosted = ScriptedChatModel()
    local = ScriptedChatModel().enqueue("local answer")
    agent = Agent(name="clerk", instructions="x", tier="t", local_only=True)
    record = await _runner(
        tmp_path,
        agent,
        ScriptedBackend(hosted, id="openai:gpt-4o", local=False),
        ScriptedBackend(local, id="local", local=True),
    ).ask("hello", graph="one")

    assert hosted.calls == [] and record.answer == "local answer"
    assert record.sensitive is False  # nothing sensitive was found
    skipped = record.steps[0].attempts[0]
    assert (skipped.outcome, skipped.reason) == ("skipped", "residency: caller is local_only")


async def test_a_local_only_agent_with_no_local_backend_says_so(tmp_path: Path) -> None:
    agent = Agent(name="clerk", instructions="x", tier="t", local_only=True)
    record = await _runner(
        tmp_path, agent, ScriptedBackend(ScriptedChatModel(), id="openai:gpt-4o", local=False)
    ).ask("hello", graph="one")

    assert record.degraded and not record.sensitive
    assert "agent 'clerk' is local-only" in record.answer
    assert "sensitive" not in record.answer
