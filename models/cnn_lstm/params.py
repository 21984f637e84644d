"""The CNN-LSTM's architecture parameters: the only place their defaults are written."""

from dataclasses import dataclass

READOUTS = ("last", "mean", "max")


@dataclass(frozen=True)
class CNNLSTMParams:
    """Sizes of :class:`models.cnn_lstm.network.CNNLSTM` (``n_features`` comes from the pipeline, not from here).

    ``batch_norm`` defaults to False: opacus does not support BatchNorm (its validator swaps it for GroupNorm,
    which changes the state-dict keys) and BatchNorm statistics are a poor fit for non-IID federated clients.
    ``readout`` summarises the LSTM's outputs: its ``last`` step, or the ``mean`` or ``max`` over the steps.
    """

    conv_channels: int = 32
    kernel_size: int = 3
    pool: int = 2
    batch_norm: bool = False
    lstm_hidden: int = 64
    lstm_layers: int = 1
    dropout: float = 0.3
    dense: int = 32
    readout: str = "last"

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {self.kernel_size}")
        if self.pool < 1:
            raise ValueError(f"pool must be >= 1, got {self.pool}")
        for name in ("conv_channels", "lstm_hidden", "lstm_layers", "dense"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
