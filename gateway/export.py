"""Checkpoint -> model bundle (torch side; the ``export`` extra): optional pruning, LiteRT conversion, int8.

A checkpoint is what a run writes (``final.pt`` / ``best.pt``, :mod:`models.checkpoint`: the model spec, weights,
pipeline state and round). The model's family converts it (``ModelFamily.export_tflite``, fp32), whatever the
family is; the manifest records the family, its parameters and its ``gateway_input`` (what the gateway feeds the
model). The bundle holds, per batch size, that fp32 .tflite and the int8 .tflite made from it by
ai-edge-quantizer, plus ``manifest.json`` (:mod:`gateway.bundle`). Converted models have a fixed batch size: the
runtime picks the model of the right batch size (see the families' export notes for why).

* pruning: global L1 magnitude pruning (``torch.nn.utils.prune.global_unstructured``) of every weight matrix
  (parameters named ``weight*``) to ``sparsity``, made permanent before conversion;
* int8 ``dynamic`` (default): int8 weights, float activations (``recipe.dynamic_wi8_afp32``);
* int8 ``static``: int8 weights and activations calibrated on representative encoded rows
  (``recipe.static_wi8_ai8``); its input and output are int8, quantized with the tensors' scale and zero point;
* both files are written without tensor names and signature defs (:func:`strip_strings`) and, by default,
  xz-compressed (``compression="xz"``): a converted recurrent network repeats one step's operators once per step,
  and xz removes that repetition.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from torch import nn

from gateway.bundle import COMPRESSIONS, MANIFEST, compress_model, write_manifest
from gateway.manifest import MAX_RELEASE
from models.checkpoint import Checkpoint, CheckpointError, load_checkpoint

log = logging.getLogger(__name__)
QUANTIZATIONS = ("dynamic", "static")


class ExportError(ValueError):
    """A checkpoint or an option the exporter cannot use."""


@dataclass
class ExportOptions:
    batch_sizes: tuple[int, ...] = (1, 256)
    quantization: str = "dynamic"
    sparsity: float = 0.0  # share of the weights set to zero before conversion (0: no pruning)
    default_model: str = "int8"
    compression: str = "xz"  # how model files are stored in the bundle: "xz" or "none" (plain .tflite)
    capacities: tuple[int, ...] | None = None  # host-graph bundles: edge (= node) capacities; None: by windowing
    release: int | None = None  # the manifest's release number; None: milliseconds since the epoch at export time

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ExportError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ExportError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise ExportError(f"batch sizes must be positive integers, got {self.batch_sizes}")
        if self.default_model not in ("fp32", "int8"):
            raise ExportError(f"default_model must be fp32 or int8, got {self.default_model!r}")
        if self.compression not in COMPRESSIONS:
            raise ExportError(f"compression must be one of {COMPRESSIONS}, got {self.compression!r}")
        self.batch_sizes = tuple(sorted({int(b) for b in self.batch_sizes}))
        if self.capacities is not None:
            if not self.capacities or any(int(c) < 1 for c in self.capacities):
                raise ExportError(f"capacities must be positive integers, got {self.capacities}")
            self.capacities = tuple(sorted({int(c) for c in self.capacities}))
        if self.release is not None and not (isinstance(self.release, int) and 1 <= self.release <= MAX_RELEASE):
            raise ExportError(f"release must be an integer from 1 to {MAX_RELEASE}, got {self.release!r}")


def read_checkpoint(path: str | Path) -> Checkpoint:
    """:func:`models.checkpoint.load_checkpoint`, its refusals raised as :class:`ExportError`."""
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        raise ExportError(str(err)) from None


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, parameter name) of every weight tensor (parameters named ``weight*``: conv, recurrent, linear)."""
    pairs = []
    for module in model.modules():
        for name, _ in module.named_parameters(recurse=False):
            if name.startswith("weight"):
                pairs.append((module, name))
    return pairs


def prune_model(model: nn.Module, sparsity: float) -> float:
    """Global L1 magnitude pruning to ``sparsity``, made permanent; returns the achieved share of zero weights."""
    import torch.nn.utils.prune as prune

    pairs = prunable(model)
    if sparsity > 0:
        prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=sparsity)
        for module, name in pairs:
            prune.remove(module, name)
    total = sum(getattr(m, n).numel() for m, n in pairs)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in pairs)
    return zeros / max(total, 1)


