"""Fuzz (issue 14): the first 50 lines of one real file per format, mutated by Hypothesis (seeded: derandomize),
through every batch reader under both bad-record policies and through the gateway's FlowSource -> encode path.
The only exceptions allowed are the project's own: FlowDataError from a reader, SourceError (a source that cannot
be read at all) and SchemaMismatchError (a bundle for another schema) from the gateway."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.errors import FlowDataError
from flows.pipeline import FeaturePipeline, PipelineConfig
from flows.pipeline_state import PipelineState
from flows.readers import read_unsw_partitioned, read_unsw_raw, read_zeek_conn_log
from gateway.encode import SchemaMismatchError, encode_batch
from gateway.sources import FlowSource, SourceError

SEEDS = {  # format -> (file in the data folder, name the mutated copy gets, its reader)
    "unsw": ("unsw-nb15/UNSW_NB15_testing-set.csv", "part.csv", read_unsw_partitioned),
    "unsw_raw": ("unsw-nb15/raw/UNSW-NB15_1.first20000.csv", "UNSW-NB15_1.csv", read_unsw_raw),  # CRLF ends
    "zeek": ("iot-23/CTU-IoT-Malware-Capture-34-1.conn.log.labeled", "c.conn.log.labeled", read_zeek_conn_log),
    "zeek_csv": ("iot-23/csv/CTU-Malware-Capture-8-1-labeled.csv", "x-labeled.csv", read_zeek_conn_log),
}
READERS = (read_unsw_partitioned, read_unsw_raw, read_zeek_conn_log)
N_LINES = 50
TOKENS = [b"\x00", b"\x07", b"\x1b", b"\x7f", b"\t", b",", b'"', b'""', b"\r", b"\n", b"\r\n", b"\x0b", b"\x0c",
          b"\x1c", "\u2028".encode(), "\x85".encode(), b"\x85", b"\xff", b"\xef\xbb\xbf", b"-", b"#", b" ", b"(empty)",
          b"#fields\t", b"\x1f\x8b", b"0x", b"e", b".", b"NaN", b"inf"]  # fmt: skip
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["-0", "1e999", "-1e-999", "0x1f", "0xZZ", "nan", "-inf", "1_0", "\u0663", "", " ", "+5",
                     "9" * 400]),
)  # fmt: skip
POSITION = st.integers(0, 2**31)


def flip(data: bytes, at: int, byte: int) -> bytes:
    at %= max(len(data), 1)
    return data[:at] + bytes([byte]) + data[at + 1 :]


def insert(data: bytes, at: int, token: bytes) -> bytes:
    at %= len(data) + 1
    return data[:at] + token + data[at:]


def truncate(data: bytes, at: int) -> bytes:
    return data[: at % (len(data) + 1)]


def huge(data: bytes, at: int, size: int, char: bytes) -> bytes:
    return insert(data, at, char * size)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def swap(data: bytes, i: int, j: int) -> bytes:
    lines = _lines(data)
    i, j = i % len(lines), j % len(lines)
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def drop_or_repeat(data: bytes, i: int, repeat: bool) -> bytes:
    lines = _lines(data)
    i %= len(lines)
    lines[i : i + 1] = [lines[i]] * 2 if repeat else []
    return b"\n".join(lines)


def number_into_cell(data: bytes, i: int, j: int, number: str) -> bytes:
    lines = _lines(data)
    i %= len(lines)
    sep = b"\t" if b"\t" in lines[i] else b","
    cells = lines[i].split(sep)
    cells[j % len(cells)] = number.encode()
    lines[i] = sep.join(cells)
    return b"\n".join(lines)


MUTATION = st.one_of(
    st.tuples(st.just(flip), POSITION, st.integers(0, 255)),
    st.tuples(st.just(insert), POSITION, st.sampled_from(TOKENS)),
    st.tuples(st.just(truncate), POSITION),
    st.tuples(st.just(huge), POSITION, st.integers(1_000, 200_000), st.sampled_from([b"x", b"9", b'"', b"\t"])),
    st.tuples(st.just(swap), POSITION, POSITION),
    st.tuples(st.just(drop_or_repeat), POSITION, st.booleans()),
    st.tuples(st.just(number_into_cell), POSITION, POSITION, NUMBERS),
)
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=4)


def mutate(seed: bytes, mutations: list[tuple]) -> bytes:
    for operation, *args in mutations:
        seed = operation(seed, *args)
    return seed


@pytest.fixture(scope="module")
def corpus(data_dir, tmp_path_factory) -> dict[str, tuple[bytes, PipelineState, Path]]:
    """Per format: the seed (first 50 lines, as stored), a pipeline fitted on its reader's table, a folder."""
    out = {}
    for fmt, (relative, name, reader) in SEEDS.items():
        with open(data_dir / relative, "rb") as handle:
            seed = b"".join(handle.readline() for _ in range(N_LINES))
        folder = tmp_path_factory.mktemp(fmt)
        (folder / name).write_bytes(seed)
        table = reader(folder / name)
        assert len(table) > 30, fmt
        out[fmt] = (seed, FeaturePipeline(PipelineConfig(min_category_count=1)).fit(table).state_, folder / name)
    return out


def read_all(path: Path) -> None:
    """Every batch reader, both policies: a table or a FlowDataError that names the file; where the strict
    read succeeds, the lenient one gives the same records."""
    for reader in READERS:
        strict = None
        for policy in ("error", "skip"):
            try:
                table = reader(path, bad_records=policy)
            except FlowDataError as err:
                assert str(err).startswith(str(path)), str(err)[:300]
                continue
            if policy == "error":
                strict = table
            elif strict is not None:
                assert table.frame.equals(strict.frame) and set(table.skipped) <= {"unlabelled_background"}


def serve_all(path: Path, state: PipelineState) -> None:
    """The gateway's streaming path: records and malformed counts, or its documented errors."""
    try:
        source = FlowSource(path)
        records = [r for r in source if r is not None]
        malformed: Counter = Counter()
        encoded = encode_batch(records, state, malformed)
    except (SourceError, SchemaMismatchError):
        return
    assert len(encoded.records) + sum(malformed.values()) == len(records)
    assert encoded.rows.shape == (len(encoded.records), state.n_outputs)


@pytest.mark.parametrize("fmt", list(SEEDS))
@settings(derandomize=True, deadline=None, max_examples=200, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(mutations=MUTATIONS)
def test_mutated_files_give_tables_or_project_errors(corpus, fmt, mutations):
    seed, state, path = corpus[fmt]
    path.write_bytes(mutate(seed, mutations))
    read_all(path)
    serve_all(path, state)


def test_the_unmutated_seeds_read_and_serve_cleanly(corpus):
    for fmt, (seed, state, path) in corpus.items():
        path.write_bytes(seed)
        source = FlowSource(path)
        malformed: Counter = Counter()
        encoded = encode_batch([r for r in source if r is not None], state, malformed)
        assert malformed == Counter() and source.stats.malformed == Counter() and len(encoded.records) > 30, fmt
