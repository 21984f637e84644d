"""A model bundle: a folder with the .tflite models and ``manifest.json``; written by the exporter, verified by
the gateway before anything is loaded. Standard library and numpy only (the gateway imports it).

``manifest.json``::

    {"bundle_schema": 3, "model_version": "...", "release": 1764720000000, "created": "...", "source": {...},
     "family": "<model family name>", "family_params": {...}, "gateway_input": "flow_rows",
     "features": {"input_columns": [...], "encoded": [...], "n_features": 196},
     "pipeline": {<flows.pipeline_state.PipelineState as a dict>}, "threshold": 0.5,
     "models": {"fp32_b1": {"file": "model_fp32_b1.tflite.xz", "compression": "xz", "variant": "fp32",
                            "batch_size": 1, "bytes": ..., "tflite_bytes": ...},
                "int8_b256": {...}, ...},
     "default_model": "int8", "batch_sizes": [1, 256], "pruning": {...}, "metrics": {...},
     "files": {"model_fp32_b1.tflite.xz": "<sha256>", ...}}

``gateway_input`` says what the runtime feeds the model (``GATEWAY_INPUTS``; "flow_rows": one encoded row per
flow, in batches of an exported batch size; "host_graphs": one window's host graph, padded to a model's
``node_capacity`` and ``edge_capacity``, with the windowing and input order in the manifest's ``graph`` object); ``family`` and ``family_params`` record the model family that made it
(informative: the runtime needs only the .tflite files). Schemas 1 and 2 predate them and are read as
"flow_rows" bundles of an unrecorded family.

Model files are stored xz-compressed (``compression: "xz"``, the export's default) or as plain .tflite
(``"none"``; every schema-1 bundle). The runtime decompresses them in memory with the standard library's lzma.
Loading a bundle checks the manifest against its schema first (:mod:`gateway.manifest`: field types, sizes, the
rules between fields), then every file it names: a regular file directly inside the folder (no symbolic link, no
path), at most ``MAX_MODEL_BYTES``, with the sha256 the manifest records (of the stored bytes); then the pipeline
against the declared features. An xz model file is unpacked with output bounded by its recorded ``tflite_bytes``
and memory bounded by twice that plus 8 MiB (the exporter's dictionary is at most twice the model), and refused
unless it unpacks to exactly that size. Every refusal is a :class:`BundleError` naming the file and the reason.
A signed bundle also holds ``manifest.sig`` (:mod:`gateway.signing`), which the manifest does not list.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flows.pipeline_state import PipelineState, PipelineStateError
from gateway.manifest import (  # noqa: F401 (COMPRESSIONS, GATEWAY_INPUTS, READABLE_SCHEMAS: imported from here)
    COMPRESSIONS,
    GATEWAY_INPUTS,
    LEGACY_GATEWAY_INPUT,
    MAX_MANIFEST_BYTES,
    MAX_MODEL_BYTES,
    READABLE_SCHEMAS,
    ManifestError,
    check_manifest,
)

BUNDLE_SCHEMA = 3
MANIFEST = "manifest.json"
XZ_MEMORY_SLACK = 8 << 20  # unpacking memory allowed beyond twice the model's size


class BundleError(ValueError):
    """A bundle the gateway refuses: missing files, a hash mismatch, an unknown schema, inconsistent features."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_member(path: Path, limit: int) -> BinaryIO:
    """``path`` opened for reading if it is a regular file of at most ``limit`` bytes and not a symbolic link."""
    try:
        info = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        raise BundleError(f"{path.parent}: file {path.name} named in the manifest is missing") from None
    except OSError as err:
        raise BundleError(f"{path}: cannot read ({err.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise BundleError(f"{path} is a symbolic link; a bundle holds its files itself")
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{path} is not a regular file")
    if info.st_size > limit:
        raise BundleError(f"{path} is larger than {limit} bytes")
    try:  # O_NOFOLLOW: a link swapped in after the check is not followed either
        return os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)), "rb")
    except OSError as err:
        raise BundleError(f"{path}: cannot read ({err.strerror})") from None


