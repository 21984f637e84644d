"""FLTrust, FLAME and centered clipping (issue 4, point 2) against their papers' definitions."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import defences


@pytest.fixture
def round_updates():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=300)
    benign = direction + 0.3 * rng.normal(size=(7, 300))
    attackers = -4.0 * (direction + 0.3 * rng.normal(size=(3, 300)))
    return np.vstack([benign, attackers]), direction


def test_fltrust_trust_scores_normalisation_and_weighted_mean(round_updates):
    updates, direction = round_updates
    server = direction * 0.5
    aggregate, admitted = defences.fltrust(updates, server)
    assert admitted == list(range(7))  # negative cosine -> trust 0
    cos = updates @ server / (np.linalg.norm(updates, axis=1) * np.linalg.norm(server))
    trust = np.maximum(cos, 0)
    scaled = updates / np.linalg.norm(updates, axis=1, keepdims=True) * np.linalg.norm(server)
    np.testing.assert_allclose(aggregate, (trust[:, None] * scaled).sum(0) / trust.sum())
    boosted = updates.copy()
    boosted[0] *= 100.0  # magnitude cannot buy influence: every update is rescaled to ||g0||
    np.testing.assert_allclose(defences.fltrust(boosted, server)[0], aggregate)


def test_flame_keeps_the_majority_cluster_clips_and_adds_noise(round_updates):
    updates, _ = round_updates
    aggregate, admitted = defences.flame(updates, 0.0, np.random.default_rng(0))
    assert admitted == list(range(7))
    bound = np.median(np.linalg.norm(updates, axis=1))
    kept = updates[:7] * np.minimum(1, bound / np.linalg.norm(updates[:7], axis=1))[:, None]
    np.testing.assert_allclose(aggregate, kept.mean(0))
    noisy, _ = defences.flame(updates, 0.01, np.random.default_rng(0))
    assert np.std(noisy - aggregate) == pytest.approx(0.01 * bound, rel=0.15)


def test_centered_clipping_bounds_the_pull_of_outliers(round_updates):
    updates, direction = round_updates
    one_step, _ = defences.centered_clipping(updates, None, iterations=1, tau=1e9)
    np.testing.assert_allclose(one_step, updates.mean(0))  # a huge radius is the plain mean
    robust, _ = defences.centered_clipping(updates, None, iterations=5)
    benign_mean = updates[:7].mean(0)
    assert np.linalg.norm(robust - benign_mean) < 0.5 * np.linalg.norm(updates.mean(0) - benign_mean)
    assert float(robust @ direction) > 0 > float(updates.mean(0) @ direction)
