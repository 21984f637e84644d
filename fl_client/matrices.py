"""A client's encoded training and validation matrices under the broadcast pipeline, cached per process.

Rows are split into fit/validation first (seeded per partition); a malicious client's data attack then
poisons its fit rows only; SMOTE (when on) runs last, on the fit rows. A Ray worker serves many virtual nodes
in turn, so a small LRU cache keeps the last few nodes' matrices (an attacker also needs its fellow
attackers' clean matrices to estimate benign updates).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fl_client.attacks.config import AttackConfig
from fl_client.attacks.data_attacks import DEFAULT_TRIGGER, backdoor, flip_labels
from fl_client.data import local_table, local_validation_split
from flows.oversampling import smote
from flows.pipeline_state import PipelineState
from flows.run_split import DataSettings
from flows.table import LABEL

CACHE_SIZE = 8
_CACHE: OrderedDict[tuple, "ClientMatrices"] = OrderedDict()


@dataclass(frozen=True)
class ClientMatrices:
    X_fit: np.ndarray
    y_fit: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    n_real: int  # fit rows before SMOTE (and before a backdoor's extra copies)
    n_synthetic: int


def poison_frame(frame, attack: AttackConfig, seed: int):
    """The data attack of ``attack`` applied to a fit frame."""
    params = dict(attack.params)
    if attack.name == "label_flip":
        return flip_labels(frame)
    if attack.name == "targeted_label_flip":
        return flip_labels(frame, params.get("families", ["DoS"]))
    if attack.name == "backdoor":
        rng = np.random.default_rng([seed, 0xBAD])
        return backdoor(frame, params.get("trigger", DEFAULT_TRIGGER), float(params.get("poison_fraction", 0.5)), rng)
    raise ValueError(f"{attack.name!r} is not a data attack")


def client_matrices(run_config: Mapping, node_config: Mapping, state_json: str,
                    data_attack: AttackConfig | None = None) -> ClientMatrices:  # fmt: skip
    """This node's matrices; ``data_attack`` poisons its fit rows (malicious clients in attack rounds only)."""
    use_smote = bool(run_config.get("smote", False))
    key = (tuple(sorted(node_config.items())), DataSettings.from_run_config(run_config), state_json, use_smote,
           None if data_attack is None else (data_attack.name, repr(dict(data_attack.params))),
           float(run_config.get("val-fraction", 0.1)))  # fmt: skip
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    partition_id, table = local_table(run_config, node_config)
    state = PipelineState.from_json(state_json)
    seed = int(run_config.get("seed", 0)) + 7919 * max(partition_id, 0)
    fit_rows, val_rows = local_validation_split(len(table), float(run_config.get("val-fraction", 0.1)), seed)
    fit_frame, val_frame = table.frame.iloc[fit_rows], table.frame.iloc[val_rows]
    n_real = len(fit_frame)
    if data_attack is not None:
        fit_frame = poison_frame(fit_frame, data_attack, seed)
    X_fit, y_fit = state.transform(fit_frame), fit_frame[LABEL].to_numpy(dtype=np.int64)
    n_synthetic = 0
    if use_smote:  # local fit rows only: validation rows never see synthetic neighbours
        X_fit, y_fit, n_synthetic = smote(X_fit, y_fit, seed)
    matrices = ClientMatrices(X_fit, y_fit, state.transform(val_frame), val_frame[LABEL].to_numpy(dtype=np.int64),
                              n_real, n_synthetic)  # fmt: skip
    _CACHE[key] = matrices
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return matrices
