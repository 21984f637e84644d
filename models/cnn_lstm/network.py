"""CNN-LSTM flow classifier network.

The preprocessed feature vector (batch, n_features) is read as a one-channel
sequence: Conv1d -> (BatchNorm) -> ReLU -> MaxPool1d gives n_features // pool steps
with ``conv_channels`` values each, an LSTM reads them, and a readout of its outputs
(``last`` step, or ``mean``/``max`` over the steps) goes through dropout -> Linear -> ReLU -> Linear(1) to a logit.
The sizes and their defaults are :class:`models.cnn_lstm.params.CNNLSTMParams`.

Export and DP constraints honoured here:
- fixed sequence length, plain ``nn.LSTM`` (batch_first), no packed sequences and no
  data-dependent control flow in ``forward`` (litert-torch unrolls the LSTM);
- the LSTM is the direct attribute ``lstm`` so opacus can swap it for ``DPLSTM``
  (same state-dict keys).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.cnn_lstm.params import CNNLSTMParams
from models.family import resolve_params

__all__ = ["CNNLSTM"]


class CNNLSTM(nn.Module):
    """Conv1d + LSTM binary classifier over a tabular feature vector; outputs logits (batch,).

    ``params`` are fields of :class:`CNNLSTMParams` (the rest take its defaults); an unknown name, a value of the
    wrong type or an invalid size raises ValueError naming it. ``self.params`` holds every field."""

    def __init__(self, n_features: int, **params: Any) -> None:
        super().__init__()
        self.params = resolve_params(CNNLSTMParams, params, "cnn_lstm")
        p = CNNLSTMParams(**self.params)
        if n_features < 1 or n_features // p.pool < 1:
            raise ValueError(f"pool={p.pool} leaves no sequence steps for n_features={n_features}")
        self.readout = p.readout
        self.n_features = n_features
        self.seq_len = n_features // p.pool
        self.conv = nn.Conv1d(1, p.conv_channels, p.kernel_size, padding=p.kernel_size // 2)
        self.norm: nn.Module = nn.BatchNorm1d(p.conv_channels) if p.batch_norm else nn.Identity()
        self.act = nn.ReLU()
        self.pool = nn.MaxPool1d(p.pool)
        self.lstm = nn.LSTM(
            input_size=p.conv_channels,
            hidden_size=p.lstm_hidden,
            num_layers=p.lstm_layers,
            batch_first=True,
        )
        self.dropout = nn.Dropout(p.dropout)
        self.fc1 = nn.Linear(p.lstm_hidden, p.dense)
        self.fc_act = nn.ReLU()
        self.out = nn.Linear(p.dense, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, n_features) float -> logits (batch,)."""
        h = x.unsqueeze(1)                        # (B, 1, F)
        h = self.pool(self.act(self.norm(self.conv(h))))  # (B, C, F // pool)
        h = h.transpose(1, 2)                     # (B, T, C)
        seq, _ = self.lstm(h)                     # (B, T, H)
        if self.readout == "max":                 # fixed at construction: no data-dependent flow
            summary = seq.amax(dim=1)
        elif self.readout == "mean":
            summary = seq.mean(dim=1)
        else:
            summary = seq[:, -1, :]               # last step of the top layer
        z = self.fc_act(self.fc1(self.dropout(summary)))
        return self.out(z).squeeze(-1)
