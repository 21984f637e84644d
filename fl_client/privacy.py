"""privacy=dp_sgd on a client: its privacy ledger across rounds, its budget, DP-SGD training, a declined reply.

The ledger (:class:`models.dp.accounting.Ledger`: the accountant's history and the rounds trained) lives in the
node's ``context.state``, which survives rounds in simulation; a real gateway also writes it to
``<privacy-dir>/dp-ledger-run<id>.json`` after every round (node config ``privacy-dir``, default
``~/.botdefender/privacy``), since a SuperNode keeps its state in memory and a restart must not reset a budget.

Each round the client takes its plan (noise, sampling rate, steps; :func:`models.dp.accounting.plan`), and
declines to train when the round would take its epsilon above ``privacy.max_epsilon``: it answers with a
``declined`` record (reason, epsilon spent) instead of weights, which the strategies leave out of aggregation
(:mod:`strategies.declines`) and the run outputs keep.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from conf.schema import RunSpec
from models.dp.accounting import DPPlan, Ledger, ledger_file, load_ledger_file, plan, save_ledger_file
from models.dp.training import train_dp_sgd
from models.family import ModelFamily

log = logging.getLogger("flwr.botdefender.client")

STATE_KEY = "dp-ledger"
PRIVACY_DIR = "privacy-dir"
DEFAULT_PRIVACY_DIR = "~/.botdefender/privacy"
DECLINED = "declined"  # the record of a declined reply (strategies.declines reads it)


@dataclass(frozen=True)
class PrivateRound:
    """One round of DP-SGD on a client: the trained model (None: declined) and what to report."""

    model: torch.nn.Module | None
    loss: float
    metrics: dict[str, float]
    reason: str = ""


def client_plan(spec: RunSpec, n_records: int) -> DPPlan:
    """This client's DP-SGD plan for the run (raises DPSettingsError with one line)."""
    privacy = spec.privacy
    return plan(n_records, batch_size=spec.simulation.batch_size, local_epochs=spec.simulation.local_epochs,
                num_rounds=spec.simulation.num_rounds, delta=privacy.delta, accountant=privacy.accountant,
                noise_multiplier=privacy.noise_multiplier, target_epsilon=privacy.target_epsilon)  # fmt: skip


def _file(context: Context) -> Path | None:
    if "partition-id" in context.node_config:
        return None  # a virtual node: context.state is the ledger's only home
    folder = str(context.node_config.get(PRIVACY_DIR, DEFAULT_PRIVACY_DIR))
    return ledger_file(Path(folder).expanduser(), context.run_id)


def load_ledger(context: Context, accountant: str) -> Ledger:
    """The node's ledger for this run: on a gateway its file (which outlives the process), else context.state."""
    path = _file(context)
    if path is not None:
        return load_ledger_file(path, context.run_id, accountant)
    record = context.state.config_records.get(STATE_KEY)
    return Ledger.from_json(str(record["ledger"]) if record else "", context.run_id, accountant)


def store_ledger(context: Context, ledger: Ledger) -> None:
    context.state[STATE_KEY] = ConfigRecord({"ledger": ledger.to_json()})
    path = _file(context)
    if path is not None:
        save_ledger_file(path, ledger)


def private_round(spec: RunSpec, context: Context, family: ModelFamily, model: torch.nn.Module, X, y: np.ndarray,
                  *, server_round: int, lr: float, seed: int) -> PrivateRound:  # fmt: skip
    """Train ``model`` with DP-SGD for this round, or decline when the budget would be exceeded."""
    privacy = spec.privacy
    the_plan = client_plan(spec, len(y))
    ledger = load_ledger(context, privacy.accountant)
    spent = ledger.epsilon(privacy.delta)
    base = {"dp-sigma": the_plan.noise_multiplier, "dp-sample-rate": the_plan.sample_rate,
            "dp-delta": privacy.delta}  # fmt: skip
    if privacy.max_epsilon and ledger.projected_epsilon(the_plan.round_event(), privacy.delta) > privacy.max_epsilon:
        reason = (f"privacy budget spent: epsilon {spent:.3f} after {len(ledger.rounds)} round(s); another round "
                  f"would exceed privacy.max_epsilon={privacy.max_epsilon:g}")  # fmt: skip
        log.warning("round %d: declines to train: %s", server_round, reason)
        return PrivateRound(None, float("nan"), {**base, "dp-epsilon": spent}, reason)
    loss, history = train_dp_sgd(family, model, X, y, epochs=spec.simulation.local_epochs,
                                 batch_size=spec.simulation.batch_size, lr=lr, seed=seed, plan=the_plan,
                                 max_grad_norm=privacy.max_grad_norm, poisson_sampling=privacy.poisson_sampling,
                                 history=ledger.history,
                                 secure_noise="partition-id" not in context.node_config)  # fmt: skip
    ledger.record(history, server_round)
    store_ledger(context, ledger)
    epsilon = ledger.epsilon(privacy.delta)
    log.info("round %d: DP-SGD sigma %.3f, q %.4f, %d steps; epsilon %.3f at delta %g over %d round(s)",
             server_round, the_plan.noise_multiplier, the_plan.sample_rate, the_plan.steps_per_round, epsilon,
             privacy.delta, len(ledger.rounds))  # fmt: skip
    return PrivateRound(model, loss, {**base, "dp-epsilon": epsilon})


def declined_reply(reason: str, metrics: Mapping[str, float], partition_id: int) -> RecordDict:
    """A reply that declines the round: no weights, the reason and the privacy spent so far."""
    return RecordDict({DECLINED: ConfigRecord({"reason": reason, "partition-id": int(partition_id),
                                               **{k: float(v) for k, v in metrics.items()}})})  # fmt: skip


def planned_problem(spec: RunSpec, n_records: int) -> str:
    """Why this client's DP-SGD plan fails ("" when it holds), for the statistics reply before round 1."""
    from models.dp.accounting import DPSettingsError

    if spec.privacy.name != "dp_sgd":
        return ""
    try:
        client_plan(spec, n_records)
    except DPSettingsError as err:
        return str(err)
    return ""
