"""A keyword pre-router: cues a request states outright decide before any model runs.

Measured on ``tierflow bench answers`` (embedded default): the semantic router
(all-MiniLM-L6-v2, an English model) and then the 0.5B router tier routed 84% of the 63
questions right; most misses were non-English questions that name a policy topic beside
a data word ("¿Cuántos años se conservan los datos de pedidos y facturas?" went to data)
or an explicit channel ("... en internet" went to data). A route's keywords are regular
expressions (case-insensitive, matched on word starts) in the languages the graph
serves; each hit counts one, a route's ``strong`` cue (such as "search the web" or "with
Python") counts three. The route with the most points decides when it leads the
runner-up; a tie or no hit leaves the choice to the semantic router and the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

STRONG = 3


@dataclass(frozen=True)
class KeywordDecision:
    route: str | None  # None: no route leads
    scores: dict[str, int]
    hits: list[str]  # the cues that matched, for the step's record


class KeywordRouter:
    """Routes by cue words. ``routes`` maps a route to (keywords, strong keywords)."""

    def __init__(self, routes: Mapping[str, tuple[Sequence[str], Sequence[str]]]) -> None:
        self.routes = {
            name: (
                [re.compile(rf"(?<!\w){k}", re.IGNORECASE) for k in weak],
                [re.compile(rf"(?<!\w){k}", re.IGNORECASE) for k in strong],
            )
            for name, (weak, strong) in routes.items()
            if weak or strong
        }

    def classify(self, text: str) -> KeywordDecision:
        scores: dict[str, int] = {}
        hits: list[str] = []
        for name, (weak, strong) in self.routes.items():
            score = 0
            for weight, patterns in ((1, weak), (STRONG, strong)):
                for p in patterns:
                    m = p.search(text)
                    if m:
                        score += weight
                        hits.append(f"{name}:{m.group(0)}")
            if score:
                scores[name] = score
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
            return KeywordDecision(None, scores, hits)
        return KeywordDecision(ranked[0][0], scores, hits)
