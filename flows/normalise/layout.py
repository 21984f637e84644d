"""What every source's layout offers: its column names, how a file splits into lines and a line into cells, and
the normalisation of a batch of cells (standard library and numpy only).

Line ends are ``\\r\\n``, ``\\n`` or a lone ``\\r`` (old Mac files) and nothing else: ``str.splitlines`` would also
split on ``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``, ``\\x85`` and ``\\u2028``, which would cut a record in two silently
(those characters are control characters in a cell instead: :mod:`flows.normalise.domains`). A byte order mark
at the start of any line is dropped, not only at the start of the file: the raw UNSW-NB15 files each begin with
one, so files joined with ``cat`` carry it into the first cell of a line in the middle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import AnyStr

import numpy as np

from flows.normalise.cells import Normalised, column_array
from flows.normalise.domains import clean, screen

LINE_END = re.compile(r"\r\n|\r|\n")
LINE_END_BYTES = re.compile(rb"\r\n|\r|\n")
# a CSV cell as Python's csv module reads it (default dialect): a quoted part ("" for a quote) then the rest
# literally, or an unquoted cell; no field size limit (an overlong cell is a domain problem, not an exception)
CSV_CELL = re.compile(r'"((?:[^"]+|"")*)"?([^,]*)|([^,]*)')
# magic numbers (bzip2: "BZh", the block size, then a block's or the end of stream's magic)
COMPRESSED = ((re.compile(rb"\x1f\x8b"), "gzip", "gunzip"), (re.compile(rb"\xfd7zXZ\x00"), "xz", "unxz"),
              (re.compile(rb"PK(\x03\x04|\x05\x06)"), "zip", "unzip"),
              (re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)"), "bzip2", "bunzip2"))  # fmt: skip


BOM = "\ufeff"


def split_lines(text: AnyStr) -> list[AnyStr]:
    """The lines of ``text`` (str or bytes) without their ends; the last is empty when ``text`` ends a line."""
    return (LINE_END_BYTES if isinstance(text, bytes) else LINE_END).split(text)


def without_bom(line: str) -> str:
    """A decoded line without the byte order mark(s) it may start with."""
    return line.lstrip(BOM)


def compression(head: bytes) -> tuple[str, str] | None:
    """(format, the command that decompresses it) when ``head``, a file's first bytes, are a compressed file's
    magic number (gzip, xz, bzip2, zip), else None."""
    return next(((name, tool) for magic, name, tool in COMPRESSED if magic.match(head)), None)


def split_csv_line(line: str) -> list[str]:
    """Cells of one CSV line (quotes honoured as Python's csv module does, when present)."""
    if '"' not in line:
        return line.split(",")
    cells, pos = [], 0
    while True:
        match = CSV_CELL.match(line, pos)
        assert match is not None  # the last alternative matches anywhere, possibly empty
        quoted, rest, plain = match.groups()
        cells.append(plain if plain is not None else quoted.replace('""', '"') + rest)
        pos = match.end()
        if pos >= len(line):
            return cells
        pos += 1  # the comma


class Layout:
    """One source format with its columns; subclasses set ``fmt``, ``source`` and implement :meth:`normalise`."""

    fmt = ""
    source = ""
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    required: tuple[str, ...] = ()  # the columns :meth:`normalise` reads
    known_families: frozenset[str] | None = None  # the source's attack families (None: no closed list)

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)

    @property
    def n_fields(self) -> int:
        return len(self.columns)

    @property
    def features(self) -> list[str]:
        """The normalised feature columns, numeric first."""
        return [*self.numeric, *self.categorical]

    def split(self, line: str) -> list[str]:
        return split_csv_line(line)

    def cells(self, rows: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Rows of cells (each of :attr:`n_fields`) -> one string array per column."""
        if not rows:
            return {c: column_array([]) for c in self.columns}
        return {c: column_array(values) for c, values in zip(self.columns, zip(*rows))}

    def missing(self) -> list[str]:
        """The required columns this layout's header does not name."""
        return [c for c in self.required if c not in set(self.columns)]

    def normalise(self, cells: Mapping[str, np.ndarray]) -> Normalised:
        raise NotImplementedError

    def normalise_rows(self, rows: Sequence[Sequence[str]]) -> Normalised:
        """The batch of ``rows``: every cell screened (length, control characters), then the source's own
        normalisation; the screen's problems come first (a record's first problem is the one reported)."""
        cells, problems = (self.cells(rows), []) if clean(rows) else screen(self.cells(rows))
        batch = self.normalise(cells)
        batch.problems[:0] = problems
        return batch
