"""Gateway tokens for the isolation API: the token store, the check of a call's ``Authorization`` header and the
scope of each gateway (the networks whose addresses it may block and unblock).

    python -m sdn.auth add --tokens tokens.json --gateway gw1 --network 10.0.1.0/24   # prints gw1's token once
    python -m sdn.auth add --tokens tokens.json --gateway gw1 --network 10.0.1.0/24 --token-file gw1.token
    python -m sdn.auth rotate --tokens tokens.json --gateway gw1        # a new token, same networks
    python -m sdn.auth list --tokens tokens.json                        # names, networks, hash fingerprints
    python -m sdn.auth remove --tokens tokens.json --gateway gw1

A token is ``bd1.<gateway>.<secret>`` with 32 random bytes of secret (``secrets.token_urlsafe``): the gateway's
name in the clear lets the API say which gateway a wrong (say, rotated) token claims to be, and look its entry
up without comparing against every gateway. The tokens file (JSON, mode 0600, refused if group or others may read
it) keeps only ``sha256:<hex>`` of each token, ``networks`` (CIDR) and an optional ``admin`` flag (every address)::

    {"gateways": {"gw1": {"hash": "sha256:…", "networks": ["10.0.1.0/24"], "admin": false}}}

Why a plain sha256 and not scrypt/pbkdf2: a slow hash protects low-entropy secrets (passwords) against guessing
from a stolen hash; 256 random bits cannot be guessed either way, and a slow hash on every request would hand any
caller a cheap way to burn the controller's CPU. Digests are compared with ``hmac.compare_digest``. The API stats
the file on every call and loads it again when it changed (so ``remove`` and ``rotate`` take effect without a
restart); if the changed file is unreadable or malformed, every call is refused (401) until it is fixed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from sdn.blocklist import canonical_ip

log = logging.getLogger("sdn.auth")
PREFIX = "bd1"
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOKEN = re.compile(rf"{PREFIX}\.([A-Za-z0-9_-]{{1,64}})\.([A-Za-z0-9_-]{{43,86}})")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AuthError(ValueError):
    """The tokens file cannot be used (its mode, its content); the message names the file and what is wrong."""


def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token(gateway: str) -> str:
    return f"{PREFIX}.{gateway}.{secrets.token_urlsafe(32)}"


def check_private(path: Path, what: str = "tokens file") -> os.stat_result:
    """``path``'s stat; AuthError if it is not a regular file or group or others have any access to it."""
    try:
        info = path.stat()
    except OSError as err:
        raise AuthError(f"{what} {path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise AuthError(f"{what} {path} is not a regular file")
    if info.st_mode & 0o077:
        raise AuthError(f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o}: group or others may read it; "
                        f"chmod 600 {path}")  # fmt: skip
    return info


@dataclass(frozen=True)
class Gateway:
    """One gateway's entry: the digest of its token and the networks it may act on (``admin``: every address)."""

    name: str
    hash: str
    networks: tuple[Network, ...]
    admin: bool = False

    def covers(self, ip: object) -> bool:
        """Whether ``ip`` (IPv4-mapped IPv6 folded to IPv4) lies in one of this gateway's networks; an address
        that is not one is covered (the service answers it with a 400)."""
        try:
            address = canonical_ip(ip)
        except ValueError:
            return True
        return self.admin or any(address.version == n.version and address in n for n in self.networks)

    def scope(self) -> str:
        return "every address (admin)" if self.admin else ", ".join(map(str, self.networks)) or "no network"

    def as_dict(self) -> dict:
        return {"hash": self.hash, "networks": [str(n) for n in self.networks], "admin": self.admin}


