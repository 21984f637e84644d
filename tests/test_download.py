"""Tests for flows.download (no internet needed: file:// URLs and a closed loopback port)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from flows import download as dl

REPO_ROOT = Path(__file__).resolve().parents[1]
UNSW = dl.REGISTRY["unsw-nb15"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def _assert_one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = _error_lines(err)
    assert len(lines) == 1, err
    return lines[0]


def _data_dir() -> Path:
    value = os.environ.get(dl.DATA_DIR_ENV)
    if not value:
        reason = f"{dl.DATA_DIR_ENV} is not set: cannot find the real UNSW-NB15 file (CI sets it to ../shared/data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path  # relative to the repository, as CI sets it
    return path.resolve()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def _leftovers(directory: Path, keep: str | None = None) -> list[str]:
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


# ---------------------------------------------------------------------------------------------------------------
def test_real_file_via_file_url_then_already_present(tmp_path, capsys):
    source = _data_dir() / UNSW.subdir / UNSW.file_name
    assert source.is_file(), f"{source} is missing"
    url = source.as_uri()

    assert dl.main(["unsw-nb15", "--to", str(tmp_path), "--url", url]) == 0
    out = capsys.readouterr().out
    target = tmp_path / UNSW.subdir / UNSW.file_name
    assert "downloaded and verified" in out and str(target) in out
    assert target.stat().st_size == UNSW.size
    assert dl.sha256_file(target) == UNSW.sha256
    assert _leftovers(target.parent, keep=target.name) == []  # no temporary files

    mtime = target.stat().st_mtime_ns
    assert dl.main(["unsw-nb15", "--to", str(tmp_path), "--url", url]) == 0
    assert "already present" in capsys.readouterr().out
    assert target.stat().st_mtime_ns == mtime  # untouched


def test_wrong_sha256_fails_and_leaves_nothing(tmp_path, capsys):
    src = tmp_path / "small.csv"
    src.write_bytes(b"a,b\n1,2\n")
    to = tmp_path / "data"
    code = dl.main(["unsw-nb15", "--to", str(to), "--url", src.as_uri(), "--sha256", "0" * 64])
    assert code != 0
    line = _assert_one_line_error(capsys.readouterr().err)
    assert "sha256 mismatch" in line and _sha(src.read_bytes()) in line and "0" * 64 in line
    assert not to.exists()  # neither the file, a temporary file nor the folders we created


def test_wrong_sha256_keeps_existing_folder_clean(tmp_path, capsys):
    src = tmp_path / "small.csv"
    src.write_bytes(b"x\n")
    (tmp_path / "data" / UNSW.subdir).mkdir(parents=True)
    assert dl.main(["unsw-nb15", "--to", str(tmp_path / "data"), "--url", src.as_uri(), "--sha256", "1" * 64]) == 1
    assert _leftovers(tmp_path / "data" / UNSW.subdir) == []


def test_unreachable_mirror_gives_offline_message_fast(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/UNSW_NB15_testing-set.csv"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.download", "unsw-nb15", "--to", str(tmp_path), "--url", url, "--timeout", "5"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        env={**os.environ, "NO_PROXY": "*", "no_proxy": "*"},
    )
    assert time.monotonic() - start < 30
    assert proc.returncode != 0
    line = _assert_one_line_error(proc.stderr)
    assert "cannot reach any mirror for unsw-nb15" in line
    assert "no network?" in line and dl.DATA_DIR_ENV in line and "by hand" in line
    assert _leftovers(tmp_path / UNSW.subdir) == []


def test_quiet_error_is_exactly_one_line(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/"
    assert dl.main(["unsw-nb15", "-q", "--to", str(tmp_path), "--url", url, "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot reach any mirror" in err


def test_zip_mirror_is_extracted_and_verified(tmp_path, capsys):
    payload = b"id,label\n" + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(1000))
    archive = tmp_path / "mirror.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("__MACOSX/._UNSW_NB15_training-set.csv", b"\x00\x05junk")  # like a real mirror
        zf.writestr("UNSW_NB15_training-set.csv", payload)
    to = tmp_path / "data"
    code = dl.main(["unsw-nb15", "--to", str(to), "--url", archive.as_uri(), "--sha256", _sha(payload)])
    assert code == 0, capsys.readouterr().err
    target = to / UNSW.subdir / UNSW.file_name
    assert target.read_bytes() == payload
    assert _leftovers(target.parent, keep=target.name) == []
    assert "downloaded and verified" in capsys.readouterr().out


def test_registry_mirrors_tried_in_order_on_mismatch(tmp_path, monkeypatch, capsys):
    good = b"col\n1\n2\n"
    bad_zip, good_zip = tmp_path / "bad.zip", tmp_path / "good.zip"
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("inner.csv", b"col\n9\n")
    with zipfile.ZipFile(good_zip, "w") as zf:
        zf.writestr("other.txt", b"not this one")
        zf.writestr("inner.csv", good)
    fake = dl.Dataset(
        name="toy",
        description="toy data",
        file_name="toy.csv",
        subdir="toy",
        sha256=_sha(good),
        size=len(good),
        mirrors=(
            dl.Mirror((tmp_path / "missing.zip").as_uri(), zip_member="inner.csv"),
            dl.Mirror(bad_zip.as_uri(), zip_member="inner.csv"),
            dl.Mirror(good_zip.as_uri(), zip_member="inner.csv"),
        ),
        manual="https://example.org/toy",
    )
    monkeypatch.setitem(dl.REGISTRY, "toy", fake)
    assert dl.main(["toy", "--to", str(tmp_path / "data")]) == 0
    assert (tmp_path / "data" / "toy" / "toy.csv").read_bytes() == good

    # A wrong existing file is replaced by a verified one.
    (tmp_path / "data" / "toy" / "toy.csv").write_bytes(b"stale")
    assert dl.main(["toy", "--to", str(tmp_path / "data")]) == 0
    assert (tmp_path / "data" / "toy" / "toy.csv").read_bytes() == good

    # Every mirror serving the wrong content: one line naming the mismatch on every mirror.
    monkeypatch.setitem(dl.REGISTRY, "toy", dataclasses.replace(fake, mirrors=fake.mirrors[1:2]))
    capsys.readouterr()
    assert dl.main(["toy", "--to", str(tmp_path / "other")]) == 1
    line = _assert_one_line_error(capsys.readouterr().err)
    assert "sha256 mismatch on every mirror for toy" in line and "https://example.org/toy" in line
    assert not (tmp_path / "other").exists()


def test_unknown_dataset_lists_known_ones(tmp_path, capsys):
    assert dl.main(["unsw-nb16", "--to", str(tmp_path)]) == 2
    line = _assert_one_line_error(capsys.readouterr().err)
    assert "unknown dataset 'unsw-nb16'" in line and "unsw-nb15" in line
    assert list(tmp_path.iterdir()) == []


def test_target_not_writable(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    src = tmp_path / "small.csv"
    src.write_bytes(b"x\n")
    code = dl.main(["unsw-nb15", "--to", str(blocker), "--url", src.as_uri(), "--sha256", _sha(b"x\n")])
    assert code == 1
    line = _assert_one_line_error(capsys.readouterr().err)
    assert str(blocker) in line and "cannot be created" in line


def test_target_read_only(tmp_path, monkeypatch, capsys):
    # Runs as root in CI, where chmod does not stop writes: simulate the refusal where it happens.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dl.tempfile, "mkstemp", refuse)
    src = tmp_path / "small.csv"
    src.write_bytes(b"x\n")
    to = tmp_path / "ro"
    assert dl.main(["unsw-nb15", "--to", str(to), "--url", src.as_uri(), "--sha256", _sha(b"x\n")]) == 1
    line = _assert_one_line_error(capsys.readouterr().err)
    assert "not writable" in line and str(to / UNSW.subdir) in line and "Permission denied" in line
    assert not to.exists()


def test_bad_sha256_argument(tmp_path, capsys):
    assert dl.main(["unsw-nb15", "--to", str(tmp_path), "--url", "file:///x", "--sha256", "abc"]) == 2
    assert "64 hexadecimal digits" in _assert_one_line_error(capsys.readouterr().err)


def test_registry_entries_are_pinned_and_well_formed():
    for ds in dl.REGISTRY.values():
        assert re.fullmatch(r"[0-9a-f]{64}", ds.sha256)
        assert ds.size > 0 and ds.mirrors
        for mirror in ds.mirrors:
            m = re.fullmatch(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/([^/]+)/.+", mirror.url)
            assert m, mirror.url
            assert re.fullmatch(r"[0-9a-f]{40}", m.group(1)), f"not pinned to a full commit: {mirror.url}"
