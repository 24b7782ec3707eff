"""Input, tool-call, tool-result and output guardrails: the contract, built-ins, stages.
Layer: guardrails; may import only tools, models, resilience, telemetry and the core.

The contract is in :mod:`tierflow.guardrails.base` (``Verdict``, ``GuardContext``,
``@guardrail``, ``run_stage``); the built-ins are named in :mod:`tierflow.guardrails.builtin`.
"""

from tierflow.guardrails.base import (
    STAGES,
    Action,
    Finding,
    FunctionGuardrail,
    GuardContext,
    Guardrail,
    PlaceholderVault,
    RedactionConflict,
    Stage,
    StageResult,
    Verdict,
    guardrail,
    merge_redactions,
    run_stage,
)
from tierflow.guardrails.builtin import BUILTIN_GUARDRAILS, builtin_guardrail, guardrails_for_stage
from tierflow.guardrails.builtin.pii import find_pii, redact_pii
from tierflow.guardrails.builtin.secrets import find_secrets
from tierflow.guardrails.builtin.size import normalize

__all__ = [
    "BUILTIN_GUARDRAILS",
    "STAGES",
    "Action",
    "Finding",
    "FunctionGuardrail",
    "GuardContext",
    "Guardrail",
    "PlaceholderVault",
    "RedactionConflict",
    "Stage",
    "StageResult",
    "Verdict",
    "builtin_guardrail",
    "find_pii",
    "find_secrets",
    "guardrail",
    "guardrails_for_stage",
    "merge_redactions",
    "normalize",
    "redact_pii",
    "run_stage",
]
