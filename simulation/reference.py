"""The run's model trained centrally on a federated run's own split: what federation is measured against.

Trains on the union of the clients' rows (the run's TRAIN split) with the pipeline settings the federated run
uses, and scores the same held-out TEST split the server evaluates on. Early stopping uses a validation share
carved from the training rows only.
"""

from __future__ import annotations

import time

import numpy as np
from omegaconf import DictConfig

from conf.schema import data_settings
from flows.pipeline import FeaturePipeline, PipelineConfig
from flows.run_split import load_split
from flows.table import LABEL
from models.baselines import make_detector
from models.evaluation import detection_metrics
from simulation.config import specs


def centralized_reference(cfg: DictConfig, seed: int | None = None) -> dict:
    """Metrics (and train seconds) of the centralized ``cfg.model`` on the split of the federated ``cfg``."""
    spec, _ = specs(cfg)
    train, test = load_split(data_settings(spec))
    config = PipelineConfig(**vars(spec.pipeline))
    pipeline = FeaturePipeline(config).fit(train)
    X_train, X_test = pipeline.transform(train.frame), pipeline.transform(test.frame)
    y_train = train.frame[LABEL].to_numpy(dtype=np.int64)
    y_test = test.frame[LABEL].to_numpy(dtype=np.int64)
    detector = make_detector(spec.model.name, seed=spec.seed if seed is None else seed, **spec.model.params)
    started = time.perf_counter()
    detector.fit(X_train, y_train)
    metrics = detection_metrics(y_test, detector.predict_proba(X_test), threshold=pipeline.state_.threshold)
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    metrics["train_records"], metrics["test_records"] = len(y_train), len(y_test)
    return metrics
