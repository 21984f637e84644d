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


def query_pipeline_state(grid: Grid, nodes: list[int], settings: PipelineSettings, timeout: float,
                         min_replies: int = 1) -> tuple[PipelineState, dict[int, int]]:  # fmt: skip
    """(pipeline state, node ranks) of :func:`query_nodes`."""
    state, ranks, _ = query_nodes(grid, nodes, settings, timeout, min_replies)
    return state, ranks


def query_nodes(grid: Grid, nodes: list[int], settings: PipelineSettings, timeout: float,
                min_replies: int = 1) -> tuple[PipelineState, dict[int, int], dict[int, str]]:  # fmt: skip
    """Ask every node for its feature statistics; fit the pipeline state from the merge of the replies.

    A node that answers with an error or not at all is left out of the merge and named in a warning (it keeps
    its place in the federation: the training rounds treat its failures as Flower does); fewer than
    ``min_replies`` usable replies end the run with every node's reason. Also returns node id -> partition id
    in simulation, which ranks nodes for seeded sampling and ordered aggregation (empty in a deployment), and
    node id -> the model family it trains (``node["model"]`` of its reply; "" when it names none)."""
    messages = [
        Message(content=RecordDict({"config": ConfigRecord({"log-transform": settings.log_transform})}),
                dst_node_id=node, message_type=MessageType.QUERY)  # fmt: skip
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    usable = [r for r in replies if not r.has_error()]
    problems = [f"node {r.metadata.src_node_id}: {r.error.reason}" for r in replies if r.has_error()]
    answered = {int(r.metadata.src_node_id) for r in replies}
    problems += [f"node {node}: no reply within {timeout:.0f} s" for node in nodes if int(node) not in answered]
    if len(usable) < max(1, min_replies):
        raise RuntimeError(f"statistics query: {len(usable)} usable replies from {len(nodes)} nodes, fewer than "
                           f"the {max(1, min_replies)} needed; {'; '.join(problems)[:2000]}")  # fmt: skip
    for problem in problems:
        log.warning("statistics query: %s; its statistics are left out of the pipeline", problem)
    state = fit_pipeline_state((r.content for r in usable), settings, source="federated")
    log.info("pipeline fitted from %d clients' statistics: %d records, %d model inputs", len(usable),
             state.info["fitted_on_records"], state.n_outputs)  # fmt: skip
    state.info["statistics_query"] = {"nodes": len(nodes), "replies": len(usable), "failed": problems}
    contents = {int(r.metadata.src_node_id): r.content for r in usable}
    # Simulation is recognised by the runtime's complete set of partition ids (every node reports one); a real
    # gateway reports none, so one node's claim among gateways is never trusted.
    simulation = all(node_rank(content) is not None for content in contents.values())
    families = {node: str(content["node"].get("model", "")) if "node" in content else ""
                for node, content in contents.items()}  # fmt: skip
    refused = [f"node {node}: {content['node']['dp-problem']}" for node, content in sorted(contents.items())
               if "node" in content and content["node"].get("dp-problem")]  # fmt: skip
    if refused:
        raise RuntimeError(f"privacy settings refused before round 1 ({len(refused)} of {len(contents)} nodes): "
                           f"{refused[0]}")  # fmt: skip
    return state, node_ranks(contents, simulation=simulation, num_partitions=len(nodes)), families


class NodeSubsetGrid:
    """A view of a Grid that lists only ``nodes`` (one family's nodes of a mixed federation): a strategy samples,
    trains and evaluates among them only; everything else is delegated."""

    def __init__(self, grid: Grid, nodes: list[int]) -> None:
        self._grid, self._nodes = grid, {int(n) for n in nodes}

    def get_node_ids(self) -> list[int]:
        return [n for n in self._grid.get_node_ids() if int(n) in self._nodes]

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


def group_by_family(nodes: list[int], families: dict[int, str], names: list[str]) -> dict[str, list[int]]:
    """Family -> its nodes, in the order of ``names`` (the run's families; a node that named none trains the first);
    a node naming a family outside the run stops it with one line."""
    groups: dict[str, list[int]] = {name: [] for name in names}
    for node in nodes:
        family = families.get(int(node)) or names[0]
        if family not in groups:
            raise RuntimeError(f"node {node} trains model family {family!r}, which is not one of the run's "
                               f"({', '.join(names)}): set model.families or the node config's model")  # fmt: skip
        groups[family].append(int(node))
    empty = [name for name, members in groups.items() if not members]
    if empty:
        log.warning("model families without a node (not trained): %s", ", ".join(empty))
    return {name: members for name, members in groups.items() if members}
