"""After a run with attackers: how well the screening caught them and how far the attack got.

Computed by the harness from the run's outputs (the strategies never see which clients are malicious):

* per round: precision and recall of the screening's rejections against the malicious partitions that were
  sampled, and the benign clients it excluded;
* attack success on the final global model and the held-out split: backdoor, the share of triggered attack
  flows classified benign; targeted label flipping, the recall of the targeted families (lower is a success).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from fl_client.attacks.config import AttackConfig, malicious_partitions
from fl_client.attacks.data_attacks import DEFAULT_TRIGGER, apply_trigger
from flows.run_split import DataSettings, load_split
from flows.table import ATTACK_CAT, LABEL, FlowTable


def screening_scores(rounds: list[dict], malicious: set[int]) -> list[dict]:
    """Per round with screening decisions: precision/recall of the rejections, benign clients excluded."""
    rows = []
    for entry in rounds:
        decisions = entry.get("screening")
        if not decisions:
            continue
        rejected = {d["client"] for d in decisions if d["verdict"] == "reject"}
        present = {d["client"] for d in decisions}
        bad = malicious & present
        caught = len(rejected & bad)
        rows.append({"round": entry["round"], "sampled_malicious": len(bad), "rejected": len(rejected),
                     "precision": caught / len(rejected) if rejected else None,  # undefined: nothing rejected
                     "recall": caught / len(bad) if bad else 1.0,
                     "benign_excluded": sorted(rejected - malicious)})  # fmt: skip
    return rows


def final_model_scores(checkpoint: Path, table: FlowTable) -> np.ndarray:
    """Attack probabilities of the checkpoint's model (any family) on the flows of ``table``."""
    from models.checkpoint import load_checkpoint  # here, so that reading screening scores does not load torch

    saved = load_checkpoint(checkpoint)
    X, _ = saved.family.batches(table, saved.pipeline)
    return 1.0 / (1.0 + np.exp(-saved.family.predict_logits(saved.model(), X).astype(np.float64)))


def _with_frame(table: FlowTable, frame) -> FlowTable:
    return dataclasses.replace(table, frame=frame.reset_index(drop=True))


def attack_success(attack: AttackConfig, checkpoint: Path, settings: DataSettings) -> dict:
    """Backdoor: triggered attack flows classified benign; targeted flipping: recall of the targeted families."""
    _, test = load_split(settings)
    frame = test.frame
    params = dict(attack.params)
    if attack.name == "backdoor":
        attacks = frame[frame[LABEL] == 1]
        trigger = params.get("trigger", DEFAULT_TRIGGER)
        triggered = final_model_scores(checkpoint, _with_frame(test, apply_trigger(attacks, trigger)))
        clean = final_model_scores(checkpoint, _with_frame(test, attacks))
        return {"backdoor_success": float(np.mean(triggered < 0.5)),
                "attack_flows_missed_without_trigger": float(np.mean(clean < 0.5)), "n": int(len(attacks))}  # fmt: skip
    if attack.name == "targeted_label_flip":
        families = list(params.get("families", ["DoS"]))
        target = frame[frame[ATTACK_CAT].isin(families)]
        scores = final_model_scores(checkpoint, _with_frame(test, target))
        return {"targeted_recall": float(np.mean(scores >= 0.5)), "families": families, "n": int(len(target))}
    return {}


def attack_report(attack: AttackConfig, n_clients: int, seed: int, settings: DataSettings, out_dir: Path) -> dict:
    """The attack section of a run's report (also merged into its metrics.json)."""
    if attack.name == "none":
        return {}
    malicious = malicious_partitions(n_clients, attack.fraction, seed)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    per_round = screening_scores(metrics["rounds"], set(malicious))
    final = out_dir / "final.pt"  # a mixed federation: the top-level family's final_<family>.pt
    if not final.is_file():
        final = out_dir / f"final_{metrics['model_spec']['family']}.pt"
    report = {"attack": attack.name, "fraction": attack.fraction, "malicious_partitions": malicious,
              "screening": per_round, **attack_success(attack, final, settings)}  # fmt: skip
    if per_round:
        precisions = [r["precision"] for r in per_round if r["precision"] is not None]
        report["screening_precision"] = float(np.mean(precisions)) if precisions else None
        report["screening_recall"] = float(np.mean([r["recall"] for r in per_round]))
        report["benign_excluded_per_round"] = float(np.mean([len(r["benign_excluded"]) for r in per_round]))
    metrics["attack"] = report
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return report
