"""Gateway (issue 5): bundle round trip and refusals, fp32/int8 agreement with PyTorch on real flows, the verdict
service without torch, malformed lines counted, following a growing file, host verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gateway.bundle import BundleError, load_bundle

REPO = Path(__file__).resolve().parents[1]
from conftest import RAW_FILE


def test_bundle_round_trip(bundle_dir, raw_checkpoint):
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    assert sorted(manifest["models"]) == ["fp32_b1", "fp32_b256", "int8_b1", "int8_b256"]
    assert set(manifest["files"]) == {m["file"] for m in manifest["models"].values()}
    assert manifest["source"]["round"] == 3 and manifest["model_version"].endswith(manifest["source"]
                                                                                   ["checkpoint_sha256"][:8])
    assert bundle.pipeline.output_names == manifest["features"]["encoded"]
    assert manifest["features"]["n_features"] == raw_checkpoint[2].shape[1]
    for key, entry in manifest["models"].items():  # stored xz-compressed by default; the sizes are the files'
        assert entry["compression"] == "xz" and entry["file"].endswith(".tflite.xz")
        assert (bundle_dir / entry["file"]).stat().st_size == entry["bytes"] < entry["tflite_bytes"]
        content = bundle.model_content(entry["variant"], entry["batch_size"])
        assert len(content) == entry["tflite_bytes"] and content[4:8] == b"TFL3", key
    assert bundle.model_file("int8", 256).stat().st_size < bundle.model_file("fp32", 256).stat().st_size


def _rewrite(copy: Path, edit) -> None:
    """Apply ``edit`` to the copy's manifest and re-sign its files (as an exporter would)."""
    from gateway.bundle import sha256_of

    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    manifest["files"] = {m["file"]: sha256_of(copy / m["file"]) for m in manifest["models"].values()}
    (copy / "manifest.json").write_text(json.dumps(manifest))


def test_a_schema_1_bundle_of_plain_tflite_files_still_serves_the_same_probabilities(bundle_dir, raw_checkpoint,
                                                                                     tmp_path):  # fmt: skip
    import lzma

    from gateway.engine import VerdictModel

    copy = _copy(bundle_dir, tmp_path)

    def to_plain(manifest: dict) -> None:
        manifest["bundle_schema"] = 1
        for entry in manifest["models"].values():
            packed = copy / entry.pop("file")
            entry["file"] = packed.stem  # model_..._bN.tflite
            (copy / entry["file"]).write_bytes(lzma.decompress(packed.read_bytes()))
            packed.unlink()
            del entry["compression"]

    _rewrite(copy, to_plain)
    x = raw_checkpoint[2][:300]
    plain, packed = load_bundle(copy), load_bundle(bundle_dir)
    assert sorted(p.name for p in copy.glob("*.tflite")) == sorted(m["file"] for m in plain.manifest["models"].values())
    for variant in ("fp32", "int8"):
        assert np.array_equal(VerdictModel(plain, variant).probabilities(x),
                              VerdictModel(packed, variant).probabilities(x))  # fmt: skip


def test_a_damaged_xz_file_with_a_matching_hash_is_refused_with_the_reason(bundle_dir, tmp_path):
    copy = _copy(bundle_dir, tmp_path)
    _flip_a_byte(copy / "model_int8_b1.tflite.xz")
    _rewrite(copy, lambda manifest: None)
    bundle = load_bundle(copy)  # the hash matches: only decompressing finds the damage
    with pytest.raises(BundleError, match="model_int8_b1.tflite.xz: not a valid xz file"):
        bundle.model_content("int8", 1)
    from gateway.__main__ import main

    assert main(["verify", "--bundle", str(copy)]) == 2  # verify unpacks and loads every model
    _rewrite(copy, lambda manifest: manifest["models"]["int8_b1"].update(compression="zstd"))
    with pytest.raises(BundleError, match="unknown compression 'zstd'"):
        load_bundle(copy)


