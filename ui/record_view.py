"""How one answer's run record shows: banners, the local-only badge, a status per step
(tier, backend, why earlier backends were skipped, retries, latency, tokens, cost),
guardrail verdicts, tool calls with their results, citations, the trace link, usage."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st


def banners(record: dict[str, Any]) -> None:
    """Degraded, partial, stopped-by-budget and blocked runs, and the local-only badge."""
    status = record.get("status")
    if record.get("sensitive"):
        st.badge("local only", icon=":material/lock:", color="violet")
    if status == "blocked":
        reasons = [g["reason"] for g in record.get("guardrails", []) if g["action"] == "block"]
        st.error(f"Blocked by a guardrail: {reasons[0] if reasons else 'no reason given'}")
    elif status == "stopped":
        st.warning(f"Stopped by the run budget: {record.get('stopped_reason') or 'budget spent'}")
    if any(s.get("partial") for s in record.get("steps", [])):
        st.warning("Partial answer: the stream broke and no backend was left to finish it.")
    elif record.get("degraded"):
        st.warning("Degraded: a tier had no working backend; the answer may be incomplete.")


def _skipped(step: dict[str, Any]) -> list[str]:
    lines = []
    for a in step.get("attempts", []):
        if a["outcome"] == "ok":
            continue
        reason = a.get("reason") or a["outcome"]
        lines.append(f"`{a['backend']}` {a['outcome'].replace('_', ' ')}: {reason}")
    return lines


def step_label(step: dict[str, Any]) -> str:
    backend = step.get("backend") or "no backend"
    return f"{step['node']} · tier {step['tier']} · {backend}"


def steps(record: dict[str, Any]) -> None:
    for step in record.get("steps", []):
        with st.status(
            step_label(step), state="error" if step.get("degraded") else "complete", expanded=False
        ):
            usage = step.get("usage") or {}
            st.markdown(
                f"**model** {step.get('model') or '-'} · **latency** "
                f"{step.get('duration_ms', 0):.0f} ms · **tokens** "
                f"{usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out · "
                f"**cost** ${usage.get('cost_usd', 0):.6f}"
            )
            for line in _skipped(step):
                st.markdown(f"- not used: {line}")
            for a in step.get("attempts", []):
                if a.get("retries"):
                    why = "; ".join(a.get("retry_reasons") or [])
                    st.markdown(f"- `{a['backend']}` retried {a['retries']}x: {why}")


def guardrails(record: dict[str, Any]) -> None:
    verdicts = [g for g in record.get("guardrails", []) if g["action"] != "allow"]
    if not verdicts:
        return
    with st.expander(f"Guardrails ({len(verdicts)})", expanded=False):
        for g in verdicts:
            reason = f": {g['reason']}" if g.get("reason") else ""
            st.markdown(f"- **{g['stage']}** · {g['name']} · {g['action']}{reason}")


def tool_calls(messages: list[dict[str, Any]]) -> None:
    """Each tool call of a turn, collapsed: its arguments and its result."""
    results = {m.get("tool_call_id"): m for m in messages if m.get("type") == "tool"}
    for m in messages:
        for call in m.get("tool_calls") or [] if m.get("type") == "ai" else []:
            result = results.get(call.get("id"))
            icon = (
                ":material/hourglass_top:"
                if result is None
                else ":material/build:"
                if result.get("status") != "error"
                else ":material/warning:"
            )
            with st.expander(f"tool `{call['name']}`", expanded=False, icon=icon):
                st.caption("arguments")
                st.json(call.get("args") or {})
                if result is not None:
                    st.caption("result")
                    st.code(str(result.get("content"))[:4000], language=None)
            if result is not None and call["name"] == "retrieve":
                citations(result)


def citations(result: dict[str, Any]) -> None:
    """The passages ``retrieve`` returned, each with its source, so an answer's
    ``[source#position]`` leads to its text."""
    try:
        passages = json.loads(str(result.get("content"))).get("passages") or []
    except (ValueError, AttributeError):
        return
    for p in passages:
        ref = f"{p.get('source')}#{p.get('position')}"
        with st.expander(f"[{ref}]", expanded=False, icon=":material/description:"):
            st.markdown(str(p.get("text", "")))


def footer(record: dict[str, Any], budget: dict[str, Any], jaeger: str | None) -> None:
    """Tokens, cost, trace link, and the share of the run budget this run left."""
    usage = record.get("usage") or {}
    tokens = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
    parts = [f"{tokens} tokens", f"${usage.get('cost_usd', 0):.6f}"]
    url = record.get("trace_url")
    trace_id = str(record.get("trace_id") or "")
    if not url and jaeger and trace_id.strip("0"):
        url = f"{jaeger.rstrip('/')}/trace/{trace_id}"
    if url:
        parts.append(f"[trace]({url})")
    st.caption(" · ".join(parts))
    left = budget_left(record, budget)
    if left is not None:
        st.progress(left, text=f"run budget left: {left:.0%}")


def budget_left(record: dict[str, Any], budget: dict[str, Any]) -> float | None:
    """The smallest share left of the limits the run is measured against (None: none set)."""
    usage = record.get("usage") or {}
    used = {
        "max_tokens": usage.get("input_tokens", 0) + usage.get("output_tokens", 0),
        "max_cost_usd": usage.get("cost_usd", 0.0),
        "max_model_calls": sum(
            1 + a.get("retries", 0)
            for s in record.get("steps", [])
            for a in s.get("attempts", [])
            if a["outcome"] not in ("skipped", "unavailable", "breaker_open")
        ),
    }
    shares = [1 - used[k] / budget[k] for k in used if budget.get(k)]
    return max(0.0, min(shares)) if shares else None
