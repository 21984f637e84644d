"""The normalised flow table that every reader produces and every consumer reads.

One row per flow. Columns of ``FlowTable.frame``:

* the numeric features listed in ``numeric_features`` (float64, finite),
* the categorical features listed in ``categorical_features`` (str, stripped, never empty:
  ``-`` marks an unset value),
* ``label`` (int8, 0 = benign, 1 = malicious),
* ``attack_cat`` (str, the attack family; ``"Normal"`` for benign traffic),
* where the source has them: ``src_ip``, ``dst_ip`` (str), ``src_port``, ``dst_port`` (nullable Int64),
  ``start_time`` (float64, seconds since the epoch),
* in multi-site data sets (``captures``): ``site`` (str, the capture a flow comes from; see :func:`sites_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pathlib import Path

import numpy as np
import pandas as pd

from flows.schema import (  # noqa: F401  (re-exported: the readers and consumers import them from here)
    ATTACK_CAT,
    BENIGN_FAMILY,
    DST_IP,
    DST_PORT,
    LABEL,
    META_COLUMNS,
    SRC_IP,
    SITE,
    SRC_PORT,
    START_TIME,
)


@dataclass
class FlowTable:
    """Flows of one source, normalised; ``skipped`` counts records dropped by a skip policy, per reason."""

    frame: pd.DataFrame
    numeric_features: list[str]
    categorical_features: list[str]
    source: str
    path: str
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[str]:
        """All feature columns: numeric first, then categorical."""
        return [*self.numeric_features, *self.categorical_features]

    @property
    def has_hosts(self) -> bool:
        """True when the source carries IP addresses (host graphs and per-host partitions need them)."""
        return SRC_IP in self.frame.columns and DST_IP in self.frame.columns

    @property
    def n_skipped(self) -> int:
        return int(sum(self.skipped.values()))

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, index: pd.Index | list[int]) -> "FlowTable":
        """A new table with the rows ``index`` (positional), same schema and provenance."""
        return FlowTable(
            frame=self.frame.iloc[index].reset_index(drop=True),
            numeric_features=list(self.numeric_features),
            categorical_features=list(self.categorical_features),
            source=self.source,
            path=self.path,
            skipped=dict(self.skipped),
            notes=list(self.notes),
        )

    def drop_features(self, names: list[str]) -> "FlowTable":
        """A new table without the feature columns ``names`` (names it does not have are ignored)."""
        drop = [n for n in names if n in self.frame.columns and n in self.features]
        return FlowTable(
            frame=self.frame.drop(columns=drop),
            numeric_features=[c for c in self.numeric_features if c not in drop],
            categorical_features=[c for c in self.categorical_features if c not in drop],
            source=self.source,
            path=self.path,
            skipped=dict(self.skipped),
            notes=list(self.notes),
        )

    def sites(self) -> np.ndarray:
        """The site of every row: the ``site`` column of a multi-site table, else :meth:`site_name` everywhere."""
        if SITE in self.frame.columns:
            return self.frame[SITE].astype(str).to_numpy(dtype=object)
        return np.full(len(self.frame), self.site_name(), dtype=object)

    def site_name(self) -> str:
        """A single-file table's site: its source and file name (one capture = one site)."""
        return f"{self.source}:{Path(self.path).name}" if self.path else self.source

    def summary(self) -> dict:
        """Counts for logs and run outputs."""
        frame = self.frame
        return {
            "source": self.source,
            "path": self.path,
            "records": len(frame),
            "labels": {str(k): int(v) for k, v in frame[LABEL].value_counts().sort_index().items()},
            "attack_cat": {str(k): int(v) for k, v in frame[ATTACK_CAT].value_counts().items()},
            "numeric_features": len(self.numeric_features),
            "categorical_features": len(self.categorical_features),
            "skipped": dict(self.skipped),
            "has_hosts": self.has_hosts,
        }
