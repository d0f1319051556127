"""A metrics log: CSV rows, flushed as they come, so a crashed run still leaves its history."""

from __future__ import annotations

import csv
import os
from pathlib import Path


class MetricsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.append = False
        self.file = None

    def resume(self, at: int, key: str) -> MetricsLog:
        """Go on after the rows whose `key` (step, iteration) is below `at`, a resumed run's first: the rows a killed
        run logged past the checkpoint it resumes from are dropped, as the resumed run logs those steps again."""
        if at <= 0 or not self.path.is_file():
            return self
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, [r for r in reader if int(float(r[key])) < at]
        if fields:
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, self.path)
            self.append = True
        return self

    def write(self, **row) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a" if self.append else "w", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            if not self.append:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()
