"""Build a Flower strategy from its config name and parameters, checked before anything starts.

Every strategy is Flower's own class (``flwr.serverapp.strategy``) used as it is, behind
:class:`strategies.deterministic.DeterministicMixin` for seeded sampling and ordered aggregation. The name
``screening`` wraps any of them (``params.inner``, ``params.inner_params``) in
:class:`strategies.screening_strategy.ScreeningStrategy`; its other params are :class:`ScreeningConfig` fields.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from flwr.serverapp import strategy as flwr_strategy

from strategies.deterministic import DeterministicMixin
from strategies.screening import ScreeningConfig

STRATEGIES: dict[str, type] = {
    "fedavg": flwr_strategy.FedAvg,
    "fedprox": flwr_strategy.FedProx,
    "fedavgm": flwr_strategy.FedAvgM,
    "fedadam": flwr_strategy.FedAdam,
    "fedmedian": flwr_strategy.FedMedian,
    "fedtrimmedavg": flwr_strategy.FedTrimmedAvg,
    "krum": flwr_strategy.Krum,
    "multikrum": flwr_strategy.MultiKrum,
    "bulyan": flwr_strategy.Bulyan,
}
# set by the harness, not by the strategy config
MANAGED = {"fraction_train", "fraction_evaluate", "min_train_nodes", "min_evaluate_nodes", "min_available_nodes"}
_CLASSES: dict[str, type] = {}


class StrategyConfigError(ValueError):
    """An unknown strategy, an unknown parameter or a combination the strategy cannot run."""


SCREENING = "screening"
ROBUST_PARAMS = {"fltrust": set(), "flame": {"noise_lambda"}, "centered_clipping": {"iterations", "tau"}}
ALL_NAMES = (*sorted(STRATEGIES), *ROBUST_PARAMS, SCREENING)


def split_screening_params(params: Mapping[str, Any]) -> tuple[str, dict, ScreeningConfig]:
    """(inner name, inner params, screening config) of the ``screening`` strategy's params."""
    rest = dict(params)
    inner = str(rest.pop("inner", "fedavg"))
    inner_params = dict(rest.pop("inner_params", None) or {})
    if inner == SCREENING:
        raise StrategyConfigError("strategy screening cannot wrap itself")
    unknown = sorted(set(rest) - set(ScreeningConfig.__dataclass_fields__))
    if unknown:
        fields = ", ".join(ScreeningConfig.__dataclass_fields__)
        raise StrategyConfigError(f"strategy screening: unknown parameter(s) {', '.join(unknown)}; "
                                  f"accepted: inner, inner_params, {fields}")  # fmt: skip
    try:
        config = ScreeningConfig(**rest)
    except ValueError as err:
        raise StrategyConfigError(f"strategy screening: {err}") from None
    return inner, inner_params, config


def strategy_class(name: str) -> type:
    """``DeterministicMixin`` + Flower's class for ``name`` (one class object per name)."""
    if name not in STRATEGIES:
        raise StrategyConfigError(f"unknown strategy {name!r}: available {', '.join(ALL_NAMES)}")
    if name not in _CLASSES:
        base = STRATEGIES[name]
        _CLASSES[name] = type(f"Deterministic{base.__name__}", (DeterministicMixin, base), {})
    return _CLASSES[name]


def sampled_count(n_nodes: int, fraction: float, minimum: int) -> int:
    """How many nodes Flower samples: ``max(int(n * fraction), minimum)``."""
    return max(int(n_nodes * fraction), minimum)


