"""Which clients attack, when, and how: the run spec's ``attack`` section, the same in every process.

The malicious partitions are a seeded draw of ``round(fraction * n)`` partition ids. Clients compute it
themselves; the server's strategies never read it (only the run report does, after the fact, to score the
screening's precision and recall).
"""

from __future__ import annotations

import numpy as np

from conf.schema import AttackSpec

DATA_ATTACKS = ("label_flip", "targeted_label_flip", "backdoor")
UPDATE_ATTACKS = ("sign_flip", "gaussian_noise", "scaling", "alie", "ipm", "min_max", "min_sum")
NEEDS_BENIGN = ("alie", "ipm", "min_max", "min_sum")  # estimate benign updates (see fl_client.attacks.client)
# Not an attack: a reference. The chosen partitions sit the training out (see fl_client.app), so that FedAvg
# under it is FedAvg over the honest clients alone, the best any defence can do by excluding the attackers.
REFERENCES = ("absent",)
ATTACKS = ("none", *DATA_ATTACKS, *UPDATE_ATTACKS, *REFERENCES)


class AttackConfig(AttackSpec):
    """The run spec's attack section with its name checked against the attacks this package implements."""

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"unknown attack {self.name!r}: available {', '.join(ATTACKS)}")
        super().__post_init__()

    @classmethod
    def of(cls, spec: AttackSpec) -> "AttackConfig":
        return cls(name=spec.name, fraction=spec.fraction, start_round=spec.start_round, end_round=spec.end_round,
                   params=dict(spec.params))  # fmt: skip


def malicious_partitions(n_clients: int, fraction: float, seed: int) -> list[int]:
    """The seeded set of malicious partition ids (``round(fraction * n_clients)`` of them)."""
    k = int(round(fraction * n_clients))
    rng = np.random.default_rng([int(seed), 0xA77AC])
    return sorted(int(i) for i in rng.choice(n_clients, size=k, replace=False)) if k else []
