"""Local DP-SGD with opacus for a family whose network reads encoded flow rows.

The family gives a copy of its network that opacus can train (:meth:`models.family.ModelFamily.private_module`:
the CNN-LSTM swaps ``nn.LSTM`` for ``opacus.layers.DPLSTM``, same state-dict keys); opacus clips every example's
gradient to ``max_grad_norm``, adds Gaussian noise and samples batches by Poisson sampling. The trained weights are
loaded back into the plain network, so checkpoints, export and the gateway never see opacus. The accountant starts
from the client's history of earlier rounds and returns it with this round's steps composed.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models.dp.accounting import DPPlan, new_accountant
from models.family import ModelFamily

__all__ = ["train_dp_sgd"]


def train_dp_sgd(family: ModelFamily, model: nn.Module, X: np.ndarray, y: np.ndarray, *, epochs: int,
                 batch_size: int, lr: float, seed: int, plan: DPPlan, max_grad_norm: float,
                 poisson_sampling: bool, history: list, secure_noise: bool = False) -> tuple[float, list]:  # fmt: skip
    """Train ``model`` in place for ``epochs`` epochs of DP-SGD (Adam); (last epoch's mean loss, new history).

    ``secure_noise`` seeds the noise from the OS instead of ``seed`` (a real gateway: a server that knows the run's
    seed must not be able to subtract the noise); simulations stay reproducible."""
    from opacus import PrivacyEngine

    if epochs < 1:
        raise ValueError(f"local-epochs must be >= 1, got {epochs}")
    if len(X) == 0:
        raise ValueError("no training rows on this client")
    private = family.private_module(model)
    torch.manual_seed(seed)  # dropout, and the noise unless secure_noise
    X_t = torch.tensor(np.asarray(X, dtype=np.float32))
    y_t = torch.tensor(np.asarray(y), dtype=torch.float32).reshape(-1)
    loader = DataLoader(TensorDataset(X_t, y_t), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    engine = PrivacyEngine(accountant=plan.accountant)
    engine.accountant = new_accountant(plan.accountant)
    engine.accountant.history = [tuple(h) for h in history]
    noise = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") if secure_noise else seed)
    optimizer = torch.optim.Adam(private.parameters(), lr=lr)
    with warnings.catch_warnings():  # opacus warns that secure_mode is off and about the RNG
        warnings.simplefilter("ignore")
        module, optimizer, loader = engine.make_private(module=private, optimizer=optimizer, data_loader=loader,
                                                        noise_multiplier=plan.noise_multiplier,
                                                        max_grad_norm=max_grad_norm,
                                                        poisson_sampling=poisson_sampling,
                                                        noise_generator=noise)  # fmt: skip
    loss_fn = nn.BCEWithLogitsLoss()
    loss_mean = float("nan")
    module.train()
    for _ in range(epochs):
        total, seen = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            if len(xb) == 0:  # an empty Poisson batch: the step still releases noise and is accounted
                optimizer.step()
                continue
            loss = loss_fn(module(xb), yb)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(xb)
            seen += len(xb)
        loss_mean = total / max(seen, 1)
    family.load_private(model, module._module)
    return loss_mean, [tuple(h) for h in engine.accountant.history]
