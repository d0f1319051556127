"""Benchmark runs, suites, masks, metrics and scoring (docs/bench.md)."""

import ladd  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads; see ladd/__init__.py)
