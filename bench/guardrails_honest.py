"""The figures issue 14 asks for: leave-one-source-out folds and the fresh test set.

``tierflow bench guardrails-eval`` (:func:`run`, which also reports the old hash split of
``guardrails_eval`` and the PII corpora).

- Folds (``guardrails_folds``): the heuristics are fixed (their patterns were tuned on the
  dev half of every source, so for them a fold is only a per-source figure); the classifier
  of fold ``s`` is trained without source ``s`` and its thresholds are chosen without it.
  The judge is not run on the folds (thousands of texts on a 0.5B model); the share of
  each fold that would reach it is reported, and a text there counts as allowed (what the
  detector does when the judge gives no verdict).
- Fresh test set (``fresh_test.jsonl``): the shipped detector, exactly as configured by
  default, each item through its stage (``input`` or ``tool_result``) with ``run_stage``;
  latency per item, grouped by the deepest layer that ran.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from typing import Any

import numpy as np

from tierflow.bench.guardrails_eval import (
    DATA,
    GOALS,
    Item,
    _items,
    _rate,
    _summary,
    evaluate,
    evaluate_pii,
    load_corpus,
    load_pii,
)
from tierflow.bench.guardrails_folds import embeddings, loso
from tierflow.guardrails import GuardContext, guardrails_for_stage, run_stage
from tierflow.guardrails.base import Action, StageResult
from tierflow.settings import GuardrailsSettings, InjectionLayerSettings

HEURISTICS = GuardrailsSettings(classifier=False)
NO_JUDGE = GuardrailsSettings(
    injection_layers=InjectionLayerSettings(input=["heuristics", "classifier"])
)


def fresh_items() -> list[Item]:
    return _items(DATA / "fresh_test.jsonl")


async def _timed(items: list[Item], cfg: GuardrailsSettings) -> list[tuple[StageResult, float]]:
    stages = {
        "input": guardrails_for_stage(cfg.stages.input, cfg),
        "tool_result": guardrails_for_stage(cfg.stages.tool_result, cfg),
    }
    out = []
    for it in items:
        started = time.perf_counter()
        result = await run_stage(stages[it.stage], it.text, GuardContext(stage=it.stage))
        out.append((result, (time.perf_counter() - started) * 1000))
    return out


def _pct(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0}
    s = sorted(samples)
    return {
        "n": len(s),
        "p50_ms": round(statistics.median(s), 2),
        "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))], 2),
    }


def _deepest(result: StageResult, item: Item, cfg: GuardrailsSettings) -> str:
    layers = {f.layer for v in result.verdicts for f in v.findings}
    if "judge" in layers:
        return "judge"
    if "classifier" in layers:
        return "classifier"
    heuristic_block = result.action is Action.BLOCK
    input_layers = cfg.injection_layers.input if cfg.classifier is not False else ["heuristics"]
    if item.stage == "input" and "classifier" in input_layers and not heuristic_block:
        return "classifier"
    return "heuristics"


def _score(items: list[Item], runs: list[tuple[StageResult, float]]) -> dict[str, Any]:
    attacks = [(it, r) for it, (r, _) in zip(items, runs, strict=True) if it.kind == "attack"]
    benign = [(it, r) for it, (r, _) in zip(items, runs, strict=True) if it.kind == "benign"]
    blocked = [r.action is Action.BLOCK for _, r in attacks]
    flagged = [r.action is not Action.ALLOW for _, r in benign]
    a_items = [it for it, _ in attacks]
    b_items = [it for it, _ in benign]
    fam_n = Counter(it.family for it in a_items)
    fam_hit = Counter(it.family for it, b in zip(a_items, blocked, strict=True) if b)
    ben_n = Counter(it.family for it in b_items)
    ben_hit = Counter(it.family for it, f in zip(b_items, flagged, strict=True) if f)
    return {
        "attacks": len(attacks),
        "attacks_blocked": _rate(sum(blocked), len(attacks)),
        "benign": len(benign),
        "benign_flagged": _rate(sum(flagged), len(benign)),
        "attacks_by_family": {k: f"{fam_hit[k]}/{n}" for k, n in sorted(fam_n.items())},
        "benign_flagged_by_family": {k: f"{ben_hit[k]}/{n}" for k, n in sorted(ben_n.items())},
        "misses": [it.id for it, b in zip(a_items, blocked, strict=True) if not b],
        "false_positives": [it.id for it, f in zip(b_items, flagged, strict=True) if f],
    }


def fresh_report(judge: bool = True) -> dict[str, Any]:
    """Blocked %, false-positive % and latency per layer on the fresh test set."""
    from tierflow.guardrails.builtin.classifier import injection_probability

    injection_probability("warm up")  # load the embedder before timing
    items = fresh_items()
    configs = {"heuristics": HEURISTICS, "heuristics+classifier": NO_JUDGE}
    if judge:
        configs["default (heuristics+classifier+judge)"] = GuardrailsSettings()
    out: dict[str, Any] = {}
    for label, cfg in configs.items():
        runs = asyncio.run(_timed(items, cfg))
        by_layer: dict[str, list[float]] = {}
        for it, (result, ms) in zip(items, runs, strict=True):
            by_layer.setdefault(_deepest(result, it, cfg), []).append(ms)
        benign_input = [
            _deepest(r, it, cfg) == "judge"
            for it, (r, _) in zip(items, runs, strict=True)
            if it.kind == "benign"
        ]
        out[label] = {
            **_score(items, runs),
            "latency_all": _pct([ms for _, ms in runs]),
            "latency_by_deepest_layer": {k: _pct(v) for k, v in sorted(by_layer.items())},
            "judge_fired_on_benign": _rate(sum(benign_input), len(benign_input)),
        }
    return out


def loso_report() -> dict[str, Any]:
    """Every fold: attacks blocked and benign flagged, heuristics alone and with the
    classifier trained without the fold's source, and the share sent to the judge."""
    items = load_corpus() + _items(DATA / "own_hard_negatives.jsonl")
    heur = [r.action for r, _ in asyncio.run(_timed(items, HEURISTICS))]
    train = [i for i, it in enumerate(items) if it.stage == "input"]
    folds = loso([items[i] for i in train], embeddings([items[i] for i in train]))
    prob = np.full(len(items), -1.0)  # tool_result items: no classifier by default
    prob[train] = folds.oof
    from tierflow.bench.guardrails_folds import group_of

    out: dict[str, Any] = {}
    for g in sorted({group_of(it) for it in items}):
        block, grey = folds.fold_thresholds.get(g, (folds.block, folds.grey))
        idx = [i for i, it in enumerate(items) if group_of(it) == g]
        row: dict[str, Any] = {"thresholds": [round(block, 3), round(grey, 3)]}
        for kind in ("attack", "benign"):
            ids = [i for i in idx if items[i].kind == kind]
            if not ids:
                continue
            h = [heur[i] is not Action.ALLOW if kind == "benign" else heur[i] is Action.BLOCK
                 for i in ids]  # fmt: skip
            c = [hi or prob[i] >= block for hi, i in zip(h, ids, strict=True)]
            gz = [not hi and grey <= prob[i] < block for hi, i in zip(h, ids, strict=True)]
            key = "attacks_blocked" if kind == "attack" else "benign_flagged"
            row[kind + "s"] = len(ids)
            row[key] = {
                "heuristics": _rate(sum(h), len(ids)),
                "heuristics+classifier": _rate(sum(c), len(ids)),
                "to_judge": _rate(sum(gz), len(ids)),
            }
        out[g] = row
    return {"folds": out, "shipped_thresholds": [round(folds.block, 4), round(folds.grey, 4)]}


