"""Per-run budgets: a spent budget stops the run cleanly with its partial result, the
checkpoint stays consistent, and the run can be continued.

The graph here asks the run's budget itself before each "model call" (what the tier chain
does before every backend request), so these tests do not depend on any backend.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from typer.testing import CliRunner

from tierflow import Agent, BuildContext, add_agent, register_graph, tool
from tierflow.agents.policy import spending
from tierflow.budget import BudgetExceeded, RunBudget, current_budget
from tierflow.cli import app
from tierflow.errors import ConfigError, UserError
from tierflow.graphs.context import GraphFactory
from tierflow.record import Step, Usage
from tierflow.runner import Runner
from tierflow.settings import BudgetSettings, TierflowSettings, load_settings
from tierflow.state import GraphState
from tierflow.testing import ScriptedChatModel, scripted_tier

TURNS = 5  # the graph answers "turn 1" ... "turn 5", one model call each

# What each test's "model call" costs; set per test through the graph factory's closure.
USAGE = Usage(input_tokens=60, output_tokens=40, cost_usd=0.01)


def _turns(messages: list[object]) -> int:
    return sum(1 for m in messages if isinstance(m, AIMessage))


def counting_graph(hang_on: asyncio.Event | None = None) -> GraphFactory:
    """A node that spends one model call per turn and loops until TURNS answers.

    With ``hang_on``, the second turn waits for that event (a stalled backend).
    """

    def factory(ctx: BuildContext) -> StateGraph[GraphState]:
        async def work(state: GraphState) -> dict[str, object]:
            # What a custom node does to spend the run's budget (ModelStep does it for
            # tierflow's own nodes): the budget lives in the graph, not in the runner.
            async with spending(state) as spend:
                assert current_budget() is spend.budget
                spend.budget.before_call("scripted")
                n = _turns(list(state.get("messages", []))) + 1
                if n == 2 and hang_on is not None:
                    await hang_on.wait()
                spend.budget.after_call(USAGE)
            step = Step(node="work", tier="t", backend="scripted", model="m", usage=USAGE)
            return {
                "messages": [AIMessage(f"turn {n}")],
                "steps": [step.model_dump()],
                **spend.update(),
            }

        graph: StateGraph[GraphState] = StateGraph(GraphState)
        graph.add_node("work", work)
        graph.add_edge(START, "work")
        graph.add_conditional_edges(
            "work", lambda s: END if _turns(s["messages"]) >= TURNS else "work", ["work", END]
        )
        return graph

    return factory


def _runner(settings: TierflowSettings, hang_on: asyncio.Event | None = None) -> Runner:
    return Runner(settings, graphs={"turns": counting_graph(hang_on)})


async def _messages(runner: Runner, thread: str) -> list[BaseMessage]:
    """The thread's conversation as the SQLite checkpoint file holds it."""
    async with AsyncSqliteSaver.from_conn_string(str(runner.checkpoint_path)) as saver:
        saved = await saver.aget_tuple({"configurable": {"thread_id": thread}})
    assert saved is not None
    return list(saved.checkpoint["channel_values"]["messages"])


async def test_model_call_budget_stops_the_run_with_its_partial_result(
    settings: TierflowSettings,
) -> None:
    runner = _runner(settings)
    record = await runner.ask(
        "count", graph="turns", thread_id="b1", budget=BudgetSettings(max_model_calls=3)
    )
    assert record.status == "stopped" and record.degraded
    assert record.stopped_reason == "budget exceeded: model_calls 3 of 3"
    assert record.answer == "turn 3"  # the last answer-like message
    assert [s.node for s in record.steps] == ["work"] * 3
    assert record.usage.input_tokens == 180

    # The checkpoint is consistent: a new question is refused until the run is continued
    with pytest.raises(UserError, match=r"unfinished run .* tierflow ask --thread b1"):
        await runner.ask("something else", graph="turns", thread_id="b1")
    done = await runner.resume("b1", budget=BudgetSettings(max_model_calls=3))
    assert done.status == "completed" and not done.degraded and done.answer == "turn 5"
    assert len(done.steps) == 5  # the run's steps, from before and after the stop
    texts = [m.content for m in await _messages(runner, "b1")]
    assert texts == ["count", "turn 1", "turn 2", "turn 3", "turn 4", "turn 5"]
    with pytest.raises(UserError, match="no unfinished run"):
        await runner.resume("b1")


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (BudgetSettings(max_tokens=250), "budget exceeded: tokens 300 of 250"),
        (BudgetSettings(max_cost_usd=0.025), "budget exceeded: cost_usd 0.03 of 0.025"),
    ],
)
async def test_token_and_cost_budgets(
    settings: TierflowSettings, limits: BudgetSettings, reason: str
) -> None:
    record = await Runner(settings, graphs={"turns": counting_graph()}, budget=limits).ask(
        "count", graph="turns"
    )
    assert (record.status, record.stopped_reason, record.answer) == ("stopped", reason, "turn 3")


async def test_budget_precedence_call_over_runner_over_settings(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, budget={"max_model_calls": 4})
    assert (await _runner(settings).ask("a", graph="turns")).answer == "turn 4"
    runner = Runner(
        settings,
        graphs={"turns": counting_graph()},
        budget=BudgetSettings(max_model_calls=2),
    )
    assert (await runner.ask("b", graph="turns")).answer == "turn 2"
    unlimited = BudgetSettings(max_model_calls=None)
    assert (await runner.ask("c", graph="turns", budget=unlimited)).status == "completed"


