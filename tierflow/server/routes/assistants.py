"""Assistants: each registered tierflow graph is one (``assistant_id`` = the graph name,
or its deterministic UUID)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tierflow.server.deps import Caller, ServerDep
from tierflow.server.schemas import AssistantSearch
from tierflow.server.wire import jsonable

router = APIRouter(prefix="/assistants", tags=["assistants"])


@router.post("/search")
async def search_assistants(
    body: AssistantSearch, srv: ServerDep, owner: Caller
) -> list[dict[str, Any]]:
    found = [srv.assistant(g) for g in srv.runner.graph_names()]
    if body.graph_id:
        found = [a for a in found if a["graph_id"] == body.graph_id]
    if body.name:
        found = [a for a in found if body.name in a["name"]]
    if body.metadata:
        found = [
            a for a in found if all(a["metadata"].get(k) == v for k, v in body.metadata.items())
        ]
    return found[body.offset : body.offset + body.limit]


@router.get("/{assistant_id}")
async def get_assistant(assistant_id: str, srv: ServerDep, owner: Caller) -> dict[str, Any]:
    return srv.assistant(srv.graph_of(assistant_id))


@router.get("/{assistant_id}/schemas")
async def get_schemas(assistant_id: str, srv: ServerDep, owner: Caller) -> dict[str, Any]:
    graph = srv.graph_of(assistant_id)
    app = srv.runner.compile(graph, srv.runner.checkpointer)

    def schema(method: str) -> Any:
        try:
            return jsonable(getattr(app, method)())
        except Exception:  # a state type pydantic cannot describe: no schema, no 500
            return None

    return {
        "graph_id": graph,
        "input_schema": schema("get_input_jsonschema"),
        "output_schema": schema("get_output_jsonschema"),
        "state_schema": schema("get_input_jsonschema"),
        "config_schema": None,
        "context_schema": None,
    }
