"""``tierflow serve``: the HTTP API (Agent Protocol) over the Runner, and what it stands on.

``auth`` turns ``TIERFLOW_API_KEYS`` into the set of accepted keys, checks each request's
``x-api-key`` header (the header ``langgraph-sdk`` sends with ``api_key=``) and refuses to
listen beyond loopback without keys. Needs the ``server`` extra (FastAPI, uvicorn).
"""
