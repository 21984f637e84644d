"""A bundle served on a raw UNSW-NB15 capture (with addresses) through ``python -m gateway serve``.

    python benchmarks/raw_capture.py --bundle bundles/v1 [--source FILE]

Runs the gateway on DATA_DIR/unsw-nb15/raw/UNSW-NB15_1.first20000.csv (default) and prints per-flow precision and
recall against the file's labels, overall and on the records that are NOT among the 82,332-record partition's
records, and the hosts it isolated (UNSW-NB15's attackers are 175.45.176.0/24).

The partition was drawn from the raw files without identifiers, so the overlap is found by feature vectors: a raw
record counts as "in the partition" when some partitioned record has the same values of every feature both
formats share (all partitioned features but ``rate``, which raw records derive). Equal vectors can be different
flows, so this over-counts the overlap: the "not in the partition" figures are on records certainly not there.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = "unsw-nb15/raw/UNSW-NB15_1.first20000.csv"
ATTACKERS = ipaddress.ip_network("175.45.176.0/24")


def serve(bundle: Path, source: Path, folder: Path) -> tuple[list[dict], list[dict], str]:
    """(flow verdicts, host verdicts, the summary printed) of ``python -m gateway serve`` on ``source``."""
    flows, hosts = folder / "flows.jsonl", folder / "hosts.jsonl"
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--bundle", str(bundle), "--source", str(source),
                           "--out", str(flows), "--host-sink", f"file:{hosts}"], cwd=REPO, capture_output=True,
                          text=True, timeout=1800)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"gateway serve failed ({done.returncode}): {done.stderr[-2000:]}")
    read = [json.loads(line) for line in flows.read_text().splitlines()]
    verdicts = [json.loads(line) for line in hosts.read_text().splitlines()] if hosts.exists() else []
    return read, verdicts, done.stderr


def in_partition(raw, partition) -> np.ndarray:
    """Mask of raw records whose shared-feature vector equals some partitioned record's."""
    features = [c for c in partition.features if c != "rate"]
    known = set(partition.frame[features].itertuples(index=False, name=None))
    return np.fromiter((row in known for row in raw.frame[features].itertuples(index=False, name=None)), bool,
                       len(raw))  # fmt: skip


def precision_recall(predicted: np.ndarray, labels: np.ndarray) -> dict:
    tp = int(np.sum(predicted & (labels == 1)))
    fp = int(np.sum(predicted & (labels == 0)))
    fn = int(np.sum(~predicted & (labels == 1)))
    benign = int(np.sum(labels == 0))
    return {"flows": int(len(labels)), "attacks": int(labels.sum()), "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "false_positive_rate": fp / benign if benign else None}  # fmt: skip


def evaluate(bundle: Path, source: Path, data_dir: Path) -> dict:
    from flows.loader import load_dataset, load_file

    raw = load_file("unsw-nb15-raw", source)
    with tempfile.TemporaryDirectory() as tmp:
        flows, hosts, summary = serve(bundle, source, Path(tmp))
    labels = raw.frame["label"].to_numpy()
    if len(flows) != len(raw) or [f["label"] for f in flows] != labels.tolist():
        raise RuntimeError(f"the gateway scored {len(flows)} flows, the reader read {len(raw)} records: "
                           "cannot pair them")  # fmt: skip
    predicted = np.array([f["verdict"] == "attack" for f in flows])
    seen = in_partition(raw, load_dataset("unsw-nb15", data_dir))
    isolated = sorted({h["host"] for h in hosts if h["action"] == "isolate"})
    released = sorted({h["host"] for h in hosts if h["action"] == "release"})
    return {
        "source": source.name, "bundle": str(bundle), "all": precision_recall(predicted, labels),
        "not_in_partition": precision_recall(predicted[~seen], labels[~seen]),
        "in_partition_bound": int(seen.sum()),
        "isolated": isolated, "released": released,
        "isolated_attackers": [h for h in isolated if ipaddress.ip_address(h) in ATTACKERS],
        "isolated_others": [h for h in isolated if ipaddress.ip_address(h) not in ATTACKERS],
        "gateway_summary": [line for line in summary.splitlines() if not line.startswith("summary: ")],
    }  # fmt: skip


def report(result: dict) -> str:
    def pr(part: dict) -> str:
        def pct(v):
            return "n/a" if v is None else f"{100 * v:.2f}%"

        return (f"precision {pct(part['precision'])}, recall {pct(part['recall'])} on {part['flows']} flows "
                f"({part['attacks']} attacks; tp {part['tp']}, fp {part['fp']}, fn {part['fn']}; false positives on "
                f"{pct(part['false_positive_rate'])} of the benign flows)")  # fmt: skip

    return "\n".join([
        f"{result['source']} through gateway serve, bundle {result['bundle']}:",
        f"- all records: {pr(result['all'])}",
        f"- records not in the partition ({result['in_partition_bound']} raw records match a partitioned record's "
        f"feature vector and are left out): {pr(result['not_in_partition'])}",
        f"- hosts isolated: {len(result['isolated'])}: {len(result['isolated_attackers'])} in {ATTACKERS} "
        f"({', '.join(result['isolated_attackers']) or 'none'}), "
        f"others: {', '.join(result['isolated_others']) or 'none'}"
        f"; released: {', '.join(result['released']) or 'none'}",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--source", type=Path, help=f"default: DATA_DIR/{DEFAULT_SOURCE}")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    from flows.loader import resolve_data_dir

    data_dir = resolve_data_dir(None)
    result = evaluate(args.bundle, args.source or data_dir / DEFAULT_SOURCE, data_dir)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
