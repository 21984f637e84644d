"""The Flower app's source as ``flwr run`` should bundle it: the project's packages and pyproject.toml only.

``flwr run <folder>`` bundles every file of the folder that .gitignore does not exclude, and refuses the app when
any path is deeper than 10 folders; a virtual environment inside the checkout under a name .gitignore does not
list (``venv/``, ``myenv/``) makes it refuse ours. The launcher therefore copies the packages that setuptools
installs (``[tool.setuptools.packages.find]`` in pyproject.toml, the one list of them) and pyproject.toml into a
folder of its own and runs that: tests, benchmarks, data, outputs and environments stay out of the bundle.
"""

from __future__ import annotations

import shutil
import tomllib
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIPPED = ("__pycache__", "*.pyc", "*.egg-info")


def app_packages(repo: Path = REPO) -> list[str]:
    """Top-level package folders of ``repo`` that setuptools installs (its include patterns minus excludes)."""
    find = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    include, exclude = find["find"]["include"], find["find"].get("exclude", [])
    return sorted(
        entry.name for entry in repo.iterdir()
        if entry.is_dir() and (entry / "__init__.py").is_file()
        and any(fnmatch(entry.name, p) for p in include) and not any(fnmatch(entry.name, p) for p in exclude)
    )  # fmt: skip


def stage_app(dest: Path, repo: Path = REPO) -> Path:
    """Copy the app's packages and pyproject.toml from ``repo`` into ``dest`` (emptied first); returns ``dest``."""
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy2(repo / "pyproject.toml", dest / "pyproject.toml")
    for name in app_packages(repo):
        shutil.copytree(repo / name, dest / name, ignore=shutil.ignore_patterns(*SKIPPED), symlinks=True)
    return dest
