"""The chat page: the thread's turns (question, steps, tool calls, answer, feedback),
approval cards for pending tool calls, and a run streaming into the page with Stop.

A run in flight is ``st.session_state.pending`` (what to send) then ``.active`` (its run
id and the text so far): the input is disabled until it ends, and Stop's callback cancels
it on the server before the page runs again.
"""

from __future__ import annotations

import json
import queue
from typing import Any

import streamlit as st

from tierflow.ui import record_view
from tierflow.ui.client import END, Console, RequestFailed, ServerDown

ss = st.session_state
#: How many of the last turns show their steps, tool calls, usage and feedback.
DETAILED_TURNS = 10
#: The run stages of every tierflow graph: bookkeeping, not steps a user cares about.
INTERNAL_NODES = frozenset({"run_input", "run_output"})


def _question(run: dict[str, Any]) -> str:
    messages = (((run.get("kwargs") or {}).get("input") or {}).get("messages")) or [{}]
    return str(messages[-1].get("content", ""))


def _in_state(run: dict[str, Any]) -> bool:
    """Whether the run's question made it into the thread's messages: not when a
    guardrail blocked it, nor when the run failed before its graph started."""
    record = (run.get("kwargs") or {}).get("record")
    if record:
        return bool(record.get("status") != "blocked")
    return bool(run.get("status") == "interrupted")


