"""The tierflow console, a Streamlit app run by ``tierflow ui`` (``streamlit run`` on this
file): a client of ``tierflow serve`` at ``$TIERFLOW_SERVER_URL`` with the API key
``$TIERFLOW_API_KEY`` (or the one typed in the sidebar).

Pages: Chat (``chat.py`` with the threads sidebar, ``sidebar.py``), Backends, Guardrails,
Documents (``pages.py``). With ``[auth]`` in ``.streamlit/secrets.toml`` it asks for
sign-in (``st.login``, OIDC) first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from tierflow.ui import chat, pages, sidebar
from tierflow.ui.client import Console, RequestFailed, ServerDown

ss = st.session_state


def signed_in() -> bool:
    """True unless OIDC sign-in is configured and the user has not signed in."""
    try:
        configured = "auth" in st.secrets
    except FileNotFoundError:
        configured = False
    if not configured or st.user.is_logged_in:
        return True
    st.title("tierflow")
    st.button("Sign in", on_click=st.login)
    return False


def console() -> Console:
    key = ss.get("api_key_input") or None
    c: Console | None = ss.get("console")
    if c is None or (key and key != c.api_key):
        c = Console.from_env(key)
        ss.console = c
    return c


def retry() -> None:
    unsent = ss.get("unsent")
    if unsent and ss.get("pending") is None:
        ss.pending = {"thread_id": ss.get("thread_id"), "question": unsent}


def down(c: Console, exc: ServerDown) -> None:
    """The server is down: say so, keep the unsent question, offer to send it again."""
    st.error(f"Server unreachable: {exc}. It may be restarting.", icon=":material/cloud_off:")
    unsent = ss.get("unsent")
    if unsent:
        st.info(f"Your question is kept: “{unsent}”")
    # a callback: it runs before the next page run even if that run, the server being
    # back, draws no Retry button (a button's True would be lost then)
    st.button("Retry", key="retry", type="primary", on_click=retry)


def guarded(body: Callable[[Console], None]) -> Callable[[], None]:
    def run() -> None:
        c = console()
        try:
            body(c)
        except ServerDown as exc:
            down(c, exc)
        except RequestFailed as exc:
            st.error(str(exc))
            if exc.status == 404:
                ss.thread_id = None

    run.__name__ = body.__name__  # Streamlit names a page after its function
    return run


def chat_page(c: Console) -> None:
    chat.read_prompt()
    info: dict[str, Any] = ss.get("info") or c.info()
    ss.info = info
    ready = chat.prepare(c, info)  # the pending run starts before the page draws
    sidebar.threads(c, info)
    chat.page(ready, c, info)


def main() -> None:
    st.set_page_config(page_title="tierflow", page_icon=":material/account_tree:", layout="wide")
    if not signed_in():
        return
    with st.sidebar:
        st.text_input("API key", type="password", key="api_key_input", help="Your tierflow API key")
    nav = st.navigation(
        [
            st.Page(
                guarded(chat_page),
                title="Chat",
                icon=":material/chat:",
                url_path="chat",
                default=True,
            ),
            st.Page(
                guarded(pages.backends),
                title="Backends",
                icon=":material/dns:",
                url_path="backends",
            ),
            st.Page(
                guarded(pages.guardrails),
                title="Guardrails",
                icon=":material/shield:",
                url_path="guardrails",
            ),
            st.Page(
                guarded(pages.documents),
                title="Documents",
                icon=":material/description:",
                url_path="documents",
            ),
        ]
    )
    nav.run()


main()
