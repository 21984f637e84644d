"""The bundle's model on the LiteRT interpreter (ai-edge-litert + numpy): encoded rows -> attack probabilities.

For bundles whose gateway input is ``flow_rows`` (one encoded row per flow).

Converted models have a fixed batch size (see :mod:`gateway.export`), so there is one interpreter per exported
batch size: full batches go to the largest, a remainder to the smallest model that holds it (padded with zero
rows, whose outputs are dropped). Full-integer models take and give int8: inputs are quantized and outputs
dequantized with the tensors' scale and zero point.
"""

from __future__ import annotations

import numpy as np

from gateway.bundle import Bundle, BundleError


class _Runner:
    """One interpreter for one batch size."""

    def __init__(self, model: bytes, num_threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=model, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = int(self.input["shape"][0])

    def logits(self, rows: np.ndarray) -> np.ndarray:
        """Logits of exactly ``self.batch`` rows."""
        x = rows
        if self.input["dtype"] != np.float32:
            scale, zero = self.input["quantization"]
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(rows / scale) + zero, info.min, info.max).astype(self.input["dtype"])
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"]).reshape(-1)
        if self.output["dtype"] != np.float32:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        if len(y) != self.batch:
            raise RuntimeError(f"model returned {len(y)} outputs for a batch of {self.batch}")
        return y.astype(np.float32)


class VerdictModel:
    """Probabilities of attack for encoded flow rows, with the bundle's threshold."""

    def __init__(self, bundle: Bundle, variant: str | None = None, num_threads: int = 1) -> None:
        if bundle.gateway_input != "flow_rows":
            raise BundleError(f"{bundle.path}: VerdictModel scores flow rows; this bundle's gateway input is "
                              f"{bundle.gateway_input!r}")  # fmt: skip
        self.bundle = bundle
        self.variant = variant or bundle.manifest["default_model"]
        self.runners = {b: _Runner(bundle.model_content(self.variant, b), num_threads) for b in bundle.batch_sizes}
        n_features = int(bundle.manifest["features"]["n_features"])
        for runner in self.runners.values():
            if int(runner.input["shape"][1]) != n_features:
                raise ValueError(f"{bundle.path}: a model reads {runner.input['shape'][1]} features, the manifest "
                                 f"says {n_features}")  # fmt: skip
        self.threshold = bundle.threshold

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float32)
        out = np.empty(len(rows), dtype=np.float32)
        largest = max(self.runners)
        start = 0
        while start < len(rows):
            remaining = len(rows) - start
            batch = largest if remaining >= largest else min(b for b in self.runners if b >= remaining)
            chunk = rows[start : start + batch]
            if len(chunk) < batch:
                chunk = np.vstack([chunk, np.zeros((batch - len(chunk), rows.shape[1]), np.float32)])
            take = min(batch, remaining)
            out[start : start + take] = self.runners[batch].logits(chunk)[:take]
            start += take
        return 1.0 / (1.0 + np.exp(-out))
