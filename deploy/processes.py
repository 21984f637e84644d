"""Background Flower processes with pid files, and stopping exactly those (by pid, never by name).

A process is started in a session of its own (its pid is its process group id), its pid goes to ``NAME.pid`` and
its output to ``NAME.log``. Flower's SuperLink and SuperNode start a ``flower-superexec`` child with
``--parent-pid PID``; the SuperLink's runs in a session of its own. Stopping a pid file's process therefore
signals its process group and every process whose argv says ``--parent-pid <that pid>`` (and their groups).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from simulation.flower_runtime import alive
from simulation.flower_runtime import processes as proc_table

__all__ = ["alive", "proc_table", "start", "stop", "stop_pidfile", "kill_now", "read_pid", "family"]


def start(command: list[str], name: str, state_dir: Path, env: dict, cwd: Path | None = None) -> int:
    """Start ``command`` in its own session; ``state_dir/NAME.pid`` gets its pid, ``NAME.log`` its output."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / f"{name}.log", "ab") as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    (state_dir / f"{name}.pid").write_text(f"{process.pid}\n")
    return process.pid


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def family(pid: int) -> set[int]:
    """``pid``, the members of its process group, and the processes started with ``--parent-pid`` of any of them
    (with their groups), found repeatedly until nothing new turns up."""
    table = proc_table()
    found, groups = {pid}, {pid}
    changed = True
    while changed:
        changed = False
        for p, ppid, pgid, argv in table:
            tagged = "--parent-pid" in argv and argv.index("--parent-pid") + 1 < len(argv) and \
                argv[argv.index("--parent-pid") + 1] in {str(x) for x in found}  # fmt: skip
            if p not in found and (pgid in groups or ppid in found or tagged):
                found.add(p)
                groups.add(pgid)
                changed = True
    return {p for p in found if alive(p)}


def stop(pid: int, grace: float = 10.0, sig: int = signal.SIGTERM) -> list[int]:
    """Signal ``pid`` and its family (:func:`family`) with ``sig``, SIGKILL what is left after ``grace`` s;
    returns the pids still alive afterwards (should be none)."""
    members = family(pid)
    for p in sorted(members):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in members):
        time.sleep(0.1)
    members |= family(pid) if alive(pid) else set()
    for p in [p for p in members if alive(p)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.3)
    return [p for p in members if alive(p)]


def stop_pidfile(path: Path, grace: float = 10.0) -> list[int]:
    """Stop the process of a pid file and its family; the pid file is removed."""
    pid = read_pid(path)
    left = stop(pid, grace) if pid is not None and alive(pid) else []
    path.unlink(missing_ok=True)
    return left


def kill_now(path: Path) -> list[int]:
    """SIGKILL a pid file's process and its family at once (a crash, not a shutdown); the pid file stays."""
    pid = read_pid(path)
    return stop(pid, grace=2.0, sig=signal.SIGKILL) if pid is not None else []
