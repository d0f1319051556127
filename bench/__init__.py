"""Benchmark runs, suites, masks, metrics and scoring (docs/bench.md)."""

import os

# OpenMP threads that spin while they wait make torch up to 7x slower on a CPU shared with other jobs (measured on
# this project's 2-core machine: 24.7 s against 4.1 s for the same shapes-teacher batch); sleeping threads cost
# little on an idle machine. `python -m bench.run` / `bench.score` import this package before torch loads its
# OpenMP runtime, which reads the variable once; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
