"""A gateway's training flows from its node config: its own captures, labelled by the capture or by evidence.

Node config keys (``flower-supernode --node-config "data-path='/var/log/zeek' dataset='iot-23' ..."``):

* ``data-path``: one capture file, several separated by ``,`` (:data:`SEPARATOR`), or a folder: every capture
  file in it (sorted by name; other files such as ``dns.log`` or compressed rotations are skipped and named in
  the log); an empty folder, a missing or unreadable file is a :class:`ConfigError` naming the key;
* ``dataset``: the reader (:data:`flows.loader.FILE_READERS`; default: the run's ``dataset.name``);
* ``labels``: evidence files or folders, ``,``-separated (see :mod:`flows.labels.evidence`);
* ``unlabelled``: ``drop`` (default: flows that neither the capture nor evidence labels never train) or
  ``benign`` (an operator's explicit choice to train them as benign; logged as a warning every time);
* ``bad-records``: ``skip`` (default; counted) or ``error``, for capture records and evidence lines alike.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from flows.errors import ConfigError, FlowDataError
from flows.labels import UNLABELLED_POLICIES, LabelCounts, apply_evidence, read_evidence_files
from flows.loader import FILE_READERS, load_files
from flows.normalise import compression, detect_format
from flows.table import FlowTable

log = logging.getLogger("flwr.botdefender.client")

DATA_PATH, DATASET, LABELS, UNLABELLED, BAD_RECORDS = "data-path", "dataset", "labels", "unlabelled", "bad-records"
SEPARATOR = ","
FORMATS = {"iot-23": ("zeek", "zeek_csv"), "stratosphere": ("zeek", "zeek_csv"), "unsw-nb15": ("unsw",),
           "unsw-nb15-raw": ("unsw_raw",)}  # fmt: skip
Stamp = tuple[tuple[str, int, int], ...]  # (path, mtime_ns, size) of every file: reread when one changes


@dataclass(frozen=True)
class GatewayData:
    """The training flows of a gateway (every row labelled) and where their labels came from."""

    table: FlowTable
    counts: LabelCounts
    captures: tuple[str, ...]
    evidence: tuple[str, ...]


def _sniff(path: Path, dataset: str) -> str | None:
    """None if ``path`` looks like a capture of ``dataset``, else why it is skipped."""
    try:
        with path.open("rb") as handle:
            head = handle.read(65536)
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    packed = compression(head[:16])
    if packed is not None:
        return f"{packed[0]}-compressed"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    fmt = detect_format(text.split("\n", 1)[0])
    if fmt == "zeek":
        fields = next((ln for ln in text.splitlines() if ln.startswith("#fields")), "")
        fmt = "zeek" if "conn_state" in fields else "not-conn"
    if fmt not in FORMATS[dataset] or (fmt == "unsw_raw" and path.suffix.lower() != ".csv"):
        return "not a capture of this dataset"
    return None


def _paths(value: object, key: str, dataset: str | None) -> list[Path]:
    """The files named by node config ``key`` (files and folders, ``,``-separated); ``dataset`` set: folders
    yield their capture files only and must hold one."""
    parts = [p.strip() for p in str(value).split(SEPARATOR) if p.strip()]
    if not parts:
        raise ConfigError(f"node config {key}: empty; give a file, files separated by '{SEPARATOR}' or a folder")
    files: list[Path] = []
    for part in parts:
        path = Path(part).expanduser()
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if dataset is None:
                files += entries
                continue
            if not entries:
                raise ConfigError(f"node config {key}: folder {path} is empty; expected {dataset} capture files")
            reasons = {p: _sniff(p, dataset) for p in entries}
            skipped = {p: r for p, r in reasons.items() if r is not None}
            for p, reason in skipped.items():
                log.warning("node config %s: %s skipped (%s)", key, p, reason)
            if len(skipped) == len(entries):
                shown = "; ".join(f"{p.name}: {r}" for p, r in list(skipped.items())[:5])
                raise ConfigError(f"node config {key}: folder {path} holds no {dataset} capture file ({shown})")
            files += [p for p in entries if p not in skipped]
        elif path.is_file():
            if not os.access(path, os.R_OK):
                raise ConfigError(f"node config {key}: {path}: not readable (permission denied)")
            files.append(path)
        else:
            raise ConfigError(f"node config {key}: {path}: file not found")
    return files


def _stamp(paths: list[Path]) -> Stamp:
    stats = [(str(p), p.stat()) for p in paths]
    return tuple((name, st.st_mtime_ns, st.st_size) for name, st in stats)


def _setting(node_config: Mapping, key: str, default: str, options: tuple[str, ...]) -> str:
    value = str(node_config.get(key, default)).strip()
    if value not in options:
        raise ConfigError(f"node config {key}: {value!r} is not one of {', '.join(options)}")
    return value


def gateway_key(node_config: Mapping, default_dataset: str) -> tuple:
    """What decides a gateway's training flows: the settings and the stamps of every file involved."""
    dataset = str(node_config.get(DATASET, default_dataset))
    if dataset not in FILE_READERS:
        raise ConfigError(f"node config {DATASET}: unknown reader {dataset!r}; one of {', '.join(FILE_READERS)}")
    captures = _stamp(_paths(node_config[DATA_PATH], DATA_PATH, dataset))
    evidence = _stamp(_paths(node_config[LABELS], LABELS, None)) if str(node_config.get(LABELS, "")) else ()
    return (dataset, captures, evidence, _setting(node_config, BAD_RECORDS, "skip", ("skip", "error")),
            _setting(node_config, UNLABELLED, "drop", UNLABELLED_POLICIES))  # fmt: skip


