"""Records -> the model's input rows with the bundle's pipeline (numpy only).

Numeric cells are parsed here: blank UNSW cells that the raw files leave empty and Zeek's ``-`` (no payload seen)
read as 0, as the training readers do. A cell that is not a number makes its record malformed (counted, dropped);
NaN and inf follow the pipeline's policy: ``impute`` keeps the record (the pipeline imputes), ``error`` drops it
as malformed. Unknown categories go to the pipeline's unknown bucket.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from flows.pipeline_state import PipelineState
from flows.schema import IOT23_UNSET_AS_ZERO, UNSW_BLANK_AS_ZERO
from gateway.sources import Record

UNSET_AS_ZERO = {*UNSW_BLANK_AS_ZERO, *IOT23_UNSET_AS_ZERO}


class SchemaMismatchError(ValueError):
    """The source lacks columns the bundle's pipeline needs: a bundle built for another schema."""


def check_columns(pipeline: PipelineState, columns: Sequence[str], source: str) -> None:
    missing = [c for c in pipeline.input_columns if c not in set(columns)]
    if missing:
        raise SchemaMismatchError(
            f"{source} has no column(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} that the "
            f"bundle's pipeline needs ({len(missing)} of {len(pipeline.input_columns)} missing): the bundle was "
            "built for another flow schema"
        )  # fmt: skip


def parse_number(text: str, column: str) -> float:
    """float of a cell; blank/``-`` is 0 for the columns where the sources mean 'none'; ValueError otherwise."""
    text = text.strip()
    if text in ("", "-") and column in UNSET_AS_ZERO:
        return 0.0
    return float(text)


def encode(records: Sequence[Record], pipeline: PipelineState, malformed: Counter) -> tuple[np.ndarray, list[Record]]:
    """(encoded rows float32 (n, n_features), the records they come from); bad records are counted and dropped."""
    numeric = pipeline.kept_numeric
    impute = pipeline.nonfinite == "impute"
    kept: list[Record] = []
    rows: list[list[float]] = []
    for record in records:
        try:
            values = [parse_number(record.values[c], c) for c in numeric]
        except ValueError:
            malformed["non_numeric"] += 1
            continue
        if not impute and not all(map(math.isfinite, values)):
            malformed["non_finite"] += 1
            continue
        rows.append(values)
        kept.append(record)
    columns: dict[str, object] = {}
    matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(numeric))
    for j, column in enumerate(numeric):
        columns[column] = matrix[:, j]
    for column in pipeline.kept_categorical:
        columns[column] = [r.values[column] for r in kept]
    if not kept:
        return np.zeros((0, pipeline.n_outputs), np.float32), kept
    return pipeline.transform(columns), kept
