"""Tool-calling accuracy of the embedded model on BFCL, in both of tierflow's tool modes.

The data, the possible answers and the scorer are the Berkeley Function Calling
Leaderboard's own (``bfcl-eval``, offline): categories ``simple_python`` and ``multiple``,
scored by BFCL's AST checker. The model is asked through tierflow's real path, a
:class:`~tierflow.models.tiers.Tier` over the embedded
:class:`~tierflow.models.backends.LocalBackend` with
:class:`~tierflow.agents._turn.AgentTurnPlan`, in two modes:

- ``native``: OpenAI ``tools=[...]`` rendered by the model's chat template; only the
  server's ``tool_calls`` count. ``native+recovery`` scores the same replies the way
  tierflow reads them, with tool calls written as text recovered (``_recover``).
- ``constrained``: the reply is constrained by the turn's JSON schema (``turn_schema``),
  the mode tierflow uses for local backends.

A deterministic subset: the first ``TIERFLOW_BFCL_LIMIT`` items of each category.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import types
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from langchain_core.messages import BaseMessage, ToolCall, convert_to_messages

from tierflow.agents._turn import AgentTurnPlan, ModelTurn
from tierflow.errors import TierExhausted
from tierflow.models.backends import Backend, LocalBackend
from tierflow.models.local_model import DEFAULT_MODEL
from tierflow.models.tiers import Tier
from tierflow.record import Usage
from tierflow.settings import BackendRef, TierflowSettings, load_settings
from tierflow.tools.tool import Tool, ToolError

CATEGORIES = ("simple_python", "multiple")
# Per category. 2 x 25 items, two calls each: ~6 min on an idle 2-core machine (from the
# token counts at `tierflow bench embedded` speeds); 20 min measured with another model
# process sharing the cores.
DEFAULT_LIMIT = 25
MAX_TOKENS = 256  # a BFCL call is < 100 tokens; a reply cut here is a miss
REQUEST_TIMEOUT_S = 600.0
MODES = ("native", "native+recovery", "constrained")
#: This benchmark's key in BFCL's model registry; the checker reads one flag from it.
MODEL_KEY = "tierflow-local"


def load_bfcl(settings: TierflowSettings) -> None:
    """Make ``bfcl_eval`` importable without its vendor SDKs; call it before the rest.

    BFCL's files go to ``BFCL_PROJECT_ROOT``, by default ``<cache_dir>/bfcl``.

    Importing BFCL's constants creates ``result/``, ``score/`` and lock folders under
    ``BFCL_PROJECT_ROOT`` (left unset, beside site-packages). Its AST checker imports BFCL's
    model registry, which imports every provider SDK BFCL supports (anthropic, cohere,
    google-genai, qwen-agent, ...) only to read one flag, ``underscore_to_dot``; a registry
    holding this benchmark's entry alone stands in for it, so ``bfcl-eval`` can be installed
    without its dependencies (they include torch and CUDA wheels).
    """
    os.environ.setdefault("BFCL_PROJECT_ROOT", str(settings.cache_dir / "bfcl"))
    name = "bfcl_eval.constants.model_config"
    if name not in sys.modules:
        registry = types.ModuleType(name)
        registry.MODEL_CONFIG_MAPPING = {}  # type: ignore[attr-defined]
        sys.modules[name] = registry
    from bfcl_eval.eval_checker.ast_eval import ast_checker

    # Tool names had '.' turned into '_' (OpenAI's name rule): the checker maps them back.
    flags = types.SimpleNamespace(underscore_to_dot=True)
    ast_checker.MODEL_CONFIG_MAPPING.setdefault(MODEL_KEY, flags)


def _not_executed(**_: Any) -> Any:
    raise ToolError("BFCL tools are scored, never run", type="not_executed")


def bfcl_tools(functions: Sequence[dict[str, Any]]) -> list[Tool]:
    """tierflow tools for a BFCL item's function docs.

    BFCL's own OpenAI conversion turns its types (``dict``, ``float``, ``tuple``, ``any``)
    into JSON-schema ones and ``.`` in names into ``_``.
    """
    from bfcl_eval.constants.enums import ModelStyle
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    from bfcl_eval.model_handler.utils import convert_to_tool

    specs = convert_to_tool(list(functions), GORILLA_TO_OPENAPI, ModelStyle.OPENAI_COMPLETIONS)
    return [
        Tool.from_json_schema(
            f["function"]["name"],
            f["function"]["description"],
            f["function"]["parameters"],
            _not_executed,
        )
        for f in specs
    ]


def bfcl_messages(entry: dict[str, Any]) -> list[BaseMessage]:
    """The first (only, in these categories) turn of a BFCL question."""
    return convert_to_messages(entry["question"][0])


def score(
    entry: dict[str, Any], answer: dict[str, Any], calls: Sequence[ToolCall], category: str
) -> tuple[bool, str | None]:
    """BFCL's AST verdict on the calls: ``(correct, error_type)``."""
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    if not calls:
        return False, "no_tool_call"
    output = [{c["name"]: c["args"]} for c in calls]
    verdict = ast_checker(
        entry["function"], output, answer["ground_truth"], Language.PYTHON, category, MODEL_KEY
    )
    return bool(verdict["valid"]), None if verdict["valid"] else str(verdict.get("error_type"))


def native_calls(turn: ModelTurn) -> list[ToolCall]:
    """The calls the server returned as ``tool_calls``, without text recovery."""
    return [] if turn.recovered else list(turn.tool_calls)


