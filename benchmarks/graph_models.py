"""Graph model benchmark (issue 15): GCN, E-GraphSAGE-style, CNN-LSTM and XGBoost on the same host-graph windows.

    python benchmarks/graph_models.py [--flows 256] [--captures-subsample 20000] [--holdout-site 011-zeek-mixed...]

Three evaluations, each one split that all four models share (:mod:`simulation.windowed` trains and scores them,
per flow and per host, exactly as ``python -m simulation.centralized split=chronological`` does):

* ``later windows``: raw UNSW-NB15 ``first20000`` cut into ``--flows``-flow windows, the earliest train, the next
  10% validate, the latest 20% test (:func:`simulation.windowed.prepare_windows`, the chronological split);
* ``held-out hosts``: the same file's flows split by originating host (:func:`flows.graphs.leave_hosts_out`, 20% of
  the flows): every flow goes with its source host, so a flow from a held-out host to a training host is a test
  flow and a flow from a training host to a held-out one a training flow (the held-out host is then a node of
  training graphs, as a destination only). Each side's windows are built from its own flows only; the
  validation windows are the latest 10% of the training side's. The split seed is the first from ``--seed`` on
  whose test side holds attack flows and whose training side does too;
* ``held-out site``: ``dataset=captures`` (IoT-23 and Stratosphere, one site per capture), every window of
  ``--holdout-site`` tests, the other sites train on their earlier windows and validate on their latest 10%
  (:func:`flows.graphs.leave_one_site_out`).

The pipeline is fitted on the training flows of each split only. Writes ``benchmarks/results/graphs/
graph_models.json``, the plot ``window_verdicts.png`` (one test window of raw UNSW-NB15 with the attackers in it,
nodes coloured by the GCN's host verdict, outlined by the true label, edges by the flow verdict) and the README
block ``graph-models-benchmark``. One torch thread, XGBoost on one thread.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import simulation.windowed as windowed  # noqa: E402
from flows.graphs import GraphSettings, chronological_split, leave_hosts_out, leave_one_site_out, select  # noqa: E402
from flows.graphs import window_keys  # noqa: E402
from flows.graphs.from_table import graphs_from_table, table_windows, window_sites  # noqa: E402
from flows.loader import load_dataset  # noqa: E402
from flows.run_split import match_site  # noqa: E402
from flows.pipeline import FeaturePipeline, PipelineConfig  # noqa: E402
from flows.protocols import ProtocolConfig, stratified_subsample, working_table  # noqa: E402
from flows.table import LABEL, SRC_IP  # noqa: E402
from readme_block import replace_readme_block  # noqa: E402  benchmarks/readme_block.py (this folder)

log = logging.getLogger("benchmarks.graph_models")
OUT = Path(__file__).resolve().parent / "results" / "graphs"
RAW_FILE = "UNSW-NB15_1.first20000.csv"
ATTACK_NET = "175.45.176."
KEYS = ("precision", "recall", "f1", "host_precision", "host_recall", "host_f1")


def model_params(epochs: int, patience: int, graph_lr: float) -> dict[str, tuple[str, dict]]:
    """(detector name, parameters) per benchmark model; XGBoost as conf/model/xgboost.yaml but on one thread."""
    graph = {"epochs": epochs, "patience": patience, "lr": graph_lr, "progress": False}
    return {
        "gcn": ("gcn", dict(graph)),
        "gcn_egraphsage": ("gcn", {**graph, "variant": "egraphsage"}),
        "cnn_lstm": ("cnn_lstm", {"epochs": epochs, "patience": patience, "progress": False}),
        "xgboost": ("xgboost", {"n_estimators": 400, "max_depth": 7, "learning_rate": 0.1, "tree_method": "hist",
                                "n_jobs": 1}),
    }  # fmt: skip


def run_models(data: windowed.WindowedData, models: dict, seed: int) -> tuple[dict, dict]:
    """(metrics per model, (flow scores, host scores) per model) on ``data``'s test windows."""
    results, scores = {}, {}
    for label, (name, params) in models.items():
        metrics, flow_scores, host = windowed.train_and_score_windows(name, params, data, seed)
        log.info("%s: flow f1 %.4f host f1 %.4f (%.1f s)", label, metrics["f1"], metrics["host_f1"],
                 metrics["train_seconds"])  # fmt: skip
        results[label] = {k: metrics[k] for k in (*KEYS, "train_seconds", "model_bytes")}
        results[label]["epochs_run"] = metrics.get("epochs_run")
        results[label]["flow_confusion"] = metrics["confusion_matrix"]
        results[label]["host_confusion"] = metrics["host"]["confusion_matrix"]
        scores[label] = (flow_scores, host)
    return results, scores


