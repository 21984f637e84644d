"""SDN isolation benchmark (issue 6, point 6) on the Open vSwitch test bed (root; Debian openvswitch-switch).

    sudo python benchmarks/isolation.py [--blocks 100] [--bulk 1000]

* block call -> rule confirmed: the API call's round trip (it returns after the switch's barrier reply);
* block call -> first dropped packet: h1 sends a numbered UDP datagram to h2 every millisecond; after the call
  starts at T0, the first datagram sent at or after T0 that h2 never receives marks the cut (its send time - T0;
  resolution about 1 ms); the block is then lifted and the stream checked to flow again;
* time to install ``--bulk`` blocks one call after another (distinct addresses of an unused network);
* controller restart -> blocks re-installed: from starting the controller process to every drop rule back on the
  switch (the bulk blocks, with the switch's flows wiped while it was down).

p50 and p99 over ``--blocks`` blocks. Prints the table and writes ``benchmarks/results/isolation/results.{json,md}``
and the README block between the isolation-benchmark markers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from readme_block import replace_readme_block  # benchmarks/readme_block.py (this script's folder)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # devtools/ (test and benchmark helpers, not installed)
RESULTS = REPO / "benchmarks" / "results" / "isolation"

SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
target, seconds = sys.argv[1], float(sys.argv[2])
end, n, log = time.time() + seconds, 0, []
while time.time() < end:
    log.append(f"{n} {time.time():.6f}")
    s.sendto(str(n).encode(), (target, 9999))
    n += 1
    time.sleep(0.001)
print("\\n".join(log))
"""
RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
s.settimeout(float(sys.argv[2]))
seen = []
try:
    while True:
        seen.append(s.recvfrom(64)[0].decode())
except socket.timeout:
    pass
print("\\n".join(seen))
"""


def cut_latency(bed, controller, call, seconds: float = 0.6) -> tuple[float, float]:
    """(block call round trip, block call -> send time of the first datagram that never arrived), in ms."""
    h1, h2, _ = bed.hosts
    receiver = subprocess.Popen(["ip", "netns", "exec", h2.namespace, sys.executable, "-c", RECEIVER, h2.ip, "1.0"],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(0.15)
    sender = subprocess.Popen(["ip", "netns", "exec", h1.namespace, sys.executable, "-c", SENDER, h2.ip,
                               str(seconds)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(seconds / 3)
    t0 = time.time()
    code, answer = call(controller.url + "/blocks", "POST", {"ip": h1.ip, "reason": "benchmark"})
    confirmed = 1000 * (time.time() - t0)
    sent_log, _ = sender.communicate(timeout=10)
    received, _ = receiver.communicate(timeout=10)
    call(controller.url + f"/blocks/{h1.ip}", "DELETE")
    if code != 200:
        raise RuntimeError(f"block refused: {answer}")
    got = {int(line) for line in received.split()}
    sent = [(int(n), float(t)) for n, t in (line.split() for line in sent_log.splitlines() if line)]
    lost = [t for n, t in sent if n not in got and t >= t0 - 0.05]
    if not lost:
        raise RuntimeError("no datagram was dropped after the block")
    return confirmed, 1000 * (lost[0] - t0)


def main() -> None:
    from devtools.controller_process import ControllerProcess, call
    from sdn.testbed import NetworkBed, missing_requirements

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--bulk", type=int, default=1000)
    args = parser.parse_args()
    problems = missing_requirements()
    if problems:
        raise SystemExit("error: " + "; ".join(problems))
    with tempfile.TemporaryDirectory(prefix="bdiso") as folder:
        controller = ControllerProcess(Path(folder), allowlist=[])
        text = controller.config.read_text()
        controller.config.write_text(text + "max_per_minute = 1000000\nmax_blocked_share = 1.0\n")
        controller.start()
        bed = NetworkBed(prefix="bdb", subnet="10.79.0", controller=f"tcp:127.0.0.1:{controller.of_port}",
                         state_dir=Path(folder) / "ovs")  # fmt: skip
        try:
            bed.up()
            controller.wait_for_switch()
            confirmed, dropped = [], []
            for i in range(args.blocks):
                c, d = cut_latency(bed, controller, call)
                confirmed.append(c)
                dropped.append(d)
                if (i + 1) % 20 == 0:
                    print(f"{i + 1}/{args.blocks} blocks: confirmed p50 {np.percentile(confirmed, 50):.1f} ms, "
                          f"first drop p50 {np.percentile(dropped, 50):.1f} ms", flush=True)  # fmt: skip
            start = time.perf_counter()
            for i in range(args.bulk):
                code, answer = call(controller.url + "/blocks", "POST",
                                    {"ip": f"10.200.{i // 250}.{i % 250 + 1}", "reason": "bulk"})  # fmt: skip
                if code != 200:
                    raise RuntimeError(f"bulk block {i} refused: {answer}")
            bulk_seconds = time.perf_counter() - start
            controller.stop()
            bed.ofctl("del-flows", bed.bridge)
            start = time.perf_counter()
            controller.start()
            expected = 4 * args.bulk
            while time.perf_counter() - start < 60:
                flows = bed.ofctl("dump-flows", bed.bridge).count("priority=60000")
                if flows >= expected:
                    break
                time.sleep(0.05)
            restart_seconds = time.perf_counter() - start
        finally:
            controller.stop()
            bed.down()
    results = {"blocks": args.blocks, "bulk": args.bulk,
               "confirmed_ms": {"p50": float(np.percentile(confirmed, 50)), "p99": float(np.percentile(confirmed, 99))},
               "first_drop_ms": {"p50": float(np.percentile(dropped, 50)), "p99": float(np.percentile(dropped, 99))},
               "bulk_seconds": bulk_seconds, "restart_seconds": restart_seconds,
               "restart_flows": flows, "restart_expected": expected}  # fmt: skip
    block = (f"{args.blocks} blocks of one test-bed host (UDP stream every 1 ms), then {args.bulk} blocks in a row:\n\n"
             "| measure | p50 | p99 |\n|---|---|---|\n"
             f"| block call -> rules confirmed (barrier) | {results['confirmed_ms']['p50']:.1f} ms | "
             f"{results['confirmed_ms']['p99']:.1f} ms |\n"
             f"| block call -> first dropped packet | {results['first_drop_ms']['p50']:.1f} ms | "
             f"{results['first_drop_ms']['p99']:.1f} ms |\n\n"
             f"{args.bulk} blocks installed (one API call each, barrier-confirmed) in {bulk_seconds:.2f} s; controller "
             f"restart -> {flows} of {expected} drop rules back on the wiped switch in {restart_seconds:.2f} s.")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "results.md").write_text(block + "\n")
    print(block)
    replace_readme_block("isolation-benchmark", block)


if __name__ == "__main__":
    main()
