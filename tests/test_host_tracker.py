"""The host tracker (issue 14): stream-time watermark, records set aside, releases only by hysteresis, hold or an
explicit call, never by silence or by one record; strict JSON verdicts; real captures with unsorted Zeek times."""

from __future__ import annotations

import json
import math

import pytest

from gateway.hosts import HostPolicy, HostTracker

POLICY = HostPolicy(window=10.0, min_flows=4, isolate_share=0.75, release_share=0.25)


def actions(verdicts) -> list[tuple[str, str]]:
    return [(v.host, v.action) for v in verdicts]


def isolate(tracker: HostTracker, host: str, start: float) -> None:
    verdicts = []
    for t in range(4):
        verdicts += tracker.observe(host, start + t, True)
    assert actions(verdicts) == [(host, "isolate")]


def test_isolate_and_release_with_hysteresis():
    tracker = HostTracker(POLICY)
    seen = []
    for t, bad in enumerate([True, True, True, False, True]):
        seen += [(v.action, v.time) for v in tracker.observe("10.0.0.9", float(t), bad)]
    assert seen == [("isolate", 3.0)]  # 3 of 4 malicious at t=3
    for t in range(5, 16):  # benign flows: the share drops as old ones leave the window
        seen += [(v.action, v.time, v.rule) for v in tracker.observe("10.0.0.9", float(t), False)]
    assert seen[-1] == ("release", seen[-1][1], "share") and len(seen) == 2


@pytest.mark.parametrize("bad_time", [1e12, math.inf, -math.inf, math.nan])
def test_one_record_with_an_absurd_time_frees_nobody_and_is_set_aside(bad_time):
    """Reproduced on main: one flow at 1e12 or inf expired every window and released every isolated host."""
    tracker = HostTracker(POLICY)
    isolate(tracker, "10.0.0.6", 100.0)
    assert tracker.observe("10.0.0.8", bad_time, False) == []
    assert tracker.isolated.keys() == {"10.0.0.6"} and tracker.watermark == 103.0
    counts = tracker.counts()
    assert counts["set_aside_ahead"] + counts["set_aside_non_finite"] == 1 and counts["scored"] == 4
    for t in range(104, 110):  # time goes on from where the stream really is
        assert tracker.observe("10.0.0.7", float(t), False) == []
    assert tracker.isolated.keys() == {"10.0.0.6"}


def test_silence_never_releases_a_blocked_host():
    """Reproduced on main: a host cut off by its block went quiet and was released after one window."""
    tracker = HostTracker(POLICY)
    isolate(tracker, "10.0.0.6", 200.0)
    released = []
    for t in range(204, 3000, 50):  # others keep talking for ~45 minutes of stream time
        released += tracker.observe("10.0.0.8", float(t), False)
    assert released == [] and "10.0.0.6" in tracker.isolated


def test_hold_releases_on_stream_time_and_the_host_starts_afresh():
    tracker = HostTracker(HostPolicy(window=10.0, min_flows=4, isolate_share=0.75, release_share=0.25, hold=300.0))
    isolate(tracker, "10.0.0.6", 0.0)
    assert tracker.observe("10.0.0.8", 200.0, False) == []
    verdicts = tracker.observe("10.0.0.8", 303.0, False)
    assert [(v.host, v.action, v.rule) for v in verdicts] == [("10.0.0.6", "release", "hold")]
    assert tracker.observe("10.0.0.6", 304.0, True) == []  # one malicious flow does not isolate again
    isolate_again = [v for t in range(305, 308) for v in tracker.observe("10.0.0.6", float(t), True)]
    assert actions(isolate_again) == [("10.0.0.6", "isolate")]


def test_explicit_release():
    tracker = HostTracker(POLICY)
    isolate(tracker, "10.0.0.6", 0.0)
    verdict = tracker.release("10.0.0.6")
    assert (verdict.action, verdict.rule) == ("release", "explicit") and tracker.release("10.0.0.6") is None


def test_isolation_is_reasserted_while_the_host_keeps_attacking():
    """A block whose TTL lapsed at the controller is renewed: the tracker says isolate again every window."""
    tracker = HostTracker(POLICY)
    verdicts = [v for t in range(0, 25) for v in tracker.observe("10.0.0.6", float(t), True)]
    assert [(v.action, v.rule, v.time) for v in verdicts] == [("isolate", "share", 3.0), ("isolate", "reassert", 13.0),
                                                               ("isolate", "reassert", 23.0)]  # fmt: skip


