"""Shared fixtures. Every test runs isolated from the developer's config and keys."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierflow.settings import TierflowSettings, load_settings

_SCRUB = ("MISTRAL_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "MISTRAL_BASE_URL")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in list(os.environ):
        tierflow_var = var.startswith("TIERFLOW_") and var != "TIERFLOW_DEBUG"
        if var in _SCRUB or tierflow_var or var.startswith("OTEL_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)  # no ./tierflow.toml from the repo
    yield


@pytest.fixture
def settings(tmp_path: Path) -> TierflowSettings:
    """Default settings with state in the test's own folder (the model cache is shared)."""
    return load_settings(state_dir=tmp_path / "state")
