"""Train the injection classifier (``guardrails/builtin/classifier.json``) on the dev split.

    .venv/bin/python bench/data/guardrails/train_classifier.py

Features: the MiniLM sentence embedding tierflow ships (``tierflow.models.embeddings``). Model:
L2-regularised logistic regression with balanced class weights, fitted by full-batch
gradient descent in numpy (384 weights: no need for scikit-learn at run time or here).
Data: the ``dev`` half of the public corpus and the demo documents (attacks vs benign);
the ``heldout`` half and our own cases are never seen. The threshold is the lowest that
keeps the false-positive rate on dev benign items under ``MAX_DEV_FPR``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tierflow.bench.guardrails_eval import load_corpus
from tierflow.guardrails.builtin.classifier import MAX_CHARS
from tierflow.models.embeddings import shared_embedder

OUT = Path(__file__).resolve().parents[3] / "guardrails" / "builtin" / "classifier.json"
MAX_DEV_FPR = 0.01
L2 = 1e-3
STEPS = 3000
RATE = 2.0


def main() -> None:
    items = [it for it in load_corpus() if it.split == "dev" and it.source != "own"]
    texts = [it.text[:MAX_CHARS] for it in items]
    y = np.array([1.0 if it.kind == "attack" else 0.0 for it in items], dtype=np.float64)
    embedder = shared_embedder()
    x = embedder.embed(texts).astype(np.float64)
    pos = y.sum()
    weights = np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * (len(y) - pos)))
    w = np.zeros(x.shape[1])
    b = 0.0
    for _ in range(STEPS):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        g = weights * (p - y)
        w -= RATE * (x.T @ g / len(y) + L2 * w)
        b -= RATE * g.mean()
    p = 1 / (1 + np.exp(-(x @ w + b)))
    benign = np.sort(p[y == 0])
    threshold = float(benign[int(len(benign) * (1 - MAX_DEV_FPR))])
    threshold = max(threshold, 0.5)
    recall = float((p[y == 1] >= threshold).mean())
    OUT.write_text(
        json.dumps(
            {
                "model": embedder.model_id,
                "trained_on": {"attacks": int(pos), "benign": int(len(y) - pos), "split": "dev"},
                "dev_recall": round(recall, 4),
                "dev_fpr": round(float((benign >= threshold).mean()), 4),
                "threshold": round(threshold, 4),
                "bias": round(b, 6),
                "weights": [round(float(v), 6) for v in w],
            }
        )
        + "\n"
    )
    print(f"{OUT}: threshold {threshold:.3f}, dev recall {recall:.3f}")


if __name__ == "__main__":
    main()
