"""A scripted chat model and backend for testing graphs without a model server.

Queue replies, run the graph, then assert on what the model was sent::

    model = ScriptedChatModel()
    model.enqueue({"route": "general"})          # a structured answer (JSON)
    model.enqueue("Paris.")                      # a text answer
    model.enqueue(TimeoutError("stalled"))       # a failure: the tier falls back
    runner = Runner(settings, tiers={"router": scripted_tier("router", model)})
    ...
    assert "capital" in model.calls[1].messages[-1].content
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import BaseModel, PrivateAttr

from tierflow.models.backends import Backend, ToolMode
from tierflow.models.tiers import Tier
from tierflow.settings import Price

ScriptedReply = str | dict[str, Any] | BaseModel | AIMessage | BaseException


@dataclass(frozen=True)
class ScriptedCall:
    """One call the model received: the messages and the call's keyword arguments."""

    messages: list[BaseMessage]
    kwargs: dict[str, Any] = field(default_factory=dict)


class ScriptedChatModel(BaseChatModel):
    """A LangChain chat model that answers from a queue and records every call.

    A ``str`` is a text answer; a ``dict`` or pydantic model is answered as its JSON; an
    ``AIMessage`` is returned as is; an exception is raised. With the queue empty the
    ``default`` reply is used, or the call fails with an ``AssertionError`` naming it.
    """

    default: str | None = None
    _queue: deque[ScriptedReply] = PrivateAttr(default_factory=deque)
    _calls: list[ScriptedCall] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def enqueue(self, *replies: ScriptedReply) -> ScriptedChatModel:
        with self._lock:
            self._queue.extend(replies)
        return self

    @property
    def calls(self) -> list[ScriptedCall]:
        return list(self._calls)

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def _llm_type(self) -> str:
        return "tierflow-scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._lock:
            self._calls.append(ScriptedCall(list(messages), dict(kwargs)))
            reply: ScriptedReply | None = self._queue.popleft() if self._queue else self.default
        if reply is None:
            raise AssertionError(f"ScriptedChatModel: no reply queued for call {len(self._calls)}")
        if isinstance(reply, BaseException):
            raise reply
        message = _to_message(reply, messages)
        return ChatResult(generations=[ChatGeneration(message=message)])


def _to_message(reply: ScriptedReply, messages: Sequence[BaseMessage]) -> AIMessage:
    if isinstance(reply, AIMessage):
        return reply
    if isinstance(reply, BaseModel):
        text = reply.model_dump_json()
    elif isinstance(reply, dict):
        text = json.dumps(reply)
    else:
        text = str(reply)
    # A rough, deterministic token count so usage and cost paths are exercised.
    tokens_in = sum(len(str(m.content).split()) for m in messages)
    tokens_out = len(text.split())
    return AIMessage(
        content=text,
        response_metadata={"model_name": "scripted"},
        usage_metadata={
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        },
    )


class ScriptedBackend(Backend):
    """A backend whose model is a :class:`ScriptedChatModel` (or any chat model)."""

    provider = "scripted"

    def __init__(
        self,
        model: BaseChatModel,
        *,
        id: str = "scripted",
        local: bool = True,
        unavailable: str | None = None,
        tool_mode: ToolMode = "native",
    ) -> None:
        super().__init__(id=id, model_name="scripted", local=local)
        self.tool_mode = tool_mode
        self._scripted = model
        self._unavailable = unavailable

    def unavailable_reason(self) -> str | None:
        return self._unavailable

    def _build(self) -> BaseChatModel:
        return self._scripted


def scripted_tier(
    name: str,
    *models: BaseChatModel | Backend,
    local_only: bool = False,
    prices: dict[str, Price] | None = None,
) -> Tier:
    """A tier over scripted models (or backends), in chain order."""
    backends = [
        m if isinstance(m, Backend) else ScriptedBackend(m, id=f"scripted:{name}-{i}")
        for i, m in enumerate(models)
    ]
    return Tier(name=name, backends=backends, local_only=local_only, prices=prices or {})
