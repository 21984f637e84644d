"""Flow records from a file, line by line, for the gateway (standard library and numpy only): UNSW-NB15 CSVs
(partitioned, with a header, or raw, 49 columns with IPs) and Zeek conn logs (tab-separated with ``#`` headers,
or the CSV export with a header row), optionally following a growing file like ``tail -f``.

Lines end as the training readers' do (``\\n``, ``\\r\\n`` or a lone ``\\r``: :func:`flows.normalise.split_lines`)
and are split into cells with the source's :class:`flows.normalise.Layout`, the same one the training readers
use; :mod:`gateway.encode` normalises a batch of records with it. A line that cannot be a record (wrong field
count, undecodable text, a record before a Zeek ``#fields`` header) is counted under a reason and skipped, never
fatal. A source that cannot be read at all raises :class:`SourceError`: a missing file, an unknown format, a
compressed file, a header without the columns its format's normalisation reads.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flows.normalise import FORMATS as LAYOUT_FORMATS
from flows.normalise import (
    Layout,
    UnswRaw,
    ZeekLog,
    compression,
    detect_format,
    header_layout,
    split_lines,
    without_bom,
)

FORMATS = ("auto", *LAYOUT_FORMATS)


class SourceError(ValueError):
    """A source the gateway cannot read at all (missing file, unknown format)."""


@dataclass
class Record:
    """One flow: its cells (split with ``layout``) and file line; the endpoints, time and label are filled in by
    :func:`gateway.encode.encode_batch` from the normalised batch (None where the source has none)."""

    fields: list[str]
    line: int
    layout: Layout
    src: str | None = None
    dst: str | None = None
    time: float | None = None
    label: int | None = None

    @property
    def values(self) -> dict[str, str]:
        """The raw cells by column name."""
        return dict(zip(self.layout.columns, self.fields))


@dataclass
class SourceStats:
    lines: int = 0
    records: int = 0
    malformed: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"lines": self.lines, "records": self.records, "malformed": dict(self.malformed)}


class FlowSource:
    """Iterate :class:`Record` objects of one file; ``stats`` counts lines, records and malformed lines."""

    def __init__(self, path: str | Path, fmt: str = "auto", *, follow: bool = False, idle_exit: float = 0.0,
                 poll: float = 0.2) -> None:  # fmt: skip
        if fmt not in FORMATS:
            raise SourceError(f"unknown source format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"source not found: {self.path}")
        with open(self.path, "rb") as handle:
            packed = compression(handle.read(16))
        if packed is not None:
            raise SourceError(f"{self.path} looks like a {packed[0]}-compressed file; decompress it first "
                              f"(e.g. {packed[1]} the file)")  # fmt: skip
        self.fmt = fmt
        self.follow = follow
        self.idle_exit = idle_exit  # following: stop after this many seconds without new lines (0: never)
        self.poll = poll
        self.stats = SourceStats()
        self.layout: Layout | None = None
        self._zeek_markers = {"unset_field": "-", "empty_field": "(empty)"}

    def lines(self) -> Iterator[tuple[int, str | None]]:
        """(line number, text) of every complete line; following, waits for more at the end of the file and
        yields (0, None) each time it finds nothing new. A followed file that is rotated is read on: shrunk under
        the reader (copy-truncate) it is read again from its start; replaced at its path (rename and create) the
        new file is opened once the old one is drained. Line numbers restart with each new file."""
        handle = open(self.path, "rb")
        try:
            pending = b""
            number = 0
            idle_since = time.monotonic()
            after_cr = False  # the last line ended with \r: a \n that follows completes its \r\n
            while True:
                chunk = handle.readline()
                if chunk:
                    if after_cr and not pending and chunk.startswith(b"\n"):
                        chunk = chunk[1:]
                    pending += chunk
                    after_cr = False
                    if not pending.endswith((b"\n", b"\r")) and self.follow:
                        continue  # a line still being written
                    idle_since = time.monotonic()
                    after_cr = pending.endswith(b"\r")
                    pieces, pending = split_lines(pending), b""
                    for raw in pieces[:-1] if pieces[-1] == b"" else pieces:
                        number += 1
                        text = self._decoded(raw)
                        if text is not None:
                            yield number, without_bom(text)
                    continue
                if self.follow:
                    rotated = self._rotation(handle)
                    if rotated == "replaced":
                        handle.close()
                        handle = open(self.path, "rb")
                    elif rotated == "truncated":
                        handle.seek(0)
                    if rotated:
                        pending, number, after_cr = b"", 0, False
                        continue
                if not self.follow or (self.idle_exit and time.monotonic() - idle_since >= self.idle_exit):
                    return
                yield 0, None  # idle: lets the consumer flush what it holds
                time.sleep(self.poll)
        finally:
            handle.close()

    def _decoded(self, raw: bytes) -> str | None:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self._malformed("not_utf8")
            return None

    def _rotation(self, handle) -> str | None:
        """``replaced`` when another file now lies at the path, ``truncated`` when the open one shrank below the
        read position, else None (also while the path is briefly missing during a rotation)."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return None
        if now.st_ino != os.fstat(handle.fileno()).st_ino:
            return "replaced"
        return "truncated" if now.st_size < handle.tell() else None

    def __iter__(self) -> Iterator[Record | None]:
        """Records in file order; ``None`` while a followed file has nothing new."""
        for number, line in self.lines():
            if line is None:
                yield None
                continue
            if self.fmt == "auto":
                self.fmt = detect_format(line)
            if self.fmt in ("unsw", "zeek_csv") and (self.layout is None or (number == 1 and
                                                                       detect_format(line) == self.fmt)):
                self.layout = self._checked(header_layout(self.fmt, line), number)  # again atop a rotated file
                continue
            if self.layout is None and self.fmt == "unsw_raw":
                self.layout = UnswRaw()
            if self.fmt == "zeek" and line.startswith("#"):
                self._zeek_header(line)
                continue
            if not line.strip():
                continue
            record = self._record(number, line)
            if record is not None:
                self.stats.lines += 1
                self.stats.records += 1
                yield record

    def _zeek_header(self, line: str) -> None:
        key, _, value = line[1:].partition("\t")
        if key in self._zeek_markers:
            self._zeek_markers[key] = value.strip()
        elif key == "fields":
            self.layout = self._checked(ZeekLog.from_fields_line(line, self._zeek_markers["unset_field"],
                                                                 self._zeek_markers["empty_field"]), None)  # fmt: skip

    def _checked(self, layout: Layout, number: int | None) -> Layout:
        """``layout`` if its header names every column its normalisation reads, else a :class:`SourceError`."""
        missing = layout.missing()
        if missing:
            where = f"line {number}" if number else "its #fields line"
            raise SourceError(f"{self.path}: the header ({where}) lacks column(s) {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''} that a {layout.fmt} source needs")  # fmt: skip
        return layout

    def _record(self, number: int, line: str) -> Record | None:
        if self.layout is None:
            self._malformed("no_fields_header")
            return None
        fields = self.layout.split(line)
        if len(fields) != self.layout.n_fields:
            self._malformed("wrong_field_count")
            return None
        return Record(fields, number, self.layout)

    def _malformed(self, reason: str) -> None:
        self.stats.lines += 1
        self.stats.malformed[reason] += 1
