"""A run's event stream on its own: replay, mode filters, heartbeats."""

from __future__ import annotations

from tierflow.server.stream import RunStream


async def test_followers_replay_filter_and_end_with_the_run() -> None:
    stream = RunStream()
    await stream.publish("metadata", {"run_id": "r"})
    await stream.publish("values", {"n": 1})
    await stream.publish("updates", {"node": {}})
    await stream.close()

    everything = [e.event async for e in stream.follow() if e is not None]
    values_only = [e.event async for e in stream.follow(["values"]) if e is not None]
    after_first = [e.id async for e in stream.follow(after=1) if e is not None]

    assert everything == ["metadata", "values", "updates"]
    assert values_only == ["metadata", "values"]  # metadata always goes
    assert after_first == [2, 3]  # Last-Event-ID: 1


async def test_a_quiet_stream_yields_heartbeats_until_an_event() -> None:
    stream = RunStream()
    follower = stream.follow(idle=0.01)

    assert await anext(follower) is None  # nothing for 10 ms: a heartbeat
    await stream.publish("values", {"n": 1})
    event = await anext(follower)
    assert event is not None and event.event == "values"
    await stream.close()
    assert [e async for e in follower] == []
