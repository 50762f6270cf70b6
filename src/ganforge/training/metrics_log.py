"""`MetricsLog`: the one writer of a run's metrics.jsonl (one JSON object per line).

Log lines (`step`, losses, D(x), D(G(z)), timings) and evaluation lines (`step`, `eval`)
are appended and flushed as they come; a rollback cuts the file back to the step it
returns to. On processes other than the main one every call does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ganforge import rundir


class MetricsLog:
    def __init__(self, path: Path, writes: bool) -> None:
        self.path = path
        self.file = open(path, "a", encoding="utf-8") if writes else None
        self.listeners: list[Callable[[dict], None]] = []  # called with every record written

    def write(self, record: dict) -> None:
        """Appends one record and hands it to the listeners (e.g. live diagnosis)."""
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for listener in self.listeners:
            listener(record)

    def keep_until(self, step: int) -> None:
        """Drops the lines logged after `step` (a rollback to that step logs them again)."""
        if self.file is None:
            return
        self.file.close()
        rundir.keep_metrics_until(self.path, step)
        self.file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
