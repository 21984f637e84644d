"""What every source's layout offers: its column names, how a line splits into cells, and the normalisation of a
batch of cells (standard library and numpy only)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence

import numpy as np

from flows.normalise.cells import Normalised, column_array


def split_csv_line(line: str) -> list[str]:
    """Cells of one CSV line (quotes honoured when present)."""
    if '"' not in line:
        return line.split(",")
    return next(csv.reader([line]), [])


class Layout:
    """One source format with its columns; subclasses set ``fmt``, ``source`` and implement :meth:`normalise`."""

    fmt = ""
    source = ""
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

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

    def normalise(self, cells: Mapping[str, np.ndarray]) -> Normalised:
        raise NotImplementedError

    def normalise_rows(self, rows: Sequence[Sequence[str]]) -> Normalised:
        return self.normalise(self.cells(rows))
