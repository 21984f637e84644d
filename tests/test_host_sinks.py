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


def test_the_sdn_sink_takes_its_token_from_a_private_file_only(tmp_path):
    """The gateway's `sdn:` sink passes token_file= to the hook: a token file others may read is refused on start
    (the file sinks opened before it are closed), and the token never appears in the error."""
    token = tmp_path / "gw.token"
    token.write_text("bd1.gw1." + "a" * 43 + "\n")
    token.chmod(0o644)
    spec = f"sdn:http://127.0.0.1:9?queue={tmp_path / 'q.sqlite'}&token_file={token}"
    with pytest.raises(ValueError, match="mode 0644") as caught:
        make_sinks([f"file:{tmp_path / 'hosts.jsonl'}", spec])
    assert "a" * 43 not in str(caught.value)
    token.chmod(0o600)
    [sink] = make_sinks([spec + "&interval=1000"])
    sink.close()
