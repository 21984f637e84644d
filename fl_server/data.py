"""The server's held-out test rows: the same split as the clients' (:mod:`flows.run_split`)."""

from __future__ import annotations

from typing import Mapping

from flows.run_split import DataSettings, load_split
from flows.table import FlowTable


def held_out_test(run_config: Mapping) -> FlowTable:
    """The run's test rows (never sent to clients)."""
    return load_split(DataSettings.from_run_config(run_config))[1]
