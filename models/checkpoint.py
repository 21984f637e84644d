"""Model specifications (what the server broadcasts) and checkpoints (what a run saves), for any model family.

A :class:`ModelSpec` is a family name, the number of encoded inputs and the family's complete architecture
parameters; its JSON form travels in the Flower ConfigRecord and inside checkpoints. A checkpoint file is a
``torch.save`` of a dict with plain values only (read back with ``weights_only=True``)::

    {"format": "botdefender-checkpoint", "format_version": 1, "model_spec": "<ModelSpec JSON>",
     "state_dict": {...tensors...}, "pipeline_state": "<PipelineState JSON>", "round": int}
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.registry import UnknownModelFamily, get_family

if TYPE_CHECKING:
    import torch

    from flows.graphs.settings import GraphSettings
    from flows.pipeline_state import PipelineState
    from models.family import ModelFamily

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "CheckpointError", "ModelSpec", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "botdefender-checkpoint"
FORMAT_VERSION = 1
_SPEC_KEYS = ("family", "n_features", "params")


@dataclass(frozen=True)
class ModelSpec:
    """A family, its number of encoded inputs and every architecture parameter (missing ones take the family's
    defaults at construction). Raises ValueError for an unknown family, parameter or a bad value."""

    family: str
    n_features: int
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        family = get_family(self.family)  # UnknownModelFamily is a ValueError
        if isinstance(self.n_features, bool) or not isinstance(self.n_features, int) or self.n_features < 1:
            raise ValueError(f"model spec: n_features must be a positive integer, got {self.n_features!r}")
        if not isinstance(self.params, Mapping):
            raise ValueError(f"model spec: params must be an object, got {type(self.params).__name__}")
        object.__setattr__(self, "params", family.resolve(self.params))

    def __hash__(self) -> int:  # the params dict is not hashable; its JSON form is
        return hash(self.to_json())

    @property
    def model_family(self) -> "ModelFamily":
        return get_family(self.family)

    def to_dict(self) -> dict:
        return {"family": self.family, "n_features": self.n_features, "params": dict(self.params)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, where: str = "model spec") -> "ModelSpec":
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a JSON object with {', '.join(_SPEC_KEYS)}, got "
                             f"{type(data).__name__}")  # fmt: skip
        missing = [k for k in _SPEC_KEYS if k not in data]
        unknown = sorted(set(data) - set(_SPEC_KEYS))
        if missing or unknown:
            raise ValueError(f"{where}: missing key(s) {missing}, unknown key(s) {unknown}; expected exactly "
                             f"{list(_SPEC_KEYS)}")  # fmt: skip
        try:
            return cls(family=data["family"], n_features=data["n_features"], params=data["params"])
        except UnknownModelFamily:
            raise
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"model spec: not valid JSON ({err})") from None
        return cls.from_dict(data)

    def build(self) -> "torch.nn.Module":
        """A fresh network of this spec (current torch RNG)."""
        return self.model_family.build(self.n_features, self.params)


class CheckpointError(ValueError):
    """A file that is not a checkpoint this code can read, with the reason."""


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``state_dict`` is known to fit ``spec`` and ``pipeline_state`` to encode
    ``spec.n_features`` inputs."""

    spec: ModelSpec
    state_dict: dict
    pipeline_state: str
    round: int
    path: Path
    digest: str  # sha256 of the checkpoint file
    graph: dict | None = None  # the run's host-graph windowing (GraphSettings fields); None: not recorded

    @property
    def family(self) -> "ModelFamily":
        return self.spec.model_family

    def model(self) -> "torch.nn.Module":
        """A new network of the checkpoint's spec with its weights, in eval mode."""
        model = self.spec.build()
        model.load_state_dict(self.state_dict)
        return model.eval()

    @property
    def pipeline(self) -> "PipelineState":
        from flows.pipeline_state import PipelineState

        return PipelineState.from_json(self.pipeline_state)


def _check_pipeline(pipeline_state_json: Any, spec: ModelSpec, where: str) -> None:
    from flows.pipeline_state import PipelineState, PipelineStateError

    if not isinstance(pipeline_state_json, str):
        raise CheckpointError(f"{where}: pipeline_state must be the pipeline's JSON text, got "
                              f"{type(pipeline_state_json).__name__}")  # fmt: skip
    try:
        pipeline = PipelineState.from_json(pipeline_state_json)
    except (PipelineStateError, ValueError, TypeError) as err:
        raise CheckpointError(f"{where}: pipeline_state: {err}") from None
    if pipeline.n_outputs != spec.n_features:
        raise CheckpointError(f"{where}: the pipeline encodes {pipeline.n_outputs} features, the model reads "
                              f"{spec.n_features}")  # fmt: skip


