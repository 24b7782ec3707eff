"""The ``tierflow`` command line (typer): ask, tool, guard, doctor, local, bench.
Layer: cli (top, beside ui, never importing it); may import bench and every layer below.

A driver: commands import what they use when they run, so ``tierflow --help`` stays light.
"""

from tierflow.cli.app import app, main

__all__ = ["app", "main"]
