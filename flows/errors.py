"""Errors raised on bad input: each names the file, the line or record, the column and what was expected."""

from __future__ import annotations

from pathlib import Path


class FlowDataError(ValueError):
    """Bad flow data or a bad data location; ``str(err)`` is one line a user can act on."""

    def __init__(
        self,
        path: str | Path | None,
        problem: str,
        *,
        line: int | None = None,
        column: str | None = None,
        expected: str | None = None,
        got: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        self.expected = expected
        self.got = got
        self.problem = problem
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        parts = [f"{where}: {problem}"]
        if column is not None:
            parts.append(f"column '{column}'")
        if expected is not None:
            parts.append(f"expected {expected}")
        if got is not None:
            shown = got if len(got) <= 60 else got[:57] + "..."
            parts.append(f"got {shown!r}")
        super().__init__("; ".join(parts))


class ConfigError(ValueError):
    """A bad configuration value, reported before any work starts."""
