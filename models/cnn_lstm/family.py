"""The CNN-LSTM's registry entry: one encoded flow row in, one logit out."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from models.cnn_lstm.params import CNNLSTMParams
from models.flow_rows import FlowRowFamily

__all__ = ["FAMILY", "CNNLSTMFamily"]


class CNNLSTMFamily(FlowRowFamily):
    """Conv1d + LSTM over the encoded feature vector (:class:`models.cnn_lstm.network.CNNLSTM`); exported in its
    unrolled form (:class:`models.cnn_lstm.export_form.UnrolledCNNLSTM`)."""

    name = "cnn_lstm"
    params_type = CNNLSTMParams
    modules = ("models.cnn_lstm",)  # the package: network, params, detector, export_form, family

    def build(self, n_features: int, params: Mapping) -> nn.Module:
        from models.cnn_lstm.network import CNNLSTM

        return CNNLSTM(int(n_features), **dict(params))

    def private_module(self, model: nn.Module) -> nn.Module:
        """A copy with ``nn.LSTM`` swapped for opacus's ``DPLSTM`` (same sizes, same state-dict keys and weights)."""
        import copy

        from opacus.layers import DPLSTM

        private = copy.deepcopy(model)
        lstm = model.lstm
        private.lstm = DPLSTM(input_size=lstm.input_size, hidden_size=lstm.hidden_size, num_layers=lstm.num_layers,
                              batch_first=lstm.batch_first)  # fmt: skip
        private.lstm.load_state_dict(lstm.state_dict())
        return self.checked_private(private)

    def export_form(self, model: nn.Module) -> nn.Module:
        from models.cnn_lstm.export_form import UnrolledCNNLSTM

        return UnrolledCNNLSTM(model.eval())

    def detector_class(self) -> type:
        from models.cnn_lstm.detector import CNNLSTMDetector

        return CNNLSTMDetector


FAMILY = CNNLSTMFamily()
