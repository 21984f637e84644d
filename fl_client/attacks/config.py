"""Which clients attack, when, and how: read from the run config (``attack.*`` keys), the same in every process.

The malicious partitions are a seeded draw of ``round(fraction * n)`` partition ids. Clients compute it
themselves; the server's strategies never read it (only the run report does, after the fact, to score the
screening's precision and recall).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

DATA_ATTACKS = ("label_flip", "targeted_label_flip", "backdoor")
UPDATE_ATTACKS = ("sign_flip", "gaussian_noise", "scaling", "alie", "ipm", "min_max", "min_sum")
NEEDS_BENIGN = ("alie", "ipm", "min_max", "min_sum")  # estimate benign updates (see fl_client.attacks.client)
# Not an attack: a reference. The chosen partitions sit the training out (see fl_client.app), so that FedAvg
# under it is FedAvg over the honest clients alone, the best any defence can do by excluding the attackers.
REFERENCES = ("absent",)
ATTACKS = ("none", *DATA_ATTACKS, *UPDATE_ATTACKS, *REFERENCES)


@dataclass(frozen=True)
class AttackConfig:
    name: str = "none"
    fraction: float = 0.0  # share of the clients that are malicious
    start_round: int = 1
    end_round: int = 0  # 0: until the last round
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"unknown attack {self.name!r}: available {', '.join(ATTACKS)}")
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"attack fraction must be in [0, 1), got {self.fraction}")
        if self.start_round < 1 or (self.end_round and self.end_round < self.start_round):
            raise ValueError(f"attack rounds must satisfy 1 <= start <= end (0 = last), got "
                             f"{self.start_round}..{self.end_round}")  # fmt: skip

    @classmethod
    def from_run_config(cls, run_config: Mapping) -> "AttackConfig":
        return cls(name=str(run_config.get("attack.name", "none")),
                   fraction=float(run_config.get("attack.fraction", 0.0)),
                   start_round=int(run_config.get("attack.start-round", 1)),
                   end_round=int(run_config.get("attack.end-round", 0)),
                   params=json.loads(str(run_config.get("attack.params", "{}"))))  # fmt: skip

    def run_config(self) -> dict:
        return {"attack.name": self.name, "attack.fraction": float(self.fraction),
                "attack.start-round": int(self.start_round), "attack.end-round": int(self.end_round),
                "attack.params": json.dumps(dict(self.params))}  # fmt: skip

    def active(self, server_round: int) -> bool:
        return self.name != "none" and self.start_round <= server_round and (
            not self.end_round or server_round <= self.end_round)  # fmt: skip


def malicious_partitions(n_clients: int, fraction: float, seed: int) -> list[int]:
    """The seeded set of malicious partition ids (``round(fraction * n_clients)`` of them)."""
    k = int(round(fraction * n_clients))
    rng = np.random.default_rng([int(seed), 0xA77AC])
    return sorted(int(i) for i in rng.choice(n_clients, size=k, replace=False)) if k else []
