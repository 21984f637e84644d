"""Records -> the model's input rows with the bundle's pipeline (numpy only).

A batch of records is normalised by its source's layout (:mod:`flows.normalise`, the code the training readers
run), so the pipeline sees exactly the values training saw. A record with a cell outside its domain (any column:
overlong, control characters, a negative or out-of-range or fractional count, a bad address or port; the
reasons of :data:`flows.normalise.DOMAIN_REASONS`) is malformed: counted under that reason, dropped. So is one
whose feature cell the pipeline reads is not a number; NaN and inf follow the pipeline's policy: ``impute`` keeps
the record (the pipeline imputes), ``error`` drops it as malformed. Unknown categories go to the pipeline's unknown
bucket. A bad label is metadata (a served capture need not carry labels): it never drops a record.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flows.normalise import BAD_LABEL, NON_FINITE, NON_NUMERIC, REASON_ORDER, UNLABELLED, Normalised
from flows.pipeline_state import PipelineState
from gateway.sources import Record


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


@dataclass
class Encoded:
    """Encoded rows (float32) and the records they come from, with their labels (int8; -1 unlabelled)."""

    rows: np.ndarray
    records: list[Record]
    labels: np.ndarray


def layout_runs(records: Sequence[Record]) -> list[list[Record]]:
    """Consecutive records of the same layout (a followed Zeek log may announce new fields)."""
    runs: list[list[Record]] = []
    for record in records:
        if runs and runs[-1][0].layout is record.layout:
            runs[-1].append(record)
        else:
            runs.append([record])
    return runs


def malformed_rows(batch: Normalised, pipeline: PipelineState, malformed: Counter) -> np.ndarray:
    """Rows to drop, each counted in ``malformed`` under its first reason in the readers' order: any problem but a
    bad label, where a number that is not one (or not finite, unless the pipeline imputes) counts in the features
    the pipeline reads only."""
    numeric = pipeline.kept_numeric
    finite = np.ones(batch.n, dtype=bool)
    for column in numeric:
        finite &= np.isfinite(batch.numeric[column])
    non_numeric = batch.bad_rows([NON_NUMERIC], numeric)
    masks = {NON_NUMERIC: non_numeric, NON_FINITE: ~finite & ~non_numeric & (pipeline.nonfinite != "impute")}
    bad = np.zeros(batch.n, dtype=bool)
    for reason in (r for r in REASON_ORDER if r != BAD_LABEL):
        rows = (masks[reason] if reason in masks else batch.bad_rows([reason])) & ~bad
        if rows.any():
            malformed[reason] += int(rows.sum())
            bad |= rows
    return bad


@dataclass
class NormalisedRun:
    """One layout's records normalised once: the kept rows' batch, their records (endpoints, time and label
    filled in), labels (int8) and encoded rows (float32)."""

    batch: Normalised
    records: list[Record]
    labels: np.ndarray
    rows: np.ndarray


def normalise_run(records: list[Record], pipeline: PipelineState, malformed: Counter) -> NormalisedRun:
    """Normalise records of one layout, drop and count the malformed ones, encode the rest."""
    layout = records[0].layout
    check_columns(pipeline, layout.features, f"a {layout.fmt} source")
    batch = layout.normalise_rows([r.fields for r in records])
    keep = ~malformed_rows(batch, pipeline, malformed)
    numeric = pipeline.kept_numeric
    kept = batch.take(keep)
    records = [r for r, k in zip(records, keep) if k]
    labels = kept.label if kept.label is not None else np.full(kept.n, UNLABELLED, np.int8)
    for i, record in enumerate(records):
        if kept.src_ip is not None:
            record.src, record.dst = str(kept.src_ip[i]), str(kept.dst_ip[i])
            moment = float(kept.start_time[i])
            record.time = moment if math.isfinite(moment) else None
        record.label = int(labels[i])
    if not records:
        return NormalisedRun(kept, [], labels, np.zeros((0, pipeline.n_outputs), np.float32))
    columns: dict[str, object] = {c: kept.numeric[c] for c in numeric}
    columns.update({c: kept.categorical[c] for c in pipeline.kept_categorical})
    return NormalisedRun(kept, records, labels, pipeline.transform(columns))


def _encode_run(records: list[Record], pipeline: PipelineState, malformed: Counter) -> Encoded:
    run = normalise_run(records, pipeline, malformed)
    return Encoded(run.rows, run.records, run.labels)


def encode_batch(records: Sequence[Record], pipeline: PipelineState, malformed: Counter) -> Encoded:
    """Normalise and encode ``records``; malformed ones are counted in ``malformed`` and dropped."""
    parts = [_encode_run(run, pipeline, malformed) for run in layout_runs(records)]
    if not parts:
        return Encoded(np.zeros((0, pipeline.n_outputs), np.float32), [], np.zeros(0, np.int8))
    return Encoded(np.vstack([p.rows for p in parts]), [r for p in parts for r in p.records],
                   np.concatenate([p.labels for p in parts]))  # fmt: skip


def encode(records: Sequence[Record], pipeline: PipelineState, malformed: Counter) -> tuple[np.ndarray, list[Record]]:
    """(encoded rows float32 (n, n_features), the records they come from); bad records are counted and dropped."""
    encoded = encode_batch(records, pipeline, malformed)
    return encoded.rows, encoded.records
