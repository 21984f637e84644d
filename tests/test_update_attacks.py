"""Update attacks (issue 4, point 3) checked against their papers' formulas."""

from __future__ import annotations

import numpy as np
import pytest

from fl_client.attacks import update_attacks as ua


@pytest.fixture
def benign():
    rng = np.random.default_rng(0)
    return rng.normal(0.3, 1.0, size=(8, 500))


def test_alie_z_max_matches_the_papers_example_and_the_formula(benign):
    # Baruch et al. 2019, section 4: n = 50 workers, m = 24 corrupted -> s = 2, z_max = Phi^-1(48/50) ~ 1.75
    assert ua.alie_z_max(50, 24) == pytest.approx(1.7507, abs=1e-4)
    z = ua.alie_z_max(20, 4)  # s = 11 - 4 = 7 -> Phi^-1(13/20)
    assert z == pytest.approx(0.38532, abs=1e-4)
    np.testing.assert_allclose(ua.alie(benign, 20, 4), benign.mean(0) - z * benign.std(0))


def test_ipm_sign_flip_scaling_noise(benign):
    u = benign[0]
    np.testing.assert_allclose(ua.ipm(benign, 0.5), -0.5 * benign.mean(0))
    assert float(ua.ipm(benign, 0.5) @ benign.mean(0)) < 0  # inner product with the true mean turns negative
    np.testing.assert_allclose(ua.sign_flip(u, 2.0), -2.0 * u)
    np.testing.assert_allclose(ua.scaling(u, 10.0), 10.0 * u)
    noise = ua.gaussian_noise(u, 0.5, np.random.default_rng(1))
    assert noise.shape == u.shape and abs(noise.std() - 0.5) < 0.05 and abs(noise.mean()) < 0.05


@pytest.mark.parametrize("kind", ["std", "unit_vec", "sign"])
def test_min_max_finds_the_largest_gamma_within_the_benign_diameter(benign, kind):
    p = ua.perturbation(benign, kind)
    bad = ua.min_max(benign, kind, gamma_init=50.0)  # the default 10 caps gamma below 20 (unit_vec needs ~30)
    gamma = float(np.dot(bad - benign.mean(0), p) / np.dot(p, p))
    assert gamma > 0
    diameter = max(np.linalg.norm(a - b) for a in benign for b in benign)
    assert max(np.linalg.norm(bad - b) for b in benign) <= diameter + 1e-9
    beyond = benign.mean(0) + (gamma + 1e-3) * p  # a slightly larger gamma breaks the constraint
    assert max(np.linalg.norm(beyond - b) for b in benign) > diameter


@pytest.mark.parametrize("kind", ["std", "unit_vec", "sign"])
def test_min_sum_keeps_the_summed_squared_distance_within_the_benign_maximum(benign, kind):
    p = ua.perturbation(benign, kind)
    bad = ua.min_sum(benign, kind, gamma_init=50.0)
    gamma = float(np.dot(bad - benign.mean(0), p) / np.dot(p, p))
    bound = max(sum(np.sum((a - b) ** 2) for b in benign) for a in benign)
    assert gamma > 0 and sum(np.sum((bad - b) ** 2) for b in benign) <= bound * (1 + 1e-9)
    beyond = benign.mean(0) + (gamma + 1e-3) * p
    assert sum(np.sum((beyond - b) ** 2) for b in benign) > bound


@pytest.mark.parametrize("n", [2, 3, 10, 20, 51])
def test_alie_z_max_is_finite_for_every_attacker_count_the_fraction_allows(n):
    """f >= floor(n/2 + 1) made the paper's s <= 0 and raised StatisticsError; s is then taken as 1."""
    values = [ua.alie_z_max(n, f) for f in range(1, n + 1)]
    assert all(np.isfinite(values))
    assert values == sorted(values)  # more attackers need fewer supporters: z never shrinks
    majority = int(np.floor(n / 2 + 1))
    for f in range(majority, n + 1):
        assert ua.alie_z_max(n, f) == pytest.approx(float(ua.NormalDist().inv_cdf((n - 1) / n)))


@pytest.mark.parametrize("n, f", [(1, 1), (10, 0), (10, 11), (10, -1)])
def test_alie_z_max_refuses_counts_without_meaning(n, f):
    with pytest.raises(ValueError, match="ALIE needs"):
        ua.alie_z_max(n, f)


def test_alie_uses_the_population_standard_deviation_as_the_authors_code(benign):
    crafted = ua.alie(benign, 20, 4, z=1.0)
    np.testing.assert_allclose(crafted, benign.mean(0) - np.sqrt(benign.var(0, ddof=0)))
    assert not np.allclose(crafted, benign.mean(0) - benign.std(0, ddof=1))
