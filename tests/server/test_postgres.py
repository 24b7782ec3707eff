"""State in PostgreSQL (``TIERFLOW_DATABASE_URL``): two servers on one database share
threads and runs, servers starting together migrate once, a server's start abandons only
the runs of servers that stopped, and a bad or unreachable database is one line at
startup. (Every ``served`` test also runs on PostgreSQL.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from tierflow import Agent, database
from tierflow.cli.app import app as cli
from tierflow.resilience.postgres import MIGRATIONS as BREAKER_MIGRATIONS
from tierflow.runner import Runner
from tierflow.server.postgres import MIGRATIONS, PostgresStore
from tierflow.server.store import RunRow, SqliteStore
from tierflow.settings import load_settings
from tierflow.testing import Reply, ScriptedChatModel, ScriptedServer, scripted_tier

from .conftest import QUESTION, RELEASE, client, free_port, hold_run, new_thread, serving


async def test_two_servers_on_one_database_share_threads_and_runs(
    tmp_path: Path, postgres: Any
) -> None:
    url = postgres.new_database("shared")
    with (
        ScriptedServer() as backend,
        serving(tmp_path / "a", database_url=url, backend=backend) as a,
    ):
        ca = client(a)
        thread_id = await new_thread(ca, team="red")
        held = await hold_run(ca, a, await new_thread(ca))
        # b starts while a executes a run: b must leave that run alone (a is alive)
        with serving(tmp_path / "b", database_url=url, backend=backend) as b:
            cb = client(b)
            assert (await cb.threads.get(thread_id))["metadata"] == {"team": "red"}
            assert (await cb.runs.get(held["thread_id"], held["run_id"]))["status"] == "running"
            backend.enqueue(Reply.text("answered by b"))
            values = await cb.runs.wait(thread_id, "clerk", input=QUESTION)
            assert values["messages"][-1]["content"] == "answered by b"  # type: ignore[index]
            await cb.threads.update(thread_id, metadata={"seen_by": "b"})
            # a sees b's run, its record, the checkpointed state and the metadata patch
            (run,) = await ca.runs.list(thread_id)
            assert run["status"] == "success"
            assert run["kwargs"]["record"]["answer"] == "answered by b"
            thread = await ca.threads.get(thread_id)
            assert thread["metadata"] == {"team": "red", "seen_by": "b", "graph_id": "clerk",
                                          "assistant_id": "clerk"}  # fmt: skip
            assert thread["values"]["messages"][-1]["content"] == "answered by b"
            found = await cb.threads.search(metadata={"team": "red"})
            assert [t["thread_id"] for t in found] == [thread_id]
            backend.enqueue(Reply.text("released"))
            RELEASE.set()
            await ca.runs.join(held["thread_id"], held["run_id"])
            assert (await cb.runs.get(held["thread_id"], held["run_id"]))["status"] == "success"
            # deleted through b: gone for a, checkpoints included
            await cb.threads.delete(thread_id)
            assert await ca.threads.search(metadata={"team": "red"}) == []
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s",
                            (thread_id,)).fetchone() == (0,)  # fmt: skip
        versions = dict(conn.execute("SELECT component, version FROM schema_version"))
    # the backends' breakers and the thread leases live in the same database
    assert versions == {"server": len(MIGRATIONS), "breakers": len(BREAKER_MIGRATIONS), "leases": 1}


async def test_servers_starting_together_on_a_fresh_database_migrate_once(
    tmp_path: Path, postgres: Any
) -> None:
    url = postgres.new_database("fresh")
    settings = load_settings(False, state_dir=tmp_path, state={"database_url": url})
    stores = await asyncio.gather(*(PostgresStore.connect(settings.state) for _ in range(3)))
    runners = [Runner(settings) for _ in range(3)]
    try:
        # three checkpoint savers set up at once as well (their DDL is not idempotent
        # under concurrency by itself)
        await asyncio.gather(*(r.__aenter__() for r in runners))
        async with database.open_pool(url, size=1) as pool:
            assert await database.migrate(pool, "server", MIGRATIONS) == 0  # idempotent
    finally:
        await asyncio.gather(*(r.aclose() for r in runners))
        await asyncio.gather(*(s.close() for s in stores))
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
        assert conn.execute("SELECT count(*) FROM checkpoint_migrations").fetchone()[0] > 0  # type: ignore[index]


def _one_line(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return str(lines[0])


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["ask", "hello"]])
def test_an_unreachable_database_is_one_line_at_startup(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/nothing"
    monkeypatch.setenv("TIERFLOW_DATABASE_URL", url)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1
    line = _one_line(result)
    assert "127.0.0.1" in line and "refused" in line.lower()
    assert "s3cret" not in result.output and "someone:***@" in line


def test_a_missing_database_or_a_bad_url_is_one_line(
    postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERFLOW_DATABASE_URL", postgres.url("no_such_db"))
    result = CliRunner().invoke(cli, ["serve", "--port", "0"])
    assert result.exit_code == 1
    assert 'database "no_such_db" does not exist' in _one_line(result)
    monkeypatch.setenv("TIERFLOW_DATABASE_URL", "mysql://root:pw@localhost/db")
    result = CliRunner().invoke(cli, ["serve", "--port", "0"])
    assert result.exit_code == 2
    line = _one_line(result)
    assert "state.database_url" in line and "postgresql://" in line and "pw" not in line


async def test_only_runs_of_stopped_servers_are_abandoned(tmp_path: Path, postgres: Any) -> None:
    """A server's runs stay ``running`` while its liveness lock is held; once its
    connections are gone (stopped, or killed: the database sees the same), the next
    server to start marks them ``error``."""
    url = postgres.new_database("liveness")
    state = load_settings(False, state_dir=tmp_path, state={"database_url": url}).state
    first = await PostgresStore.connect(state)
    thread = await first.create_thread(None, {}, None)
    assert thread is not None
    now = time.time()
    run = RunRow("r1", thread.thread_id, "clerk", now, now, "running", "reject")
    await first.create_run(run)
    second = await PostgresStore.connect(state)
    try:
        assert await second.abandon_unfinished() == 0  # the first server is alive
        await first.close()
        # The closed session's backend releases its locks as it exits, just after the
        # client's close returns: poll, bounded.
        deadline = time.monotonic() + 10
        while (abandoned := await second.abandon_unfinished()) == 0:
            assert time.monotonic() < deadline, "the stopped server's runs were never abandoned"
            await asyncio.sleep(0.05)
        assert abandoned == 1
        gone = await second.get_run(thread.thread_id, "r1")
        assert gone is not None and gone.status == "error"
        assert gone.error == "the server stopped before the run finished"
    finally:
        await second.close()


async def test_metadata_patches_merge_the_same_on_both_stores(
    tmp_path: Path, postgres: Any
) -> None:
    """JSON merge patch (RFC 7396): SQLite's json_patch and tierflow_merge_patch agree."""
    state = load_settings(
        False, state_dir=tmp_path, state={"database_url": postgres.new_database("patch")}
    ).state
    sqlite = SqliteStore(tmp_path / "server.sqlite")
    await sqlite.open()
    pg = await PostgresStore.connect(state)
    patches: list[dict[str, Any]] = [
        {"nested": {"a": 1, "b": {"c": 2}}, "list": [1, 2]},
        {"nested": {"b": {"c": None, "d": 3}}, "list": [3], "team": None},
        {"nested": None, "flag": True},
        {"nested": {"again": "x"}},
    ]
    try:
        seen = []
        for store in (sqlite, pg):
            await store.create_thread("t", {"team": "red"}, None)
            for patch in patches:
                await store.update_thread("t", patch)
                row = await store.get_thread("t")
                assert row is not None
                seen.append(row.metadata)
    finally:
        await sqlite.close()
        await pg.close()
    on_sqlite, on_pg = seen[: len(patches)], seen[len(patches) :]
    assert on_pg == on_sqlite
    assert on_pg[1] == {"nested": {"a": 1, "b": {"d": 3}}, "list": [3]}
    assert on_pg[-1] == {"list": [3], "flag": True, "nested": {"again": "x"}}


