"""Training and serving encode every record alike: for every source file in the data folder that has a reader, a
pipeline fitted on the reader's table encodes (a) the reader's frame with PipelineState.transform and (b) the file
through the code path ``python -m gateway serve`` runs (FlowSource -> encode); the matrices must be identical and
hold the same records in the same order."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from flows.loader import load_file
from flows.pipeline import FeaturePipeline, PipelineConfig
from flows.table import LABEL, SRC_IP, START_TIME
from gateway.encode import encode_batch
from gateway.sources import FlowSource

SOURCES = [
    ("unsw-nb15", "unsw-nb15/UNSW_NB15_testing-set.csv"),
    ("unsw-nb15-raw", "unsw-nb15/raw/UNSW-NB15_1.first3000.csv"),
    ("unsw-nb15-raw", "unsw-nb15/raw/UNSW-NB15_1.first20000.csv"),
    *[("iot-23", f"iot-23/{name}") for name in (
        "CTU-Honeypot-Capture-4-1.conn.log.labeled", "CTU-Honeypot-Capture-5-1.conn.log.labeled",
        "CTU-IoT-Malware-Capture-34-1.conn.log.labeled", "CTU-IoT-Malware-Capture-42-1.conn.log.labeled",
        "csv/CTU-Malware-Capture-8-1-labeled.csv", "csv/CTU-Malware-Capture-20-1-labeled.csv",
        "csv/CTU-Malware-Capture-21-1-labeled.csv")],
    *[("stratosphere", f"stratosphere/{n:03d}-zeek-mixed.conn.log.labeled") for n in (8, 10, 11)],
]  # fmt: skip


def test_every_source_file_with_a_reader_is_listed(data_dir):
    """A file added to the data folder must join the parity test."""
    listed = {path for _, path in SOURCES}
    found = {str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
             if p.is_file() and p.parts[-2] != "cicids2017" and p.name not in
             ("README.md", "NUSW-NB15_features.csv", "UNSW-NB15_LIST_EVENTS.csv")}  # fmt: skip
    assert found == listed


@pytest.mark.parametrize("dataset, relative", SOURCES, ids=[p.rsplit("/", 1)[-1] for _, p in SOURCES])
def test_reader_and_gateway_encode_identically(data_dir, dataset, relative):
    path = data_dir / relative
    table = load_file(dataset, path)
    state = FeaturePipeline(PipelineConfig(min_category_count=1)).fit(table).state_
    expected = state.transform(table.frame)

    source = FlowSource(path)
    malformed: Counter = Counter()
    encoded = encode_batch([r for r in source if r is not None], state, malformed)
    assert malformed == Counter() and source.stats.malformed == Counter()
    labelled = encoded.labels >= 0  # the reader drops Background (unlabelled) records and counts them
    assert int((~labelled).sum()) == table.skipped.get("unlabelled_background", 0)
    served = encoded.rows[labelled]
    assert served.shape == expected.shape
    assert np.array_equal(served, expected)
    records = [r for r, keep in zip(encoded.records, labelled) if keep]
    assert np.array_equal(encoded.labels[labelled], table.frame[LABEL].to_numpy())
    if table.has_hosts:  # same records in the same order: addresses and times too
        assert [r.src for r in records] == table.frame[SRC_IP].tolist()
        times = np.array([np.nan if r.time is None else r.time for r in records])
        assert np.array_equal(times, table.frame[START_TIME].to_numpy(), equal_nan=True)


def test_a_partitioned_model_reads_every_column_it_needs_from_raw_records(data_dir, unsw_table):
    """The default model trains on the partitioned file: raw UNSW-NB15 records carry all its inputs (``rate``
    derived), and the gateway's raw source yields them."""
    state = FeaturePipeline().fit(unsw_table).state_
    raw = data_dir / "unsw-nb15" / "raw" / "UNSW-NB15_1.first3000.csv"
    table = load_file("unsw-nb15-raw", raw)
    assert set(state.input_columns) <= set(table.features)
    encoded = encode_batch([r for r in FlowSource(raw) if r is not None], state, Counter())
    assert np.array_equal(encoded.rows, state.transform(table.frame))
    names = state.output_names
    unknown = encoded.rows[:, names.index("state=<unknown>")] == 1
    raw_states = np.array([r.values["state"] for r in encoded.records])
    assert {"FIN", "INT", "CON"} <= set(raw_states[~unknown])  # upper case in the raw files, known states here
    assert unknown.sum() == (~np.isin(np.char.lower(raw_states), state.vocabularies["state"])).sum() < 10
