"""The HTTP API: the part of the Agent Protocol / LangGraph Server API that
``langgraph-sdk`` uses, over tierflow's graphs (``tierflow serve``).

Layer: driver, under the CLI (which starts it) and the benchmarks; it uses the runner and
the graphs, and nothing below imports it. See docs/architecture.md, "Server".

Example::

    from langgraph_sdk import get_client
    client = get_client(url="http://127.0.0.1:8123")
    thread = await client.threads.create()
    state = await client.runs.wait(thread["thread_id"], "default",
                                   input={"messages": [{"role": "user", "content": "hi"}]})
"""

from tierflow.server.app import create_app

__all__ = ["create_app"]