def test_a_python_without_lzma_gets_a_clear_error(bundle_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "lzma", None)  # import lzma now raises ImportError
    with pytest.raises(BundleError, match="this Python has no lzma module.*--compression none"):
        load_bundle(bundle_dir).model_content("int8", 1)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _copy(bundle_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(bundle_dir, tmp_path / "copy"))


def test_a_tampered_model_file_is_refused(bundle_dir, tmp_path):
    copy = _copy(bundle_dir, tmp_path)
    _flip_a_byte(copy / "model_int8_b1.tflite.xz")
    with pytest.raises(BundleError, match="sha256 .* does not match"):
        load_bundle(copy)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(bundle_schema=99), "bundle schema 99 is not supported"),
    (lambda m: m["pipeline"].update(schema_version=7), "pipeline schema version 7 is not supported"),
    (lambda m: m["features"]["encoded"].pop(), "declared encoded features differ"),
    (lambda m: m.pop("files"), "missing field"),
])  # fmt: skip
def test_a_bundle_of_another_schema_is_refused(bundle_dir, tmp_path, edit, message):
    copy = _copy(bundle_dir, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)


def test_tflite_models_agree_with_pytorch_on_real_flows(bundle_dir, raw_checkpoint):
    import torch

    from gateway.engine import VerdictModel

    _, model, x = raw_checkpoint
    with torch.no_grad():
        reference = torch.sigmoid(model(torch.from_numpy(x))).numpy()
    bundle = load_bundle(bundle_dir)
    fp32 = VerdictModel(bundle, "fp32").probabilities(x)  # 3000 rows: 11 batches of 256 and a padded remainder
    assert np.abs(fp32 - reference).max() < 1e-4
    int8 = VerdictModel(bundle, "int8").probabilities(x)
    assert np.mean((int8 >= 0.5) == (reference >= 0.5)) >= 0.99
    single = VerdictModel(bundle, "fp32").probabilities(x[:1])  # the batch-1 model
    assert abs(float(single[0]) - float(reference[0])) < 1e-4


def test_static_int8_takes_quantized_input_and_still_agrees(raw_checkpoint, bundle_dir, tmp_path):
    """Also the plain (uncompressed) export path over an earlier bundle, and a refused compression."""
    import torch

    from gateway.engine import VerdictModel
    from gateway.export import ExportError, ExportOptions, export_bundle

    with pytest.raises(ExportError, match="compression must be one of"):
        ExportOptions(compression="zip")

    checkpoint, model, x = raw_checkpoint
    for old in bundle_dir.iterdir():  # an earlier (xz) bundle in the folder: the export replaces it
        (tmp_path / old.name).write_bytes(old.read_bytes())
    (tmp_path / "notes.txt").write_text("not the exporter's")
    options = ExportOptions(batch_sizes=(64,), quantization="static", compression="none")
    export_bundle(checkpoint, tmp_path, options, calibration=x[:512])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "model_fp32_b64.tflite",
                                                          "model_int8_b64.tflite", "notes.txt"]  # fmt: skip
    engine = VerdictModel(load_bundle(tmp_path), "int8")
    assert engine.runners[64].input["dtype"] == np.int8  # full integer: the runtime quantizes the input
    with torch.no_grad():
        reference = torch.sigmoid(model(torch.from_numpy(x))).numpy()
    assert np.mean((engine.probabilities(x) >= 0.5) == (reference >= 0.5)) >= 0.95


def test_the_export_and_verify_commands(raw_checkpoint, tmp_path, capsys):
    from gateway.__main__ import main

    out = tmp_path / "bundle"
    assert main(["export", str(raw_checkpoint[0]), "--out", str(out), "--batch-sizes", "8"]) == 0
    printed = capsys.readouterr().out
    assert f"bundle {out}: model version" in printed and "int8_b8" in printed and "(xz; .tflite" in printed
    assert main(["verify", "--bundle", str(out)]) == 0
    assert "2 files verified, 2 models load (fp32, int8)" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b2")]) == 2
    assert "error: checkpoint not found" in capsys.readouterr().err


