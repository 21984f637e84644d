"""Labelled Zeek conn logs (IoT-23, Stratosphere) in both shapes.

* The original tab-separated log: ``#`` header lines, ``#fields`` names the columns, ``#unset_field`` (``-``) and
  ``#empty_field`` (``(empty)``) give the markers; IoT-23 separates its last three fields by runs of spaces.
* The CSV export: a header row with the Zeek field names, comma-separated, unset fields blank, ``(empty)`` kept.

Both normalise alike: categorical values stripped (Zeek's values are case-sensitive: ``history`` upper case means
the originator, so no case folding), unset/empty/blank as ``-``; unset ``duration``/``orig_bytes``/``resp_bytes``
(connections Zeek could not measure) read as 0 and counted; labels ``Benign``/``Malicious`` in any case, and
``Background`` as unlabelled (never benign); the family from ``detailed-label`` (IoT-23) or ``detailedlabel``
(Stratosphere), ``Normal`` for benign records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from flows.normalise.cells import (
    BAD_LABEL,
    UNLABELLED,
    Normalised,
    Problem,
    categorical,
    labels_from,
    numeric_columns,
    stripped,
    unset_as_zero,
)
from flows.normalise.domains import AMOUNT, COUNT, addresses, check_domains, ports, unknown_families
from flows.normalise.layout import Layout
from flows.schema import BENIGN_FAMILY, IOT23_CATEGORICAL, IOT23_NUMERIC, IOT23_UNSET_AS_ZERO

TS, ORIG_H, ORIG_P, RESP_H, RESP_P = "ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"
LABEL_FIELD = "label"
FAMILY_FIELDS = ("detailed-label", "detailedlabel")
LABELS = {"benign": 0, "malicious": 1, "background": -1}
BACKGROUND = "Background"
REQUIRED = (TS, ORIG_H, ORIG_P, RESP_H, RESP_P, *IOT23_NUMERIC, *IOT23_CATEGORICAL, LABEL_FIELD)
WHITESPACE = re.compile(r"[ \t]+")
# Zeek's types (#types): ts is a time, duration an interval, the others counts; none is ever negative
DOMAINS = {TS: AMOUNT, "duration": AMOUNT, **{c: COUNT for c in IOT23_NUMERIC if c != "duration"}}
# IoT-23's detailed labels as published with the data set, and this module's "Malicious" for a malicious record
# without one; Stratosphere's logs (``detailedlabel``) come with no closed list, so their families are not checked
IOT23_FAMILIES = frozenset({
    BENIGN_FAMILY, BACKGROUND, "Malicious", "Attack", "C&C", "C&C-FileDownload", "C&C-HeartBeat",
    "C&C-HeartBeat-Attack", "C&C-HeartBeat-FileDownload", "C&C-Mirai", "C&C-PartOfAHorizontalPortScan",
    "C&C-Torii", "DDoS", "FileDownload", "Okiru", "Okiru-Attack", "PartOfAHorizontalPortScan",
    "PartOfAHorizontalPortScan-Attack",
})  # fmt: skip
KNOWN_FAMILIES = {"detailed-label": IOT23_FAMILIES, "detailedlabel": None}


def is_zeek_csv_header(names: Sequence[str]) -> bool:
    """True for a CSV header naming Zeek conn-log fields."""
    return {TS, ORIG_H, "conn_state"} <= set(names)


def family_field(columns: Sequence[str]) -> str | None:
    return next((f for f in FAMILY_FIELDS if f in columns), None)


class ZeekLog(Layout):
    """The tab-separated log; columns from the ``#fields`` line."""

    fmt = "zeek"
    source = "iot-23"
    numeric = tuple(IOT23_NUMERIC)
    categorical = tuple(IOT23_CATEGORICAL)
    required = REQUIRED

    def __init__(self, columns: Sequence[str], unset: str = "-", empty: str = "(empty)") -> None:
        super().__init__(columns)
        self.unset, self.empty = unset, empty
        self.known_families = KNOWN_FAMILIES.get(family_field(self.columns) or "", None)

    @classmethod
    def from_fields_line(cls, line: str, unset: str = "-", empty: str = "(empty)") -> "ZeekLog":
        """The layout named by a ``#fields`` header line."""
        return cls(WHITESPACE.split(line.partition("\t")[2].strip()), unset, empty)

    def split(self, line: str) -> list[str]:
        fields = line.split("\t")
        if len(fields) < self.n_fields:  # IoT-23: the last fields separated by spaces
            fields = fields[:-1] + WHITESPACE.split(fields[-1].strip())
        return fields

    def missing(self) -> list[str]:
        """The required columns the header lacks; ``label`` is not one: a live conn.log carries no verdicts, so its
        records are unlabelled (the training readers still require labels unless they keep unlabelled records)."""
        return [c for c in super().missing() if c != LABEL_FIELD]

    @property
    def markers(self) -> tuple[str, ...]:
        return ("", self.unset, self.empty)

    def normalise(self, cells: Mapping[str, np.ndarray]) -> Normalised:
        problems: list[Problem] = []
        cells = dict(cells)
        filled = {}
        for column in IOT23_UNSET_AS_ZERO:
            cells[column], count = unset_as_zero(cells[column], self.markers)
            if count:
                filled[column] = count
        numeric = numeric_columns(cells, [*IOT23_NUMERIC, TS], problems)
        src_ip, dst_ip = (addresses(cells[c], c, problems) for c in (ORIG_H, RESP_H))
        port = {column: ports(cells[column], column, problems, hex_ok=False) for column in (ORIG_P, RESP_P)}
        check_domains(numeric, cells, DOMAINS, problems)
        start_time = numeric.pop(TS)
        if LABEL_FIELD not in cells:  # a live conn.log: no verdicts (only readers that keep unlabelled get here)
            label, bad = np.full(len(start_time), UNLABELLED, dtype=np.int8), np.zeros(len(start_time), dtype=bool)
        else:
            label, bad = labels_from(cells[LABEL_FIELD], LABELS, lower=True)
        if bad.any():
            problems.append(Problem(BAD_LABEL, LABEL_FIELD, "Benign, Malicious or Background", bad,
                                    cells[LABEL_FIELD]))  # fmt: skip
        family = self._families(cells, label)
        values = {c: categorical(cells[c], lower=False, unset=self.markers) for c in IOT23_CATEGORICAL}
        return Normalised(
            len(label), numeric, values, label, family, src_ip=src_ip, dst_ip=dst_ip, src_port=port[ORIG_P],
            dst_port=port[RESP_P], start_time=start_time, problems=problems, filled=filled,
            unknown_family=unknown_families(family, self.known_families),
        )  # fmt: skip

    def _families(self, cells: Mapping[str, np.ndarray], label: np.ndarray) -> np.ndarray:
        field = family_field(list(cells))
        n = len(label)
        detail = stripped(cells[field]) if field else np.full(n, "", dtype=str)
        out = detail.astype(object)
        out[np.isin(detail, self.markers)] = "Malicious"
        out[label == 0] = BENIGN_FAMILY
        out[label == -1] = BACKGROUND
        return out


class ZeekCsv(ZeekLog):
    """The CSV export: a header row, comma-separated, unset fields blank."""

    fmt = "zeek_csv"

    def __init__(self, columns: Sequence[str]) -> None:
        super().__init__([c.strip() for c in columns], unset="-", empty="(empty)")

    def split(self, line: str) -> list[str]:
        return Layout.split(self, line)
