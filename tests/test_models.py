"""Tests for models/: shapes, learning on a separable problem, early stopping, weights, factory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from models.base import Detector
from models.baselines import DETECTOR_NAMES, make_detector
from models.cnn_lstm import CNNLSTM, CNNLSTMDetector
from models.training import predict_logits, train_torch_classifier
from models.weights import get_weights, set_weights, weight_keys

SMALL_NET = dict(conv_channels=8, lstm_hidden=16, dense=16, dropout=0.1)
FAST_TRAIN = dict(epochs=15, batch_size=64, lr=3e-3, patience=3, progress=False)


@pytest.fixture(scope="module")
def separable() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """2,000 training and 1,000 held-out rows, 12 scaled features, well separated classes."""
    X, y = make_classification(
        n_samples=3000, n_features=12, n_informative=6, n_redundant=2,
        class_sep=2.0, flip_y=0.0, random_state=0,
    )
    X = X.astype(np.float32)
    X_tr, X_te, y_tr, y_te = X[:2000], X[2000:], y[:2000], y[2000:]
    scaler = StandardScaler().fit(X_tr)
    return (scaler.transform(X_tr).astype(np.float32), y_tr,
            scaler.transform(X_te).astype(np.float32), y_te)


@pytest.mark.parametrize("n_features,pool", [(12, 2), (40, 2), (7, 3), (5, 1)])
def test_cnnlstm_output_shape(n_features: int, pool: int) -> None:
    model = CNNLSTM(n_features, pool=pool, **SMALL_NET)
    assert model.seq_len == n_features // pool
    out = model(torch.randn(9, n_features))
    assert out.shape == (9,)
    assert out.dtype == torch.float32


def test_cnnlstm_has_plain_lstm_attribute_and_batchnorm_option() -> None:
    model = CNNLSTM(12, batch_norm=True, **SMALL_NET)
    assert type(model.lstm) is torch.nn.LSTM and model.lstm.batch_first
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert model.train()(torch.randn(4, 12)).shape == (4,)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in CNNLSTM(12).modules())


def test_cnnlstm_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        CNNLSTM(12, kernel_size=4)
    with pytest.raises(ValueError, match="pool"):
        CNNLSTM(3, pool=4)


# detectors that read encoded flow rows; host-graph detectors are trained on windows in tests/test_gcn_family.py
FLOW_ROW_DETECTORS = [name for name in DETECTOR_NAMES if make_detector(name, seed=0).input_kind == "flow_rows"]


def test_every_detector_is_tested_on_its_own_input() -> None:
    others = sorted(set(DETECTOR_NAMES) - set(FLOW_ROW_DETECTORS))
    assert {"logreg", "xgboost", "cnn_lstm"} <= set(FLOW_ROW_DETECTORS) and others == ["gcn"]


@pytest.mark.parametrize("name", FLOW_ROW_DETECTORS)
def test_detectors_learn_separable_problem(name: str, separable) -> None:
    X_tr, y_tr, X_te, y_te = separable
    params = {**SMALL_NET, **FAST_TRAIN} if name == "cnn_lstm" else {}
    if name == "xgboost":
        params = {"n_estimators": 100}
    det = make_detector(name, seed=0, **params)
    assert isinstance(det, Detector) and det.name == name
    assert det.fit(X_tr, y_tr) is det
    proba = det.predict_proba(X_te)
    assert proba.shape == (len(X_te),)
    assert np.all((proba >= 0) & (proba <= 1))
    pred = det.predict(X_te)
    assert set(np.unique(pred)) <= {0, 1}
    assert np.array_equal(pred, (proba >= 0.5).astype(int))
    acc = float(np.mean(pred == y_te))
    assert acc > 0.9, f"{name} accuracy {acc:.3f}"
    assert det.n_bytes() > 0


def test_xgboost_early_stopping_with_validation(separable) -> None:
    X_tr, y_tr, X_te, y_te = separable
    det = make_detector("xgboost", seed=0, n_estimators=300, early_stopping_rounds=5)
    det.fit(X_tr[:1600], y_tr[:1600], X_tr[1600:], y_tr[1600:])
    assert det.model_.best_iteration < 299
    assert np.mean(det.predict(X_te) == y_te) > 0.9


def test_cnnlstm_detector_uses_given_validation_set(separable) -> None:
    X_tr, y_tr, _, _ = separable
    det = CNNLSTMDetector(seed=0, **SMALL_NET, **{**FAST_TRAIN, "epochs": 2})
    det.fit(X_tr[:1500], y_tr[:1500], X_tr[1500:], y_tr[1500:])
    assert det.history_ is not None and det.history_.epochs_run == 2
    assert len(det.history_.val_accuracy) == 2


def test_cnnlstm_detector_same_seed_same_predictions(separable) -> None:
    X_tr, y_tr, X_te, _ = separable
    params = {**SMALL_NET, **FAST_TRAIN, "epochs": 3}
    p1 = CNNLSTMDetector(seed=7, **params).fit(X_tr, y_tr).predict_proba(X_te)
    p2 = CNNLSTMDetector(seed=7, **params).fit(X_tr, y_tr).predict_proba(X_te)
    p3 = CNNLSTMDetector(seed=8, **params).fit(X_tr, y_tr).predict_proba(X_te)
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, p3)


def test_early_stopping_stops_and_restores_best_weights(separable) -> None:
    X_tr, y_tr, _, _ = separable
    # Validation labels are flipped: the better the fit, the higher the validation loss.
    X_val, y_val = X_tr[:400], 1 - y_tr[:400]
    torch.manual_seed(0)
    model = CNNLSTM(12, **SMALL_NET)
    hist = train_torch_classifier(
        model, X_tr, y_tr, X_val, y_val, epochs=20, batch_size=64, lr=3e-3, patience=2, progress=False
    )
    assert hist.stopped_early and hist.epochs_run < 20
    assert hist.epochs_run == hist.best_epoch + 1 + 2
    assert max(hist.val_loss) > hist.val_loss[hist.best_epoch]
    # The restored weights give exactly the best epoch's validation loss.
    logits = torch.from_numpy(predict_logits(model, X_val))
    restored = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(y_val, dtype=torch.float32)))
    assert restored == pytest.approx(hist.val_loss[hist.best_epoch], rel=1e-5)
    assert restored < hist.val_loss[-1]
    assert hist.seconds > 0


def test_predict_logits_restores_mode() -> None:
    model = CNNLSTM(12, **SMALL_NET).train()
    out = predict_logits(model, np.random.default_rng(0).normal(size=(10, 12)).astype(np.float32), batch_size=3)
    assert out.shape == (10,) and model.training


def test_weights_round_trip_gives_identical_outputs() -> None:
    torch.manual_seed(0)
    src = CNNLSTM(12, batch_norm=True, **SMALL_NET)
    torch.manual_seed(1)
    dst = CNNLSTM(12, batch_norm=True, **SMALL_NET)
    x = np.random.default_rng(0).normal(size=(32, 12)).astype(np.float32)
    src.train()(torch.from_numpy(x))  # update BatchNorm running stats (buffers travel too)
    arrays = get_weights(src)
    assert len(arrays) == len(weight_keys(src))
    assert all(isinstance(a, np.ndarray) for a in arrays)
    assert not np.array_equal(predict_logits(src, x), predict_logits(dst, x))
    set_weights(dst, arrays)
    np.testing.assert_array_equal(predict_logits(src, x), predict_logits(dst, x))
    arrays[0][...] = 0  # returned arrays are copies, not views of the model
    assert not np.all(src.state_dict()[weight_keys(src)[0]].numpy() == 0)


def test_set_weights_mismatch_names_the_key() -> None:
    model = CNNLSTM(12, **SMALL_NET)
    keys = weight_keys(model)
    arrays = get_weights(model)
    with pytest.raises(ValueError, match=keys[-1].replace(".", r"\.")):
        set_weights(model, arrays[:-1])
    bad = list(arrays)
    i = keys.index("lstm.weight_ih_l0")
    bad[i] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"lstm\.weight_ih_l0"):
        set_weights(model, bad)
    with pytest.raises(ValueError, match="expects"):
        set_weights(model, arrays + [np.zeros(1)])


def test_make_detector_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown detector 'svm'.*logreg.*random_forest.*xgboost.*cnn_lstm"):
        make_detector("svm", seed=0)


def test_unknown_parameters_raise() -> None:
    with pytest.raises(ValueError, match="unknown cnn_lstm parameter"):
        make_detector("cnn_lstm", seed=0, hidden=3)
    with pytest.raises(ValueError, match="unknown random_forest parameter"):
        make_detector("random_forest", seed=0, trees=3)


def test_baseline_rejects_single_class_and_non_binary_labels() -> None:
    X = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="both classes"):
        make_detector("logreg", seed=0).fit(X, np.ones(10, dtype=int))
    with pytest.raises(ValueError, match="0/1"):
        make_detector("logreg", seed=0).fit(X, np.arange(10))


def test_cnnlstm_carves_validation_when_single_class() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6)).astype(np.float32)
    det = CNNLSTMDetector(seed=0, **SMALL_NET, **{**FAST_TRAIN, "epochs": 1}).fit(X, np.zeros(50, dtype=int))
    assert det.predict_proba(X).shape == (50,)
    with pytest.raises(ValueError, match="fitted on 6 features"):
        det.predict_proba(X[:, :5])
