"""The shapes telemetry reads from the layers above it (a backend, a tier, an agent).

Telemetry sits below models and agents, so it names what it needs as protocols instead of
importing those classes: any object with these attributes can be traced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class BackendLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def model_name(self) -> str: ...
    @property
    def local(self) -> bool: ...


class TierLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def local_only(self) -> bool: ...
    @property
    def backends(self) -> Sequence[BackendLike]: ...


class ToolLike(Protocol):
    @property
    def description(self) -> str: ...


class AgentLike(Protocol):
    @property
    def name(self) -> str: ...
    def tool(self, name: str) -> ToolLike | None: ...
