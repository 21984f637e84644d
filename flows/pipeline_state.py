"""The fitted feature pipeline as data: JSON round trip and a transform that needs numpy only.

A gateway applies a model bundle's pipeline with this module alone (no pandas, sklearn or torch), so it
imports nothing but the standard library and numpy. Fitting lives in :mod:`flows.pipeline`.

Transform, per record: numeric features -> non-finite policy -> optional signed log1p -> standardise with
the training mean/std; each categorical feature -> one-hot over the training vocabulary plus an
``<unknown>`` bucket. Output columns: selected numeric features in order, then the one-hot blocks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

SCHEMA_VERSION = 1
UNKNOWN = "<unknown>"
NONFINITE_POLICIES = ("error", "impute")


class PipelineStateError(ValueError):
    """A pipeline state that cannot be used: unknown schema version, bad fields or missing input columns."""


@dataclass
class PipelineState:
    """Everything a fitted pipeline learned, in JSON-friendly types."""

    numeric: list[str]
    categorical: list[str]
    mean: list[float]
    std: list[float]
    vocabularies: dict[str, list[str]]
    log_transform: bool = True
    nonfinite: str = "error"
    selected: list[str] | None = None
    threshold: float = 0.5
    source: str = ""
    schema_version: int = SCHEMA_VERSION
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise PipelineStateError(
                f"pipeline schema version {self.schema_version} is not supported (this code reads {SCHEMA_VERSION})"
            )
        if len(self.mean) != len(self.numeric) or len(self.std) != len(self.numeric):
            raise PipelineStateError("pipeline state: mean/std length differs from the numeric feature list")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise PipelineStateError(f"pipeline state: nonfinite must be one of {NONFINITE_POLICIES}")
        missing = [c for c in self.categorical if c not in self.vocabularies]
        if missing:
            raise PipelineStateError(f"pipeline state: no vocabulary for categorical feature {missing[0]!r}")

    # ---- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "PipelineState":
        if "schema_version" not in data:
            raise PipelineStateError("pipeline state has no schema_version")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise PipelineStateError(f"pipeline state has unknown fields {unknown}")
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PipelineState":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "PipelineState":
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    # ---- application ---------------------------------------------------------------------------------
    @property
    def input_columns(self) -> list[str]:
        """The raw columns the transform reads."""
        return [*self.kept_numeric, *self.kept_categorical]

    @property
    def kept_numeric(self) -> list[str]:
        return [c for c in self.numeric if self.selected is None or c in self.selected]

    @property
    def kept_categorical(self) -> list[str]:
        return [c for c in self.categorical if self.selected is None or c in self.selected]

    @property
    def output_names(self) -> list[str]:
        names = list(self.kept_numeric)
        for column in self.kept_categorical:
            names += [f"{column}={v}" for v in self.vocabularies[column]] + [f"{column}={UNKNOWN}"]
        return names

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def transform(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        """Encode records given as a mapping column -> values (a DataFrame works too) into float32 rows."""
        missing = [c for c in self.input_columns if c not in columns]
        if missing:
            raise PipelineStateError(f"input lacks column {missing[0]!r} that the pipeline needs")
        numeric_index = [self.numeric.index(c) for c in self.kept_numeric]
        n_rows = len(columns[self.input_columns[0]]) if self.input_columns else 0
        blocks = []
        if numeric_index:
            values = np.column_stack([np.asarray(columns[c], dtype=np.float64) for c in self.kept_numeric])
            blocks.append(self.scale(values, numeric_index))
        for column in self.kept_categorical:
            blocks.append(self.one_hot(column, columns[column], n_rows))
        return np.hstack(blocks).astype(np.float32) if blocks else np.zeros((n_rows, 0), np.float32)

    def scale(self, values: np.ndarray, numeric_index: list[int]) -> np.ndarray:
        mean = np.asarray(self.mean, dtype=np.float64)[numeric_index]
        std = np.asarray(self.std, dtype=np.float64)[numeric_index]
        bad = ~np.isfinite(values)
        if bad.any():
            if self.nonfinite == "error":
                row, col = np.argwhere(bad)[0]
                raise PipelineStateError(
                    f"non-finite value in column {self.kept_numeric[col]!r} at row {row} (policy 'error')"
                )
        if self.log_transform:
            values = signed_log1p(values)
        scaled = (values - mean) / std
        if bad.any():
            scaled[bad] = 0.0  # "impute": the training mean, which is 0 after scaling
        return scaled

    def one_hot(self, column: str, values: Sequence, n_rows: int) -> np.ndarray:
        vocabulary = self.vocabularies[column]
        lookup = {v: i for i, v in enumerate(vocabulary)}
        unknown = len(vocabulary)
        codes = np.fromiter((lookup.get(str(v), unknown) for v in values), dtype=np.int64, count=n_rows)
        out = np.zeros((n_rows, unknown + 1), dtype=np.float32)
        out[np.arange(n_rows), codes] = 1.0
        return out


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): tames the heavy tails of byte and packet counts, defined for negatives."""
    with np.errstate(invalid="ignore"):
        return np.sign(values) * np.log1p(np.abs(values))
