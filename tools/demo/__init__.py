"""Demo data so every tool works offline: a shop database and a document corpus.
Layer: tools; may import only models, resilience, telemetry and the core.
"""
