"""The centralized reference of a federated host-graph run: the same family, the same split, the same training loop.

    python benchmarks/central_graphs.py [--epochs 60] [--lr 0.01] [--flows 500] [--subsample 0] [--holdout-site F]

The run's rows come from :func:`flows.run_split.load_split` with the chronological per-site split of
``dataset=captures`` (exactly the federated run's train and test windows); the pipeline is fitted on all training
rows at once; the GCN trains ``epochs`` epochs with ``ModelFamily.train_local`` (what each client runs), so
``epochs = rounds x local_epochs`` compares like with like. Prints flow and host F1 on the test windows (and on the
held-out site) every 10 epochs.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from conf.schema import data_settings, from_dict
from flows.pipeline import FeaturePipeline, PipelineConfig
from flows.run_split import holdout_site_table, load_split
from models.checkpoint import ModelSpec
from models.evaluation import detection_metrics


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gcn")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--flows", type=int, default=500)
    parser.add_argument("--subsample", type=int, default=0)
    parser.add_argument("--holdout-site", default="")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    spec = from_dict({"seed": args.seed, "model": {"name": args.model}, "graph": {"flows": args.flows},
                      "dataset": {"name": "captures", "bad_records": "skip", "holdout_site": args.holdout_site},
                      "simulation": {"subsample": args.subsample}})  # fmt: skip
    settings = data_settings(spec)
    train, test = load_split(settings)
    state = FeaturePipeline(PipelineConfig(), seed=args.seed).fit(train).state_
    model_spec = ModelSpec(args.model, state.n_outputs, {})
    family = model_spec.model_family
    X, y = family.batches(train, state, spec.graph)
    sides = {"test": family.batches(test, state, spec.graph)}
    site = holdout_site_table(settings)
    if site is not None:
        sides["held-out site"] = family.batches(site, state, spec.graph)
    torch.manual_seed(args.seed)
    model = model_spec.build()
    for epoch in range(1, args.epochs + 1):
        family.train_local(model, X, y, epochs=1, batch_size=args.batch_size, lr=args.lr, seed=args.seed + epoch)
        if epoch % 10 and epoch != args.epochs:
            continue
        scores = []
        for name, (Xs, ys) in sides.items():
            flow = detection_metrics(ys, _sigmoid(family.predict_logits(model, Xs)), threshold=state.threshold)
            hosts = np.concatenate([g.node_label for g in Xs])
            host = detection_metrics(hosts, _sigmoid(family.predict_host_logits(model, Xs)),
                                     threshold=state.threshold)  # fmt: skip
            scores.append(f"{name}: flow f1 {flow['f1']:.4f} host f1 {host['f1']:.4f}")
        print(f"epoch {epoch}: " + "; ".join(scores), flush=True)


if __name__ == "__main__":
    main()
