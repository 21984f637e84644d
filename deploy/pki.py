"""Certificates and keys of a deployment: a private CA, the SuperLink's TLS certificate, one node key per gateway.

    python -m deploy pki --out DIR --superlink-host 10.0.0.1 --gateways gw1,gw2,gw3

Layout (every folder 0700, every file 0600; copy each machine only its own folder)::

    DIR/ca/ca.key ca.crt                         the CA: its key signs server certificates, keep it offline
    DIR/superlink/ca.crt server.crt server.key   flower-superlink --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile
    DIR/gateways/<gw>/ca.crt                     flower-supernode --root-certificates
    DIR/gateways/<gw>/auth.key                   flower-supernode --auth-supernode-private-key (OpenSSH, EC P-384)
    DIR/gateways/<gw>/auth.pub                   flwr supernode register (OpenSSH public key, one line)

Flower 1.42 loads the node key with ``cryptography``'s ``load_ssh_private_key`` and wants an EC key
(flwr/supernode/cli/flower_supernode.py), and ``flwr supernode register`` wants an OpenSSH EC public key on a
NIST curve (flwr/cli/supernode/register.py). The server certificate always names 127.0.0.1 and localhost too:
the SuperLink's own SuperExec and the operator's ``flwr`` CLI connect there. Nothing is overwritten unless
``force``; an existing CA is reused (so gateways can be added later).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ALWAYS_SANS = ("127.0.0.1", "localhost")
VALID_DAYS = 825


class PkiError(RuntimeError):
    """A file would be overwritten, a name is invalid, or the folder is unsafe."""


@dataclass(frozen=True)
class Pki:
    """Paths of a PKI folder made by :func:`make_pki`."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "superlink" / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "superlink" / "server.key"

    @property
    def superlink_ca(self) -> Path:
        return self.root / "superlink" / "ca.crt"

    def gateway_dir(self, gateway: str) -> Path:
        return self.root / "gateways" / check_name(gateway)

    def gateway_key(self, gateway: str) -> Path:
        return self.gateway_dir(gateway) / "auth.key"

    def gateway_pub(self, gateway: str) -> Path:
        return self.gateway_dir(gateway) / "auth.pub"

    def gateway_ca(self, gateway: str) -> Path:
        return self.gateway_dir(gateway) / "ca.crt"

    def gateways(self) -> list[str]:
        folder = self.root / "gateways"
        return sorted(p.name for p in folder.iterdir() if (p / "auth.pub").is_file()) if folder.is_dir() else []


def check_name(gateway: str) -> str:
    """A gateway name is a short file-name-safe word (letters, digits, ``-``, ``_``)."""
    if not gateway or len(gateway) > 64 or not all(c.isalnum() or c in "-_" for c in gateway):
        raise PkiError(f"gateway name {gateway!r}: use letters, digits, '-' or '_' (at most 64)")
    return gateway


def inside_git_checkout(path: Path) -> Path | None:
    """The git work tree that would hold ``path``, if any (keys do not belong in a repository)."""
    for folder in [path, *path.parents]:
        if (folder / ".git").exists():
            return folder
    return None


def _mkdir(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 (existing parents keep their modes)."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
    if path not in missing:
        os.chmod(path, 0o700)


def _write(path: Path, data: bytes, force: bool) -> None:
    """Write ``data`` to ``path`` readable by its owner only; refuse an existing file unless ``force``."""
    if path.exists() and not force:
        raise PkiError(f"{path} exists; pass --force to replace it")
    _mkdir(path.parent)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "BotDefender-FL"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def make_ca(pki: Pki, force: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new CA (EC P-384 key, self-signed certificate), or the existing one when its files are there."""
    if pki.ca_key.exists() and pki.ca_cert.exists() and not force:
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("BotDefender-FL CA")).issuer_name(_name("BotDefender-FL CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))  # fmt: skip
    _write(pki.ca_key, _pem_key(key), force)
    _write(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM), force)
    return key, cert


def san_entries(hosts: list[str]) -> list[x509.GeneralName]:
    """IP addresses as IPAddress entries, anything else as DNSName; 127.0.0.1 and localhost always."""
    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *ALWAYS_SANS]):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def make_server_cert(pki: Pki, hosts: list[str], ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                     force: bool = False) -> x509.Certificate:  # fmt: skip
    """The SuperLink's TLS key and certificate (serverAuth) for ``hosts``, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0] if hosts else "localhost"))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(san_entries(hosts)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))  # fmt: skip
    _write(pki.server_key, _pem_key(key), force)
    _write(pki.server_cert, cert.public_bytes(serialization.Encoding.PEM), force)
    _write(pki.superlink_ca, ca_cert.public_bytes(serialization.Encoding.PEM), force)
    return cert


def make_gateway_key(pki: Pki, gateway: str, ca_cert: x509.Certificate, force: bool = False) -> str:
    """A gateway's node-authentication key pair (EC P-384, OpenSSH formats) and its copy of the CA certificate;
    returns the public key line."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())  # fmt: skip
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = public.decode() + f" botdefender-{gateway}\n"
    _write(pki.gateway_key(gateway), private, force)
    _write(pki.gateway_pub(gateway), line.encode(), force)
    _write(pki.gateway_ca(gateway), ca_cert.public_bytes(serialization.Encoding.PEM), force)
    return line


def make_pki(out: Path, superlink_hosts: list[str], gateways: list[str], force: bool = False,
             allow_git: bool = False) -> Pki:  # fmt: skip
    """Make (or extend) the PKI folder ``out``: the CA if missing, a server certificate when ``superlink_hosts``
    are given, a key pair per gateway. Refuses a folder inside a git checkout unless ``allow_git``."""
    out = Path(out).expanduser().resolve()
    checkout = inside_git_checkout(out)
    if checkout is not None and not allow_git:
        raise PkiError(f"{out} is inside the git checkout {checkout}: keep keys outside any repository")
    names = [check_name(g) for g in gateways]
    pki = Pki(out)
    planned = ([pki.server_key, pki.server_cert] if superlink_hosts else []) + [pki.gateway_key(g) for g in names]
    clashes = [str(p) for p in planned if p.exists()]
    if clashes and not force:
        raise PkiError(f"{', '.join(clashes)} exist(s); pass --force to replace")
    _mkdir(out)
    ca_key, ca_cert = make_ca(pki)
    if superlink_hosts:
        make_server_cert(pki, superlink_hosts, ca_key, ca_cert, force)
    for gateway in names:
        make_gateway_key(pki, gateway, ca_cert, force)
    return pki

