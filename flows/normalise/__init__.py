"""One normalisation of a flow record per source, shared by the batch readers (:mod:`flows.readers`) and the
gateway's streaming sources (:mod:`gateway.sources`): standard library and numpy only, vectorised over a batch.

A source's :class:`Layout` names its columns, splits a line into cells and normalises a batch of cells into a
:class:`Normalised` batch (features, label, family, addresses, ports, times and the cells outside their domain).
"""

from __future__ import annotations

from flows.normalise.cells import (
    BAD_ADDRESS,
    BAD_LABEL,
    BAD_PORT,
    CONTROL_CHARACTERS,
    DOMAIN_REASONS,
    FIELD_TOO_LONG,
    NEGATIVE,
    NON_FINITE,
    NON_NUMERIC,
    NOT_INTEGER,
    OUT_OF_RANGE,
    REASON_ORDER,
    UNLABELLED,
    UNSET,
    Normalised,
    Problem,
)
from flows.normalise.domains import MAX_CELL
from flows.normalise.layout import Layout, compression, split_csv_line, split_lines, without_bom
from flows.normalise.unsw import PARTITIONED_COLUMNS, UnswPartitioned, UnswRaw
from flows.normalise.zeek import ZeekCsv, ZeekLog, is_zeek_csv_header
from flows.schema import header_columns

FORMATS = ("unsw", "unsw_raw", "zeek", "zeek_csv")

__all__ = [
    "BAD_ADDRESS", "BAD_LABEL", "BAD_PORT", "CONTROL_CHARACTERS", "DOMAIN_REASONS", "FIELD_TOO_LONG", "FORMATS",
    "MAX_CELL", "NEGATIVE", "NON_FINITE", "NON_NUMERIC", "NOT_INTEGER", "OUT_OF_RANGE", "REASON_ORDER", "UNLABELLED",
    "UNSET", "Layout", "Normalised", "Problem", "UnswPartitioned", "UnswRaw", "ZeekCsv", "ZeekLog", "compression",
    "detect_format", "header_layout", "split_csv_line", "split_lines", "without_bom",
]  # fmt: skip


def detect_format(first_line: str) -> str:
    """The format a file's first line announces: ``zeek`` (a ``#`` header), ``unsw`` (a CSV header with the
    partitioned UNSW-NB15 columns), ``zeek_csv`` (a CSV header with Zeek's field names), else ``unsw_raw``."""
    line = first_line.lstrip("\ufeff")
    if line.startswith("#"):
        return "zeek"
    names = header_columns(line)
    if {"proto", "service", "state"} <= set(names):
        return "unsw"
    if is_zeek_csv_header([n.strip() for n in line.split(",")]):
        return "zeek_csv"
    return "unsw_raw"


def header_layout(fmt: str, header_line: str) -> Layout:
    """The layout of a CSV format whose first line is a header (``unsw``, ``zeek_csv``)."""
    line = header_line.lstrip("\ufeff")
    if fmt == "unsw":
        return UnswPartitioned(header_columns(line))
    if fmt == "zeek_csv":
        return ZeekCsv(split_csv_line(line))
    raise ValueError(f"format {fmt!r} has no header row")
