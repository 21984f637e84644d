"""Flow records from a file, line by line, for the gateway (standard library only): UNSW-NB15 CSVs (partitioned,
with a header, or raw, 49 columns with IPs) and Zeek conn.log files (IoT-23), optionally following a growing file
like ``tail -f``.

A line that cannot be a record (wrong field count, undecodable text) is counted under a reason and skipped, never
fatal. Values stay strings here; :mod:`gateway.encode` turns them into numbers for the pipeline.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flows.schema import (
    DST_IP,
    IOT23_META,
    SRC_IP,
    START_TIME,
    UNSW_RAW_PUBLISHED_NAMES,
    header_columns,
    unsw_canonical_name,
)

FORMATS = ("auto", "unsw", "unsw_raw", "zeek")


class SourceError(ValueError):
    """A source the gateway cannot read at all (missing file, unknown format)."""


@dataclass
class Record:
    """One flow: its raw values by column name, the file line, and the endpoints when the source has them."""

    values: dict[str, str]
    line: int
    src: str | None = None
    dst: str | None = None
    time: float | None = None


@dataclass
class SourceStats:
    lines: int = 0
    records: int = 0
    malformed: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"lines": self.lines, "records": self.records, "malformed": dict(self.malformed)}


def detect_format(first_line: str) -> str:
    """``zeek`` for a Zeek header, ``unsw`` for a CSV header naming proto/service/state, else ``unsw_raw``."""
    if first_line.startswith("#"):
        return "zeek"
    if {"proto", "service", "state"} <= set(header_columns(first_line)):
        return "unsw"
    return "unsw_raw"


class FlowSource:
    """Iterate :class:`Record` objects of one file; ``stats`` counts lines, records and malformed lines."""

    def __init__(self, path: str | Path, fmt: str = "auto", *, follow: bool = False, idle_exit: float = 0.0,
                 poll: float = 0.2) -> None:  # fmt: skip
        if fmt not in FORMATS:
            raise SourceError(f"unknown source format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"source not found: {self.path}")
        self.fmt = fmt
        self.follow = follow
        self.idle_exit = idle_exit  # following: stop after this many seconds without new lines (0: never)
        self.poll = poll
        self.stats = SourceStats()
        self.columns: list[str] = []

    def lines(self) -> Iterator[tuple[int, str | None]]:
        """(line number, text) of every complete line; following, waits for more at the end of the file and
        yields (0, None) each time it finds nothing new."""
        with open(self.path, "rb") as handle:
            pending = b""
            number = 0
            idle_since = time.monotonic()
            while True:
                chunk = handle.readline()
                if chunk:
                    pending += chunk
                    if not pending.endswith(b"\n") and self.follow:
                        continue  # a line still being written
                    number += 1
                    raw, pending = pending, b""
                    idle_since = time.monotonic()
                    try:
                        text = raw.decode("utf-8").rstrip("\r\n")
                    except UnicodeDecodeError:
                        self._malformed("not_utf8")
                        continue
                    yield number, text.lstrip("\ufeff") if number == 1 else text
                    continue
                if not self.follow or (self.idle_exit and time.monotonic() - idle_since >= self.idle_exit):
                    return
                yield 0, None  # idle: lets the consumer flush what it holds
                time.sleep(self.poll)

    def __iter__(self) -> Iterator[Record | None]:
        """Records in file order; ``None`` while a followed file has nothing new."""
        parse = None
        for number, line in self.lines():
            if line is None:
                yield None
                continue
            if parse is None:
                fmt = detect_format(line) if self.fmt == "auto" else self.fmt
                self.fmt = fmt
                parse = {"unsw": self._unsw, "unsw_raw": self._unsw_raw, "zeek": self._zeek}[fmt]
                if fmt == "unsw_raw":
                    self.columns = [unsw_canonical_name(n) for n in UNSW_RAW_PUBLISHED_NAMES]
                elif fmt == "unsw":
                    self.columns = header_columns(line)
                    continue
            if not line.strip():
                continue
            record = parse(number, line)
            if record is not None:
                self.stats.lines += 1
                self.stats.records += 1
                yield record

    def _malformed(self, reason: str) -> None:
        self.stats.lines += 1
        self.stats.malformed[reason] += 1

    def _split(self, number: int, fields: list[str]) -> dict[str, str] | None:
        if len(fields) != len(self.columns):
            self._malformed("wrong_field_count")
            return None
        return dict(zip(self.columns, (f.strip() for f in fields)))

    def _unsw(self, number: int, line: str) -> Record | None:
        values = self._split(number, line.split(","))
        return None if values is None else Record(values=values, line=number)

    def _unsw_raw(self, number: int, line: str) -> Record | None:
        values = self._split(number, line.split(","))
        if values is None:
            return None
        return Record(values=values, line=number, src=values.get(SRC_IP), dst=values.get(DST_IP),
                      time=_float_or_none(values.get(START_TIME)))  # fmt: skip

    def _zeek(self, number: int, line: str) -> Record | None:
        if line.startswith("#"):
            if line.startswith("#fields"):
                self.columns = [IOT23_META.get(name, name) for name in line.split()[1:]]
            return None
        if not self.columns:
            self._malformed("no_fields_header")
            return None
        fields = line.split("\t")
        if len(fields) != len(self.columns):
            fields = line.split()  # IoT-23's labelled files separate the last columns with spaces
        values = self._split(number, fields)
        if values is None:
            return None
        return Record(values=values, line=number, src=values.get(SRC_IP), dst=values.get(DST_IP),
                      time=_float_or_none(values.get(START_TIME)))  # fmt: skip


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "-") else None
    except ValueError:
        return None
