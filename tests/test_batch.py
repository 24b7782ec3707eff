"""``tierflow batch``: many questions in one command, in-process, over worker processes
and through ``tierflow serve``, resumable after a kill.

All real: ``python -m tierflow batch`` in a subprocess, the reasoning tier an ``openai:``
backend pointed at a ``ScriptedServer`` on 127.0.0.1 that answers each question by rule
(``answer to <question>``), so the order in which concurrent runs reach it does not matter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tierflow.cli import app
from tierflow.errors import UserError
from tierflow.testing import Reply, ScriptedServer


def _asked(body: dict[str, Any]) -> str:
    return str([m for m in body["messages"] if m["role"] == "user"][-1]["content"])


def answering(delay: float = 0.0) -> Any:
    def reply(body: dict[str, Any]) -> Reply:
        return Reply.text(f"answer to {_asked(body)}", delay=delay)

    return reply


@pytest.fixture
def backend() -> Iterator[ScriptedServer]:
    with ScriptedServer(flavor="openai", api_key="sk-test") as srv:
        srv.set_default(answering())
        yield srv


def _env(tmp_path: Path, srv: ScriptedServer) -> dict[str, str]:
    (tmp_path / "tierflow.toml").write_text(
        '[tiers.reasoning]\nbackends = ["openai:gpt-4o"]\n[telemetry]\nenabled = false\n'
        # a killed batch's thread leases lapse quickly (the resumed batch waits for them);
        # 3 s, not 1: a process's first question loads the injection classifier's embedder
        # (on by default now), and a 1 s lease could lapse meanwhile on a busy machine
        "[state]\nlease_ttl_s = 3\n"
    )
    return {
        **os.environ,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": srv.base_url,
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }


def _questions(
    path: Path, n: int, bad: dict[int, str] | None = None, threads: bool = False
) -> list[str]:
    """Write ``n`` question lines (``bad`` replaces some, by 1-based line number), each on
    its own named thread with ``threads``."""
    lines = [
        json.dumps(
            {
                "id": f"q{k}",
                "question": f"question {k}",
                **({"thread_id": f"t{k}"} if threads else {}),
            }
        )
        for k in range(1, n + 1)
    ]
    for at, text in (bad or {}).items():
        lines[at - 1] = text
    path.write_text("\n".join(lines) + "\n")
    return lines


def _batch(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tierflow", "batch", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _strip(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "thread_id"} for r in results]


def test_batch_runs_concurrently_keeps_input_order_and_reports_a_bad_line(
    tmp_path: Path, backend: ScriptedServer
) -> None:
    env = _env(tmp_path, backend)
    _questions(tmp_path / "in.jsonl", 7, bad={4: '{"question": "oops"'})
    one = _batch(tmp_path, env, "in.jsonl", "-g", "direct", "-n", "3", "-o", "out.jsonl")
    _, err = one.communicate(timeout=60)
    assert one.returncode == 1  # the bad line failed
    assert "line 4: not valid JSON" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: 1 of 7 failed (1 error); see out.jsonl"
    results = _results(tmp_path / "out.jsonl")
    assert [r["line"] for r in results] == list(range(1, 8))
    assert [r["status"] for r in results] == ["completed"] * 3 + ["failed"] + ["completed"] * 3
    for r in results:
        if r["line"] != 4:
            assert r["answer"] == f"answer to {r['question']}" and r["id"] == f"q{r['line']}"
            assert r["degraded"] is False and r["route"] is None
    assert results[3]["id"] == 4 and results[3]["answer"] is None
    assert len(backend.requests) == 6  # one model call per good line

    # --processes 2 gives the same results, in the same order
    two = _batch(
        tmp_path, env, "in.jsonl", "-g", "direct", "-n", "3", "-p", "2", "-o", "out2.jsonl"
    )
    _, err2 = two.communicate(timeout=60)
    assert two.returncode == 1, err2
    assert _strip(_results(tmp_path / "out2.jsonl")) == _strip(results)
    assert len(backend.requests) == 12


def test_a_file_that_is_not_jsonl_fails_fast_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("just some text\nand more\n")
    result = CliRunner().invoke(app, ["batch", "notes.txt", "-q"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: notes.txt: not JSON Lines (line 1: not valid JSON (Expecting value))"
    ]
    assert not (tmp_path / "results.jsonl").exists()
    missing = CliRunner().invoke(app, ["batch", "nowhere.jsonl"])
    assert missing.exit_code == 2 and "nowhere.jsonl: no such file" in missing.output


def test_a_killed_batch_resumes_without_running_a_line_twice(
    tmp_path: Path, backend: ScriptedServer
) -> None:
    backend.set_default(answering(delay=0.25))
    env = _env(tmp_path, backend)
    # Named threads: a run the kill cut off is continued from its checkpoint, not refused.
    _questions(tmp_path / "in.jsonl", 12, threads=True)
    out = tmp_path / "out.jsonl"
    first = _batch(tmp_path, env, "in.jsonl", "-g", "direct", "-n", "2", "-o", "out.jsonl")
    try:
        deadline = time.monotonic() + 40
        while not (out.exists() and len(out.read_text().splitlines()) >= 4):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the batch wrote nothing"
            time.sleep(0.02)  # polling a file another process writes
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    before = {r["question"] for r in _results(out)}
    assert 4 <= len(before) < 12

    backend.set_default(answering())
    second = _batch(tmp_path, env, "in.jsonl", "-g", "direct", "-n", "2", "-o", "out.jsonl")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    results = _results(out)
    assert [r["id"] for r in results] == [f"q{k}" for k in range(1, 13)]  # complete, in order
    assert all(r["status"] == "completed" for r in results)
    asked = Counter(_asked(r.body) for r in backend.requests)
    # A line that was in the output was never asked again; only the runs cut off by the
    # kill (at most the concurrency) ran a second time.
    assert all(asked[q] == 1 for q in before)
    assert all(asked[f"question {k}"] in (1, 2) for k in range(1, 13))
    assert sum(asked.values()) <= 12 + 2


def test_batch_through_the_server_with_a_key_and_a_full_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx
    from server.conftest import HOLDING, RELEASE, serving  # tests/server/conftest.py

    def rejected(url: str) -> float:
        metrics = httpx.get(f"{url}/metrics").text.splitlines()
        return float(next(m for m in metrics if 'reason="queue_full"' in m).split()[-1])

    _questions(tmp_path / "in.jsonl", 3)
    key = {"x-api-key": "key-1"}
    with serving(tmp_path / "srv", api_keys=frozenset({"key-1"}), max_queue=1) as served:
        served.backend.set_default(answering())
        # A run holds the queue's one place, so the batch's first run gets a 429; it is
        # let go once one came back, and the batch asks again after Retry-After.
        HOLDING.clear()
        RELEASE.clear()
        served.backend.enqueue(Reply.tool_calls([("hold", {"label": "x"})]))
        thread = httpx.post(f"{served.url}/threads", json={}, headers=key).json()["thread_id"]
        hold = {"assistant_id": "waiter", "input": {"messages": [{"role": "user", "content": "x"}]}}
        httpx.post(f"{served.url}/threads/{thread}/runs", json=hold, headers=key)
        assert HOLDING.wait(15)

        def release() -> None:
            deadline = time.monotonic() + 15
            while rejected(served.url) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)  # polling the server's counter
            RELEASE.set()

        releaser = threading.Thread(target=release, daemon=True)
        releaser.start()
        monkeypatch.setenv("TIERFLOW_API_KEY", "key-1")
        args = ["batch", "in.jsonl", "--server", served.url, "-g", "clerk", "-n", "1", "--full"]
        result = CliRunner().invoke(app, [*args, "-q", "-o", "out.jsonl"])
        releaser.join(15)
        assert result.exit_code == 0, result.output
        assert rejected(served.url) >= 1
        asked = [_asked(r.body) for r in served.backend.requests]
    results = _results(tmp_path / "out.jsonl")
    assert [r["id"] for r in results] == ["q1", "q2", "q3"]
    for r in results:
        assert r["status"] == "completed" and r["answer"] == f"answer to {r['question']}"
        assert r["record"]["thread_id"] == r["thread_id"]
        assert [s["node"] for s in r["record"]["steps"]] == ["clerk"]
    assert len({r["thread_id"] for r in results}) == 3  # a new thread per question
    assert sorted(q for q in asked if q.startswith("question")) == [r["question"] for r in results]


def test_bad_lines_each_get_their_own_error(tmp_path: Path) -> None:
    from tierflow.runner.batch.items import read_batch

    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": "a", "question": "one"}\n'
        "\n"
        '["not", "an", "object"]\n'
        '{"id": "a", "question": "again"}\n'
        '{"question": ""}\n'
        '{"question": "ok", "thread_id": 7}\n'
        '{"question": "two", "graph": "direct"}\n'
    )
    items = read_batch(path)
    assert [(i.line, i.id, i.error) for i in items] == [
        (1, "a", None),
        (3, 3, "line 3: expected a JSON object"),
        (4, 4, "line 4: duplicate id 'a'"),
        (5, 5, "line 5: missing 'question' (a string)"),
        (6, 6, "line 6: 'thread_id' must be a string"),
        (7, 7, None),
    ]
    assert items[-1].graph == "direct" and items[-1].key == "line:7"


def test_a_torn_last_line_is_cut_off_before_appending(tmp_path: Path) -> None:
    from tierflow.runner.batch.log import ResultLog

    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "line": 1}\n{"id": 2, "line": 2}\n{"id": "c", "li')
    log = ResultLog(out)
    assert log.done() == {"id:a", "line:2"}
    assert out.read_text() == '{"id": "a", "line": 1}\n{"id": 2, "line": 2}\n'
    (tmp_path / "other.txt").write_text("not results\n")
    with pytest.raises(UserError, match="not a results file"):
        ResultLog(tmp_path / "other.txt").done()


def test_retry_after_reads_seconds_and_dates_within_bounds() -> None:
    from email.utils import formatdate

    from tierflow.runner.batch.remote import MAX_RETRY_AFTER_S, retry_after

    assert retry_after("2") == 2.0
    assert retry_after(None) == 1.0 and retry_after("soon") == 1.0
    assert retry_after("3600") == MAX_RETRY_AFTER_S
    assert 3 <= retry_after(formatdate(time.time() + 5, usegmt=True)) <= 5


async def test_a_run_killed_before_its_first_step_is_continued_not_refused(
    tmp_path: Path,
) -> None:
    """A kill right after the run's input was checkpointed (step -1) leaves the question in
    the ``__start__`` channel, not yet in ``messages``: the batch must still recognise the
    line's own run and continue it (it used to be refused as someone else's)."""
    from tierflow import Runner, load_settings
    from tierflow.runner.batch.items import BatchItem
    from tierflow.runner.batch.local import cut_off
    from tierflow.testing import ScriptedChatModel, scripted_tier

    settings = load_settings(state_dir=tmp_path / "state", guardrails={"enabled": False})
    model = ScriptedChatModel(default="done")
    tiers = {"reasoning": scripted_tier("reasoning", model)}
    async with Runner(settings, tiers=tiers) as runner:
        await runner.ask("first question", graph="direct", thread_id="a")
        saver = runner.checkpointer
        # thread b: a copy of thread a's input checkpoint, as a kill at that point leaves it
        start = [t async for t in saver.alist({"configurable": {"thread_id": "a"}})][-1]
        assert start.metadata.get("step") == -1
        config = {"configurable": {"thread_id": "b", "checkpoint_ns": ""}}
        checkpoint = start.checkpoint
        await saver.aput(config, checkpoint, start.metadata, checkpoint["channel_versions"])  # type: ignore[arg-type]

        item = BatchItem(line=1, id="q1", question="first question", thread_id="b")
        assert await cut_off(runner, item)
        assert not await cut_off(
            runner, BatchItem(line=2, id="q2", question="other", thread_id="b")
        )
        record = await runner.resume("b")
    assert record.status == "completed" and record.answer == "done"
