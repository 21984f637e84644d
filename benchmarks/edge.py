"""Gateway benchmark (issue 5, point 4): PyTorch vs fp32 vs int8 .tflite on the held-out split, sizes, speed.

    python -m simulation                                    # a run to export (outputs/federated/<run>/final.pt)
    python benchmarks/edge.py --checkpoint outputs/federated/<run>/final.pt [--sparsity 0 0.5]

For each sparsity it exports a bundle (int8 dynamic-range by default), then on the run's own held-out split (the
rows the server evaluated on, re-derived from the run's settings; never seen in training):

* F1 and accuracy of the PyTorch model (after pruning, on ``pipeline.transform`` of the split), and of the fp32
  and int8 .tflite as served by ``python -m gateway serve`` (a subprocess on a CSV of the held-out records, its
  JSON-lines flow verdicts parsed), with the share of flows on which each gives the PyTorch verdict;
* the sizes of the fp32 and int8 halves of the bundle: the stored files (xz-compressed by default), the .tflite
  flatbuffers inside, and their constant tensors alone;
* one thread, in a separate process that imports only what the gateway imports (no torch): the default (int8)
  model's throughput at batch 1 and 256 (flows per second, encoded rows in,
  probabilities out; the fp32 model's at batch 256 beside it),
  the latency of one flow from its raw record to its verdict (parse, encode, infer; p50 and p99), and the verdict
  service end to end on the UNSW-NB15 testing CSV (read, encode, infer, write JSON lines to /dev/null); each
  figure is the median of ``--repeats`` runs;
* the installed size of a fresh virtualenv with ``pip install '.[gateway]'`` (and that it holds no torch).

Writes ``benchmarks/results/gateway/results.{json,md}`` and the README block between the gateway markers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from readme_block import replace_readme_block  # benchmarks/readme_block.py (this script's folder)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "gateway"
log = logging.getLogger("benchmarks.gateway")


def held_out(checkpoint: Path):
    """(encoded rows, labels, the test table) of the checkpoint's run: the split the server evaluated on."""
    from flows.run_split import load_split
    from gateway.export import load_checkpoint, run_data_settings

    _, test = load_split(run_data_settings(checkpoint))
    pipeline = load_checkpoint(checkpoint).pipeline
    return pipeline.transform(test.frame), test.frame["label"].to_numpy().astype(int), test


def write_held_out(test, path: Path) -> Path:
    """The held-out records as a partitioned UNSW-NB15 CSV (header row; floats written exactly), for the gateway."""
    from flows.readers.unsw_partitioned import COLUMNS

    if test.source != "unsw-nb15":
        raise SystemExit(f"error: the edge benchmark serves partitioned UNSW-NB15 runs; this run used {test.source}")
    frame = test.frame.copy()
    frame.insert(0, "id", np.arange(1, len(frame) + 1))
    frame[COLUMNS].to_csv(path, index=False)
    return path


