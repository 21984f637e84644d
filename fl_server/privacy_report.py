"""What a run spent in privacy, per round and for the run, from the clients' train replies (DP-SGD: each client's
cumulative ``dp-epsilon``) or the server's accountant (central DP: :mod:`strategies.central_dp`)."""

from __future__ import annotations

from conf.schema import RunSpec


def round_privacy(clients_train: list[dict], previous: dict) -> dict:
    """One round's DP-SGD accounting: every client's cumulative epsilon so far (a client not sampled this round
    keeps its last figure), the run's maximum, and the clients that declined."""
    epsilon = dict(previous)
    for row in clients_train:
        if row.get("dp-epsilon") is not None:
            epsilon[str(row["rank"] if row.get("rank") is not None else row.get("node-id"))] = float(row["dp-epsilon"])
    declined = [row["rank"] if row.get("rank") is not None else row.get("node-id") for row in clients_train
                if "declined" in row]  # fmt: skip
    return {"epsilon": epsilon, "max_epsilon": max(epsilon.values(), default=0.0), "declined": declined}


def run_privacy(spec: RunSpec, rounds: list[dict], strategy) -> dict:
    """The run's privacy: the mode, delta, and the epsilon spent (DP-SGD: the largest client's; central: the
    server accountant's)."""
    privacy = spec.privacy
    if privacy.name == "none":
        return {"mode": "none"}
    if privacy.name == "central":
        return {"mode": "central", **getattr(strategy, "privacy_report", lambda: {})()}
    last = next((entry["privacy"] for entry in reversed(rounds) if "privacy" in entry), {"epsilon": {}})
    return {"mode": "dp_sgd", "delta": privacy.delta, "accountant": privacy.accountant,
            "max_epsilon": max(last["epsilon"].values(), default=0.0), "epsilon": last["epsilon"],
            "budget": privacy.max_epsilon or None,
            "declined_rounds": sum(len(entry.get("privacy", {}).get("declined", [])) for entry in rounds)}  # fmt: skip


def round_epsilon(spec: RunSpec, strategy, server_round: int) -> dict:
    """``{"dp_epsilon": the largest epsilon spent so far}`` after ``server_round`` (the progress line's figure)."""
    if spec.privacy.name == "central":
        history = getattr(strategy, "epsilon_by_round", {})
        return {"dp_epsilon": history[server_round]} if server_round in history else {}
    if spec.privacy.name != "dp_sgd":
        return {}
    spent: dict = {}
    for r in range(1, server_round + 1):
        spent = round_privacy(strategy.client_train.get(r, []), spent)["epsilon"]
    return {"dp_epsilon": max(spent.values())} if spent else {}
