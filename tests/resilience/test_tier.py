"""The tier walk with its resilience layers: retry-or-fail-over, Retry-After, deadlines,
budget hooks on every request, breakers that skip without I/O, the single half-open
probe under concurrency, and persisted breaker state across runners."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from tierflow.budget import BudgetExceeded, RunBudget, budget_scope
from tierflow.errors import TierExhausted
from tierflow.models.backends import build_backend
from tierflow.models.tiers import Tier
from tierflow.resilience import BreakerPolicy, CircuitBreaker, ResidencyExhausted
from tierflow.runner import Runner
from tierflow.settings import BackendRef
from tierflow.testing import Fault, Reply, ScriptedBackend, ScriptedChatModel, ScriptedServer
from tierflow.testing.sockets import closed_port

from .conftest import fast_settings

Q = [HumanMessage("Hello?")]


def _tier(tmp_path: Path, *urls: str, **resilience: Any) -> Tier:
    """A tier over OpenAI-compatible backends (vllm kind) at ``urls``, from settings."""
    names = [f"vllm:b{i}" for i in range(len(urls))]
    settings = fast_settings(tmp_path / "state", resilience=resilience)
    backends = []
    for name, url in zip(names, urls, strict=True):
        one = settings.model_copy(
            update={
                "backends": settings.backends.model_copy(
                    update={"vllm": settings.backends.vllm.model_copy(update={"base_url": url})}
                )
            }
        )
        backends.append(build_backend(BackendRef.parse(name), one))
    return Tier(name="t", backends=backends)


async def test_a_lone_backend_is_retried_until_it_answers(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        srv.enqueue(Fault.status(503), Fault.drop(), Reply.text("third time"))
        tier = _tier(
            tmp_path, srv.base_url, retry={"max_attempts": 3, "with_fallback": "retry_after"}
        )
        result = await tier.acall(Q)
    assert result.message.content == "third time"
    ok = result.attempts[0]
    assert (ok.outcome, ok.retries, len(srv.requests)) == ("ok", 2, 3)
    assert ok.retry_reasons[0] == "OpenAIAPIError: Error code: 503 - scripted status 503"
    assert all(0 <= d <= 0.02 for d in ok.retry_delays_s)


async def test_by_default_a_5xx_fails_over_at_once_but_retry_after_is_honoured(
    tmp_path: Path,
) -> None:
    with ScriptedServer() as first, ScriptedServer() as second:
        policy = {"with_fallback": "retry_after", "max_attempts": 3}
        first.enqueue(Fault.status(503))
        second.enqueue(Reply.text("from the second"))
        tier = _tier(tmp_path, first.base_url, second.base_url, retry=policy)
        result = await tier.acall(Q)
        assert result.message.content == "from the second"
        assert len(first.requests) == 1  # a healthy next backend beats a backoff
        assert result.attempts[0].gave_up == "failing over: another backend can take the call"

        first.enqueue(Fault.status(429, retry_after=0.05), Reply.text("after waiting"))
        result = await tier.acall(Q)
        assert result.message.content == "after waiting"  # the server asked: we waited
        assert result.attempts[0].retry_delays_s == [0.05]


async def test_a_deadline_cuts_a_stall_across_attempts(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        srv.set_default(Fault.stall(seconds=10))
        tier = _tier(
            tmp_path,
            srv.base_url,
            request_timeout_s=5.0,
            retry={"deadline_s": 0.3, "max_attempts": 5},
        )
        # The 10 s stall is cut by the 0.3 s deadline: the chain says so, and it made one
        # request, not the five attempts a per-request timeout alone would allow.
        with pytest.raises(TierExhausted, match=r"deadline: no answer within 0\.3s"):
            await tier.acall(Q)
        assert len(srv.requests) == 1


async def test_an_outer_timeout_cancels_cleanly_and_frees_the_probe(tmp_path: Path) -> None:
    with ScriptedServer() as srv:
        srv.set_default(Fault.stall(seconds=10))
        tier = _tier(tmp_path, srv.base_url, request_timeout_s=5.0)
        breaker = tier.backends[0].breaker
        assert breaker is not None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await tier.acall(Q)
        snap = breaker.snapshot()
        assert (snap.state.value, snap.failures) == ("closed", 0)  # no verdict on health


async def test_the_budget_is_asked_before_every_request_and_stops_the_call(
    tmp_path: Path,
) -> None:
    with ScriptedServer() as srv, ScriptedServer() as other:
        srv.enqueue(Fault.status(503), Reply.text("ok", input_tokens=5, output_tokens=2))
        tier = _tier(tmp_path, srv.base_url, retry={"max_attempts": 3})
        budget = RunBudget(max_model_calls=10)
        with budget_scope(budget):
            await tier.acall(Q)
        assert (budget.model_calls, budget.tokens) == (2, 7)  # the retry was asked for too

        srv.set_default(Fault.status(503))
        tier = _tier(tmp_path / "2", srv.base_url, other.base_url, retry={"max_attempts": 3})
        budget = RunBudget(max_model_calls=1)
        before = len(srv.requests)
        with budget_scope(budget), pytest.raises(BudgetExceeded, match="model_calls"):
            await tier.acall(Q)
        assert len(srv.requests) == before + 1 and other.requests == []  # no fallback either
        breaker = tier.backends[0].breaker
        assert breaker is not None and breaker.snapshot().failures == 1


async def test_an_open_breaker_skips_the_backend_without_any_request(tmp_path: Path) -> None:
    with ScriptedServer(api_key="right") as bad, ScriptedServer() as good:
        good.set_default(Reply.text("fine"))
        tier = _tier(tmp_path, bad.base_url, good.base_url)  # sends no key: 401
        first = await tier.acall(Q)
        attempt = first.attempts[0]
        assert (attempt.failure, attempt.breaker, attempt.retries) == ("auth", "open", 0)
        assert len(bad.requests) == 1
        second = await tier.acall(Q)
        skipped = second.attempts[0]
        assert skipped.outcome == "breaker_open"
        assert skipped.reason is not None and "AuthenticationError" in skipped.reason
        assert len(bad.requests) == 1  # not even a connection
        assert second.fallback_reason is not None and "breaker open" in second.fallback_reason


class GatedModel(BaseChatModel):
    """Answers only once ``gate`` is set; ``entered`` tells the test a call is in flight."""

    gate: Any
    entered: Any
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "gated"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        return ChatResult(generations=[ChatGeneration(message=AIMessage("probe ok"))])


async def test_one_probe_at_a_time_while_the_others_fall_back() -> None:
    now = [0.0]
    gated = GatedModel(gate=asyncio.Event(), entered=asyncio.Event())
    primary = ScriptedBackend(gated, id="primary")
    primary.breaker = CircuitBreaker("primary", BreakerPolicy(cooldown_s=10), clock=lambda: now[0])
    spare = ScriptedBackend(ScriptedChatModel(default="spare"), id="spare")
    tier = Tier(name="t", backends=[primary, spare])
    from tierflow.resilience import Failure, FailureKind

    primary.breaker.record_failure(
        primary.breaker.acquire(),
        Failure(kind=FailureKind.CONNECT, reason="refused", error_type="X"),
    )
    now[0] = 10.0  # cool-down over: half-open
    probe = asyncio.create_task(tier.acall(Q))
    await gated.entered.wait()
    others = await asyncio.gather(*(tier.acall(Q) for _ in range(5)))
    assert [r.message.content for r in others] == ["spare"] * 5
    assert all(r.attempts[0].outcome == "breaker_open" for r in others)
    assert "probe" in (others[0].attempts[0].reason or "")
    gated.gate.set()
    result = await probe
    assert result.message.content == "probe ok" and result.attempts[0].breaker == "closed"
    assert gated.calls == 1
    assert primary.breaker.state.value == "closed"


async def test_sensitive_calls_stop_cleanly_when_no_local_backend_is_left(tmp_path: Path) -> None:
    with ScriptedServer() as hosted:
        hosted.set_default(Reply.text("hosted answer"))
        settings = fast_settings(
            tmp_path / "state",
            backends={
                "openai": {"base_url": hosted.base_url, "api_key": "k"},
                "vllm": {"base_url": f"http://127.0.0.1:{closed_port()}/v1"},
            },
        )
        backends = [build_backend(BackendRef.parse(i), settings) for i in ("openai", "vllm:x")]
        tier = Tier(name="reasoning", backends=backends)
        with pytest.raises(ResidencyExhausted) as info:
            await tier.acall(Q, sensitive=True)
        text = str(info.value)
        assert text.startswith("tier 'reasoning': the data is sensitive, so only local backends")
        assert "openai:gpt-4o: residency: sensitive data" in text
        assert "vllm:x: APIConnectionError" in text or "vllm:x: OpenAIConnectionError" in text
        assert hosted.requests == []  # never traded residency for an answer
        attempts = info.value.attempts
        assert [(a.outcome, a.failure) for a in attempts] == [
            ("skipped", None),
            ("failed", "connect"),
        ]
        assert (await tier.acall(Q)).message.content == "hosted answer"  # not sensitive


async def test_breaker_state_carries_over_to_a_new_runner(tmp_path: Path) -> None:
    with ScriptedServer() as openai:
        openai.set_default(Reply.text("from openai"))
        settings = fast_settings(
            tmp_path / "state",
            tiers={"reasoning": {"backends": ["mistral", "openai"]}},
            backends={
                "mistral": {"base_url": f"http://127.0.0.1:{closed_port()}/v1", "api_key": "k"},
                "openai": {"base_url": openai.base_url, "api_key": "k"},
            },
        )
        first = await Runner(settings).ask("hi", graph="direct")
        attempt = first.steps[-1].attempts[0]
        assert (attempt.outcome, attempt.failure, attempt.breaker) == ("failed", "connect", "open")
        second = await Runner(settings).ask("hi again", graph="direct")  # new backends, breakers
        skipped = second.steps[-1].attempts[0]
        assert skipped.outcome == "breaker_open" and second.answer == "from openai"
        assert skipped.reason is not None and skipped.reason.startswith("breaker open after")


async def test_retries_and_breaker_changes_are_span_events(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tierflow import telemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with ScriptedServer() as flaky, ScriptedServer(api_key="right") as locked:
        flaky.enqueue(Fault.status(503, retry_after=0.01), Reply.text("second try"))
        tier = _tier(tmp_path, locked.base_url, flaky.base_url)  # locked: 401, then flaky
        with (
            telemetry.use_providers(tracer_provider=provider),
            telemetry.tracer().start_as_current_span("invoke_agent test"),  # as in a run
        ):
            result = await tier.acall(Q)
    provider.shutdown()
    assert result.message.content == "second try"
    events = [
        (e.name, dict(e.attributes or {})) for s in exporter.get_finished_spans() for e in s.events
    ]
    breaker = [a for n, a in events if n == "tierflow.breaker"]
    retry = [a for n, a in events if n == "tierflow.retry"]
    assert [(a["tierflow.backend"], a["tierflow.breaker.state"]) for a in breaker] == [
        ("vllm:b0", "open")
    ]
    assert len(retry) == 1 and retry[0]["tierflow.backend"] == "vllm:b1"
    assert retry[0]["tierflow.retry.delay_s"] == 0.01 and retry[0]["tierflow.retry.attempt"] == 2


async def test_a_local_only_agent_degrades_with_the_residency_reason(tmp_path: Path) -> None:
    from langgraph.graph import START, StateGraph

    from tierflow import Agent, BuildContext, add_agent
    from tierflow.state import GraphState

    with ScriptedServer() as hosted:
        hosted.set_default(Reply.text("hosted answer"))
        settings = fast_settings(
            tmp_path / "state",
            backends={
                "openai": {"base_url": hosted.base_url, "api_key": "k"},
                "vllm": {"base_url": f"http://127.0.0.1:{closed_port()}/v1"},
            },
        )
        tier = Tier(
            name="reasoning",
            backends=[build_backend(BackendRef.parse(i), settings) for i in ("openai", "vllm:x")],
        )
        agent = Agent(name="private", instructions="Be brief.", tier="reasoning", local_only=True)

        def factory(ctx: BuildContext) -> StateGraph[GraphState]:
            graph: StateGraph[GraphState] = StateGraph(GraphState)
            graph.add_edge(START, add_agent(graph, agent, ctx.tiers))
            return graph

        runner = Runner(settings, tiers={"reasoning": tier}, graphs={"one": factory})
        record = await runner.ask("My salary is 80k; is that fair?", graph="one")
    assert record.degraded and record.answer.startswith("[degraded]")
    assert "openai:gpt-4o: residency: caller is local_only" in record.answer
    assert "may only go to local backends" in record.answer
    # the step keeps each attempt's own outcome: the hosted one skipped, the local one failed
    assert [a.outcome for a in record.steps[-1].attempts] == ["skipped", "failed"]
    assert hosted.requests == []


async def test_a_returning_backend_is_used_after_one_cooldown_and_one_probe(
    tmp_path: Path,
) -> None:
    port = closed_port()
    tier = _tier(tmp_path, f"http://127.0.0.1:{port}/v1", breaker={"cooldown_s": 30})
    primary = tier.backends[0]
    spare = ScriptedBackend(ScriptedChatModel(default="spare"), id="spare")
    tier = Tier(name="t", backends=[primary, spare])
    now = [2_000_000.0]
    assert primary.breaker is not None
    primary.breaker = CircuitBreaker(primary.id, primary.breaker.policy, clock=lambda: now[0])
    assert (await tier.acall(Q)).attempts[0].breaker == "open"  # refused
    with ScriptedServer(port=port) as back:  # the backend returns on its port
        back.set_default(Reply.text("primary again"))
        now[0] += 29.0
        assert (await tier.acall(Q)).message.content == "spare"  # still cooling down
        assert back.requests == []
        now[0] += 1.0
        probe = await tier.acall(Q)
        assert probe.message.content == "primary again" and probe.attempts[0].breaker == "closed"
        assert len(back.requests) == 1
        assert (await tier.acall(Q)).message.content == "primary again"
