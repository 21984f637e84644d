"""Signed bundles: the operator's Ed25519 key signs the exact bytes of a bundle's ``manifest.json``; a gateway pins
the public key and refuses a bundle whose signature does not verify (standard library + ``cryptography``).

The manifest lists the sha256 of every model file (:func:`gateway.bundle.load_bundle` checks them), so one
signature over the manifest's bytes covers every file of the bundle. The signature lives next to the manifest in
``manifest.sig`` (the base64 of the 64-byte signature, one line); it is not itself in the manifest's sha256 list.
Keys are PEM files: the private key PKCS#8 without a passphrase (mode 0600), the public key SubjectPublicKeyInfo.
Every refusal is a one-line :class:`gateway.bundle.BundleError` naming what failed.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from gateway.bundle import MANIFEST, BundleError, _read_member, load_bundle
from gateway.manifest import MAX_MANIFEST_BYTES

SIGNATURE = "manifest.sig"
SIGNATURE_BYTES = 64  # an Ed25519 signature
MAX_SIGNATURE_FILE = 256  # manifest.sig is one base64 line of 88 characters
MAX_KEY_FILE = 16 << 10


def generate_signing_key(private_path: str | Path, public_path: str | Path, *, overwrite: bool = False
                         ) -> tuple[Path, Path]:  # fmt: skip
    """Write a new Ed25519 key pair: ``private_path`` (PEM, mode 0600) and ``public_path`` (PEM, for the
    gateways). An existing key file is refused unless ``overwrite``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.resolve() == public_path.resolve():
        raise BundleError(f"the private and the public key must be two files, got {private_path} twice")
    for path in (private_path, public_path):
        if os.path.lexists(path) and not overwrite:
            raise BundleError(f"{path} exists; refusing to overwrite a key (pass --force to replace it)")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    _write_new(private_path, private, 0o600, overwrite)
    _write_new(public_path, public, 0o644, overwrite)
    return private_path, public_path


def _write_new(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write ``data`` to ``path`` created with ``mode`` (an existing file removed first only if ``overwrite``)."""
    if overwrite and os.path.lexists(path):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the umask may have removed bits of ``mode``; never adds any to the private key


def _read_key(path: str | Path, kind: str) -> bytes:
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as err:
        raise BundleError(f"{kind} key {path}: unreadable ({err.strerror or err})") from None
    if len(data) > MAX_KEY_FILE:
        raise BundleError(f"{kind} key {path}: unreadable (larger than {MAX_KEY_FILE} bytes; not a PEM key)")
    return data


def load_private_key(path: str | Path):
    """The Ed25519 private key in the PEM file ``path``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise BundleError(f"private key {path}: unreadable ({str(err).splitlines()[0] if str(err) else 'not PEM'})"
                          ) from None  # fmt: skip
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"private key {path}: wrong key type {type(key).__name__}; bundles are signed with Ed25519 "
                          "(python -m gateway keygen)")  # fmt: skip
    return key


def load_public_key(path: str | Path):
    """The Ed25519 public key in the PEM file ``path``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key(path, "public")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise BundleError(f"public key {path}: unreadable ({str(err).splitlines()[0] if str(err) else 'not PEM'})"
                          ) from None  # fmt: skip
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"public key {path}: wrong key type {type(key).__name__}; bundles are signed with Ed25519")
    return key


def signature_text(manifest: bytes, private_key_path: str | Path) -> bytes:
    """The ``manifest.sig`` content for the manifest bytes ``manifest``."""
    return base64.b64encode(load_private_key(private_key_path).sign(manifest)) + b"\n"


def sign_bundle(bundle_dir: str | Path, private_key_path: str | Path) -> Path:
    """Verify the bundle (:func:`load_bundle`), then write ``manifest.sig``: the Ed25519 signature of the exact
    bytes of its ``manifest.json``. The manifest must carry a ``release`` (installs refuse bundles without one)."""
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    if bundle.release < 1:
        raise BundleError(f"{bundle_dir / MANIFEST}: no 'release' number; a signed bundle needs one so that gateways "
                          "can refuse downgrades (export it again)")  # fmt: skip
    manifest = _read_member(bundle_dir / MANIFEST, MAX_MANIFEST_BYTES)
    text = signature_text(manifest, private_key_path)
    path = bundle_dir / SIGNATURE
    temporary = bundle_dir / f".{SIGNATURE}.tmp"
    temporary.write_bytes(text)
    os.replace(temporary, path)
    return path


def decode_signature(text: bytes, where: str) -> bytes:
    """The 64 signature bytes of a ``manifest.sig`` content."""
    try:
        signature = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{where}: bad signature (not base64)") from None
    if len(signature) != SIGNATURE_BYTES:
        raise BundleError(f"{where}: bad signature ({len(signature)} bytes, an Ed25519 signature has 64)")
    return signature


def verify_manifest_signature(manifest: bytes, signature_file: bytes, public_key_path: str | Path,
                              where: str) -> None:  # fmt: skip
    """Raise :class:`BundleError` unless ``signature_file`` (a ``manifest.sig`` content) is the pinned key's
    signature of ``manifest``; ``where`` names the bundle in the message."""
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key_path)
    try:
        key.verify(decode_signature(signature_file, where), manifest)
    except InvalidSignature:
        raise BundleError(f"{where}: bad signature: manifest.json is not signed by the key {public_key_path} (changed "
                          "after signing, or signed by another key)") from None  # fmt: skip


def verify_bundle_signature(bundle_dir: str | Path, public_key_path: str | Path) -> bytes:
    """Check ``manifest.sig`` against the bytes of ``manifest.json`` with the pinned public key; returns those
    bytes. Raises :class:`BundleError` (missing signature, bad signature, wrong key type, unreadable key). The
    files' sha256 are checked by :func:`load_bundle`, which a caller runs next."""
    bundle_dir = Path(bundle_dir)
    load_public_key(public_key_path)  # a bad key is named before anything about the bundle
    signature_path = bundle_dir / SIGNATURE
    if not os.path.lexists(signature_path):
        raise BundleError(f"{bundle_dir}: missing signature ({SIGNATURE}); this gateway accepts only bundles signed "
                          "by the operator's key (python -m gateway sign)")  # fmt: skip
    if not os.path.lexists(bundle_dir / MANIFEST):
        raise BundleError(f"{bundle_dir} is not a model bundle: no {MANIFEST}")
    signature = _read_member(signature_path, MAX_SIGNATURE_FILE)
    manifest = _read_member(bundle_dir / MANIFEST, MAX_MANIFEST_BYTES)
    verify_manifest_signature(manifest, signature, public_key_path, str(bundle_dir))
    return manifest