def quantize(fp32: bytes, mode: str, calibration: np.ndarray | None = None) -> bytes:
    """int8 .tflite from an fp32 one (ai-edge-quantizer): ``dynamic`` weights only, or ``static`` with activations
    calibrated on ``calibration`` (encoded rows; batched to the model's input shape)."""
    from ai_edge_quantizer import quantizer, recipe

    engine = quantizer.Quantizer(fp32)
    if mode == "dynamic":
        engine.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        return bytes(engine.quantize().quantized_model)
    if calibration is None or len(calibration) == 0:
        raise ExportError("static int8 needs calibration rows (a representative sample of encoded flows)")
    engine.load_quantization_recipe(recipe.static_wi8_ai8())
    signature, input_name, batch = _signature(fp32)
    rows = np.asarray(calibration, dtype=np.float32)
    batches = [rows[i : i + batch] for i in range(0, len(rows) - batch + 1, batch)]
    batches = batches or [np.resize(rows, (batch, rows.shape[1]))]
    result = engine.calibrate({signature: [{input_name: b} for b in batches]})
    return bytes(engine.quantize(result).quantized_model)


def strip_strings(model: bytes) -> bytes:
    """``model`` without its tensor and subgraph names, description and signature defs (LiteRT's own
    ``flatbuffer_utils.strip_strings``): the unrolled graph's hundreds of tensor names were about 15% of each
    file. The runtime addresses the input and output by index, so nothing it reads is lost. Buffers that the
    quantizer stored after the flatbuffer (by offset, as it does for larger models) are moved back inside, since
    re-serializing the flatbuffer drops whatever follows it."""
    from ai_edge_litert.tools import flatbuffer_utils

    flat = flatbuffer_utils.convert_bytearray_to_object(model)
    for buffer in flat.buffers:
        if buffer.offset and buffer.offset > 1:  # offset 1 / size 1 is the converter's "no data" marker
            buffer.data = np.frombuffer(model, np.uint8, buffer.size, buffer.offset).copy()
            buffer.offset, buffer.size = 0, 0
    flatbuffer_utils.strip_strings(flat)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(flat))


def _signature(model: bytes) -> tuple[str, str, int]:
    """(signature key, input name, batch size) of a single-input .tflite model."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    signatures = interpreter.get_signature_list()
    key = next(iter(signatures))
    input_name = signatures[key]["inputs"][0]
    batch = int(interpreter.get_input_details()[0]["shape"][0])
    return key, input_name, batch


def run_metrics(checkpoint: Path) -> dict:
    """The source run's final and best metrics (``metrics.json`` next to the checkpoint), if there is one."""
    path = checkpoint.parent / "metrics.json"
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    keep = ("accuracy", "precision", "recall", "f1", "roc_auc", "n", "threshold")
    return {name: {k: metrics[name][k] for k in keep if k in metrics[name]}
            for name in ("final", "best") if isinstance(metrics.get(name), dict)}  # fmt: skip


def remove_previous_bundle(out_dir: Path) -> int:
    """Delete the bundle an earlier export wrote into ``out_dir``: its manifest, its signature and the files that
    manifest names (a plain .tflite must not stay beside a new .tflite.xz). Other files in the folder are left
    alone. Returns the previous bundle's release number (0 when there was none)."""
    manifest_path = out_dir / MANIFEST
    (out_dir / "manifest.sig").unlink(missing_ok=True)  # gateway.signing.SIGNATURE: it signed the old manifest
    if not manifest_path.is_file():
        return 0
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as err:
        raise ExportError(f"{manifest_path} is not a bundle manifest ({err}); choose another --out") from None
    names = manifest.get("files", {}) if isinstance(manifest, dict) else None
    if not isinstance(names, dict) or not all(isinstance(name, str) for name in names):
        raise ExportError(f"{manifest_path} is not a bundle manifest (no 'files' object of file names); choose "
                          "another --out")  # fmt: skip
    for name in names:
        if name and Path(name).name == name:
            (out_dir / name).unlink(missing_ok=True)
    manifest_path.unlink()
    previous = manifest.get("release", 0)
    return previous if isinstance(previous, int) and not isinstance(previous, bool) else 0


