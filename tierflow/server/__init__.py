"""The HTTP API (``tierflow serve``): the part of the Agent Protocol / LangGraph Server API
Layer: server; may import runner, graphs and every layer below; only the CLI and bench import it.

that ``langgraph-sdk`` uses, over tierflow's graphs; ``auth`` turns ``TIERFLOW_API_KEYS``
into accepted keys, checks each request's ``x-api-key`` header (what ``langgraph-sdk`` sends
with ``api_key=``) and refuses to listen beyond loopback without keys. Needs the ``server``
extra (FastAPI, uvicorn). See docs/architecture.md, "Server".

Example::

    from langgraph_sdk import get_client
    client = get_client(url="http://127.0.0.1:8123")
    thread = await client.threads.create()
    state = await client.runs.wait(thread["thread_id"], "default",
                                   input={"messages": [{"role": "user", "content": "hi"}]})
"""

from tierflow.server.app import create_app

__all__ = ["create_app"]
