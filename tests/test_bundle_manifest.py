"""Bundle manifests (issue 14): the manifest is checked against a schema before anything in it is used, model
files unpack within the size the manifest records, and every file a bundle names is a regular file inside it.
Any manifest, however malformed, is loaded or refused with a one-line BundleError, never another exception
(Hypothesis, fixed seed)."""

from __future__ import annotations

import json
import lzma
import math
import os
import re
import shutil
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.bundle import BundleError, load_bundle, sha256_of

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


@pytest.fixture
def copy(bundle_dir, tmp_path) -> Path:
    """A private copy of the session's exported bundle (conftest's ``bundle_dir``: xz, batch sizes 1 and 256)."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _write(folder: Path, manifest: object) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _resign(folder: Path, manifest: dict) -> None:
    """Write ``manifest`` with the sha256 of the model files it names, as an exporter would."""
    manifest["files"] = {m["file"]: sha256_of(folder / m["file"]) for m in manifest["models"].values()}
    _write(folder, manifest)


def _refusal(folder: Path) -> str:
    """The BundleError message of loading ``folder``; schema refusals are one line naming the manifest."""
    with pytest.raises(BundleError) as info:
        load_bundle(folder)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(folder / "manifest.json")), message
    return message


# --- the manifest's shape ---------------------------------------------------------------------------------------

NESTED = 100_000


@pytest.mark.parametrize("text, pattern", [
    ("[]", "the manifest must be a JSON object, got \\[\\]"),
    ("[1]", "the manifest must be a JSON object, got list"),
    ('"bundle"', "the manifest must be a JSON object, got 'bundle'"),
    ("null", "the manifest must be a JSON object, got None"),
    ("3.5", "the manifest must be a JSON object, got 3.5"),
    ("[" * NESTED + "]" * NESTED, "not valid JSON .*nested too deeply"),
    ('{"a": ' * NESTED + "1" + "}" * NESTED, "not valid JSON .*nested too deeply"),
    ('{"bundle_schema": 3, "x": ' + "[" * NESTED + "]" * NESTED + "}", "not valid JSON .*nested too deeply"),
    ('{"bundle_schema": 1' + "0" * 5000 + "}", "not valid JSON"),  # past Python's int digit limit
    ("\udcff", "not valid JSON"),
])  # fmt: skip
def test_a_manifest_that_is_not_a_json_object_is_refused(tmp_path, text, pattern):
    (tmp_path / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    assert re.search(pattern, _refusal(tmp_path))


def _drop_int8_b256(m: dict) -> None:
    del m["models"]["int8_b256"]


def _only_fp32(m: dict) -> None:
    for key in ("int8_b1", "int8_b256"):
        del m["models"][key]


def _rename(m: dict) -> None:
    m["models"]["int8_b2"] = m["models"].pop("int8_b1")


@pytest.mark.parametrize("edit, expected", [
    (lambda m: m.update(models=list(m["models"].values())), "'models' must be an object of model entries, got list"),
    (lambda m: m.update(models={}), "'models' must be an object of model entries, got {}"),
    (lambda m: m["models"].update(int8_b1=[1]), "'models.int8_b1' must be an object, got list"),
    (lambda m: m["models"]["int8_b1"].pop("file"), "'models.int8_b1' is missing field(s) file"),
    (lambda m: m["models"]["int8_b256"].pop("variant"), "'models.int8_b256' is missing field(s) variant"),
    (lambda m: m["models"]["int8_b1"].pop("tflite_bytes"), "'models.int8_b1' is missing field(s) tflite_bytes"),
    (lambda m: m["models"]["int8_b1"].update(file=3), "'models.int8_b1.file' must be a plain file name"),
    (lambda m: m["models"]["int8_b1"].update(variant="fp16"), "'models.int8_b1.variant' must be one of fp32, "
                                                               "int8, got 'fp16'"),
    (lambda m: m["models"]["int8_b1"].update(batch_size=0), "'models.int8_b1.batch_size' must be a positive "
                                                             "integer, got 0"),
    (lambda m: m["models"]["int8_b1"].update(batch_size=True), "'models.int8_b1.batch_size' must be a positive "
                                                                "integer, got True"),
    (lambda m: m["models"]["int8_b1"].update(batch_size="1"), "'models.int8_b1.batch_size' must be a positive "
                                                               "integer, got '1'"),
    (lambda m: m["models"]["int8_b1"].update(bytes=-1), "'models.int8_b1.bytes' must be a size in bytes"),
    (lambda m: m["models"]["int8_b1"].update(tflite_bytes=1.5), "'models.int8_b1.tflite_bytes' must be a size"),
    (lambda m: m["models"]["int8_b1"].update(tflite_bytes=2**40), "'models.int8_b1.tflite_bytes' must be a size in "
                                                                   "bytes from 0 to 268435456"),
    (lambda m: m["models"]["int8_b1"].update(compression=None), "'models.int8_b1.compression' has unknown "
                                                                 "compression None"),
    (_rename, "'models.int8_b2' must be keyed 'int8_b1' (its variant and batch size)"),
    (_drop_int8_b256, "'models' has no int8 model for batch size 256 ('batch_sizes' lists 1, 256)"),
    (lambda m: m.update(model_version=3), "'model_version' must be a non-empty string, got 3"),
    (lambda m: m.update(features=[]), "'features' must be an object, got []"),
    (lambda m: m["features"].pop("n_features"), "'features' is missing field(s) n_features"),
    (lambda m: m["features"].update(encoded=[1]), "'features.encoded[0]' must be a string, got 1"),
    (lambda m: m["features"].update(input_columns="srcip"), "'features.input_columns' must be a list of strings, "
                                                             "got 'srcip'"),
    (lambda m: m["features"].update(n_features="196"), "'features.n_features' must be a non-negative integer"),
    (lambda m: m["features"].update(n_features=m["features"]["n_features"] + 1), "'features.n_features' must be "
                                                                                 "the pipeline's"),
    (lambda m: m.update(default_model="fp16"), "'default_model' must be one of the bundle's variants (fp32, int8), "
                                               "got 'fp16'"),
    (_only_fp32, "'default_model' must be one of the bundle's variants (fp32), got 'int8'"),
    (lambda m: m.update(batch_sizes=[]), "'batch_sizes' must be a non-empty list of positive integers, got []"),
    (lambda m: m.update(batch_sizes=256), "'batch_sizes' must be a non-empty list of positive integers, got 256"),
    (lambda m: m.update(batch_sizes=[1, 0]), "'batch_sizes[1]' must be a positive integer, got 0"),
    (lambda m: m.update(batch_sizes=[1, 256, 1]), "'batch_sizes' must list each exported batch size once (1, 256)"),
    (lambda m: m.update(batch_sizes=[1, 2]), "'batch_sizes' must list each exported batch size once (1, 256)"),
    (lambda m: m.update(files=[]), "'files' must be an object of file name -> sha256, got []"),
    (lambda m: m["files"].update({"model_int8_b1.tflite.xz": "abc"}), "'files[\"model_int8_b1.tflite.xz\"]' must be "
                                                                      "a sha256 (64 lowercase hex digits), got 'abc'"),
    (lambda m: m["files"].pop("model_int8_b1.tflite.xz"), "'models.int8_b1.file' model_int8_b1.tflite.xz has no "
                                                          "sha256 in 'files'"),
    (lambda m: m.update(pipeline=[]), "'pipeline' must be an object, got []"),
    (lambda m: m["pipeline"].update(mean=["a"] * len(m["pipeline"]["mean"])), "'pipeline.mean[0]' must be a finite "
                                                                              "number, got 'a'"),
    (lambda m: m["pipeline"]["std"].__setitem__(0, 0.0), "'pipeline.std[0]' must be a positive finite number"),
    (lambda m: m["pipeline"].update(vocabularies={"proto": 3}), "'pipeline.vocabularies.proto' must be a list of "
                                                                "strings, got 3"),
    (lambda m: m["pipeline"].update(selected="dur"), "'pipeline.selected' must be null or a list of strings"),
    (lambda m: m.update(bundle_schema=True), "bundle schema True is not supported"),
    (lambda m: m.update(bundle_schema="3"), "bundle schema '3' is not supported"),
    (lambda m: m.update(family_params=[1]), "'family_params' must be an object, got list"),
])  # fmt: skip
def test_a_manifest_of_the_wrong_shape_is_refused_naming_the_field(copy, edit, expected):
    manifest = _manifest(copy)
    edit(manifest)
    _write(copy, manifest)
    assert expected in _refusal(copy)


@pytest.mark.parametrize("threshold", [-1, 2, math.nan, math.inf, -math.inf, 0, 1, 0.0, 1.0, True, False, "0.5",
                                       None, [0.5]])  # fmt: skip
def test_a_threshold_outside_0_1_is_refused(copy, threshold):
    manifest = _manifest(copy)
    manifest["threshold"] = threshold
    _write(copy, manifest)
    assert "'threshold' must be a finite number strictly between 0 and 1, got" in _refusal(copy)


def test_verify_refuses_a_threshold_that_makes_every_flow_an_attack(copy, capsys):
    from gateway.__main__ import main

    manifest = _manifest(copy)
    manifest["threshold"] = -1
    _write(copy, manifest)
    assert main(["verify", "--bundle", str(copy)]) == 2
    assert "'threshold' must be a finite number strictly between 0 and 1, got -1" in capsys.readouterr().err
    manifest["threshold"] = 1e-9  # close to the bounds, still inside
    _write(copy, manifest)
    assert load_bundle(copy).threshold == 1e-9


def test_a_schema_1_manifest_as_the_first_exporter_wrote_it_still_loads(copy, bundle_dir):
    """Schema 1 entries had file, variant, batch_size and bytes only (plain .tflite, no tflite_bytes), a top-level
    "architecture" and no family fields."""
    manifest = _manifest(copy)
    manifest["bundle_schema"] = 1
    for key in ("family", "family_params", "gateway_input"):
        del manifest[key]
    manifest["architecture"] = "cnn_lstm"
    for entry in manifest["models"].values():
        packed = copy / entry["file"]
        plain = lzma.decompress(packed.read_bytes())
        packed.unlink()
        entry["file"] = packed.stem
        (copy / entry["file"]).write_bytes(plain)
        entry["bytes"] = len(plain)
        del entry["compression"], entry["tflite_bytes"]
    _resign(copy, manifest)
    old, new = load_bundle(copy), load_bundle(bundle_dir)
    for variant in ("fp32", "int8"):
        assert old.model_content(variant, 256) == new.model_content(variant, 256)


# --- bounded reading and decompression ---------------------------------------------------------------------------

def _xz(*parts: bytes, zeros: int = 0) -> bytes:
    """An xz file of ``parts`` followed by ``zeros`` zero bytes, compressed in 1 MiB steps."""
    compressor = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=1)
    out = [compressor.compress(p) for p in parts]
    block = bytes(1 << 20)
    for start in range(0, zeros, len(block)):
        out.append(compressor.compress(block[: min(len(block), zeros - start)]))
    return b"".join(out) + compressor.flush()


def _replace_model(folder: Path, stored: bytes, key: str = "int8_b1") -> dict:
    """Store ``stored`` as the model file of ``key`` (other fields as exported) and re-sign the manifest."""
    manifest = _manifest(folder)
    (folder / manifest["models"][key]["file"]).write_bytes(stored)
    _resign(folder, manifest)
    return manifest


def _content(folder: Path, key: str = "int8_b1") -> bytes:
    entry = _manifest(folder)["models"][key]
    return lzma.decompress((folder / entry["file"]).read_bytes())


def test_a_decompression_bomb_is_refused_within_bounded_memory(copy, capsys):
    from gateway.__main__ import main

    content = _content(copy)
    _replace_model(copy, _xz(content, zeros=64 << 20))  # a small file that unpacks to 64 MiB more than recorded
    bundle = load_bundle(copy)  # the hash matches: only unpacking finds it
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match=rf"model_int8_b1.tflite.xz: unpacks to more than the {len(content)} "
                                              "bytes the manifest records"):  # fmt: skip
            bundle.model_content("int8", 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(content) + (8 << 20), peak
    assert main(["verify", "--bundle", str(copy)]) == 2
    assert "unpacks to more than" in capsys.readouterr().err


def test_a_model_that_unpacks_to_another_size_than_recorded_is_refused(copy):
    content = _content(copy)
    _replace_model(copy, _xz(content[:-10]))
    with pytest.raises(BundleError, match=rf"unpacks to {len(content) - 10} bytes, the manifest records "
                                          rf"{len(content)}"):  # fmt: skip
        load_bundle(copy).model_content("int8", 1)
    _replace_model(copy, _xz(content) + b"trailing")
    with pytest.raises(BundleError, match="data after the end of the xz stream"):
        load_bundle(copy).model_content("int8", 1)
    _replace_model(copy, _xz(content)[:-40])
    with pytest.raises(BundleError, match="not a valid xz file.*truncated|ends before"):
        load_bundle(copy).model_content("int8", 1)


def _with_dictionary(xz: bytes, code: int) -> bytes:
    """``xz`` with its first block header declaring LZMA2 dictionary size code ``code`` (header CRC fixed)."""
    data = bytearray(xz)
    size = (data[12] + 1) * 4
    assert data[13] == 0 and data[14] == 0x21 and data[15] == 1, "not a one-filter LZMA2 block header"
    data[16] = code
    data[12 + size - 4 : 12 + size] = zlib.crc32(bytes(data[12 : 12 + size - 4])).to_bytes(4, "little")
    return bytes(data)


def test_a_model_file_that_asks_for_a_huge_dictionary_is_refused(copy):
    content = _content(copy)
    _replace_model(copy, _with_dictionary(_xz(content), 38))  # 2 GiB
    with pytest.raises(BundleError, match="model_int8_b1.tflite.xz: .*(memory|Memory)"):
        load_bundle(copy).model_content("int8", 1)


def test_a_plain_model_file_of_another_size_than_recorded_is_refused(copy):
    manifest = _manifest(copy)
    entry = manifest["models"]["fp32_b1"]
    content = lzma.decompress((copy / entry["file"]).read_bytes())
    (copy / entry["file"]).unlink()
    entry.update(file="model_fp32_b1.tflite", compression="none")
    (copy / entry["file"]).write_bytes(content + b"\0")
    _resign(copy, manifest)
    with pytest.raises(BundleError, match=rf"model_fp32_b1.tflite holds {len(content) + 1} bytes, the manifest "
                                          rf"records {len(content)}"):  # fmt: skip
        load_bundle(copy).model_content("fp32", 1)


def test_an_oversized_manifest_is_refused_before_it_is_parsed(copy):
    manifest = _manifest(copy)
    manifest["metrics"] = {"padding": "x" * (16 << 20)}
    _write(copy, manifest)
    assert "is larger than 16777216 bytes" in _refusal(copy)


def test_an_oversized_model_file_is_refused_before_it_is_read(copy, monkeypatch):
    import gateway.bundle

    monkeypatch.setattr(gateway.bundle, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(BundleError, match=r"model_fp32_b1.tflite.xz is larger than 1000 bytes"):
        load_bundle(copy).model_content("int8", 1)


# --- files inside the bundle -----------------------------------------------------------------------------------

def test_a_symlink_to_a_file_outside_the_bundle_is_refused(copy, tmp_path):
    outside = tmp_path / "outside.xz"
    name = "model_int8_b1.tflite.xz"
    shutil.move(copy / name, outside)
    (copy / name).symlink_to(outside)  # same content, so the hash matches
    with pytest.raises(BundleError, match=f"{name} is a symbolic link"):
        load_bundle(copy)
    (copy / name).unlink()
    shutil.copy(outside, copy / "real.xz")
    (copy / name).symlink_to("real.xz")  # inside the bundle, still a link
    with pytest.raises(BundleError, match=f"{name} is a symbolic link"):
        load_bundle(copy)


@pytest.mark.parametrize("make", ["directory", "fifo"])
def test_a_named_file_that_is_not_a_regular_file_is_refused(copy, make):
    name = "model_int8_b1.tflite.xz"
    (copy / name).unlink()
    if make == "directory":
        (copy / name).mkdir()
    else:
        os.mkfifo(copy / name)
    with pytest.raises(BundleError, match=f"{name} is not a regular file"):
        load_bundle(copy)


@pytest.mark.parametrize("name", ["../model_int8_b1.tflite.xz", "sub/model.tflite", "/etc/passwd", "", ".", "..",
                                  "a\x00b", "a\\b"])  # fmt: skip
def test_a_file_name_that_is_not_a_plain_name_is_refused(copy, name):
    manifest = _manifest(copy)
    manifest["models"]["int8_b1"]["file"] = name
    manifest["files"][name] = "0" * 64
    _write(copy, manifest)
    assert "'models.int8_b1.file' must be a plain file name" in _refusal(copy)
    del manifest["files"][name]
    manifest["models"]["int8_b1"]["file"] = "model_int8_b1.tflite.xz"
    manifest["files"][name] = "0" * 64  # named in 'files' only
    _write(copy, manifest)
    assert "'files' keys must be plain file names" in _refusal(copy)


# --- fuzz --------------------------------------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12),
                    st.sampled_from([0, -1, 1, 2, 0.5, 256, 2**31, "", "..", "../manifest.json", "/etc/passwd",
                                     "int8", "fp32", "xz", "none", "flow_rows", "0" * 64]))  # fmt: skip
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4),
                    max_leaves=12)  # fmt: skip


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Paths to every object member and the first two items of every list in ``value``."""
    children = value.items() if isinstance(value, dict) else enumerate(value[:2]) if isinstance(value, list) else []
    found = []
    for key, child in children:
        found += [(*prefix, key), *_paths(child, (*prefix, key))]
    return found


