"""The one error type of the benchmark commands: a `ladd.cli.UserError`, so `ladd.cli.run_cli` prints it as one
line (`prog: error: ...`) with exit code 2, never a traceback."""

from __future__ import annotations

from ladd.cli import UserError


class BenchError(UserError):
    """Something the user can fix (a bad argument, missing data or weights). The message is a single line."""
