"""OmegaConf resolvers the configs use (registered once, before Hydra composes a config).

* ``${bd.count:n,share}``: ``round(n * share)``, e.g. Krum's f from the clients and the assumed malicious share;
* ``${bd.cell:attack,fraction,strategy}``: an attack x defence cell's folder name (``sign_flip__0.2__krum``;
  every attack-free cell is ``none__0__<strategy>``, whatever the swept fraction).
"""

from __future__ import annotations

from omegaconf import OmegaConf


def malicious_count(n_clients: int, share: float) -> int:
    return int(round(int(n_clients) * float(share)))


def cell_name(attack: str, fraction: float, strategy: str) -> str:
    fraction = 0.0 if attack == "none" else float(fraction)
    return f"{attack}__{fraction:g}__{strategy}"


def register() -> None:
    """Idempotent: safe to call from every entry point."""
    for name, function in (("bd.count", malicious_count), ("bd.cell", cell_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


register()
