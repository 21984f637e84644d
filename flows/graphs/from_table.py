"""The thin adapter from a :class:`flows.table.FlowTable` and a fitted pipeline to host graphs (pandas side).

The graphs themselves come from :func:`flows.graphs.build.build_host_graphs`, the numpy code the gateway calls.
A multi-site table (a ``site`` column, as in the ``captures`` data set) is windowed site by site, so no window
mixes two captures; window numbers then run on from site to site (still increasing with time within a site).
"""

from __future__ import annotations

import numpy as np

from flows.errors import FlowDataError
from flows.graphs.build import TRAFFIC_COLUMNS, FlowArrays, assign_windows, build_host_graphs
from flows.graphs.hostgraph import HostGraph
from flows.graphs.settings import GraphSettings
from flows.pipeline_state import PipelineState
from flows.table import DST_IP, DST_PORT, LABEL, SITE, SRC_IP, SRC_PORT, START_TIME, FlowTable

__all__ = ["TRAFFIC_COLUMNS", "window_sites", "flow_arrays", "graphs_from_table", "site_groups", "site_of", "table_windows"]

#: per traffic aggregate, the flow-table columns that hold it (raw UNSW-NB15 first, then Zeek conn logs)


def window_sites(table: FlowTable, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the window numbers of ``window`` (each row's window, -1 for none) in order, the site of each window)."""
    placed = window >= 0
    ids, first = np.unique(window[placed], return_index=True)
    return ids, table.sites()[np.flatnonzero(placed)[first]]


def site_of(table: FlowTable) -> str:
    """The site a single-file table's windows belong to: its source and file name (one capture = one site)."""
    return table.site_name()


def site_groups(table: FlowTable) -> list[tuple[str, np.ndarray]]:
    """(site, its row positions) per site of ``table``, in order of first appearance; one group without a
    ``site`` column."""
    if SITE not in table.frame.columns:
        return [(table.site_name(), np.arange(len(table), dtype=np.int64))]
    codes, names = table.frame[SITE].astype(str).factorize()
    return [(str(name), np.flatnonzero(codes == i)) for i, name in enumerate(names)]


def flow_arrays(table: FlowTable, site: str | None = None) -> FlowArrays:
    """The arrays the builder reads; a table without addresses or start times fails with one line."""
    frame = table.frame
    for column, what in ((SRC_IP, "host addresses"), (DST_IP, "host addresses"), (START_TIME, "flow start times")):
        if column not in frame.columns:
            raise FlowDataError(table.path or table.source, f"host graphs need {what}, and this {table.source} "
                                "source has none (the partitioned UNSW-NB15 CSV has no addresses or times: use the "
                                "raw UNSW-NB15 files, IoT-23 or Stratosphere conn logs)", column=column)  # fmt: skip

    def ports(column: str) -> np.ndarray | None:
        if column not in frame.columns:
            return None
        return frame[column].astype("Float64").fillna(-1).to_numpy(dtype=np.float64).astype(np.int64)

    traffic, notes = {}, []
    for name, candidates in TRAFFIC_COLUMNS.items():
        found = next((c for c in candidates if c in frame.columns), None)
        traffic[name] = None if found is None else frame[found].to_numpy(dtype=np.float64)
        if found is None:
            notes.append(f"no {name} column ({' or '.join(candidates)}): counted as 0")
    return FlowArrays(
        src=frame[SRC_IP].to_numpy(dtype=object), dst=frame[DST_IP].to_numpy(dtype=object),
        times=frame[START_TIME].to_numpy(dtype=np.float64), labels=frame[LABEL].to_numpy(dtype=np.int64),
        src_port=ports(SRC_PORT), dst_port=ports(DST_PORT), site=site or site_of(table), notes=notes, **traffic,
    )  # fmt: skip


def _merge(reports: list[dict]) -> dict:
    merged: dict = {}
    for report in reports:
        for key, value in report.items():
            if isinstance(value, (int, np.integer)):
                merged[key] = merged.get(key, 0) + int(value)
            elif isinstance(value, list):
                merged.setdefault(key, []).extend(value)
    return merged


def table_windows(table: FlowTable, settings: GraphSettings | None = None) -> tuple[np.ndarray, dict]:
    """The window of every row of ``table`` (-1: not placed), before any pipeline is fitted (to split by window).
    Window numbers increase with time within a site and never repeat across sites."""
    settings = settings or GraphSettings()
    groups = site_groups(table)
    if len(groups) == 1:
        arrays = flow_arrays(table)
        return assign_windows(arrays.times, arrays.valid, settings)
    window, reports, offset = np.full(len(table), -1, dtype=np.int64), [], 0
    for site, rows in groups:
        arrays = flow_arrays(table.subset(rows), site)
        local, report = assign_windows(arrays.times, arrays.valid, settings)
        placed = local >= 0
        if placed.any():
            ids, dense = np.unique(local[placed], return_inverse=True)
            window[rows[placed]] = offset + dense
            offset += len(ids)
        reports.append(report)
    return window, _merge(reports)


def graphs_from_table(table: FlowTable, pipeline: PipelineState, settings: GraphSettings | None = None,
                      ) -> tuple[list[HostGraph], dict]:  # fmt: skip
    """(graphs, report): the host graphs of ``table``'s windows with ``pipeline``'s encoded rows on the edges
    (site by site for a multi-site table; ``flow_rows`` index ``table``'s rows)."""
    settings = settings or GraphSettings()
    groups = site_groups(table)
    if len(groups) == 1:
        arrays = flow_arrays(table)
        graphs, report = build_host_graphs(arrays, pipeline.transform(table.frame), settings)
        if arrays.notes:
            report["notes"] = list(arrays.notes)
        return graphs, report
    encoded = pipeline.transform(table.frame)
    all_graphs: list[HostGraph] = []
    reports, offset = [], 0
    for site, rows in groups:
        arrays = flow_arrays(table.subset(rows), site)
        graphs, report = build_host_graphs(arrays, encoded[rows], settings)
        ids = {w: offset + i for i, w in enumerate(sorted({g.window for g in graphs}))}
        for g in graphs:
            g.window, g.flow_rows = ids[g.window], rows[g.flow_rows]
        offset += len(ids)
        all_graphs += graphs
        reports.append(report)
    report = _merge(reports)
    return all_graphs, report