def test_stripping_names_keeps_every_weight_even_ones_stored_after_the_flatbuffer():
    """A wide model's int8 file keeps its weights after the flatbuffer (by offset); stripping must keep them."""
    import torch
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    from gateway.export import quantize, strip_strings
    from models.registry import get_family

    family = get_family("cnn_lstm")
    torch.manual_seed(0)
    model = family.build(60, {"conv_channels": 128, "lstm_hidden": 256, "dense": 128}).eval()
    int8 = quantize(family.export_tflite(model, 4), "dynamic")
    offsets = [b.offset for b in flatbuffer_utils.convert_bytearray_to_object(int8).buffers if (b.offset or 0) > 1]
    assert offsets, "the quantizer no longer stores buffers by offset: this test lost its subject"
    stripped = strip_strings(int8)
    assert not any(t.name for t in flatbuffer_utils.convert_bytearray_to_object(stripped).subgraphs[0].tensors)
    x = np.random.default_rng(0).normal(size=(4, 60)).astype(np.float32)
    outputs = []
    for content in (int8, stripped):
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    np.testing.assert_array_equal(outputs[0], outputs[1])


BLOCKER = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'flwr', 'sklearn', 'pandas'}:
            raise ImportError(f'{name} is blocked: the gateway must not need it')
sys.meta_path.insert(0, Blocker())
from gateway.__main__ import main
code = main(sys.argv[1:])
assert not {'torch', 'flwr', 'sklearn', 'pandas'} & {m.split('.')[0] for m in sys.modules}
raise SystemExit(code)
"""


def _serve(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, "serve", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, **kwargs)  # fmt: skip


def _summary(stderr: str) -> dict:
    return json.loads(next(line for line in stderr.splitlines() if line.startswith("summary: "))[9:])


def test_serve_runs_where_torch_cannot_be_imported_and_isolates_hosts(bundle_dir, data_dir, tmp_path):
    source = data_dir / "unsw-nb15" / "raw" / RAW_FILE
    done = _serve(["--bundle", str(bundle_dir), "--source", str(source), "--out", str(tmp_path / "flows.jsonl"),
                   "--host-sink", f"file:{tmp_path / 'hosts.jsonl'}", "--min-flows", "5"])  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = _summary(done.stderr)
    assert summary["records"] == summary["scored"] == 3000 and summary["malformed"] == {}
    flows = [json.loads(line) for line in (tmp_path / "flows.jsonl").read_text().splitlines()]
    assert len(flows) == 3000 and {"time", "src", "dst", "score", "verdict", "model_version"} <= set(flows[0])
    assert flows[0]["src"].count(".") == 3  # raw UNSW-NB15 flows carry the hosts' addresses
    hosts = [json.loads(line) for line in (tmp_path / "hosts.jsonl").read_text().splitlines()]
    assert summary["host_verdicts"].get("isolate", 0) == sum(h["action"] == "isolate" for h in hosts)
    isolated = {h["host"] for h in hosts if h["action"] == "isolate"}
    attackers = {f["src"] for f in flows if f["verdict"] == "attack"}
    assert isolated and isolated <= attackers


def test_malformed_lines_are_counted_not_fatal(bundle_dir, data_dir, tmp_path):
    lines = (data_dir / "unsw-nb15" / "raw" / RAW_FILE).read_bytes().splitlines()[:20]
    good = lines[0].decode()
    fields = good.split(",")
    bad_number = ",".join([*fields[:6], "abc", *fields[7:]])  # dur is not a number
    nan_value = ",".join([*fields[:6], "nan", *fields[7:]])  # the pipeline's policy is 'error'
    unknown_category = ",".join([*fields[:4], "no-such-proto", *fields[5:]])  # -> the unknown bucket, scored
    body = b"\n".join([*lines, b"1,2,3", bad_number.encode(), nan_value.encode(), b"\xff\xfe,bad",
                       unknown_category.encode()]) + b"\n"  # fmt: skip
    capture = tmp_path / "capture.csv"
    capture.write_bytes(body)
    done = _serve(["--bundle", str(bundle_dir), "--source", str(capture), "--format", "unsw_raw", "--host-sink", ""])
    assert done.returncode == 0, done.stderr[-2000:]
    summary = _summary(done.stderr)
    assert summary["malformed"] == {"wrong_field_count": 1, "non_numeric": 1, "non_finite": 1, "not_utf8": 1}
    assert summary["scored"] == 21 and summary["lines"] == 25
    assert len(done.stdout.splitlines()) == 21


def test_unknown_categories_use_the_unknown_bucket(bundle_dir, data_dir):
    from gateway.encode import encode
    from gateway.sources import FlowSource

    bundle = load_bundle(bundle_dir)
    record = next(iter(FlowSource(data_dir / "unsw-nb15" / "raw" / RAW_FILE)))
    record.fields[record.layout.columns.index("proto")] = "no-such-proto"
    rows, kept = encode([record], bundle.pipeline, Counter())
    names = bundle.pipeline.output_names
    assert rows[0, names.index("proto=<unknown>")] == 1.0 and len(kept) == 1


def test_a_bundle_for_another_schema_refuses_the_source(bundle_dir, data_dir):
    source = next((data_dir / "iot-23").glob("*.conn.log.labeled"))
    done = _serve(["--bundle", str(bundle_dir), "--source", str(source)])
    assert done.returncode == 2 and "built for another flow schema" in done.stderr


def test_follow_reads_a_growing_file(bundle_dir, data_dir, tmp_path):
    lines = (data_dir / "unsw-nb15" / "raw" / RAW_FILE).read_text().splitlines(keepends=True)[:300]
    capture = tmp_path / "growing.csv"
    capture.write_text("".join(lines[:100]))
    process = subprocess.Popen([sys.executable, "-c", BLOCKER, "serve", "--bundle", str(bundle_dir), "--source",
                                str(capture), "--follow", "--idle-exit", "3", "--host-sink", ""], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(1.5)
        with open(capture, "a") as handle:
            handle.write("".join(lines[100:250]))
            handle.write(lines[250][:30])  # half a line: must wait for the rest
            handle.flush()
            time.sleep(0.5)
            handle.write(lines[250][30:] + "".join(lines[251:]))
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-2000:]
    assert _summary(err)["scored"] == 300 and len(out.splitlines()) == 300


@pytest.mark.slow
@pytest.mark.parametrize("litert", [None, "1.4.0"], ids=["newest-litert", "litert-1.4.0"])
def test_a_fresh_gateway_environment_serves_without_torch(bundle_dir, data_dir, tmp_path, litert):
    """pip install '.[gateway]' into a new virtualenv (ai-edge-litert + numpy), then serve from it; also with the
    oldest ai-edge-litert the extra allows (1.4.0: the newest with aarch64 wheels on the registry here), whose
    verdicts must equal those of the export environment's interpreter."""
    env_dir = tmp_path / "gateway-env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    pinned = [f"ai-edge-litert=={litert}"] if litert else []
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{REPO}[gateway]", *pinned],
                             capture_output=True, text=True, timeout=900)  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    installed = {p["name"].lower(): p["version"] for p in json.loads(listed)}
    assert "ai-edge-litert" in installed and not set(installed) & {"torch", "flwr", "scikit-learn", "pandas"}
    assert litert is None or installed["ai-edge-litert"] == litert
    serve = ["-m", "gateway", "serve", "--bundle", str(bundle_dir), "--source",
             str(data_dir / "unsw-nb15" / "raw" / RAW_FILE), "--host-sink", ""]  # fmt: skip
    done = subprocess.run([str(python), *serve], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _summary(done.stderr)["scored"] == 3000
    reference = subprocess.run([sys.executable, *serve], cwd=REPO, capture_output=True, text=True, timeout=300)
    verdicts = [(v["src"], v["dst"], v["verdict"]) for v in map(json.loads, done.stdout.splitlines())]
    expected = [(v["src"], v["dst"], v["verdict"]) for v in map(json.loads, reference.stdout.splitlines())]
    assert len(verdicts) == 3000 and verdicts == expected


def test_serve_summary_scores_flows_against_the_labels_and_names_the_hosts(bundle_dir, data_dir):
    """benchmarks/raw_capture.py on the tests' bundle: its figures are those the gateway's summary printed."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from raw_capture import evaluate, report

    result = evaluate(bundle_dir, data_dir / "unsw-nb15" / "raw" / RAW_FILE, data_dir)
    everything = result["all"]
    assert everything["flows"] == 3000 and everything["attacks"] == 98
    assert 0 < result["in_partition_bound"] < 3000
    assert result["not_in_partition"]["flows"] == 3000 - result["in_partition_bound"]
    printed = next(line for line in result["gateway_summary"] if line.startswith("flows against the source's"))
    assert f"precision {100 * everything['precision']:.2f}%, recall {100 * everything['recall']:.2f}%" in printed
    assert "on 3000 labelled flows" in printed and "0 flows without a label" in printed
    hosts = next(line for line in result["gateway_summary"] if line.startswith("hosts isolated"))
    assert hosts.startswith(f"hosts isolated: {len(result['isolated'])} (")
    assert set(result["isolated_attackers"]) | set(result["isolated_others"]) == set(result["isolated"])
    assert "hosts isolated" in report(result)


def test_serve_report_leaves_unlabelled_flows_out_of_precision_and_recall():
    from gateway.__main__ import summary_lines
    from gateway.serve import ServeReport

    report = ServeReport()
    for malicious, label in [(True, 1), (True, 0), (False, 1), (False, 0), (True, -1), (False, None)]:
        report.count_verdict(malicious, label)
    report.isolated, report.released = ["10.0.0.9", "10.0.0.9"], ["10.0.0.9"]
    figures = report.as_dict(lines=6)
    assert figures["labelled"] == {"flows": 4, "precision": 0.5, "recall": 0.5, "tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert figures["unlabelled"] == 2
    words = summary_lines(figures)
    assert "precision 50.00%, recall 50.00% on 4 labelled flows" in words[0] and "2 flows without a label" in words[0]
    assert words[1] == "hosts isolated: 1 (10.0.0.9); released: 1 (10.0.0.9)"
    assert ServeReport().labelled() is None and len(summary_lines(ServeReport().as_dict(0))) == 1


def _follow_in_thread(path: Path):
    import threading

    from gateway.sources import FlowSource

    source = FlowSource(path, follow=True, idle_exit=2.0, poll=0.05)
    seen: list = []
    thread = threading.Thread(target=lambda: seen.extend(r for r in source if r is not None), daemon=True)
    thread.start()
    return source, seen, thread


@pytest.mark.parametrize("rotation", ["copy-truncate", "rename"])
def test_follow_survives_log_rotation(data_dir, tmp_path, rotation):
    """logrotate's copytruncate (the file shrinks under the reader) and rename-and-create (a new file, a new
    inode, at the path): the records written after the rotation are read too."""
    lines = (data_dir / "unsw-nb15" / "raw" / RAW_FILE).read_text().splitlines(keepends=True)[:60]
    capture = tmp_path / "capture.csv"
    capture.write_text("".join(lines[:30]))
    source, seen, thread = _follow_in_thread(capture)
    time.sleep(0.5)
    if rotation == "copy-truncate":
        (tmp_path / "capture.csv.1").write_text(capture.read_text())
        with open(capture, "r+") as handle:
            handle.truncate(0)
    else:
        capture.rename(tmp_path / "capture.csv.1")
        capture.write_text("")
    time.sleep(0.5)
    with open(capture, "a") as handle:
        handle.write("".join(lines[30:40]))
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(seen) == 40 and source.stats.malformed == Counter()
    assert [r.fields for r in seen] == [line.lstrip("\ufeff").rstrip("\r\n").split(",") for line in lines[:40]]
