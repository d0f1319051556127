"""The one command-line idiom of every package: a user error is one line on stderr and exit code 2.

Each package raises its own subclass of `UserError` (`ladd.cli.LaddError`, `bench.errors.BenchError`,
`annotate.db.StudyError`); `run_cli` turns any of them into `prog: error: <one line>`. argparse errors go the same
way through `OneLineParser`. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_USAGE = 2  # argparse's code for bad arguments; also used for missing data, weights and bad files


class UserError(Exception):
    """Something the user can fix (a bad argument, a missing or unreadable file). The message is one line."""


class LaddError(UserError):
    """A user error of the `ladd` commands (bad config, missing teacher or data, diverged run)."""


def one_line(message: object) -> str:
    return " ".join(str(message).split())


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are a single line (`prog: error: ...`, exit code 2) instead of usage + error."""

    def error(self, message: str):
        raise UserError(f"{message} (see --help)")


def run_cli(main: Callable[[list[str] | None], int | None], prog: str, argv: list[str] | None = None) -> int:
    """Run a command's `main`; a `UserError` becomes `prog: error: ...` and exit code 2. Exits the process."""
    try:
        code = main(argv)
    except UserError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
