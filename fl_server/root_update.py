"""FLTrust's server update (Cao et al., NDSS 2021, Algorithm 1): the global model trained on the server's root
dataset for as many local steps as a client of the round takes (same local iterations, batch size and learning
rate), that is enough passes over the small root set to match the round's median client size. One pass over a
200-record root set is 4 steps against a client's ~50: the server update, whose norm FLTrust scales every client
update to, would be ~10x too short."""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import torch

from conf.schema import RunSpec, data_settings
from flows.pipeline_state import PipelineState
from flows.run_split import server_root
from models.checkpoint import ModelSpec

log = logging.getLogger("flwr.botdefender.server")


def root_passes(client_examples: int, root_size: int, batch_size: int, epochs: int) -> int:
    """Passes over the root set that take about as many optimiser steps as ``epochs`` over a client's rows."""
    client_steps = epochs * math.ceil(max(client_examples, 1) / batch_size)
    return max(1, round(client_steps / math.ceil(max(root_size, 1) / batch_size)))


def root_update_fn(spec: RunSpec, state: PipelineState,
                   model_spec: ModelSpec) -> Callable[[dict, int], dict] | None:  # fmt: skip
    """The server update function, or None when the run has no root dataset."""
    settings = data_settings(spec)
    if settings.root_size <= 0:
        return None
    root = server_root(settings)
    family = model_spec.model_family
    X, y = family.batches(root, state, spec.graph)
    batch_size, epochs = spec.simulation.batch_size, spec.simulation.local_epochs
    calls = {"n": 0}

    def update(global_arrays: dict[str, np.ndarray], client_examples: int) -> dict[str, np.ndarray]:
        calls["n"] += 1
        model = model_spec.build()
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in global_arrays.items()})
        family.train_local(model, X, y, epochs=root_passes(client_examples, len(y), batch_size, epochs),
                           batch_size=batch_size, lr=spec.round_lr(calls["n"]), seed=spec.seed * 7 + calls["n"])  # fmt: skip
        return {k: v.detach().numpy() for k, v in model.state_dict().items()}

    log.info("server root dataset: %d records (for fltrust)", len(root))
    return update
