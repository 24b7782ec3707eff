"""``tierflow bench answers``: are the default graph's answers right?

Runs every question of ``bench/data/answers/questions.toml`` (data, docs with the PDF,
exact computations, offline web; English, French, German, Spanish) through the default
graph with the configured tiers: the embedded model by default, any
``TIERFLOW_LOCAL_MODEL``, or a hosted tier when one is configured. Truths are computed
at bench time (``answers_truth``). Per route it reports: correct, routed right, right tool
used, confidently wrong (wrong and neither degraded nor marked unverified), and the
seconds per question. ``--route``, ``--limit`` and ``--ids`` run a subset; ``--tag`` names
the result file (``answers-TAG.json``), e.g. ``before``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tierflow.bench.answers_truth import RIGHT_TOOLS, ROUTES, Question, load_questions, score
from tierflow.errors import UserError
from tierflow.record import RunRecord
from tierflow.runner import Runner
from tierflow.settings import TierflowSettings, load_settings
from tierflow.tools.demo.shop import build_shop_db
from tierflow.tools.retrieval import demo_docs_dir
from tierflow.tools.sql import demo_db_path

LANGUAGES = ("en", "fr", "de", "es")
# An answer that says it may be wrong, or that abstains, is not confidently wrong.
_ABSTAIN = ("this is not in the documents", "do not answer this")
_MARKS = ("unverified", "[degraded]", *_ABSTAIN)


def _marked(record: RunRecord) -> bool:
    """The answer says it may be wrong (degraded, unverified) or abstains."""
    verified = getattr(record, "verified", True)
    return record.degraded or not verified or any(m in record.answer.lower() for m in _MARKS)


def _tools(record: RunRecord) -> set[str]:
    return {c.name for s in record.steps for c in s.tool_calls if c.ok is not False}


def _settings(state_dir: Path) -> TierflowSettings:
    settings = load_settings(state_dir=state_dir)
    if settings.tools.sql.url is not None or settings.tools.retrieval.docs_dir is not None:
        raise UserError(
            "bench answers asks about the demo shop and handbook: unset TIERFLOW_SQL_URL "
            "and TIERFLOW_DOCS_DIR (tools.sql.url, tools.retrieval.docs_dir)"
        )
    return settings


async def _ask(runner: Runner, q: Question) -> dict[str, Any]:
    started = time.perf_counter()
    record = await runner.ask(q.text, thread_id=f"answers-{q.id}-{uuid.uuid4().hex[:8]}")
    seconds = time.perf_counter() - started
    correct = not record.degraded and score(q, record.answer)  # a degraded reply is no answer
    row = {
        "id": q.id,
        "lang": q.lang,
        "route": q.route,
        "routed": record.route,
        "routed_right": record.route in q.routes,
        "tools": sorted(_tools(record)),
        "right_tool": bool(_tools(record) & RIGHT_TOOLS[q.route]),
        "correct": correct,
        "marked": _marked(record),
        "confidently_wrong": not correct and not _marked(record),
        # says "not in the documents" / "does not answer this": no fact claimed, so not
        # counted confidently wrong, but counted here so an abstention cannot hide a miss
        "abstained": not correct and any(m in record.answer.lower() for m in _ABSTAIN),
        "seconds": round(seconds, 2),
        "truth": str(q.value) if q.value is not None else "web unavailable",
        "answer": record.answer[:400],
    }
    mark = "ok " if correct else ("?? " if row["marked"] else "XX ")
    print(f"{mark}{q.id} [{record.route}] {seconds:.1f}s: {record.answer[:90]!r}", file=sys.stderr)
    return row


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    if not n:
        return {"questions": 0}

    def share(key: str) -> float:
        return round(sum(1 for r in rows if r[key]) / n, 3)

    return {
        "questions": n,
        "correct": share("correct"),
        "routed_right": share("routed_right"),
        "right_tool": share("right_tool"),
        "confidently_wrong": sum(1 for r in rows if r["confidently_wrong"]),
        "marked_unverified_or_degraded": sum(1 for r in rows if r["marked"]),
        "wrong_abstained": sum(1 for r in rows if r.get("abstained")),
        "median_s": round(statistics.median(r["seconds"] for r in rows), 2),
        "mean_s": round(statistics.fmean(r["seconds"] for r in rows), 2),
    }


async def _run(
    questions: list[Question], settings: TierflowSettings, partial: Path | None
) -> list[dict[str, Any]]:
    rows = []
    async with Runner(settings) as runner:
        for q in questions:
            rows.append(await _ask(runner, q))
            # an interrupted run (a deadline, a busy machine) keeps the rows it scored
            if partial is not None:
                with partial.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(rows[-1], ensure_ascii=False) + "\n")
    return rows


def run(
    route: str | None = None,
    limit: int | None = None,
    ids: list[str] | None = None,
    partial: Path | None = None,
) -> dict[str, Any]:
    """The figures; with ``partial``, each question's row is also appended there (JSON
    lines) as soon as it is scored."""
    if route is not None and route not in ROUTES:
        raise UserError(f"unknown route '{route}' (routes: {', '.join(ROUTES)})")
    with tempfile.TemporaryDirectory(prefix="tierflow-answers-") as tmp:
        settings = _settings(Path(tmp))
        shop = build_shop_db(demo_db_path(settings))
        questions = load_questions(shop, demo_docs_dir())
        if route is not None:
            questions = [q for q in questions if q.route == route]
        if ids is not None:
            unknown = sorted(set(ids) - {q.id for q in questions})
            if unknown:
                raise UserError(f"unknown question id(s): {', '.join(unknown)}")
            questions = [q for q in questions if q.id in ids]
        if limit is not None:
            # the first `limit` of each route, so a quick run still covers every route
            questions = [q for r in ROUTES for q in [x for x in questions if x.route == r][:limit]]
        rows = asyncio.run(_run(questions, settings, partial))
    tiers = {name: [str(b) for b in t.backends] for name, t in settings.tiers.items()}
    return {
        "tiers": tiers,
        "local_model": str(settings.backends.local.model_path or "packaged Qwen2.5-Coder-0.5B"),
        "overall": _summary(rows),
        "per_route": {r: _summary([x for x in rows if x["route"] == r]) for r in ROUTES},
        "per_language": {
            lang: _summary([x for x in rows if x["lang"] == lang])
            for lang in ("en", "fr", "de", "es")
        },
        "questions": rows,
    }
