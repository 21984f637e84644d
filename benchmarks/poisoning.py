"""Attack x defence benchmark (issue 4, point 6): every cell a ``python -m simulation`` run, resumable.

    python benchmarks/poisoning.py                            # the full grid (hours on 2 cores; resumable)
    python benchmarks/poisoning.py --attacks sign_flip alie --defences fedavg screening --fractions 0.2
    python benchmarks/poisoning.py --report-only              # table + heatmap from the finished cells

Every cell is UNSW-NB15, Dirichlet alpha 0.5 over attack family, 20 clients, ``--rounds`` rounds of one local
epoch, the server root dataset of ``--root-size`` held-out records in every run (so that FLTrust's runs are
evaluated on the same rows as the others). The grid is the Hydra multirun
``python -m simulation -m attack=A,B,.. strategy=X,Y,.. attack.fraction=0.2,0.3`` run one job at a time by this
script, so that a cell whose result is already in ``benchmarks/results/poisoning/cells/`` is skipped and an
interrupted benchmark resumes where it stopped (Hydra's own multirun cannot resume). The report gives, per
(attack, fraction, defence): clean F1, the gap to attack-free
FedAvg, the attack success (backdoor: triggered attack flows classified benign; targeted flipping: recall of
the targeted family) and the screening's precision and recall, as a table and a heatmap in README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
from pathlib import Path

from simulation.attack_report import screening_scores

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "poisoning"
CELLS = RESULTS / "cells"
ATTACKS = ["label_flip", "targeted_label_flip", "backdoor", "sign_flip", "gaussian_noise", "scaling", "alie", "ipm",
           "min_max", "min_sum"]  # fmt: skip
DEFENCES = ["fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan", "fltrust", "flame",
            "centered_clipping", "screening"]  # fmt: skip
MARK_START, MARK_END = "<!-- poisoning-benchmark:start -->", "<!-- poisoning-benchmark:end -->"
log = logging.getLogger("benchmarks.poisoning")


def cell_name(attack: str, fraction: float, defence: str) -> str:
    return f"{attack}__{fraction:g}__{defence}"


def base_overrides(args: argparse.Namespace) -> list[str]:
    overrides = ["partition.n_clients=20", f"simulation.num_rounds={args.rounds}", "simulation.local_epochs=1",
                 f"simulation.root_size={args.root_size}", f"seed={args.seed}"]  # fmt: skip
    if args.subsample:
        overrides.append(f"simulation.subsample={args.subsample}")
    return overrides


def defence_overrides(defence: str, fraction: float) -> list[str]:
    """Robust aggregators get f = the attackers' count where they need it (Bulyan: as many as 4f+3 allows)."""
    f = int(round(fraction * 20))
    if defence in ("krum", "multikrum"):
        extra = [f"strategy.params.num_nodes_to_select={20 - f}"] if defence == "multikrum" else []
        return [f"strategy.params.num_malicious_nodes={f}", *extra]
    if defence == "bulyan":
        return [f"strategy.params.num_malicious_nodes={min(f, (20 - 3) // 4)}"]
    if defence == "fedtrimmedavg":
        return [f"strategy.params.beta={min(fraction, 0.45)}"]
    return []


def run_cell(attack: str, fraction: float, defence: str, args: argparse.Namespace) -> dict:
    """One cell as its own ``python -m simulation`` run (the multirun form is in the module docstring)."""
    out = RESULTS / "runs" / cell_name(attack, fraction, defence)
    overrides = [f"hydra.run.dir={out}", f"strategy={defence}", *base_overrides(args),
                 *defence_overrides(defence, fraction)]  # fmt: skip
    if attack != "none":
        overrides += [f"attack={attack}", f"attack.fraction={fraction}"]
    log.info("cell %s", cell_name(attack, fraction, defence))
    done = subprocess.run([sys.executable, "-m", "simulation", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=args.timeout)  # fmt: skip
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1][:300]}
    metrics = json.loads((out / "metrics.json").read_text())
    cell = {"attack": attack, "fraction": fraction, "defence": defence, "f1": metrics["final"]["f1"],
            "accuracy": metrics["final"]["accuracy"], "seconds": metrics.get("seconds")}  # fmt: skip
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


def run_grid(args: argparse.Namespace) -> None:
    CELLS.mkdir(parents=True, exist_ok=True)
    attack_free = [("none", 0.0, d) for d in dict.fromkeys(["fedavg", *args.defences])]  # the baseline, then each
    # defence's cost on a clean federation
    todo = attack_free + [(a, f, d) for a in args.attacks for f in args.fractions for d in args.defences]
    for attack, fraction, defence in todo:
        path = CELLS / f"{cell_name(attack, fraction, defence)}.json"
        if path.is_file():
            continue
        cell = run_cell(attack, fraction, defence, args)
        path.write_text(json.dumps(cell, indent=1))
        log.info("  -> %s", json.dumps(cell))


def load_cells() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(CELLS.glob("*.json"))]


def report(cells: list[dict]) -> str:
    """Markdown table (and heatmap PNG) of the finished cells."""
    ok = [c for c in cells if "error" not in c]
    baseline = next((c["f1"] for c in ok if c["attack"] == "none" and c["defence"] == "fedavg"), None)
    defences = [d for d in DEFENCES if any(c["defence"] == d for c in ok)]
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
        lines.append(f"| {attack} | {fraction:g} | " + " | ".join(cells_text) + " |")
    means = {d: statistics.mean(c["f1"] for c in ok if c["defence"] == d and c["attack"] != "none")
             for d in defences if any(c["defence"] == d and c["attack"] != "none" for c in ok)}  # fmt: skip
    lines += ["", "Mean clean F1 over the finished attack cells: " +
              ", ".join(f"{d} {100 * m:.2f}" for d, m in sorted(means.items(), key=lambda kv: -kv[1]))]  # fmt: skip
    screened = [c for c in ok if c["defence"] == "screening" and "benign_excluded_per_round" in c]
    if screened:
        lines += ["", "The screening's verdicts: precision and recall at catching the attackers (means over the rounds), "
                  "and honest clients excluded per round (of 20):", "",
                  "| attack | fraction | precision | recall | honest excluded / round |", "|---|---|---|---|---|"]  # fmt: skip
        for c in sorted(screened, key=lambda c: (c["attack"], c["fraction"])):
            lines.append(f"| {c['attack']} | {c['fraction']:g} | {_fmt(c.get('screening_precision'))} | "
                         f"{_fmt(c.get('screening_recall'))} | {c.get('benign_excluded_per_round', 0.0):.2f} |")  # fmt: skip
    failed = [c for c in cells if "error" in c]
    if failed:
        lines.append(f"\n{len(failed)} cell(s) failed: " + "; ".join(c["error"][:120] for c in failed[:5]))
    if ok and rows:
        heatmap(grid, rows, defences, RESULTS / "heatmap.png")
        lines += ["", "![attack x defence heatmap](benchmarks/results/poisoning/heatmap.png)"]
    return "\n".join(lines) + "\n"


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


def update_readme(block: str) -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        readme.write_text(f"{head}{MARK_START}\n{block}\n{MARK_END}{rest.split(MARK_END, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", nargs="+", default=ATTACKS)
    parser.add_argument("--defences", nargs="+", default=DEFENCES)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.3])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--root-size", type=int, default=200)
    parser.add_argument("--subsample", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.report_only:
        run_grid(args)
    block = report(load_cells())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.md").write_text(block)
    print(block)
    update_readme(block)


if __name__ == "__main__":
    main()
