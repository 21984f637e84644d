"""The CNN-LSTM model family: the network, its centralized detector, its export form and its registry entry."""

from models.cnn_lstm.network import CNNLSTM, CNNLSTMDetector

__all__ = ["CNNLSTM", "CNNLSTMDetector"]
