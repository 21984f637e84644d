"""A model bundle: a folder with the .tflite models and ``manifest.json``; written by the exporter, verified by
the gateway before anything is loaded. Standard library and numpy only (the gateway imports it).

``manifest.json``::

    {"bundle_schema": 3, "model_version": "...", "created": "...", "source": {...},
     "family": "<model family name>", "family_params": {...}, "gateway_input": "flow_rows",
     "features": {"input_columns": [...], "encoded": [...], "n_features": 196},
     "pipeline": {<flows.pipeline_state.PipelineState as a dict>}, "threshold": 0.5,
     "models": {"fp32_b1": {"file": "model_fp32_b1.tflite.xz", "compression": "xz", "variant": "fp32",
                            "batch_size": 1, "bytes": ..., "tflite_bytes": ...},
                "int8_b256": {...}, ...},
     "default_model": "int8", "batch_sizes": [1, 256], "pruning": {...}, "metrics": {...},
     "files": {"model_fp32_b1.tflite.xz": "<sha256>", ...}}

``gateway_input`` says what the runtime feeds the model (``GATEWAY_INPUTS``; "flow_rows": one encoded row per
flow, in batches of an exported batch size); ``family`` and ``family_params`` record the model family that made it
(informative: the runtime needs only the .tflite files). Schemas 1 and 2 predate them and are read as
"flow_rows" bundles of an unrecorded family.

Model files are stored xz-compressed (``compression: "xz"``, the export's default) or as plain .tflite
(``"none"``; every schema-1 bundle). The runtime decompresses them in memory with the standard library's lzma.
Every file a bundle names is checked against its sha256 (of the stored bytes) on load; a bundle whose schema this
code does not know, whose gateway input this runtime cannot feed, or whose pipeline does not match its declared
features, is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from flows.pipeline_state import PipelineState, PipelineStateError

BUNDLE_SCHEMA = 3
READABLE_SCHEMAS = (1, 2, 3)  # 1: plain .tflite files only; 1 and 2: no family or gateway_input recorded
GATEWAY_INPUTS = ("flow_rows",)  # what this runtime can feed a model
LEGACY_GATEWAY_INPUT = "flow_rows"  # the input of every bundle written before gateway_input was recorded
COMPRESSIONS = ("xz", "none")
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle the gateway refuses: missing files, a hash mismatch, an unknown schema, inconsistent features."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
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
        """The .tflite flatbuffer of ``variant`` for ``batch_size`` (see :meth:`model_entry`), decompressed."""
        entry = self.model_entry(variant, batch_size)
        path = self.path / entry["file"]
        stored = path.read_bytes()
        if compression_of(entry) == "none":
            return stored
        try:
            import lzma
        except ImportError:  # a Python built without liblzma
            raise BundleError(f"{path} is xz-compressed, but this Python has no lzma module; install one that has "
                              "(Debian: python3 has it) or export the bundle with --compression none") from None
        try:
            return lzma.decompress(stored, format=lzma.FORMAT_XZ)
        except lzma.LZMAError as err:
            raise BundleError(f"{path}: not a valid xz file ({err})") from None


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


def _check_family(manifest: dict, manifest_path: Path) -> None:
    """The family fields, where present: a family name, its parameters as an object, a gateway input this runtime
    can feed."""
    if "family" in manifest and not (isinstance(manifest["family"], str) and manifest["family"]):
        raise BundleError(f"{manifest_path}: 'family' must be a model family name, got {manifest['family']!r}")
    if "family_params" in manifest and not isinstance(manifest["family_params"], dict):
        raise BundleError(f"{manifest_path}: 'family_params' must be an object, got "
                          f"{type(manifest['family_params']).__name__}")  # fmt: skip
    kind = manifest.get("gateway_input", LEGACY_GATEWAY_INPUT)
    if kind not in GATEWAY_INPUTS:
        raise BundleError(f"{manifest_path}: gateway input {kind!r} (family {manifest.get('family')!r}) is not one "
                          f"this gateway can feed ({', '.join(GATEWAY_INPUTS)}); update the gateway")  # fmt: skip


def load_bundle(bundle_dir: str | Path) -> Bundle:
    """Read and verify a bundle; raises :class:`BundleError` with the reason."""
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{bundle_dir} is not a model bundle: no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest_path}: not valid JSON ({err})") from None
    schema = manifest.get("bundle_schema")
    if schema not in READABLE_SCHEMAS:
        raise BundleError(f"{manifest_path}: bundle schema {schema!r} is not supported (this gateway reads "
                          f"{', '.join(map(str, READABLE_SCHEMAS))}); export the bundle again with a matching "
                          "version")  # fmt: skip
    missing = [k for k in ("model_version", "features", "pipeline", "threshold", "models", "default_model",
                           "batch_sizes", "files") if k not in manifest]  # fmt: skip
    if schema >= 3:
        missing += [k for k in ("family", "family_params", "gateway_input") if k not in manifest]
    if missing:
        raise BundleError(f"{manifest_path}: missing field(s) {', '.join(missing)}")
    _check_family(manifest, manifest_path)
    for entry in manifest["models"].values():
        if entry["file"] not in manifest["files"]:
            raise BundleError(f"{manifest_path}: model file {entry['file']} has no sha256 in 'files'")
        if compression_of(entry) not in COMPRESSIONS:
            raise BundleError(f"{manifest_path}: model file {entry['file']} has unknown compression "
                              f"{entry['compression']!r} (this gateway reads {', '.join(COMPRESSIONS)})")  # fmt: skip
    for name, expected in manifest["files"].items():
        path = bundle_dir / name
        if Path(name).name != name:
            raise BundleError(f"{manifest_path}: file name {name!r} must not contain a path")
        if not path.is_file():
            raise BundleError(f"{bundle_dir}: file {name} named in the manifest is missing")
        actual = sha256_of(path)
        if actual != expected:
            raise BundleError(f"{path}: sha256 {actual[:16]}... does not match the manifest's {expected[:16]}...; "
                              "the file was changed or damaged after export")  # fmt: skip
    try:
        pipeline = PipelineState.from_dict(manifest["pipeline"])
    except (PipelineStateError, TypeError) as err:
        raise BundleError(f"{manifest_path}: pipeline: {err}") from None
    features = manifest["features"]
    if list(features.get("encoded", [])) != pipeline.output_names:
        raise BundleError(f"{manifest_path}: the declared encoded features differ from what the pipeline produces")
    if list(features.get("input_columns", [])) != pipeline.input_columns:
        raise BundleError(f"{manifest_path}: the declared input columns differ from what the pipeline reads")
    return Bundle(path=bundle_dir, manifest=manifest, pipeline=pipeline)
