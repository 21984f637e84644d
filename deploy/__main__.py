"""``python -m deploy``: certificates and keys, the Flower commands of a deployment, and a local test bed.

    python -m deploy pki --out DIR --superlink-host 10.0.0.1 --gateways gw1,gw2,gw3
    python -m deploy superlink --pki DIR --host 10.0.0.1 --port 8000 [--database FILE] [--data-dir D]
    python -m deploy register --pki DIR --superlink 10.0.0.1:8000 [--gateways gw1,gw2]
    python -m deploy supernode --pki DIR --gateway gw1 --superlink 10.0.0.1:8000 --data-path F --dataset iot-23
    python -m deploy run --pki DIR --superlink 10.0.0.1:8000 [--run-config "k=v ..."]
    python -m deploy testbed up|down [--state-dir DIR] [--data-dir D] [--no-namespaces]

Every wrapper prints the Flower command it runs (``--dry-run``: prints it and stops). ``superlink`` and
``supernode`` replace this process with Flower's (what a systemd unit wants). ``register`` and ``run`` write the
connection ``[superlink.botdefender]`` (address, root-certificates) into $FLWR_HOME/config.toml first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy import commands
from deploy.pki import Pki, PkiError, make_pki


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def _flwr_home(args: argparse.Namespace) -> Path:
    return Path(args.flwr_home or os.environ.get("FLWR_HOME") or Path.home() / ".flwr").expanduser()


def _show(command: list[str]) -> None:
    print("$ " + commands.shell_line(command), flush=True)


def _exec(command: list[str], env: dict, dry_run: bool) -> int:
    _show(command)
    if dry_run:
        return 0
    os.execvpe(command[0], command, env)  # never returns
    return 0  # pragma: no cover


def cmd_pki(args: argparse.Namespace) -> int:
    pki = make_pki(Path(args.out), _words(args.superlink_host), _words(args.gateways), force=args.force)
    print(f"PKI in {pki.root} (folders 0700, files 0600)")
    print(f"  operator keeps offline: {pki.ca_key}")
    print(f"  SuperLink machine:      {pki.superlink_ca.parent}/")
    for gateway in _words(args.gateways):
        print(f"  gateway {gateway}:{' ' * max(1, 14 - len(gateway))}{pki.gateway_dir(gateway)}/ (register {pki.gateway_pub(gateway)})")
    return 0


def cmd_superlink(args: argparse.Namespace) -> int:
    pki = Pki(Path(args.pki).expanduser().resolve())
    database = Path(args.database or pki.root / "superlink" / "state.db").expanduser().resolve()
    extra = {"BOTDEFENDER_DATA_DIR": str(Path(args.data_dir).resolve())} if args.data_dir else {}
    env = commands.flower_env(_flwr_home(args), extra)
    return _exec(commands.superlink_command(pki, args.host, args.port, database), env, args.dry_run)


def cmd_supernode(args: argparse.Namespace) -> int:
    pki = Pki(Path(args.pki).expanduser().resolve())
    node_config = {"data-path": ",".join(str(Path(p).expanduser().resolve()) for p in args.data_path.split(",")),
                   "dataset": args.dataset}  # fmt: skip
    for key, value in (("labels", args.labels), ("bundle-root", args.bundle_root),
                       ("bundle-public-key", args.bundle_public_key)):  # fmt: skip
        if value:
            node_config[key] = ",".join(str(Path(p).expanduser().resolve()) for p in value.split(","))
    if args.unlabelled:
        node_config["unlabelled"] = args.unlabelled
    command = commands.supernode_command(pki, args.gateway, args.superlink, node_config, args.runtime_port)
    return _exec(command, commands.flower_env(_flwr_home(args)), args.dry_run)


def _connect(args: argparse.Namespace, pki: Pki) -> dict:
    home = _flwr_home(args)
    ca = pki.superlink_ca if pki.superlink_ca.exists() else pki.ca_cert  # the CA certificate, never its key
    path = commands.write_connection(home, args.superlink, ca, args.connection)
    print(f"connection [superlink.{args.connection}] -> {args.superlink} in {path}")
    return commands.flower_env(home)


def cmd_register(args: argparse.Namespace) -> int:
    pki = Pki(Path(args.pki).expanduser().resolve())
    env = _connect(args, pki)
    status = 0
    for gateway in _words(args.gateways) or pki.gateways():
        command = commands.register_command(pki.gateway_pub(gateway), args.connection)
        _show(command)
        if not args.dry_run:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            print(done.stdout.strip() or done.stderr.strip())
            status = status or (0 if '"success": true' in done.stdout else 1)
    return status


def cmd_run(args: argparse.Namespace) -> int:
    from simulation.app_source import stage_app

    pki = Pki(Path(args.pki).expanduser().resolve())
    env = _connect(args, pki)
    app = stage_app(Path(args.app_dir or tempfile.mkdtemp(prefix="botdefender-app-")))
    command = commands.run_command(app, {}, args.connection, stream=not args.no_stream)
    if args.run_config:
        command += ["--run-config", args.run_config]
    _show(command)
    if args.dry_run:
        return 0
    return subprocess.run(command, env=env).returncode


def cmd_testbed(args: argparse.Namespace) -> int:
    import logging

    from deploy.testbed import DeployBed

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    state = Path(args.state_dir).resolve()
    if args.action == "down":
        if not (state / "testbed.json").exists():
            print(f"no bed in {state}")
            return 0
        left = DeployBed.load(state).down()
        print("down: nothing left" if not left else f"down: still present: {', '.join(left)}")
        return 1 if left else 0
    bed = DeployBed(state_dir=state, data_dir=Path(args.data_dir) if args.data_dir else None,
                    use_namespaces=not args.no_namespaces).up()  # fmt: skip
    online = bed.wait_online(len(bed.gateways))
    where = "network namespaces" if bed.use_namespaces else f"loopback processes ({bed.fallback_reason})"
    print(f"SuperLink https://{bed.address} (TLS, node authentication), SuperNodes as {where}")
    for g in bed.gateways:
        print(f"  {g.name}: {g.namespace or 'loopback'} node {g.node_id} data {g.data_path}")
    print(f"{len(online)} of {len(bed.gateways)} online; FLWR_HOME={bed.operator_home} flwr run APP "
          f"{commands.CONNECTION}; `python -m deploy testbed down --state-dir {state}` stops it")  # fmt: skip
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.split("\n\n")[0])
    sub = main.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pki", help="make a CA, the SuperLink's certificate and one node key pair per gateway")
    p.add_argument("--out", required=True, help="a folder outside any repository (keys inside)")
    p.add_argument("--superlink-host", default="", help="comma-separated addresses/hostnames of the SuperLink")
    p.add_argument("--gateways", default="", help="comma-separated gateway names")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_pki)
    for name, func, help_text in (("superlink", cmd_superlink, "exec flower-superlink with TLS and node auth"),
                                  ("supernode", cmd_supernode, "exec flower-supernode for one gateway"),
                                  ("register", cmd_register, "flwr supernode register every gateway's key"),
                                  ("run", cmd_run, "flwr run the project app against the SuperLink")):  # fmt: skip
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--pki", required=True)
        p.add_argument("--flwr-home", help="default: $FLWR_HOME or ~/.flwr")
        p.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
        p.set_defaults(func=func)
        if name == "superlink":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8000, help="Flower's default")
            p.add_argument("--database", help="default: PKI/superlink/state.db (keeps registered nodes)")
            p.add_argument("--data-dir", help="BOTDEFENDER_DATA_DIR of the ServerApp")
        else:
            p.add_argument("--superlink", required=True, help="HOST:PORT")
        if name == "supernode":
            p.add_argument("--gateway", required=True)
            p.add_argument("--data-path", required=True)
            p.add_argument("--dataset", default="iot-23")
            p.add_argument("--runtime-port", type=int, default=9094, help="the SuperNode's local runtime API")
            p.add_argument("--labels", default="", help="evidence files or folders, ','-separated")
            p.add_argument("--unlabelled", choices=("drop", "benign"), help="default drop (the ClientApp's)")
            p.add_argument("--bundle-root", default="", help="where rolled-out bundles are installed")
            p.add_argument("--bundle-public-key", default="", help="the operator's pinned Ed25519 public key")
        if name in ("register", "run"):
            p.add_argument("--connection", default=commands.CONNECTION)
        if name == "register":
            p.add_argument("--gateways", default="", help="default: every gateway of the PKI")
        if name == "run":
            p.add_argument("--run-config", default="", help='"k=v ..." overrides (TOML values)')
            p.add_argument("--app-dir", help="where the app is staged (default: a new temporary folder)")
            p.add_argument("--no-stream", action="store_true")
    p = sub.add_parser("testbed", help="a SuperLink and three SuperNodes in network namespaces on this machine")
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--state-dir", default=str(Path(tempfile.gettempdir()) / "botdefender-deploy"))
    p.add_argument("--data-dir", help="default: $BOTDEFENDER_DATA_DIR")
    p.add_argument("--no-namespaces", action="store_true", help="loopback processes instead of namespaces")
    p.set_defaults(func=cmd_testbed)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (PkiError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
