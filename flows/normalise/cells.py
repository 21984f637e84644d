"""Vectorised cell operations and the normalised batch (standard library and numpy only).

A batch arrives as one numpy array of string cells per column (what a reader or the gateway split from its lines).
Every operation works on whole columns: stripping, case folding, unset markers, number and port parsing. A cell
that is outside its column's domain is not raised here: it is recorded as a :class:`Problem` (a row mask with the
column, what was expected and the cells), so that a batch reader can raise or skip and the gateway can count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

UNSET = "-"  # the flow table's marker for an unset categorical value
UNLABELLED = -1  # label of a record that carries no verdict (Stratosphere's Background)

# problem reasons; the batch readers count non_numeric and non_finite together as "non_numeric_or_non_finite"
NON_NUMERIC, NON_FINITE, BAD_LABEL, BAD_PORT = "non_numeric", "non_finite", "bad_label", "bad_port"
# domain reasons (flows.normalise.domains): the readers count each under its own name, the gateway drops the record
FIELD_TOO_LONG, CONTROL_CHARACTERS = "field_too_long", "control_characters"
NEGATIVE, OUT_OF_RANGE, NOT_INTEGER, BAD_ADDRESS = "negative_value", "out_of_range", "not_integer", "bad_address"
DOMAIN_REASONS = (FIELD_TOO_LONG, CONTROL_CHARACTERS, NEGATIVE, OUT_OF_RANGE, NOT_INTEGER, BAD_PORT, BAD_ADDRESS)
# the order in which a record's problems are looked at, by the readers and the gateway: it is counted once, under
# the first (the screen of every cell first: once a cell is overlong or garbled, its other problems follow from it)
REASON_ORDER = (FIELD_TOO_LONG, CONTROL_CHARACTERS, NON_NUMERIC, NON_FINITE, NEGATIVE, OUT_OF_RANGE, NOT_INTEGER,
                BAD_LABEL, BAD_PORT, BAD_ADDRESS)  # fmt: skip
DESCRIPTIONS = {BAD_LABEL: "bad label", BAD_PORT: "bad port", FIELD_TOO_LONG: "field too long",
                CONTROL_CHARACTERS: "control characters in a value", NEGATIVE: "negative value",
                OUT_OF_RANGE: "value out of range", NOT_INTEGER: "not a whole number", BAD_ADDRESS: "bad address"}


def column_array(values: Sequence[str]) -> np.ndarray:
    """One column's cells as a numpy array of Python strings (object dtype: the cheapest to build and to parse
    as numbers; the string operations below convert to a numpy string dtype where they need one)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def stripped(cells: np.ndarray) -> np.ndarray:
    """The cells without surrounding whitespace, as a numpy string array."""
    return np.strings.strip(np.asarray(cells, dtype=str))


def categorical(cells: np.ndarray, *, lower: bool, unset: Iterable[str] = ("", "-", "(empty)")) -> np.ndarray:
    """Stripped values, optionally lower-cased; blank and unset markers become ``-``. Returns an object array of
    Python strings (what a pandas frame holds, so both paths give the pipeline identical values)."""
    values = stripped(cells)
    if lower:
        values = np.strings.lower(values)
    values = np.where(np.isin(values, list(unset)), UNSET, values)
    return values.astype(object)


def _float_or_nan(text: str) -> tuple[float, bool]:
    try:
        return float(text), False
    except ValueError:
        return float("nan"), True


def _plain(text: str) -> bool:
    return text.isascii() and "_" not in text


