"""The models of a host-graph bundle (torch side, the ``export`` extra): one fp32 .tflite per capacity, int8 tried.

A host-graph model takes one window padded to fixed capacities (:mod:`gateway.graph_inputs`): ``edge_capacity``
flows (the entry's ``batch_size``) and ``node_capacity`` hosts (equal to it: a window of E flows has at most 2E
hosts, and the runtime cuts the rare window with more hosts than the largest model holds into parts). Default
capacities follow the run's windowing: 64 and the window size for ``window="flows"`` windows, 64, 256 and 1024
for ``window="seconds"``. int8 is ai-edge-quantizer's dynamic-range recipe (static calibration reads flow rows and
is refused here); where the quantizer fails, the bundle ships fp32 only and the manifest says why.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from torch import nn

from flows.graphs import NODE_FEATURES, GraphSettings
from gateway.graph_inputs import INPUTS

log = logging.getLogger(__name__)


def default_capacities(settings: GraphSettings) -> tuple[int, ...]:
    """Edge capacities for a run windowed by ``settings``."""
    if settings.window == "flows":
        return tuple(sorted({min(64, settings.flows), settings.flows}))
    return (64, 256, 1024)


def export_graph_models(checkpoint, model: nn.Module, out_dir: Path, options) -> tuple[dict[str, dict], dict]:
    """(the manifest's ``models``, its ``graph`` object) for a host-graph checkpoint, files written to
    ``out_dir``."""
    from gateway.export import ExportError, quantize, store_model, strip_strings

    if options.quantization != "dynamic":
        raise ExportError(f"{checkpoint.path}: host-graph bundles support dynamic int8 only (static calibration "
                          "reads encoded flow rows)")  # fmt: skip
    family = checkpoint.family
    settings = GraphSettings(**checkpoint.graph) if checkpoint.graph is not None else GraphSettings()
    structure = family.graph_structure(checkpoint.spec.params)  # what the exported form aggregates over
    capacities = options.capacities or default_capacities(settings)
    models: dict[str, dict] = {}
    int8_problem = None
    for edges in capacities:
        log.info("converting the %s model for windows of up to %d flows and %d hosts", family.name, edges, edges)
        fp32 = family.export_tflite(model, edges, node_capacity=edges)
        variants = [("fp32", strip_strings(fp32))]
        if int8_problem is None:
            try:
                variants.append(("int8", strip_strings(quantize(fp32, "dynamic"))))
            except Exception as err:  # noqa: BLE001 (the quantizer's failures have no common type)
                int8_problem = f"{type(err).__name__}: {err}"[:300]
                log.warning("int8 quantization of the host-graph model failed (%s); fp32 only", int8_problem)
        for name, content in variants:
            entry = store_model(out_dir, f"model_{name}_b{edges}.tflite", content, options.compression)
            models[f"{name}_b{edges}"] = {**entry, "variant": name, "batch_size": edges, "edge_capacity": edges,
                                          "node_capacity": edges}  # fmt: skip
            if name == "int8":
                models[f"int8_b{edges}"]["quantization"] = "dynamic"
    if int8_problem is not None:  # int8 for every capacity or none
        models = {key: entry for key, entry in models.items() if entry["variant"] == "fp32"}
    graph = {"settings": dataclasses.asdict(settings), "structure": structure, "node_features": list(NODE_FEATURES),
             "inputs": list(INPUTS[structure]), "output": "flow logits (edge capacity), then host logits (node capacity)"}
    if int8_problem is not None:
        graph["int8"] = f"not shipped: {int8_problem}"
    return models, graph
