"""Readers that turn each flow source into a normalised :class:`flows.table.FlowTable`."""

from flows.readers.iot23 import read_iot23_conn_log, read_zeek_conn_log
from flows.readers.unsw_partitioned import read_unsw_partitioned
from flows.readers.unsw_raw import read_unsw_raw

__all__ = ["read_iot23_conn_log", "read_unsw_partitioned", "read_unsw_raw", "read_zeek_conn_log"]
