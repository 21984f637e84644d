"""Model family registry: a family name -> its :class:`models.family.ModelFamily`.

Families shipped with the project are found, not listed: every subpackage of ``models/`` that holds a
``family`` module is a family of the package's name, and that module defines ``FAMILY``. Listing the names
imports nothing; :func:`get_family` imports only the family asked for (torch comes in with it). Other families
(tests, plugins) are added with :func:`register_family`.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.family import ModelFamily

__all__ = ["UnknownModelFamily", "family_names", "get_family", "register_family"]

_MODELS_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_REGISTERED: dict[str, "ModelFamily"] = {}


class UnknownModelFamily(ValueError):
    """A family name that no registered family has."""

    def __init__(self, name: object) -> None:
        self.name = name
        super().__init__(f"unknown model family {name!r}; available: {', '.join(family_names()) or 'none'}")


def _shipped() -> list[str]:
    """Names of the subpackages of models/ that hold a ``family`` module (found on disk, nothing imported)."""
    names = []
    for info in pkgutil.iter_modules([str(_MODELS_DIR)]):
        if info.ispkg and any(sub.name == "family" for sub in pkgutil.iter_modules([str(_MODELS_DIR / info.name)])):
            names.append(info.name)
    return names


def family_names() -> list[str]:
    """Every available family name, sorted."""
    return sorted({*_shipped(), *_REGISTERED})


def register_family(family: "ModelFamily") -> None:
    """Add ``family`` under ``family.name``; raises ValueError for a malformed family or a name already taken by
    another family object, TypeError when its params_type is not a plain-typed dataclass."""
    from models.family import ModelFamily, param_fields

    if not isinstance(family, ModelFamily):
        raise ValueError(f"register_family needs a models.family.ModelFamily, got {type(family).__name__}")
    name = getattr(family, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a family name must be lower-case letters, digits and '_', got {name!r}")
    if not isinstance(getattr(family, "gateway_input", None), str):
        raise ValueError(f"family {name!r}: gateway_input must be a string")
    param_fields(getattr(family, "params_type", None))
    existing = _REGISTERED.get(name)
    if existing is not None and existing is not family:
        raise ValueError(f"model family {name!r} is already registered ({existing!r})")
    _REGISTERED[name] = family


def get_family(name: str) -> "ModelFamily":
    """The family called ``name``; raises :class:`UnknownModelFamily` (a ValueError) naming the available ones."""
    if not isinstance(name, str):
        raise UnknownModelFamily(name)
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _shipped():
        raise UnknownModelFamily(name)
    module = importlib.import_module(f"models.{name}.family")
    family = getattr(module, "FAMILY", None)
    if family is None or getattr(family, "name", None) != name:
        raise ValueError(f"models/{name}/family.py must define FAMILY, a ModelFamily named {name!r}")
    register_family(family)
    return family
