"""Read and validate one flow file and print its summary: ``python -m flows.inspect FILE [--skip-bad]``.

The format is recognised by content: a Zeek header (IoT-23), the partitioned UNSW-NB15 header, or else the
raw UNSW-NB15 layout. Exit code 2 with one line naming file, line and column on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.errors import FlowDataError
from flows.readers import read_iot23_conn_log, read_unsw_partitioned, read_unsw_raw
from flows.readers.unsw_partitioned import looks_partitioned
from flows.table import FlowTable


def read_any(path: Path, bad_records: str = "error") -> FlowTable:
    """Read ``path`` with the reader its content calls for."""
    if not path.is_file():
        raise FlowDataError(path, "file not found")
    with open(path, "rb") as handle:
        start = handle.read(64)
    if start.startswith(b"#separator") or start.startswith(b"#fields"):
        return read_iot23_conn_log(path, bad_records=bad_records)
    if looks_partitioned(path):
        return read_unsw_partitioned(path, bad_records=bad_records)
    return read_unsw_raw(path, bad_records=bad_records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--skip-bad", action="store_true", help="skip bad records (counted) instead of failing")
    args = parser.parse_args(argv)
    try:
        table = read_any(args.file, "skip" if args.skip_bad else "error")
    except FlowDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({**table.summary(), "notes": table.notes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
