"""Host sinks of `gateway serve`: several at once, each verdict to every sink in order; a bad spec opens none."""

from __future__ import annotations

import json

import pytest

from gateway.hosts import HostVerdict
from gateway.serve import SINKS, make_sinks


def test_every_sink_gets_every_verdict_in_the_order_given(tmp_path):
    order = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def emit(self, verdict):
            order.append((self.name, verdict.host))

        def close(self):
            order.append((self.name, "closed"))

    SINKS["record"] = Recorder
    try:
        sinks = make_sinks(["record:a", f"file:{tmp_path / 'hosts.jsonl'}", "", "record:b"])
        assert len(sinks) == 3  # '' is no sink
        for host in ("10.0.0.1", "10.0.0.2"):
            for sink in sinks:
                sink.emit(HostVerdict(host, "isolate", 1.0, 10, 10))
        for sink in sinks:
            sink.close()
    finally:
        del SINKS["record"]
    assert order == [("a", "10.0.0.1"), ("b", "10.0.0.1"), ("a", "10.0.0.2"), ("b", "10.0.0.2"), ("a", "closed"),
                     ("b", "closed")]  # fmt: skip
    assert [json.loads(line)["host"] for line in (tmp_path / "hosts.jsonl").read_text().splitlines()] == [
        "10.0.0.1", "10.0.0.2"]  # fmt: skip


def test_a_bad_spec_closes_the_sinks_already_opened(tmp_path):
    closed = []

    class Tracked:
        def __init__(self, _):
            pass

        def emit(self, verdict):
            pass

        def close(self):
            closed.append(True)

    SINKS["tracked"] = Tracked
    try:
        with pytest.raises(ValueError, match="unknown host sink 'nope'"):
            make_sinks(["tracked:x", "nope:y"])
    finally:
        del SINKS["tracked"]
    assert closed == [True]
    assert make_sinks(None) == [] and make_sinks("") == []
