"""Screening core (issue 4, point 1) on synthetic updates: planted outliers of each kind are rejected, benign
updates pass, reputation carries across rounds, accepted updates are clipped to a robust bound."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.screening import ScreeningConfig, UpdateScreen, robust_z

D = 2000


def benign_updates(n: int, rng: np.random.Generator, spread: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """n honest updates: a shared descent direction plus client-specific variation (non-IID-like)."""
    direction = rng.normal(size=D)
    direction /= np.linalg.norm(direction)
    updates = direction[None, :] + spread * rng.normal(size=(n, D)) / np.sqrt(D)
    return updates * rng.uniform(0.8, 1.2, size=(n, 1)), direction


ATTACKS = {
    "sign flipping": lambda u, d, rng: -u,
    "scaling x10": lambda u, d, rng: 10.0 * u,
    "gaussian noise": lambda u, d, rng: rng.normal(scale=1.0, size=u.shape),
    "opposite direction (label flipping-like)": lambda u, d, rng: -d[None, :] + 0.2 * rng.normal(size=u.shape) / np.sqrt(D),
}  # fmt: skip


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("n_bad", [2, 3])
def test_planted_outliers_are_rejected_and_benign_pass(attack, n_bad):
    rng = np.random.default_rng(len(attack) + n_bad)
    n = 10
    updates, direction = benign_updates(n, rng)
    bad = list(range(n - n_bad, n))
    updates[bad] = ATTACKS[attack](updates[bad], direction, rng)
    decisions, kept = UpdateScreen().screen(list(range(n)), updates)
    rejected = {d.client for d in decisions if not d.accepted}
    assert rejected == set(bad), [(d.client, d.reasons, d.scores) for d in decisions]
    assert len(kept) == n - n_bad
    assert all(d.reasons for d in decisions if not d.accepted)


def test_noise_of_honest_size_is_caught_by_isolation_not_by_its_norm():
    """Random updates scaled to the honest norms: only their direction gives them away (like no other client's)."""
    from strategies.screening import view_badness, view_scores

    rng = np.random.default_rng(5)
    updates, _ = benign_updates(20, rng, spread=1.5)
    noise = rng.normal(size=(3, D))
    updates[-3:] = noise / np.linalg.norm(noise, axis=1, keepdims=True) * np.linalg.norm(updates[:3], axis=1)[:, None]
    config = ScreeningConfig()
    badness = view_badness(view_scores(updates, config), config)
    assert (badness["isolation"][-3:] >= config.z_threshold).all() and (badness["isolation"][:-3] < 1.0).all()
    assert (badness["norm"][-3:] < config.z_threshold).all()
    decisions, _ = UpdateScreen(config).screen(list(range(20)), updates)
    assert {d.client for d in decisions if not d.accepted} == {17, 18, 19}
    assert all("isolation" in d.reasons[0] for d in decisions if not d.accepted)


def test_benign_rounds_reject_nobody():
    screen = UpdateScreen()
    rng = np.random.default_rng(0)
    for _ in range(20):
        decisions, _ = screen.screen(list(range(20)), benign_updates(20, rng, spread=1.0)[0])
        assert all(d.accepted for d in decisions), [d.reasons for d in decisions if not d.accepted]


def test_reputation_keeps_a_repeat_offender_out_for_a_round_after_it_behaves():
    rng = np.random.default_rng(1)
    isolated = {"alignment_memory": False}  # the reputation alone (the alignment average has its own test)
    screen = UpdateScreen(ScreeningConfig(reputation_decay=0.6, reputation_floor=0.5, **isolated))
    for _ in range(2):  # two bad rounds: reputation 0.6 then 0.36
        updates, _ = benign_updates(10, rng)
        updates[9] *= -1
        decisions, _ = screen.screen(list(range(10)), updates)
        assert not decisions[9].accepted
    decisions, _ = screen.screen(list(range(10)), benign_updates(10, rng)[0])
    assert decisions[9].reputation == pytest.approx(0.6 * 0.36 + 0.4)  # 0.616: trusted again this round
    assert decisions[9].accepted
    screen = UpdateScreen(ScreeningConfig(reputation_decay=0.8, reputation_floor=0.5, **isolated))
    for _ in range(5):  # reputation 0.8 ** 5 = 0.33
        updates, _ = benign_updates(10, rng)
        updates[9] *= -1
        screen.screen(list(range(10)), updates)
    decisions, _ = screen.screen(list(range(10)), benign_updates(10, rng)[0])
    assert decisions[9].reputation == pytest.approx(0.8**6 + 0.2)  # 0.46 < 0.5
    assert not decisions[9].accepted and "reputation" in decisions[9].reasons[0]


def test_a_slower_recovery_keeps_an_offender_out_while_losing_trust_at_the_same_pace():
    rng = np.random.default_rng(2)
    config = ScreeningConfig(reputation_decay=0.6, reputation_recovery=0.8, reputation_floor=0.7,
                             alignment_memory=False)  # fmt: skip
    screen = UpdateScreen(config)
    updates, _ = benign_updates(10, rng)
    updates[9] *= -1
    decisions, _ = screen.screen(list(range(10)), updates)
    assert decisions[9].reputation == pytest.approx(0.6)  # a bad round: the decay, as without the option
    decisions, _ = screen.screen(list(range(10)), benign_updates(10, rng)[0])
    assert decisions[9].reputation == pytest.approx(0.8 * 0.6 + 0.2)  # 0.68: still out (0.76 with decay 0.6)
    assert not decisions[9].accepted
    with pytest.raises(ValueError, match="reputation_recovery"):
        ScreeningConfig(reputation_recovery=1.0)


def test_accepted_updates_are_clipped_to_the_median_accepted_norm_when_asked():
    rng = np.random.default_rng(2)
    updates, _ = benign_updates(10, rng)
    decisions, kept = UpdateScreen(ScreeningConfig(clip_mads=0.0)).screen(list(range(10)), updates)
    bound = np.median(np.linalg.norm(updates, axis=1))
    assert np.all(np.linalg.norm(kept, axis=1) <= bound * (1 + 1e-9))
    assert sum(d.clip_factor < 1 for d in decisions) >= 4


def test_the_default_bound_clips_only_unusually_large_accepted_updates():
    rng = np.random.default_rng(2)
    updates, _ = benign_updates(10, rng)
    updates[0] *= 2.0  # a large honest client: same direction, twice the norm (one vote: accepted, clipped)
    decisions, kept = UpdateScreen().screen(list(range(10)), updates)
    assert all(d.accepted for d in decisions)
    norms = np.linalg.norm(updates, axis=1)
    median = np.median(norms)
    bound = median + 3 * 1.4826 * np.median(np.abs(norms - median))
    assert decisions[0].clip_factor == pytest.approx(bound / norms[0])
    assert all(d.clip_factor == 1.0 for d in decisions[1:])


def test_colluders_sending_one_crafted_update_are_rejected_as_copies():
    rng = np.random.default_rng(3)
    updates, direction = benign_updates(20, rng, spread=1.0)
    crafted = updates[:16].mean(axis=0) - 0.5 * updates[:16].std(axis=0)  # ALIE-like: inside the benign spread
    updates[16:] = crafted
    decisions, _ = UpdateScreen().screen(list(range(20)), updates)
    rejected = {d.client: d.reasons for d in decisions if not d.accepted}
    assert set(rejected) == {16, 17, 18, 19}
    assert all(any("near-duplicate" in r for r in reasons) for reasons in rejected.values())


def test_a_client_that_keeps_pointing_against_the_majority_is_caught_by_its_average_alignment():
    """Non-IID: one round's cosine is too noisy to convict, but the moving average of a mild, persistent
    sign flipper (a fraction of its honest update reversed) falls below the floor within a few rounds."""
    rng = np.random.default_rng(4)
    screen = UpdateScreen()
    caught_in = None
    for round_ in range(1, 9):
        updates, _ = benign_updates(20, rng, spread=3.0)  # heterogeneous honest clients (cosine ~0.3 to each other)
        updates[19] = -updates[19]
        decisions, _ = screen.screen(list(range(20)), updates)
        assert all(d.accepted for d in decisions[:19]), [(d.client, d.reasons) for d in decisions[:19] if not d.accepted]
        if not decisions[19].accepted and caught_in is None:
            caught_in = round_
    assert caught_in is not None and caught_in <= 4
    assert screen.alignment[19] < -0.1 < min(screen.alignment[c] for c in range(19))


def test_fewer_updates_than_min_clients_skip_the_statistics():
    rng = np.random.default_rng(5)
    updates, _ = benign_updates(4, rng)
    updates[3] *= -1
    decisions, kept = UpdateScreen().screen(list(range(4)), updates)
    assert all(d.accepted for d in decisions) and len(kept) == 4
    assert all(set(d.scores) == {"norm", "similarity"} for d in decisions)


def test_robust_z_ignores_the_outliers_it_measures():
    values = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 100.0])
    z = robust_z(values)
    assert z[-1] > 100 and np.all(np.abs(z[:-1]) < 2)
    assert np.all(np.isfinite(robust_z(np.ones(5))))  # zero MAD does not divide by zero


