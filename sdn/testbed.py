"""A private Open vSwitch test bed: one userspace bridge, hosts in network namespaces wired to it by veth pairs.

    python -m sdn.testbed install                       # Debian packages (root) and os-ken from PyPI
    python -m sdn.testbed up --controller-config controller.toml   # also starts the controller; prints the hosts
    python -m sdn.testbed up --controller-port 6653     # a controller you run yourself
    python -m sdn.testbed down                          # removes everything the bed created, by name and pid

Everything is named with a prefix (``bd`` by default: namespaces ``bd-h1``.., veths ``bdv-h1`` (host side) and
``bdp-h1`` (bridge side), bridge ``bd-br0``) and the OVS daemons run from a private folder with their own
database, sockets and pid files, so teardown removes exactly what was made, also after a failure, and never
touches another OVS. Open vSwitch notes (checked here): the kernel has no OVS module, so the bridge uses the
userspace datapath (``datapath_type=netdev``); TCP through it needs transmit checksum offload off on each host's
veth (``ethtool -K IF tx off``); ``fail_mode=secure`` keeps the bridge from forwarding on its own when the
controller is away.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_STATE = Path(os.environ.get("BOTDEFENDER_TESTBED_DIR", Path(tempfile.gettempdir()) / "botdefender-testbed"))
SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


class BedError(RuntimeError):
    """The bed could not be built (missing tools, not root, a command failed)."""


def run(*command: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(command), capture_output=True, text=True, env=env, timeout=30)
    if check and done.returncode != 0:
        raise BedError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return done


def missing_requirements() -> list[str]:
    """Why the bed cannot be built here (empty: it can)."""
    problems = [] if os.geteuid() == 0 else ["needs root (network namespaces, veth pairs)"]
    for tool in ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ip", "ethtool", "ping"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found (apt-get install openvswitch-switch iproute2 ethtool iputils-ping)")
    return problems


def install_requirements() -> None:
    """apt-get the Debian packages the bed needs (root only) and pip-install os-ken if it is missing."""
    if any("not found" in p for p in missing_requirements()):
        run("apt-get", "install", "-y", "-q", "openvswitch-switch", "iproute2", "ethtool", "iputils-ping",
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
    try:
        import os_ken  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "os-ken>=4,<5"], check=True, timeout=600)


def start_controller(config: Path, state_dir: Path) -> int:
    """``python -m sdn.controller --config config`` in the background; its pid goes to the bed's state folder. The
    config (and its tokens file, see :mod:`sdn.auth`) is checked first: BedError naming what is wrong."""
    import tomllib

    from sdn.auth import load
    from sdn.controller import ControllerConfig

    try:
        checked = ControllerConfig.from_toml(config)
        if checked.tokens:
            load(checked.tokens)
    except (OSError, ValueError) as err:
        raise BedError(f"controller config: {err}") from None
    state_dir.mkdir(parents=True, exist_ok=True)
    log = open(state_dir / "controller.log", "a")
    process = subprocess.Popen([sys.executable, "-m", "sdn.controller", "--config", str(config)], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    (state_dir / "controller.pid").write_text(str(process.pid))
    port = int(tomllib.loads(config.read_text()).get("openflow", {}).get("port", 6653))
    return port


@dataclass
class Host:
    name: str
    namespace: str
    veth: str  # inside the namespace
    port: str  # on the bridge, in the root namespace
    ip: str
    mac: str

    def exec(self, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        done = subprocess.run(["ip", "netns", "exec", self.namespace, *command], capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        if check and done.returncode != 0:
            raise BedError(f"{self.name}: {' '.join(command)} failed: {done.stderr.strip()[:300]}")
        return done


@dataclass
class NetworkBed:
    prefix: str = "bd"
    hosts_count: int = 3
    subnet: str = "10.77.0"
    controller: str = "tcp:127.0.0.1:6653"
    state_dir: Path = DEFAULT_STATE
    hosts: list[Host] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br0"

    def _env(self) -> dict:
        folder = str(self.state_dir)
        return {**os.environ, "OVS_RUNDIR": folder, "OVS_DBDIR": folder, "OVS_LOGDIR": folder,
                "OVS_PKGDATADIR": str(SCHEMA.parent)}  # fmt: skip

    def vsctl(self, *args: str) -> str:
        return run("ovs-vsctl", f"--db=unix:{self.state_dir / 'db.sock'}", "--timeout=10", *args,
                   env=self._env()).stdout  # fmt: skip

    def ofctl(self, *args: str) -> str:
        return run("ovs-ofctl", "-O", "OpenFlow13", *args, env=self._env()).stdout

    def up(self, clean: bool = True) -> "NetworkBed":
        problems = missing_requirements()
        if problems:
            raise BedError("; ".join(problems))
        if clean:
            self.down()  # leftovers of an earlier bed with this prefix
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = self._env()
        db = self.state_dir / "conf.db"
        run("ovsdb-tool", "create", str(db), str(SCHEMA), env=env)
        run("ovsdb-server", str(db), f"--remote=punix:{self.state_dir / 'db.sock'}",
            f"--pidfile={self.state_dir / 'ovsdb-server.pid'}", f"--log-file={self.state_dir / 'ovsdb-server.log'}",
            f"--unixctl={self.state_dir / 'ovsdb-server.ctl'}", "--detach", env=env)  # fmt: skip
        self.vsctl("--no-wait", "init")
        run("ovs-vswitchd", f"unix:{self.state_dir / 'db.sock'}", f"--pidfile={self.state_dir / 'ovs-vswitchd.pid'}",
            f"--log-file={self.state_dir / 'ovs-vswitchd.log'}", f"--unixctl={self.state_dir / 'ovs-vswitchd.ctl'}",
            "--detach", env=env)  # fmt: skip
        self.vsctl("add-br", self.bridge, "--", "set", "bridge", self.bridge, "datapath_type=netdev",
                   "protocols=OpenFlow13", "fail_mode=secure")  # fmt: skip
        self.vsctl("set-controller", self.bridge, self.controller)
        for i in range(1, self.hosts_count + 1):
            self.hosts.append(self._add_host(i))
        self._save()
        return self

    def _add_host(self, i: int) -> Host:
        host = Host(name=f"h{i}", namespace=f"{self.prefix}-h{i}", veth=f"{self.prefix}v-h{i}",
                    port=f"{self.prefix}p-h{i}", ip=f"{self.subnet}.{i}", mac=f"02:bd:00:00:00:{i:02x}")  # fmt: skip
        run("ip", "netns", "add", host.namespace)
        run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", host.port)
        run("ip", "link", "set", host.veth, "netns", host.namespace)
        run("ip", "link", "set", host.port, "up")
        run("ethtool", "-K", host.port, "tx", "off", check=False)
        host.exec("ip", "link", "set", host.veth, "address", host.mac)
        host.exec("ip", "addr", "add", f"{host.ip}/24", "dev", host.veth)
        host.exec("ip", "link", "set", host.veth, "up")
        host.exec("ip", "link", "set", "lo", "up")
        host.exec("ethtool", "-K", host.veth, "tx", "off")
        self.vsctl("add-port", self.bridge, host.port)
        return host

    def _save(self) -> None:
        state = {"prefix": self.prefix, "bridge": self.bridge, "controller": self.controller,
                 "hosts": [h.__dict__ for h in self.hosts]}  # fmt: skip
        (self.state_dir / "testbed.json").write_text(json.dumps(state, indent=1))

    def down(self) -> None:
        """Remove every namespace and veth with this bed's prefix, its bridge, and stop its own OVS daemons (by pid
        file); then remove the userspace datapath's tap devices: the bridge's (named like the bridge) and
        ``ovs-netdev``, the datapath's own, once no ``ovs-vswitchd`` runs on the machine any more (another Open
        vSwitch would still be using it)."""
        if (self.state_dir / "db.sock").exists():
            run("ovs-vsctl", f"--db=unix:{self.state_dir / 'db.sock'}", "--timeout=5", "--if-exists", "del-br",
                self.bridge, check=False, env=self._env())  # fmt: skip
        namespaces = run("ip", "netns", "list", check=False).stdout.split()
        for name in namespaces:
            if name.startswith(f"{self.prefix}-h"):
                run("ip", "netns", "delete", name, check=False)
        links = run("ip", "-o", "link", "show", check=False).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith((f"{self.prefix}p-h", f"{self.prefix}v-h")):
                run("ip", "link", "delete", name, check=False)
        for daemon in ("controller", "ovs-vswitchd", "ovsdb-server"):
            stop_pidfile(self.state_dir / f"{daemon}.pid")
        remove_link(self.bridge)
        if not processes_named("ovs-vswitchd"):
            remove_link("ovs-netdev")
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.hosts = []


def remove_link(name: str) -> None:
    """Delete the network device ``name`` if it exists."""
    if Path("/sys/class/net", name).exists():
        run("ip", "link", "delete", name, check=False)


def processes_named(name: str) -> list[int]:
    """Pids of the running processes whose command name is ``name`` (read from /proc; nothing is signalled)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name[:15]:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def stop_pidfile(path: Path, timeout: float = 5.0) -> None:
    """SIGTERM the process named by a pid file (then SIGKILL after ``timeout``), if it is still there."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdn.testbed", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "install"])
    parser.add_argument("--prefix", default="bd")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--controller-port", type=int, default=6653)
    parser.add_argument("--controller-config", type=Path, help="start python -m sdn.controller with this config")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    args = parser.parse_args(argv)
    bed = NetworkBed(prefix=args.prefix, hosts_count=args.hosts, controller=f"tcp:127.0.0.1:{args.controller_port}",
                  state_dir=args.state_dir)  # fmt: skip
    try:
        if args.command == "install":
            install_requirements()
        elif args.command == "up":
            bed.down()  # an earlier bed (and its controller)
            if args.controller_config:
                port = start_controller(args.controller_config, args.state_dir)
                bed.controller = f"tcp:127.0.0.1:{port}"
            bed.up(clean=False)
            for host in bed.hosts:
                print(f"{host.name}: namespace {host.namespace}, {host.ip} ({host.mac}), bridge port {host.port}")
        else:
            bed.down()
    except BedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
