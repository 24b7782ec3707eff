"""Models: backends, tiers (a chat model with a fallback chain), the embedded model, embeddings.
Layer: models; may import only resilience, telemetry and the core.

Backends are one per provider kind; ``request`` holds the request path of one call; the
embedded model is llama.cpp with its own server.
"""
