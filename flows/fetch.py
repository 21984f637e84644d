"""Fetch a data set from its mirrors into place, verified by sha256, and the errors that say why not.

``download()`` tries the mirrors in order: each is streamed into a temporary file in the target folder, unzipped
if it is a zip archive and hashed; only a file with the expected sha256 is renamed (atomically) onto the target.
A failed mirror is classified (network, http, missing, mismatch, archive); DownloadError sums them up in one line.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from flows.mirrors import CHUNK_SIZE, DATA_DIR_ENV, REGISTRY, Dataset, Mirror, sha256_file

try:  # tqdm is a project dependency, but keep the module usable without it.
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover - exercised only on minimal installs
    _tqdm = None

# The logger of flows.download, whose level main() sets (--quiet), so these messages follow it.
logger = logging.getLogger("flows.download")

DEFAULT_TIMEOUT = 60.0
USER_AGENT = "botdefender-download/0.1 (+python urllib)"


# --- Errors ---------------------------------------------------------------------------------------------------
class DownloadError(Exception):
    """A problem that ends the command: reported as one line, no traceback."""

    exit_code = 1


class UsageError(DownloadError):
    exit_code = 2


class _MirrorFailed(Exception):
    """One mirror did not deliver the right file; the next one is tried.

    kind: "network" (could not connect / connection lost / DNS / timeout), "http" (server answered with an
    error), "missing" (local file URL does not exist), "mismatch" (wrong sha256), "archive" (bad or unexpected
    zip archive).
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


# errno values that mean "no route to the server", i.e. very likely offline.
_NETWORK_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EHOSTUNREACH,
    errno.EHOSTDOWN,
    errno.ETIMEDOUT,
}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed: {exc.strerror or exc}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())  # keep it on one line


def _classify(exc: BaseException, url: str) -> _MirrorFailed:
    """Turn an exception raised while fetching ``url`` into a _MirrorFailed."""
    if isinstance(exc, urllib.error.HTTPError):
        return _MirrorFailed("http", f"HTTP {exc.code} {exc.reason}")
    reason: BaseException | str = exc
    if isinstance(exc, urllib.error.URLError) and exc.reason is not None:
        reason = exc.reason
    if urllib.parse.urlsplit(url).scheme == "file":
        return _MirrorFailed("missing", _describe(reason) if isinstance(reason, BaseException) else str(reason))
    if isinstance(reason, BaseException):
        if isinstance(reason, (socket.gaierror, ConnectionError, TimeoutError, socket.timeout)):
            return _MirrorFailed("network", _describe(reason))
        if isinstance(reason, OSError) and reason.errno in _NETWORK_ERRNOS:
            return _MirrorFailed("network", _describe(reason))
        return _MirrorFailed("http", _describe(reason))
    return _MirrorFailed("network", str(reason))


# --- Helpers --------------------------------------------------------------------------------------------------
def _short(url: str, limit: int = 120) -> str:
    return url if len(url) <= limit else url[: limit - 3] + "..."


def _progress(total: int | None, desc: str):
    if _tqdm is None:
        return None
    # disable=None: no bar when stderr is not a terminal (logs, CI, tests).
    return _tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=None, leave=False)


