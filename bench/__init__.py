"""Benchmarks (``tierflow bench [NAME]``); results are recorded in ``bench/results/``.
Layer: bench; may import runner, testing and every layer below them; never cli or ui.
"""

from tierflow.bench.runner import BENCHMARKS, run_benchmarks

__all__ = ["BENCHMARKS", "run_benchmarks"]
