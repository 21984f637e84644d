"""The model family interface: what the clients, the server, the exporter and the reports need from a model kind.

A family is one registry entry (:mod:`models.registry`). Everything that names a concrete network lives in the
family's own modules (``modules``); the rest of the project holds a family by its name and calls these methods.

``batches`` turns a flow table into the family's examples: ``X`` is whatever the family's ``train_local``,
``evaluate_local`` and ``predict_logits`` take (a float32 matrix of encoded rows for ``gateway_input ==
"flow_rows"``; a graph family returns its own batch object), ``y`` the int64 labels of the examples.

``params_type`` is a dataclass of the family's architecture parameters; its field defaults are the only place
those defaults are written. Its fields have plain types (int, float, str, bool) so that a run specification can
embed it and a checkpoint can record it as JSON.
"""

from __future__ import annotations

import dataclasses
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch stays out of the imports of anyone who only needs names and parameters
    import torch

    from flows.graphs.settings import GraphSettings
    from flows.pipeline_state import PipelineState
    from flows.table import FlowTable

__all__ = ["PLAIN_TYPES", "ModelFamily", "param_fields", "resolve_params"]

PLAIN_TYPES: tuple[type, ...] = (int, float, str, bool)


class ModelFamily(ABC):
    """One kind of model; subclasses set the class attributes and implement the methods."""

    name: str  #: registry name, also recorded in checkpoints and bundles
    gateway_input: str  #: what the gateway feeds the exported model ("flow_rows": one encoded row per flow)
    params_type: type  #: dataclass of the architecture parameters with their defaults
    modules: tuple[str, ...] = ()  #: the modules that implement the family (the only ones that name it)
    #: why per-example DP-SGD gives this family no meaningful guarantee ("" : the family supports privacy=dp_sgd)
    dp_sgd_refusal: str = ""

    def default_params(self) -> dict:
        """Every architecture parameter at its default."""
        return resolve_params(self.params_type, {}, self.name)

    def resolve(self, params: Mapping) -> dict:
        """``params`` completed with the defaults and type-checked; unknown names raise ValueError naming them."""
        return resolve_params(self.params_type, params, self.name)

    @abstractmethod
    def build(self, n_features: int, params: Mapping) -> "torch.nn.Module":
        """A fresh network (current torch RNG) for ``n_features`` encoded inputs; unknown param -> ValueError."""

    @abstractmethod
    def batches(self, table: "FlowTable", pipeline: "PipelineState",
                graph: "GraphSettings | None" = None) -> tuple[Any, np.ndarray]:  # fmt: skip
        """(X, y): the family's examples and their int64 labels for the flows of ``table``; ``graph`` is the
        run's host-graph windowing (a graph family cuts its windows with it; None: its defaults)."""

    @abstractmethod
    def train_local(self, model: "torch.nn.Module", X: Any, y: np.ndarray, *, epochs: int, batch_size: int,
                    lr: float, seed: int, proximal_mu: float = 0.0) -> float:  # fmt: skip
        """Train ``model`` in place for exactly ``epochs`` epochs (no early stopping); the last epoch's mean loss.

        ``proximal_mu > 0`` adds FedProx's ``mu/2 * ||w - w_start||^2`` around the starting weights."""

    @abstractmethod
    def evaluate_local(self, model: "torch.nn.Module", X: Any, y: np.ndarray) -> tuple[float, float]:
        """(mean binary cross-entropy, accuracy at logit 0) of ``model`` on (X, y)."""

    @abstractmethod
    def predict_logits(self, model: "torch.nn.Module", X: Any) -> np.ndarray:
        """Logits, one per example of ``X`` (eval mode, no grad), float32."""

    @abstractmethod
    def export_tflite(self, model: "torch.nn.Module", batch_size: int) -> bytes:
        """The fp32 .tflite flatbuffer of ``model`` for a fixed batch of ``batch_size`` gateway inputs."""

    def private_module(self, model: "torch.nn.Module") -> "torch.nn.Module":
        """A copy of ``model`` that opacus can train with per-example gradients (same state-dict keys); raises
        ValueError with :attr:`dp_sgd_refusal`, or with opacus's objections to a layer."""
        import copy

        return self.checked_private(copy.deepcopy(model))

    def checked_private(self, private: "torch.nn.Module") -> "torch.nn.Module":
        """``private`` itself once opacus accepts every layer (ValueError otherwise, or for a refused family)."""
        from opacus.validators import ModuleValidator

        if self.dp_sgd_refusal:
            raise ValueError(f"privacy=dp_sgd is refused for the {self.name} family: {self.dp_sgd_refusal}")
        errors = ModuleValidator.validate(private, strict=False)
        if errors:
            raise ValueError(f"privacy=dp_sgd: opacus cannot train the {self.name} network: {errors[0]}")
        return private

    def load_private(self, model: "torch.nn.Module", private: "torch.nn.Module") -> None:
        """Load the weights of :meth:`private_module`'s trained copy back into the plain ``model`` (opacus's layers
        may list a parameter under a second name too: only the plain model's keys are taken, and all of them)."""
        trained = private.state_dict()
        missing = [key for key in model.state_dict() if key not in trained]
        if missing:
            raise ValueError(f"the private copy of the {self.name} network lacks {missing[:3]}")
        model.load_state_dict({key: trained[key] for key in model.state_dict()})

    def detector_class(self) -> type | None:
        """The family's centralized :class:`models.base.Detector` (``python -m simulation.centralized``), if any."""
        return None

    def __repr__(self) -> str:
        return f"<model family {self.name!r} ({self.gateway_input})>"


def param_fields(params_type: type) -> dict[str, tuple[type, Any]]:
    """name -> (type, default) of a family's parameter dataclass; raises TypeError when it is not one that a run
    specification can embed (a dataclass whose fields all have a plain type and a default)."""
    if not (isinstance(params_type, type) and dataclasses.is_dataclass(params_type)):
        raise TypeError(f"params_type must be a dataclass, got {params_type!r}")
    hints = typing.get_type_hints(params_type)
    fields: dict[str, tuple[type, Any]] = {}
    for f in dataclasses.fields(params_type):
        kind = hints[f.name]
        if kind not in PLAIN_TYPES:
            raise TypeError(f"{params_type.__name__}.{f.name}: type {kind!r} is not one of int, float, str, bool")
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{params_type.__name__}.{f.name} has no default")
        fields[f.name] = (kind, f.default)
    return fields


def _check_type(family: str, name: str, kind: type, value: Any) -> Any:
    """``value`` as ``kind`` (an int is a float; a bool is not an int), or ValueError naming the parameter."""
    ok = (isinstance(value, bool) if kind is bool
          else isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float
          else isinstance(value, int) and not isinstance(value, bool) if kind is int
          else isinstance(value, str))  # fmt: skip
    if not ok:
        raise ValueError(f"{family} parameter {name!r} must be {kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


def resolve_params(params_type: type, params: Mapping, family: str = "model") -> dict:
    """Every field of ``params_type``: ``params`` over the defaults, type-checked and validated by the dataclass
    (its ``__post_init__``). Unknown names raise ValueError naming them and the valid ones."""
    fields = param_fields(params_type)
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"unknown {family} parameter(s) {unknown}; valid: {sorted(fields)}")
    values = {name: _check_type(family, name, fields[name][0], value) for name, value in params.items()}
    return dataclasses.asdict(params_type(**values))
