"""Federated harness benchmark (issue 3, point 8): time and memory per round at scale, quality against central.

    python benchmarks/federated_harness.py                          # both parts (about an hour on 2 cores)
    python benchmarks/federated_harness.py --part scale --clients 10 50 100 --rounds 3
    python benchmarks/federated_harness.py --part quality --alphas 0.1 0.5 1.0 --seeds 0 1 2

* scale: ``python -m simulation`` with N clients and one local epoch per round; wall time per round (median of
  the rounds, from the ServerApp's clock), its parts (the clients' summed training time divided by the Ray
  workers, the central evaluation, the rest = Flower/Ray messaging, (de)serialisation and client data preparation)
  and the peak memory of the whole process tree (PSS summed over the command and every descendant: SuperLink,
  simulation runtime, Ray daemons and workers), sampled every 0.5 s with psutil.
* quality: the default federated run (10 clients, FedAvg) for each Dirichlet alpha, beside the centralized
  CNN-LSTM trained on the union of the clients' rows of the same split (:mod:`simulation.reference`); medians
  over seeds (a seed fixes split, partition, initialisation and sampling together).

Writes ``benchmarks/results/federated/{scale,quality}.json`` and ``results.md`` and replaces the block between
the ``federated-benchmark`` markers in README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devtools/ (test and benchmark helpers, not installed)
from devtools.process_tree import run_watched  # noqa: E402
from readme_block import replace_readme_block  # benchmarks/readme_block.py (this script's folder)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "federated"
log = logging.getLogger("benchmarks.federated_harness")


def run_simulation(overrides: list[str], out_dir: Path, timeout: float) -> dict:
    """Run ``python -m simulation`` with ``overrides``; return its metrics.json plus wall time and peak memory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "simulation", f"hydra.run.dir={out_dir}", *overrides]
    log.info("run: %s", " ".join(command[3:]))
    run = run_watched(command, cwd=REPO, log_file=out_dir / "benchmark.log", timeout=timeout, memory=True)
    if run.returncode != 0:
        raise RuntimeError(f"python -m simulation exited {run.returncode}; log tail:\n{run.output[-2000:]}")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    metrics["benchmark"] = {"wall_seconds": run.seconds, "peak_pss_bytes": run.watcher.peak_pss,
                            "peak_rss_bytes": run.watcher.peak_rss, "left_running": run.watcher.survivors()}  # fmt: skip
    return metrics


def round_breakdown(metrics: dict, workers: int) -> dict:
    """Median over rounds 1..R of the round time and its parts."""
    rounds = [r for r in metrics["rounds"] if r["round"] > 0]
    wall = [r["global"]["round_seconds"] for r in rounds]
    train = [sum(c.get("train-seconds", 0.0) for c in r["clients_train"]) / workers for r in rounds]
    central = [r["global"]["central_eval_seconds"] for r in rounds]
    rest = [w - t - c for w, t, c in zip(wall, train, central)]
    return {"round_seconds": statistics.median(wall), "round_seconds_max": max(wall),
            "client_train_seconds": statistics.median(train), "central_eval_seconds": statistics.median(central),
            "other_seconds": statistics.median(rest)}  # fmt: skip


def scale_part(clients: list[int], rounds: int, workers: int, timeout: float) -> list[dict]:
    rows = []
    for n in clients:
        metrics = run_simulation([f"partition.n_clients={n}", "strategy=fedavg", "simulation.local_epochs=1",
                                  f"simulation.num_rounds={rounds}"], RESULTS / f"scale_{n}", timeout)  # fmt: skip
        row = {"clients": n, "rounds": rounds, **round_breakdown(metrics, workers),
               "peak_pss_gb": metrics["benchmark"]["peak_pss_bytes"] / 1e9,
               "peak_rss_gb": metrics["benchmark"]["peak_rss_bytes"] / 1e9,
               "wall_seconds": metrics["benchmark"]["wall_seconds"], "final_f1": metrics["final"]["f1"]}  # fmt: skip
        log.info("scale %s", json.dumps(row))
        rows.append(row)
    return rows


SETTINGS = ("simulation.num-rounds", "simulation.local-epochs", "simulation.batch-size", "simulation.lr",
            "simulation.lr-decay", "strategy.name")  # kept per run