def gateway_data(node_config: Mapping, default_dataset: str) -> GatewayData:
    """This gateway's labelled training flows (cached until a file or a setting changes)."""
    return _load(*gateway_key(node_config, default_dataset))


@lru_cache(maxsize=2)
def _load(dataset: str, captures: Stamp, evidence: Stamp, bad_records: str, unlabelled: str) -> GatewayData:
    try:
        table = load_files(dataset, [Path(p) for p, *_ in captures], bad_records,  # type: ignore[arg-type]
                           keep_unlabelled=True)  # fmt: skip
    except (FlowDataError, OSError) as err:
        raise ConfigError(f"node config {DATA_PATH}: {err}") from None
    try:
        found = read_evidence_files([Path(p) for p, *_ in evidence], bad_records)  # type: ignore[arg-type]
    except (FlowDataError, OSError) as err:
        raise ConfigError(f"node config {LABELS}: {err}") from None
    if unlabelled == "benign":
        log.warning("node config unlabelled=benign: flows without a label or evidence TRAIN AS BENIGN (an "
                    "operator's choice; unlabelled attacks then teach the model that they are benign)")  # fmt: skip
    training, counts = apply_evidence(table, found, unlabelled)
    for note in found.notes:
        log.info("labels: %s", note)
    log.info("gateway labels: %d flows from %d file(s); labelled by the capture %d, by evidence %d %s; "
             "unlabelled dropped %d, trained as benign %d; %d evidence items (%d cover no flow, %d lines "
             "skipped %s); training rows: %d malicious, %d benign", counts.flows, len(captures),
             counts.capture_labelled, counts.evidence_labelled, counts.by_source, counts.unlabelled_dropped,
             counts.unlabelled_as_benign, counts.evidence_items, counts.evidence_unmatched,
             sum(counts.evidence_skipped.values()), counts.evidence_skipped or "", counts.malicious,
             counts.benign)  # fmt: skip
    if counts.disagreeing:
        log.warning("gateway labels: evidence contradicts the capture's own label on %d flows (the capture's "
                    "label kept)", counts.disagreeing)  # fmt: skip
    if not len(training):
        raise ConfigError(f"node config {DATA_PATH}: none of the {counts.flows} flows has a label (the capture "
                          f"has none and {counts.evidence_items} evidence item(s) cover none); give evidence "
                          f"with {LABELS}=FILE[,FILE], a labelled capture, or {UNLABELLED}=benign")  # fmt: skip
    return GatewayData(training, counts, tuple(p for p, *_ in captures), tuple(p for p, *_ in evidence))
