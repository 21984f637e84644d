"""The value domain of every cell of a flow record (standard library and numpy only), checked column by column.

Each check records the cells outside their domain as a :class:`~flows.normalise.cells.Problem`, never raises:

* every cell of every column: at most :data:`MAX_CELL` characters (``field_too_long``; such a cell is blanked
  before any other check, so that no numpy string array of a batch grows to the width of one huge cell) and no
  control characters (``control_characters``: Unicode category Cc and the line/paragraph separators);
* numeric columns with a :class:`Domain`: not below 0 (``negative_value``), not above the column's maximum
  (``out_of_range``), whole where the column counts things (``not_integer``); NaN and inf are left to the
  non-finite check;
* addresses: an IPv4 or IPv6 address (``bad_address``, the standard library's :mod:`ipaddress`);
* ports: a decimal integer 0-65535 (or ``0x`` hex where the source writes hex), ``-`` or blank for none
  (``bad_port``);
* attack families: a mask of the records whose family is not among the source's known families (kept, counted).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flows.normalise.cells import (
    BAD_ADDRESS,
    BAD_PORT,
    CONTROL_CHARACTERS,
    FIELD_TOO_LONG,
    NEGATIVE,
    NOT_INTEGER,
    OUT_OF_RANGE,
    Problem,
    column_array,
    stripped,
)

MAX_CELL = 1024  # characters; no cell of the shared data is longer than 41
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
DECIMAL_PORT = re.compile(r"[0-9]{1,10}")
HEX_PORT = re.compile(r"0x[0-9a-f]{1,8}")
NO_PORT = ("-", "")


@dataclass(frozen=True)
class Domain:
    """A numeric column's domain: a number >= 0, at most ``maximum`` (None: no bound), whole if ``integer``."""

    maximum: float | None = None
    integer: bool = False

    @property
    def expected(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind} >= 0" if self.maximum is None else f"{kind} 0-{self.maximum:.0f}"


AMOUNT = Domain()  # durations, rates, times, jitter: real, never negative
COUNT = Domain(integer=True)  # bytes, packets, connections: whole, never negative


def clean(rows: Sequence[Sequence[str]]) -> bool:
    """True when no cell of ``rows`` can be overlong or hold a control character: no row's cells add up to more
    than :data:`MAX_CELL` characters and none holds one (a cheap pass over whole rows before :func:`screen`)."""
    joined = list(map("".join, rows))
    return (not joined or max(map(len, joined)) <= MAX_CELL) and CONTROL.search("".join(joined)) is None


def screen(cells: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[Problem]]:
    """(the cells with overlong ones blanked, problems): the checks every column gets, whatever it holds."""
    out, problems = dict(cells), []
    for column, values in cells.items():
        texts = values.tolist()
        if texts and max(map(len, texts)) > MAX_CELL:
            long = np.fromiter((len(c) > MAX_CELL for c in texts), dtype=bool, count=len(texts))
            problems.append(Problem(FIELD_TOO_LONG, column, f"at most {MAX_CELL} characters", long, values))
            texts = ["" if too_long else c for c, too_long in zip(texts, long)]
            out[column] = column_array(texts)
        if CONTROL.search("".join(texts)):
            control = np.fromiter((CONTROL.search(c) is not None for c in texts), dtype=bool, count=len(texts))
            problems.append(Problem(CONTROL_CHARACTERS, column, "text without control characters", control,
                                    values))  # fmt: skip
    return out, problems


def check_domains(values: Mapping[str, np.ndarray], cells: Mapping[str, np.ndarray],
                  domains: Mapping[str, Domain], problems: list[Problem]) -> None:  # fmt: skip
    """Record the finite values of ``values`` outside their column's domain under ``problems`` (all columns at
    once: one records x columns matrix)."""
    names = [c for c in domains if c in values]
    if not names:
        return
    matrix = np.column_stack([values[c] for c in names])
    finite = np.isfinite(matrix)
    maxima = np.array([np.inf if domains[c].maximum is None else domains[c].maximum for c in names])
    whole = np.array([domains[c].integer for c in names])
    with np.errstate(invalid="ignore"):
        flags = {NEGATIVE: finite & (matrix < 0), OUT_OF_RANGE: finite & (matrix > maxima),
                 NOT_INTEGER: finite & whole & (matrix != np.floor(matrix))}  # fmt: skip
    for reason, mask in flags.items():
        for k in np.flatnonzero(mask.any(axis=0)):
            column = names[k]
            problems.append(Problem(reason, column, domains[column].expected, mask[:, k].copy(), cells[column]))


def _per_value(values: np.ndarray, test, dtype) -> np.ndarray:
    """``test`` of every cell of ``values``, computed once per distinct value (directly for a small batch)."""
    if len(values) <= 64:
        return np.fromiter((test(v) for v in values.tolist()), dtype=dtype, count=len(values))
    unique, inverse = np.unique(values, return_inverse=True)
    return np.fromiter((test(u) for u in unique.tolist()), dtype=dtype, count=len(unique))[inverse.ravel()]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def addresses(cells: np.ndarray, column: str, problems: list[Problem]) -> np.ndarray:
    """The stripped addresses (object array); cells that are not an IPv4 or IPv6 address go to ``problems``."""
    values = stripped(cells)
    bad = ~_per_value(values, _is_address, bool)
    if bad.any():
        problems.append(Problem(BAD_ADDRESS, column, "an IPv4 or IPv6 address", bad, cells))
    return values.astype(object)


def _port(text: str, hex_ok: bool) -> float:
    """The port of one (stripped, lower-cased) cell: NaN for none, -1 for a bad one."""
    if text in NO_PORT:
        return np.nan
    if DECIMAL_PORT.fullmatch(text):
        value = int(text)
    elif hex_ok and HEX_PORT.fullmatch(text):
        value = int(text, 16)
    else:
        return -1.0
    return float(value) if value <= 65535 else -1.0


def ports(cells: np.ndarray, column: str, problems: list[Problem], *, hex_ok: bool) -> np.ndarray:
    """Ports as float64 (NaN where there is none: ``-`` or blank); bad cells go to ``problems``."""
    out = _per_value(np.strings.lower(stripped(cells)), lambda text: _port(text, hex_ok), np.float64)
    bad = out < 0
    if bad.any():
        expected = "a port 0-65535 (decimal or 0x hex) or '-'" if hex_ok else "an integer port 0-65535 or unset"
        problems.append(Problem(BAD_PORT, column, expected, bad, cells))
        out[bad] = np.nan
    return out


def unknown_families(family: np.ndarray, known: frozenset[str] | None) -> np.ndarray:
    """Mask of the records whose family is not in ``known`` (all False when the source has no closed list)."""
    if known is None or not len(family):
        return np.zeros(len(family), dtype=bool)
    return ~np.isin(family.astype(str), sorted(known))