def quality_part(alphas: list[float], seeds: list[int], timeout: float, fresh: bool) -> dict:
    """Federated final F1 per (alpha, seed) and the centralized reference per seed; merged into quality.json
    after every run (nothing is lost if the benchmark stops), reusing finished entries unless ``fresh``."""
    from hydra import compose, initialize_config_dir

    from simulation.config import CONF_DIR
    from simulation.reference import centralized_reference

    path = RESULTS / "quality.json"
    runs: dict = {"federated": {}, "centralized": {}}
    if path.is_file() and not fresh:
        runs = json.loads(path.read_text())
    for seed in seeds:
        key = str(seed)
        if key not in runs["centralized"]:
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                cfg = compose("federated", overrides=[f"seed={seed}"])
            reference = centralized_reference(cfg)
            runs["centralized"][key] = {k: v for k, v in reference.items() if k != "confusion_matrix"}
            path.write_text(json.dumps(runs, indent=1))
            log.info("centralized seed %d: f1 %.4f acc %.4f", seed, reference["f1"], reference["accuracy"])
        for alpha in alphas:
            if key in runs["federated"].get(str(alpha), {}):
                continue
            metrics = run_simulation([f"seed={seed}", f"partition.alpha={alpha}", "strategy=fedavg"],
                                     RESULTS / f"quality_a{alpha}_s{seed}", timeout)  # fmt: skip
            final = metrics["final"]
            runs["federated"].setdefault(str(alpha), {})[key] = {
                "f1": final["f1"], "accuracy": final["accuracy"], "roc_auc": final["roc_auc"],
                "best_round_f1": max(r["global"]["f1"] for r in metrics["rounds"]),
                "rounds": len(metrics["rounds"]) - 1, "wall_seconds": metrics["benchmark"]["wall_seconds"],
                "settings": {k: metrics["run_config"].get(k) for k in SETTINGS}}  # fmt: skip
            path.write_text(json.dumps(runs, indent=1))
            log.info("federated alpha %s seed %d: f1 %.4f", alpha, seed, final["f1"])
    return runs


def median_of(values: dict, key: str) -> float:
    return statistics.median(v[key] for v in values.values())


def markdown(scale: list[dict] | None, quality: dict | None) -> str:
    lines = []
    if scale:
        lines += ["Time per round (median over the rounds of each run) and peak memory of the whole process tree; "
                  "one local epoch per round, every client trains and evaluates every round, 2 Ray workers on "
                  "2 cores:", "",
                  "| clients | s / round | of which: client training / 2 workers | central eval | other (client "
                  "evaluation, Flower + Ray messaging, data prep) | peak memory PSS (RSS) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in scale:
            lines.append(f"| {r['clients']} | {r['round_seconds']:.1f} (max {r['round_seconds_max']:.1f}) | "
                         f"{r['client_train_seconds']:.1f} | {r['central_eval_seconds']:.1f} | "
                         f"{r['other_seconds']:.1f} | {r['peak_pss_gb']:.2f} GB ({r['peak_rss_gb']:.2f} GB) |")  # fmt: skip
        lines.append("")
    if quality:
        central = quality["centralized"]
        lines += ["Final F1 (%) of the global model on the held-out split beside the centralized CNN-LSTM trained on "
                  "the union of the clients' rows of the same split (same seeds); medians over seeds:", "",
                  "| Dirichlet alpha (attack family) | seeds | federated F1 | best-round F1 | centralized F1 | "
                  "gap of the medians (points) | per-seed gaps (median) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for alpha in sorted(quality["federated"], key=float):
            runs = quality["federated"][alpha]
            seeds = sorted(runs, key=int)
            f1, c_f1 = median_of(runs, "f1"), statistics.median(central[s]["f1"] for s in seeds)
            gaps = [100 * (central[s]["f1"] - runs[s]["f1"]) for s in seeds]
            listed = ", ".join(f"{g:+.2f}" for g in gaps)
            lines.append(f"| {alpha} | {', '.join(seeds)} | {100 * f1:.2f} | {100 * median_of(runs, 'best_round_f1'):.2f} | "
                         f"{100 * c_f1:.2f} | {100 * (c_f1 - f1):+.2f} | {listed} ({statistics.median(gaps):+.2f}) |")  # fmt: skip
        settings = {json.dumps(run.get("settings"), sort_keys=True) for runs in quality["federated"].values()
                    for run in runs.values()}  # fmt: skip
        if settings:
            lines += ["", "Federated settings of these runs: " + "; ".join(sorted(settings)), ""]
    return "\n".join(lines)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("scale", "quality", "all"), default="all")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scale run")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (cores / launcher.client_cpus)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--fresh", action="store_true", help="rerun quality entries already in quality.json")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the table from the JSON results")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # unwind, so that the running simulation is stopped too
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    scale = quality = None
    if args.report_only:
        args.part = "none"
    if args.part in ("scale", "all"):
        scale = scale_part(args.clients, args.rounds, args.workers, args.timeout)
        (RESULTS / "scale.json").write_text(json.dumps(scale, indent=1))
    elif (RESULTS / "scale.json").is_file():
        scale = json.loads((RESULTS / "scale.json").read_text())
    if args.part in ("quality", "all"):
        quality = quality_part(args.alphas, args.seeds, args.timeout, args.fresh)
    elif (RESULTS / "quality.json").is_file():
        quality = json.loads((RESULTS / "quality.json").read_text())
    block = markdown(scale, quality)
    (RESULTS / "results.md").write_text(block + "\n")
    print(block)
    replace_readme_block("federated-benchmark", block)


if __name__ == "__main__":
    main()
