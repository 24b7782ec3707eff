"""Benchmarks (``tierflow bench [NAME]``); results are recorded in ``bench/results/``."""

from tierflow.bench.runner import BENCHMARKS, run_benchmarks

__all__ = ["BENCHMARKS", "run_benchmarks"]