def test_late_records_count_at_the_watermark_minus_the_lateness():
    tracker = HostTracker(HostPolicy(window=60.0, min_flows=4, isolate_share=0.75, release_share=0.25, lateness=30.0))
    tracker.observe("10.0.0.8", 100_000.0, False)
    verdicts = [v for _ in range(4) for v in tracker.observe("10.0.0.6", 100_000.0 - 78_706.0, True)]
    assert actions(verdicts) == [("10.0.0.6", "isolate")] and verdicts[0].time == 100_000.0
    assert tracker.counts()["late"] == 4 and tracker.watermark == 100_000.0  # time did not go back


def test_a_real_gap_rebases_the_watermark_after_enough_records():
    tracker = HostTracker(HostPolicy(window=10.0, min_flows=4, isolate_share=0.75, release_share=0.25,
                                     max_advance=3600.0, rebase_after=5))  # fmt: skip
    tracker.observe("10.0.0.8", 0.0, False)
    for i in range(4):
        assert tracker.observe("10.0.0.8", 86_400.0 + i, False) == []
    assert tracker.watermark == 0.0 and tracker.counts()["set_aside_ahead"] == 4
    tracker.observe("10.0.0.8", 86_404.0, False)  # the fifth in a row: the stream has moved on
    assert tracker.watermark == 86_400.0 and tracker.counts()["rebased"] == 1
    verdicts = [v for t in range(86_405, 86_409) for v in tracker.observe("10.0.0.6", float(t), True)]
    assert actions(verdicts) == [("10.0.0.6", "isolate")]


def test_scattered_absurd_times_never_rebase():
    tracker = HostTracker(HostPolicy(rebase_after=3))
    tracker.observe("10.0.0.8", 0.0, False)
    for i in range(20):  # absurd times, each far from the other: no coherent jump
        tracker.observe("10.0.0.8", 1e9 * (i + 1), False)
        tracker.observe("10.0.0.8", float(i), False)
    assert tracker.watermark == 19.0 and tracker.counts()["rebased"] == 0


def test_verdicts_are_strict_json():
    tracker = HostTracker(POLICY)
    verdicts = [v for t in [math.nan, math.inf, 1.0, 2.0, 3.0, 4.0] for v in tracker.observe("10.0.0.6", t, True)]
    assert verdicts and all(json.loads(json.dumps(v.as_dict(), allow_nan=False)) for v in verdicts)


@pytest.mark.parametrize("field, value", [("window", 0), ("window", math.inf), ("lateness", -1), ("min_flows", 0),
                                          ("min_flows", True), ("max_advance", math.nan), ("hold", -5),
                                          ("rebase_after", 0), ("isolate_share", math.nan)])  # fmt: skip
def test_a_bad_policy_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        HostPolicy(**{field: value})


def _zeek_rows(path):
    """(ts, originator, malicious) of a labelled Zeek conn.log, in file order (unsorted times)."""
    fields = None
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            parts = line.replace("   ", "\t").split("\t")
            yield float(parts[fields.index("ts")]), parts[fields.index("id.orig_h")], "Malicious" in parts[-2] + parts[-1]


def test_a_replayed_capture_with_backward_times_isolates_its_bot(data_dir):
    """IoT-23 34-1 (Mirai, 2018): ts jumps back by up to 48,838 s; nothing is set aside, the bot ends isolated,
    no benign-only host is isolated, and every release follows a benign stretch of at least min_flows flows."""
    tracker = HostTracker(HostPolicy())
    verdicts = []
    rows = list(_zeek_rows(data_dir / "iot-23" / "CTU-IoT-Malware-Capture-34-1.conn.log.labeled"))
    for ts, host, bad in rows:
        verdicts += tracker.observe(host, ts, bad)
    counts = tracker.counts()
    assert counts["records"] == len(rows) == 23_145 and counts["scored"] == len(rows)
    assert counts["set_aside_ahead"] == counts["set_aside_non_finite"] == 0 and counts["late"] > 0
    benign_only = {h for h in {r[1] for r in rows} if not any(r[2] for r in rows if r[1] == h)}
    assert "192.168.1.195" in tracker.isolated
    assert not {v.host for v in verdicts if v.action == "isolate"} & benign_only
    releases = [v for v in verdicts if v.action == "release"]
    assert all(v.rule == "share" and v.flows >= HostPolicy().min_flows for v in releases)


def test_every_capture_with_times_replays_without_records_set_aside(data_dir):
    """The bound (one hour ahead of the watermark) holds for every Zeek capture here (at most 900 s measured)."""
    files = sorted((data_dir / "iot-23").glob("*.conn.log.labeled")) + sorted(
        (data_dir / "stratosphere").glob("*.conn.log.labeled"))  # fmt: skip
    assert len(files) >= 7
    for path in files:
        tracker = HostTracker(HostPolicy())
        for ts, host, bad in _zeek_rows(path):
            tracker.observe(host, ts, bad)
        counts = tracker.counts()
        assert counts["set_aside_ahead"] == counts["set_aside_non_finite"] == 0, (path.name, counts)
