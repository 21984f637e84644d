"""Training and inference loops for torch binary classifiers that output logits (batch,)."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

__all__ = ["TrainHistory", "train_torch_classifier", "predict_logits"]

log = logging.getLogger(__name__)


@dataclass
class TrainHistory:
    """Per-epoch curves of one training run.

    ``best_epoch`` is the 0-based index (into the lists) of the epoch whose weights
    were restored; ``stopped_early`` is True when patience ran out before ``epochs``.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)

    @property
    def best_val_loss(self) -> float:
        return self.val_loss[self.best_epoch] if self.best_epoch >= 0 else float("nan")


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def predict_logits(model: nn.Module, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Logits of ``model`` for every row of ``X`` (eval mode, no grad), shape (n,) float32.

    The model's previous train/eval mode is restored afterwards.
    """
    device = _device_of(model)
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        with torch.no_grad():
            X_t = torch.as_tensor(np.asarray(X, dtype=np.float32))
            for start in range(0, len(X_t), batch_size):
                out.append(model(X_t[start:start + batch_size].to(device)).reshape(-1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray, loss_fn: nn.Module) -> tuple[float, float]:
    """Mean loss and accuracy (threshold 0 on the logit) over (X, y)."""
    logits = predict_logits(model, X)
    loss = float(loss_fn(torch.from_numpy(logits), torch.as_tensor(y, dtype=torch.float32)))
    acc = float(np.mean((logits >= 0).astype(np.int64) == y)) if len(y) else float("nan")
    return loss, acc


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    device: torch.device | None = None,
) -> float:
    """One pass over ``loader`` in training mode; returns the mean loss per row."""
    model.train()
    total, seen = 0.0, 0
    for xb, yb in loader:
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(xb)
        seen += len(xb)
    return total / max(seen, 1)


def train_torch_classifier(
    model: nn.Module,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    patience: int = 5,
    seed: int = 0,
    weight_decay: float = 0.0,
    lr_decay_patience: int = 0,
    progress: bool = True,
) -> TrainHistory:
    """Train ``model`` with Adam + BCEWithLogitsLoss and early stopping on validation loss.

    The loader shuffles with a ``torch.Generator`` seeded by ``seed``; dropout and weight
    init use the global torch RNG, which the caller seeds. After training the weights of
    the epoch with the lowest validation loss are restored. Thread count is left to the
    caller (``torch.set_num_threads``). With ``lr_decay_patience`` > 0 the learning rate halves after that
    many epochs without a better validation loss (torch's ReduceLROnPlateau, floor lr/64).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(X_train) == 0 or len(X_val) == 0:
        raise ValueError(f"empty data: {len(X_train)} training rows, {len(X_val)} validation rows")
    device = _device_of(model)
    X_t = torch.as_tensor(np.asarray(X_train, dtype=np.float32))
    y_t = torch.as_tensor(np.asarray(y_train), dtype=torch.float32).reshape(-1)
    y_val = np.asarray(y_val).reshape(-1).astype(np.int64)
    gen = torch.Generator().manual_seed(seed)
    # A last batch of one row breaks BatchNorm in training mode: drop it in that case only.
    loader = DataLoader(
        TensorDataset(X_t, y_t), batch_size=batch_size, shuffle=True, generator=gen,
        drop_last=len(X_t) % batch_size == 1 and len(X_t) > 1,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=lr_decay_patience,
                                                   min_lr=lr / 64)  # fmt: skip
        if lr_decay_patience > 0
        else None
    )
    history = TrainHistory()
    best_loss = float("inf")
    best_state = copy.deepcopy(model.state_dict())
    bad_epochs = 0
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        train_loss = train_one_epoch(model, loader, optimizer, loss_fn, device)
        val_loss, val_acc = _evaluate(model, X_val, y_val, loss_fn)
        history.train_loss.append(train_loss)
        history.val_loss.append(val_loss)
        history.val_accuracy.append(val_acc)
        if scheduler is not None:
            scheduler.step(val_loss)
        if val_loss < best_loss:
            best_loss, history.best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        bar.set_postfix(train_loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
        log.debug("epoch %d: train_loss=%.4f val_loss=%.4f val_acc=%.4f", epoch + 1, train_loss, val_loss, val_acc)
        if bad_epochs >= patience:
            history.stopped_early = epoch + 1 < epochs
            break
    bar.close()
    model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    log.info(
        "trained %d epoch(s) in %.1f s; best epoch %d (val_loss=%.4f, val_acc=%.4f)%s",
        history.epochs_run, history.seconds, history.best_epoch + 1, best_loss,
        history.val_accuracy[history.best_epoch], ", stopped early" if history.stopped_early else "",
    )
    return history