def _read_member(path: Path, limit: int) -> bytes:
    """The bytes of the bundle file ``path`` (see :func:`_open_member`), at most ``limit`` of them."""
    with _open_member(path, limit) as handle:  # read(n) allocates n bytes first: ask for no more than the size
        data = handle.read(min(limit, os.fstat(handle.fileno()).st_size) + 1)
    if len(data) > limit:
        raise BundleError(f"{path} is larger than {limit} bytes")
    return data


def _member_sha256(path: Path) -> str:
    """The sha256 of the bundle file ``path`` (see :func:`_open_member`)."""
    digest = hashlib.sha256()
    with _open_member(path, MAX_MODEL_BYTES) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle_dir: Path, manifest: dict) -> Path:
    """Write ``manifest.json`` with the sha256 of every model file the manifest names."""
    bundle_dir = Path(bundle_dir)
    names = sorted({entry["file"] for entry in manifest["models"].values()})
    manifest = {**manifest, "bundle_schema": BUNDLE_SCHEMA,
                "files": {name: sha256_of(bundle_dir / name) for name in names}}  # fmt: skip
    path = bundle_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder, manifest and pipeline."""

    path: Path
    manifest: dict
    pipeline: PipelineState

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    @property
    def release(self) -> int:
        """The release number (strictly increasing from one export to the next); 0 for a bundle without one."""
        return int(self.manifest.get("release", 0))

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def gateway_input(self) -> str:
        """What the runtime feeds the model (one of ``GATEWAY_INPUTS``)."""
        return str(self.manifest.get("gateway_input", LEGACY_GATEWAY_INPUT))

    @property
    def family(self) -> str | None:
        """The model family that made the bundle; None for a bundle written before families were recorded."""
        family = self.manifest.get("family")
        return None if family is None else str(family)

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(int(b) for b in self.manifest["batch_sizes"])

    def model_entry(self, variant: str | None = None, batch_size: int | None = None) -> dict:
        """The manifest entry of ``variant`` (``fp32`` or ``int8``; default: the manifest's default_model) for
        ``batch_size`` (default: the smallest exported)."""
        variant = variant or self.manifest["default_model"]
        batch_size = self.batch_sizes[0] if batch_size is None else int(batch_size)
        models = self.manifest["models"]
        key = f"{variant}_b{batch_size}"
        if key not in models:
            raise BundleError(f"bundle {self.path} has no {variant} model for batch {batch_size} "
                              f"(it has {', '.join(sorted(models))})")  # fmt: skip
        return models[key]

    def model_file(self, variant: str | None = None, batch_size: int | None = None) -> Path:
        """The stored model file of ``variant`` for ``batch_size`` (see :meth:`model_entry`)."""
        return self.path / self.model_entry(variant, batch_size)["file"]

    def model_content(self, variant: str | None = None, batch_size: int | None = None) -> bytes:
        """The .tflite flatbuffer of ``variant`` for ``batch_size`` (see :meth:`model_entry`), decompressed; its
        size must be the entry's ``tflite_bytes`` where recorded (always, for xz)."""
        entry = self.model_entry(variant, batch_size)
        path = self.path / entry["file"]
        stored = _read_member(path, MAX_MODEL_BYTES)
        expected = entry.get("tflite_bytes")
        if compression_of(entry) == "xz":
            return unpack_xz(path, stored, expected)
        if expected is not None and len(stored) != expected:
            raise BundleError(f"{path} holds {len(stored)} bytes, the manifest records {expected} (tflite_bytes)")
        return stored


def unpack_xz(path: Path, stored: bytes, expected: int) -> bytes:
    """The ``expected`` bytes that the xz file ``stored`` (read from ``path``) unpacks to; output beyond them is
    never produced, and the decoder may use at most twice ``expected`` plus ``XZ_MEMORY_SLACK`` of memory."""
    try:
        import lzma
    except ImportError:  # a Python built without liblzma
        raise BundleError(f"{path} is xz-compressed, but this Python has no lzma module; install one that has "
                          "(Debian: python3 has it) or export the bundle with --compression none") from None
    memory = 2 * expected + XZ_MEMORY_SLACK
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=memory)
    try:
        content = decompressor.decompress(stored, max_length=expected + 1)
    except lzma.LZMAError as err:
        if "memory" in str(err).lower():
            raise BundleError(f"{path}: unpacking needs more than {memory} bytes of memory ({err}); a model of "
                              f"{expected} bytes needs less") from None  # fmt: skip
        raise BundleError(f"{path}: not a valid xz file ({err})") from None
    if len(content) > expected:
        raise BundleError(f"{path}: unpacks to more than the {expected} bytes the manifest records (tflite_bytes)")
    if not decompressor.eof:
        raise BundleError(f"{path}: not a valid xz file (truncated: the stream ends early)")
    if decompressor.unused_data:
        raise BundleError(f"{path}: data after the end of the xz stream")
    if len(content) != expected:
        raise BundleError(f"{path}: unpacks to {len(content)} bytes, the manifest records {expected} (tflite_bytes)")
    return content


