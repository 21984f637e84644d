"""Fetch a published data set from public mirrors and verify it by sha256.

Usage::

    python -m flows.download unsw-nb15 --to DATA_DIR
    botdefender-download unsw-nb15 --to DATA_DIR

The file lands at ``DATA_DIR/<subdir>/<file name>`` (for UNSW-NB15:
``DATA_DIR/unsw-nb15/UNSW_NB15_testing-set.csv``), the same layout as the shared data folder, so
``DATA_DIR`` is what ``BOTDEFENDER_DATA_DIR`` should point at afterwards. Without ``--to`` the folder named by
``BOTDEFENDER_DATA_DIR`` is used.

How it works: mirrors are tried in order; each is streamed into a temporary file inside the target folder
(with a progress bar), unpacked if it is a zip archive, hashed, and only a file with the expected sha256 is
renamed (atomically) onto the target name. A partial or wrong file is never left behind. A target that already
has the expected hash is left alone.

Only the standard library is used (plus tqdm for the progress bar, when it is installed), so this module also
works on a gateway that installs nothing but ``.[gateway]``.

Layout: flows.mirrors holds the pinned mirrors (REGISTRY) and sha256_file; flows.fetch does the fetching,
verification and error messages (download, DownloadError); this module is the command-line entry point and
re-exports those names, so ``from flows.download import ...`` keeps working.

Errors are reported as one line on stderr with a non-zero exit code (1 for download/verification/filesystem
problems, 2 for bad command-line input, 130 on Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile  # noqa: F401 - kept importable as flows.download.tempfile

from flows.fetch import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    DownloadError,
    Result,
    UsageError,
    download,
    logger,
)
from flows.mirrors import CHUNK_SIZE, DATA_DIR_ENV, REGISTRY, Dataset, Mirror, sha256_file

__all__ = [
    "CHUNK_SIZE",
    "DATA_DIR_ENV",
    "DEFAULT_TIMEOUT",
    "REGISTRY",
    "USER_AGENT",
    "Dataset",
    "DownloadError",
    "Mirror",
    "Result",
    "UsageError",
    "download",
    "main",
    "sha256_file",
]

# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="botdefender-download",
        description="Download a published data set from public mirrors and verify its sha256.",
        epilog="Known datasets: "
        + "; ".join(f"{d.name}: {d.description}" for d in REGISTRY.values())
        + f". The file is saved as DIR/<dataset folder>/<file>, so DIR is what {DATA_DIR_ENV} should name.",
    )
    parser.add_argument("dataset", help="data set name (" + ", ".join(sorted(REGISTRY)) + ")")
    parser.add_argument(
        "--to",
        metavar="DIR",
        help=f"data directory (default: ${DATA_DIR_ENV})",
    )
    parser.add_argument(
        "--url",
        action="append",
        metavar="URL",
        help="fetch from this URL instead of the registry's mirrors (repeatable; zip archives are detected)",
    )
    parser.add_argument("--sha256", metavar="HEX", help="expected sha256 of the file (overrides the registry)")
    parser.add_argument("--member", metavar="NAME", help="zip member holding the file (when the URL serves a zip)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="network timeout (default: %(default)s)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the final line (or the error)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)

    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(message)s", stream=sys.stderr)
    logger.setLevel(logging.ERROR if args.quiet else logging.INFO)

    to = args.to or os.environ.get(DATA_DIR_ENV)
    try:
        if args.dataset not in REGISTRY:
            raise UsageError(f"unknown dataset {args.dataset!r}; known datasets: {', '.join(sorted(REGISTRY))}")
        if not to:
            raise UsageError(f"no target directory: pass --to DIR or set {DATA_DIR_ENV}")
        result = download(
            args.dataset, to, urls=args.url, sha256=args.sha256, member=args.member, timeout=args.timeout
        )
    except DownloadError as exc:
        print(f"botdefender-download: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("botdefender-download: interrupted; no partial file was kept", file=sys.stderr)
        return 130

    if result.already_present:
        print(f"{args.dataset}: already present, sha256 verified: {result.path}")
    else:
        print(f"{args.dataset}: downloaded and verified (sha256 {result.sha256}): {result.path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