def served(bundle_dir: Path, source: Path, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, attack verdicts, labels) of every flow, from ``python -m gateway serve`` on ``source``."""
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--bundle", str(bundle_dir), "--source",
                           str(source), "--variant", variant, "--host-sink", ""], cwd=REPO, capture_output=True,
                          text=True, check=True)  # fmt: skip
    flows = [json.loads(line) for line in done.stdout.splitlines()]
    return (np.array([f["score"] for f in flows]), np.array([f["verdict"] == "attack" for f in flows]),
            np.array([f["label"] for f in flows]))  # fmt: skip


def quality(probabilities: np.ndarray, labels: np.ndarray, threshold: float, predicted: np.ndarray | None = None
            ) -> dict:  # fmt: skip
    from sklearn.metrics import accuracy_score, f1_score

    predicted = (probabilities >= threshold).astype(int) if predicted is None else predicted.astype(int)
    return {"f1": float(f1_score(labels, predicted)), "accuracy": float(accuracy_score(labels, predicted))}


def timed(functions: dict, repeats: int) -> dict[str, float]:
    """Median seconds of ``repeats`` calls of each function, after one warm-up call each; the calls take turns
    (a, b, a, b, ...) so that a passing load on the machine does not favour one of them."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def speed(bundle, rows: np.ndarray, test_csv: Path, repeats: int) -> dict:
    """One-thread throughput at batch 1 and 256, single-flow latency, and the service end to end."""
    from gateway.encode import encode
    from gateway.engine import VerdictModel
    from gateway.serve import serve
    from gateway.sources import FlowSource

    model = VerdictModel(bundle, num_threads=1)
    big = rows[: 256 * 64]
    small = rows[:2000]
    fp32 = VerdictModel(bundle, "fp32", num_threads=1)
    batch_256 = timed({"int8": lambda: model.probabilities(big), "fp32": lambda: fp32.probabilities(big)}, repeats)
    batch_1 = timed({"int8": lambda: [model.probabilities(r[None]) for r in small]}, repeats)
    out = {"batch_256_flows_per_second": len(big) / batch_256["int8"],
           "fp32_batch_256_flows_per_second": len(big) / batch_256["fp32"],
           "batch_1_flows_per_second": len(small) / batch_1["int8"]}  # fmt: skip
    records = [r for _, r in zip(range(2000), FlowSource(test_csv)) if r is not None]
    latencies = []
    for _ in range(repeats):
        for record in records:
            start = time.perf_counter()
            encoded, _ = encode([record], bundle.pipeline, Counter())
            model.probabilities(encoded)
            latencies.append(time.perf_counter() - start)
    out["latency_ms_p50"] = 1000 * float(np.percentile(latencies, 50))
    out["latency_ms_p99"] = 1000 * float(np.percentile(latencies, 99))
    with open(os.devnull, "w") as sink:
        rates = [serve(bundle.path, test_csv, out=sink, host_sink=None)["flows_per_second"] for _ in range(repeats)]
    out["service_flows_per_second"] = statistics.median(rates)
    return out


def sizes(bundle) -> dict:
    """Per variant: the bundle's stored model files (xz by default: what is shipped and kept on the gateway), the
    .tflite flatbuffers inside them, and the constant tensors (weights and biases) of those flatbuffers."""
    from gateway.bundle import compression_of

    models = bundle.manifest["models"].values()
    out: dict = {"files": {m["file"]: m["bytes"] for m in models}}
    for variant in ("fp32", "int8"):
        mine = [m for m in models if m["variant"] == variant]
        contents = [bundle.model_content(variant, m["batch_size"]) for m in mine]
        out[f"{variant}_bytes"] = sum((bundle.path / m["file"]).stat().st_size for m in mine)
        out[f"{variant}_tflite_bytes"] = sum(len(c) for c in contents)
        out[f"{variant}_constant_bytes"] = sum(constant_bytes(c) for c in contents)
    out["compression"] = sorted({compression_of(m) for m in models})
    for kind in ("", "_tflite", "_constant"):
        out[f"ratio{kind}"] = out[f"fp32{kind}_bytes"] / out[f"int8{kind}_bytes"]
    return out


def constant_bytes(model: bytes) -> int:
    """Bytes of the model's constant tensors (weights, biases): the rest of a .tflite is the graph itself."""
    from ai_edge_litert.tools import flatbuffer_utils

    flat = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    used = {t.buffer for graph in flat.subgraphs for t in graph.tensors}
    return sum(len(flat.buffers[b].data) for b in used if flat.buffers[b].data is not None)


def gateway_env_size() -> dict:
    """Install '.[gateway]' into a fresh virtualenv; its size and whether torch came along."""
    with tempfile.TemporaryDirectory(prefix="bdgw") as folder:
        env = Path(folder) / "env"
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        start = time.perf_counter()
        subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{REPO}[gateway]"],
                       check=True, capture_output=True)  # fmt: skip
        seconds = time.perf_counter() - start
        listed = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "list", "--format=json"], check=True,
                                capture_output=True, text=True).stdout  # fmt: skip
        packages = sorted(p["name"] for p in json.loads(listed))
        total = sum(f.stat().st_size for f in env.rglob("*") if f.is_file() and not f.is_symlink())
    return {"megabytes": total / 2**20, "install_seconds": seconds, "packages": packages,
            "has_torch": any(p.lower() == "torch" for p in packages)}  # fmt: skip


