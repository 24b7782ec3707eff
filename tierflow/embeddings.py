"""The process-wide sentence embedder, shared by the semantic router and retrieval.

Loading all-MiniLM-L6-v2 costs ~0.5 s and ~90 MB; one instance serves every user.
"""

from __future__ import annotations

import functools

from tierflow.graphs.semantic import Embedder


@functools.lru_cache(maxsize=1)
def shared_embedder() -> Embedder:
    from tierflow.tools._retrieval_embed import MiniLMEmbedder

    return MiniLMEmbedder()
