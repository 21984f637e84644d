"""Installing a signed bundle on a gateway: files in memory (as a rollout delivers them) -> a verified release
folder under a root, and an atomic switch of the ``current`` link that ``gateway serve --follow`` watches.
Standard library, ``cryptography`` and the bundle loader; no torch.

Layout of a root::

    ROOT/installed.json        {"highest": N, "releases": {"N": {"model_version", "manifest_sha256", ...}}}
    ROOT/releases/<release>/   manifest.json, manifest.sig, the model files (never changed once there)
    ROOT/current -> releases/<release>

:func:`install_bundle` checks everything before anything under the root changes: the file names (plain names,
at most ``max_files``, at most ``max_bytes`` in all), the signature of ``manifest.json`` with the pinned key,
the manifest's schema and its list of files (no file missing, none unexpected), the release (a downgrade, any
release at or below the highest ever installed here, is refused; the same release again is a no-op when
identical), then writes the files into a fresh temporary folder and loads it (every sha256). Only then is the
folder moved to ``releases/<release>``, ``installed.json`` replaced (written to a temporary file, then
``os.replace``) and ``current`` replaced by a new link (``os.replace`` again): a refused or interrupted install
leaves ``current`` as it was. One install at a time per root (a lock file).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.bundle import MANIFEST, BundleError, _read_member, load_bundle
from gateway.manifest import MAX_MANIFEST_BYTES, MAX_MODEL_BYTES, ManifestError, check_manifest, is_plain_name
from gateway.signing import MAX_SIGNATURE_FILE, SIGNATURE, verify_bundle_signature, verify_manifest_signature

INSTALLED = "installed.json"
RELEASES = "releases"
CURRENT = "current"
MAX_FILES = 64  # manifest, signature and model files (an export writes 4 models per two batch sizes)
MAX_INSTALL_BYTES = 1 << 30  # all files of one bundle together


@dataclass(frozen=True)
class InstallResult:
    """What :func:`install_bundle` did: the release now current, its model version and folder; ``installed`` is
    False when that release was already installed with the same content (nothing written)."""

    release: int
    model_version: str
    path: Path
    installed: bool = True

    @property
    def message(self) -> str:
        done = "installed" if self.installed else "already installed"
        return f"release {self.release} (model version {self.model_version}) {done} at {self.path}"


def pack_bundle(bundle_dir: str | Path, *, require_signature: bool = True) -> dict[str, bytes]:
    """The regular files of a verified bundle (:func:`load_bundle`) by name: ``manifest.json``, ``manifest.sig``
    and the model files the manifest lists; what a rollout sends and :func:`install_bundle` takes. An unsigned
    bundle is refused unless ``require_signature`` is False."""
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    files = {MANIFEST: _read_member(bundle_dir / MANIFEST, MAX_MANIFEST_BYTES)}
    if os.path.lexists(bundle_dir / SIGNATURE):
        files[SIGNATURE] = _read_member(bundle_dir / SIGNATURE, MAX_SIGNATURE_FILE)
    elif require_signature:
        raise BundleError(f"{bundle_dir}: missing signature ({SIGNATURE}); sign it first (python -m gateway sign)")
    for name in bundle.manifest["files"]:
        files[name] = _read_member(bundle_dir / name, MAX_MODEL_BYTES)
    return files


def _check_files(files: Mapping[str, bytes], max_files: int, max_bytes: int) -> None:
    """Names and sizes of the delivered files, before any of them is read."""
    if len(files) > max_files:
        raise BundleError(f"bundle refused: {len(files)} files, at most {max_files} are accepted")
    total = 0
    for name, data in files.items():
        if not is_plain_name(name) or name.startswith("."):
            raise BundleError(f"bundle refused: unexpected file name {name!r} (plain names only: no '/', '\\\\', "
                              "'..' or leading '.')")  # fmt: skip
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BundleError(f"bundle refused: file {name} is {type(data).__name__}, not bytes")
        total += len(data)
        if total > max_bytes:
            raise BundleError(f"bundle refused: oversize, its files hold more than {max_bytes} bytes in all")
    for name, limit in ((MANIFEST, MAX_MANIFEST_BYTES), (SIGNATURE, MAX_SIGNATURE_FILE)):
        if name in files and len(files[name]) > limit:
            raise BundleError(f"bundle refused: oversize {name} ({len(files[name])} bytes, at most {limit})")
    if MANIFEST not in files:
        raise BundleError(f"bundle refused: no {MANIFEST}")
    if SIGNATURE not in files:
        raise BundleError(f"bundle refused: unsigned (no {SIGNATURE}); this gateway installs only bundles signed "
                          "by the operator's key")  # fmt: skip


def _parsed_manifest(files: Mapping[str, bytes]) -> dict:
    """The signed manifest, schema-checked, listing exactly the delivered model files, with a release."""
    try:
        manifest = json.loads(bytes(files[MANIFEST]).decode("utf-8"))
        check_manifest(manifest)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # ManifestError is a ValueError
        kind = "" if isinstance(err, ManifestError) else "not valid JSON: "
        raise BundleError(f"bundle refused: {MANIFEST}: {kind}{err}") from None
    expected = {MANIFEST, SIGNATURE, *manifest["files"]}
    unexpected = sorted(set(files) - expected)
    missing = sorted(expected - set(files))
    if unexpected:
        raise BundleError(f"bundle refused: unexpected file(s) {', '.join(unexpected)} (not in the manifest)")
    if missing:
        raise BundleError(f"bundle refused: file(s) {', '.join(missing)} named in the manifest are missing")
    if "release" not in manifest:
        raise BundleError("bundle refused: the manifest has no 'release' number (export it again)")
    return manifest


def read_installed(root: Path) -> dict:
    """``root/installed.json`` (``{"highest": 0, "releases": {}}`` before the first install)."""
    path = root / INSTALLED
    if not path.exists():
        return {"highest": 0, "releases": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(state, dict) and isinstance(state.get("highest"), int)
                and isinstance(state.get("releases"), dict)):  # fmt: skip
            raise ValueError("expected highest and releases")
    except (OSError, ValueError) as err:
        raise BundleError(f"{path}: unreadable install record ({err}); refusing to install over it") from None
    return state


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then ``os.replace`` it over ``path``."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def switch_current(root: Path, release: int) -> None:
    """Point ``root/current`` at ``releases/<release>`` atomically: a new relative link replaces the old one."""
    link = root / CURRENT
    if link.exists() and not link.is_symlink():
        raise BundleError(f"{link} exists and is not a symbolic link; move it away (installs manage that link)")
    temporary = root / f".{CURRENT}.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)
    os.symlink(f"{RELEASES}/{release}", temporary)
    os.replace(temporary, link)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One install at a time under ``root`` (an advisory lock on ``root/.lock``, where fcntl exists)."""
    with open(root / ".lock", "a") as handle:
        try:
            import fcntl
        except ImportError:  # not a Unix gateway: no lock
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def install_bundle(files: Mapping[str, bytes], root: str | Path, public_key_path: str | Path, *,
                   max_files: int = MAX_FILES, max_bytes: int = MAX_INSTALL_BYTES) -> InstallResult:  # fmt: skip
    """Verify the bundle ``files`` (name -> bytes, :func:`pack_bundle`) and install it under ``root`` as
    ``releases/<release>``, then switch ``root/current`` to it; see the module docstring. Raises
    :class:`BundleError` (one line) on any refusal, leaving ``current`` unchanged."""
    root = Path(root)
    _check_files(files, max_files, max_bytes)
    verify_manifest_signature(bytes(files[MANIFEST]), bytes(files[SIGNATURE]), public_key_path, "bundle refused")
    manifest = _parsed_manifest(files)
    release, version = int(manifest["release"]), str(manifest["model_version"])
    digest = hashlib.sha256(bytes(files[MANIFEST])).hexdigest()
    root.mkdir(parents=True, exist_ok=True)
    (root / RELEASES).mkdir(exist_ok=True)
    with _locked(root):
        state = read_installed(root)
        target = root / RELEASES / str(release)
        known = state["releases"].get(str(release))
        if known is not None and known.get("manifest_sha256") == digest:
            if os.path.realpath(root / CURRENT) != os.path.realpath(target) and release == state["highest"]:
                switch_current(root, release)  # an install interrupted after its record: finish it
            return InstallResult(release, version, target, installed=False)
        if known is not None:
            raise BundleError(f"bundle refused: release {release} is already installed here with other content "
                              f"(model version {known.get('model_version')}); export a new release")  # fmt: skip
        if release <= state["highest"]:
            raise BundleError(f"bundle refused: downgrade, release {release} is not newer than release "
                              f"{state['highest']} already installed under {root}")  # fmt: skip
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".install-"))
        try:
            for name, data in files.items():
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(staging / name, flags, 0o644)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            try:
                verify_bundle_signature(staging, public_key_path)  # the bytes on disk are the ones signed
                load_bundle(staging)  # every sha256, the schema and the pipeline
            except BundleError as err:
                raise BundleError(f"bundle refused: {err}") from None
            if os.path.lexists(target):  # left by an install interrupted before its record: never current
                shutil.rmtree(target)
            os.chmod(staging, 0o755)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        state["releases"][str(release)] = {"model_version": version, "manifest_sha256": digest}
        state["highest"] = release
        _write_atomically(root / INSTALLED, json.dumps(state, indent=1, sort_keys=True).encode("utf-8"))
        switch_current(root, release)
    return InstallResult(release, version, target)
