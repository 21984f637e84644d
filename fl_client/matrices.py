"""A client's encoded training and validation matrices under the broadcast pipeline, cached per process.

Rows are split into fit/validation first: seeded random rows for flow families, by time for families that read
host graphs (the latest ``val_fraction`` of the client's windows, per site, so no window is on both sides); a
malicious client's data attack then poisons its fit rows only (flipped labels or the backdoor trigger reach the
graphs' edge labels and edge features, since the windows are built after it); SMOTE (when on) runs last, on the fit rows. A Ray worker serves many virtual nodes
in turn, so a small LRU cache keeps the last few nodes' matrices (an attacker also needs its fellow
attackers' clean matrices to estimate benign updates).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fl_client.attacks.config import AttackConfig
from fl_client.attacks.data_attacks import DEFAULT_TRIGGER, backdoor, flip_labels
from conf.schema import RunSpec, data_settings, reads_host_graphs
from fl_client.data import local_table, local_validation_split, local_validation_windows
from fl_client.gateway_data import DATA_PATH, gateway_key
from flows.oversampling import smote
from flows.pipeline_state import PipelineState
from models.registry import get_family

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


def client_matrices(spec: RunSpec, node_config: Mapping, state_json: str, data_attack: AttackConfig | None = None,
                    family_name: str | None = None) -> ClientMatrices:  # fmt: skip
    """This node's examples for ``family_name`` (the broadcast model's family; default: the node's family in the
    run); ``data_attack`` poisons its fit rows (malicious clients in attack rounds only)."""
    use_smote = spec.simulation.smote
    family_name = family_name or spec.model.family_of(node_config)
    key = (tuple(sorted(node_config.items())), data_settings(spec), repr(spec.partition), spec.graph, family_name,
           state_json, use_smote, None if data_attack is None else (data_attack.name, repr(dict(data_attack.params))),
           spec.simulation.val_fraction,
           gateway_key(node_config, spec.dataset.name) if DATA_PATH in node_config else None)  # fmt: skip
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    partition_id, table = local_table(spec, node_config)
    state = PipelineState.from_json(state_json)
    family = get_family(family_name)
    seed = spec.seed + 7919 * max(partition_id, 0)
    if reads_host_graphs(family_name):
        fit_rows, val_rows = local_validation_windows(table, spec.simulation.val_fraction, spec.graph)
    else:
        fit_rows, val_rows = local_validation_split(len(table), spec.simulation.val_fraction, seed)
    fit, val = table.subset(fit_rows), table.subset(val_rows)
    n_real = len(fit)
    if data_attack is not None:
        fit = dataclasses.replace(fit, frame=poison_frame(fit.frame, data_attack, seed).reset_index(drop=True))
    X_fit, y_fit = family.batches(fit, state, spec.graph)
    n_synthetic = 0
    if use_smote:  # local fit rows only: validation rows never see synthetic neighbours
        X_fit, y_fit, n_synthetic = smote(X_fit, y_fit, seed)
    X_val, y_val = family.batches(val, state, spec.graph)
    matrices = ClientMatrices(X_fit, y_fit, X_val, y_val, n_real, n_synthetic)
    _CACHE[key] = matrices
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return matrices