def _mutate(manifest: dict, path: tuple, action: str, value: object) -> None:
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    elif action == "replace":
        parent[path[-1]] = value
    elif isinstance(parent[path[-1]], dict):  # "add": a new member where the target is an object
        parent[path[-1]]["fuzz"] = value
    else:
        parent[path[-1]] = [parent[path[-1]], value]


def _load_and_use(folder: Path) -> None:
    """Load the bundle and use what the runtime reads; only BundleError may come out."""
    try:
        bundle = load_bundle(folder)
        _ = bundle.model_version, bundle.threshold, bundle.gateway_input, bundle.family, bundle.pipeline.output_names
        for entry in bundle.manifest["models"].values():
            bundle.model_content(entry["variant"], entry["batch_size"])
        bundle.model_content()
    except BundleError as err:
        assert "\n" not in str(err)


@FUZZ
@given(value=JSON)
def test_any_json_value_as_the_manifest_is_refused_with_a_bundle_error(tmp_path, value):
    _write(tmp_path, value)
    _load_and_use(tmp_path)


@FUZZ
@given(data=st.data())
def test_mutations_of_a_real_manifest_are_loaded_or_refused_with_a_bundle_error(bundle_dir, copy, data):
    manifest = _manifest(bundle_dir)  # the exported one: each example starts from it
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = _paths(manifest)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        action = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]), label="action")
        _mutate(manifest, path, action, data.draw(JSON, label="value"))
    _write(copy, manifest)
    _load_and_use(copy)


@pytest.mark.parametrize("text", ["[1, 2]", '"bundle"', "null", '{"files": ["a.tflite"]}', '{"files": {"a": 1}}',
                                  "[" * 100_000])  # fmt: skip
def test_exporting_over_a_folder_whose_manifest_is_not_an_object_is_refused_cleanly(tmp_path, text):
    from gateway.export import ExportError, remove_previous_bundle

    (tmp_path / "manifest.json").write_text(text)
    if text == '{"files": {"a": 1}}':  # an object of file names: the named file goes, nothing else
        (tmp_path / "a").write_text("x")
        (tmp_path / "keep").write_text("y")
        remove_previous_bundle(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
        return
    with pytest.raises(ExportError, match="is not a bundle manifest"):
        remove_previous_bundle(tmp_path)
