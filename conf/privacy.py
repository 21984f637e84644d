"""The run's differential-privacy settings (the ``privacy`` section of :class:`conf.schema.RunSpec`)."""

from __future__ import annotations

from dataclasses import dataclass

from conf.errors import RunSpecError

PRIVACY_MODES = ("none", "dp_sgd", "central")
ACCOUNTANTS = ("rdp", "prv")
CLIPPING_SIDES = ("client", "server")


@dataclass
class PrivacySpec:
    """Differential privacy of the run. ``dp_sgd``: opacus DP-SGD on every client (record-level DP of each
    client's data, accounted over the whole run); ``central``: Flower's fixed-clipping wrapper around FedAvg
    (client-level DP of the global model, accounted on the server). See :mod:`models.dp` and
    :mod:`strategies.central_dp`. Settings that depend on the data (delta < 1/n, a reachable target epsilon) are
    checked once the clients' record counts are known, before round 1."""

    name: str = "none"  # none | dp_sgd | central
    noise_multiplier: float = 0.0  # sigma; dp_sgd: 0 derives it from target_epsilon; central: required
    target_epsilon: float = 0.0  # dp_sgd: the whole run's epsilon per client, from which its noise is derived
    max_grad_norm: float = 1.0  # dp_sgd: per-example gradient clipping bound
    delta: float = 1e-5  # dp_sgd: per client, < 1/(its training records); central: < 1/(number of clients)
    accountant: str = "rdp"  # dp_sgd: opacus accountant, rdp | prv (central always uses Flower's RdpAccountant)
    poisson_sampling: bool = True  # dp_sgd: Poisson-sampled batches (what the accountant assumes)
    max_epsilon: float = 0.0  # a client's budget (dp_sgd) or the run's (central): no round may exceed it; 0: none
    clipping_norm: float = 1.0  # central: L2 bound of each client's model update
    clipping: str = "client"  # central: client (fixedclipping_mod on every client) | server (the server clips)

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise RunSpecError(f"privacy={self.name}: {message}")

        if self.name not in PRIVACY_MODES:
            raise RunSpecError(f"privacy.name must be one of {', '.join(PRIVACY_MODES)}, got {self.name!r}")
        if self.name == "none":
            return
        if not 0.0 < self.delta < 1.0:
            fail(f"privacy.delta must be in (0, 1), got {self.delta}")
        if self.max_epsilon < 0:
            fail(f"privacy.max_epsilon must be >= 0 (0: no budget), got {self.max_epsilon}")
        if self.name == "dp_sgd":
            if self.noise_multiplier < 0 or self.target_epsilon < 0:
                fail(f"privacy.noise_multiplier and privacy.target_epsilon must be > 0, got "
                     f"{self.noise_multiplier} and {self.target_epsilon}")  # fmt: skip
            if (self.noise_multiplier > 0) == (self.target_epsilon > 0):
                fail("set exactly one of privacy.noise_multiplier > 0 (the noise) and privacy.target_epsilon > 0 "
                     f"(the run's epsilon, from which the noise is derived), got {self.noise_multiplier} and "
                     f"{self.target_epsilon}")  # fmt: skip
            if self.max_grad_norm <= 0:
                fail(f"privacy.max_grad_norm must be > 0, got {self.max_grad_norm}")
            if self.accountant not in ACCOUNTANTS:
                fail(f"privacy.accountant must be one of {', '.join(ACCOUNTANTS)}, got {self.accountant!r}")
            if self.max_epsilon and self.target_epsilon > self.max_epsilon:
                fail(f"privacy.target_epsilon {self.target_epsilon} exceeds the budget privacy.max_epsilon "
                     f"{self.max_epsilon}: the run could not finish")  # fmt: skip
        else:
            if self.noise_multiplier <= 0:
                fail(f"privacy.noise_multiplier must be > 0, got {self.noise_multiplier}")
            if self.clipping_norm <= 0:
                fail(f"privacy.clipping_norm must be > 0, got {self.clipping_norm}")
            if self.clipping not in CLIPPING_SIDES:
                fail(f"privacy.clipping must be one of {', '.join(CLIPPING_SIDES)}, got {self.clipping!r}")


def check_privacy_run(spec) -> None:
    """Refuse, in one line, privacy settings the rest of the run (``spec``: a RunSpec) makes meaningless."""
    privacy = spec.privacy
    if privacy.name == "none":
        return
    strategy = spec.strategy.name
    inner = str(spec.strategy.params.get("inner", "fedavg")) if strategy == "screening" else strategy
    if privacy.name == "dp_sgd":
        if spec.simulation.smote:
            raise RunSpecError("privacy=dp_sgd cannot run with simulation.smote=true: SMOTE's synthetic rows are "
                               "interpolated from real records, so one record would shape several examples and "
                               "the per-example guarantee would not hold")  # fmt: skip
        if inner == "fedprox":
            raise RunSpecError("privacy=dp_sgd cannot run with fedprox: its proximal term's gradient is not "
                               "clipped per example, so DP-SGD would not bound it")  # fmt: skip
        from models.registry import get_family

        for name in spec.model.family_names():
            refusal = get_family(name).dp_sgd_refusal
            if refusal:
                raise RunSpecError(f"privacy=dp_sgd is refused for the {name} family: {refusal}")
        return
    if strategy != "fedavg":
        raise RunSpecError(f"privacy=central needs strategy=fedavg, got {strategy!r}: the noise is calibrated to "
                           "the plain mean of the clipped updates, and a screening or robust aggregator chooses "
                           "updates by looking at all of them, so one client's influence would not be bounded by "
                           "the clipping norm")  # fmt: skip
    if spec.partition.n_clients and privacy.delta >= 1.0 / spec.partition.n_clients:
        raise RunSpecError(f"privacy.delta={privacy.delta:g} must be below 1/(number of clients) = "
                           f"{1.0 / spec.partition.n_clients:.3g} for client-level DP")  # fmt: skip
