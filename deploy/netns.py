"""The test bed's network: one Linux bridge in the root namespace and one namespace per gateway on it.

Names carry the bed's prefix (``bdd`` by default), in the shapes CI's leftover check looks for: bridge
``bdd-br0`` (the SuperLink's link address ``SUBNET.1/24``), namespaces ``bdd-h1``.., veth pairs ``bddv-h1``
(inside the namespace, ``SUBNET.(10+i)/24``) and ``bddp-h1`` (root side, a port of the bridge). What was made
is recorded, and :func:`remove` deletes exactly those names. No Open vSwitch: a plain bridge is enough here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class NetError(RuntimeError):
    """A namespace, veth or bridge could not be made."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return done


def unavailable() -> str | None:
    """Why namespaces cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "not root: network namespaces and veth pairs need CAP_NET_ADMIN"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    return None


@dataclass
class Site:
    """One gateway's namespace and its veth pair."""

    namespace: str
    inner: str  # veth inside the namespace
    outer: str  # veth in the root namespace, a bridge port
    address: str


@dataclass
class Network:
    prefix: str = "bdd"
    subnet: str = "10.81.0"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br0"

    @property
    def link_address(self) -> str:
        return f"{self.subnet}.1"

    def site(self, i: int) -> Site:
        return Site(f"{self.prefix}-h{i}", f"{self.prefix}v-h{i}", f"{self.prefix}p-h{i}", f"{self.subnet}.{10 + i}")

    def names(self, count: int) -> dict[str, list[str]]:
        """The namespaces and links a bed of ``count`` sites makes (what :func:`remove` deletes)."""
        sites = [self.site(i) for i in range(1, count + 1)]
        return {"namespaces": [s.namespace for s in sites],
                "links": [s.outer for s in sites] + [s.inner for s in sites] + [self.bridge]}  # fmt: skip

    def create(self, count: int) -> list[Site]:
        """The bridge with the link address and ``count`` namespaces wired to it; the caller removes them."""
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.link_address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        sites = []
        for i in range(1, count + 1):
            site = self.site(i)
            ip("netns", "add", site.namespace)
            ip("link", "add", site.inner, "type", "veth", "peer", "name", site.outer)
            ip("link", "set", site.inner, "netns", site.namespace)
            ip("link", "set", site.outer, "master", self.bridge)
            ip("link", "set", site.outer, "up")
            ip("-n", site.namespace, "addr", "add", f"{site.address}/24", "dev", site.inner)
            ip("-n", site.namespace, "link", "set", site.inner, "up")
            ip("-n", site.namespace, "link", "set", "lo", "up")
            sites.append(site)
        return sites


def remove(namespaces: list[str], links: list[str]) -> list[str]:
    """Delete exactly these namespaces and links where they exist; returns the names still present."""
    present = set(ip("netns", "list", check=False).stdout.split())
    for name in namespaces:
        if name in present:
            ip("netns", "delete", name, check=False)
    for name in links:
        if Path("/sys/class/net", name).exists():
            ip("link", "delete", name, check=False)
    left = set(ip("netns", "list", check=False).stdout.split())
    return [n for n in namespaces if n in left] + [n for n in links if Path("/sys/class/net", n).exists()]


def namespace_pids(namespace: str) -> list[int]:
    """Pids of the processes running in ``namespace`` (``ip netns pids``)."""
    done = ip("netns", "pids", namespace, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()] if done.returncode == 0 else []


def byte_counters(link: str) -> tuple[int, int]:
    """(rx, tx) bytes of a root-side link: rx is what the namespace sent, tx what it received."""
    stats = Path("/sys/class/net", link, "statistics")
    return int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text())
