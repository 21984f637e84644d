"""Model rollout over Flower: the global model exported as a gateway bundle, signed, sent to the gateways.

With ``deploy.rollout`` the server, at the end of the run (and after every ``deploy.rollout_every`` rounds),

1. writes the global model as a checkpoint and exports it (:func:`gateway.export.export_bundle`: pruned, int8
   LiteRT files and a manifest with a fresh, strictly larger ``release``) into ``<out_dir>/bundles/<name>/``;
2. signs the manifest with the operator's Ed25519 key (``deploy.signing_key``; :mod:`gateway.signing`);
3. sends the bundle's files to every connected node of the family as a ``query.rollout`` message (one
   ConfigRecord of file name -> bytes under ``"bundle"``); each gateway checks the signature against its pinned
   public key, refuses a changed file or an older release, and installs it next to its running verdict service
   (:mod:`fl_client.rollout`);
4. records, per node, the installed release or the refusal, and the seconds from the start of the export to the
   last reply (``metrics.json["data"]["rollout"]``).

A node that refuses or does not answer is named in the log and the record; the run carries on. The export needs
the ``export`` extra (litert-torch) on the server machine only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from conf.schema import RunSpec
from flows.pipeline_state import PipelineState
from models.checkpoint import ModelSpec, save_checkpoint

log = logging.getLogger("flwr.botdefender.server")
MESSAGE_TYPE = "query.rollout"


def bundle_message(files: dict[str, bytes], node: int) -> Message:
    return Message(content=RecordDict({"bundle": ConfigRecord(dict(files))}), dst_node_id=node,
                   message_type=MESSAGE_TYPE)  # fmt: skip


def _reply_row(reply: Message) -> dict:
    row: dict = {"node-id": int(reply.metadata.src_node_id)}
    if reply.has_error():
        row["error"] = str(reply.error.reason)
    elif "metrics" in reply.content:
        row.update({k: v for k, v in dict(reply.content["metrics"]).items()})
        if "info" in reply.content:
            row.update({k: v for k, v in dict(reply.content["info"]).items()})
    return row


def rollout_checkpoint(grid: Grid, nodes: list[int], spec: RunSpec, checkpoint: Path, out_dir: Path,
                       name: str) -> dict:  # fmt: skip
    """Export, sign and send the bundle of ``checkpoint`` to ``nodes``; the rollout's record."""
    from gateway.export import export_bundle
    from gateway.install import pack_bundle
    from gateway.signing import sign_bundle

    started = time.perf_counter()
    bundle_dir = out_dir / "bundles" / name
    manifest = export_bundle(checkpoint, bundle_dir)
    sign_bundle(bundle_dir, spec.deploy.signing_key)
    files = pack_bundle(bundle_dir)
    exported = time.perf_counter() - started
    connected = set(grid.get_node_ids())
    targets = [n for n in nodes if n in connected]
    log.info("rollout %s: release %s (%s, %d files, %d bytes) to %d node(s)", name, manifest.get("release"),
             manifest.get("model_version"), len(files), sum(map(len, files.values())), len(targets))  # fmt: skip
    replies = list(grid.send_and_receive([bundle_message(files, n) for n in targets],
                                         timeout=spec.deploy.rollout_timeout))  # fmt: skip
    rows = sorted((_reply_row(r) for r in replies), key=lambda row: row["node-id"])
    answered = {row["node-id"] for row in rows}
    for row in rows:
        if "error" in row:
            log.warning("rollout %s: node %d refused: %s", name, row["node-id"], row["error"])
    silent = [n for n in targets if n not in answered]
    if silent:
        log.warning("rollout %s: no reply from node(s) %s within %.0f s", name, silent, spec.deploy.rollout_timeout)
    seconds = time.perf_counter() - started
    installed = sum(1 for row in rows if "error" not in row)
    log.info("rollout %s: installed on %d/%d node(s) in %.1f s (export and signing %.1f s)", name, installed,
             len(targets), seconds, exported)  # fmt: skip
    return {"name": name, "release": manifest.get("release"), "model_version": manifest.get("model_version"),
            "bundle": str(bundle_dir), "bytes": sum(map(len, files.values())), "nodes": rows,
            "no_reply": silent, "installed": installed, "export_seconds": exported, "seconds": seconds}  # fmt: skip


def periodic_rollout(grid: Grid, nodes: list[int], spec: RunSpec, model_spec: ModelSpec, state: PipelineState,
                     out_dir: Path, label: str, records: list[dict]) -> Callable[[int, dict], None]:  # fmt: skip
    """A round hook (:class:`fl_server.evaluation.CentralEvaluation`) that rolls out the global model after every
    ``deploy.rollout_every`` rounds (the last round's is the end-of-run rollout), appending to ``records``."""
    from dataclasses import asdict

    every, last = spec.deploy.rollout_every, spec.simulation.num_rounds
    suffix = f"_{label}" if label else ""

    def hook(server_round: int, state_dict: dict) -> None:
        if server_round <= 0 or server_round % every or server_round >= last:
            return
        checkpoint = out_dir / f"round{server_round}{suffix}.pt"
        save_checkpoint(checkpoint, model_spec, state_dict, state.to_json(), server_round, asdict(spec.graph))
        records.append(rollout_checkpoint(grid, nodes, spec, checkpoint, out_dir, f"round{server_round}{suffix}"))

    return hook