def flagged_hosts(graphs: list, host_scores: np.ndarray, threshold: float, flow_scores: np.ndarray) -> dict:
    """Hosts flagged in at least one test window, the true attackers (originate an attack flow) missed, and how
    many of the flows wrongly flagged come from the attack network (benign flows sent by an attacker)."""
    sources = np.concatenate([g.hosts[g.edge_index[0]] for g in graphs]).astype(str)
    edge_truth = np.concatenate([g.edge_label for g in graphs]).astype(bool)
    false_flows = (np.asarray(flow_scores) >= threshold) & ~edge_truth
    from_attack_net = np.char.startswith(sources, ATTACK_NET)
    hosts = np.concatenate([g.hosts for g in graphs])
    truth = np.concatenate([g.node_label for g in graphs]).astype(bool)
    flagged = host_scores >= threshold
    attackers = sorted(set(hosts[truth].tolist()))
    return {
        "flagged": sorted(set(hosts[flagged].tolist())),
        "attackers": attackers,
        "missed_attackers": sorted(set(attackers) - set(hosts[flagged].tolist())),
        "flagged_outside_attack_net": sorted({h for h in hosts[flagged].tolist() if not str(h).startswith(ATTACK_NET)}),
        "false_host_windows": int((flagged & ~truth).sum()),
        "attacker_windows_missed": int((~flagged & truth).sum()),
        "false_positive_flows": int(false_flows.sum()),
        "false_positive_flows_from_attack_net": int((false_flows & from_attack_net).sum()),
    }  # fmt: skip


def windows_from_rows(table, train_rows, test_rows, pipeline_config, settings, val_fraction, seed, info):
    """WindowedData of a split by rows (held-out hosts): each side's windows built from its own flows."""
    train_table, test_table = table.subset(list(train_rows)), table.subset(list(test_rows))
    pipeline = FeaturePipeline(pipeline_config, seed=seed).fit(train_table).state_
    train_graphs, _ = graphs_from_table(train_table, pipeline, settings)
    test_graphs, _ = graphs_from_table(test_table, pipeline, settings)
    starts, sites = window_keys(train_graphs)
    inner = chronological_split(starts, 0.0, val_fraction, sites)
    sides = {"train": select(train_graphs, inner.train), "val": select(train_graphs, inner.val), "test": test_graphs}
    return windowed.windowed_data(sides, pipeline, info)


def windows_by_site(table, test_site, pipeline_config, settings, val_fraction, seed, info):
    """WindowedData of leave-one-site-out: windows cut per site first, the pipeline fitted on training flows."""
    window, _ = table_windows(table, settings)
    ids, sites = window_sites(table, window)
    starts = ids.astype(np.float64)  # window numbers increase with time within a site
    split = leave_one_site_out(starts, sites, match_site(sites, test_site), val_fraction)
    return windowed.split_windows(table, window, ids, split, pipeline_config, settings, seed, info)


