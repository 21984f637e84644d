"""The gateway's side of the model rollout: a ``query.rollout`` message carries a signed bundle's files, which
the node installs next to its running verdict service (:func:`gateway.install.install_bundle`).

The node config names where (``bundle-root``: the folder whose ``current`` link ``gateway serve`` follows) and
the operator's public key pinned on this gateway (``bundle-public-key``). Nothing in the message can change
either: an unsigned bundle, a wrong signature, a changed file or an older release is refused, and the refusal
goes back to the server as the reply's error. A node without the two keys (a simulated client) refuses too.
"""

from __future__ import annotations

import logging

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from flows.errors import ConfigError

log = logging.getLogger("flwr.botdefender.client")
KEYS = ("bundle-root", "bundle-public-key")


def install_rollout(msg: Message, context: Context) -> Message:
    """Install the bundle in ``msg`` under this gateway's ``bundle-root``; reply its release and version."""
    from gateway.install import install_bundle

    missing = [key for key in KEYS if not str(context.node_config.get(key, ""))]
    if missing:
        raise ConfigError(f"this node cannot install a rolled-out bundle: its node config has no {' or '.join(missing)} "
                          "(start the SuperNode with --node-config \"bundle-root='DIR' bundle-public-key='FILE'\")")
    if "bundle" not in msg.content.config_records:
        raise ValueError("rollout message without a 'bundle' ConfigRecord")
    files = {}
    for name, content in msg.content["bundle"].items():
        if not isinstance(content, bytes):
            raise ValueError(f"rollout message: file {name!r} is not bytes")
        files[name] = content
    result = install_bundle(files, context.node_config["bundle-root"], context.node_config["bundle-public-key"])
    log.info("rollout: installed release %s (%s) at %s", result.release, result.model_version, result.path)
    metrics = MetricRecord({"release": int(result.release), "bytes": sum(map(len, files.values()))})
    info = ConfigRecord({"model-version": str(result.model_version), "path": str(result.path)})
    return Message(content=RecordDict({"metrics": metrics, "info": info}), reply_to=msg)
