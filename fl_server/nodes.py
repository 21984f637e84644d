"""The federation's nodes: waiting for them, and the statistics query that fits the feature pipeline."""

from __future__ import annotations

import logging
import time

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fl_server.statistics import fit_pipeline_state, node_rank, node_ranks
from flows.pipeline import PipelineSettings
from flows.pipeline_state import PipelineState

log = logging.getLogger("flwr.botdefender.server")


def wait_for_nodes(grid: Grid, minimum: int, timeout: float, expected: int) -> list[int]:
    """The connected node ids once ``minimum`` are there (within ``timeout`` s); a federation with another number
    of nodes than the run's ``partition.n_clients`` (``expected``) is said plainly: its nodes split the data."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} node(s) connected after {timeout:.0f} s; "
                               f"simulation.min_nodes is {minimum}")  # fmt: skip
        time.sleep(0.5)
    if len(nodes) != expected:
        log.warning("the federation has %d nodes but partition.n_clients is %d: the training rows are split %d "
                    "ways (python -m simulation starts partition.n_clients nodes; with flwr run, pass "
                    "--federation-config \"num-supernodes=%d\")", len(nodes), expected, len(nodes), expected)  # fmt: skip
    return nodes


def query_pipeline_state(grid: Grid, nodes: list[int], settings: PipelineSettings,
                         timeout: float) -> tuple[PipelineState, dict[int, int]]:  # fmt: skip
    """Ask every node for its feature statistics; fit the pipeline state from their merge.

    Also returns node id -> partition id in simulation, which ranks nodes for seeded sampling and ordered
    aggregation (empty in a deployment)."""
    messages = [
        Message(content=RecordDict({"config": ConfigRecord({"log-transform": settings.log_transform})}),
                dst_node_id=node, message_type=MessageType.QUERY)  # fmt: skip
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    errors = [f"node {r.metadata.src_node_id}: {r.error.reason}" for r in replies if r.has_error()]
    if errors or len(replies) != len(nodes):
        raise RuntimeError(f"statistics query: {len(replies)}/{len(nodes)} replies; errors: {errors}")
    state = fit_pipeline_state((r.content for r in replies), settings, source="federated")
    log.info("pipeline fitted from %d clients' statistics: %d records, %d model inputs", len(replies),
             state.info["fitted_on_records"], state.n_outputs)  # fmt: skip
    contents = {int(r.metadata.src_node_id): r.content for r in replies}
    # Simulation is recognised by the runtime's complete set of partition ids (every node reports one); a real
    # gateway reports none, so one node's claim among gateways is never trusted.
    simulation = all(node_rank(content) is not None for content in contents.values())
    return state, node_ranks(contents, simulation=simulation, num_partitions=len(nodes))