def compression_of(entry: dict) -> str:
    """How a manifest's model entry is stored ("xz" or "none"; schema-1 entries name none and are plain)."""
    return entry.get("compression", "none")


def compress_model(content: bytes) -> bytes:
    """``content`` as an xz file (LZMA2, preset 9e). The dictionary is sized to the model, not preset 9's 64 MiB,
    so that decompressing on a small gateway allocates no more than the model's own size."""
    import lzma

    dict_size = max(1 << 12, 1 << (len(content) - 1).bit_length())
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size}]
    return lzma.compress(content, format=lzma.FORMAT_XZ, filters=filters)


def _read_manifest(bundle_dir: Path) -> object:
    """The parsed ``manifest.json`` of ``bundle_dir`` (a regular file of at most ``MAX_MANIFEST_BYTES``)."""
    path = bundle_dir / MANIFEST
    if not os.path.lexists(path):
        raise BundleError(f"{bundle_dir} is not a model bundle: no {MANIFEST}")
    data = _read_member(path, MAX_MANIFEST_BYTES)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise BundleError(f"{path}: not valid JSON (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, or an integer past Python's digit limit
        raise BundleError(f"{path}: not valid JSON ({err})") from None


def _pipeline(manifest: dict, manifest_path: Path) -> PipelineState:
    """The manifest's pipeline, which must produce the declared features from the declared input columns."""
    try:
        pipeline = PipelineState.from_dict(manifest["pipeline"])
    except (PipelineStateError, TypeError) as err:
        raise BundleError(f"{manifest_path}: pipeline: {err}") from None
    features = manifest["features"]
    if features["encoded"] != pipeline.output_names:
        raise BundleError(f"{manifest_path}: 'features.encoded': the declared encoded features differ from what the "
                          "pipeline produces")  # fmt: skip
    if features["input_columns"] != pipeline.input_columns:
        raise BundleError(f"{manifest_path}: 'features.input_columns': the declared input columns differ from what "
                          "the pipeline reads")  # fmt: skip
    if features["n_features"] != pipeline.n_outputs:
        raise BundleError(f"{manifest_path}: 'features.n_features' must be the pipeline's number of encoded features "
                          f"({pipeline.n_outputs}), got {features['n_features']}")  # fmt: skip
    return pipeline


def load_bundle(bundle_dir: str | Path) -> Bundle:
    """Read and verify a bundle: the manifest's schema, every named file, the pipeline; raises
    :class:`BundleError` with the reason."""
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST
    manifest = _read_manifest(bundle_dir)
    try:
        check_manifest(manifest)
    except ManifestError as err:
        raise BundleError(f"{manifest_path}: {err}") from None
    for name, expected in manifest["files"].items():
        path = bundle_dir / name
        actual = _member_sha256(path)
        if actual != expected:
            raise BundleError(f"{path}: sha256 {actual[:16]}... does not match the manifest's {expected[:16]}...; "
                              "the file was changed or damaged after export")  # fmt: skip
    return Bundle(path=bundle_dir, manifest=manifest, pipeline=_pipeline(manifest, manifest_path))
