"""Label a gateway's flows from evidence; flows that nothing labels never train as benign unless asked.

Order of authority: a capture's own labels (a labelled capture, as on the test bed) stand; evidence labels the
flows the capture leaves unlabelled (label -1: live Zeek without a label field, Stratosphere's Background), and
an evidence label that contradicts the capture's is counted (``disagreeing``), not applied. Among evidence, IDS
alerts (Zeek notices, Suricata) mark flows malicious; operator decisions come after them in file order, so an
operator's rejection (benign) overrides an alert and a later decision overrides an earlier one. What is still
unlabelled is dropped (``unlabelled="drop"``, the default) or, only when an operator asks for it
(``unlabelled="benign"``), trained as benign.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from flows.labels.evidence import OPERATOR, Evidence, EvidenceSet
from flows.table import ATTACK_CAT, BENIGN_FAMILY, DST_IP, DST_PORT, LABEL, SRC_IP, SRC_PORT, START_TIME, FlowTable

log = logging.getLogger(__name__)

UNLABELLED_POLICIES = ("drop", "benign")
SLACK = 1.0  # seconds of clock difference allowed between an alert's time and the flow's span
UID, DURATION, PROTO = "uid", "duration", "proto"


@dataclass
class LabelCounts:
    """Where a gateway's training labels came from (all counts of flows unless said)."""

    flows: int = 0  # read from the capture
    capture_labelled: int = 0  # labelled by the capture itself
    evidence_labelled: int = 0  # labelled by evidence (flows the capture left unlabelled)
    by_source: dict[str, int] = field(default_factory=dict)  # evidence-labelled flows per evidence source
    disagreeing: int = 0  # capture-labelled flows some evidence contradicts (the capture's label kept)
    evidence_items: int = 0
    evidence_unmatched: int = 0  # evidence items that cover no flow of the capture
    evidence_skipped: dict[str, int] = field(default_factory=dict)  # malformed evidence lines per reason
    unlabelled_dropped: int = 0
    unlabelled_as_benign: int = 0
    malicious: int = 0  # training flows
    benign: int = 0

    def metrics(self) -> dict[str, int]:
        """Flat integer counts for a Flower record (``labels-*`` keys)."""
        out = {f"labels-{f.name.replace('_', '-')}": int(getattr(self, f.name))
               for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), int)}  # fmt: skip
        out["labels-evidence-skipped"] = int(sum(self.evidence_skipped.values()))
        return out


def _canonical(values: pd.Series) -> np.ndarray:
    """Addresses in canonical form (values that are not addresses are kept as they are)."""
    def one(text: str) -> str:
        try:
            return ipaddress.ip_address(text).compressed
        except ValueError:
            return text
    uniques = pd.unique(values.astype(str))
    return values.astype(str).map({u: one(u) for u in uniques}).to_numpy(dtype=object)