def parse(data: object, path: Path) -> dict[str, Gateway]:
    """The gateways of a tokens file's JSON; AuthError naming the file, the gateway and the field."""
    if not isinstance(data, dict) or not isinstance(data.get("gateways"), dict) or set(data) - {"gateways"}:
        raise AuthError(f'tokens file {path}: expected {{"gateways": {{NAME: {{"hash": ..., "networks": [...]}}}}}}')
    gateways = {}
    for name, entry in data["gateways"].items():
        where = f"tokens file {path}: gateway {name[:80]!r}"
        if not NAME.fullmatch(name):
            raise AuthError(f"{where}: a name is 1-64 characters of A-Z a-z 0-9 _ -")
        if not isinstance(entry, dict) or set(entry) - {"hash", "networks", "admin"}:
            raise AuthError(f"{where}: expected an object with hash, networks and an optional admin")
        hash_, networks, admin = entry.get("hash"), entry.get("networks", []), entry.get("admin", False)
        if not isinstance(hash_, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", hash_):
            raise AuthError(f"{where}: hash must be 'sha256:' and 64 hex digits")
        if not isinstance(admin, bool) or not isinstance(networks, list) or not (networks or admin):
            raise AuthError(f"{where}: networks must be a non-empty list of CIDR strings (or admin true)")
        try:
            parsed = tuple(ipaddress.ip_network(n) for n in networks if isinstance(n, str))
        except ValueError as err:
            raise AuthError(f"{where}: {err}") from None
        if len(parsed) != len(networks):
            raise AuthError(f"{where}: networks must be CIDR strings such as 10.0.1.0/24")
        gateways[name] = Gateway(name, hash_, parsed, admin)
    return gateways


def load(path: str | Path) -> dict[str, Gateway]:
    """The gateways of the tokens file at ``path``, after checking its mode (see :func:`check_private`)."""
    path = Path(path)
    check_private(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise AuthError(f"tokens file {path} is not JSON: {err}") from None
    return parse(data, path)


def save(path: str | Path, gateways: dict[str, Gateway]) -> None:
    """Write the tokens file atomically with mode 0600 (a temporary file in its folder, then a rename)."""
    path = Path(path)
    text = json.dumps({"gateways": {n: g.as_dict() for n, g in sorted(gateways.items())}}, indent=1) + "\n"
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one call's ``Authorization`` header: the gateway, or why not (``problem``)."""

    gateway: Gateway | None
    problem: str = ""
    claimed: str = ""  # the gateway name a refused token carries (for the log line; not trusted)


class TokenStore:
    """The controller's view of a tokens file, loaded again whenever the file changes (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._signature = self._stat_signature()
        self.gateways = load(self.path)  # a bad file at start: AuthError, the API does not start
        self._error = ""

    def _stat_signature(self) -> tuple:
        try:
            info = self.path.stat()
        except OSError:
            return ()
        return info.st_ino, info.st_mtime_ns, info.st_size, info.st_mode

    def _current(self) -> dict[str, Gateway] | None:
        with self._lock:
            signature = self._stat_signature()
            if signature != self._signature:
                self._signature = signature
                try:
                    self.gateways, self._error = load(self.path), ""
                    log.info("tokens file %s loaded again: %d gateway(s)", self.path, len(self.gateways))
                except AuthError as err:
                    self.gateways, self._error = {}, str(err)
                    log.error("%s; every call is refused until it is fixed", err)
            return None if self._error else self.gateways

    def check(self, authorization: str | None) -> Verdict:
        """The gateway whose token the header ``Bearer <token>`` carries, or a problem to answer 401 with."""
        if not authorization:
            return Verdict(None, "no token (expected Authorization: Bearer <token>)")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Verdict(None, "not a bearer token (expected Authorization: Bearer <token>)")
        match = TOKEN.fullmatch(token.strip())
        gateways = self._current()
        if gateways is None:
            return Verdict(None, "the tokens file is unusable (see the controller's log)")
        if match is None:
            return Verdict(None, "malformed token")
        name = match.group(1)
        gateway = gateways.get(name)
        presented = digest(token.strip())
        if gateway is None:
            return Verdict(None, "unknown gateway", claimed=name)
        if not hmac.compare_digest(presented.encode(), gateway.hash.encode()):
            return Verdict(None, "wrong token", claimed=name)
        return Verdict(gateway)


# ---- the command line --------------------------------------------------------------------------------------
def _edit(path: Path) -> dict[str, Gateway]:
    return load(path) if path.exists() else {}


def _hand_out(token: str, token_file: Path | None) -> None:
    """Print the token once, or write it to ``token_file`` (created with mode 0600, never overwritten)."""
    if token_file is None:
        print(token)
        return
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    print(f"token written to {token_file} (mode 0600)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdn.auth", description="The isolation API's gateway tokens.")
    parser.add_argument("command", choices=["add", "rotate", "remove", "list"])
    parser.add_argument("--tokens", type=Path, required=True, help="the tokens file (created with mode 0600)")
    parser.add_argument("--gateway", help="the gateway's name (1-64 of A-Z a-z 0-9 _ -)")
    parser.add_argument("--network", action="append", default=[], help="a CIDR the gateway may act on (repeatable)")
    parser.add_argument("--admin", action="store_true", help="the token may act on every address")
    parser.add_argument("--token-file", type=Path, help="write the new token to this new file (mode 0600) instead of "
                                                        "printing it")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name, gw in sorted(load(args.tokens).items()):
                print(f"{name}\t{gw.scope()}\t{gw.hash[:19]}…")
            return 0
        if not args.gateway or not NAME.fullmatch(args.gateway):
            raise AuthError("--gateway NAME is needed: 1-64 characters of A-Z a-z 0-9 _ -")
        gateways = _edit(args.tokens)
        if args.command == "remove":
            if gateways.pop(args.gateway, None) is None:
                raise AuthError(f"tokens file {args.tokens}: no gateway {args.gateway!r}")
            save(args.tokens, gateways)
            return 0
        if args.command == "add":
            if args.gateway in gateways:
                raise AuthError(f"gateway {args.gateway!r} is already in {args.tokens}; use rotate for a new token")
            try:
                networks = tuple(ipaddress.ip_network(n) for n in args.network)
            except ValueError as err:
                raise AuthError(f"--network: {err}") from None
            if not networks and not args.admin:
                raise AuthError("give at least one --network CIDR (or --admin)")
            old = Gateway(args.gateway, "", networks, args.admin)
        else:
            if args.gateway not in gateways:
                raise AuthError(f"tokens file {args.tokens}: no gateway {args.gateway!r}")
            old = gateways[args.gateway]
        if args.token_file is not None and args.token_file.exists():
            raise AuthError(f"--token-file {args.token_file} exists; remove it first")
        token = new_token(args.gateway)
        gateways[args.gateway] = Gateway(args.gateway, digest(token), old.networks, old.admin)
        save(args.tokens, gateways)
        _hand_out(token, args.token_file)
    except (AuthError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
