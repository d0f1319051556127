"""User-facing errors of the benchmark commands: one line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USAGE = 2  # argparse's code for bad arguments; also used for missing data and weights


class BenchError(Exception):
    """Something the user can fix (a bad argument, missing data or weights). The message is a single line."""


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def run_cli(main: Callable[[list[str] | None], int | None], prog: str) -> None:
    """Run a command's `main`, turning `BenchError` into `prog: error: ...` and exit code 2."""
    try:
        code = main(None)
    except BenchError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
