"""A live switch (issue 16): ``gateway serve --follow --bundle ROOT/current`` notices a newly installed bundle,
verifies it with the pinned key and scores the next batch with it: no flow lost or scored twice, every verdict
naming the model version that made it. A bundle that fails a check (signature, input contract, older release) is
refused with a logged line and the old model keeps serving."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RAW_FILE
from gateway.bundle import load_bundle
from gateway.install import install_bundle, pack_bundle, switch_current
from gateway.signing import generate_signing_key
from test_bundle_signing import make_bundle
from test_gateway import BLOCKER

REPO = Path(__file__).resolve().parents[1]


def _shift_scaler(manifest: dict) -> None:
    """Another model on the same inputs: every numeric column's mean moved by two standard deviations."""
    pipeline = manifest["pipeline"]
    pipeline["mean"] = [m + 2 * s for m, s in zip(pipeline["mean"], pipeline["std"])]


def _rename_first_column(manifest: dict) -> None:
    """A bundle reading another source column (its first numeric one renamed)."""
    from flows.pipeline_state import PipelineState

    pipeline = manifest["pipeline"]
    old = pipeline["numeric"][0]
    pipeline["numeric"][0] = "renamed_column"
    if pipeline.get("selected") is not None:
        pipeline["selected"] = ["renamed_column" if c == old else c for c in pipeline["selected"]]
    state = PipelineState.from_dict(pipeline)
    manifest["features"].update(input_columns=state.input_columns, encoded=state.output_names)


@pytest.fixture
def setup(bundle_dir, tmp_path):
    """A root with release 1 ("A", fp32) installed, release 2 ("B", fp32, another scaler) signed and ready."""
    private, public = generate_signing_key(tmp_path / "op.key", tmp_path / "op.pub")
    fp32 = lambda m: m.update(default_model="fp32")  # noqa: E731 (batch-independent scores to compare)
    a = make_bundle(bundle_dir, tmp_path / "a", private, 1, "A", edit=fp32)
    b = make_bundle(bundle_dir, tmp_path / "b", private, 2, "B", edit=lambda m: (fp32(m), _shift_scaler(m)))
    root = tmp_path / "root"
    install_bundle(pack_bundle(a), root, public)
    return {"root": root, "private": private, "public": public, "a": a, "b": b}


def _reference_scores(bundle: Path, source: Path) -> dict[int, float]:
    """line -> score of every record of ``source`` served by ``bundle`` in this process."""
    from gateway.serve import serve

    out = io.StringIO()
    serve(bundle, source, out=out, host_sink=None)
    return {row["line"]: row["score"] for row in map(json.loads, out.getvalue().splitlines())}


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"serve ended early: {process.stderr.read()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {count} lines in {timeout} s")