def _check_weights(state_dict: Any, spec: ModelSpec, where: str) -> dict:
    """``state_dict`` as tensors, checked key by key and shape by shape against a network built from ``spec``."""
    import torch

    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{where}: state_dict must be a mapping of tensors, got {type(state_dict).__name__}")
    reference = spec.build().state_dict()
    tensors = {str(k): torch.as_tensor(v) for k, v in state_dict.items()}
    missing = [k for k in reference if k not in tensors]
    unknown = [k for k in tensors if k not in reference]
    if missing or unknown:
        raise CheckpointError(f"{where}: the weights do not fit a {spec.family} model of this spec: missing "
                              f"{missing[:5]}, unexpected {unknown[:5]}")  # fmt: skip
    for key, ref in reference.items():
        if tuple(tensors[key].shape) != tuple(ref.shape):
            raise CheckpointError(f"{where}: weight {key!r} has shape {tuple(tensors[key].shape)}, a {spec.family} "
                                  f"model of this spec has {tuple(ref.shape)}")  # fmt: skip
    return {k: tensors[k] for k in reference}


def save_checkpoint(path: str | Path, spec: ModelSpec, state_dict: Mapping, pipeline_state_json: str,
                    round_: int, graph: Mapping | None = None) -> None:  # fmt: skip
    """Write a checkpoint atomically (a temporary file renamed into place); the weights and the pipeline are
    checked against ``spec`` first (:class:`CheckpointError`). ``graph``: the run's host-graph windowing
    (:class:`flows.graphs.GraphSettings` as a dict), recorded so that an export cuts the same windows."""
    import torch

    path = Path(path)
    if not isinstance(spec, ModelSpec):
        raise CheckpointError(f"{path}: spec must be a ModelSpec, got {type(spec).__name__}")
    _check_pipeline(pipeline_state_json, spec, str(path))
    weights = {k: v.detach().cpu().clone() for k, v in _check_weights(state_dict, spec, str(path)).items()}
    data = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "model_spec": spec.to_json(),
            "state_dict": weights, "pipeline_state": pipeline_state_json, "round": int(round_),
            "graph": asdict(_graph_settings(graph, str(path))) if graph is not None else None}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint; raises :class:`CheckpointError` naming the file and the reason."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    raw = path.read_bytes()  # read once: hashed for the model version, then loaded
    try:
        data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        raise CheckpointError(f"{path} is not a readable checkpoint: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a BotDefender checkpoint: it holds a {type(data).__name__}")
    if "model_spec" not in data and "model_config" in data:
        raise CheckpointError(f"{path} predates model families (it has model_config, no model_spec): retrain, or "
                              "save it again with models.checkpoint.save_checkpoint and a ModelSpec")  # fmt: skip
    if data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a BotDefender checkpoint (format {data.get('format')!r}, expected "
                              f"{CHECKPOINT_FORMAT!r})")  # fmt: skip
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {data.get('format_version')!r} is not supported "
                              f"(this code reads {FORMAT_VERSION})")  # fmt: skip
    missing = [k for k in ("model_spec", "state_dict", "pipeline_state", "round") if k not in data]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    try:
        spec = ModelSpec.from_json(data["model_spec"])
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    _check_pipeline(data["pipeline_state"], spec, str(path))
    state_dict = _check_weights(data["state_dict"], spec, str(path))
    round_ = data["round"]
    if isinstance(round_, bool) or not isinstance(round_, int):
        raise CheckpointError(f"{path}: round must be an integer, got {round_!r}")
    graph = data.get("graph")  # absent in checkpoints written before graph settings were recorded
    graph = None if graph is None else asdict(_graph_settings(graph, str(path)))
    return Checkpoint(spec=spec, state_dict=state_dict, pipeline_state=data["pipeline_state"], round=round_,
                      path=path, digest=hashlib.sha256(raw).hexdigest(), graph=graph)  # fmt: skip


def _graph_settings(value: Any, where: str) -> "GraphSettings":
    """``value`` (a mapping of GraphSettings fields) as checked :class:`flows.graphs.GraphSettings`."""
    from flows.graphs.settings import GraphSettings

    if isinstance(value, GraphSettings):
        return value
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{where}: graph must be a mapping of graph settings, got {type(value).__name__}")
    known = {f.name for f in fields(GraphSettings)}
    unknown = sorted(set(map(str, value)) - known)
    if unknown:
        raise CheckpointError(f"{where}: graph: unknown setting(s) {', '.join(unknown)}")
    try:
        return GraphSettings(**dict(value))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: graph: {err}") from None
