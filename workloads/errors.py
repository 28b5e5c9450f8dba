"""The one error a workload raises for bad input: it names the file, the line and the column.

`workloads` imports nothing from `harness`; `python -m harness` treats this error as a
configuration error (one line, exit 2), like its own `ConfigError`.
"""

from __future__ import annotations

from pathlib import Path


class WorkloadError(ValueError):
    """Bad workload input (a missing file, a bad value, a bad key); the message says where."""

    def __init__(
        self,
        message: str,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path, self.line, self.column = path, line, column
        where = ""
        if path is not None:
            where = f"{path}" + (f", line {line}" if line is not None else "")
            where += f", column {column!r}" if column is not None else ""
            where += ": "
        super().__init__(where + message)
