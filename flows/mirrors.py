"""The pinned mirrors of each published data set (REGISTRY) and the sha256 that verifies a file.

A data set's file lands at ``DATA_DIR/<subdir>/<file name>``, the layout of the shared data folder, with
``DATA_DIR`` named by ``BOTDEFENDER_DATA_DIR``. Standard library only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "BOTDEFENDER_DATA_DIR"
CHUNK_SIZE = 1 << 20  # 1 MiB


@dataclass(frozen=True)
class Mirror:
    """One place a data set can be fetched from.

    ``zip_member`` is None when the URL serves the file itself; otherwise the URL serves a zip archive and
    ``zip_member`` names the archive member that holds the file.
    """

    url: str
    zip_member: str | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    file_name: str  # target file name
    subdir: str  # folder under the data directory (same layout as ../shared/data)
    sha256: str  # of the target file (the unpacked CSV, not of an archive)
    size: int  # bytes of the target file
    mirrors: tuple[Mirror, ...]
    manual: str  # where a person can download the file by hand


# --------------------------------------------------------------------------------------------------------------
# Registry.
#
# The internet is NOT reachable from the machine this was written on, so these URLs have not been fetched
# over HTTP. What was checked instead: both repositories were cloned from a stored snapshot, the full commit
# hashes below were read with `git log`, the archive at each pinned commit was extracted with zipfile, and its
# member hashed to the expected sha256 and size (the URLs are raw.githubusercontent.com/<owner>/<repo>/<full
# commit>/<path>, which GitHub serves for any commit of a public repository).
#
# Trap: public copies often swap UNSW's two partition names. Both archives below are called "training-set" but
# hold the 82,332-record partition that UNSW publishes as UNSW_NB15_testing-set.csv (175,341 records is the
# real training set). We save it under UNSW's own name.
# --------------------------------------------------------------------------------------------------------------
REGISTRY: dict[str, Dataset] = {
    "unsw-nb15": Dataset(
        name="unsw-nb15",
        description="UNSW-NB15 partition of 82,332 flow records (45 columns, UTF-8 BOM)",
        file_name="UNSW_NB15_testing-set.csv",
        subdir="unsw-nb15",
        sha256="734fe6642edf758f7c94d7d9149426b49d202fe8e7bf0bef47392489c3c0a559",
        size=15_380_800,
        mirrors=(
            # vincentlemaire-labs/CAID2025, commit 6c2c8705 ("Add files via upload", 2025-11-03);
            # zip of 3,891,625 bytes (sha256 f623e048a697d64a...), single member.
            Mirror(
                url=(
                    "https://raw.githubusercontent.com/vincentlemaire-labs/CAID2025/"
                    "6c2c870554ecbdef36b4909a1b9fa8efaa722592/UNSW_NB15_training-set.zip"
                ),
                zip_member="UNSW_NB15_training-set.csv",
            ),
            # Moe433/Assignment_1, commit 65e21bc9 ("Add files via upload", 2025-04-16);
            # zip of 3,933,466 bytes (sha256 0b82317e8c6db6b0...), member plus a __MACOSX/ resource fork.
            Mirror(
                url=(
                    "https://raw.githubusercontent.com/Moe433/Assignment_1/"
                    "65e21bc9c290ef3edab0e27c011f2e41a63fedce/UNSW_NB15_training-set.csv.zip"
                ),
                zip_member="UNSW_NB15_training-set.csv",
            ),
        ),
        manual=(
            "https://research.unsw.edu.au/projects/unsw-nb15-dataset (the 82,332-record UNSW_NB15_testing-set.csv)"
        ),
    ),
}



def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            h.update(chunk)
    return h.hexdigest()
