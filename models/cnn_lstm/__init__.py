"""The CNN-LSTM model family: the network, its parameters, its centralized detector, its export form and its
registry entry (``family.FAMILY``)."""

from models.cnn_lstm.detector import CNNLSTMDetector
from models.cnn_lstm.network import CNNLSTM
from models.cnn_lstm.params import CNNLSTMParams

__all__ = ["CNNLSTM", "CNNLSTMDetector", "CNNLSTMParams"]
