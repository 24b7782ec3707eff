"""The server takes the same thread lease as the Runner and the CLI (``leases.sqlite`` in
the state dir): while a server run is on a thread, another process cannot start one there,
and once it ends the thread is free again."""

from __future__ import annotations

import pytest

from tierflow.errors import ThreadBusy
from tierflow.runner.lease import leases_for

from .conftest import RELEASE, Served, client, hold_run, new_thread


async def test_a_server_run_holds_the_thread_against_other_processes(served: Served) -> None:
    c = client(served)
    thread = await new_thread(c)
    # what `tierflow ask --thread` uses with the same settings
    other = leases_for(served.state_dir, served.database_url)
    run = await hold_run(c, served, thread)  # running, inside its tool
    with pytest.raises(ThreadBusy, match="busy with another run"):
        async with other.hold(thread, strategy="reject", ttl_s=30):
            pass
    RELEASE.set()
    await c.runs.join(thread, run["run_id"])
    async with other.hold(thread, strategy="reject", ttl_s=30):
        pass  # free once the server's run ended
