"""Conversion between a torch module's state_dict and a list of numpy arrays.

The order is the state_dict order (parameters and buffers, e.g. BatchNorm running
statistics), which is what Flower ArrayRecords carry between server and clients.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["get_weights", "set_weights", "state_vector", "vector_state", "weight_keys"]


def weight_keys(model: nn.Module) -> list[str]:
    """State-dict keys of ``model``, in the order used by get/set_weights."""
    return list(model.state_dict().keys())


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Copy every state_dict tensor of ``model`` into a numpy array (state_dict order)."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, arrays: Sequence[np.ndarray]) -> None:
    """Load ``arrays`` (state_dict order) into ``model``.

    Raises ValueError on a count mismatch or when an array's shape differs from its
    state_dict entry; the message names the offending key.
    """
    state = model.state_dict()
    keys = list(state.keys())
    if len(arrays) != len(keys):
        extra = keys[len(arrays):] if len(arrays) < len(keys) else []
        hint = f"; first missing key: {extra[0]!r}" if extra else ""
        raise ValueError(
            f"{type(model).__name__} expects {len(keys)} arrays, got {len(arrays)}{hint}"
        )
    new_state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, arr in zip(keys, arrays):
        ref = state[key]
        arr = np.asarray(arr)
        if tuple(arr.shape) != tuple(ref.shape):
            raise ValueError(
                f"shape mismatch for {key!r}: model has {tuple(ref.shape)}, array has {tuple(arr.shape)}"
            )
        new_state[key] = torch.as_tensor(arr).to(dtype=ref.dtype, device=ref.device)
    model.load_state_dict(new_state, strict=True)


def state_vector(state: Mapping[str, torch.Tensor]) -> np.ndarray:
    """A state dict as one float64 vector, entries in sorted key order (the layout of :func:`vector_state`)."""
    names = sorted(state)
    if not names:
        return np.zeros(0)
    return np.concatenate([state[n].detach().cpu().numpy().reshape(-1).astype(np.float64) for n in names])


def vector_state(vector: np.ndarray, reference: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """The inverse of :func:`state_vector`: tensors shaped and typed like ``reference``'s entries."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    start = 0
    for name in sorted(reference):
        ref = reference[name]
        size = ref.numel()
        out[name] = torch.from_numpy(np.asarray(vector[start : start + size]).reshape(tuple(ref.shape))).to(ref.dtype)
        start += size
    if start != len(vector):
        raise ValueError(f"vector has {len(vector)} values, the reference state {start}")
    return OrderedDict((k, out[k]) for k in reference)
