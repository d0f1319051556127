"""Benchmark runs, suites, masks, metrics and scoring (docs/bench.md)."""

