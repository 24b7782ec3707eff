"""Exceptions, split the way users act on them.

``UserError`` and its children mean "you used tierflow wrong" (bad config, unknown graph,
empty question): the CLI prints them as one line and exits 2. ``RunError`` and its
children mean "the run failed" (every backend of a tier is down, the model file is
missing): the CLI prints one line and exits 1. Anything else is a bug.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierflow.record import Attempt


class TierflowError(Exception):
    """Base of every error tierflow raises on purpose."""


class UserError(TierflowError):
    """The library or CLI was used wrongly; fixing the input fixes it."""


class ConfigError(UserError):
    """The configuration (file, environment or code) is invalid."""


class UnknownGraph(UserError):
    """A graph name that is not registered."""


class RunError(TierflowError):
    """A run could not complete."""


class ThreadBusy(RunError):
    """Another run holds the thread (its lease); retrying later, or waiting, fixes it.

    A run failure rather than a usage error: the same command succeeds once the thread
    is free, so the CLI exits 1.
    """

    def __init__(self, thread_id: str, message: str | None = None) -> None:
        self.thread_id = thread_id
        super().__init__(
            message or f"thread '{thread_id}' is busy with another run; try again, or use --wait"
        )


class LeaseLost(RunError):
    """A run's lease expired and another run took the thread; this run was stopped."""


class DatabaseUnavailable(RunError):
    """The PostgreSQL database of ``[state] database_url`` cannot be reached or used."""


class BackendUnavailable(RunError):
    """A backend cannot be used at all right now (no API key, model file missing...)."""


class TierExhausted(RunError):
    """Every backend of a tier was unavailable or failed.

    ``attempts`` holds each backend's :class:`~tierflow.record.Attempt` as the chain
    recorded it (outcome such as ``breaker_open``, retries, failure class); the message
    lists each backend's reason on one line.
    """

    def __init__(self, tier: str, attempts: Sequence[Attempt]) -> None:
        self.tier = tier
        self.attempts = list(attempts)
        #: ``backend: reason (after N retries: ...)`` for each attempt, ``; ``-separated.
        self.detail = "; ".join(f"{a.backend}: {a.summary()}" for a in self.attempts)
        super().__init__(f"tier '{tier}' exhausted ({self.detail or 'no backends'})")


class LocalModelError(RunError):
    """The embedded model could not be found, verified or started."""