def test_weight_cap_bounds_liars_by_the_median_claim_and_leaves_honest_spread_alone():
    from strategies.weights import cap_weights

    honest = np.array([50.0, 80, 100, 100, 120, 150, 380])  # 3.8 x the median, as the default run's largest client
    liars = np.array([1e9, 1e12, 1e15])  # fewer than half: the median stays an honest claim
    capped = cap_weights(np.concatenate([honest, liars]), 6.0)
    np.testing.assert_array_equal(capped[:7], honest)
    np.testing.assert_array_equal(capped[7:], 6.0 * np.median(np.concatenate([honest, liars])))
    np.testing.assert_array_equal(cap_weights(honest, None), honest)
    for bad in (0.5, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            cap_weights(honest, bad)


@pytest.mark.parametrize("n", [3, 10, 20])
def test_a_round_of_identical_updates_is_agreement_not_collusion(n):
    rng = np.random.default_rng(6)
    update = rng.normal(size=300)
    updates = np.tile(update, (n, 1)) * (1 + 1e-7 * rng.normal(size=(n, 1)))  # identical up to float rounding
    screen = UpdateScreen()
    for _ in range(3):  # and again next round: no reputation lost
        decisions, kept = screen.screen(list(range(n)), updates)
        assert all(d.accepted for d in decisions), [(d.client, d.reasons) for d in decisions if not d.accepted]
        assert len(kept) == n
        assert all(any("agreement" in r for r in d.reasons) for d in decisions)
        np.testing.assert_allclose(kept.mean(axis=0), update, rtol=1e-5)


def test_a_colluding_majority_among_disagreeing_honest_clients_is_still_caught():
    """The agreement rule needs every update of the round to agree: 12 copies beside 8 honest clients are not
    agreement, whatever their number."""
    rng = np.random.default_rng(7)
    updates, _ = benign_updates(20, rng, spread=1.0)
    updates[8:] = updates[:8].mean(axis=0) - 0.5 * updates[:8].std(axis=0)
    decisions, _ = UpdateScreen().screen(list(range(20)), updates)
    rejected = {d.client for d in decisions if not d.accepted}
    assert rejected >= set(range(8, 20))
    assert all(any("near-duplicate" in r for r in d.reasons) for d in decisions[8:])
