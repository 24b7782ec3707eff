"""Models: backends (one per provider kind), tiers (a chat model with a fallback chain),
the request path of one call, the embedded llama.cpp model and its server, embeddings.

Layer: may import the core (errors, settings, record, budget), telemetry and resilience.
"""
