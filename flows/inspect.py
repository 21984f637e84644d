"""Read and validate one flow file and print its summary: ``python -m flows.inspect FILE [--skip-bad]``.

The format is recognised by content (:func:`flows.normalise.detect_format`): a Zeek log in either shape (the
tab-separated log or its CSV export), the partitioned UNSW-NB15 header, or else the raw UNSW-NB15 layout. Exit code 2 with one line naming file, line and column on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.errors import FlowDataError
from flows.normalise import detect_format
from flows.readers import read_unsw_partitioned, read_unsw_raw, read_zeek_conn_log
from flows.table import FlowTable


def read_any(path: Path, bad_records: str = "error") -> FlowTable:
    """Read ``path`` with the reader its content calls for."""
    if not path.is_file():
        raise FlowDataError(path, "file not found")
    with open(path, encoding="utf-8", errors="replace") as handle:
        fmt = detect_format(handle.readline())
    readers = {"zeek": read_zeek_conn_log, "zeek_csv": read_zeek_conn_log, "unsw": read_unsw_partitioned}
    return readers.get(fmt, read_unsw_raw)(path, bad_records=bad_records)  # type: ignore[operator]


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
