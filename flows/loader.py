"""Find the data folder and load a named data set into a :class:`FlowTable`.

The data folder comes from a configured value or, failing that, the environment variable
``BOTDEFENDER_DATA_DIR``. Expected layout (as in the project's shared data folder)::

    DATA_DIR/unsw-nb15/<partitioned csv>        any name; recognised by its header
    DATA_DIR/unsw-nb15/NUSW-NB15_features.csv
    DATA_DIR/unsw-nb15/raw/UNSW-NB15_*.csv      raw files, no header
    DATA_DIR/iot-23/*.conn.log.labeled         Zeek conn logs, tab-separated
    DATA_DIR/iot-23/csv/*.csv                  Zeek conn logs, CSV export (header row)
    DATA_DIR/stratosphere/*.conn.log.labeled   Stratosphere Zeek conn logs (``detailedlabel``, Background)

``captures`` is a multi-site data set: every IoT-23 and Stratosphere capture above, each file one site, its rows
tagged in the ``site`` column (metadata, never a feature); ``file`` may name a comma-separated subset of them.
"""

from __future__ import annotations

import os

import pandas as pd
from functools import partial
from pathlib import Path

from flows.errors import FlowDataError
from flows.readers import read_unsw_partitioned, read_unsw_raw, read_zeek_conn_log
from flows.readers.records import BadRecordPolicy
from flows.readers.unsw_partitioned import looks_partitioned
from flows.table import SITE, FlowTable

ENV_VAR = "BOTDEFENDER_DATA_DIR"
DATASETS = ("unsw-nb15", "unsw-nb15-raw", "iot-23", "stratosphere", "captures")
CAPTURE_SOURCES = ("iot-23", "stratosphere")  # the sources of ``captures``


def resolve_data_dir(configured: str | Path | None = None) -> Path:
    """The data folder: ``configured`` if given, else $BOTDEFENDER_DATA_DIR; it must exist."""
    value = configured if configured not in (None, "") else os.environ.get(ENV_VAR)
    if not value:
        raise FlowDataError(
            None, "no data directory configured",
            expected=f"dataset.data_dir=DIR or the environment variable {ENV_VAR} (see README: getting the data)",
        )  # fmt: skip
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FlowDataError(path, "data directory not found", expected="an existing folder holding the flow data")
    return path


def find_files(folder: Path, pattern: str, what: str) -> list[Path]:
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise FlowDataError(folder, f"no {what} found", expected=f"files matching {pattern}")
    return files


def find_unsw_partition(data_dir: Path, file: str | None = None) -> Path:
    """The partitioned UNSW-NB15 CSV: ``file`` (relative to unsw-nb15/ or absolute) or the first one found."""
    folder = data_dir / "unsw-nb15"
    if file:
        path = Path(file) if Path(file).is_absolute() else folder / file
        if not path.is_file():
            raise FlowDataError(path, "file not found")
        return path
    candidates = [p for p in find_files(folder, "*.csv", "CSV files") if looks_partitioned(p)]
    if not candidates:
        raise FlowDataError(folder, "no partitioned UNSW-NB15 CSV found",
                            expected="a CSV with the 45-column header id,dur,proto,...,attack_cat,label")  # fmt: skip
    return candidates[0]


SOURCES = {  # dataset -> (folder under DATA_DIR, file patterns of its default file, in order)
    "unsw-nb15": ("unsw-nb15", ()),
    "unsw-nb15-raw": ("unsw-nb15/raw", ("UNSW-NB15_*.csv",)),
    "iot-23": ("iot-23", ("*.conn.log.labeled", "csv/*.csv")),
    "stratosphere": ("stratosphere", ("*.conn.log.labeled",)),
}


def dataset_file(name: str, root: Path, file: str | None) -> Path:
    """The file of data set ``name``: ``file`` (relative to the data set's folder, or absolute) or its first file."""
    folder_name, patterns = SOURCES[name]
    folder = root / folder_name
    if file:
        path = Path(file).expanduser()
        path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise FlowDataError(path, "file not found", expected=f"a file of data set {name} under {folder}")
        return path
    if name == "unsw-nb15":
        return find_unsw_partition(root)
    for pattern in patterns:
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if found:
            return found[0]
    return find_files(folder, patterns[0], f"{name} files")[0]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    file: str | None = None,
    bad_records: BadRecordPolicy = "error",
) -> FlowTable:
    """Load data set ``name`` (one of :data:`DATASETS`); ``file`` picks one file of the data set's folder."""
    if name not in DATASETS:
        raise FlowDataError(None, f"unknown dataset {name!r}", expected=f"one of {', '.join(DATASETS)}")
    if name == "captures":
        return load_captures(data_dir, file, bad_records)
    return load_file(name, dataset_file(name, resolve_data_dir(data_dir), file), bad_records)


