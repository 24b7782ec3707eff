"""The built-in guardrails by name, as ``[guardrails.stages]`` in ``tierflow.toml`` lists them.
Layer: guardrails; may import only tools, models, resilience, telemetry and the core.

::

    from tierflow.guardrails import builtin_guardrail, guardrails_for_stage, run_stage

    cfg = load_settings().guardrails
    result = await run_stage(guardrails_for_stage(cfg.stages.input, cfg), text, ctx)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tierflow.errors import ConfigError
from tierflow.guardrails.base import Guardrail
from tierflow.guardrails.builtin.deny import DenyGuardrail
from tierflow.guardrails.builtin.injection import InjectionGuardrail
from tierflow.guardrails.builtin.output import GroundingGuardrail, SchemaGuardrail
from tierflow.guardrails.builtin.pii import PiiGuardrail
from tierflow.guardrails.builtin.residency import ResidencyGuardrail
from tierflow.guardrails.builtin.secrets import SecretsGuardrail
from tierflow.guardrails.builtin.size import SizeGuardrail
from tierflow.settings import GuardrailsSettings

_FACTORIES: dict[str, Callable[[GuardrailsSettings], Guardrail]] = {
    "size": SizeGuardrail,
    "injection": InjectionGuardrail,
    "pii": PiiGuardrail,
    "secrets": lambda _cfg: SecretsGuardrail(),
    "residency": ResidencyGuardrail,
    "deny": DenyGuardrail,
    "schema": lambda _cfg: SchemaGuardrail(),
    "grounding": GroundingGuardrail,
}

#: The names ``builtin_guardrail`` accepts.
BUILTIN_GUARDRAILS: tuple[str, ...] = tuple(_FACTORIES)


def builtin_guardrail(name: str, cfg: GuardrailsSettings) -> Guardrail:
    """The built-in guardrail ``name`` configured by ``cfg``.

    Raises :class:`~tierflow.errors.ConfigError` for an unknown name (a typo in
    ``tierflow.toml`` must not silently drop a guardrail).
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown guardrail '{name}' (built-in: {', '.join(BUILTIN_GUARDRAILS)})"
        ) from None
    return factory(cfg)


def guardrails_for_stage(names: Sequence[str], cfg: GuardrailsSettings) -> list[Guardrail]:
    """The built-ins ``names`` (e.g. ``cfg.stages.input``), in that order."""
    return [builtin_guardrail(n, cfg) for n in names]