def export_bundle(checkpoint_path: str | Path, out_dir: str | Path, options: ExportOptions | None = None,
                  calibration: np.ndarray | None = None) -> dict:  # fmt: skip
    """Write the bundle for ``checkpoint_path`` into ``out_dir``; returns the manifest."""
    options = options or ExportOptions()
    checkpoint = read_checkpoint(checkpoint_path)
    family = checkpoint.family
    model = checkpoint.model()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous_release = remove_previous_bundle(out_dir)
    achieved = prune_model(model, options.sparsity)
    graph = None
    if family.gateway_input == "host_graphs":
        from gateway.export_graphs import export_graph_models

        models, graph = export_graph_models(checkpoint, model, out_dir, options)
    else:
        models = _export_flow_models(family, model, out_dir, options, calibration)
    pipeline = checkpoint.pipeline
    run_name = checkpoint.path.parent.name
    manifest = {
        "model_version": f"{run_name}-r{checkpoint.round}-{checkpoint.digest[:8]}",
        "release": default_release(previous_release) if options.release is None else options.release,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"checkpoint": checkpoint.path.name, "run": run_name, "round": checkpoint.round,
                   "checkpoint_sha256": checkpoint.digest},  # fmt: skip
        "family": family.name,
        "family_params": dict(checkpoint.spec.params),
        "gateway_input": family.gateway_input,
        "features": {"input_columns": pipeline.input_columns, "encoded": pipeline.output_names,
                     "n_features": pipeline.n_outputs},  # fmt: skip
        "pipeline": pipeline.to_dict(),
        "threshold": float(pipeline.threshold),
        "models": models,
        "default_model": options.default_model,
        "batch_sizes": list(options.batch_sizes),
        "pruning": {"method": "global L1 magnitude", "requested_sparsity": options.sparsity,
                    "achieved_sparsity": round(achieved, 4)},  # fmt: skip
        "metrics": run_metrics(checkpoint.path),
    }
    if graph is not None:
        manifest["graph"] = graph
        manifest["batch_sizes"] = sorted({entry["batch_size"] for entry in models.values()})
        if not any(entry["variant"] == options.default_model for entry in models.values()):
            manifest["default_model"] = "fp32"
    return json.loads(write_manifest(out_dir, manifest).read_text(encoding="utf-8"))


def default_release(previous: int = 0) -> int:
    """Milliseconds since the epoch now, and past ``previous`` (the release an export into the same folder had),
    so that two exports in one millisecond or after a clock step back still increase."""
    return max(time.time_ns() // 1_000_000, previous + 1)


def store_model(out_dir: Path, name: str, content: bytes, compression: str) -> dict:
    """Write one model file (stripped of names, xz-compressed unless ``compression`` is "none"); its entry."""
    stored = content
    if compression == "xz":
        name, stored = name + ".xz", compress_model(content)
    (out_dir / name).write_bytes(stored)
    return {"file": name, "compression": compression, "bytes": len(stored), "tflite_bytes": len(content)}


def _export_flow_models(family, model: nn.Module, out_dir: Path, options: ExportOptions,
                        calibration: np.ndarray | None) -> dict[str, dict]:  # fmt: skip
    """fp32 and int8 models of a flow-row family, per batch size: the manifest's ``models``."""
    models: dict[str, dict] = {}
    for batch in options.batch_sizes:
        log.info("converting the %s model for batch %d", family.name, batch)
        fp32 = family.export_tflite(model, batch)
        int8 = quantize(fp32, options.quantization, calibration)
        for variant, content in (("fp32", strip_strings(fp32)), ("int8", strip_strings(int8))):
            entry = store_model(out_dir, f"model_{variant}_b{batch}.tflite", content, options.compression)
            models[f"{variant}_b{batch}"] = {**entry, "variant": variant, "batch_size": batch}
        models[f"int8_b{batch}"]["quantization"] = options.quantization
    return models


def run_data_settings(checkpoint: str | Path):
    """The data settings of the checkpoint's run (its ``metrics.json``), on this machine's data folder if the run
    was elsewhere."""
    from conf.schema import data_settings, from_run_config
    from flows.loader import resolve_data_dir

    metrics_path = Path(checkpoint).parent / "metrics.json"
    if not metrics_path.is_file():
        raise ExportError(f"no {metrics_path} to find the run's data: pass --calibration FILE")
    settings = data_settings(from_run_config(json.loads(metrics_path.read_text())["run_config"]))
    if not settings.data_dir or not Path(settings.data_dir).is_dir():
        settings = dataclasses.replace(settings, data_dir=str(resolve_data_dir(None)))
    return settings


def calibration_rows(checkpoint: str | Path, source: str | Path | None = None, size: int = 1024,
                     seed: int = 0) -> np.ndarray:  # fmt: skip
    """Encoded rows for static int8 calibration: a seeded sample of ``size`` records from ``source`` (any flow file
    the gateway reads) or, by default, from the training split of the checkpoint's run (its ``metrics.json``).
    Only for families whose gateway input is one encoded row per flow."""
    from collections import Counter

    loaded = read_checkpoint(checkpoint)
    if loaded.family.gateway_input != "flow_rows":
        raise ExportError(f"{loaded.path}: static calibration reads encoded flow rows; the {loaded.family.name} "
                          f"family's gateway input is {loaded.family.gateway_input!r}")  # fmt: skip
    pipeline = loaded.pipeline
    rng = np.random.default_rng(seed)
    if source is not None:
        from gateway.encode import encode
        from gateway.sources import FlowSource

        rows, _ = encode([r for r in FlowSource(source) if r is not None], pipeline, Counter())
    else:
        from flows.run_split import load_split

        train, _ = load_split(run_data_settings(checkpoint))
        rows, _ = loaded.family.batches(train, pipeline)
    if len(rows) == 0:
        raise ExportError("no calibration rows could be read")
    return rows[rng.choice(len(rows), size=min(size, len(rows)), replace=False)]