def check_strategy(name: str, params: Mapping[str, Any], n_nodes: int, fraction_train: float,
                   fraction_evaluate: float, min_nodes: int = 2) -> None:  # fmt: skip
    """Raise :class:`StrategyConfigError` with one clear line for what the strategy could not run."""
    if name == SCREENING:
        inner, inner_params, _ = split_screening_params(params)
        return check_strategy(inner, inner_params, n_nodes, fraction_train, fraction_evaluate, min_nodes)
    if name in ROBUST_PARAMS:
        accepted = ROBUST_PARAMS[name]
    else:
        strategy_class(name)  # raises for an unknown name
        accepted = set(inspect.signature(STRATEGIES[name].__init__).parameters) - {"self"} - MANAGED
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise StrategyConfigError(f"strategy {name}: unknown parameter(s) {', '.join(unknown)}; "
                                  f"accepted: {', '.join(sorted(accepted))}")  # fmt: skip
    for label, fraction in (("fraction_train", fraction_train), ("fraction_evaluate", fraction_evaluate)):
        if not 0.0 < fraction <= 1.0:
            raise StrategyConfigError(f"strategy {name}: {label} must be in (0, 1], got {fraction}")
    if not 1 <= min_nodes <= n_nodes:
        raise StrategyConfigError(f"strategy {name}: min_nodes must be in 1..{n_nodes}, got {min_nodes}")
    sampled = sampled_count(n_nodes, fraction_train, min_nodes)
    f = int(params.get("num_malicious_nodes", 0))
    if name == "bulyan" and sampled < 4 * f + 3:
        raise StrategyConfigError(f"strategy bulyan needs at least 4f+3 = {4 * f + 3} sampled clients per round "
                                  f"(f = num_malicious_nodes = {f}); it would get {sampled}")  # fmt: skip
    if name in ("krum", "multikrum") and sampled < 2 * f + 3:
        raise StrategyConfigError(f"strategy {name} needs at least 2f+3 = {2 * f + 3} sampled clients per round "
                                  f"(f = num_malicious_nodes = {f}); it would get {sampled}")  # fmt: skip
    if name == "fedtrimmedavg" and not 0.0 <= float(params.get("beta", 0.2)) < 0.5:
        raise StrategyConfigError(f"strategy fedtrimmedavg: beta must be in [0, 0.5), got {params.get('beta')}")


def build_strategy(name: str, params: Mapping[str, Any], *, n_nodes: int, fraction_train: float = 1.0,
                   fraction_evaluate: float = 1.0, min_nodes: int = 2, seed: int = 0,
                   node_ranks: Mapping[int, int] | None = None, server_update_fn=None):  # fmt: skip
    """The configured strategy for ``n_nodes`` connected nodes (all must connect before round 1).

    ``server_update_fn`` (global arrays -> arrays trained on the server's root dataset) is needed by fltrust."""
    min_nodes = min(min_nodes, n_nodes)
    check_strategy(name, params, n_nodes, fraction_train, fraction_evaluate, min_nodes)
    if name == SCREENING:
        from strategies.screening_strategy import ScreeningStrategy

        inner, inner_params, config = split_screening_params(params)
        return ScreeningStrategy(build_strategy(inner, inner_params, n_nodes=n_nodes, fraction_train=fraction_train,
                                                fraction_evaluate=fraction_evaluate, min_nodes=min_nodes,
                                                seed=seed, node_ranks=node_ranks,
                                                server_update_fn=server_update_fn), config)  # fmt: skip
    if name in ROBUST_PARAMS:
        from strategies.robust_aggregation import RobustAggregation

        if name == "fltrust" and server_update_fn is None:
            raise StrategyConfigError("strategy fltrust needs a server root dataset (simulation.root_size > 0)")
        return RobustAggregation(
            fraction_train=fraction_train, fraction_evaluate=fraction_evaluate, min_train_nodes=min_nodes,
            min_evaluate_nodes=min_nodes, min_available_nodes=min_nodes, seed=seed, node_ranks=node_ranks,
            aggregator=name, server_update_fn=server_update_fn, **dict(params),
        )  # fmt: skip
    return strategy_class(name)(
        fraction_train=fraction_train, fraction_evaluate=fraction_evaluate, min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes, min_available_nodes=min_nodes, seed=seed, node_ranks=node_ranks,
        **dict(params),
    )  # fmt: skip
