"""The runner: drives a compiled graph for one question (checkpointer, thread
bookkeeping, the run record). A driver: it may import every layer below it.

Layer: top (with cli, server, ui, bench); nothing below imports it.
"""

from tierflow.runner.runner import Runner

__all__ = ["Runner"]
