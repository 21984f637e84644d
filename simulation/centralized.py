"""Centralized benchmark: all detectors on one protocol of UNSW-NB15, several seeds, medians reported.

    python -m simulation.centralized                       # protocol=paper, seed 0
    python -m simulation.centralized protocol=clean seeds=[0,1,2]
    python -m simulation.centralized -m protocol=paper,clean

Writes into the Hydra run directory: ``metrics.json`` (per seed and model: accuracy, precision, recall, f1,
roc_auc, confusion matrix, train seconds, model bytes; medians over seeds), ``results.md`` and PNG plots.
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

from conf.schema import DatasetSpec, from_dict
from flows.errors import FlowDataError
from flows.loader import load_dataset
from flows.pipeline import PipelineConfig
from flows.protocols import PreparedData, ProtocolConfig, prepare, stratified_subsample
from models.baselines import make_detector
from models.evaluation import detection_metrics
from simulation.config import CONF_DIR

log = logging.getLogger(__name__)
SUMMARY_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "train_seconds", "model_bytes")
LEAKY_MARK = "LEAKY (SMOTE before split)"


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


def medians(per_seed: dict[int, dict[str, dict]], model_names: list[str]) -> dict[str, dict]:
    return {
        name: {key: statistics.median(run[name][key] for run in per_seed.values()) for key in SUMMARY_KEYS}
        for name in model_names
    }


def markdown_table(summary: dict[str, dict], protocol: str, leaky: bool, seeds: list[int]) -> str:
    mark = f" — {LEAKY_MARK}" if leaky else ""
    lines = [
        f"Protocol `{protocol}`{mark}; median over seeds {seeds}",
        "",
        "| model | accuracy | precision | recall | F1 | ROC AUC | train s | model bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary.items():
        lines.append(
            f"| {name} | {m['accuracy']:.4f} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | "
            f"{m['roc_auc']:.4f} | {m['train_seconds']:.1f} | {int(m['model_bytes']):,} |"
        )
    return "\n".join(lines) + "\n"


def run_centralized(cfg: DictConfig, out_dir: Path) -> dict:
    """Run every configured model for every seed; write metrics.json, results.md and plots to ``out_dir``."""
    import torch

    torch.set_num_threads(int(cfg.threads))
    protocol = ProtocolConfig(**OmegaConf.to_container(cfg.protocol, resolve=True))
    pipeline_config = PipelineConfig(**OmegaConf.to_container(cfg.pipeline, resolve=True))
    unknown = [m for m in cfg.run_models if m not in cfg.models]
    if unknown:
        raise ValueError(f"run_models names {unknown} that have no config under models (have {list(cfg.models)})")
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
        data = prepare(table, protocol, pipeline_config, seed=seed)
        data_info[seed] = data.info
        per_seed[seed] = {}
        for name in cfg.run_models:
            params = OmegaConf.to_container(cfg.models[name].params, resolve=True) or {}
            log.info("seed %d: training %s on %s rows x %d features", seed, name, len(data.y_train),
                     data.X_train.shape[1])  # fmt: skip
            metrics, scores = train_and_score(cfg.models[name].name, params, data, seed)
            log.info("seed %d: %s accuracy %.4f f1 %.4f (%.1fs)", seed, name, metrics["accuracy"], metrics["f1"],
                     metrics["train_seconds"])  # fmt: skip
            per_seed[seed][name] = metrics
            last_scores[name] = (data.y_test, scores, metrics["roc_auc"])
    summary = medians(per_seed, list(cfg.run_models))
    result = {
        "protocol": protocol.name,
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
    (out_dir / "results.md").write_text(markdown_table(summary, protocol.name, protocol.leaky, seeds))
    if cfg.plots:
        from simulation.plots import plot_confusion_matrices, plot_roc_curves

        title = f"{protocol.name} (seed {seeds[-1]})" + (" — LEAKY" if protocol.leaky else "")
        plot_confusion_matrices({n: per_seed[seeds[-1]][n]["confusion_matrix"] for n in cfg.run_models},
                                out_dir / "confusion_matrices.png", title)  # fmt: skip
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
    print(markdown_table(result["median"], result["protocol"], result["leaky"], result["seeds"]))
    print(f"outputs: {out_dir}")


def main() -> None:
    """Console entry point (``botdefender-centralized``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
