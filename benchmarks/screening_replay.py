"""Replay recorded rounds through the screening, offline, in seconds (issue 4: choosing the screening's settings).

A run with ``simulation.save_updates=true`` and the screening strategy keeps every round's update vectors in
``<run dir>/updates/round_NNN.npz``; its ``metrics.json`` names the malicious partitions. This script feeds those
rounds, in order, to a fresh :class:`strategies.screening.UpdateScreen` with the default settings or with
``--set key=value`` changes, and prints per run the screening's precision and recall at catching the attackers
and the honest clients it excluded per round. No training happens, so settings can be compared side by side on
the same updates:

    python -m simulation strategy=screening simulation.save_updates=true attack=sign_flip \\
        partition.n_clients=20 simulation.local_epochs=1 simulation.num_rounds=6 hydra.run.dir=runs/sign_flip
    python benchmarks/screening_replay.py runs/* --set min_votes=3 --set alignment_memory=false

The updates were produced under the screening that ran at the time; a replay with other settings sees the same
updates, not the ones its own decisions would have led to (later rounds depend on earlier aggregates).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from simulation.attack_report import screening_scores
from strategies.screening import ScreeningConfig, UpdateScreen
from strategies.weights import cap_weights


@dataclass
class ReplayResult:
    run: str
    rounds: int
    attackers: int
    precision: float
    recall: float
    honest_excluded_per_round: float
    capped_per_round: float = float("nan")  # clients whose claimed weight the cap trims (NaN: no claims recorded)
    aggregate_shift: float = float("nan")  # mean over rounds of |capped mean - uncapped mean| / |uncapped mean|


def replay(run_dir: Path, config: ScreeningConfig) -> ReplayResult:
    """Screen every recorded round of ``run_dir`` in order; count verdicts against the known attackers."""
    rounds = sorted((run_dir / "updates").glob("round_*.npz"))
    if not rounds:
        raise FileNotFoundError(f"{run_dir}: no updates/round_*.npz (run it with simulation.save_updates=true)")
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.json (the run did not finish)")
    malicious = set(json.loads(metrics_path.read_text()).get("attack", {}).get("malicious_partitions", []))
    screen = UpdateScreen(config)
    rounds_replayed, capped, shifts = [], [], []
    for number, path in enumerate(rounds, start=1):
        with np.load(path) as recorded:
            decisions, kept = screen.screen([int(c) for c in recorded["clients"]], recorded["deltas"].astype(np.float64))
            claims = recorded["claims"].astype(np.float64) if "claims" in recorded.files else None
        rounds_replayed.append({"round": number, "screening": [d.as_dict() for d in decisions]})
        if claims is not None:
            weights = cap_weights(claims, config.max_weight_ratio)
            capped.append(int(np.sum(weights < claims)))
            accepted = np.array([d.accepted for d in decisions], dtype=bool)
            if accepted.any():
                plain = np.average(kept, axis=0, weights=claims[accepted])
                shifts.append(float(np.linalg.norm(np.average(kept, axis=0, weights=weights[accepted]) - plain)
                                    / max(float(np.linalg.norm(plain)), 1e-12)))  # fmt: skip
    per_round = screening_scores(rounds_replayed, malicious)  # the run report's own per-round counts, pooled here
    wrongly = sum(len(r["benign_excluded"]) for r in per_round)
    caught = sum(r["rejected"] for r in per_round) - wrongly
    present = sum(r["sampled_malicious"] for r in per_round)
    precision = caught / (caught + wrongly) if caught + wrongly else float("nan")
    recall = caught / present if present else float("nan")
    return ReplayResult(run_dir.name, len(rounds), len(malicious), precision, recall, wrongly / len(rounds),
                        float(np.mean(capped)) if capped else float("nan"),
                        float(np.mean(shifts)) if shifts else float("nan"))  # fmt: skip


def parse_settings(pairs: list[str]) -> dict:
    """``key=value`` pairs (values parsed as YAML: numbers, true/false, strings) -> ScreeningConfig kwargs."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in ScreeningConfig.__dataclass_fields__:
            raise SystemExit(f"--set {pair!r}: expected key=value with key one of "
                             f"{', '.join(ScreeningConfig.__dataclass_fields__)}")  # fmt: skip
        settings[key] = yaml.safe_load(value)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories with updates/ and metrics.json")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="change one ScreeningConfig field (repeatable)")  # fmt: skip
    args = parser.parse_args()
    try:
        config = ScreeningConfig(**parse_settings(args.settings))
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--set: {err}") from None
    print(f"{'run':24s} {'rounds':>6s} {'attackers':>9s} {'precision':>9s} {'recall':>6s} {'honest excluded/round':>21s}"
          f" {'capped/round':>12s} {'aggregate shift':>15s}")  # fmt: skip
    for run_dir in args.runs:
        if not run_dir.is_dir():
            continue
        try:
            result = replay(run_dir, config)
        except FileNotFoundError as err:
            print(f"skipped: {err}")
            continue
        print(f"{result.run:24s} {result.rounds:6d} {result.attackers:9d} {result.precision:9.2f} {result.recall:6.2f} "
              f"{result.honest_excluded_per_round:21.2f} {result.capped_per_round:12.2f} "
              f"{result.aggregate_shift:15.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