def plot_window(graph, flow_scores: np.ndarray, host_scores: np.ndarray, threshold: float, path: Path,
                title: str) -> None:  # fmt: skip
    """One window's host graph: node fill = host verdict, node ring = true label, edge colour = flow verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = graph.n_nodes
    hosts = graph.hosts.astype(str)
    # a circle per /24 group, placed on a larger circle: hosts of a subnet sit together
    groups = sorted({h.rsplit(".", 1)[0] for h in hosts})
    centers = {g: 3.2 * np.array([np.cos(2 * np.pi * i / len(groups)), np.sin(2 * np.pi * i / len(groups))])
               for i, g in enumerate(groups)}  # fmt: skip
    pos = np.zeros((n, 2))
    for g in groups:
        members = [i for i in range(n) if hosts[i].rsplit(".", 1)[0] == g]
        for k, i in enumerate(members):
            angle = 2 * np.pi * k / max(len(members), 1)
            radius = 0.0 if len(members) == 1 else 0.35 + 0.08 * len(members)
            pos[i] = centers[g] + radius * np.array([np.cos(angle), np.sin(angle)])
    fig, ax = plt.subplots(figsize=(11, 9))
    src, dst = graph.edge_index
    flow_flag = flow_scores >= threshold
    pairs: dict = {}  # parallel flows of one kind between two hosts: one arrow, wider with the count
    for e in range(graph.n_edges):
        key = (int(src[e]), int(dst[e]), bool(flow_flag[e]), int(graph.edge_label[e]))
        pairs[key] = pairs.get(key, 0) + 1
    colours = {(True, 1): "#c0392b", (False, 0): "#95a5a6", (True, 0): "#e67e22", (False, 1): "#8e44ad"}
    for (s, d, flag, label), count in sorted(pairs.items(), key=lambda kv: kv[0][2]):
        if s == d:
            continue
        ax.annotate("", xy=pos[d], xytext=pos[s],
                    arrowprops=dict(arrowstyle="-|>", color=colours[(flag, label)], lw=0.6 + 0.5 * np.log1p(count),
                                    alpha=0.75, shrinkA=7, shrinkB=7, connectionstyle="arc3,rad=0.08"))  # fmt: skip
    host_flag = host_scores >= threshold
    for i in range(n):
        ax.scatter(*pos[i], s=260, c="#c0392b" if host_flag[i] else "#2ecc71", zorder=3,
                   edgecolors="black" if graph.node_label[i] else "white", linewidths=3 if graph.node_label[i] else 1)
        ax.text(pos[i][0], pos[i][1] - 0.22, hosts[i], fontsize=6.5, ha="center", va="top", zorder=4)  # fmt: skip
    from matplotlib.lines import Line2D

    legend = [
        Line2D([], [], marker="o", ls="", markerfacecolor="#c0392b", markeredgecolor="white", ms=11,
               label="host flagged"),
        Line2D([], [], marker="o", ls="", markerfacecolor="#2ecc71", markeredgecolor="white", ms=11,
               label="host not flagged"),
        Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="black", mew=3, ms=11,
               label="black ring: host originates an attack flow"),
        Line2D([], [], color=colours[(True, 1)], label="attack flow, flagged"),
        Line2D([], [], color=colours[(False, 1)], label="attack flow, missed"),
        Line2D([], [], color=colours[(True, 0)], label="benign flow, flagged"),
        Line2D([], [], color=colours[(False, 0)], label="benign flow, not flagged"),
    ]  # fmt: skip
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, framealpha=0.9)
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def table_lines(results: dict) -> list[str]:
    lines = ["| evaluation | model | flow P | flow R | flow F1 | host P | host R | host F1 | train s |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for evaluation, block in results.items():
        for model, m in block["models"].items():
            lines.append(f"| {evaluation} | {model} | " + " | ".join(f"{m[k]:.4f}" for k in KEYS)
                         + f" | {m['train_seconds']:.1f} |")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=256, help="flows per window (the gateway benchmark's 256)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--graph-lr", type=float, default=0.01, help="the graph models' Adam rate (GCNTraining's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--captures-subsample", type=int, default=0, help="a stratified sample (0: every flow)")
    parser.add_argument("--holdout-site", default="011-zeek-mixed.conn.log.labeled")
    parser.add_argument("--only", nargs="*", default=["later", "hosts", "site"])
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    data_dir = os.environ.get("BOTDEFENDER_DATA_DIR")
    settings = GraphSettings(flows=args.flows)
    protocol, pipeline_config = ProtocolConfig(), PipelineConfig()
    models = model_params(args.epochs, args.patience, args.graph_lr)
    results: dict = {}
    started = time.perf_counter()
    raw = None
    if {"later", "hosts"} & set(args.only):
        raw = load_dataset("unsw-nb15-raw", data_dir, file=RAW_FILE)
    if "later" in args.only:
        data = windowed.prepare_windows(raw, protocol, pipeline_config, settings, 0.1, args.seed)
        metrics, scores = run_models(data, models, args.seed)
        threshold = data.pipeline.threshold
        hosts = {m: flagged_hosts(data.test, s[1], threshold, s[0]) for m, s in scores.items()}
        benign_from_attackers = int(sum(((g.edge_label == 0) & np.array([str(g.hosts[s]).startswith(ATTACK_NET)
                                        for s in g.edge_index[0]], dtype=bool)).sum() for g in data.test))  # fmt: skip
        results["later windows"] = {"data": f"raw UNSW-NB15 {RAW_FILE}", "split": data.info, "models": metrics,
                                    "hosts": hosts, "benign_flows_from_attack_net": benign_from_attackers}  # fmt: skip
    full = set(args.only) == {"later", "hosts", "site"}
    if full:  # the plot: full runs only
        # the test window holding the most attack flows
        offsets = np.cumsum([0] + [g.n_edges for g in data.test])
        node_offsets = np.cumsum([0] + [g.n_nodes for g in data.test])
        best = int(np.argmax([g.edge_label.sum() for g in data.test]))
        g = data.test[best]
        flow_s, host_s = scores["gcn"]
        plot_window(g, flow_s[offsets[best]:offsets[best + 1]], host_s[node_offsets[best]:node_offsets[best + 1]],
                    threshold, OUT / "window_verdicts.png",
                    f"raw UNSW-NB15 {RAW_FILE}, test window {g.window} ({g.n_edges} flows, {g.n_nodes} hosts, "
                    f"{int(g.edge_label.sum())} attack flows): GCN verdicts")  # fmt: skip
        results["later windows"]["plotted_window"] = {"window": int(g.window), "flows": g.n_edges, "hosts": g.n_nodes,
                                                      "attack_flows": int(g.edge_label.sum())}  # fmt: skip
    if "hosts" in args.only:
        table, info = working_table(raw, protocol)
        src = table.frame[SRC_IP].astype(str).to_numpy(dtype=object)
        labels = table.frame[LABEL].to_numpy(dtype=np.int64)
        for split_seed in range(args.seed, args.seed + 50):
            train_rows, test_rows = leave_hosts_out(src, 0.2, split_seed)
            if labels[test_rows].any() and labels[train_rows].any():
                break
        held_out = sorted(set(src[test_rows].tolist()))
        info.update(split="leave_hosts_out", split_seed=split_seed, held_out_hosts=held_out,
                    test_share=round(len(test_rows) / len(src), 4))  # fmt: skip
        data = windows_from_rows(table, train_rows, test_rows, pipeline_config, settings, 0.1, args.seed, info)
        metrics, scores = run_models(data, models, args.seed)
        results["held-out hosts"] = {"data": f"raw UNSW-NB15 {RAW_FILE}", "split": data.info, "models": metrics,
                                     "hosts": {m: flagged_hosts(data.test, s[1], data.pipeline.threshold, s[0])
                                               for m, s in scores.items()}}  # fmt: skip
    if "site" in args.only:
        table = load_dataset("captures", data_dir, bad_records="skip")
        n_all = len(table)
        if args.captures_subsample:
            table = stratified_subsample(table, args.captures_subsample, args.seed)
        table, info = working_table(table, protocol)
        info.update(split="leave_one_site_out", held_out_site=args.holdout_site, records_before_subsample=n_all)
        data = windows_by_site(table, args.holdout_site, pipeline_config, settings, 0.1, args.seed, info)
        metrics, _ = run_models(data, models, args.seed)
        results["held-out site"] = {"data": "captures" + (f" (stratified subsample of {args.captures_subsample} flows)"
                                                         if args.captures_subsample else " (all flows)"),
                                    "split": data.info, "models": metrics}  # fmt: skip
    payload = {"settings": {"graph": asdict(settings), "epochs": args.epochs, "patience": args.patience,
                            "graph_lr": args.graph_lr,
                            "seed": args.seed, "torch_threads": 1}, "results": results,
               "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    name = ("graph_models.json" if full
            else f"graph_models_{'_'.join(args.only)}_seed{args.seed}_lr{args.graph_lr:g}.json")  # fmt: skip
    (OUT / name).write_text(json.dumps(payload, indent=1, default=str))
    lines = table_lines(results)
    print("\n".join(lines))
    for evaluation, block in results.items():
        for model, h in block.get("hosts", {}).items():
            print(f"{evaluation} / {model}: flagged {h['flagged']}; attackers {h['attackers']}; missed "
                  f"{h['missed_attackers']}; flagged outside {ATTACK_NET}0/24: {h['flagged_outside_attack_net']}; "
                  f"false-positive flows {h['false_positive_flows']}, from {ATTACK_NET}0/24: "
                  f"{h['false_positive_flows_from_attack_net']}")
    if full and not args.no_readme:
        replace_readme_block("graph-models-benchmark", readme_block(payload, lines))
    print(f"wrote {OUT / name} ({payload['seconds']} s)")


def readme_block(payload: dict, lines: list[str]) -> str:
    s = payload["settings"]
    head = (f"`python benchmarks/graph_models.py` (seed {s['seed']}, {s['graph']['flows']}-flow windows, graph "
            f"models and CNN-LSTM up to {s['epochs']} epochs with early stopping (patience {s['patience']}), "
            f"one thread, {payload['seconds']:.0f} s in all):")
    out = [head, "", *lines, ""]
    for evaluation, block in payload["results"].items():
        sp = block["split"]
        out.append(f"- {evaluation}: {block['data']}; {sp.get('train_windows')}/{sp.get('val_windows')}/"
                   f"{sp.get('test_windows')} train/val/test windows ({sp.get('train_records')}/"
                   f"{sp.get('val_records')}/{sp.get('test_records')} flows), {sp.get('test_hosts')} test "
                   f"(window, host) pairs, {sp.get('test_malicious_hosts')} malicious"
                   + (f"; hosts held out (split seed {sp['split_seed']}, {sp['test_share']:.1%} of the flows): "
                      f"{', '.join(sp['held_out_hosts'])}" if "held_out_hosts" in sp else "")
                   + (f"; held-out site {sp['held_out_site']}" if "held_out_site" in sp else ""))  # fmt: skip
        for model, h in block.get("hosts", {}).items():
            out.append(f"  - {model}: flagged {', '.join(h['flagged']) or 'nobody'}; attackers missed: "
                       f"{', '.join(h['missed_attackers']) or 'none'}; {h['false_host_windows']} benign (window, "
                       f"host) pairs flagged; {h['false_positive_flows']} benign flows flagged, "
                       f"{h['false_positive_flows_from_attack_net']} of them sent by {ATTACK_NET}0/24")  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    main()