def bench_sparsity(checkpoint: Path, sparsity: float, rows, labels, test_csv: Path, repeats: int,
                   held_out_csv: Path) -> dict:  # fmt: skip
    import torch

    from gateway.bundle import load_bundle
    from gateway.export import ExportOptions, export_bundle, prune_model
    from models.checkpoint import load_checkpoint

    bundle_dir = RESULTS / f"bundle_sparsity_{sparsity:g}"
    manifest = export_bundle(checkpoint, bundle_dir, ExportOptions(sparsity=sparsity))
    bundle = load_bundle(bundle_dir)
    model = load_checkpoint(checkpoint).model()
    prune_model(model, sparsity)
    with torch.no_grad():
        reference = torch.sigmoid(model(torch.from_numpy(rows))).numpy()
    threshold = bundle.threshold
    result = {"sparsity": manifest["pruning"]["achieved_sparsity"], "model_version": bundle.model_version,
              "pytorch": quality(reference, labels, threshold)}  # fmt: skip
    for variant in ("fp32", "int8"):  # through `python -m gateway serve` on the held-out records, as a gateway
        scores, attack, served_labels = served(bundle_dir, held_out_csv, variant)
        if len(scores) != len(labels) or not np.array_equal(served_labels, labels):
            raise RuntimeError(f"gateway serve scored {len(scores)} of the {len(labels)} held-out records")
        result[variant] = {**quality(scores, labels, threshold, attack),
                           "agreement": float(np.mean(attack == (reference >= threshold))),
                           "max_abs_diff": float(np.abs(scores - reference).max())}  # fmt: skip
    result["sizes"] = sizes(bundle)
    result["speed"] = speed_in_gateway_process(bundle_dir, rows, test_csv, repeats)
    return result