def _mkstemp(directory: Path, file_name: str, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{file_name}.", suffix=suffix, dir=directory)
    os.close(fd)
    return Path(name)


def _remove(path: Path | None) -> None:
    if path is None:
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:  # pragma: no cover - nothing more we can do
        logger.warning("could not remove temporary file %s: %s", path, exc)


def _fetch(url: str, dest: Path, timeout: float, desc: str) -> int:
    """Stream ``url`` into ``dest`` (already created). Returns the number of bytes written."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - URLs come from the registry/CLI
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if isinstance(exc, ValueError):
            raise _MirrorFailed("http", f"invalid URL: {exc}") from None
        raise _classify(exc, url) from None
    written = 0
    with response:
        length = response.headers.get("Content-Length") if response.headers else None
        total = int(length) if length and length.isdigit() else None
        bar = _progress(total, desc)
        try:
            with open(dest, "wb") as out:
                while True:
                    try:
                        chunk = response.read(CHUNK_SIZE)
                    except Exception as exc:  # OSError, timeouts, http.client.IncompleteRead and friends
                        raise _MirrorFailed("network", f"transfer interrupted after {written} bytes: {_describe(exc)}")
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise DownloadError(f"cannot write {dest.parent}: {_describe(exc)}") from None
                    written += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise DownloadError(f"cannot write {dest.parent}: {_describe(exc)}") from None
        finally:
            if bar is not None:
                bar.close()
    if total is not None and written != total:
        raise _MirrorFailed("network", f"transfer incomplete: got {written} of {total} bytes")
    return written


def _pick_member(zf: zipfile.ZipFile, wanted: str | None, file_name: str) -> str:
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    if wanted is not None:
        if wanted in names:
            return wanted
        raise _MirrorFailed("archive", f"zip archive has no member {wanted!r} (members: {', '.join(names) or 'none'})")
    if file_name in names:
        return file_name
    candidates = [n for n in names if not n.startswith("__MACOSX/") and not Path(n).name.startswith("._")]
    if len(candidates) == 1:
        return candidates[0]
    raise _MirrorFailed(
        "archive",
        f"cannot tell which zip member to use (members: {', '.join(names) or 'none'}); pass --member",
    )


def _extract(archive: Path, member: str | None, dest: Path, file_name: str, limit: int | None) -> tuple[str, int]:
    """Copy one member of ``archive`` into ``dest``; returns (sha256, size) of what was written."""
    h = hashlib.sha256()
    size = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            name = _pick_member(zf, member, file_name)
            logger.info("extracting %s", name)
            with zf.open(name) as src, open(dest, "wb") as out:
                while True:
                    chunk = src.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    h.update(chunk)
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise _MirrorFailed("mismatch", f"zip member {name!r} is larger than the expected {limit} bytes")
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise DownloadError(f"cannot write {dest.parent}: {_describe(exc)}") from None
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise DownloadError(f"cannot write {dest.parent}: {_describe(exc)}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise _MirrorFailed("archive", f"bad zip archive: {_describe(exc)}") from None
    return h.hexdigest(), size


def _apply_umask(path: Path) -> None:
    # mkstemp creates 0600 files; give the final file the usual permissions.
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:  # pragma: no cover
        pass


def _missing_dirs(directory: Path) -> list[Path]:
    """The folders that mkdir(parents=True) would create, deepest first."""
    missing = []
    for d in (directory, *directory.parents):
        if d.exists():
            break
        missing.append(d)
    return missing


def _remove_empty_dirs(dirs: list[Path]) -> None:
    for d in dirs:  # deepest first
        try:
            d.rmdir()
        except OSError:
            break


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"target directory {directory} cannot be created: {_describe(exc)}") from None
    if not directory.is_dir():
        raise DownloadError(f"target {directory} is not a directory")
    try:
        probe = _mkstemp(directory, "write-test", ".tmp")
    except OSError as exc:
        raise DownloadError(f"target directory {directory} is not writable: {_describe(exc)}") from None
    _remove(probe)


# --- Main logic -----------------------------------------------------------------------------------------------
@dataclass
class Result:
    path: Path
    sha256: str
    already_present: bool
    url: str | None = None


def download(
    name: str,
    to: Path | str,
    *,
    urls: list[str] | None = None,
    sha256: str | None = None,
    member: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Result:
    """Make sure ``to/<subdir>/<file name>`` of data set ``name`` exists with the expected sha256.

    ``urls`` replaces the registry's mirrors (a URL that serves a zip archive is detected by content);
    ``sha256`` replaces the expected hash (the expected size is then not checked). Raises DownloadError.
    """
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise UsageError(f"unknown dataset {name!r}; known datasets: {known}")
    ds = REGISTRY[name]
    expected = (sha256 or ds.sha256).strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise UsageError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}")
    expected_size = ds.size if sha256 is None else None
    if timeout is None or timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout!r}")

    directory = Path(to).expanduser() / ds.subdir
    target = directory / ds.file_name

    if target.is_file():
        try:
            have = sha256_file(target)
        except OSError as exc:
            raise DownloadError(f"cannot read existing {target}: {_describe(exc)}") from None
        if have == expected:
            logger.info("%s already present with the expected sha256: %s", name, target)
            return Result(target, have, already_present=True)
        logger.warning("existing %s has sha256 %s, expected %s: downloading a fresh copy", target, have, expected)
    elif target.exists():
        raise DownloadError(f"target {target} exists and is not a regular file")

    if urls:
        mirrors = []
        for url in urls:
            if not urllib.parse.urlsplit(url).scheme and Path(url).expanduser().exists():
                url = Path(url).expanduser().resolve().as_uri()  # a plain local path
            # A user-given URL for a registry mirror keeps that mirror's member name.
            known = next((m for m in ds.mirrors if m.url == url), None)
            mirrors.append(Mirror(url, member or (known.zip_member if known else None)))
    else:
        mirrors = [Mirror(m.url, member or m.zip_member) for m in ds.mirrors]

    created = _missing_dirs(directory)
    try:
        _check_writable(directory)
        return _download_mirrors(ds, name, directory, target, expected, expected_size, mirrors, timeout)
    except BaseException:
        _remove_empty_dirs(created)  # leave no empty folders behind either
        raise


def _download_mirrors(
    ds: Dataset,
    name: str,
    directory: Path,
    target: Path,
    expected: str,
    expected_size: int | None,
    mirrors: list[Mirror],
    timeout: float,
) -> Result:
    """Try each mirror in turn; return on the first verified file, else raise DownloadError."""
    failures: list[tuple[Mirror, _MirrorFailed]] = []
    for index, mirror in enumerate(mirrors, start=1):
        logger.info("[%d/%d] fetching %s", index, len(mirrors), mirror.url)
        download_tmp: Path | None = None
        final_tmp: Path | None = None
        try:
            download_tmp = _mkstemp(directory, ds.file_name, ".part")
            _fetch(mirror.url, download_tmp, timeout, desc=f"{name} [{index}/{len(mirrors)}]")
            is_zip = zipfile.is_zipfile(download_tmp)
            if mirror.zip_member is not None and not is_zip:
                raise _MirrorFailed("archive", "expected a zip archive, got something else")
            if is_zip:
                final_tmp = _mkstemp(directory, ds.file_name, ".unzip")
                limit = expected_size + 1 if expected_size is not None else None
                got, size = _extract(download_tmp, mirror.zip_member, final_tmp, ds.file_name, limit)
                _remove(download_tmp)
                download_tmp = None
            else:
                final_tmp, download_tmp = download_tmp, None
                got, size = sha256_file(final_tmp), final_tmp.stat().st_size
            if got != expected:
                size_note = f", {size} bytes" + (f" (expected {expected_size})" if expected_size is not None else "")
                raise _MirrorFailed("mismatch", f"sha256 mismatch: got {got}{size_note}, expected {expected}")
            _apply_umask(final_tmp)
            try:
                os.replace(final_tmp, target)
            except OSError as exc:
                raise DownloadError(f"cannot move the download into place as {target}: {_describe(exc)}") from None
            final_tmp = None
            logger.info("verified sha256 %s and saved %s", got, target)
            return Result(target, got, already_present=False, url=mirror.url)
        except _MirrorFailed as failure:
            logger.warning("mirror %s failed: %s", _short(mirror.url), failure.message)
            failures.append((mirror, failure))
        except OSError as exc:  # temp files in the target directory, reading back what we wrote
            raise DownloadError(f"cannot write in {directory}: {_describe(exc)}") from None
        finally:
            _remove(download_tmp)
            _remove(final_tmp)

    raise DownloadError(_summarise_failures(ds, failures))


def _summarise_failures(ds: Dataset, failures: list[tuple[Mirror, _MirrorFailed]]) -> str:
    kinds = {f.kind for _, f in failures}
    by_hand = (
        f"Download it by hand from {ds.manual}, save it as {ds.subdir}/{ds.file_name} "
        f"and pass the folder holding {ds.subdir}/ via {DATA_DIR_ENV}"
    )
    if kinds == {"network"}:
        reasons = "; ".join(sorted({f.message for _, f in failures}))
        return f"cannot reach any mirror for {ds.name} ({reasons}): no network? {by_hand}"
    details = "; ".join(f"{_short(m.url)}: {f.message}" for m, f in failures)
    if kinds == {"mismatch"}:
        return f"sha256 mismatch on every mirror for {ds.name} ({details}). {by_hand}"
    return f"could not download {ds.name} from any mirror ({details}). {by_hand}"
