"""Stages: a named step with its command, run through the module's own entry point, skipped once done.

A stage is either a command (`python -m MODULE ARGS`, called in-process as `MODULE.main(ARGS)`, printed first so it
can be rerun by hand) or a Python step of the findings themselves (tables, study analysis). When it returns, a
marker `done/<key>.json` records its arguments and seconds; a stage with a marker is skipped. An interrupted stage
has no marker and runs again, and the command resumes what it had done (its own resumption: synth shards, training
checkpoints, benchmark images). Findings share a work folder and may run at once: a running stage holds a lock
(`done/<key>.lock`, released by the system when its process dies, even by kill -9), and another command reaching the
same stage waits for it and then skips it.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import shlex
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

GROUPS = ("zoo", "dpo", "data", "train", "bench", "study", "table")  # the order stages run in


@dataclass
class Stage:
    key: str  # unique within the work folder, e.g. "train-s4-t4-g4-m1-distill0-seed0"
    group: str  # one of GROUPS: `--stage GROUP` runs only that group
    module: str | None = None  # a command: `python -m module *argv`
    argv: Callable[[], list[str]] | list[str] = field(default_factory=list)  # a callable: built when the stage runs
    step: Callable[[], None] | None = None  # or a Python step
    always: bool = False  # run every time (the tables: cheap, and they must follow their inputs)

    def arguments(self) -> list[str]:
        return [shown(a) for a in (self.argv() if callable(self.argv) else self.argv)]

    def command_line(self) -> str:
        if self.module is None:
            return f"({self.key})"
        try:
            argv = self.arguments()
        except FileNotFoundError:  # arguments read from an earlier stage's output
            argv = ["…"]
        return shlex.join(["python", "-m", self.module, *argv])


def shown(value) -> str:
    """An argument as the command line shows it: paths under the current folder relative to it."""
    if isinstance(value, Path) and value.is_absolute():
        try:
            return str(value.relative_to(Path.cwd()))
        except ValueError:
            return str(value)
    return str(value)


def marker_path(work: Path, key: str) -> Path:
    return work / "done" / f"{key}.json"


def is_done(work: Path, stage: Stage) -> bool:
    return not stage.always and marker_path(work, stage.key).is_file()


def run_stage(work: Path, stage: Stage) -> None:
    """Run one stage (printing its command) and mark it done."""
    start = time.time()
    if stage.module is not None:
        argv = stage.arguments()
        print(f"$ {shlex.join(['python', '-m', stage.module, *argv])}", flush=True)
        code = importlib.import_module(stage.module).main(argv)
        if code:
            raise RuntimeError(f"{stage.module} exited with {code}")
    else:
        print(f"# {stage.key}", flush=True)
        argv = []
        stage.step()
    marker = marker_path(work, stage.key)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"module": stage.module, "argv": argv, "seconds": round(time.time() - start, 1),
                                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))


def select(stages: list[Stage], name: str) -> list[Stage]:
    """`all`, the stages of one group, or the one stage with that key."""
    if name == "all":
        return stages
    return [s for s in stages if name in (s.group, s.key)]


def unique(stages: list[Stage]) -> list[Stage]:
    """The first stage of each key, in group order (two findings' plans may share stages)."""
    seen, kept = set(), []
    for stage in sorted(stages, key=lambda s: GROUPS.index(s.group)):
        if stage.key not in seen:
            seen.add(stage.key)
            kept.append(stage)
    return kept


def plan_text(work: Path, stages: list[Stage]) -> str:
    lines = []
    for stage in stages:
        state = "done" if is_done(work, stage) else ("every run" if stage.always else "to do")
        lines.append(f"[{state:9}] {stage.group:5} {stage.key}: {stage.command_line()}")
    return "\n".join(lines)


@contextmanager
def stage_lock(work: Path, stage: Stage):
    """Hold the stage's lock, waiting while another process holds it."""
    path = marker_path(work, stage.key).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"# {stage.key}: running in another process; waiting for it", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_stages(work: Path, stages: list[Stage]) -> int:
    """Run every stage not yet done, in order, each under its lock; returns how many ran."""
    ran = 0
    for stage in stages:
        if is_done(work, stage):
            continue
        with stage_lock(work, stage):
            if is_done(work, stage):  # another process finished it while this one waited
                continue
            run_stage(work, stage)
            ran += 1
    return ran
