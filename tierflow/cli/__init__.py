"""The ``tierflow`` command line (typer): ``ask``, ``tool``, ``guard``, ``doctor``,
``local``, ``bench``. A driver: commands import what they use when they run.

Layer: top (with runner, ui, bench); nothing below imports it.
"""

from tierflow.cli.app import app, main

__all__ = ["app", "main"]
