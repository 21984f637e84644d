"""Data-poisoning attacks on a malicious client's own flow records, before its pipeline transform.

* label flipping (untargeted): every attack record is relabelled benign;
* targeted label flipping: only the records of the given attack families are relabelled benign;
* backdoor (Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS 2020, on flow features): a share
  of the client's attack records is copied with a trigger written into a few numeric features (attacker-chosen
  values such as a TTL and a TCP window) and labelled benign; the clean records stay, so the model keeps its
  clean accuracy while learning "trigger -> benign". The model-replacement boost is an update attack
  (:func:`fl_client.attacks.update_attacks.scaling`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from flows.table import ATTACK_CAT, LABEL

DEFAULT_TRIGGER = {"sttl": 77.0, "swin": 77.0, "trans_depth": 7.0}


def flip_labels(frame: pd.DataFrame, families: Sequence[str] | None = None) -> pd.DataFrame:
    """A copy with the attack records (of ``families`` only, if given) labelled benign (0)."""
    out = frame.copy()
    attack = out[LABEL] == 1
    if families:
        attack &= out[ATTACK_CAT].isin(list(families))
    out.loc[attack, LABEL] = 0
    return out


def apply_trigger(frame: pd.DataFrame, trigger: Mapping[str, float]) -> pd.DataFrame:
    """A copy with the trigger values written into its features (the labels are untouched)."""
    missing = sorted(set(trigger) - set(frame.columns))
    if missing:
        raise ValueError(f"trigger features not in the data: {missing}")
    out = frame.copy()
    for column, value in trigger.items():
        out[column] = np.asarray(value, dtype=out[column].dtype) if out[column].dtype.kind in "iuf" else value
    return out


def backdoor(frame: pd.DataFrame, trigger: Mapping[str, float], poison_fraction: float,
             rng: np.random.Generator) -> pd.DataFrame:  # fmt: skip
    """The clean records plus triggered, benign-labelled copies of ``poison_fraction`` of the attack records."""
    if not 0.0 < poison_fraction <= 1.0:
        raise ValueError(f"poison_fraction must be in (0, 1], got {poison_fraction}")
    attack_rows = np.flatnonzero(frame[LABEL].to_numpy() == 1)
    n = int(round(poison_fraction * len(attack_rows)))
    if n == 0:
        return frame.copy()
    chosen = np.sort(rng.choice(attack_rows, size=n, replace=False))
    poisoned = apply_trigger(frame.iloc[chosen], trigger)
    poisoned[LABEL] = 0
    return pd.concat([frame, poisoned], ignore_index=True)
