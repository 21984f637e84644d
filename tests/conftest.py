"""Shared fixtures: the real data folder comes from BOTDEFENDER_DATA_DIR (CI points it at ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def data_dir_or_skip() -> Path:
    """The real data folder; skips with a reason outside CI when unset, fails under CI=true."""
    value = os.environ.get("BOTDEFENDER_DATA_DIR")
    if not value or not Path(value).is_dir():
        reason = f"BOTDEFENDER_DATA_DIR is not set to a folder (got {value!r}); real-data tests need it"
        if IN_CI:
            pytest.fail(reason)
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return Path(value)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return data_dir_or_skip()


@pytest.fixture(scope="session")
def unsw_table(data_dir):
    from flows.loader import load_dataset

    return load_dataset("unsw-nb15", data_dir)
