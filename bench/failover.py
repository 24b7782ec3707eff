"""Failover cost and recovery: what a dead primary backend costs each call, and how soon
a returning one is used again.

Three measurements on one tier, [primary, spare], where the spare answers at once (an
in-process model, so the figures are tierflow's own cost, not a server's):

- **after the breaker opens**: per-call latency with the primary dead and its breaker
  open, against the same calls on a tier that is only the spare (goal: < 5 ms p99 added);
- **before it opens**: the first call to a dead primary, for a closed port (refused at
  once) and for a port whose accept queue is full (the handshake never completes, so
  the client waits for ``[resilience] connect_timeout_s``); with the default policy a
  connection-level failure opens the breaker, so this is paid once;
- **recovery**: the primary comes back (a server starts on its port) right after its
  breaker opened; calls keep coming every few milliseconds; the time until one is served
  by the primary again is one cool-down plus one probe.

Run with ``tierflow bench failover``; results in ``bench/results/failover.json``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from tierflow.models.backends import Backend, build_backend
from tierflow.models.tiers import Tier
from tierflow.resilience import BreakerSnapshot, BreakerStore, breaker_for
from tierflow.settings import BackendRef, TierflowSettings, load_settings
from tierflow.testing import Reply, ScriptedBackend, ScriptedServer
from tierflow.testing.sockets import Blackhole, closed_port

CALLS = 3000  # per tier, after the breaker opened
REFUSED_SAMPLES = 100
BLACKHOLE_SAMPLES = 5
RECOVERY_SAMPLES = 5
CONNECT_TIMEOUT_S = 0.5
COOLDOWN_S = 1.0
POLL_S = 0.005  # a call every 5 ms while the primary recovers
Q = [HumanMessage("ping")]


class _Instant(BaseChatModel):
    """Answers at once on the event loop (no worker thread): the cheapest possible spare."""

    @property
    def _llm_type(self) -> str:
        return "instant"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages)


def _settings(state_dir: Path, url: str, cooldown_s: float = 3600.0) -> TierflowSettings:
    return load_settings(
        state_dir=state_dir,
        backends={"openai": {"base_url": url, "api_key": "k"}},
        resilience={
            "connect_timeout_s": CONNECT_TIMEOUT_S,
            "request_timeout_s": 5.0,
            "breaker": {"cooldown_s": cooldown_s},
        },
    )


def _primary(settings: TierflowSettings) -> Backend:
    backend = build_backend(BackendRef.parse("openai:gpt-4o"), settings)
    backend.chat_model()  # the client is built once per process: not a failover cost
    return backend


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _summary(ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(ms), 4),
        "p99_ms": round(_pct(ms, 0.99), 4),
        "max_ms": round(max(ms), 4),
    }


async def _timed(tier: Tier) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await tier.acall(Q)
    return (time.perf_counter() - started) * 1000, result


async def _after_open(state_dir: Path) -> dict[str, Any]:
    spare = ScriptedBackend(_Instant(), id="spare")
    primary = _primary(_settings(state_dir, f"http://127.0.0.1:{closed_port()}/v1"))
    both, alone = Tier(name="t", backends=[primary, spare]), Tier(name="t", backends=[spare])
    _, first = await _timed(both)
    assert first.attempts[0].breaker == "open", first.attempts
    with_dead: list[float] = []
    baseline: list[float] = []
    for _ in range(200):  # warm-up
        await _timed(both)
        await _timed(alone)
    for _ in range(CALLS // 100):  # interleaved blocks: drift hits both sides alike
        for _ in range(100):
            ms, result = await _timed(both)
            assert result.attempts[0].outcome == "breaker_open"
            with_dead.append(ms)
        for _ in range(100):
            baseline.append((await _timed(alone))[0])
    dead, base = _summary(with_dead), _summary(baseline)
    return {
        "calls_per_tier": CALLS,
        "primary_dead_breaker_open": dead,
        "spare_only": base,
        "added_p50_ms": round(dead["p50_ms"] - base["p50_ms"], 4),
        "added_p99_ms": round(dead["p99_ms"] - base["p99_ms"], 4),
        "goal_p99_ms": 5.0,
    }


async def _first_call(state_dir: Path, url: str, samples: int) -> dict[str, Any]:
    """The first call with a dead primary (its breaker closed each time), and the next."""
    spare = ScriptedBackend(_Instant(), id="spare")
    settings = _settings(state_dir, url)
    primary = _primary(settings)
    tier = Tier(name="t", backends=[primary, spare])
    alone = Tier(name="t", backends=[spare])
    firsts: list[float] = []
    seconds: list[float] = []
    store = BreakerStore.in_dir(state_dir)
    for _ in range(samples):
        store.save(BreakerSnapshot(backend=primary.id))  # closed again, as if never failed
        primary.breaker = breaker_for(settings, primary.id, store)  # a new process's view
        ms, result = await _timed(tier)
        assert result.attempts[0].failure == "connect", result.attempts
        firsts.append(ms)
        ms, result = await _timed(tier)
        assert result.attempts[0].outcome == "breaker_open"
        seconds.append(ms)
    base = statistics.median([(await _timed(alone))[0] for _ in range(200)])
    return {
        "samples": samples,
        "first_call": _summary(firsts),
        "first_call_added_p50_ms": round(statistics.median(firsts) - base, 3),
        "second_call": _summary(seconds),
        "connect_timeout_s": CONNECT_TIMEOUT_S,
        "note": "first call: the failed connect, the error path (LangChain callbacks, the"
        " chat span recording the exception), classification and one SQLite write of the"
        " breaker row; the breaker opens, so the second call skips without I/O",
    }


async def _recovery(state_dir: Path) -> dict[str, Any]:
    runs: list[dict[str, float]] = []
    for i in range(RECOVERY_SAMPLES):
        port = closed_port()
        settings = _settings(state_dir / f"r{i}", f"http://127.0.0.1:{port}/v1", COOLDOWN_S)
        primary = _primary(settings)
        tier = Tier(name="t", backends=[primary, ScriptedBackend(_Instant(), id="spare")])
        _, first = await _timed(tier)  # refused: the breaker opens
        assert first.attempts[0].breaker == "open" and primary.breaker is not None
        opened = primary.breaker.snapshot().opened_at or 0.0  # wall clock, as the breaker's
        with ScriptedServer(port=port) as server:  # the backend comes back
            server.set_default(Reply.text("primary again"))
            back = time.perf_counter()
            calls = 0
            while True:
                calls += 1
                _, result = await _timed(tier)
                if result.backend is primary:
                    used, used_wall = time.perf_counter(), time.time()
                    probe_ms = result.attempts[0].duration_ms
                    break
                await asyncio.sleep(POLL_S)
        runs.append(
            {
                "recovery_s": round(used - back, 4),
                "since_opened_s": round(used_wall - opened, 4),
                "over_cooldown_ms": round((used_wall - opened - COOLDOWN_S) * 1000, 2),
                "probe_ms": float(probe_ms or 0.0),
                "calls_skipped": calls - 1,
            }
        )
    return {
        "cooldown_s": COOLDOWN_S,
        "poll_interval_s": POLL_S,
        "runs": runs,
        "since_opened_s_median": statistics.median(r["since_opened_s"] for r in runs),
        "over_cooldown_ms_median": statistics.median(r["over_cooldown_ms"] for r in runs),
        "note": "since_opened = one cool-down + the wait for the next call (<= poll interval)"
        " + one probe; the probe is a real HTTP call to a ScriptedServer on 127.0.0.1",
    }


async def _measure(state_dir: Path) -> dict[str, Any]:
    after = await _after_open(state_dir / "after")
    refused = await _first_call(
        state_dir / "refused", f"http://127.0.0.1:{closed_port()}/v1", REFUSED_SAMPLES
    )
    with Blackhole() as hole:
        unanswered = await _first_call(state_dir / "hole", hole.base_url, BLACKHOLE_SAMPLES)
    recovery = await _recovery(state_dir / "recovery")
    return {
        "after_breaker_opens": after,
        "before_it_opens_refused": refused,
        "before_it_opens_no_handshake": unanswered,
        "recovery": recovery,
        "setup": "tier [openai:gpt-4o (dead), in-process spare]; breaker persisted in SQLite;"
        " telemetry on, no exporter",
    }


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_measure(Path(tmp)))


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
