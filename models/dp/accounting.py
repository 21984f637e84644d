"""DP-SGD accounting over a whole federated run, per client.

A client trains ``local_epochs`` epochs per round. opacus's data loader (Poisson sampling) samples each record with
probability ``q = 1 / ceil(n / batch_size)`` and takes ``ceil(n / batch_size)`` steps per epoch; the accountant
records ``(noise_multiplier, q, steps)``. :class:`Ledger` keeps that history across rounds (and, on a gateway, on
disk), so the epsilon a client reports is for everything it released in the run, not for one round.

With a target epsilon the noise is derived once for the whole run: the smallest sigma whose epsilon after
``num_rounds`` rounds of training stays at or below the target (opacus's ``get_noise_multiplier``). A client that
is sampled less often spends less than the target.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = ["DPSettingsError", "DPPlan", "Ledger", "plan", "epsilon_of"]


class DPSettingsError(ValueError):
    """DP settings this client's data or this run cannot satisfy (one line, names the setting)."""


@dataclass(frozen=True)
class DPPlan:
    """One client's DP-SGD parameters for the run."""

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    num_rounds: int
    accountant: str
    delta: float
    derived: bool  # the noise comes from a target epsilon

    def round_event(self) -> tuple[float, float, int]:
        """What one round of training adds to the accountant's history."""
        return (self.noise_multiplier, self.sample_rate, self.steps_per_round)


def steps_per_epoch(n_records: int, batch_size: int) -> int:
    return math.ceil(n_records / batch_size)


def plan(n_records: int, *, batch_size: int, local_epochs: int, num_rounds: int, delta: float,
         accountant: str, noise_multiplier: float = 0.0, target_epsilon: float = 0.0) -> DPPlan:  # fmt: skip
    """The DP-SGD plan of a client with ``n_records`` training records, or :class:`DPSettingsError`."""
    if n_records < 1:
        raise DPSettingsError("privacy=dp_sgd: this client has no training records")
    if delta >= 1.0 / n_records:
        raise DPSettingsError(f"privacy.delta={delta:g} must be below 1/n = {1.0 / n_records:.3g} for a client with "
                              f"{n_records} training records (a delta that large allows leaking a whole record)")  # fmt: skip
    steps = steps_per_epoch(n_records, batch_size)
    q = 1.0 / steps
    per_round = steps * local_epochs
    if target_epsilon > 0:
        sigma = derived_noise(target_epsilon, delta, q, per_round * num_rounds, accountant)
        return DPPlan(sigma, q, per_round, num_rounds, accountant, delta, True)
    if noise_multiplier <= 0:
        raise DPSettingsError(f"privacy.noise_multiplier must be > 0, got {noise_multiplier}")
    return DPPlan(float(noise_multiplier), q, per_round, num_rounds, accountant, delta, False)


@lru_cache(maxsize=256)
def derived_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The noise multiplier that spends ``target_epsilon`` over ``steps`` steps, or :class:`DPSettingsError`."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=steps, accountant=accountant,
                                          epsilon_tolerance=0.01))  # fmt: skip
    except ValueError as err:
        raise DPSettingsError(f"privacy.target_epsilon={target_epsilon:g} cannot be reached at delta={delta:g} "
                              f"over {steps} steps at sampling rate {sample_rate:.3g}: {err}") from None


def epsilon_of(history: list[tuple[float, float, int]], accountant: str, delta: float) -> float:
    """Epsilon at ``delta`` of the composed history (0 for an empty one)."""
    if not history:
        return 0.0
    acct = new_accountant(accountant)
    acct.history = [tuple(h) for h in history]
    return float(acct.get_epsilon(delta))


def new_accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant

    if name == "rdp":
        return RDPAccountant()
    if name == "prv":
        return PRVAccountant()
    raise DPSettingsError(f"privacy.accountant must be rdp or prv, got {name!r}")


def merged(history: list[tuple[float, float, int]], event: tuple[float, float, int]) -> list[tuple[float, float, int]]:
    """``history`` with ``event`` composed (merged into the last entry when sigma and q are the same, as opacus
    does)."""
    out = [tuple(h) for h in history]
    if out and out[-1][0] == event[0] and out[-1][1] == event[1]:
        out[-1] = (event[0], event[1], int(out[-1][2]) + int(event[2]))
    else:
        out.append((float(event[0]), float(event[1]), int(event[2])))
    return out


@dataclass
class Ledger:
    """A client's privacy history in one run: the accountant's ``(sigma, q, steps)`` entries and the rounds it
    trained. Serialises to JSON (``context.state`` in simulation, a file on a gateway)."""

    run_id: int
    accountant: str
    history: list[tuple[float, float, int]] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)

    def epsilon(self, delta: float) -> float:
        return epsilon_of(self.history, self.accountant, delta)

    def projected_epsilon(self, event: tuple[float, float, int], delta: float) -> float:
        """Epsilon after one more round of ``event``."""
        return epsilon_of(merged(self.history, event), self.accountant, delta)

    def record(self, history: list[tuple[float, float, int]], server_round: int) -> None:
        self.history = [tuple(h) for h in history]
        self.rounds.append(int(server_round))

    def to_json(self) -> str:
        return json.dumps({"run_id": self.run_id, "accountant": self.accountant,
                           "history": [list(h) for h in self.history], "rounds": self.rounds})  # fmt: skip

    @classmethod
    def from_json(cls, text: str, run_id: int, accountant: str) -> "Ledger":
        """The ledger of ``run_id`` in ``text``; a fresh one if ``text`` is empty. A ledger of another run or
        accountant, or one that is not a ledger, raises :class:`DPSettingsError` (never a silent reset)."""
        if not text.strip():
            return cls(run_id, accountant)
        try:
            data = json.loads(text)
            history = [(float(s), float(q), int(n)) for s, q, n in data["history"]]
            ledger = cls(int(data["run_id"]), str(data["accountant"]), history, [int(r) for r in data["rounds"]])
        except (ValueError, KeyError, TypeError) as err:
            raise DPSettingsError(f"the privacy ledger is damaged ({err}); refusing to train on an unknown "
                                  "budget") from None  # fmt: skip
        if ledger.accountant != accountant:
            raise DPSettingsError(f"the privacy ledger was kept with accountant {ledger.accountant!r}, the run "
                                  f"asks for {accountant!r}")  # fmt: skip
        return ledger if ledger.run_id == run_id else cls(run_id, accountant)


def ledger_file(folder: str | Path, run_id: int) -> Path:
    return Path(folder) / f"dp-ledger-run{int(run_id)}.json"


def load_ledger_file(path: Path, run_id: int, accountant: str) -> Ledger:
    return Ledger.from_json(path.read_text(encoding="utf-8") if path.exists() else "", run_id, accountant)


def save_ledger_file(path: Path, ledger: Ledger) -> None:
    """Write atomically (a crash mid-write leaves the previous ledger), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(ledger.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
