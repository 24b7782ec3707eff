"""Checkpoint retention (``[state] keep_days`` / ``keep_threads``): old threads go, recent
ones stay, on SQLite and on PostgreSQL; in the background of an open Runner and with
``tierflow state prune``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tierflow import Agent, Runner
from tierflow.cli import app
from tierflow.errors import UserError
from tierflow.runner.retention import prune, prune_store
from tierflow.settings import TierflowSettings, load_settings
from tierflow.testing import ScriptedChatModel, scripted_tier

AGENT = Agent(name="a", instructions="Be brief.", tier="t")


def _runner(settings: TierflowSettings) -> Runner:
    model = ScriptedChatModel(default="ok")
    return Runner(settings, tiers={"t": scripted_tier("t", model)})


async def _threads(runner: Runner, ids: list[str]) -> set[str]:
    """Which of ``ids`` still have a checkpoint."""
    config: Any = lambda t: {"configurable": {"thread_id": t}}  # noqa: E731
    return {t for t in ids if await runner.checkpointer.aget_tuple(config(t)) is not None}


async def _old_and_new(settings: TierflowSettings) -> None:
    """Threads o1, o2; a second; n1, n2; then keep_days cuts between them."""
    async with _runner(settings) as runner:
        for t in ("o1", "o2"):
            await runner.ask("hi", agent=AGENT, thread_id=t)
        await asyncio.sleep(0.5)
        between = time.time()
        await asyncio.sleep(0.5)
        for t in ("n1", "n2"):
            await runner.ask("hi", agent=AGENT, thread_id=t)
        # Idle for longer than now - between (the cut lies 0.5 s from either group).
        state = settings.state.model_copy(update={"keep_days": (time.time() - between) / 86_400})
        assert await prune(runner.checkpointer, state) == 2
        assert await _threads(runner, ["o1", "o2", "n1", "n2"]) == {"n1", "n2"}
        # keep_threads: the most recent ones stay.
        state = settings.state.model_copy(update={"keep_threads": 1})
        assert await prune(runner.checkpointer, state) == 1
        assert await _threads(runner, ["n1", "n2"]) == {"n2"}
        # The thread that stays is intact: it continues.
        record = await runner.ask("again", agent=AGENT, thread_id="n2")
        assert record.status == "completed" and len(record.steps) == 1


async def test_retention_on_sqlite(settings: TierflowSettings) -> None:
    await _old_and_new(settings)


async def test_retention_on_postgres(postgres: Any, tmp_path: Path) -> None:
    settings = load_settings(
        False, state_dir=tmp_path, state={"database_url": postgres.new_database("ret")}
    )
    assert settings.state.saver_kind == "postgres"
    await _old_and_new(settings)


async def test_an_open_runner_prunes_in_the_background(tmp_path: Path) -> None:
    settings = load_settings(
        False, state_dir=tmp_path, state={"keep_threads": 2, "prune_every_s": 0.05}
    )
    ids = [f"b{i}" for i in range(5)]
    async with _runner(settings) as runner:
        for t in ids:
            await runner.ask("hi", agent=AGENT, thread_id=t)
        for _ in range(200):  # until the next round has run (0.05 s apart)
            if len(await _threads(runner, ids)) == 2:
                break
            await asyncio.sleep(0.05)
        assert await _threads(runner, ids) == {"b3", "b4"}


def test_state_prune_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(False, state_dir=tmp_path)

    async def make() -> None:
        async with _runner(settings) as runner:
            for t in ("c1", "c2", "c3"):
                await runner.ask("hi", agent=AGENT, thread_id=t)

    asyncio.run(make())
    (tmp_path / "tierflow.toml").write_text(f'state_dir = "{tmp_path}"\n')
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    nothing = cli.invoke(app, ["state", "prune"])
    assert nothing.exit_code == 2 and "set [state] keep_days or keep_threads" in nothing.output
    done = cli.invoke(app, ["state", "prune", "--keep-threads", "1"])
    assert (done.exit_code, done.output.strip()) == (0, "deleted 2 thread(s)")
    again = cli.invoke(app, ["state", "prune", "--keep-threads", "1"])
    assert again.output.strip() == "deleted 0 thread(s)"


async def test_retention_refuses_a_checkpointer_without_a_store(tmp_path: Path) -> None:
    settings = load_settings(False, state_dir=tmp_path, state={"checkpointer": "memory"})
    with pytest.raises(UserError, match='sqlite and postgres checkpointers, not "memory"'):
        await prune_store(settings, keep_threads=1)
