"""The Flower 1.42 command lines of a deployment, built from a PKI folder, and the environment they run in.

Each function returns the argv it would run, so that the CLI can print it and an operator can copy it:

* ``flower-superlink --ssl-ca-certfile CA --ssl-certfile CRT --ssl-keyfile KEY --enable-supernode-auth
  --database FILE --host H --port P --disable-runtime-dependency-installation``
* ``flwr supernode register KEY.pub NAME`` (NAME: a ``[superlink.NAME]`` connection in $FLWR_HOME/config.toml)
* ``flower-supernode --superlink H:P --root-certificates CA --auth-supernode-private-key KEY
  --node-config "data-path='...' dataset='iot-23'" --port RUNTIME_PORT``
* ``flwr run APP NAME --stream --run-config "k=v ..."``

Programs come from this interpreter's bin folder (a venv works without activating it), and that folder goes
first on the PATH of the processes Flower starts (flower-superexec, flwr-serverapp, flwr-clientapp).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from deploy.pki import Pki
from simulation.flower_runtime import format_run_config

CONNECTION = "botdefender"
QUIET_ENV = {"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
             "FLWR_DISABLE_UPDATE_CHECK": "1"}  # fmt: skip


def program(name: str) -> str:
    """``name`` from this interpreter's bin folder if it is there, else ``name`` (looked up on PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def flower_env(flwr_home: Path, extra: dict | None = None) -> dict[str, str]:
    """The environment of a Flower command: its own FLWR_HOME, no uv installs, no telemetry, this bin first."""
    env = dict(os.environ, FLWR_HOME=str(flwr_home), **QUIET_ENV, **(extra or {}))
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]])
    return env


def superlink_command(pki: Pki, host: str, port: int, database: Path, log_file: Path | None = None) -> list[str]:
    """``flower-superlink`` with TLS, node authentication and a database that keeps registered nodes."""
    command = [program("flower-superlink"), "--ssl-ca-certfile", str(pki.superlink_ca),
               "--ssl-certfile", str(pki.server_cert), "--ssl-keyfile", str(pki.server_key),
               "--enable-supernode-auth", "--database", str(database), "--host", host, "--port", str(port),
               "--disable-runtime-dependency-installation"]  # fmt: skip
    if log_file is not None:
        command += ["--log-file", str(log_file)]
    return command


def supernode_command(pki: Pki, gateway: str, superlink: str, node_config: dict, runtime_port: int = 9094, *,
                      insecure: bool = False, root_certificates: Path | None = None, auth: bool = True,
                      max_wait_time: float | None = None) -> list[str]:  # fmt: skip
    """``flower-supernode`` for ``gateway``: TLS against the PKI's CA (or ``root_certificates``; ``insecure``
    drops TLS, only to show that the SuperLink refuses it), its node key, its node config."""
    command = [program("flower-supernode"), "--superlink", superlink]
    if insecure:
        command.append("--insecure")
    else:
        command += ["--root-certificates", str(root_certificates or pki.gateway_ca(gateway))]
    if auth:
        command += ["--auth-supernode-private-key", str(pki.gateway_key(gateway))]
    command += ["--node-config", format_run_config(node_config), "--port", str(runtime_port)]
    if max_wait_time is not None:
        command += ["--max-wait-time", str(max_wait_time)]
    return command


def register_command(public_key: Path, connection: str = CONNECTION) -> list[str]:
    """``flwr supernode register KEY.pub CONNECTION`` (the operator's side of node authentication)."""
    return [program("flwr"), "supernode", "register", str(public_key), connection, "--format", "json"]


def list_command(connection: str = CONNECTION) -> list[str]:
    """``flwr supernode list CONNECTION --format json``."""
    return [program("flwr"), "supernode", "list", connection, "--format", "json"]


def run_command(app: Path, run_config: dict, connection: str = CONNECTION, stream: bool = True) -> list[str]:
    """``flwr run APP CONNECTION [--stream] --run-config "..."``."""
    command = [program("flwr"), "run", str(app), connection]
    if stream:
        command.append("--stream")
    else:
        command += ["--format", "json"]
    if run_config:
        command += ["--run-config", format_run_config(run_config)]
    return command


def write_connection(flwr_home: Path, address: str, root_certificates: Path, name: str = CONNECTION) -> Path:
    """Add (or replace) the TLS connection ``[superlink.NAME]`` in ``$FLWR_HOME/config.toml``, keeping the file's
    other connections; NAME becomes the default only when the file names none."""
    import tomllib

    import tomli_w  # a dependency of flwr

    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    config = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    links = config.setdefault("superlink", {})
    links.setdefault("default", name)
    links[name] = {"address": address, "root-certificates": str(Path(root_certificates).resolve())}
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    return path


def shell_line(command: list[str]) -> str:
    """The argv as one copyable shell line."""
    import shlex

    return " ".join(shlex.quote(part) for part in command)
