"""Embedded model: cold start, prompt and generation speed, time to first token.

Talks to llama.cpp's server with raw HTTP so the figures are the runtime's, not the
framework's. ``cache_prompt`` is off so each prompt is really processed.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import httpx

from tierflow.models.local_model import DEFAULT_MODEL, ensure_model
from tierflow.models.local_server import LocalServer, LocalServerConfig
from tierflow.settings import load_settings

RUNS = 3
GEN_TOKENS = 128
_PROMPT = "Summarise the following operations notes for an on-call engineer. " + " ".join(
    f"Note {i}: the {s} service restarted after a memory alarm on node {i % 7}; "
    "latency recovered within two minutes and no requests were lost."
    for i, s in enumerate(["billing", "search", "auth", "catalogue", "orders"] * 3)
)


def _server() -> LocalServer:
    settings = load_settings()
    path = ensure_model(DEFAULT_MODEL, settings.cache_dir)
    return LocalServer(
        LocalServerConfig(model_path=path, model_name=DEFAULT_MODEL.name, parallel=1)
    )


def _body(stream: bool, max_tokens: int) -> dict[str, Any]:
    return {
        "model": DEFAULT_MODEL.name,
        "messages": [{"role": "user", "content": _PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        "cache_prompt": False,
        "ignore_eos": True,  # always generate GEN_TOKENS, so runs are comparable
    }


def run() -> dict[str, Any]:
    cold: list[float] = []
    for _ in range(RUNS):
        server = _server()
        started = time.perf_counter()
        server.start()
        cold.append(time.perf_counter() - started)
        server.stop()

    server = _server()
    server.start()
    url = server.base_url + "/chat/completions"
    prompt_tps: list[float] = []
    gen_tps: list[float] = []
    ttft: list[float] = []
    prompt_tokens = 0
    with httpx.Client(timeout=300) as client:
        for _ in range(RUNS):
            data = client.post(url, json=_body(False, GEN_TOKENS)).json()
            timings = data["timings"]
            prompt_tokens = int(timings["prompt_n"])
            prompt_tps.append(float(timings["prompt_per_second"]))
            gen_tps.append(float(timings["predicted_per_second"]))
        for _ in range(RUNS):
            started = time.perf_counter()
            with client.stream("POST", url, json=_body(True, 8)) as resp:
                for line in resp.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    delta = json.loads(line[6:])["choices"]
                    if delta and delta[0].get("delta", {}).get("content"):
                        ttft.append(time.perf_counter() - started)
                        break
    server.stop()
    return {
        "model": DEFAULT_MODEL.file_name,
        "runs": RUNS,
        "cold_start_s": round(statistics.median(cold), 3),
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_per_s": round(statistics.median(prompt_tps), 1),
        "generated_tokens": GEN_TOKENS,
        "generation_tokens_per_s": round(statistics.median(gen_tps), 1),
        "time_to_first_token_s": round(statistics.median(ttft), 3),
        "note": "cold start = model file in page cache, load + health check; medians",
    }
