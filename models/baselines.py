"""Baseline classifiers (scikit-learn, XGBoost) behind the Detector interface, and the factory that also builds
every model family's centralized detector."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from xgboost import XGBClassifier

from models.base import Detector, as_features, as_labels

__all__ = [
    "LogRegDetector",
    "RandomForestDetector",
    "XGBoostDetector",
    "DETECTOR_NAMES",
    "ESTIMATORS",
    "detector_names",
    "make_detector",
]

log = logging.getLogger(__name__)


class _EstimatorDetector(Detector):
    """Shared plumbing for estimators with a scikit-learn ``predict_proba``.

    ``params`` override the class defaults and are passed to the estimator's constructor
    at fit time; unknown names fail in ``__init__`` (except for XGBoost, which accepts
    any keyword).
    """

    defaults: dict[str, Any] = {}

    def __init__(self, seed: int = 0, **params: Any) -> None:
        self.seed = seed
        self.params = {**self.defaults, **params}
        self.model_: Any = None
        self._check_params()

    def _estimator_class(self) -> type:
        raise NotImplementedError

    def _check_params(self) -> None:
        valid = set(self._estimator_class()().get_params())
        unknown = set(self.params) - valid
        if unknown:
            raise ValueError(f"unknown {self.name} parameter(s) {sorted(unknown)}; valid: {sorted(valid)}")

    def _build(self) -> Any:
        return self._estimator_class()(random_state=self.seed, **self.params)

    def _fit_data(self, X_train: np.ndarray, y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = as_features(X_train)
        y = as_labels(y_train, len(X))
        if len(np.unique(y)) < 2:
            raise ValueError(f"{self.name} needs both classes in y_train, got only {np.unique(y).tolist()}")
        return X, y

    def fit(
        self,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> "_EstimatorDetector":
        X, y = self._fit_data(X_train, y_train)
        self.model_ = self._build().fit(X, y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError(f"{self.name}: call fit() before predict_proba()")
        proba = self.model_.predict_proba(as_features(X))
        col = int(np.flatnonzero(np.asarray(self.model_.classes_) == 1)[0])
        return np.asarray(proba[:, col], dtype=np.float64)


class LogRegDetector(_EstimatorDetector):
    """L2-regularised logistic regression (lbfgs)."""

    name = "logreg"
    defaults = {"max_iter": 2000}

    def _estimator_class(self) -> type:
        return LogisticRegression


class RandomForestDetector(_EstimatorDetector):
    """Random forest with 100 trees on all cores."""

    name = "random_forest"
    defaults = {"n_estimators": 100, "n_jobs": -1}

    def _estimator_class(self) -> type:
        return RandomForestClassifier


class XGBoostDetector(_EstimatorDetector):
    """Gradient-boosted trees (``hist``); early stopping on (X_val, y_val) when given."""

    name = "xgboost"
    defaults = {
        "n_estimators": 400,
        "max_depth": 7,
        "learning_rate": 0.1,
        "tree_method": "hist",
        "n_jobs": -1,
        "eval_metric": "logloss",
        "early_stopping_rounds": 20,
    }

    def _estimator_class(self) -> type:
        return XGBClassifier

    def _check_params(self) -> None:  # XGBClassifier takes arbitrary keywords
        pass

    def fit(
        self,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> "XGBoostDetector":
        X, y = self._fit_data(X_train, y_train)
        params = dict(self.params)
        if X_val is None or y_val is None:
            params.pop("early_stopping_rounds", None)  # xgboost refuses it without an eval set
            self.model_ = XGBClassifier(random_state=self.seed, **params).fit(X, y, verbose=False)
        else:
            Xv = as_features(X_val)
            yv = as_labels(y_val, len(Xv))
            self.model_ = XGBClassifier(random_state=self.seed, **params).fit(
                X, y, eval_set=[(Xv, yv)], verbose=False
            )
            if params.get("early_stopping_rounds"):
                log.info("xgboost: best iteration %d of %d", self.model_.best_iteration, params["n_estimators"])
        return self

    def n_bytes(self) -> int:
        if self.model_ is None:
            raise RuntimeError("xgboost: call fit() before n_bytes()")
        return len(self.model_.get_booster().save_raw(raw_format="ubj"))


ESTIMATORS: dict[str, type[Detector]] = {
    "logreg": LogRegDetector,
    "random_forest": RandomForestDetector,
    "xgboost": XGBoostDetector,
}


def detector_names() -> tuple[str, ...]:
    """The baselines, then every model family (a family's centralized detector is its ``detector_class()``)."""
    from models.registry import family_names

    return (*ESTIMATORS, *family_names())


DETECTOR_NAMES: tuple[str, ...] = detector_names()


def make_detector(name: str, seed: int = 0, **params: Any) -> Detector:
    """Build an unfitted detector by name; ``params`` override its defaults.

    Valid names: ``DETECTOR_NAMES``. Raises ValueError on an unknown name or parameter.
    """
    if name in ESTIMATORS:
        return ESTIMATORS[name](seed=seed, **params)
    from models.registry import UnknownModelFamily, get_family

    try:
        family = get_family(name)
    except UnknownModelFamily:
        raise ValueError(f"unknown detector {name!r}; valid names: {', '.join(detector_names())}") from None
    cls = family.detector_class()
    if cls is None:
        raise ValueError(f"model family {name!r} has no centralized detector")
    return cls(seed=seed, **params)
