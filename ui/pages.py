"""The pages beside the chat: Backends (the doctor table, live), the guardrail
playground, and document upload into the retrieval index."""

from __future__ import annotations

import streamlit as st

from tierflow.ui.client import Console, RequestFailed

STAGES = ["input", "tool_call", "tool_result", "output"]


def backends(c: Console) -> None:
    st.header("Backends")
    st.button("Refresh", key="refresh-backends")
    table = c.backends()
    rows = [
        {
            "backend": b["backend"],
            "state": b["state"],
            "detail": b["detail"],
            "local": b["local"],
            "tiers": ", ".join(b["tiers"]),
            "breaker": b["breaker"]["state"],
            "failures": b["breaker"].get("failures", 0),
            "last error": b["breaker"].get("last_error") or "",
        }
        for b in table["backends"]
    ]
    st.dataframe(rows, hide_index=True)


def guardrails(c: Console) -> None:
    st.header("Guardrail playground")
    text = st.text_area("Text", key="guard-text")
    stage = st.selectbox("Stage", STAGES, key="guard-stage")
    if st.button("Check", key="guard-check") and text:
        try:
            result = c.guard(text, stage)
        except RequestFailed as exc:
            st.error(str(exc))
            return
        overall = result["result"]
        st.subheader(
            f"{overall['action']}" + (f": {overall['reason']}" if overall.get("reason") else "")
        )
        if overall["action"] == "redact":
            st.code(overall["text"], language=None)
        st.dataframe(
            [
                {
                    "guardrail": v["name"],
                    "action": v["action"],
                    "reason": v.get("reason")
                    or "; ".join(str(f["reason"]) for f in v.get("findings") or []),
                }
                for v in result["verdicts"]
            ],
            hide_index=True,
        )


def documents(c: Console) -> None:
    st.header("Documents")
    st.caption("Markdown, text or PDF files go into the folder the `retrieve` tool searches.")
    files = st.file_uploader(
        "Upload", type=["md", "markdown", "txt", "pdf"], accept_multiple_files=True
    )
    if files and st.button("Add to the index", key="upload"):
        for f in files:
            try:
                done = c.upload(f.name, f.getvalue())
            except RequestFailed as exc:
                st.error(f"{f.name}: {exc}")
                continue
            st.success(f"{done['name']}: {done['chunks']} passage(s) added")