def test_serve_follow_switches_to_a_newly_installed_bundle_without_losing_a_flow(setup, data_dir, tmp_path):
    lines = (data_dir / "unsw-nb15" / "raw" / RAW_FILE).read_text().splitlines(keepends=True)
    full = tmp_path / "full.csv"
    full.write_text("".join(lines))
    reference = {"A": _reference_scores(setup["a"], full), "B": _reference_scores(setup["b"], full)}
    differs = {n for n in reference["A"] if abs(reference["A"][n] - reference["B"][n]) > 1e-2}
    assert len(differs) > 300, "the two models must be told apart by their scores"
    root, capture, verdicts = setup["root"], tmp_path / "growing.csv", tmp_path / "verdicts.jsonl"
    capture.write_text("".join(lines[:1000]))
    process = subprocess.Popen([sys.executable, "-c", BLOCKER, "serve", "--bundle", str(root / "current"),
                                "--public-key", str(setup["public"]), "--source", str(capture), "--follow",
                                "--idle-exit", "4", "--switch-interval", "0.2", "--batch", "64", "--host-sink", "",
                                "--out", str(verdicts)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        _wait_for_lines(verdicts, 1000, process)
        installed = install_bundle(pack_bundle(setup["b"]), root, setup["public"])  # while serve runs
        assert installed.release == 2 and os.readlink(root / "current") == "releases/2"
        time.sleep(0.5)  # past the switch interval: the next batch looks at the link
        with open(capture, "a") as handle:
            for start in range(1000, 2000, 250):
                handle.write("".join(lines[start : start + 250]))
                handle.flush()
                time.sleep(0.2)
        _wait_for_lines(verdicts, 2000, process)
        # a release 3 signed by another key, put in place by hand (not by install): refused, B keeps serving
        other, _ = generate_signing_key(tmp_path / "other.key", tmp_path / "other.pub")
        forged = make_bundle(setup["a"], tmp_path / "forged", other, 3, "FORGED")
        os.rename(forged, root / "releases" / "3")
        switch_current(root, 3)
        time.sleep(0.5)
        with open(capture, "a") as handle:
            handle.write("".join(lines[2000:]))
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err[-3000:]
    rows = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert len(rows) == len(lines) == 3000
    assert sorted(row["line"] for row in rows) == list(range(1, 3001))  # none lost, none twice
    versions = [row["model_version"] for row in rows]
    assert versions == ["A"] * 1000 + ["B"] * 2000
    for row in rows:  # each verdict comes from the model it names
        assert abs(row["score"] - reference[row["model_version"]][row["line"]]) <= 1e-4, row
    assert len(differs & {row["line"] for row in rows[1000:]}) > 200
    summary = json.loads(next(line for line in err.splitlines() if line.startswith("summary: "))[9:])
    assert summary["model_versions"] == {"A": 1000, "B": 2000} and summary["scored"] == 3000
    assert [(s["from"], s["to"], s["release"], s["after_scored"]) for s in summary["switches"]] == [("A", "B", 2, 1000)]
    assert len(summary["refused_switches"]) == 1 and "bad signature" in summary["refused_switches"][0]["reason"]
    assert "switched from model version A to B (release 2" in err
    refusal = [line for line in err.splitlines() if "refused to switch to" in line]
    assert len(refusal) == 1 and "bad signature" in refusal[0] and "still serving model version B" in refusal[0]


def _follower(setup):
    from gateway.engine import VerdictModel
    from gateway.switch import BundleFollower

    current = load_bundle(os.path.realpath(setup["root"] / "current"))
    return BundleFollower(setup["root"] / "current", current, VerdictModel, setup["public"], interval=0.0)


def test_a_bundle_reading_other_columns_is_refused_and_the_old_one_kept(setup, tmp_path, caplog):
    follower = _follower(setup)  # serving A
    changed = make_bundle(setup["a"], tmp_path / "c", setup["private"], 5, "C", edit=_rename_first_column)
    install_bundle(pack_bundle(changed), setup["root"], setup["public"])  # the installer does not judge inputs
    with caplog.at_level(logging.ERROR, logger="gateway.switch"):
        assert follower.poll() is None
        assert follower.poll() is None  # the same target is not tried (nor logged) again
    assert follower.current.model_version == "A"
    [record] = [r for r in caplog.records if r.name == "gateway.switch"]
    message = record.getMessage()
    assert "input contract differs" in message and "added renamed_column" in message
    assert "still serving model version A" in message and "\n" not in message


def test_an_older_release_or_a_broken_one_is_refused_and_a_good_one_taken(setup, tmp_path, caplog):
    root = setup["root"]
    install_bundle(pack_bundle(setup["b"]), root, setup["public"])
    follower = _follower(setup)  # serving B, release 2
    switch_current(root, 1)  # pointed back at release 1 by hand
    with caplog.at_level(logging.ERROR, logger="gateway.switch"):
        assert follower.poll() is None
        broken = make_bundle(setup["a"], root / "releases" / "7", setup["private"], 7, "D")
        (broken / "model_fp32_b256.tflite.xz").write_bytes(b"damaged")
        switch_current(root, 7)
        assert follower.poll() is None
    reasons = [r["reason"] for r in follower.refusals]
    assert "release 1 is older than the served release 2" in reasons[0]
    assert "does not match the manifest" in reasons[1]
    assert follower.current.model_version == "B"
    good = make_bundle(setup["a"], tmp_path / "e", setup["private"], 8, "E")
    install_bundle(pack_bundle(good), root, setup["public"])
    target, bundle, model = follower.poll()
    assert bundle.model_version == "E" and target == str(root / "releases" / "8") and model.bundle is bundle


def test_a_service_switches_between_batches_and_counts_verdicts_per_version(setup, data_dir):
    from gateway.engine import VerdictModel
    from gateway.serve import VerdictService, record_batches
    from gateway.sources import FlowSource
    from gateway.switch import poll_switch

    follower = _follower(setup)
    service = VerdictService(follower.current, VerdictModel(follower.current), io.StringIO(), [])
    service.follower = follower
    source = FlowSource(data_dir / "unsw-nb15" / "raw" / RAW_FILE)
    for index, batch in enumerate(record_batches(source, 500, service.bundle.pipeline, service.report)):
        if index == 2:
            install_bundle(pack_bundle(setup["b"]), setup["root"], setup["public"])
        poll_switch(service)
        service.process(batch)
    report = service.report.as_dict(source.stats.lines)
    assert report["model_versions"] == {"A": 1000, "B": 2000} and report["switches"][0]["after_scored"] == 1000
    versions = [json.loads(line)["model_version"] for line in service.out.getvalue().splitlines()]
    assert versions == ["A"] * 1000 + ["B"] * 2000


def test_host_verdicts_name_the_model_version_that_made_them(bundle_dir, data_dir, tmp_path, caplog):
    """Every host verdict a sink gets names the serving bundle's model version, and the isolation hook's block
    reason carries it to the controller."""
    from gateway.hosts import HostVerdict
    from gateway.serve import serve
    from sdn.hook import IsolationHook

    hosts = tmp_path / "hosts.jsonl"
    serve(bundle_dir, data_dir / "unsw-nb15" / "raw" / RAW_FILE, out=io.StringIO(), host_sink=f"file:{hosts}")
    rows = [json.loads(line) for line in hosts.read_text().splitlines()]
    version = load_bundle(bundle_dir).model_version
    assert rows and all(row["model_version"] == version for row in rows)
    hook = IsolationHook("http://127.0.0.1:9", tmp_path / "q.sqlite", dry_run=True)
    with caplog.at_level(logging.INFO, logger="sdn.hook"):
        hook.emit(HostVerdict("10.0.0.5", "isolate", 1.0, 10, 9, "share", model_version=version))
    hook.close()
    assert f"model {version}" in caplog.text