def turns(messages: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as turns: a question, the messages after it, and its runs (the run
    that asked it, then those that resumed it after approvals). A question that never
    reached the state (blocked, failed early) is a turn of its run alone."""
    asked: list[list[dict[str, Any]]] = []
    for m in messages:
        if m.get("type") == "human":
            asked.append([m])
        elif asked:
            asked[-1].append(m)
    out: list[dict[str, Any]] = []
    for r in runs:
        if (r.get("kwargs") or {}).get("input") is None:
            if out:
                out[-1]["runs"].append(r)  # a resume continues the current turn
            continue
        if _in_state(r) and asked:
            human, *rest = asked.pop(0)
            out.append({"question": human.get("content"), "messages": rest, "runs": [r]})
        else:
            out.append({"question": _question(r), "messages": [], "runs": [r]})
    for human, *rest in asked:  # messages of runs not listed (e.g. asked outside the API)
        out.append({"question": human.get("content"), "messages": rest, "runs": []})
    return out


def _answer(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("type") == "ai" and m.get("content") and not m.get("tool_calls"):
            return str(m["content"])
    return ""


def earlier(older: list[dict[str, Any]]) -> None:
    """Turns before the last few, as one collapsed block of questions and answers: a
    long thread opens fast (each detailed turn is a dozen elements)."""
    if not older:
        return
    with st.expander(f"{len(older)} earlier questions", expanded=False):
        st.markdown(
            "\n\n".join(
                f"**{t['question']}**\n\n{_answer(t['messages']) or '_(no answer)_'}" for t in older
            )
        )


def show_turn(
    c: Console,
    thread: dict[str, Any],
    turn: dict[str, Any],
    info: dict[str, Any],
) -> None:
    with st.chat_message("user"):
        st.markdown(str(turn["question"]))
    with st.chat_message("assistant"):
        record_view.tool_calls(turn["messages"])
        for run in turn["runs"]:
            record = (run.get("kwargs") or {}).get("record")
            if record:
                record_view.banners(record)
                record_view.steps(record)
                record_view.guardrails(record)
            elif run["status"] == "error":
                st.error(f"The run failed: {(run.get('kwargs') or {}).get('error') or 'error'}")
            elif run["status"] == "interrupted":
                partial = ss.setdefault("stopped", {}).get(run["run_id"], "")
                if partial:
                    st.markdown(partial)
                st.warning("Stopped: the run was cancelled on the server.", icon="⏹")
        answer = _answer(turn["messages"])
        if answer:
            st.markdown(answer)
        last = next(
            (r for r in reversed(turn["runs"]) if (r.get("kwargs") or {}).get("record")), None
        )
        if last is not None:
            record_view.footer(
                last["kwargs"]["record"], info.get("budget") or {}, info.get("jaeger_ui_url")
            )
            feedback(c, thread, last["run_id"])


def feedback(c: Console, thread: dict[str, Any], run_id: str) -> None:
    given = ((thread.get("metadata") or {}).get("feedback") or {}).get(run_id)
    if given:
        icon = ":material/thumb_up:" if given["score"] == "up" else ":material/thumb_down:"
        st.caption(f"{icon} feedback {given['score']}: {given.get('comment') or ''}")
        return
    score = st.feedback("thumbs", key=f"fb-{run_id}")
    if score is None:
        return  # the comment box only once a thumb is chosen: fewer widgets per answer
    comment = st.text_input(
        "Comment",
        key=f"fbc-{run_id}",
        label_visibility="collapsed",
        placeholder="comment (optional)",
    )
    if st.button("Send feedback", key=f"fbs-{run_id}"):
        c.feedback(thread["thread_id"], run_id, "up" if score == 1 else "down", comment)
        st.rerun()


def approvals(thread: dict[str, Any]) -> None:
    """A card per pending tool call: Approve, Reject, or Edit arguments then approve.
    Once every pending call has a decision, the run resumes (one decision per call id)."""
    calls = [
        (i["id"], call)
        for group in (thread.get("interrupts") or {}).values()
        for i in group
        if (i.get("value") or {}).get("type") == "approval"
        for call in i["value"].get("calls", [])
    ]
    if not calls:
        return
    decided: dict[str, Any] = ss.setdefault("decisions", {})
    for _, call in calls:
        cid = call["id"]
        with st.container(border=True, key=f"approval-{cid}"):
            st.markdown(f"**Approve tool call** `{call['name']}`")
            edited = st.text_area(
                "arguments (JSON)", json.dumps(call.get("args") or {}), key=f"args-{cid}"
            )
            a, r = st.columns(2)
            if a.button("Approve", key=f"approve-{cid}", type="primary"):
                try:
                    args = json.loads(edited)
                except ValueError as exc:
                    st.error(f"arguments are not JSON: {exc}")
                    continue
                changed = args != (call.get("args") or {})
                decided[cid] = {"action": "approve", "args": args} if changed else "approve"
            if r.button("Reject", key=f"reject-{cid}"):
                decided[cid] = "reject"
    pending = [call["id"] for _, call in calls]
    if all(cid in decided for cid in pending):
        resume = {cid: decided.pop(cid) for cid in pending}
        ss.pending = {"thread_id": thread["thread_id"], "resume": resume}
        st.rerun()


def stop() -> None:
    """Stop's callback: cancel the active run on the server, keep what it streamed."""
    active, c = ss.get("active"), ss.get("console")
    if not active or c is None:
        return
    try:
        c.cancel(active["thread_id"], active["run_id"])
    except (ServerDown, RequestFailed) as exc:
        ss.fault = str(exc)
    ss.setdefault("stopped", {})[active["run_id"]] = active.get("text", "")
    ss.pending = ss.active = None


def stream(job: dict[str, Any], events: queue.Queue[Any]) -> None:
    """Show the events of ``job``'s run as they come: tokens into the answer, tool calls
    and node updates into a live status."""
    if "question" in job:
        with st.chat_message("user"):
            st.markdown(job["question"])
    with st.chat_message("assistant"):
        st.button("Stop", key="stop", on_click=stop, icon=":material/stop_circle:")
        live = st.status("Running…", expanded=True)
        text = st.empty()
        ss.active = {"thread_id": job["thread_id"], "run_id": None, "text": ""}
        answer: dict[str, str] = {}
        while True:
            try:
                item = events.get(timeout=0.25)
            except queue.Empty:
                text.markdown((ss.active or {}).get("text", "") + "▌")  # lets Stop through
                continue
            if item is END:
                break
            if isinstance(item, Exception):
                raise item
            event, data = item
            if event == "metadata" and ss.active is not None:
                ss.active["run_id"] = data.get("run_id")
            elif event == "messages/partial":
                for m in data:
                    if m.get("type") in ("AIMessageChunk", "ai") and isinstance(
                        m.get("content"), str
                    ):
                        answer[str(m.get("id"))] = m["content"]
                        if m["content"] and ss.active is not None:
                            ss.active["text"] = m["content"]
                            text.markdown(m["content"] + "▌")
            elif event == "updates":
                for node, update in (data or {}).items():
                    if node in INTERNAL_NODES:
                        continue
                    live.write(
                        f"**{node}** done" if node != "__interrupt__" else "waiting for approval"
                    )
                    for m in (update or {}).get("messages", []) if isinstance(update, dict) else []:
                        for call in m.get("tool_calls") or []:
                            live.write(f"tool `{call['name']}` {json.dumps(call.get('args'))}")
            elif event == "error":
                ss.fault_run = str(data.get("message") or "the run failed")
        live.update(label="Done", state="complete", expanded=False)


def _submitted() -> None:
    """The chat input's callback: runs before the page does, so that one run of the page
    shows the input disabled and starts the run (no extra rerun before the request)."""
    prompt = ss.get("ask")
    if prompt and ss.get("pending") is None:
        ss.pending = {"thread_id": ss.get("thread_id"), "question": prompt}
        ss.unsent = prompt


def read_prompt() -> None:
    """The chat input, first thing on the page (before any request that may fail), so a
    question typed while the server is down is kept (``unsent``) for Retry."""
    disabled = ss.get("pending") is not None
    st.chat_input("Ask a question", disabled=disabled, key="ask", on_submit=_submitted)


def prepare(c: Console, info: dict[str, Any]) -> dict[str, Any]:
    """The thread as it is, then the pending run started (``events``): it runs on the
    server while the page draws the sidebar and the history, so the first token is not
    held up by them. The history is read first, so the new run is not in it."""
    thread_id = ss.get("thread_id")
    job = ss.get("pending")
    out: dict[str, Any] = {"graph": ss.get("graph") or (info.get("graphs") or ["default"])[0]}
    if thread_id:
        out["thread"] = thread = c.thread(thread_id)
        out["graph"] = str((thread.get("metadata") or {}).get("graph") or out["graph"])
        out["runs"] = c.runs(thread_id)
    if job is not None:
        try:
            if job.get("thread_id") is None:
                job["thread_id"] = ss.thread_id = c.create_thread(out["graph"], job["question"])
        except (ServerDown, RequestFailed) as exc:
            ss.pending = ss.active = None
            if isinstance(exc, ServerDown):
                raise
            ss.fault_run = str(exc)
            st.rerun()
        out["events"] = c.stream(
            job["thread_id"], out["graph"], question=job.get("question"), resume=job.get("resume")
        )
    return out


def page(ready: dict[str, Any], c: Console, info: dict[str, Any]) -> None:
    """The thread (``ready``: from :func:`prepare`) and the pending run streaming in."""
    job = ss.get("pending")
    thread: dict[str, Any] | None = ready.get("thread")
    if thread is not None:
        messages = (thread.get("values") or {}).get("messages") or []
        shown = turns(messages, ready["runs"])
        earlier(shown[:-DETAILED_TURNS])
        for turn in shown[-DETAILED_TURNS:]:
            show_turn(c, thread, turn, info)
        if ss.get("fault_run"):
            st.error(f"The run failed: {ss.pop('fault_run')}")
    if job is None:
        if thread is not None:
            approvals(thread)
        return
    try:
        stream(job, ready["events"])
    except (ServerDown, RequestFailed) as exc:
        ss.pending = ss.active = None
        if isinstance(exc, ServerDown):
            raise
        ss.fault_run = str(exc)
    else:
        ss.unsent = None
        ss.pending = ss.active = None
    st.rerun()
