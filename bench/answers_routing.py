"""``tierflow bench answers --routing``: the default graph's router alone, on the 63
questions, three ways: cue words then the semantic router then the router tier's model
(the default), without the cue words, and the model alone. Only the router node runs
(no specialist), so this takes minutes where the whole benchmark takes an hour on 2 cores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import Runnable

from tierflow.bench.answers_truth import ROUTES, Question, load_questions
from tierflow.graphs.builder import router_graph
from tierflow.graphs.context import BuildContext
from tierflow.graphs.default import specialists
from tierflow.models.tiers import TierSet
from tierflow.settings import load_settings
from tierflow.tools.demo.shop import build_shop_db
from tierflow.tools.retrieval import demo_docs_dir
from tierflow.tools.sql import demo_db_path

SETUPS = ("keywords+semantic+model", "semantic+model", "model")


async def _route(ctx: BuildContext, setup: str, questions: list[Question]) -> list[dict[str, Any]]:
    routes = specialists(ctx)
    if setup != SETUPS[0]:
        routes = {
            n: dataclasses.replace(r, keywords=(), strong_keywords=()) for n, r in routes.items()
        }
    embedder = ctx.embedder() if setup != "model" else None
    graph = router_graph(ctx.tiers, routes, default="docs", embedder=embedder)
    node = graph.nodes["router"].runnable
    assert isinstance(node, Runnable)  # router_graph adds a plain async function, wrapped
    rows = []
    for q in questions:
        started = time.perf_counter()
        out = await node.ainvoke({"messages": [HumanMessage(q.text)]})
        step = (out.get("steps") or [{}])[-1]
        step = step if isinstance(step, dict) else step.model_dump()
        rows.append(
            {
                "id": q.id,
                "route": q.route,
                "routed": out.get("route"),
                "right": out.get("route") in q.routes,
                "decided_by": step.get("backend"),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        mark = "ok" if rows[-1]["right"] else "XX"
        print(
            f"{mark} {setup} {q.id} -> {out.get('route')} ({step.get('backend')})", file=sys.stderr
        )
    return rows


def _share(rows: list[dict[str, Any]]) -> float:
    return round(sum(r["right"] for r in rows) / len(rows), 3) if rows else 0.0


def run_routing(setups: tuple[str, ...] = SETUPS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tierflow-routing-") as tmp:
        settings = load_settings(state_dir=Path(tmp))
        questions = load_questions(build_shop_db(demo_db_path(settings)), demo_docs_dir())
        ctx = BuildContext(TierSet.from_settings(settings), settings)
        out: dict[str, Any] = {}
        for setup in setups:
            rows = asyncio.run(_route(ctx, setup, questions))
            deciders: dict[str, int] = {}
            for r in rows:
                deciders[str(r["decided_by"])] = deciders.get(str(r["decided_by"]), 0) + 1
            out[setup] = {
                "routed_right": _share(rows),
                "per_route": {x: _share([r for r in rows if r["route"] == x]) for x in ROUTES},
                "decided_by": deciders,
                "misrouted": [f"{r['id']} -> {r['routed']}" for r in rows if not r["right"]],
                "questions": rows,
            }
    return out