def capture_files(root: Path) -> list[tuple[str, Path]]:
    """(source, file) of every IoT-23 and Stratosphere capture under ``root``, in a fixed order."""
    found = []
    for source in CAPTURE_SOURCES:
        folder_name, patterns = SOURCES[source]
        for pattern in patterns:
            found += [(source, p) for p in sorted((root / folder_name).glob(pattern)) if p.is_file()]
    if not found:
        raise FlowDataError(root, "no captures found", expected="iot-23/*.conn.log.labeled, iot-23/csv/*.csv or "
                            "stratosphere/*.conn.log.labeled")  # fmt: skip
    return found


def load_captures(data_dir: str | Path | None = None, files: str | None = None,
                  bad_records: BadRecordPolicy = "error") -> FlowTable:  # fmt: skip
    """Every capture (or the comma-separated file names ``files``) as one table; ``site`` tags each row with
    its capture (``source:file name``); skipped counts are summed, notes kept per site."""
    available = capture_files(resolve_data_dir(data_dir))
    if files:
        wanted = [f.strip() for f in files.split(",") if f.strip()]
        names = {p.name: (source, p) for source, p in available}
        missing = [w for w in wanted if w not in names]
        if missing:
            raise FlowDataError(None, f"captures: no capture named {missing}", expected=f"one of {sorted(names)}")
        available = [names[w] for w in wanted]
    tables = [load_file(source, path, bad_records) for source, path in available]
    frames, skipped, notes = [], {}, []
    for table in tables:
        frames.append(table.frame.assign(**{SITE: table.site_name()}))
        for reason, count in table.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        notes += [f"{table.site_name()}: {note}" for note in table.notes]
    first = tables[0]
    for table in tables[1:]:
        if table.features != first.features:
            raise FlowDataError(table.path, "captures: feature columns differ from the first capture's",
                                expected=", ".join(first.features))  # fmt: skip
    return FlowTable(frame=pd.concat(frames, ignore_index=True), numeric_features=list(first.numeric_features),
                     categorical_features=list(first.categorical_features), source="captures",
                     path="", skipped=skipped, notes=notes)  # fmt: skip


FILE_READERS = ("unsw-nb15", "unsw-nb15-raw", *CAPTURE_SOURCES)  # the data sets one file can be read as
KEEPS_UNLABELLED = CAPTURE_SOURCES  # readers that can keep records without a verdict (live Zeek logs)


def load_file(name: str, path: str | Path, bad_records: BadRecordPolicy = "error",
              keep_unlabelled: bool = False) -> FlowTable:  # fmt: skip
    """Read one file of data set ``name`` (a gateway's own capture, say) with that data set's reader; Zeek logs
    (iot-23, stratosphere) in either shape, recognised by content. ``keep_unlabelled``: Zeek logs without labels
    are read too, unlabelled records kept with label -1 (see :func:`flows.readers.read_zeek_conn_log`)."""
    readers = {
        "unsw-nb15": read_unsw_partitioned,
        "unsw-nb15-raw": read_unsw_raw,
        "iot-23": partial(read_zeek_conn_log, source="iot-23", keep_unlabelled=keep_unlabelled),
        "stratosphere": partial(read_zeek_conn_log, source="stratosphere", keep_unlabelled=keep_unlabelled),
    }
    if name not in readers:
        raise FlowDataError(None, f"unknown dataset {name!r}", expected=f"one of {', '.join(DATASETS)}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FlowDataError(path, "file not found")
    return readers[name](path, bad_records=bad_records)


def load_files(name: str, paths: list[Path], bad_records: BadRecordPolicy = "error",
               keep_unlabelled: bool = False) -> FlowTable:  # fmt: skip
    """Several files of one source (a gateway's rotated logs) as one table, in the order given: one site named
    by the first file; skipped counts summed, notes kept per file."""
    tables = [load_file(name, p, bad_records, keep_unlabelled) for p in paths]
    if len(tables) == 1:
        return tables[0]
    first = tables[0]
    for table in tables[1:]:
        if table.features != first.features:
            raise FlowDataError(table.path, "feature columns differ from the first file's",
                                expected=", ".join(first.features))  # fmt: skip
    skipped: dict[str, int] = {}
    for table in tables:
        for reason, count in table.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    notes = [f"{Path(t.path).name}: {note}" for t in tables for note in t.notes]
    return FlowTable(frame=pd.concat([t.frame for t in tables], ignore_index=True),
                     numeric_features=list(first.numeric_features),
                     categorical_features=list(first.categorical_features), source=first.source, path=first.path,
                     skipped=skipped, notes=notes)  # fmt: skip
