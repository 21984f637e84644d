"""Centralized benchmark: all detectors on one protocol of UNSW-NB15, several seeds, medians reported.

    python -m simulation.centralized                       # protocol=paper, seed 0
    python -m simulation.centralized protocol=clean seeds=[0,1,2]
    python -m simulation.centralized -m protocol=paper,clean
    python -m simulation.centralized model=NAME dataset=unsw_nb15_raw   # one model beside `beside`

Writes into the Hydra run directory: ``metrics.json`` (per seed and model: accuracy, precision, recall, f1,
roc_auc, confusion matrix, train seconds, model bytes; medians over seeds), ``results.md`` and PNG plots.

``model=NAME`` runs that model with the ``beside`` models (default XGBoost and the CNN-LSTM) instead of
``run_models``. ``split``: ``random`` is the protocol's stratified split of flows; ``chronological`` splits
host-graph windows in time order (:mod:`simulation.windowed`: every model on the same windows, scored per flow and
per host); ``auto`` (default) is chronological when a model reads host graphs.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from dataclasses import asdict

from hydra.core.config_store import ConfigStore

from conf.schema import DatasetSpec, from_dict
from flows.errors import FlowDataError
from flows.graphs import HOST_GRAPHS, GraphSettings
from flows.loader import load_dataset
from flows.pipeline import PipelineConfig
from flows.protocols import PreparedData, ProtocolConfig, prepare, stratified_subsample
from models.baselines import make_detector
from models.evaluation import detection_metrics
from simulation.config import CONF_DIR
from simulation.windowed import HOST_KEYS, prepare_windows, train_and_score_windows

log = logging.getLogger(__name__)
SUMMARY_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "train_seconds", "model_bytes")
LEAKY_MARK = "LEAKY (SMOTE before split)"
SPLITS = ("auto", "random", "chronological")
ConfigStore.instance().store(group="graph", name="windows", node=asdict(GraphSettings()))  # defaults: the dataclass


def train_and_score(name: str, params: dict, data: PreparedData, seed: int) -> tuple[dict, np.ndarray]:
    """Fit one detector on the training matrix and score it on the test matrix."""
    detector = make_detector(name, seed=seed, **params)
    started = time.perf_counter()
    detector.fit(data.X_train, data.y_train)
    seconds = time.perf_counter() - started
    scores = detector.predict_proba(data.X_test)
    metrics = detection_metrics(data.y_test, scores)
    metrics.update(train_seconds=round(seconds, 2), model_bytes=detector.n_bytes())
    if hasattr(detector, "history_") and detector.history_ is not None:
        metrics["epochs_run"] = detector.history_.epochs_run
    return metrics, scores


def medians(per_seed: dict[int, dict[str, dict]], model_names: list[str],
            keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, dict]:  # fmt: skip
    return {
        name: {key: statistics.median(run[name][key] for run in per_seed.values()) for key in keys}
        for name in model_names
    }


def markdown_table(summary: dict[str, dict], protocol: str, leaky: bool, seeds: list[int],
                   split: str = "random") -> str:  # fmt: skip
    mark = f" — {LEAKY_MARK}" if leaky else ""
    hosts = split == "chronological"
    lines = [
        f"Protocol `{protocol}`{mark}, {split} split; median over seeds {seeds}"
        + ("; host P/R/F1: hosts of the test windows (malicious = originates an attack flow there)" if hosts else ""),
        "",
        "| model | accuracy | precision | recall | F1 | ROC AUC |" + (" host P | host R | host F1 |" if hosts else "")
        + " train s | model bytes |",
        "|---|---|---|---|---|---|" + ("---|---|---|" if hosts else "") + "---|---|",
    ]  # fmt: skip
    for name, m in summary.items():
        host = "".join(f" {m[k]:.4f} |" for k in HOST_KEYS) if hosts else ""
        lines.append(
            f"| {name} | {m['accuracy']:.4f} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | "
            f"{m['roc_auc']:.4f} |{host} {m['train_seconds']:.1f} | {int(m['model_bytes']):,} |"
        )
    return "\n".join(lines) + "\n"


def chosen_models(cfg: DictConfig) -> tuple[dict, list[str]]:
    """(model configs by name, names to run): ``run_models``, or with ``model=NAME`` that model and ``beside``."""
    models = dict(cfg.models)
    run_models = list(cfg.run_models)
    chosen = cfg.get("model")
    if chosen:
        name = str(chosen.name)
        models[name] = chosen
        run_models = [name, *(m for m in cfg.get("beside", []) if m != name)]
    unknown = [m for m in run_models if m not in models]
    if unknown:
        raise ValueError(f"run_models names {unknown} that have no config under models (have {list(models)})")
    return models, run_models


def split_kind(cfg: DictConfig, models: dict, run_models: list[str]) -> str:
    """``random`` or ``chronological`` (``auto``: chronological when a run model reads host graphs)."""
    split = str(cfg.get("split", "auto"))
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    graph_models = [m for m in run_models if make_detector(models[m].name, **_params(models[m])).input_kind
                    == HOST_GRAPHS]  # fmt: skip
    if split == "random" and graph_models:
        raise ValueError(f"{', '.join(graph_models)} read(s) host graphs: use split=chronological (or auto)")
    return "chronological" if split == "chronological" or (split == "auto" and graph_models) else "random"


def _params(model_cfg) -> dict:
    return OmegaConf.to_container(model_cfg.params, resolve=True) or {}


def run_centralized(cfg: DictConfig, out_dir: Path) -> dict:
    """Run every configured model for every seed; write metrics.json, results.md and plots to ``out_dir``."""
    import torch

    torch.set_num_threads(int(cfg.threads))
    protocol = ProtocolConfig(**OmegaConf.to_container(cfg.protocol, resolve=True))
    pipeline_config = PipelineConfig(**OmegaConf.to_container(cfg.pipeline, resolve=True))
    models, run_models = chosen_models(cfg)
    split = split_kind(cfg, models, run_models)
    graph_settings = GraphSettings(**OmegaConf.to_container(cfg.graph, resolve=True))
    dataset = from_dict(OmegaConf.to_container(cfg.dataset, resolve=True), DatasetSpec)
    table = load_dataset(dataset.name, dataset.data_dir or None, file=dataset.file or None,
                         bad_records=dataset.bad_records)  # type: ignore[arg-type]
    seeds = [int(s) for s in cfg.seeds]
    if not seeds:
        raise ValueError("seeds is empty: give at least one, e.g. seeds=[0]")
    if cfg.subsample:
        table = stratified_subsample(table, int(cfg.subsample), seeds[0])
    per_seed: dict[int, dict[str, dict]] = {}
    last_scores: dict[str, tuple] = {}
    data_info: dict = {}
    for seed in seeds:
        if split == "chronological":
            windows = prepare_windows(table, protocol, pipeline_config, graph_settings, float(cfg.val_fraction), seed)
            data_info[seed], y_test = windows.info, windows.rows("test")[1]
        else:
            data = prepare(table, protocol, pipeline_config, seed=seed)
            data_info[seed], y_test = data.info, data.y_test
        per_seed[seed] = {}
        for name in run_models:
            log.info("seed %d: training %s (%s split)", seed, name, split)
            if split == "chronological":
                metrics, scores, _ = train_and_score_windows(models[name].name, _params(models[name]), windows, seed,
                                                          protocol.smote)  # fmt: skip
            else:
                metrics, scores = train_and_score(models[name].name, _params(models[name]), data, seed)
            log.info("seed %d: %s accuracy %.4f f1 %.4f (%.1fs)", seed, name, metrics["accuracy"], metrics["f1"],
                     metrics["train_seconds"])  # fmt: skip
            per_seed[seed][name] = metrics
            last_scores[name] = (y_test, scores, metrics["roc_auc"])
    summary = medians(per_seed, run_models, SUMMARY_KEYS + (HOST_KEYS if split == "chronological" else ()))
    result = {
        "protocol": protocol.name,
        "split_kind": split,
        "leaky": protocol.leaky,
        "leaky_reason": LEAKY_MARK if protocol.leaky else None,
        "seeds": seeds,
        "data": {**table.summary(), "path": Path(table.path).name},  # file name only: no machine paths
        "split": data_info,
        "per_seed": {str(s): v for s, v in per_seed.items()},
        "median": summary,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    (out_dir / "results.md").write_text(markdown_table(summary, protocol.name, protocol.leaky, seeds, split))
    if cfg.plots:
        from simulation.plots import plot_confusion_matrices, plot_roc_curves

        title = f"{protocol.name}, {split} (seed {seeds[-1]})" + (" — LEAKY" if protocol.leaky else "")
        plot_confusion_matrices({n: per_seed[seeds[-1]][n]["confusion_matrix"] for n in run_models},
                                out_dir / "confusion_matrices.png", title)  # fmt: skip
        if split == "chronological":
            plot_confusion_matrices({n: per_seed[seeds[-1]][n]["host"]["confusion_matrix"] for n in run_models},
                                    out_dir / "host_confusion_matrices.png", f"hosts: {title}")  # fmt: skip
        plot_roc_curves(last_scores, out_dir / "roc_curves.png", title)
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="centralized")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = run_centralized(cfg, out_dir)
    except (FlowDataError, ValueError) as err:  # bad data or configuration: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(markdown_table(result["median"], result["protocol"], result["leaky"], result["seeds"], result["split_kind"]))
    print(f"outputs: {out_dir}")


def main() -> None:
    """Console entry point (``botdefender-centralized``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