class _Index:
    """Positions of a table's flows by uid, by (src, dst) and by originator, for matching evidence."""

    def __init__(self, frame: pd.DataFrame) -> None:
        n = len(frame)
        self.start = frame[START_TIME].to_numpy(np.float64) if START_TIME in frame else np.full(n, np.nan)
        duration = frame[DURATION].to_numpy(np.float64) if DURATION in frame else np.zeros(n)
        self.end = self.start + duration
        self.proto = frame[PROTO].astype(str).str.lower().to_numpy(dtype=object) if PROTO in frame else None
        self.uid = pd.Series(np.arange(n)).groupby(frame[UID].to_numpy()).indices if UID in frame else {}
        self.has_hosts = SRC_IP in frame and DST_IP in frame
        if not self.has_hosts:
            self.pair, self.host = {}, {}
            return
        self.src, self.dst = _canonical(frame[SRC_IP]), _canonical(frame[DST_IP])
        self.sport = frame[SRC_PORT].fillna(-1).to_numpy(np.int64) if SRC_PORT in frame else np.full(n, -1)
        self.dport = frame[DST_PORT].fillna(-1).to_numpy(np.int64) if DST_PORT in frame else np.full(n, -1)
        keys = pd.Series(np.arange(n))
        self.pair = keys.groupby([self.src, self.dst]).indices
        self.host = keys.groupby(self.src).indices

    def rows(self, item: Evidence, slack: float) -> np.ndarray:
        """Positions of the flows ``item`` covers."""
        if item.uid is not None and item.uid in self.uid:
            return np.asarray(self.uid[item.uid], dtype=np.int64)
        if not self.has_hosts:
            return np.zeros(0, np.int64)
        if item.src is not None:
            found = [self._tuple(item.src, item.dst, item.src_port, item.dst_port, item, slack)]
            if item.both_directions:
                found.append(self._tuple(item.dst, item.src, item.dst_port, item.src_port, item, slack))
            return np.unique(np.concatenate(found))
        if item.host is None:
            return np.zeros(0, np.int64)
        rows = np.asarray(self.host.get(item.host, []), dtype=np.int64)
        keep = (self.start[rows] >= item.start) & (self.start[rows] <= item.end)
        if item.dst is not None:
            keep &= self.dst[rows] == item.dst
        if item.dst_port is not None:
            keep &= self.dport[rows] == item.dst_port
        return rows[keep]

    def _tuple(self, src: str | None, dst: str | None, sport: int | None, dport: int | None, item: Evidence,
               slack: float) -> np.ndarray:  # fmt: skip
        rows = np.asarray(self.pair.get((src, dst), []), dtype=np.int64)
        keep = (self.start[rows] - slack <= item.start) & (item.start <= self.end[rows] + slack)
        if sport is not None:
            keep &= self.sport[rows] == sport
        if dport is not None:
            keep &= self.dport[rows] == dport
        if item.proto is not None and self.proto is not None:
            keep &= self.proto[rows] == item.proto
        return rows[keep]


def apply_evidence(table: FlowTable, evidence: EvidenceSet, unlabelled: str = "drop",
                   slack: float = SLACK) -> tuple[FlowTable, LabelCounts]:  # fmt: skip
    """(the training flows, counts): ``table``'s flows labelled by the capture or by ``evidence``; the rest
    dropped (``unlabelled="drop"``) or labelled benign (``"benign"``, an operator's explicit choice)."""
    if unlabelled not in UNLABELLED_POLICIES:
        raise ValueError(f"unlabelled must be one of {UNLABELLED_POLICIES}, got {unlabelled!r}")
    frame = table.frame
    n = len(frame)
    capture = frame[LABEL].to_numpy(np.int64)
    counts = LabelCounts(flows=n, capture_labelled=int((capture >= 0).sum()), evidence_items=len(evidence.items),
                         evidence_skipped=dict(evidence.skipped))  # fmt: skip
    found = np.full(n, -1, np.int64)
    family = np.full(n, None, dtype=object)
    source = np.full(n, "", dtype=object)
    index = _Index(frame)
    ids = [e for e in evidence.items if e.source != OPERATOR]  # alerts first, operators' decisions after them
    for item in [*ids, *(e for e in evidence.items if e.source == OPERATOR)]:
        rows = index.rows(item, slack)
        if not len(rows):
            counts.evidence_unmatched += 1
            continue
        found[rows], family[rows], source[rows] = item.label, item.family, item.source
    counts.disagreeing = int(((capture >= 0) & (found >= 0) & (capture != found)).sum())
    by_evidence = (capture < 0) & (found >= 0)
    counts.evidence_labelled = int(by_evidence.sum())
    names, per = np.unique(source[by_evidence].astype(str), return_counts=True)
    counts.by_source = {str(k): int(v) for k, v in zip(names, per)}
    label = np.where(capture >= 0, capture, found)
    cats = frame[ATTACK_CAT].to_numpy(dtype=object).copy()
    cats[by_evidence] = np.where(found[by_evidence] == 1, family[by_evidence], BENIGN_FAMILY)
    rest = label < 0
    if unlabelled == "benign":
        counts.unlabelled_as_benign = int(rest.sum())
        label[rest], cats[rest] = 0, BENIGN_FAMILY
        keep = np.ones(n, dtype=bool)
    else:
        counts.unlabelled_dropped = int(rest.sum())
        keep = ~rest
    out = frame.assign(**{LABEL: label.astype(np.int8), ATTACK_CAT: cats})
    training = dataclasses.replace(table, frame=out[keep].reset_index(drop=True))
    counts.malicious = int((training.frame[LABEL] == 1).sum())
    counts.benign = int((training.frame[LABEL] == 0).sum())
    return training, counts
