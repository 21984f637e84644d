"""Watch a command's whole process tree: every process it ever started and the peak memory of the tree.

Used by the harness benchmark (peak memory of the command, the SuperLink, the simulation runtime, Ray's
daemons and workers together) and by the tests that prove a run leaves no process behind.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class TreeWatcher:
    """Samples ``pid`` and its descendants; remembers each one (pid + start time) and the peak summed memory."""

    pid: int
    memory: bool = False
    seen: dict[tuple[int, float], str] = field(default_factory=dict)
    peak_pss: int = 0
    peak_rss: int = 0

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        pss = rss = 0
        for proc in members:
            try:
                self.seen.setdefault((proc.pid, proc.create_time()), " ".join(proc.cmdline())[:200])
                if self.memory:
                    info = proc.memory_full_info()
                    pss += getattr(info, "pss", info.rss)
                    rss += info.rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    def survivors(self) -> list[str]:
        """Processes seen in the tree that are still running (same pid and start time, not a zombie)."""
        left = []
        for (pid, started), argv in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid}: {argv}")
            except psutil.NoSuchProcess:
                continue
        return left


@dataclass
class WatchedRun:
    returncode: int
    seconds: float
    output: str
    watcher: TreeWatcher


def run_watched(command: Sequence[str], *, cwd: Path, log_file: Path, timeout: float, env: dict | None = None,
                memory: bool = False, interval: float = 0.5,
                on_poll: Callable[[subprocess.Popen, str], None] | None = None) -> WatchedRun:  # fmt: skip
    """Run ``command`` (its own process group, output to ``log_file``) while sampling its tree.

    ``on_poll(process, output_so_far)`` runs at every sample (to send a signal, say). On timeout the command
    gets SIGTERM, then SIGKILL after 60 s; it is never left running.
    """
    started = time.perf_counter()
    with open(log_file, "w") as sink:
        process = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        watcher = TreeWatcher(process.pid, memory=memory)
        try:
            while process.poll() is None:
                watcher.sample()
                if on_poll is not None:
                    on_poll(process, log_file.read_text(errors="replace"))
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"{command[:4]} still running after {timeout:.0f} s")
                time.sleep(interval)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    return WatchedRun(process.returncode, time.perf_counter() - started, log_file.read_text(errors="replace"),
                      watcher)  # fmt: skip