async def test_a_runner_without_async_with_keeps_threads_in_postgres(
    tmp_path: Path, postgres: Any
) -> None:
    """``Runner.ask`` outside ``async with`` opens and closes a pool per call; the
    conversation continues from PostgreSQL, and no SQLite checkpoint file appears."""
    url = postgres.new_database("runner")
    settings = load_settings(
        False, state_dir=tmp_path, state={"database_url": url}, telemetry={"enabled": False}
    )
    model = ScriptedChatModel().enqueue("first answer", "second answer")
    runner = Runner(settings, tiers={"t": scripted_tier("t", model)})
    agent = Agent(name="helper", instructions="Be brief.", tier="t")
    assert (await runner.ask("one", agent=agent, thread_id="th")).answer == "first answer"
    assert (await runner.ask("two", agent=agent, thread_id="th")).answer == "second answer"
    seen = [str(m.content) for m in model.calls[1].messages]
    assert seen[-3:] == ["one", "first answer", "two"]  # the second call saw the first turn
    assert not (tmp_path / "checkpoints.sqlite").exists()
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = 'th'")
        assert count.fetchone()[0] > 0  # type: ignore[index]


def test_the_run_queue_lives_in_the_state_database(postgres: Any, tmp_path: Path) -> None:
    """With a database URL the DBOS queue's tables go to PostgreSQL too (one database for
    a cluster), and a client can register the queue there."""
    from dbos import DBOSClient

    from tierflow.server.queue import QUEUE, queue_options, queue_url

    url = postgres.new_database("queue")
    settings = load_settings(False, state_dir=tmp_path, state={"database_url": url})
    assert queue_url(settings) == url
    client = DBOSClient(system_database_url=queue_url(settings))
    try:
        client._sys_db.run_migrations()  # as QueuedWorker.open does
        client.register_queue(QUEUE, on_conflict="always_update", **queue_options(settings))
    finally:
        client.destroy()
    with psycopg.connect(url) as conn:
        schemas = {
            r[0] for r in conn.execute("SELECT schema_name FROM information_schema.schemata")
        }
    assert "dbos" in schemas
