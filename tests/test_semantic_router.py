"""The semantic router decides confident cases without a model call; the router tier
decides the rest. The embedder here is a deterministic bag-of-words one; the real
all-MiniLM-L6-v2 path runs in tests/test_embedded.py."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from langgraph.graph import StateGraph
from numpy.typing import NDArray

from tierflow import Agent, BuildContext, Route, Runner, TierflowSettings, router_graph
from tierflow.graphs.semantic import SemanticRouter
from tierflow.state import GraphState
from tierflow.testing import ScriptedChatModel, scripted_tier


class WordsEmbedder:
    model_id = "bag-of-words-64"

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                out[row, sum(map(ord, word)) % 64] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


ROUTES = {
    "orders": ("orders revenue customers", ("how many orders from germany",)),
    "policies": ("returns refunds vacation policy", ("how long to return an item",)),
}


def test_classify_is_confident_only_with_a_clear_margin() -> None:
    router = SemanticRouter(
        WordsEmbedder(), {n: [d, *ex] for n, (d, ex) in ROUTES.items()}, margin=0.1
    )
    clear = router.classify("how many orders from germany last year")
    assert (clear.route, clear.confident) == ("orders", True)
    unclear = router.classify("hello there")
    assert not unclear.confident


def _runner(settings: TierflowSettings, model: ScriptedChatModel) -> Runner:
    def factory(ctx: BuildContext) -> StateGraph[GraphState]:
        routes = {
            name: Route(
                description=desc,
                examples=examples,
                agent=Agent(name=f"{name}_agent", tier="reasoning", instructions="Answer."),
            )
            for name, (desc, examples) in ROUTES.items()
        }
        return router_graph(ctx.tiers, routes, embedder=WordsEmbedder(), margin=0.1)

    tiers = {
        "router": scripted_tier("router", model),
        "reasoning": scripted_tier("reasoning", ScriptedChatModel(default="answer")),
    }
    return Runner(settings, tiers=tiers, graphs={"g": factory})


async def test_confident_route_needs_no_model_call(settings: TierflowSettings) -> None:
    model = ScriptedChatModel()
    record = await _runner(settings, model).ask("How many orders from Germany?", graph="g")
    assert record.route == "orders" and model.calls == []
    step = record.steps[0]
    assert (step.backend, step.model, step.fallback_from) == ("semantic", "bag-of-words-64", None)


async def test_unclear_request_goes_to_the_router_model(settings: TierflowSettings) -> None:
    model = ScriptedChatModel().enqueue({"route": "policies"})
    record = await _runner(settings, model).ask("hello there", graph="g")
    assert record.route == "policies" and len(model.calls) == 1
    step = record.steps[0]
    assert step.fallback_from == "semantic"
    assert [a.outcome for a in step.attempts] == ["skipped", "ok"]
    assert step.attempts[0].reason is not None
    assert step.attempts[0].reason.startswith("not confident:")
