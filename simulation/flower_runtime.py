"""Run the project's Flower app with ``flwr run`` on a private local SuperLink, and own what it starts.

``LocalFederation`` gives each harness its own FLWR_HOME, a short RAY_TMPDIR (Ray's socket paths must stay under
107 bytes), an uncommon SuperLink port, no per-run dependency installation and no telemetry. Leaving the
``with`` block (normally, on an error or on Ctrl-C) stops the SuperLink it started and every process of its and
its children's process groups (Ray included), by pid: nothing is killed by name. See docs/flower-1.42-notes.md.
It runs the app from a copy of its packages (:mod:`simulation.app_source`), with this interpreter's folder first
on the PATH of Flower's child processes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from simulation.app_source import stage_app

log = logging.getLogger(__name__)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CONFIG_TOML = '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'


def free_port(start: int = 47000, stop: int = 48100) -> int:
    """A free loopback port in an uncommon range (not Flower's 9091-9095 or 3909x defaults)."""
    for port in range(start + os.getpid() % 1000, stop):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{stop}")


def processes() -> list[tuple[int, int, int, list[str]]]:
    """(pid, ppid, pgid, argv) of every process, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found.append((int(entry.name), int(fields[1]), int(fields[2]), [a.decode(errors="replace") for a in argv if a]))
    return found


def alive(pid: int) -> bool:
    """True for a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def superlink_pids(log_file: str) -> list[int]:
    """SuperLinks whose ``--log-file`` argument is exactly ``log_file`` (ours, and only ours)."""
    found = []
    for pid, _, _, argv in processes():
        if "--log-file" in argv:
            i = argv.index("--log-file")
            if i + 1 < len(argv) and argv[i + 1] == log_file:
                found.append(pid)
    return found


def stop_superlink(log_file: str, grace: float = 10.0) -> list[int]:
    """SIGTERM the SuperLink of ``log_file``, then SIGKILL what is left of its process groups; returns survivors."""
    roots = superlink_pids(log_file)
    if not roots:
        return []
    table = processes()
    groups = {pgid for pid, _, pgid, _ in table if pid in roots}
    groups |= {pgid for _, ppid, pgid, _ in table if ppid in roots}
    for pid in roots:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in roots):
        time.sleep(0.2)
    for pid in [pid for pid, _, pgid, _ in processes() if pgid in groups and alive(pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(1.0)
    return [pid for pid, _, pgid, _ in processes() if (pgid in groups or pid in roots) and alive(pid)]


# Under /tmp, Ray's longest socket path (/tmp/bdrayXXXXXXXX/ray/session_<time>_<pid>/sockets/plasma_store) has
# 84 bytes; Ray allows 107. So the parent folder may have at most 24 bytes (a 7-digit pid included).
MAX_RAY_TMP_PARENT = 24


def check_ray_tmp_parent(parent: str | Path) -> None:
    """Refuse a Ray temporary folder whose socket paths would exceed the 107-byte limit (the run would fail)."""
    text = str(Path(parent).expanduser().resolve())
    if len(text.encode()) > MAX_RAY_TMP_PARENT:
        raise ValueError(f"ray_tmpdir {text!r} is {len(text.encode())} bytes long; Ray's socket paths below it "
                         f"would exceed 107 bytes: use a folder of at most {MAX_RAY_TMP_PARENT} bytes, such as /tmp")  # fmt: skip


def format_run_config(values: dict) -> str:
    """``--run-config`` / ``--node-config`` text: TOML values, strings quoted (keys with dots stay dotted); a
    string holding a single quote cannot be quoted so and is refused."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            if "'" in str(value):
                raise ValueError(f"config {key}: a value may not contain a single quote: {str(value)!r}")
            text = f"'{value}'"
        parts.append(f"{key}={text}")
    return " ".join(parts)


def stream_lines(command: list[str], env: dict, cwd: Path, timeout: float,
                 on_line: Callable[[str], None] | None = None) -> tuple[list[str], float]:  # fmt: skip
    """Run ``command`` to its end (killed after ``timeout`` s), each output line (ANSI colours removed) to
    ``on_line`` as it arrives; returns (lines, seconds)."""
    started = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as process:  # fmt: skip
        timer = threading.Timer(timeout, process.kill)  # our own child, by handle
        timer.start()
        try:
            for line in process.stdout:
                clean = ANSI.sub("", line.rstrip("\n"))
                lines.append(clean)
                if on_line is not None:
                    on_line(clean)
        except BaseException:  # Ctrl-C, SIGTERM, an error in on_line: do not wait for the command to finish
            process.kill()
            raise
        finally:
            timer.cancel()
    return lines, time.perf_counter() - started


@dataclass
class RunResult:
    status: str
    seconds: float
    log: str


class LocalFederation:
    """A private local SuperLink for ``flwr run`` (simulation runtime, Ray backend); a context manager."""

    def __init__(self, home: Path, env_extra: dict | None = None, ray_tmp_parent: str | Path = "/tmp") -> None:
        self.home = Path(home)
        self.env_extra = dict(env_extra or {})
        self.ray_tmp_parent = Path(ray_tmp_parent)

    def __enter__(self) -> "LocalFederation":
        self.home.mkdir(parents=True, exist_ok=True)
        # a SuperLink state left by an interrupted earlier run in this folder would make `flwr ls` report that run
        shutil.rmtree(self.home / "local-superlink", ignore_errors=True)
        (self.home / "config.toml").write_text(CONFIG_TOML)
        check_ray_tmp_parent(self.ray_tmp_parent)
        self.ray_tmp_parent.mkdir(parents=True, exist_ok=True)
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="bdray", dir=self.ray_tmp_parent))
        self.log_file = str(self.home / "local-superlink" / "superlink.log")
        self.env = dict(os.environ, FLWR_HOME=str(self.home), RAY_TMPDIR=str(self.ray_tmp),
                        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", FLWR_TELEMETRY_ENABLED="0",
                        FLWR_DISABLE_UPDATE_CHECK="1", RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0",
                        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()), **self.env_extra)  # fmt: skip
        # Flower's commands start their children (flower-superlink, flwr-serverapp, ...) from PATH: put the folder
        # of this interpreter first, so a venv's python works without activating the venv
        bin_dir = str(Path(sys.executable).parent)
        self.env["PATH"] = os.pathsep.join([bin_dir, *[p for p in self.env.get("PATH", "").split(os.pathsep) if p]])
        flwr = Path(bin_dir) / "flwr"
        self.flwr = str(flwr) if flwr.exists() else "flwr"
        self.app = stage_app(self.home / "app")
        return self

    def run(self, run_config: dict, *, num_supernodes: int | None, client_cpus: float | None, timeout: float,
            on_line: Callable[[str], None] | None = None) -> RunResult:
        """``flwr run`` the project app to the end and read its status (``--stream`` exits 0 on failures).

        ``run_config`` overrides the app's defaults (pyproject.toml); ``num_supernodes``/``client_cpus`` None leave
        Flower's own federation defaults. Every output line goes to ``on_line`` as it arrives (ANSI colours
        removed).
        """
        federation = []
        if num_supernodes is not None:
            federation.append(f"num-supernodes={int(num_supernodes)}")
        if client_cpus is not None:
            cpus = int(client_cpus) if float(client_cpus).is_integer() else client_cpus  # flwr wants an int here
            federation.append(f"client-resources-num-cpus={cpus}")
        command = [self.flwr, "run", str(self.app), "local", "--stream"]
        if federation:
            command += ["--federation-config", " ".join(federation)]
        if run_config:
            command += ["--run-config", format_run_config(run_config)]
        lines, seconds = stream_lines(command, self.env, self.app, timeout, on_line)
        listing = subprocess.run([self.flwr, "ls", "local", "--format", "json"], cwd=self.app, env=self.env,
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        try:
            status = json.loads(listing.stdout)["runs"][-1]["status"]
        except (ValueError, KeyError, IndexError):
            status = f"unknown (flwr ls: {listing.stdout.strip()[:200]} {listing.stderr.strip()[:200]})"
        if seconds >= timeout:
            status = f"timed out after {timeout:.0f} s ({status})"
        return RunResult(status=status, seconds=seconds, log="\n".join(lines) + "\n")

    def __exit__(self, *exc) -> None:
        self.left = stop_superlink(self.log_file)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        if self.left:
            log.error("processes still alive after stopping the SuperLink: %s", self.left)
