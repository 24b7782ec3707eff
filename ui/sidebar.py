"""The threads sidebar: the caller's threads newest first (they live on the server, so
they survive a reload and a console restart), search, rename, delete, continue; a new
thread on a chosen graph; per-thread tokens and cost; regenerate the last answer."""

from __future__ import annotations

from typing import Any

import streamlit as st

from tierflow.ui.client import Console

ss = st.session_state


def new_thread(graph: str) -> None:
    ss.thread_id = None
    ss.graph = graph


def open_thread(thread_id: str) -> None:
    ss.thread_id = thread_id


def threads(c: Console, info: dict[str, Any]) -> None:
    with st.sidebar:
        graphs = info.get("graphs") or ["default"]
        graph = st.selectbox("Graph for a new thread", graphs, key="graph_pick")
        st.button("New thread", on_click=new_thread, args=(graph,), icon=":material/add:")
        needle = st.text_input("Search threads", key="thread_search")
        for t in c.threads(needle):
            tid = t["thread_id"]
            current = tid == ss.get("thread_id")
            label = ("▶ " if current else "") + t["title"]
            st.button(label, key=f"open-{tid}", on_click=open_thread, args=(tid,), width="stretch")
        if ss.get("thread_id"):
            current_thread(c, ss.thread_id)


def current_thread(c: Console, thread_id: str) -> None:
    st.divider()
    runs = c.runs(thread_id)
    records = [(r.get("kwargs") or {}).get("record") or {} for r in runs]
    tokens = sum(
        (x.get("usage") or {}).get("input_tokens", 0)
        + (x.get("usage") or {}).get("output_tokens", 0)
        for x in records
    )
    cost = sum((x.get("usage") or {}).get("cost_usd", 0.0) for x in records)
    st.caption(f"this thread: {tokens} tokens · ${cost:.6f}")
    new = st.text_input("Rename to", key=f"rename-{thread_id}")
    if st.button("Rename", key="rename") and new.strip():
        c.rename(thread_id, new.strip())
        st.rerun()
    if st.button("Delete thread", key="delete", type="secondary"):
        c.delete(thread_id)
        ss.thread_id = None
        st.rerun()
    asked = [r for r in runs if (r.get("kwargs") or {}).get("input") is not None]
    if asked and st.button("Regenerate last answer", key="regenerate"):
        messages = asked[-1]["kwargs"]["input"].get("messages") or [{}]
        ss.pending = {"thread_id": thread_id, "question": str(messages[-1].get("content", ""))}
        st.rerun()
