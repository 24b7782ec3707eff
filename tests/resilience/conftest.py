"""Shared pieces of the fault-injection suite: fast resilience settings, and a tier whose
chain is [a faulty backend, a healthy fallback], each a real client against a real
ScriptedServer (or a dead port) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tierflow.models.backends import build_backend
from tierflow.models.tiers import Tier
from tierflow.runner import Runner
from tierflow.settings import BackendRef, TierflowSettings, load_settings
from tierflow.testing import ScriptedServer

#: Small deadlines keep the suite fast: a stall costs 0.3 s per attempt.
FAST: dict[str, Any] = {
    "request_timeout_s": 0.3,
    "connect_timeout_s": 0.3,
    "retry": {
        "max_attempts": 2,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.02,
        "max_retry_after_s": 1.0,
        "deadline_s": 5.0,
        "with_fallback": "retry",  # retry the faulty backend before falling back
    },
    "breaker": {"failure_threshold": 3, "cooldown_s": 60.0},
}

FAULTY = {"openai": "openai:gpt-4o", "mistral": "mistral:mistral-large-latest"}
HEALTHY = "vllm:healthy"


def fast_settings(state_dir: Path, **overrides: Any) -> TierflowSettings:
    """FAST, with ``resilience=`` merged over it one level deep."""
    resilience = {k: dict(v) if isinstance(v, dict) else v for k, v in FAST.items()}
    for key, value in overrides.pop("resilience", {}).items():
        if isinstance(value, dict):
            resilience[key] = {**resilience.get(key, {}), **value}
        else:
            resilience[key] = value
    return load_settings(state_dir=state_dir, resilience=resilience, **overrides)


@dataclass
class Rig:
    """A tier [faulty, healthy] on real clients, and a runner over it (graph "direct")."""

    flavor: str
    faulty_url: str
    healthy: ScriptedServer
    settings: TierflowSettings
    tier: Tier
    runner: Runner

    @property
    def faulty_id(self) -> str:
        return FAULTY[self.flavor]


def make_rig(
    state_dir: Path,
    flavor: str,
    faulty_url: str,
    healthy: ScriptedServer,
    *,
    api_key: str = "sk-test",
    resilience: dict[str, Any] | None = None,
) -> Rig:
    settings = fast_settings(
        state_dir,
        backends={
            flavor: {"base_url": faulty_url, "api_key": api_key},
            "vllm": {"base_url": healthy.base_url},
        },
        resilience=resilience or {},
    )
    backends = [build_backend(BackendRef.parse(i), settings) for i in (FAULTY[flavor], HEALTHY)]
    tier = Tier(name="reasoning", backends=backends)
    runner = Runner(settings, tiers={"reasoning": tier})
    return Rig(flavor, faulty_url, healthy, settings, tier, runner)


@pytest.fixture
def healthy() -> Iterator[ScriptedServer]:
    with ScriptedServer(flavor="openai") as server:
        yield server
