"""Hydra side of the run spec: the schema registered in Hydra's ConfigStore, a composed config -> typed specs.

``conf/federated.yaml`` lists ``federated_schema`` first in its defaults, so every key and default comes from
:class:`conf.schema.FederatedConfig` and the group files only change values. :func:`specs` turns a composed config
into the typed :class:`~conf.schema.RunSpec` and :class:`~conf.schema.LauncherSpec`, checking every value again
(Hydra does not run the dataclasses' own checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from conf.schema import FederatedConfig, LauncherSpec, RunSpec, from_dict
from simulation import config_resolvers

SCHEMA_NAME = "federated_schema"
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def register() -> None:
    """Register the schema, every model family's parameter defaults (``model/<family>_defaults``, which the files
    of ``conf/model`` extend, so that every parameter can be overridden without ``+``) and the resolvers
    (idempotent; before Hydra composes a federated config)."""
    from models.registry import family_names, get_family

    config_resolvers.register()
    store = ConfigStore.instance()
    schema = OmegaConf.structured(FederatedConfig)
    OmegaConf.set_readonly(schema.graph, False)  # frozen GraphSettings: overridable here, checked again by specs()
    store.store(name=SCHEMA_NAME, node=schema)
    for name in family_names():
        store.store(group="model", name=f"{name}_defaults", node={"name": name, "params": get_family(name).default_params()})


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as plain data, interpolations resolved."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def specs(cfg: DictConfig) -> tuple[RunSpec, LauncherSpec]:
    """(run spec, launcher spec) of a composed federated config."""
    data = plain(cfg)
    data.pop("hydra", None)
    full: FederatedConfig = from_dict(data, FederatedConfig)
    fields = {name: getattr(full, name) for name in RunSpec.__dataclass_fields__}
    return RunSpec(**fields), full.launcher


register()
