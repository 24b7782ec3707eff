"""The API's routes, one module per resource (assistants, threads, runs, system)."""
