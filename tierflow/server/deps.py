"""Dependencies every route takes.

``caller`` is the authentication hook: every route receives the caller's identity (the
owner of the threads it creates) through it. With auth off it is ``None`` and every thread
is everyone's; ``tierflow/server/auth.py`` (issue 11, built separately) replaces it by
overriding this one dependency (``app.dependency_overrides[caller] = ...``) to check
``x-api-key`` and return the key's owner. A thread whose owner differs from the caller's is
answered 404, as if it did not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tierflow.server.service import Server


async def caller() -> str | None:
    """The caller's key owner; ``None`` while authentication is off."""
    return None


def server(request: Request) -> Server:
    srv: Server = request.app.state.server
    return srv


Caller = Annotated[str | None, Depends(caller)]
ServerDep = Annotated[Server, Depends(server)]