def numbers(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of cells that are not numbers); NaN/inf text parses (to NaN/inf); surrounding
    whitespace is ignored. Python's ``float`` also reads digit group underscores (``1_000``) and non-ASCII digits
    (``١٢``): a flow file writes neither, so such cells are not numbers."""
    values = np.asarray(cells, dtype=object)
    try:
        out, bad = values.astype(np.float64), np.zeros(len(values), dtype=bool)
    except ValueError:  # some cell is not a number: parse cell by cell to find which
        parsed = [_float_or_nan(str(v)) for v in values]
        out = np.fromiter((p[0] for p in parsed), np.float64, len(values))
        bad = np.fromiter((p[1] for p in parsed), bool, len(values))
    texts = values.tolist()  # the cells are str (or numpy str)
    if not _plain("".join(texts)):
        odd = ~np.fromiter((_plain(t) for t in texts), bool, len(texts))
        out[odd], bad = np.nan, bad | odd
    return out, bad


def unset_as_zero(cells: np.ndarray, markers: Iterable[str]) -> tuple[np.ndarray, int]:
    """Cells with the unset markers replaced by ``0``, and how many were replaced."""
    values = stripped(cells)
    unset = np.isin(values, list(markers))
    return np.where(unset, "0", values), int(unset.sum())


def labels_from(cells: np.ndarray, mapping: Mapping[str, int], *, lower: bool) -> tuple[np.ndarray, np.ndarray]:
    """(int8 labels, mask of cells outside ``mapping``); bad cells get :data:`UNLABELLED`."""
    values = stripped(cells)
    if lower:
        values = np.strings.lower(values)
    out = np.full(len(values), UNLABELLED, dtype=np.int8)
    known = np.zeros(len(values), dtype=bool)
    for text, code in mapping.items():
        hit = values == text
        out[hit] = code
        known |= hit
    return out, ~known


@dataclass
class Problem:
    """Cells of one column outside its domain: ``rows`` masks the batch, ``cells`` holds the column's text."""

    reason: str
    column: str
    expected: str
    rows: np.ndarray
    cells: np.ndarray

    def describe(self, row: int) -> str:
        cell = str(self.cells[row])
        if self.reason == NON_NUMERIC:
            return "empty value" if not cell.strip() else "non-numeric value"
        if self.reason == NON_FINITE:
            return "non-finite value (NaN or inf)"
        return DESCRIPTIONS.get(self.reason, self.reason)


@dataclass
class Normalised:
    """A batch of normalised records of one source.

    ``numeric`` and ``categorical`` hold the feature columns (float64; object arrays of str, ``-`` when unset),
    ``label`` is int8 (0 benign, 1 malicious, :data:`UNLABELLED` for records without a verdict) and ``family``
    the attack family (``Normal`` for benign); the metadata arrays are None where the source lacks them (ports and
    times float64 with NaN where a record has none). ``problems`` lists the cells outside their domain and
    ``filled`` counts unset cells read as 0, per column; ``unknown_family`` masks the records whose family is
    not among the source's known families (kept: the readers count them in the table's notes).
    """

    n: int
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    label: np.ndarray | None = None
    family: np.ndarray | None = None
    src_ip: np.ndarray | None = None
    dst_ip: np.ndarray | None = None
    src_port: np.ndarray | None = None
    dst_port: np.ndarray | None = None
    start_time: np.ndarray | None = None
    problems: list[Problem] = field(default_factory=list)
    filled: dict[str, int] = field(default_factory=dict)
    unknown_family: np.ndarray | None = None

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def bad_rows(self, reasons: Iterable[str] | None = None, columns: Iterable[str] | None = None) -> np.ndarray:
        """Rows with a problem of one of ``reasons`` in one of ``columns`` (None: any)."""
        reasons = None if reasons is None else set(reasons)
        columns = None if columns is None else set(columns)
        bad = np.zeros(self.n, dtype=bool)
        for problem in self.problems:
            if (reasons is None or problem.reason in reasons) and (columns is None or problem.column in columns):
                bad |= problem.rows
        return bad

    def first_problem(self) -> tuple[int, Problem] | None:
        """The earliest row with a problem, and its first problem in column order."""
        best: tuple[int, Problem] | None = None
        for problem in self.problems:
            rows = np.flatnonzero(problem.rows)
            if len(rows) and (best is None or rows[0] < best[0]):
                best = (int(rows[0]), problem)
        return best

    def take(self, keep: np.ndarray) -> "Normalised":
        """The rows where ``keep`` is True (problems and fill counts are not carried over)."""

        def pick(a):
            return None if a is None else a[keep]

        return Normalised(
            n=int(np.count_nonzero(keep)), numeric={k: v[keep] for k, v in self.numeric.items()},
            categorical={k: v[keep] for k, v in self.categorical.items()}, label=pick(self.label),
            family=pick(self.family), src_ip=pick(self.src_ip), dst_ip=pick(self.dst_ip),
            src_port=pick(self.src_port), dst_port=pick(self.dst_port), start_time=pick(self.start_time),
            unknown_family=pick(self.unknown_family),
        )  # fmt: skip


def numeric_columns(cells: Mapping[str, np.ndarray], names: Sequence[str], problems: list[Problem],
                    labels: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Parse ``names`` as numbers, recording non-numeric and non-finite cells under ``problems`` (named by
    ``labels[name]`` where given, else the name)."""
    out = {}
    for name in names:
        values, non_numeric = numbers(cells[name])
        column = (labels or {}).get(name, name)
        if non_numeric.any():
            problems.append(Problem(NON_NUMERIC, column, "a finite number", non_numeric, cells[name]))
        non_finite = ~np.isfinite(values) & ~non_numeric
        if non_finite.any():
            problems.append(Problem(NON_FINITE, column, "a finite number", non_finite, cells[name]))
        out[name] = values
    return out
