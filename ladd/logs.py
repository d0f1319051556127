"""A metrics log: CSV rows, flushed as they come, so a crashed run still leaves its history."""

from __future__ import annotations

import csv
from pathlib import Path


class MetricsLog:
    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.append = append and self.path.is_file()
        self.file = None

    def write(self, **row) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a" if self.append else "w", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            if not self.append:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()
