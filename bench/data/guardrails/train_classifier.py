"""Train the injection classifier (``guardrails/builtin/classifier.json``).

    .venv/bin/python bench/data/guardrails/train_classifier.py

Features: the MiniLM sentence embedding tierflow ships (``tierflow.models.embeddings``).
Model and folds: ``tierflow.bench.guardrails_folds`` (logistic regression, IRLS). Data:
every input-stage text of the evaluation corpus (public sources, our own cases) plus
``own_hard_negatives.jsonl`` (persona requests, security questions, quoted attacks,
code that says "ignore"); the fresh test set (``fresh_test.jsonl``) is never read. The
two thresholds come from the leave-one-source-out scores: ``threshold`` blocks at most
``BLOCK_FPR`` of benign texts out of fold, ``grey_threshold`` sends at most ``GREY_FPR``
more to the judge.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tierflow.bench.guardrails_eval import DATA, _items, load_corpus
from tierflow.bench.guardrails_folds import BLOCK_FPR, GREY_FPR, embeddings, fit, loso
from tierflow.models.embeddings import shared_embedder

OUT = Path(__file__).resolve().parents[3] / "guardrails" / "builtin" / "classifier.json"


def training_items() -> list:  # type: ignore[type-arg]
    items = load_corpus() + _items(DATA / "own_hard_negatives.jsonl")
    return [it for it in items if it.stage == "input"]


def main() -> None:
    items = training_items()
    x = embeddings(items)
    y = np.array([1.0 if it.kind == "attack" else 0.0 for it in items])
    folds = loso(items, x)
    w, b = fit(x, y)
    oof_benign = folds.oof[y == 0]
    oof_attack = folds.oof[y == 1]
    OUT.write_text(
        json.dumps(
            {
                "model": shared_embedder().model_id,
                "trained_on": {"attacks": int(y.sum()), "benign": int(len(y) - y.sum())},
                "thresholds_from": f"leave-one-source-out scores, benign FPR {BLOCK_FPR} "
                f"(block) and {BLOCK_FPR + GREY_FPR} (grey zone)",
                "oof_recall": round(float((oof_attack >= folds.block).mean()), 4),
                "oof_fpr": round(float((oof_benign >= folds.block).mean()), 4),
                "oof_grey_benign": round(
                    float(((oof_benign >= folds.grey) & (oof_benign < folds.block)).mean()), 4
                ),
                "threshold": round(folds.block, 4),
                "grey_threshold": round(folds.grey, 4),
                "bias": round(b, 6),
                "weights": [round(float(v), 6) for v in w],
            }
        )
        + "\n"
    )
    print(f"{OUT}: block {folds.block:.3f}, grey {folds.grey:.3f}")


if __name__ == "__main__":
    main()
