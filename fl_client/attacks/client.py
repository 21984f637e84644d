"""A malicious client's update: the update attack of its config applied to its honest update (numpy only).

Attacks that need benign updates (ALIE, IPM, min-max, min-sum) get them from ``benign_updates()``, which the
ClientApp implements as the colluding attackers' own honest updates: each attacker trains the broadcast model
on every attacker's clean data (they pool their data, as colluders in the papers do) and all of them send the
same malicious update. No attacker sees a benign client's data or update (not omniscient).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fl_client.attacks import update_attacks as ua
from fl_client.attacks.config import UPDATE_ATTACKS, AttackConfig


def malicious_update(attack: AttackConfig, own: np.ndarray, benign_updates: Callable[[], np.ndarray],
                     n_clients: int, n_malicious: int, rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """The update a malicious client sends instead of ``own`` (its honest update on its own, maybe poisoned, data)."""
    p = dict(attack.params)
    if attack.name == "sign_flip":
        return ua.sign_flip(own, float(p.get("scale", 1.0)))
    if attack.name == "gaussian_noise":
        return ua.gaussian_noise(own, float(p.get("sigma", 0.1)), rng)
    if attack.name == "scaling":
        return ua.scaling(own, float(p.get("factor", 10.0)))
    if attack.name == "backdoor":  # model replacement: boost the backdoored update (1 = no boost)
        return ua.scaling(own, float(p.get("boost", 1.0)))
    if attack.name == "alie":
        z = p.get("z")
        return ua.alie(benign_updates(), n_clients, n_malicious, None if z is None else float(z))
    if attack.name == "ipm":
        return ua.ipm(benign_updates(), float(p.get("epsilon", 0.5)))
    if attack.name == "min_max":
        return ua.min_max(benign_updates(), str(p.get("perturbation", "std")))
    if attack.name == "min_sum":
        return ua.min_sum(benign_updates(), str(p.get("perturbation", "std")))
    return own  # data attacks without a boost send their honest update on poisoned data


def changes_update(attack: AttackConfig) -> bool:
    """True if the attack rewrites the update (not only the data)."""
    if attack.name == "backdoor":
        return float(dict(attack.params).get("boost", 1.0)) != 1.0
    return attack.name in UPDATE_ATTACKS
