"""A deployment test bed on one machine: a TLS SuperLink with node authentication and one SuperNode per gateway,
each gateway in its own network namespace with its own capture and its own FLWR_HOME.

    python -m deploy testbed up [--state-dir DIR]      # prints the gateways, their namespaces and node ids
    python -m deploy testbed down [--state-dir DIR]    # stops its pids, deletes its namespaces and links

The SuperLink listens on the bridge's link address only (never on 0.0.0.0); SuperNodes run this interpreter's
``flower-supernode`` under ``ip netns exec``. Without root (no namespaces) the bed falls back to loopback
processes (SuperLink on 127.0.0.1, one runtime port per SuperNode) and says so. Everything made is recorded in
``STATE/testbed.json`` and pid files, and ``down`` removes exactly that, also after a failed ``up``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy import commands, netns, processes
from deploy.pki import Pki, make_pki

log = logging.getLogger(__name__)
DEFAULT_STATE = Path(tempfile.gettempdir()) / "botdefender-deploy"
REPO = Path(__file__).resolve().parents[1]
IOT23 = "iot-23"
DATA_ENV = "BOTDEFENDER_DATA_DIR"
# three IoT-23 captures: two honeypots (Zeek logs, 452 and 1,374 benign records) and one malware capture (a CSV
# export, 10,403 records, 79% malicious): non-IID sites, small enough to train in seconds
CAPTURES = ("CTU-Honeypot-Capture-4-1.conn.log.labeled", "CTU-Honeypot-Capture-5-1.conn.log.labeled",
            "csv/CTU-Malware-Capture-8-1-labeled.csv")  # fmt: skip


def free_port(host: str, start: int = 47900, stop: int = 48900) -> int:
    """A free TCP port on ``host`` in an uncommon range."""
    for port in range(start, stop):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in {start}-{stop}")


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            if sock.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False


@dataclass
class Gateway:
    name: str
    data_path: str
    dataset: str = IOT23
    namespace: str = ""  # empty: a loopback process
    link: str = ""  # root-side veth (its byte counters are this gateway's traffic)
    runtime_port: int = 9094
    node_id: str = ""


@dataclass
class DeployBed:
    """The bed's state folder holds pki/, operator/ (FLWR_HOME of the SuperLink and the flwr CLI), one folder per
    gateway (its FLWR_HOME), pid and log files, the SuperLink's database and testbed.json."""

    state_dir: Path = DEFAULT_STATE
    data_dir: Path | None = None
    prefix: str = "bdd"
    subnet: str = "10.81.0"
    use_namespaces: bool = True
    gateways: list[Gateway] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    fallback_reason: str = ""

    # paths ------------------------------------------------------------------------------------------------
    @property
    def pki(self) -> Pki:
        return Pki(self.state_dir / "pki")

    @property
    def operator_home(self) -> Path:
        return self.state_dir / "operator"

    @property
    def signing_key(self) -> Path:
        """The operator's Ed25519 bundle-signing key (its public half is pinned on every gateway)."""
        return self.state_dir / "signing" / "operator.key"

    def bundle_root(self, gateway: Gateway) -> Path:
        """Where ``gateway`` installs rolled-out bundles (``current`` is what its verdict service serves)."""
        return self.state_dir / gateway.name / "bundles"

    def pinned_key(self, gateway: Gateway) -> Path:
        return self.state_dir / gateway.name / "operator.pub"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self, home: Path | None = None) -> dict:
        extra = {"BOTDEFENDER_DATA_DIR": str(self.data_dir)} if self.data_dir else {}
        return commands.flower_env(home or self.operator_home, extra)

    # bring-up ---------------------------------------------------------------------------------------------
    def up(self, captures: tuple[str, ...] = CAPTURES, register: bool = True) -> "DeployBed":
        """Network, PKI, SuperLink, node registration and one SuperNode per capture; on a failure everything
        made so far is removed before the error propagates."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if (self.state_dir / "testbed.json").exists():
            raise RuntimeError(f"a bed is already up in {self.state_dir}: run `python -m deploy testbed down`")
        reason = netns.unavailable() if self.use_namespaces else "namespaces not requested"
        if reason:
            self.use_namespaces, self.fallback_reason = False, reason
            log.warning("no network namespaces (%s): SuperNodes run as loopback processes", reason)
        network = netns.Network(self.prefix, self.subnet)
        value = self.data_dir or os.environ.get(DATA_ENV)
        self.data_dir = Path(value).resolve() if value else None
        missing = [c for c in captures if self.data_dir is None or not (self.data_dir / IOT23 / c).is_file()]
        if self.data_dir is None or missing:
            raise RuntimeError(f"captures {missing} not found under {self.data_dir}/{IOT23}: pass --data-dir or set "
                               f"{DATA_ENV}")  # fmt: skip
        self.gateways = [Gateway(f"gw{i}", str((self.data_dir / IOT23 / c).resolve()))
                         for i, c in enumerate(captures, 1)]  # fmt: skip
        self.save()  # from here on, down() knows what to remove
        try:
            if self.use_namespaces:
                self.host = network.link_address
                self.save(network.names(len(self.gateways)))
                for gateway, site in zip(self.gateways, network.create(len(self.gateways))):
                    gateway.namespace, gateway.link = site.namespace, site.outer
            self.port = free_port(self.host)
            for gateway in self.gateways:
                gateway.runtime_port = 9094 if gateway.namespace else free_port("127.0.0.1", self.port + 1)
            self.save(network.names(len(self.gateways)) if self.use_namespaces else None)
            if not self.pki.ca_cert.exists():
                make_pki(self.pki.root, [self.host, network.link_address], [g.name for g in self.gateways])
            self.make_signing_key()
            self.start_superlink()
            commands.write_connection(self.operator_home, self.address, self.pki.ca_cert)
            if register:
                for gateway in self.gateways:
                    gateway.node_id = self.register(self.pki.gateway_pub(gateway.name))
            for gateway in self.gateways:
                self.start_supernode(gateway)
            self.save(network.names(len(self.gateways)) if self.use_namespaces else None)
        except BaseException:
            self.down()
            raise
        return self

    def make_signing_key(self) -> None:
        """The operator's bundle-signing key pair (once) and a copy of its public key on every gateway."""
        from gateway.signing import generate_signing_key

        public = self.signing_key.with_suffix(".pub")
        if not self.signing_key.exists():
            self.signing_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            generate_signing_key(self.signing_key, public)
        for gateway in self.gateways:
            self.pinned_key(gateway).parent.mkdir(parents=True, exist_ok=True)
            self.pinned_key(gateway).write_bytes(public.read_bytes())

    def start_superlink(self, timeout: float = 60.0) -> int:
        command = commands.superlink_command(self.pki, self.host, self.port, self.state_dir / "superlink.db",
                                             self.state_dir / "superlink-flower.log")  # fmt: skip
        log.info("%s", commands.shell_line(command))
        pid = processes.start(command, "superlink", self.state_dir, self.env(), cwd=self.state_dir)
        if not wait_port(self.host, self.port, timeout):
            raise RuntimeError(f"the SuperLink did not listen on {self.address} within {timeout:.0f} s; see "
                               f"{self.state_dir / 'superlink.log'}")  # fmt: skip
        return pid

    def stop_superlink(self) -> list[int]:
        return processes.stop_pidfile(self.state_dir / "superlink.pid")

    def flwr(self, command: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run a ``flwr`` CLI command as the operator (its FLWR_HOME holds the TLS connection)."""
        return subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=timeout,
                              cwd=self.state_dir)  # fmt: skip

    def register(self, public_key: Path) -> str:
        """``flwr supernode register KEY.pub`` -> the node id the SuperLink gave it."""
        done = self.flwr(commands.register_command(public_key))
        if "Public key already in use" in done.stdout:  # registered before (the database keeps nodes)
            return "registered earlier"
        try:
            return str(json.loads(done.stdout)["node-id"])
        except (ValueError, KeyError) as err:
            raise RuntimeError(f"flwr supernode register {public_key} failed: {done.stdout[-500:]} "
                               f"{done.stderr[-500:]}") from err  # fmt: skip

    def nodes(self) -> list[dict]:
        """``flwr supernode list``: every registered node with its status."""
        done = self.flwr(commands.list_command())
        try:
            return list(json.loads(done.stdout)["nodes"])
        except (ValueError, KeyError) as err:
            raise RuntimeError(f"flwr supernode list failed: {done.stdout[-500:]} {done.stderr[-500:]}") from err

    def wait_online(self, count: int, timeout: float = 90.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            online = [n for n in self.nodes() if n.get("status") == "online"]
            if len(online) >= count or time.monotonic() > deadline:
                return online
            time.sleep(1.0)

    def supernode_argv(self, gateway: Gateway, **options) -> list[str]:
        """The SuperNode's command (under ``ip netns exec`` in its namespace); ``options`` go to
        :func:`deploy.commands.supernode_command` (insecure, root_certificates, auth, max_wait_time)."""
        node_config = {"data-path": gateway.data_path, "dataset": gateway.dataset,
                       "bundle-root": str(self.bundle_root(gateway)), "bundle-public-key": str(self.pinned_key(gateway))}
        command = commands.supernode_command(self.pki, options.pop("key_of", gateway.name), self.address,
                                             node_config, gateway.runtime_port, **options)  # fmt: skip
        return (["ip", "netns", "exec", gateway.namespace] if gateway.namespace else []) + command

    def start_supernode(self, gateway: Gateway, name: str | None = None, **options) -> int:
        """Start ``gateway``'s SuperNode (pid file ``NAME.pid``, default the gateway's name)."""
        home = self.state_dir / gateway.name
        home.mkdir(parents=True, exist_ok=True)
        command = self.supernode_argv(gateway, **options)
        log.info("%s", commands.shell_line(command))
        return processes.start(command, name or gateway.name, self.state_dir, self.env(home), cwd=home)

    def rejoin(self, gateway: Gateway, timeout: float = 150.0, settle: float = 15.0) -> float:
        """Restart a gateway's SuperNode until the SuperLink takes it back; returns the seconds it took.

        A node that vanished without deactivating stays "online" on the SuperLink until its heartbeat lapses
        (2 x the 30 s heartbeat interval in Flower 1.42), and activating it again before then fails with
        ``[code: 2004] Failed to activate SuperNode`` (the SuperNode exits 305): so try again every few seconds,
        as a systemd unit with ``Restart=on-failure`` would."""
        started = time.monotonic()
        log_file = self.state_dir / f"{gateway.name}.log"
        while time.monotonic() - started < timeout:
            offset = log_file.stat().st_size if log_file.exists() else 0
            pid = self.start_supernode(gateway)
            deadline = time.monotonic() + settle
            while time.monotonic() < deadline and processes.alive(pid):
                if "SuperNode ID:" in log_file.read_text(errors="replace")[offset:]:  # activated
                    return time.monotonic() - started
                time.sleep(0.2)
            processes.stop_pidfile(self.state_dir / f"{gateway.name}.pid")
            time.sleep(3.0)
        raise RuntimeError(f"{gateway.name} did not rejoin within {timeout:.0f} s; see {log_file}")

    def start_verdict_service(self, gateway: Gateway, source: Path, verdicts: Path, *options: str) -> int:
        """``python -m gateway serve --follow`` in the gateway's namespace on its installed bundle (``ROOT/current``,
        the pinned key), flow verdicts appended to ``verdicts``; pid file ``<gateway>-serve.pid``."""
        import sys

        command = [sys.executable, "-m", "gateway", "serve", "--bundle", str(self.bundle_root(gateway) / "current"),
                   "--public-key", str(self.pinned_key(gateway)), "--source", str(source), "--follow",
                   "--out", str(verdicts), "--host-sink", "", *options]  # fmt: skip
        command = (["ip", "netns", "exec", gateway.namespace] if gateway.namespace else []) + command
        log.info("%s", commands.shell_line(command))
        return processes.start(command, f"{gateway.name}-serve", self.state_dir, self.env(),
                               cwd=REPO)  # python -m finds the checkout's packages, installed or not

    def kill_supernode(self, gateway: Gateway) -> list[int]:
        """SIGKILL a gateway's SuperNode and its ClientApp processes (a crash)."""
        return processes.kill_now(self.state_dir / f"{gateway.name}.pid")

    def stop_process(self, name: str) -> list[int]:
        return processes.stop_pidfile(self.state_dir / f"{name}.pid")

    # state ------------------------------------------------------------------------------------------------
    def save(self, made: dict | None = None) -> None:
        path = self.state_dir / "testbed.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        state = {"prefix": self.prefix, "data_dir": str(self.data_dir or ""), "host": self.host, "port": self.port, "address": self.address,
                 "namespaces": self.use_namespaces, "fallback_reason": self.fallback_reason,
                 "made": made if made is not None else old.get("made", {"namespaces": [], "links": []}),
                 "gateways": [g.__dict__ for g in self.gateways]}  # fmt: skip
        path.write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, state_dir: Path) -> "DeployBed":
        state = json.loads((Path(state_dir) / "testbed.json").read_text())
        bed = cls(state_dir=Path(state_dir), data_dir=Path(state["data_dir"]) if state["data_dir"] else None,
                  prefix=state["prefix"], use_namespaces=state["namespaces"],
                  host=state["host"], port=state["port"], fallback_reason=state["fallback_reason"])  # fmt: skip
        bed.gateways = [Gateway(**g) for g in state["gateways"]]
        return bed

    def down(self) -> list[str]:
        """Stop every process with a pid file in the state folder (SuperNodes first), delete the namespaces and
        links recorded in testbed.json; returns what is left (should be nothing). PKI, logs and the database
        stay in the state folder."""
        left: list[str] = []
        for pid_file in sorted(self.state_dir.glob("*.pid"), key=lambda p: p.stem == "superlink"):
            left += [f"pid {p} ({pid_file.stem})" for p in processes.stop_pidfile(pid_file)]
        path = self.state_dir / "testbed.json"
        made = json.loads(path.read_text()).get("made", {}) if path.exists() else {}
        for namespace in made.get("namespaces", []):  # anything still running in a namespace of ours is ours
            for pid in netns.namespace_pids(namespace):
                left += [f"pid {p} (in {namespace})" for p in processes.stop(pid, grace=3.0)]
        if made.get("namespaces") or made.get("links"):
            left += netns.remove(made.get("namespaces", []), made.get("links", []))
        path.unlink(missing_ok=True)
        return left
