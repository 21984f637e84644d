"""benchmarks/screening_replay.py: recorded rounds replayed through the screening give the verdict counts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _replay_module():
    spec = importlib.util.spec_from_file_location("screening_replay", REPO / "benchmarks" / "screening_replay.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["screening_replay"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _record_run(run_dir: Path, rounds: int, attackers: list[int], n: int = 12) -> None:
    rng = np.random.default_rng(0)
    direction = rng.normal(size=500)
    (run_dir / "updates").mkdir(parents=True)
    for r in range(1, rounds + 1):
        deltas = direction + 0.5 * rng.normal(size=(n, 500))
        deltas[attackers] *= -3.0  # scaled sign flipping: plain to catch
        np.savez_compressed(run_dir / "updates" / f"round_{r:03d}.npz", clients=np.arange(n),
                            deltas=deltas.astype(np.float32), accepted=np.ones(n, bool))  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps({"attack": {"malicious_partitions": attackers}}))


def test_replay_counts_caught_attackers_and_honest_exclusions(tmp_path):
    replay = _replay_module()
    _record_run(tmp_path / "run", rounds=3, attackers=[10, 11])
    result = replay.replay(tmp_path / "run", replay.ScreeningConfig())
    assert (result.rounds, result.attackers) == (3, 2)
    assert result.recall == 1.0 and result.precision == 1.0 and result.honest_excluded_per_round == 0.0
    lenient = replay.replay(tmp_path / "run", replay.ScreeningConfig(z_threshold=50.0, alignment_memory=False,
                                                                     log_norm=False, use_clustering=False))
    assert lenient.recall < 1.0  # the settings change the verdicts: the replay is not a fixed answer


def test_replay_refuses_a_run_without_recorded_updates(tmp_path):
    replay = _replay_module()
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="save_updates"):
        replay.replay(tmp_path / "run", replay.ScreeningConfig())
    assert replay.parse_settings(["min_votes=3", "reference=median", "clip=false"]) == {
        "min_votes": 3, "reference": "median", "clip": False}


def test_replay_measures_the_weight_cap_on_rounds_recorded_with_claims(tmp_path):
    from strategies.screening_strategy import save_updates

    replay = _replay_module()
    rng = np.random.default_rng(1)
    direction = rng.normal(size=200)
    claims = np.array([100.0] * 11 + [1e9])  # client 11 claims 1e9 examples with an honest-looking update
    for r in (1, 2):
        deltas = direction + 0.5 * rng.normal(size=(12, 200))
        save_updates(tmp_path / "run" / "updates", r, list(range(12)), deltas, [True] * 12, claims)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"attack": {"malicious_partitions": []}}))
    result = replay.replay(tmp_path / "run", replay.ScreeningConfig())
    assert result.capped_per_round == 1.0 and result.aggregate_shift > 0.05
    uncapped = replay.replay(tmp_path / "run", replay.ScreeningConfig(max_weight_ratio=None))
    assert uncapped.capped_per_round == 0.0 and uncapped.aggregate_shift == 0.0
    _record_run(tmp_path / "old", rounds=1, attackers=[])  # recorded without claims: nothing to measure
    assert np.isnan(replay.replay(tmp_path / "old", replay.ScreeningConfig()).capped_per_round)
