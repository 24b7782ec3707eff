"""``tierflow bench peers`` at a tiny size: every framework runs the task with exactly two
HTTP calls and the right text per run (the benchmark's own checks, which raise on any
miss), and those checks do catch a third call or a wrong answer. Timings are the
benchmark's business, not a test's. The peers come from the ``peers`` extra, which the
Makefile's install includes: without it this fails, naming the extra."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tierflow.bench.peers import TWO, CheckFailed, check, measure
from tierflow.bench.peers_backend import Backend, question
from tierflow.bench.peers_procs import jobs, run_batch
from tierflow.bench.peers_setups import SETUPS, open_setup

TINY = {"rounds": 1, "runs": 2, "tp_rounds": 1, "tp_runs": 4, "concurrency": 2}


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    b = Backend(0.0)
    try:
        yield b
    finally:
        b.stop()


def test_every_setup_passes_its_checks_at_a_tiny_size() -> None:
    figures = measure(tuple(SETUPS), TINY, latencies=("0",), two=True)
    rows = figures["setups"]
    assert set(rows) == {*SETUPS, TWO}
    for name, row in rows.items():
        assert "unavailable" not in row, (name, row)
        assert row["runs_s_0ms"] > 0 and row["cpu_ms_per_run_0ms_concurrent"] > 0
        if name != TWO:
            assert len(row["cpu_ms_per_run_rounds"]) == 1 and row["cpu_ms_per_run"] > 0
            assert 0 < row["p50_ms"] <= row["p95_ms"]
    assert set(figures["goals"]) >= {"tierflow_cpu_vs_langgraph_sqlite", "tierflow_p95_over_p50"}
    assert figures["loadavg"]["start"] and figures["loadavg"]["after_0ms"]


def test_the_checks_catch_a_third_call_and_a_wrong_text(backend: Backend) -> None:
    async def go() -> None:
        async with open_setup("openai", backend.url) as one:

            async def chatty(a: int, b: int, marker: str) -> str:
                from openai import AsyncOpenAI

                async with AsyncOpenAI(base_url=backend.url, api_key="x") as client:
                    await client.chat.completions.create(
                        model="scripted-model",
                        messages=[{"role": "user", "content": question(a, b, marker)}],
                    )
                return await one(a, b, marker)

            async def wrong(a: int, b: int, marker: str) -> str:
                return (await one(a, b, marker)).replace("sum", "total")

            backend.counts()
            work = jobs("ok", 2)
            check("openai", backend, work, await run_batch(one, work, 2))
            work = jobs("chatty", 2)
            batch = await run_batch(chatty, work, 1)
            with pytest.raises(CheckFailed, match=r"chatty failed.*chatty-0 made 3 HTTP calls"):
                check("chatty", backend, work, batch)
            work = jobs("wrong", 1)
            batch = await run_batch(wrong, work, 1)
            with pytest.raises(CheckFailed, match=r"returned 'The total is 3\.', expected"):
                check("wrong", backend, work, batch)

    asyncio.run(go())