def speed_in_gateway_process(bundle_dir: Path, rows: np.ndarray, test_csv: Path, repeats: int) -> dict:
    """:func:`speed` in a fresh process that imports what the gateway imports (numpy, LiteRT), not torch: the
    export's torch threads and memory stay out of the timing, as they are out of a real gateway."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "rows.npy", rows)
        done = subprocess.run([sys.executable, __file__, "--speed-only", str(bundle_dir), str(Path(tmp) / "rows.npy"),
                               "--test-csv", str(test_csv), "--repeats", str(repeats)],
                              capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict) -> str:
    lines = [f"Checkpoint `{results['checkpoint']}`; held-out split of its run: {results['n_test']} flows. One "
             f"thread; medians of {results['repeats']} runs.", "",
             "| sparsity | model | F1 | accuracy | agreement with PyTorch |", "|---|---|---|---|---|"]  # fmt: skip
    for r in results["runs"]:
        for name in ("pytorch", "fp32", "int8"):
            q = r[name]
            agreement = f"{100 * q['agreement']:.2f}%" if "agreement" in q else "-"
            lines.append(f"| {r['sparsity']:.2f} | {name} | {100 * q['f1']:.2f} | {100 * q['accuracy']:.2f} | "
                         f"{agreement} |")  # fmt: skip
    lines += ["", "| sparsity | fp32 files | int8 files | ratio | ratio of the .tflite inside | ratio of the "
              "constants | batch 256 flows/s (fp32) | batch 1 flows/s | one flow p50 / p99 | service flows/s |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["runs"]:
        s, v = r["sizes"], r["speed"]
        lines.append(f"| {r['sparsity']:.2f} | {s['fp32_bytes'] / 1024:.0f} KiB | {s['int8_bytes'] / 1024:.0f} KiB | "
                     f"{s['ratio']:.2f}x | {s['ratio_tflite']:.2f}x ({s['fp32_tflite_bytes'] / 1024:.0f} / "
                     f"{s['int8_tflite_bytes'] / 1024:.0f} KiB) | {s['ratio_constant']:.2f}x | "
                     f"{v['batch_256_flows_per_second']:,.0f} ({v['fp32_batch_256_flows_per_second']:,.0f}) | "
                     f"{v['batch_1_flows_per_second']:,.0f} | {v['latency_ms_p50']:.3f} / {v['latency_ms_p99']:.3f} ms "
                     f"| {v['service_flows_per_second']:,.0f} |")  # fmt: skip
    lines += ["", f"Model files stored as: {', '.join(results['runs'][0]['sizes']['compression'])}."]
    env = results.get("gateway_env")
    if env:
        lines += ["", f"Fresh `pip install '.[gateway]'` virtualenv: {env['megabytes']:.0f} MB, installed in "
                  f"{env['install_seconds']:.0f} s, torch {'present' if env['has_torch'] else 'absent'} "
                  f"({', '.join(env['packages'])})."]  # fmt: skip
    lines += ["", "Targets of issue 5 (sparsity 0, the default export):", *targets(results)]
    return "\n".join(lines) + "\n"


def targets(results: dict) -> list[str]:
    """The issue's targets, each with the figure that decides it, checked on the default (unpruned) export."""
    run = next((r for r in results["runs"] if r["sparsity"] == 0), None)
    if run is None:
        return ["- not checked: no run at sparsity 0"]
    s, v, env = run["sizes"], run["speed"], results.get("gateway_env")
    f1_gap = 100 * (run["pytorch"]["f1"] - run["int8"]["f1"])
    checks = [
        ("int8 F1 within 0.5 point of PyTorch", abs(f1_gap) <= 0.5,
         f"{100 * run['int8']['f1']:.2f} vs {100 * run['pytorch']['f1']:.2f}"),
        ("at least 99.5% prediction agreement", run["int8"]["agreement"] >= 0.995,
         f"{100 * run['int8']['agreement']:.2f}%"),
        ("int8 bundle at least 3x smaller than the fp32 one", s["ratio"] >= 3,
         f"{s['ratio']:.2f}x as stored ({', '.join(s['compression'])}); the .tflite inside: {s['ratio_tflite']:.2f}x"),
        ("at least 50,000 flows/s at batch 256 on one thread", v["batch_256_flows_per_second"] >= 50_000,
         f"{v['batch_256_flows_per_second']:,.0f}"),
        ("single-flow p99 latency at most 1 ms", v["latency_ms_p99"] <= 1.0, f"{v['latency_ms_p99']:.3f} ms"),
    ]  # fmt: skip
    if env:
        checks.append(("a '.[gateway]' environment without torch", not env["has_torch"], f"{env['megabytes']:.0f} MB"))
    return [f"- {name}: **{'met' if ok else 'missed'}** ({figure})" for name, ok, figure in checks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a run's final.pt (its metrics.json beside)")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--test-csv", type=Path, help="flows for the service run (default: UNSW-NB15 testing set)")
    parser.add_argument("--skip-env", action="store_true", help="skip the fresh '.[gateway]' virtualenv")
    parser.add_argument("--speed-only", nargs=2, metavar=("BUNDLE", "ROWS_NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.speed_only:  # the child of speed_in_gateway_process: print the speed figures as one JSON line
        from gateway.bundle import load_bundle

        bundle, rows = load_bundle(Path(args.speed_only[0])), np.load(args.speed_only[1])
        figures = speed(bundle, rows, args.test_csv, args.repeats)
        print(json.dumps({**figures, "torch_loaded": "torch" in sys.modules}))
        return
    if args.checkpoint is None:
        parser.error("--checkpoint is required")
    if not (args.checkpoint.parent / "metrics.json").is_file():
        raise SystemExit(f"error: {args.checkpoint.parent / 'metrics.json'} not found: pass a run's checkpoint")
    from flows.loader import resolve_data_dir

    test_csv = args.test_csv or resolve_data_dir(None) / "unsw-nb15" / "UNSW_NB15_testing-set.csv"
    rows, labels, test = held_out(args.checkpoint)
    RESULTS.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.TemporaryDirectory(prefix="bdedge")
    held_out_csv = write_held_out(test, Path(scratch.name) / "held_out.csv")
    results = {"checkpoint": f"{args.checkpoint.parent.name}/{args.checkpoint.name}", "n_test": int(len(rows)),
               "repeats": args.repeats, "runs": []}  # fmt: skip
    for sparsity in args.sparsity:
        log.info("sparsity %.2f", sparsity)
        results["runs"].append(bench_sparsity(args.checkpoint, sparsity, rows, labels, test_csv, args.repeats,
                                              held_out_csv))  # fmt: skip
    if not args.skip_env:
        log.info("fresh '.[gateway]' virtualenv")
        results["gateway_env"] = gateway_env_size()
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1))
    block = report(results)
    (RESULTS / "results.md").write_text(block)
    print(block)
    replace_readme_block("gateway-benchmark", block)


if __name__ == "__main__":
    main()