@dataclass(frozen=True)
class _Reply:
    turn: ModelTurn | None  # None: the tier call failed (reply cut off, not JSON, timeout)
    seconds: float
    usage: Usage | None = None
    failure: str | None = None


def _calls(mode: str, reply: _Reply) -> list[ToolCall]:
    if reply.turn is None:
        return []
    return native_calls(reply.turn) if mode == "native" else list(reply.turn.tool_calls)


@dataclass
class _Tally:
    correct: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)
    tokens_in: list[int] = field(default_factory=list)
    tokens_out: list[int] = field(default_factory=list)

    def add(self, category: str, verdict: tuple[bool, str | None], reply: _Reply) -> None:
        self.total[category] += 1
        self.correct[category] += verdict[0]
        if verdict[1]:
            self.errors[verdict[1]] += 1
        self.seconds.append(reply.seconds)
        if reply.usage is not None:
            self.tokens_in.append(reply.usage.input_tokens)
            self.tokens_out.append(reply.usage.output_tokens)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            c: {
                "correct": self.correct[c],
                "total": self.total[c],
                "accuracy": round(self.correct[c] / self.total[c], 3) if self.total[c] else None,
            }
            for c in CATEGORIES
        }
        out["mean_latency_s"] = round(statistics.mean(self.seconds), 2) if self.seconds else None
        if self.tokens_in:
            out["mean_prompt_tokens"] = round(statistics.mean(self.tokens_in))
            out["mean_completion_tokens"] = round(statistics.mean(self.tokens_out))
        out["errors"] = dict(self.errors.most_common())
        return out


async def _ask(tier: Tier, entry: dict[str, Any], tools: list[Tool]) -> _Reply:
    started = time.perf_counter()
    try:
        result = await tier.acall(
            bfcl_messages(entry), plan=AgentTurnPlan(tools, None, True), max_tokens=MAX_TOKENS
        )
    except TierExhausted as exc:  # the item is a miss; say why (e.g. "invalid output")
        why = exc.attempts[-1].summary().split(":")[0] if exc.attempts else "no attempt"
        return _Reply(None, time.perf_counter() - started, failure=why)
    assert isinstance(result.parsed, ModelTurn)
    return _Reply(result.parsed, time.perf_counter() - started, result.usage)


def tool_mode_backends(settings: TierflowSettings) -> tuple[Backend, Backend]:
    """The embedded backend twice: ``(native, constrained)`` tool modes, one server."""
    constrained = LocalBackend(BackendRef.parse("local"), settings=settings)
    # The same embedded server (shared per config), asked the way tierflow asks hosted models.
    native = LocalBackend(BackendRef.parse("local"), settings=settings)
    native.tool_mode = "native"
    return native, constrained


async def _run(limit: int, settings: TierflowSettings) -> dict[str, _Tally]:
    from bfcl_eval.utils import load_dataset_entry, load_ground_truth_entry

    native_backend, constrained_backend = tool_mode_backends(settings)
    # Start the server now so its load time is not counted in the first item's latency.
    await native_backend.ready()
    native = Tier(name="bench-native", backends=[native_backend])
    constrained = Tier(name="bench-constrained", backends=[constrained_backend])
    tallies = {m: _Tally() for m in MODES}
    for category in CATEGORIES:
        entries = load_dataset_entry(category)[:limit]
        answers = {a["id"]: a for a in load_ground_truth_entry(category)}
        for entry in entries:
            tools = bfcl_tools(entry["function"])
            native_reply = await _ask(native, entry, tools)
            replies = {
                "native": native_reply,
                "native+recovery": native_reply,
                "constrained": await _ask(constrained, entry, tools),
            }
            marks = []
            for mode, reply in replies.items():
                verdict = (
                    score(entry, answers[entry["id"]], _calls(mode, reply), category)
                    if reply.failure is None
                    else (False, f"tier_failed: {reply.failure}")
                )
                tallies[mode].add(category, verdict, reply)
                marks.append(f"{mode} {'ok' if verdict[0] else verdict[1]}")
            print(f"{entry['id']}: {'; '.join(marks)}", file=sys.stderr, flush=True)
    return tallies


def run() -> dict[str, Any]:
    """Ask, score and tally; the embedded server stops at interpreter exit (atexit)."""
    settings = load_settings()
    # Accuracy is the figure here: on a busy machine a slow reply should cost latency, not
    # count as a miss, so the per-request deadline is far above any BFCL reply's time.
    resilience = settings.resilience.model_copy(update={"request_timeout_s": REQUEST_TIMEOUT_S})
    settings = settings.model_copy(update={"resilience": resilience})
    load_bfcl(settings)
    limit = int(os.environ.get("TIERFLOW_BFCL_LIMIT", DEFAULT_LIMIT))
    load_before, started = os.getloadavg()[0], time.perf_counter()
    tallies = asyncio.run(_run(limit, settings))
    wall, load_after = time.perf_counter() - started, os.getloadavg()[0]
    return {
        "model": DEFAULT_MODEL.file_name,
        "bfcl_eval": version("bfcl-eval"),
        "categories": list(CATEGORIES),
        "items_per_category": limit,
        "max_tokens": MAX_TOKENS,
        "modes": {m: t.figures() for m, t in tallies.items()},
        "wall_s": round(wall, 1),
        # Other processes sharing the cores (another model server) inflate every latency.
        "load_avg_1m": [round(load_before, 2), round(load_after, 2)],
        "note": (
            f"first {limit} items of each category (TIERFLOW_BFCL_LIMIT); BFCL AST checker; "
            "temperature 0; latency = one tier call (native and native+recovery share it), "
            "sequential, server already loaded"
        ),
    }
