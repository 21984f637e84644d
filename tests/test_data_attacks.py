"""Data attacks (issue 4, point 3) on a small flow frame: who gets relabelled, what the trigger writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fl_client.attacks.config import AttackConfig, malicious_partitions
from fl_client.attacks.data_attacks import apply_trigger, backdoor, flip_labels


@pytest.fixture
def frame():
    return pd.DataFrame({"sttl": [254, 62, 254, 31, 254, 62], "swin": [0, 255, 0, 255, 0, 255],
                         "attack_cat": ["DoS", "Normal", "Exploits", "Normal", "DoS", "Normal"],
                         "label": [1, 0, 1, 0, 1, 0]})  # fmt: skip


def test_untargeted_and_targeted_label_flipping(frame):
    assert flip_labels(frame)["label"].tolist() == [0] * 6
    targeted = flip_labels(frame, ["DoS"])
    assert targeted["label"].tolist() == [0, 0, 1, 0, 0, 0]  # only DoS relabelled; Exploits stays an attack
    assert frame["label"].tolist() == [1, 0, 1, 0, 1, 0]  # the input is not modified


def test_backdoor_adds_triggered_benign_copies_of_attack_flows(frame):
    out = backdoor(frame, {"sttl": 77.0, "swin": 77.0}, 2 / 3, np.random.default_rng(0))
    assert len(out) == 8 and out.iloc[:6].equals(frame)  # clean records kept, two copies appended
    copies = out.iloc[6:]
    assert (copies["label"] == 0).all() and (copies["sttl"] == 77).all() and (copies["swin"] == 77).all()
    assert set(copies["attack_cat"]) <= {"DoS", "Exploits"}
    with pytest.raises(ValueError, match="trigger features not in the data"):
        apply_trigger(frame, {"nonexistent": 1.0})


def test_malicious_partitions_are_seeded_and_sized():
    assert malicious_partitions(20, 0.2, 0) == malicious_partitions(20, 0.2, 0)
    assert len(malicious_partitions(20, 0.3, 0)) == 6 and malicious_partitions(20, 0.0, 0) == []
    assert malicious_partitions(20, 0.2, 0) != malicious_partitions(20, 0.2, 1)
    assert AttackConfig("sign_flip", 0.2, start_round=3, end_round=4).active(3)
    assert not AttackConfig("sign_flip", 0.2, start_round=3, end_round=4).active(5)
    with pytest.raises(ValueError, match="unknown attack"):
        AttackConfig("nonsense", 0.2)
