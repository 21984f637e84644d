"""Shared fixtures: the real data folder comes from BOTDEFENDER_DATA_DIR (CI points it at ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def data_dir_or_skip() -> Path:
    """The real data folder; skips with a reason outside CI when unset, fails under CI=true."""
    value = os.environ.get("BOTDEFENDER_DATA_DIR")
    if not value or not Path(value).is_dir():
        reason = f"BOTDEFENDER_DATA_DIR is not set to a folder (got {value!r}); real-data tests need it"
        if IN_CI:
            pytest.fail(reason)
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return Path(value)


def skip_without_testbed() -> None:
    """Skip (with a printed reason) when root or Open vSwitch is missing, outside CI; under CI=true, fail."""
    from sdn.testbed import missing_requirements

    problems = missing_requirements()
    if problems:
        reason = "test bed unavailable: " + "; ".join(problems)
        if IN_CI:
            pytest.fail(reason)
        print(f"SKIP: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return data_dir_or_skip()


@pytest.fixture(scope="session")
def unsw_table(data_dir):
    from flows.loader import load_dataset

    return load_dataset("unsw-nb15", data_dir)


@pytest.fixture
def task_identity():
    """Messages built outside a running ServerApp need the identity Flower sets in its processes."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small graph models: one torch thread is as fast as two and does not stall when the cores are busy (a test
    module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FakeGrid:
    """Only what a strategy's configure_* uses: the connected node ids (random, as Flower assigns them)."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


class FakeBackend:
    """Records the rules a switch would hold (sdn tests); while ``fail`` is set, installs raise (no barrier reply)."""

    def __init__(self, hosts: int = 40) -> None:
        self.rules: dict[str, float | None] = {}
        self.hosts = hosts
        self.fail = False
        self.installs = 0

    def install(self, ip, ttl):
        if self.fail:
            raise TimeoutError("no barrier reply within 1 s")
        self.installs += 1
        self.rules[ip] = ttl

    def remove(self, ip):
        self.rules.pop(ip, None)

    def known_hosts(self):
        return self.hosts


RAW_FILE = "UNSW-NB15_1.first3000.csv"  # served by the gateway tests (its 98 attacks come from 4 hosts)
TRAIN_FILE = "UNSW-NB15_1.first20000.csv"  # its rows after the first 3000 train the gateway tests' model


@pytest.fixture(scope="session")
def raw_checkpoint(data_dir, tmp_path_factory):
    """A CNN-LSTM briefly trained on raw UNSW-NB15 flows (which carry IPs), saved as a run saves it
    (:func:`models.checkpoint.save_checkpoint`): (path, the PyTorch model in eval mode, the served rows encoded)."""
    import torch

    from flows.loader import load_file
    from flows.pipeline import FeaturePipeline, PipelineConfig
    from models.checkpoint import ModelSpec, save_checkpoint
    from models.training import train_torch_classifier

    table = load_file("unsw-nb15-raw", data_dir / "unsw-nb15" / "raw" / TRAIN_FILE)
    table = table.subset(list(range(3000, len(table))))  # not the rows of RAW_FILE, which the tests serve
    pipeline = FeaturePipeline(PipelineConfig(nonfinite="error")).fit(table)
    x_fit = pipeline.transform(table.frame)
    y = table.frame["label"].to_numpy().astype(np.float32)
    spec = ModelSpec("cnn_lstm", x_fit.shape[1], {})
    torch.manual_seed(0)
    model = spec.build()
    train_torch_classifier(model, x_fit[:14000], y[:14000], x_fit[14000:], y[14000:], epochs=8, progress=False)
    served = load_file("unsw-nb15-raw", data_dir / "unsw-nb15" / "raw" / RAW_FILE)
    x = pipeline.transform(served.frame)
    path = tmp_path_factory.mktemp("run") / "final.pt"
    save_checkpoint(path, spec, model.state_dict(), pipeline.state_.to_json(), 3)
    return path, model.eval(), x


@pytest.fixture(scope="session")
def bundle_dir(raw_checkpoint, tmp_path_factory):
    from gateway.export import export_bundle

    out = tmp_path_factory.mktemp("bundle")
    export_bundle(raw_checkpoint[0], out)
    return out
