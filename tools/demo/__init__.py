"""Demo data so the main job shows every tool offline: a shop database and a document corpus."""
