"""Attack x defence benchmark (issue 4, point 6): one resumable Hydra multirun, then a table and a heatmap.

    python benchmarks/poisoning.py                            # the full grid (hours on 2 cores; resumable)
    python benchmarks/poisoning.py --attacks sign_flip alie --defences fedavg screening --fractions 0.2
    python benchmarks/poisoning.py --report-only              # table + heatmap from the finished cells

Every cell is UNSW-NB15, Dirichlet alpha 0.5 over attack family, 20 clients, ``--rounds`` rounds of one local
epoch, the server root dataset of ``--root-size`` held-out records in every run (so that FLTrust's runs are
evaluated on the same rows as the others). Every defence assumes up to 30% malicious clients whatever the
attack (``strategy.assumed_malicious``: Krum's f = 6, FedTrimmedAvg's beta = 0.3, the screening's f/n): an
operator does not know how many attackers there are this time. The grid is one Hydra multirun,

    python -m simulation -m attack.fraction=0.2,0.3 attack=none,A,B,.. strategy=X,Y,.. ... \
        launcher.skip_done=true hydra.sweep.dir=benchmarks/results/poisoning/runs \
        hydra.sweep.subdir='${bd.cell:${attack.name},${attack.fraction},${strategy.name}}'

whose jobs are named by cell (every attack-free job is ``none__0__<defence>``, run once): a job whose folder
holds a finished run is skipped, so an interrupted benchmark resumes where it stopped, and a failed job is
recorded (``error.txt``) while the sweep goes on. The report gives, per (attack, fraction, defence): clean F1,
the attack success (backdoor: triggered attack flows classified benign; targeted flipping: recall of the
targeted family) and the screening's precision, recall and honest clients excluded, as a table and a heatmap in
README.md; each finished cell is also kept as ``benchmarks/results/poisoning/cells/<cell>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from simulation.attack_report import screening_scores
from simulation.config_resolvers import cell_name
from readme_block import replace_readme_block  # benchmarks/readme_block.py (this script's folder)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "poisoning"  # runs/ (one folder per job), cells/, heatmap.png
ATTACKS = ["label_flip", "targeted_label_flip", "backdoor", "sign_flip", "gaussian_noise", "scaling", "alie", "ipm",
           "min_max"]  # fmt: skip  (min_sum, the same paper's other variant, runs with --attacks min_sum)
DEFENCES = ["fedavg", "fedmedian", "fedtrimmedavg", "krum", "fltrust", "flame", "centered_clipping", "screening"]
REPORTED = [*DEFENCES[:4], "multikrum", "bulyan", *DEFENCES[4:]]  # column order of the table
ASSUMED_MALICIOUS = 0.3
REFERENCE = "absent"  # FedAvg with the would-be attackers sitting out: the honest clients' own F1 (a reference)
WITHIN = {0.2: 2.0, 0.3: 5.0}  # issue 4's targets: screening F1 within this many points of attack-free FedAvg
PR_TARGET_ATTACKS = ("sign_flip", "gaussian_noise", "scaling", "label_flip")  # precision and recall >= 0.9
log = logging.getLogger("benchmarks.poisoning")


def sweep_command(args: argparse.Namespace, attacks: list[str], defences: list[str]) -> list[str]:
    """The Hydra multirun of a grid (first override slowest: every attack at 20% before any at 30%)."""
    command = [sys.executable, "-m", "simulation", "-m",
               "attack.fraction=" + ",".join(f"{f:g}" for f in args.fractions),
               "attack=" + ",".join(dict.fromkeys(["none", *attacks])),
               "strategy=" + ",".join(defences),
               f"strategy.assumed_malicious={ASSUMED_MALICIOUS}", "partition.n_clients=20",
               f"simulation.num_rounds={args.rounds}", "simulation.local_epochs=1",
               f"simulation.root_size={args.root_size}", f"seed={args.seed}", "launcher.skip_done=true",
               f"hydra.sweep.dir={args.results / 'runs'}",
               "hydra.sweep.subdir='${bd.cell:${attack.name},${attack.fraction},${strategy.name}}'"]  # fmt: skip
    if args.subsample:
        command.append(f"simulation.subsample={args.subsample}")
    return command


def cell_from_run(run: Path) -> dict | None:
    """The cell of one finished (or failed) job folder; None while it has neither result nor error."""
    attack, fraction, defence = run.name.split("__")
    cell = {"attack": attack, "fraction": float(fraction), "defence": defence}
    if (run / "error.txt").is_file():
        return {**cell, "error": (run / "error.txt").read_text().strip()[:300]}
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if "final" not in metrics or (attack != "none" and "attack" not in metrics):
        return None
    cell.update(f1=metrics["final"]["f1"], accuracy=metrics["final"]["accuracy"], seconds=metrics.get("seconds"))
    report = metrics.get("attack", {})
    if attack == "none":  # the screening's cost without attackers: every rejection excludes an honest client
        per_round = screening_scores(metrics["rounds"], malicious=set())
        if per_round:
            cell["benign_excluded_per_round"] = statistics.mean(len(r["benign_excluded"]) for r in per_round)
    for key in ("backdoor_success", "targeted_recall", "screening_precision", "screening_recall",
                "benign_excluded_per_round"):  # fmt: skip
        if key in report:
            cell[key] = report[key]
    return cell


def collect_cells(results: Path) -> int:
    """Write ``cells/<cell>.json`` for every finished job folder; returns how many there are."""
    cells = results / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    count = 0
    for run in sorted((results / "runs").glob("*__*__*")):
        cell = cell_from_run(run)
        if cell is not None:
            (cells / f"{run.name}.json").write_text(json.dumps(cell, indent=1))
            count += 1
    return count


def _terminate(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_grid(args: argparse.Namespace) -> int:
    """The attack x defence multirun, then (unless ``--no-reference``) the honest-only FedAvg reference."""
    status = run_sweep(args, sweep_command(args, args.attacks, args.defences))
    if args.reference:
        status = run_sweep(args, sweep_command(args, [REFERENCE], ["fedavg"])) or status
    return status


def run_sweep(args: argparse.Namespace, command: list[str]) -> int:
    """Run one multirun (streaming its per-round lines), then collect the cells; returns its exit status."""
    log.info("sweep: %s", " ".join(command[1:]))
    signal.signal(signal.SIGTERM, _terminate)
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as sweep:
        try:
            for line in sweep.stdout:  # type: ignore[union-attr]
                if not line.startswith("[20"):  # Hydra's timestamped log lines stay in each job's __main__.log
                    print(line, end="", flush=True)
        except KeyboardInterrupt:  # stop the sweep too (it stops its federation), then report what finished
            sweep.send_signal(signal.SIGTERM)
            for line in sweep.stdout:  # type: ignore[union-attr]  # its last words; also keeps its pipe open
                print(line, end="", flush=True)
            sweep.wait()
            log.info("interrupted; %d finished cells so far (run again to resume)", collect_cells(args.results))
            raise SystemExit(130) from None
    log.info("sweep exit status %d; %d finished cells", sweep.returncode, collect_cells(args.results))
    return sweep.returncode


def load_cells(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "cells").glob("*.json"))]


def report(cells: list[dict], results: Path) -> str:
    """Markdown table (and heatmap PNG) of the finished cells."""
    ok = [c for c in cells if "error" not in c]
    baseline = next((c["f1"] for c in ok if c["attack"] == "none" and c["defence"] == "fedavg"), None)
    defences = [d for d in REPORTED if any(c["defence"] == d for c in ok)]
    rows = sorted({(c["attack"], c["fraction"]) for c in ok}, key=lambda row: (row[0] != "none", row))
    lines = [f"Clean F1 (%) of the final global model; attack-free FedAvg: "
             f"{'-' if baseline is None else f'{100 * baseline:.2f}'}. Attack success in brackets "
             "(backdoor: triggered attack flows classified benign; targeted flipping: recall of DoS).", "",
             "| attack | fraction | " + " | ".join(defences) + " |", "|---|---|" + "---|" * len(defences)]  # fmt: skip
    grid = {(c["attack"], c["fraction"], c["defence"]): c for c in ok}
    for attack, fraction in rows:
        cells_text = []
        for d in defences:
            c = grid.get((attack, fraction, d))
            if c is None:
                cells_text.append("")
                continue
            extra = c.get("backdoor_success", c.get("targeted_recall"))
            cells_text.append(f"{100 * c['f1']:.1f}" + (f" ({100 * extra:.0f}%)" if extra is not None else ""))
        label = f"{attack} (reference: honest clients only)" if attack == REFERENCE else attack
        lines.append(f"| {label} | {fraction:g} | " + " | ".join(cells_text) + " |")
    attacked = [c for c in ok if c["attack"] not in ("none", REFERENCE)]
    means = {d: statistics.mean(c["f1"] for c in attacked if c["defence"] == d)
             for d in defences if any(c["defence"] == d for c in attacked)}  # fmt: skip
    counts = {d: sum(c["defence"] == d for c in attacked) for d in means}
    lines += ["", "Mean clean F1 over the finished attack cells (cells per defence in brackets; compare defences "
              "over the same cells only): " + ", ".join(f"{d} {100 * m:.2f} ({counts[d]})" for d, m in
                                                        sorted(means.items(), key=lambda kv: -kv[1]))]  # fmt: skip
    screened = [c for c in ok if c["defence"] == "screening" and "benign_excluded_per_round" in c]
    if screened:
        lines += ["", "The screening's verdicts: precision and recall at catching the attackers (means over the rounds), "
                  "and honest clients excluded per round (of 20):", "",
                  "| attack | fraction | precision | recall | honest excluded / round |", "|---|---|---|---|---|"]  # fmt: skip
        for c in sorted(screened, key=lambda c: (c["attack"], c["fraction"])):
            lines.append(f"| {c['attack']} | {c['fraction']:g} | {_fmt(c.get('screening_precision'))} | "
                         f"{_fmt(c.get('screening_recall'))} | {c.get('benign_excluded_per_round', 0.0):.2f} |")  # fmt: skip
    lines += targets(grid, baseline, means)
    failed = [c for c in cells if "error" in c]
    if failed:
        lines.append(f"\n{len(failed)} cell(s) failed: " + "; ".join(c["error"][:120] for c in failed[:5]))
    if ok and rows:
        heatmap(grid, rows, defences, results / "heatmap.png")
        lines += ["", f"![attack x defence heatmap]({_relative(results / 'heatmap.png')})"]
    return "\n".join(lines) + "\n"


def targets(grid: dict, baseline: float | None, means: dict[str, float]) -> list[str]:
    """Issue 4's targets against the finished cells, one line each (met / missed, with the numbers)."""
    screening = {(a, f): c for (a, f, d), c in grid.items() if d == "screening" and a not in ("none", REFERENCE)}
    if not screening or baseline is None:
        return []
    lines = ["", "Against the targets (screening; attack-free FedAvg " f"{100 * baseline:.2f}):", ""]
    for fraction, points in WITHIN.items():
        row = {a: c for (a, f), c in screening.items() if f == fraction}
        if not row:
            continue
        worst = min(row.values(), key=lambda c: c["f1"])
        inside = [a for a, c in row.items() if 100 * (baseline - c["f1"]) <= points]
        reference = grid.get((REFERENCE, fraction, "fedavg"))
        lines.append(f"- {fraction:.0%} attackers, F1 within {points:g} points under every attack: "
                     f"{'met' if len(inside) == len(row) else 'missed'} ({len(inside)} of {len(row)} attacks; "
                     f"lowest {100 * worst['f1']:.1f} under {worst['attack']})"
                     + ("" if reference is None else f"; FedAvg over the honest clients alone: "
                        f"{100 * reference['f1']:.1f}") + ".")  # fmt: skip
    for (attack, fraction), c in sorted(screening.items()):
        if attack == "backdoor":
            success = c.get("backdoor_success")
            lines.append(f"- backdoor success at most 5% ({fraction:.0%}): "
                         f"{'met' if success is not None and success <= 0.05 else 'missed'} ({_pct(success)}).")  # fmt: skip
    for (attack, fraction), c in sorted(screening.items()):
        if attack in PR_TARGET_ATTACKS:
            p, r = c.get("screening_precision"), c.get("screening_recall")
            met = p is not None and r is not None and p >= 0.9 and r >= 0.9
            lines.append(f"- precision and recall >= 0.9 against {attack} ({fraction:.0%}): "
                         f"{'met' if met else 'missed'} ({_fmt(p)} / {_fmt(r)}).")  # fmt: skip
    if "screening" in means:
        rivals = {d: m for d, m in means.items() if d in ("krum", "fedmedian", "fedtrimmedavg")}
        above = all(means["screening"] > m for m in rivals.values())
        lines.append(f"- mean F1 above Krum, FedMedian and FedTrimmedAvg: {'met' if above and rivals else 'missed'} "
                     f"(screening {100 * means['screening']:.2f}; " +
                     ", ".join(f"{d} {100 * m:.2f}" for d, m in rivals.items()) + ").")  # fmt: skip
    return lines


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _fmt(value) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def heatmap(grid: dict, rows: list[tuple], defences: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([[grid[(a, f, d)]["f1"] if (a, f, d) in grid else np.nan for d in defences] for a, f in rows])
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(defences), 1.0 + 0.4 * len(rows)))
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(defences)), defences, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{a} {f:g}" for a, f in rows], fontsize=8)
    for i in range(len(rows)):
        for j in range(len(defences)):
            if not np.isnan(values[i, j]):
                ax.text(j, i, f"{100 * values[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="black" if values[i, j] > 0.6 else "white")  # readable on the light end of viridis
    fig.colorbar(image, ax=ax, label="clean F1")
    ax.set_title("final F1 under attack\n(UNSW-NB15, 20 clients)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", nargs="+", default=ATTACKS)
    parser.add_argument("--defences", nargs="+", default=DEFENCES)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.3])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--root-size", type=int, default=200)
    parser.add_argument("--subsample", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder of runs/, cells/ and the heatmap; README.md is updated only for the default")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help=f"skip the reference runs (attack={REFERENCE}, FedAvg over the honest clients alone)")
    args = parser.parse_args()
    args.results = args.results.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    status = 0 if args.report_only else run_grid(args)
    collect_cells(args.results)  # also the jobs a running or interrupted sweep has finished
    block = report(load_cells(args.results), args.results)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "results.md").write_text(block)
    print(block)
    if args.results == RESULTS:
        replace_readme_block("poisoning-benchmark", block)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
