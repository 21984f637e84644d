"""Model rollout over Flower (issue 16): the server exports, signs and sends the bundle as a ``query.rollout``
message; the gateway's ClientApp installs it under its bundle root with its pinned key, or refuses and says why."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pytest
from flwr.app import Context, Error, Message, Metadata, RecordDict
from flwr.app.message import make_message

from conf.schema import DeploySpec, RunSpec, RunSpecError
from fl_client.app import app
from fl_client.rollout import install_rollout
from fl_server.rollout import MESSAGE_TYPE, bundle_message, rollout_checkpoint
from gateway.bundle import BundleError
from gateway.install import pack_bundle, read_installed
from gateway.signing import generate_signing_key, sign_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread", "task_identity")


def _context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def _received(files: dict[str, bytes], node: int = 7) -> Message:
    """The rollout message as a node receives it (Flower fills in the metadata on the way)."""
    sent = bundle_message(files, node)
    return Message(content=sent.content, dst_node_id=node, message_type=sent.metadata.message_type)


class GatewayGrid:
    """A Grid whose nodes are gateways running the real ClientApp handler: messages are delivered in process."""

    def __init__(self, configs: dict[int, dict]) -> None:
        self.configs = configs

    def get_node_ids(self) -> list[int]:
        return list(self.configs)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            received = Message(content=msg.content, dst_node_id=node, message_type=msg.metadata.message_type)
            metadata = Metadata(run_id=1, message_id=f"r{node}", src_node_id=node, dst_node_id=0,
                                reply_to_message_id="x", group_id="1", created_at=time.time(), ttl=60.0,
                                message_type=MESSAGE_TYPE)  # fmt: skip
            try:
                content = install_rollout(received, _context(self.configs[node])).content
                replies.append(make_message(metadata=metadata, content=content))
            except Exception as err:  # what the SuperNode turns into an error reply
                replies.append(make_message(metadata=metadata, error=Error(code=0, reason=f"{err}")))
        return replies


@pytest.fixture
def keys(tmp_path):
    return generate_signing_key(tmp_path / "operator.key", tmp_path / "operator.pub")


def test_the_client_app_routes_rollout_messages_to_the_installer():
    assert MESSAGE_TYPE == "query.rollout" and "query.rollout" in app._registered_funcs


def test_a_gateway_installs_a_signed_bundle_sent_as_a_rollout_message(bundle_dir, tmp_path, keys):
    signed = Path(shutil.copytree(bundle_dir, tmp_path / "signed"))
    sign_bundle(signed, keys[0])
    root = tmp_path / "gateway"
    reply = install_rollout(_received(pack_bundle(signed)), _context({"bundle-root": str(root),
                                                                       "bundle-public-key": str(keys[1])}))
    release = int(reply.content["metrics"]["release"])
    assert release >= 1 and read_installed(root)["highest"] == release
    assert (root / "current").resolve() == (root / "releases" / str(release)).resolve()
    assert reply.content["info"]["model-version"]


def test_a_node_without_a_bundle_root_or_pinned_key_refuses(bundle_dir, tmp_path):
    with pytest.raises(Exception, match="bundle-root or bundle-public-key"):
        install_rollout(_received({"manifest.json": b"{}"}), _context({"partition-id": 0, "num-partitions": 2}))


def test_a_rollout_signed_by_another_key_is_refused_and_nothing_installed(bundle_dir, tmp_path, keys):
    other = generate_signing_key(tmp_path / "other.key", tmp_path / "other.pub")
    signed = Path(shutil.copytree(bundle_dir, tmp_path / "signed"))
    sign_bundle(signed, other[0])
    root = tmp_path / "gateway"
    with pytest.raises(BundleError, match="signature"):
        install_rollout(_received(pack_bundle(signed)), _context({"bundle-root": str(root),
                                                                   "bundle-public-key": str(keys[1])}))
    assert not (root / "current").exists()


def test_a_rollout_needs_a_signing_key_before_anything_starts():
    with pytest.raises(RunSpecError, match="deploy.signing_key"):
        DeploySpec(rollout=True)
    with pytest.raises(RunSpecError, match="central_file"):
        DeploySpec(central_eval="file")


@pytest.mark.slow
def test_the_server_exports_signs_and_rolls_out_to_every_gateway(raw_checkpoint, tmp_path, keys):
    """rollout_checkpoint: export + sign + send; two gateways install, one with another pinned key refuses and is
    named, the record counts both; a second rollout is a newer release on the gateways that took the first."""
    other = generate_signing_key(tmp_path / "other.key", tmp_path / "other.pub")
    configs = {11: {"bundle-root": str(tmp_path / "gw1"), "bundle-public-key": str(keys[1])},
               12: {"bundle-root": str(tmp_path / "gw2"), "bundle-public-key": str(keys[1])},
               13: {"bundle-root": str(tmp_path / "gw3"), "bundle-public-key": str(other[1])}}  # fmt: skip
    spec = dataclasses.replace(RunSpec(), deploy=DeploySpec(rollout=True, signing_key=str(keys[0])))
    grid = GatewayGrid(configs)
    first = rollout_checkpoint(grid, [11, 12, 13], spec, raw_checkpoint[0], tmp_path / "out", "final")
    assert first["installed"] == 2 and first["no_reply"] == []
    rows = {row["node-id"]: row for row in first["nodes"]}
    assert rows[11]["release"] == rows[12]["release"] == first["release"]
    assert "signature" in rows[13]["error"]
    assert first["bytes"] > 0 and first["seconds"] >= first["export_seconds"] > 0
    second = rollout_checkpoint(grid, [11, 12], spec, raw_checkpoint[0], tmp_path / "out", "again")
    assert second["installed"] == 2 and second["release"] > first["release"]
    assert read_installed(tmp_path / "gw1")["highest"] == second["release"]
    print(f"rollout: {first['bytes']} bytes, export+sign {first['export_seconds']:.1f} s, "
          f"to 3 gateways {first['seconds']:.1f} s")