#: Measured on the fresh test set before the detector changed (commit d1a95ba, the
#: classifier then trained on the dev hash half and off by default).
BEFORE_FRESH = {
    "heuristics (then the default)": {"attacks_blocked": 0.6258, "benign_flagged": 0.1104},
    "heuristics+classifier (then optional)": {
        "attacks_blocked": 0.7791,
        "benign_flagged": 0.2597,
    },
}


def run(judge: bool = True) -> dict[str, Any]:
    """The figures recorded in ``bench/results/guardrails-eval.json``."""
    items = load_corpus()
    heuristic = evaluate(items, HEURISTICS)
    out: dict[str, Any] = {
        "goals": GOALS,
        "corpus": {
            "attacks": sum(it.kind == "attack" for it in items),
            "benign": sum(it.kind == "benign" for it in items),
            "split": "sha256(text)[0] even -> dev (patterns tuned); odd -> heldout. The "
            "classifier is now trained on every source, so only the heuristics are "
            "reported on this split; see leave_one_source_out",
        },
        "fresh_test": fresh_report(judge=judge),
        "fresh_test_before": BEFORE_FRESH,
        "leave_one_source_out": loso_report(),
        "summary": {"heuristic": _summary(heuristic)},
        "heuristic": heuristic,
    }
    out["pii"] = evaluate_pii(load_pii())
    out["pii_in_context"] = evaluate_pii(_items_raw("pii_context.jsonl"))
    return out


def _items_raw(name: str) -> list[dict[str, Any]]:
    from tierflow.bench.guardrails_eval import _read

    return _read(DATA / name)
