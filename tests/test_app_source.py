"""The app ``flwr run`` bundles: only the project's packages, whatever else lies in the checkout; Flower's child
processes find Flower's commands beside this interpreter."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_files
from flwr.cli.utils import AppPathDepthError, collect_files, filter_paths_for_publish

from simulation.app_source import app_packages, stage_app
from simulation.flower_runtime import LocalFederation

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout_with_a_venv(tmp_path: Path) -> Path:
    """A copy of the app's packages and pyproject.toml beside tests/ and a virtual environment named venv/ (which
    .gitignore does not list), whose site-packages lie deeper than Flower's limit of 10 folders."""
    root = tmp_path / "checkout"
    stage_app(root, REPO)
    shutil.copytree(REPO / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    deep = root / "venv" / "lib" / "python3.11" / "site-packages" / "pkg" / "a" / "b" / "c" / "d" / "e" / "f" / "g"
    deep.mkdir(parents=True)
    (deep / "module.py").write_text("x = 1\n")
    return root


def test_flower_refuses_a_checkout_with_a_deep_venv(checkout_with_a_venv):
    """What ``flwr run <checkout>`` did before the launcher staged the app (the defect, reproduced)."""
    with pytest.raises(AppPathDepthError, match="maximum directory depth"):
        filter_paths_for_publish(collect_files(checkout_with_a_venv))


def test_the_staged_app_bundles_the_packages_only(checkout_with_a_venv, tmp_path):
    staged = stage_app(tmp_path / "app", checkout_with_a_venv)
    fab, _ = build_fab_from_files(collect_files(staged))
    assert len(fab) > 0
    files = set(collect_files(staged))
    assert {"pyproject.toml", "fl_server/app.py", "fl_client/app.py", "conf/schema.py"} <= files
    assert not any(f.startswith(("venv/", "tests/")) or "__pycache__" in f for f in files)


def test_app_packages_follow_setuptools_find():
    assert app_packages(REPO) == sorted(["conf", "deploy", "fl_client", "fl_server", "flows", "gateway", "models",
                                         "sdn",
                                         "simulation", "strategies"])  # fmt: skip


def test_flowers_child_processes_find_flowers_commands_beside_this_interpreter(tmp_path):
    with LocalFederation(tmp_path / "home", env_extra={"PATH": "/usr/bin:/bin"}) as fed:
        path = fed.env["PATH"]
        assert path.split(os.pathsep)[0] == str(Path(sys.executable).parent)
        assert shutil.which("flower-superlink", path=path) is not None
        assert shutil.which("flower-superlink", path="/usr/bin:/bin") is None  # the PATH it was given lacks it
        assert (fed.app / "fl_server" / "app.py").is_file()
