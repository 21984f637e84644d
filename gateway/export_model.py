"""The CNN-LSTM written out step by step for conversion, with the trained weights of a :class:`CNNLSTM`.

Why by hand: litert-torch 0.10 lowers ``nn.LSTM`` by unrolling it (no fused LSTM op) and bakes batch-shaped
constants into the flatbuffer: the summed gate biases broadcast to (batch, 4 x hidden) and the zero initial
states. At batch 256 those fp32 constants outweigh all the weights, and the int8 quantizer leaves them in fp32,
so the int8 model came out only 1.2x smaller than the fp32 one. Here the biases stay vectors (added by
broadcasting), the first step needs no initial state (h0 = c0 = 0), and the outputs equal ``CNNLSTM``'s
(checked in the tests).
"""

from __future__ import annotations

import torch
from torch import nn

from models.cnn_lstm import CNNLSTM


class UnrolledCNNLSTM(nn.Module):
    """Same function as the given :class:`CNNLSTM` in eval mode (dropout is the identity)."""

    def __init__(self, model: CNNLSTM) -> None:
        super().__init__()
        self.conv, self.norm, self.act, self.pool = model.conv, model.norm, model.act, model.pool
        self.fc1, self.fc_act, self.out = model.fc1, model.fc_act, model.out
        self.readout = model.readout
        self.hidden = model.lstm.hidden_size
        self.layers = nn.ModuleList()
        for layer in range(model.lstm.num_layers):
            step = nn.ModuleDict({
                "input": nn.Linear(model.lstm.input_size if layer == 0 else self.hidden, 4 * self.hidden),
                "recurrent": nn.Linear(self.hidden, 4 * self.hidden, bias=False),
            })  # fmt: skip
            with torch.no_grad():
                step["input"].weight.copy_(getattr(model.lstm, f"weight_ih_l{layer}"))
                step["input"].bias.copy_(getattr(model.lstm, f"bias_ih_l{layer}") +
                                         getattr(model.lstm, f"bias_hh_l{layer}"))  # fmt: skip
                step["recurrent"].weight.copy_(getattr(model.lstm, f"weight_hh_l{layer}"))
            self.layers.append(step)
        self.eval()

    def _cell(self, gates: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = gates.chunk(4, dim=-1)  # PyTorch's gate order
        c_new = torch.sigmoid(i) * torch.tanh(g)
        if c is not None:
            c_new = c_new + torch.sigmoid(f) * c
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence = self.pool(self.act(self.norm(self.conv(x.unsqueeze(1))))).permute(2, 0, 1)  # (T, B, C)
        n_steps, batch = sequence.shape[0], sequence.shape[1]
        rows = sequence.reshape(n_steps * batch, -1)  # time-major rows: step t is rows t*B .. (t+1)*B
        for layer in self.layers:
            # One matmul projects every step; step t's gates input is then a contiguous block of rows (batch-major
            # slices were strided copies plus a reshape each; time-major measured faster and has fewer operators).
            projected = layer["input"](rows)  # (T * B, 4H)
            hidden, cell, outputs = None, None, []
            for t in range(n_steps):
                step = projected[t * batch : (t + 1) * batch]
                gates = step if hidden is None else step + layer["recurrent"](hidden)
                hidden, cell = self._cell(gates, cell)
                outputs.append(hidden)
            rows = torch.cat(outputs, dim=0)
        if self.readout == "max":
            summary = rows.reshape(n_steps, batch, -1).amax(dim=0)
        elif self.readout == "mean":
            summary = rows.reshape(n_steps, batch, -1).mean(dim=0)
        else:
            summary = hidden
        return self.out(self.fc_act(self.fc1(summary))).squeeze(-1)
