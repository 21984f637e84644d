"""Update (model-poisoning) attacks on flattened update vectors, numpy only.

An update is ``client weights - broadcast global weights``. Attacks that need benign updates get them as the
rows of ``benign`` (how the attacker obtained them is the caller's business: see ``fl_client.attacks.client``).

* sign flipping: ``-scale * u``;
* Gaussian noise: ``N(0, sigma^2)`` in place of the update;
* scaling: ``factor * u`` (also the model-replacement boost of a backdoor, Bagdasaryan et al., AISTATS 2020);
* ALIE, "A Little Is Enough" (Baruch et al., NeurIPS 2019): ``mean - z_max * std`` per coordinate, with
  ``s = floor(n/2 + 1) - f`` and ``z_max = Phi^-1((n - s) / n)``;
* IPM, inner product manipulation (Xie et al., UAI 2020): ``-epsilon * mean``;
* min-max and min-sum (Shejwalkar and Houmansadr, NDSS 2021): ``mean + gamma * p`` with the largest ``gamma``
  (found by their halving search) such that the malicious update's largest distance (min-max) or sum of
  squared distances (min-sum) to the benign updates stays within the benign updates' own largest such value.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def sign_flip(update: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return -scale * update


def gaussian_noise(update: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, sigma, size=update.shape)


def scaling(update: np.ndarray, factor: float) -> np.ndarray:
    return factor * update


def alie_z_max(n_clients: int, n_malicious: int) -> float:
    """Baruch et al.'s z_max = Phi^-1((n - s) / n), with s = floor(n/2 + 1) - f the benign clients the attackers
    need on their side for a majority.

    Once the attackers are a majority by themselves (f >= floor(n/2 + 1), which ``attack.fraction`` allows),
    the paper's s is 0 or negative and (n - s) / n >= 1 has no normal quantile; s is then taken as 1 (the
    attackers still stay within reach of one benign client), which gives the largest finite z_max of the
    formula, Phi^-1((n - 1) / n)."""
    n, f = int(n_clients), int(n_malicious)
    if n < 2:
        raise ValueError(f"ALIE needs at least 2 clients in the federation, got n_clients={n_clients}")
    if not 1 <= f <= n:
        raise ValueError(f"ALIE needs 1 <= n_malicious <= n_clients = {n}, got n_malicious={n_malicious}")
    s = max(int(np.floor(n / 2 + 1)) - f, 1)
    return float(NormalDist().inv_cdf((n - s) / n))


def alie(benign: np.ndarray, n_clients: int, n_malicious: int, z: float | None = None) -> np.ndarray:
    """``mean - z_max * std`` over the rows of ``benign``, coordinate-wise.

    The standard deviation is the population one (ddof 0), as in the authors' code (Baruch et al.,
    github.com/moranant/attacking_distributed_learning, ``malicious.py``: ``np.var(users_grads, axis=0) ** 0.5``);
    the paper says only "standard deviation". Reimplementations on ``torch.std`` use the unbiased one, which
    is larger by sqrt(m / (m - 1)) for m benign rows: 7% for m = 8."""
    z_max = alie_z_max(n_clients, n_malicious) if z is None else z
    return benign.mean(axis=0) - z_max * benign.std(axis=0)


def ipm(benign: np.ndarray, epsilon: float = 0.5) -> np.ndarray:
    return -epsilon * benign.mean(axis=0)


def perturbation(benign: np.ndarray, kind: str = "std") -> np.ndarray:
    """Shejwalkar and Houmansadr's perturbation directions: inverse unit mean, inverse sign, inverse std."""
    mean = benign.mean(axis=0)
    if kind == "unit_vec":
        return -mean / max(float(np.linalg.norm(mean)), 1e-12)
    if kind == "sign":
        return -np.sign(mean)
    if kind == "std":
        return -benign.std(axis=0)
    raise ValueError(f"unknown perturbation {kind!r}: unit_vec, sign or std")


def _pairwise_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2 * a @ b.T, 0.0)


def optimise_gamma(benign: np.ndarray, direction: np.ndarray, fits, gamma_init: float = 10.0,
                   tau: float = 1e-5) -> float:  # fmt: skip
    """Algorithm 1 of Shejwalkar and Houmansadr: halving search for the largest gamma with ``fits(mean + gamma p)``.

    Returns 0 when no tried gamma fits (the attacker then sends the benign mean)."""
    mean = benign.mean(axis=0)
    gamma, step, success = gamma_init, gamma_init, 0.0  # as in the authors' code: first move is gamma_init / 2
    while abs(success - gamma) > tau:
        if fits(mean + gamma * direction):
            success = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
        if step < tau * 1e-3:  # gamma converged onto 0 without ever fitting
            break
    return success


def min_max(benign: np.ndarray, kind: str = "std", gamma_init: float = 10.0, tau: float = 1e-5) -> np.ndarray:
    direction = perturbation(benign, kind)
    bound = float(np.sqrt(_pairwise_sq(benign, benign).max()))

    def fits(candidate: np.ndarray) -> bool:
        return float(np.sqrt(_pairwise_sq(candidate[None, :], benign).max())) <= bound

    return benign.mean(axis=0) + optimise_gamma(benign, direction, fits, gamma_init, tau) * direction


def min_sum(benign: np.ndarray, kind: str = "std", gamma_init: float = 10.0, tau: float = 1e-5) -> np.ndarray:
    direction = perturbation(benign, kind)
    bound = float(_pairwise_sq(benign, benign).sum(axis=1).max())

    def fits(candidate: np.ndarray) -> bool:
        return float(_pairwise_sq(candidate[None, :], benign).sum()) <= bound

    return benign.mean(axis=0) + optimise_gamma(benign, direction, fits, gamma_init, tau) * direction
