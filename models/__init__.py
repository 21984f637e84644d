"""Flow classifiers: the Detector interface, baselines, the CNN-LSTM, training loops, weight helpers."""

from models.base import Detector
from models.baselines import (
    DETECTOR_NAMES,
    LogRegDetector,
    RandomForestDetector,
    XGBoostDetector,
    make_detector,
)
from models.cnn_lstm import CNNLSTM, CNNLSTMDetector
from models.training import TrainHistory, predict_logits, train_torch_classifier
from models.weights import get_weights, set_weights, weight_keys

__all__ = [
    "CNNLSTM",
    "CNNLSTMDetector",
    "DETECTOR_NAMES",
    "Detector",
    "LogRegDetector",
    "RandomForestDetector",
    "TrainHistory",
    "XGBoostDetector",
    "get_weights",
    "make_detector",
    "predict_logits",
    "set_weights",
    "train_torch_classifier",
    "weight_keys",
]
