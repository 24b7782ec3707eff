"""Durability as a choice: the checkpointer (sqlite, memory, none) and durability mode
(sync, async, exit) of a Runner; stateless mode's refusals; the one-line errors of bad
``[state]`` values. Retention is in test_retention.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver

from tierflow import Agent, Runner, tool
from tierflow.errors import ConfigError, UserError
from tierflow.settings import BudgetSettings, TierflowSettings, load_settings
from tierflow.testing import ScriptedChatModel, scripted_tier

SENT: list[str] = []
STATELESS = r'\[state\] checkpointer = "none"'


@tool(requires_approval=True)
def send(to: str) -> str:
    """Send a letter.

    Args:
        to: The addressee.
    """
    SENT.append(to)
    return f"sent to {to}"


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: The key.
    """
    return f"{key} = 42"


def _call(name: str, args: dict[str, Any]) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": "c0"}])


def _agent(*tools: Any) -> Agent:
    return Agent(name="clerk", instructions="Be brief.", tier="t", tools=list(tools))


def _runner(settings: TierflowSettings, model: ScriptedChatModel, **kw: Any) -> Runner:
    return Runner(settings, tiers={"t": scripted_tier("t", model)}, **kw)


@pytest.mark.parametrize(
    ("checkpointer", "durability"),
    [("sqlite", "sync"), ("sqlite", "async"), ("sqlite", "exit"), ("memory", "async")],
)
async def test_each_durability_mode_keeps_the_conversation(
    settings: TierflowSettings, checkpointer: str, durability: str
) -> None:
    model = ScriptedChatModel().enqueue(_call("lookup", {"key": "x"}), "x is 42", "said")
    async with _runner(settings, model, checkpointer=checkpointer, durability=durability) as r:
        assert r.durability == durability
        first = await r.ask("What is x?", agent=_agent(lookup), thread_id="d1")
        second = await r.ask("Say it again", agent=_agent(lookup), thread_id="d1")
        saved = await r.checkpointer.aget_tuple({"configurable": {"thread_id": "d1"}})
    assert (first.status, first.answer) == ("completed", "x is 42")
    assert first.steps[0].tool_calls  # the tool ran
    assert second.answer == "said"
    # The second run saw the first's conversation: its request holds both questions.
    sent = [str(m.content) for m in model.calls[-1].messages]
    assert "What is x?" in sent and "Say it again" in sent
    assert saved is not None
    assert (
        len(saved.checkpoint["channel_values"]["messages"]) == 6
    )  # 2 questions, call, result, 2 answers
    on_disk = settings.state_dir / "checkpoints.sqlite"
    assert on_disk.exists() == (checkpointer == "sqlite")


async def test_a_saver_instance_is_used_as_given(settings: TierflowSettings) -> None:
    saver = InMemorySaver()
    runner = _runner(settings, ScriptedChatModel().enqueue("hi"), checkpointer=saver)
    await runner.ask("hello", agent=_agent(), thread_id="m1")
    assert saver.get_tuple({"configurable": {"thread_id": "m1"}}) is not None
    assert not (settings.state_dir / "checkpoints.sqlite").exists()


async def test_stateless_ask_answers_and_keeps_nothing(settings: TierflowSettings) -> None:
    model = ScriptedChatModel().enqueue(_call("lookup", {"key": "x"}), "x is 42", "y")
    async with _runner(settings, model, checkpointer="none") as runner:
        assert runner.stateless
        record = await runner.ask("What is x?", agent=_agent(lookup))
        again = await runner.ask("And y?", agent=_agent(lookup))
        with pytest.raises(
            UserError, match=rf"Runner.checkpointer needs a checkpoint.*{STATELESS}"
        ):
            _ = runner.checkpointer
    assert (record.status, record.answer) == ("completed", "x is 42")
    assert record.steps[0].tool_calls and record.thread_id
    assert again.answer == "y" and again.thread_id != record.thread_id
    assert not (settings.state_dir / "checkpoints.sqlite").exists()
    assert not (settings.state_dir / "leases.sqlite").exists()  # no thread to lease


async def test_stateless_refuses_what_needs_a_checkpoint(settings: TierflowSettings) -> None:
    SENT.clear()
    model = ScriptedChatModel().enqueue(_call("send", {"to": "Ada"}))
    runner = _runner(settings, model, checkpointer="none")
    with pytest.raises(UserError, match=rf"continuing thread 't1'.*{STATELESS}"):
        await runner.ask("hello", agent=_agent(), thread_id="t1")
    with pytest.raises(UserError, match=rf"resuming a run.*{STATELESS}"):
        await runner.resume("t1")
    with pytest.raises(UserError, match=rf"resuming a run.*{STATELESS}"):
        await runner.resume("t1", "approve")
    with pytest.raises(UserError, match=rf"approving a tool call.*{STATELESS}"):
        await runner.ask("write to Ada", agent=_agent(send))
    assert SENT == []  # the call that needed approval never ran
    assert len(model.calls) == 1  # the refused questions never reached the model


async def test_stateless_budget_stop_returns_the_partial_result(
    settings: TierflowSettings,
) -> None:
    model = ScriptedChatModel().enqueue(_call("lookup", {"key": "x"}), "never")
    runner = _runner(settings, model, checkpointer="none")
    record = await runner.ask(
        "What is x?", agent=_agent(lookup), budget=BudgetSettings(max_model_calls=1)
    )
    assert record.status == "stopped" and "model_calls" in (record.stopped_reason or "")
    assert [s.node for s in record.steps] == ["clerk"]  # the first turn, from the stream
    assert len(model.calls) == 1


def test_state_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIERFLOW_STATE__CHECKPOINTER", "memory")
    monkeypatch.setenv("TIERFLOW_STATE__DURABILITY", "exit")
    monkeypatch.setenv("TIERFLOW_STATE__KEEP_THREADS", "100")
    state = load_settings(False, state_dir=tmp_path).state
    assert (state.checkpointer, state.durability, state.keep_threads) == ("memory", "exit", 100)
    assert state.saver_kind == "memory"
    monkeypatch.delenv("TIERFLOW_STATE__CHECKPOINTER")
    assert load_settings(False).state.saver_kind == "sqlite"  # auto, no database_url


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"checkpointer": "redis"}, r"state\.checkpointer: Input should be 'auto', .*'redis'"),
        ({"durability": "later"}, r"state\.durability: Input should be 'sync', .*'later'"),
        ({"keep_days": -1}, r"state\.keep_days: Input should be greater than or equal to 0"),
        ({"checkpointer": "postgres"}, r"state: checkpointer = \"postgres\" needs database_url"),
    ],
)
def test_bad_state_settings_are_one_line_errors(state: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(False, state=state)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"checkpointer": "redis"}, r"unknown checkpointer 'redis' \(expected a saver or one of"),
        ({"durability": "later"}, r"unknown durability 'later' \(expected one of sync, async"),
        ({"checkpointer": "postgres"}, r"checkpointer \"postgres\" needs \[state\] database_url"),
    ],
)
def test_bad_runner_arguments_are_one_line_errors(
    settings: TierflowSettings, kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message) as caught:
        Runner(settings, **kw)
    assert "\n" not in str(caught.value)


def test_the_server_refuses_stateless_mode(settings: TierflowSettings) -> None:
    from tierflow.server.app import create_app

    with pytest.raises(UserError, match=rf"the server .*{STATELESS}"):
        create_app(Runner(settings, checkpointer="none"), api_keys=None)
