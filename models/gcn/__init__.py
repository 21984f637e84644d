"""The host-graph model family (GCN and E-GraphSAGE over per-window host graphs): parameters, the E-GraphSAGE
layer, the network, training, the centralized detector and the registry entry (``family.FAMILY``).

Names are loaded on first use, so that importing the package (the registry does) brings in no torch."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"EdgeSAGEConv": "layers", "GCNDetector": "detector", "GCNFamily": "family", "GCNParams": "params",
          "GCNTraining": "params", "HostGraphNet": "network"}  # fmt: skip
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