async def test_wall_time_stops_a_hung_run_and_it_continues_later(
    settings: TierflowSettings,
) -> None:
    stalled = asyncio.Event()  # never set: the second "model call" hangs
    runner = _runner(settings, hang_on=stalled)
    record = await runner.ask(
        "count", graph="turns", thread_id="w1", budget=BudgetSettings(max_wall_s=0.3)
    )
    assert record.status == "stopped"
    assert record.stopped_reason == "budget exceeded: wall time 0.3 s"
    assert record.answer == "turn 1" and len(record.steps) == 1

    stalled.set()  # the backend is back
    done = await runner.resume("w1")
    assert done.status == "completed" and done.answer == "turn 5"
    assert [m.content for m in await _messages(runner, "w1")][-1] == "turn 5"


async def test_a_timeout_of_the_graph_itself_is_not_a_spent_budget(
    settings: TierflowSettings,
) -> None:
    def factory(ctx: BuildContext) -> StateGraph[GraphState]:
        async def fails(state: GraphState) -> dict[str, object]:
            async with spending(state):
                raise TimeoutError("the graph's own")

        graph: StateGraph[GraphState] = StateGraph(GraphState)
        graph.add_node("fails", fails)
        graph.add_edge(START, "fails")
        return graph

    runner = Runner(settings, graphs={"f": factory}, budget=BudgetSettings(max_wall_s=60))
    with pytest.raises(TimeoutError, match="the graph's own"):
        await runner.ask("go", graph="f")


def test_run_budget_counts_and_refuses() -> None:
    budget = RunBudget(max_model_calls=2)
    budget.before_call("a")
    budget.before_call("b")
    with pytest.raises(BudgetExceeded) as exc:
        budget.before_call("c")
    assert (exc.value.limit, str(exc.value)) == (
        "model_calls",
        "budget exceeded: model_calls 2 of 2",
    )
    assert current_budget() is None  # outside a run


def test_budget_settings_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[budget]\nmax_model_calls = 7\nmax_wall_s = "unlimited"\n')
    budget = load_settings(config).budget
    assert (budget.max_model_calls, budget.max_wall_s, budget.max_tokens) == (7, None, None)
    assert load_settings().budget == BudgetSettings(max_model_calls=50, max_wall_s=600)
    monkeypatch.setenv("TIERFLOW_BUDGET__MAX_TOKENS", "1000")
    assert load_settings(config).budget.max_tokens == 1000
    config.write_text("[budget]\nmax_model_calls = 0\n")
    with pytest.raises(ConfigError, match=r"budget\.max_model_calls: Input should be greater"):
        load_settings(config)


cli = CliRunner()


def _one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_cli_prints_a_stopped_run_and_continues_it(tmp_path: Path) -> None:
    register_graph("budget-turns", counting_graph())
    (tmp_path / "tierflow.toml").write_text("[budget]\nmax_model_calls = 2\n")
    args = ["ask", "--graph", "budget-turns", "-t", "c1"]

    stopped = cli.invoke(app, [*args, "--json", "count"])
    assert stopped.exit_code == 1
    record = json.loads(stopped.stdout)
    assert record["status"] == "stopped" and record["answer"] == "turn 2"
    assert record["stopped_reason"] == "budget exceeded: model_calls 2 of 2"
    assert _one_line_error(stopped.stderr) == (
        "error: run stopped (budget exceeded: model_calls 2 of 2); "
        "continue it with: tierflow ask --thread c1"
    )

    refused = cli.invoke(app, [*args, "another question"])
    assert refused.exit_code == 2 and "unfinished run" in _one_line_error(refused.stderr)

    # plain output: the partial answer, then one line saying why
    again = cli.invoke(app, ["ask", "-t", "c1"])
    assert again.exit_code == 1 and again.stdout.startswith("turn 4")
    assert "run stopped (budget exceeded" in _one_line_error(again.stderr)

    done = cli.invoke(
        app, ["ask", "-t", "c1", "--json"], env={"TIERFLOW_BUDGET__MAX_MODEL_CALLS": "9"}
    )
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == "turn 5"
    idle = cli.invoke(app, ["ask", "-t", "c1"])
    assert idle.exit_code == 2 and "no unfinished run" in _one_line_error(idle.stderr)
    missing = cli.invoke(app, ["ask", "-t", "nope"])
    assert "no conversation with thread id 'nope'" in _one_line_error(missing.stderr)


@tool
def noop(note: str) -> str:
    """Do nothing.

    Args:
        note: Anything.
    """
    return "ok"


def _call(call_id: str) -> AIMessage:
    call = {"name": "noop", "args": {"note": "x"}, "id": call_id, "type": "tool_call"}
    return AIMessage(content="", tool_calls=[call])


def _agent_graph(ctx: BuildContext) -> StateGraph[GraphState]:
    agent = Agent(name="looper", tier="reasoning", tools=[noop], instructions="Loop.")
    graph: StateGraph[GraphState] = StateGraph(GraphState)
    graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
    return graph


async def test_the_tier_chain_spends_the_budget_before_each_request(
    settings: TierflowSettings,
) -> None:
    model = ScriptedChatModel()
    model.enqueue(_call("aaaaaaaa1"), _call("aaaaaaaa2"), "Done looping.")
    runner = Runner(
        settings,
        tiers={"reasoning": scripted_tier("reasoning", model)},
        graphs={"loop": _agent_graph},
    )
    record = await runner.ask(
        "loop", graph="loop", thread_id="t1", budget=BudgetSettings(max_model_calls=2)
    )
    assert (record.status, record.stopped_reason) == (
        "stopped",
        "budget exceeded: model_calls 2 of 2",
    )
    assert len(model.calls) == 2  # the third request was never sent
    assert [s.node for s in record.steps] == ["looper", "looper"]
    assert all(c.ok for s in record.steps for c in s.tool_calls)

    done = await runner.resume("t1")
    assert (done.status, done.answer) == ("completed", "Done looping.")
    assert len(model.calls) == 3
