"""Pick CNN-LSTM sizes on an inner validation split of the TRAINING rows only (the test split is never read).

    python benchmarks/tune_cnn_lstm.py --protocol paper --config '{"pool": 4}' --config '{"lstm_hidden": 128}'

Each --config is a JSON dict of CNNLSTMDetector parameters over the defaults; prints one JSON line per config
with inner-validation accuracy/F1, epochs and seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from flows.loader import load_dataset
from flows.pipeline import PipelineConfig
from flows.protocols import ProtocolConfig, prepare
from models.baselines import make_detector
from models.cnn_lstm import CNNLSTMDetector
from models.evaluation import detection_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="paper", choices=["paper", "clean"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-category-count", type=int, default=100)
    parser.add_argument("--reference", action="store_true", help="also score XGBoost on the same split")
    parser.add_argument("--config", action="append", default=[], help="JSON dict of parameters")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("models.training").setLevel(logging.DEBUG)
    torch.set_num_threads(args.threads)
    pipeline = PipelineConfig(min_category_count=args.min_category_count)
    data = prepare(load_dataset("unsw-nb15"), ProtocolConfig(name=args.protocol), pipeline, seed=args.seed)
    logging.info("training matrix %s", data.X_train.shape)
    X, y = data.X_train, data.y_train  # the test matrix is deliberately not used
    fit_idx, val_idx = train_test_split(np.arange(len(y)), test_size=0.15, stratify=y, random_state=args.seed + 100)
    if args.reference:
        reference = make_detector("xgboost", seed=args.seed).fit(X[fit_idx], y[fit_idx])
        metrics = detection_metrics(y[val_idx], reference.predict_proba(X[val_idx]))
        print(json.dumps({"protocol": args.protocol, "reference": "xgboost", "inner_val_accuracy":
                          round(metrics["accuracy"], 4), "inner_val_f1": round(metrics["f1"], 4)}), flush=True)
    for text in args.config or ["{}"]:
        params = json.loads(text)
        detector = CNNLSTMDetector(seed=args.seed, progress=False, **params)
        started = time.perf_counter()
        detector.fit(X[fit_idx], y[fit_idx])
        seconds = time.perf_counter() - started
        metrics = detection_metrics(y[val_idx], detector.predict_proba(X[val_idx]))
        print(json.dumps({"protocol": args.protocol, "params": params, "inner_val_accuracy": round(metrics["accuracy"], 4),
                          "inner_val_f1": round(metrics["f1"], 4), "epochs": detector.history_.epochs_run,
                          "seconds": round(seconds, 1)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
