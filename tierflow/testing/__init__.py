"""Test helpers for tierflow and for builders testing their own graphs offline.
Layer: testing (beside runner, never importing it); may import graphs and every layer below.

- :class:`ScriptedChatModel` / :class:`ScriptedBackend` / :func:`scripted_tier`: a model
  that answers from a queue, for unit tests of graphs.
- :class:`ScriptedServer`: a real HTTP server on 127.0.0.1 speaking the OpenAI (or Mistral)
  chat-completions protocol, with fault injection, for testing backends through their
  real clients.
- The ``tierflow`` pytest plugin (installed automatically) fails any test that opens a
  connection beyond loopback.
"""

from tierflow.testing.pytest_plugin import UnplannedNetworkCall
from tierflow.testing.scripted_model import (
    ScriptedBackend,
    ScriptedCall,
    ScriptedChatModel,
    scripted_tier,
)
from tierflow.testing.scripted_server import (
    Fault,
    RecordedRequest,
    Reply,
    Responder,
    ScriptedServer,
)

__all__ = [
    "Fault",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ScriptedBackend",
    "ScriptedCall",
    "ScriptedChatModel",
    "ScriptedServer",
    "UnplannedNetworkCall",
    "scripted_tier",
]
