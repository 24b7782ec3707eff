"""``tierflow state``: the checkpoint store (``[state]``). ``prune`` applies the retention
of ``[state] keep_days`` / ``keep_threads`` (or the options) once, now."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer


def state_app(guard: Callable[[Callable[[], Any]], Any], echo: Callable[[str], Any]) -> typer.Typer:
    """The ``state`` commands; ``guard`` turns errors into the CLI's one-line messages
    (``cli.app._guard``, passed in so this module does not import the app)."""
    app = typer.Typer(no_args_is_help=True, help="The checkpoint store ([state]).")

    @app.command("prune")
    def prune(
        keep_days: Annotated[
            float | None,
            typer.Option(min=0, help="Delete threads idle longer than this ([state] keep_days)."),
        ] = None,
        keep_threads: Annotated[
            int | None,
            typer.Option(min=0, help="Keep this many recent threads ([state] keep_threads)."),
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="Config file (default: ./tierflow.toml)."),
        ] = None,
    ) -> None:
        """Delete the checkpoints of threads past the retention, and say how many."""

        def run() -> int:
            import asyncio

            from tierflow.runner.retention import prune_store
            from tierflow.settings import load_settings

            return asyncio.run(prune_store(load_settings(config), keep_days, keep_threads))

        echo(f"deleted {guard(run)} thread(s)")

    return app
