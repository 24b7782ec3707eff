"""Nodes that degrade (router, planner) keep each attempt as the chain recorded it: the
outcome, the retries and their reasons, the breaker. Real clients against a ScriptedServer."""

from __future__ import annotations

from pathlib import Path

from langgraph.graph import StateGraph

from tierflow import Agent, BuildContext, Route, router_graph
from tierflow.graphs.builder import planner_graph
from tierflow.models.backends import build_backend
from tierflow.models.tiers import Tier
from tierflow.runner import Runner
from tierflow.settings import BackendRef
from tierflow.state import GraphState
from tierflow.testing import Fault, ScriptedChatModel, ScriptedServer, scripted_tier

from .conftest import fast_settings

RETRY_TWICE = {"retry": {"max_attempts": 2}, "breaker": {"failure_threshold": 2}}


def _server_tier(name: str, srv: ScriptedServer, state_dir: Path) -> Tier:
    """A tier whose only backend is an OpenAI-compatible client of ``srv``."""
    settings = fast_settings(
        state_dir, backends={"vllm": {"base_url": srv.base_url}}, resilience=RETRY_TWICE
    )
    return Tier(name=name, backends=[build_backend(BackendRef.parse("vllm:down"), settings)])


def _agent(name: str) -> Agent:
    return Agent(name=name, tier="reasoning", instructions=f"You are the {name}.")


async def test_a_degraded_router_step_keeps_retries_and_then_the_open_breaker(
    tmp_path: Path,
) -> None:
    def two_routes(ctx: BuildContext) -> StateGraph[GraphState]:
        routes = {
            "general": Route(description="anything", agent=_agent("generalist")),
            "code": Route(description="programming", agent=_agent("coder")),
        }
        return router_graph(ctx.tiers, routes)

    with ScriptedServer() as srv:
        srv.set_default(Fault.status(503))
        runner = Runner(
            fast_settings(tmp_path / "state"),
            tiers={
                "router": _server_tier("router", srv, tmp_path / "state"),
                "reasoning": scripted_tier("reasoning", ScriptedChatModel(default="hello")),
            },
            graphs={"default": two_routes},
        )
        first = await runner.ask("Hi there")
        second = await runner.ask("Hi again")
        requests = len(srv.requests)

    assert (first.route, first.answer) == ("general", "hello")  # the default route
    router = first.steps[0]
    assert (router.node, router.degraded, router.backend) == ("router", True, None)
    [attempt] = router.attempts
    assert (attempt.backend, attempt.outcome, attempt.failure, attempt.status_code) == (
        "vllm:down",
        "failed",
        "server",
        503,
    )
    assert attempt.retries == 1 and len(attempt.retry_delays_s) == 1
    assert attempt.retry_reasons == ["OpenAIAPIError: Error code: 503 - scripted status 503"]
    assert attempt.breaker == "open"  # threshold 2: its two failed requests opened it
    assert router.fallback_reason is not None and "after 1 retry" in router.fallback_reason

    [skipped] = second.steps[0].attempts
    assert (skipped.outcome, skipped.retries) == ("breaker_open", 0)
    assert second.steps[0].degraded
    assert requests == 2  # the open breaker cost no request


async def test_a_degraded_planner_step_keeps_the_chain_record(tmp_path: Path) -> None:
    def planned(ctx: BuildContext) -> StateGraph[GraphState]:
        return planner_graph(ctx.tiers, planner_tier="planner", executor=_agent("executor"))

    with ScriptedServer() as srv:
        srv.enqueue(Fault.status(503), Fault.status(503))
        runner = Runner(
            fast_settings(tmp_path / "state"),
            tiers={
                "planner": _server_tier("planner", srv, tmp_path / "state"),
                "reasoning": scripted_tier("reasoning", ScriptedChatModel(default="done")),
            },
            graphs={"default": planned},
        )
        record = await runner.ask("Plan a trip")

    planner = record.steps[0]
    assert (planner.node, planner.degraded) == ("planner", True)
    [attempt] = planner.attempts
    assert (attempt.outcome, attempt.retries, attempt.status_code) == ("failed", 1, 503)
    assert attempt.gave_up is not None
    assert record.answer == "done"  # the whole request became the one step
