"""The schema of a bundle's ``manifest.json`` (:mod:`gateway.bundle`): the type of every field the runtime reads,
sizes, and the rules between fields, checked by :func:`check_manifest` before anything in a manifest is used.

The checker is a small declarative one written here, not the ``jsonschema`` library, because the gateway extra
installs only numpy and ai-edge-litert, and jsonschema would add itself and four dependencies (rpds-py among them,
compiled) to every gateway.

A check is a function ``(value, where)`` that raises :class:`ManifestError` naming ``where``, a JSON path such as
``models.int8_b256.file`` (members that are not plain words in brackets: ``files["model_fp32_b1.tflite.xz"]``), and
what was expected; :func:`kind`, :func:`list_of`, :func:`object_of` and :func:`record` build them. What each bundle
schema requires: 1 (the first exporter): model entries with file, variant and batch_size (bytes optional), plain
.tflite files; 2: entries also record compression, bytes and tflite_bytes; 3: also family, family_params and
gateway_input at the top. Fields a schema does not require are still checked where present. ``release`` (an
integer >= 1, strictly increasing from one export to the next; :mod:`gateway.install` refuses downgrades by it)
is optional in every schema: older bundles have none and count as release 0 (a signed bundle needs one,
:func:`gateway.signing.sign_bundle`). Optional, so that gateways of schema 3 read bundles that carry it.

A ``host_graphs`` bundle (schema 3) also has a ``graph`` object (the run's windowing ``settings``, the network
``variant``, the ``node_features`` and model ``inputs`` in order) and every model entry records its
``node_capacity`` and ``edge_capacity`` (its ``batch_size``: the most flows of one window it takes).
"""

from __future__ import annotations

import json
import math
import re
from typing import Callable, Collection, Mapping, NoReturn

READABLE_SCHEMAS = (1, 2, 3)
GATEWAY_INPUTS = ("flow_rows", "host_graphs")  # what this runtime can feed a model
GRAPH_STRUCTURES = ("normalised_adjacency", "mean_incidence")  # host-graph model inputs this runtime builds
WINDOW_KINDS = ("flows", "seconds")  # flows.graphs.settings.WINDOW_KINDS (a test checks they agree)
LEGACY_GATEWAY_INPUT = "flow_rows"  # the input of every bundle written before gateway_input was recorded
COMPRESSIONS = ("xz", "none")
VARIANTS = ("fp32", "int8")
MAX_MODEL_BYTES = 256 << 20  # largest model file, stored or unpacked (exported ones are well under 1 MiB)
MAX_MANIFEST_BYTES = 16 << 20  # largest manifest.json read at all (an exported one is under 100 KiB)
MAX_RELEASE = (1 << 63) - 1  # release numbers: milliseconds since the epoch by default, or a run's own numbering

Check = Callable[[object, str], None]


class ManifestError(ValueError):
    """A manifest that breaks the schema; the message names the field and what was expected."""


def shown(value: object) -> str:
    """``value`` for a one-line message: a scalar's repr (long strings cut), a container's kind."""
    if isinstance(value, list):
        return "list" if value else "[]"
    if isinstance(value, dict):
        return "object" if value else "{}"
    if isinstance(value, str) and len(value) > 50:
        return repr(value[:50]) + "..."
    return repr(value)


def member(where: str, key: object) -> str:
    """The JSON path of ``key`` inside ``where``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    if re.fullmatch(r"[A-Za-z0-9_\-]+", key):
        return f"{where}.{key}" if where else key
    return f"{where}[{json.dumps(key)}]"


def fail(where: str, problem: str) -> NoReturn:
    """Raise the error of the field at ``where`` (the whole manifest when empty)."""
    raise ManifestError(f"'{where}' {problem}" if where else f"the manifest {problem}")


def is_int(value: object) -> bool:
    """A JSON integer (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite(value: object) -> bool:
    """A JSON number that is not NaN or infinite (bool is not a number)."""
    return is_int(value) or (isinstance(value, float) and math.isfinite(value))


def is_plain_name(value: object) -> bool:
    """A file name directly inside the bundle folder: not empty, no path separator or NUL, not '.' or '..'."""
    return isinstance(value, str) and value not in ("", ".", "..") and not any(c in value for c in "/\\\0")


def kind(test: Callable[[object], bool], expected: str) -> Check:
    """A check that ``test(value)`` holds."""

    def check(value: object, where: str) -> None:
        if not test(value):
            fail(where, f"must be {expected}, got {shown(value)}")

    return check


def list_of(item: Check, expected: str, non_empty: bool = False) -> Check:
    """A check for a list (non-empty if asked) whose every item passes ``item``."""

    def check(value: object, where: str) -> None:
        if not isinstance(value, list) or (non_empty and not value):
            fail(where, f"must be {expected}, got {shown(value)}")
        for index, element in enumerate(value):
            item(element, member(where, index))

    return check


def object_of(item: Check, expected: str, non_empty: bool = False,
              key: tuple[Callable[[str], bool], str] | None = None) -> Check:  # fmt: skip
    """A check for an object (non-empty if asked) whose every value passes ``item``; ``key``: (test, expected)
    for its member names."""

    def check(value: object, where: str) -> None:
        if not isinstance(value, dict) or (non_empty and not value):
            fail(where, f"must be {expected}, got {shown(value)}")
        for name, element in value.items():
            if key is not None and not key[0](name):
                fail(where, f"keys must be {key[1]}, got {shown(name)}")
            item(element, member(where, name))

    return check


def record(fields: Mapping[str, Check], required: Collection[str]) -> Check:
    """A check for an object with the ``required`` members; each member named in ``fields`` is checked."""

    def check(value: object, where: str) -> None:
        if not isinstance(value, dict):
            fail(where, f"must be an object, got {shown(value)}")
        missing = [name for name in required if name not in value]
        if missing:
            fail(where, f"is missing field(s) {', '.join(missing)}")
        for name, field in fields.items():
            if name in value:
                field(value[name], member(where, name))

    return check


def _compression(value: object, where: str) -> None:
    """A compression this gateway unpacks (``COMPRESSIONS``)."""
    if not (isinstance(value, str) and value in COMPRESSIONS):
        fail(where, f"has unknown compression {shown(value)} (this gateway reads {', '.join(COMPRESSIONS)})")


STRING = kind(lambda v: isinstance(v, str), "a string")
STRINGS = list_of(STRING, "a list of strings")
POSITIVE_INT = kind(lambda v: is_int(v) and v > 0, "a positive integer")
SIZE = kind(lambda v: is_int(v) and 0 <= v <= MAX_MODEL_BYTES, f"a size in bytes from 0 to {MAX_MODEL_BYTES}")
OBJECT = kind(lambda v: isinstance(v, dict), "an object")
PLAIN_NAME = kind(is_plain_name, "a plain file name (no '/', '\\', NUL, '.' or '..')")
ENTRY = {"file": PLAIN_NAME, "variant": kind(lambda v: v in VARIANTS, f"one of {', '.join(VARIANTS)}"),
         "batch_size": POSITIVE_INT, "compression": _compression, "bytes": SIZE, "tflite_bytes": SIZE}  # fmt: skip
PIPELINE = record({
    "numeric": STRINGS, "categorical": STRINGS,
    "mean": list_of(kind(is_finite, "a finite number"), "a list of finite numbers"),
    "std": list_of(kind(lambda v: is_finite(v) and v > 0, "a positive finite number"), "a list of positive numbers"),
    "vocabularies": object_of(STRINGS, "an object of column -> list of strings"),
    "log_transform": kind(lambda v: isinstance(v, bool), "true or false"), "nonfinite": STRING,
    "selected": kind(lambda v: v is None or (isinstance(v, list) and all(isinstance(s, str) for s in v)),
                     "null or a list of strings"),
    "threshold": kind(is_finite, "a finite number"), "source": STRING, "schema_version": kind(is_int, "an integer"),
    "info": OBJECT,
}, required=("numeric", "categorical", "mean", "std", "vocabularies", "schema_version"))  # fmt: skip
FEATURES = record({"input_columns": STRINGS, "encoded": STRINGS,
                   "n_features": kind(lambda v: is_int(v) and v >= 0, "a non-negative integer")},
                  required=("input_columns", "encoded", "n_features"))  # fmt: skip
TOP = {
    "model_version": kind(lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "features": FEATURES, "pipeline": PIPELINE,
    "threshold": kind(lambda v: is_finite(v) and 0 < v < 1, "a finite number strictly between 0 and 1"),
    "default_model": STRING,
    "batch_sizes": list_of(POSITIVE_INT, "a non-empty list of positive integers", non_empty=True),
    "family": kind(lambda v: isinstance(v, str) and v != "", "a model family name"), "family_params": OBJECT,
    "release": kind(lambda v: is_int(v) and 1 <= v <= MAX_RELEASE,
                    f"a release number (an integer from 1 to {MAX_RELEASE})"),
}  # fmt: skip
FILES = object_of(kind(lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) is not None,
                       "a sha256 (64 lowercase hex digits)"),
                  "an object of file name -> sha256",
                  key=(is_plain_name, "plain file names (no '/', '\\', NUL, '.' or '..')"))  # fmt: skip
GRAPH_SETTINGS = record({
    "window": kind(lambda v: v in WINDOW_KINDS, f"one of {', '.join(WINDOW_KINDS)}"), "flows": POSITIVE_INT,
    "seconds": kind(lambda v: is_finite(v) and v > 0, "a positive finite number"), "min_flows": POSITIVE_INT,
}, required=("window", "flows", "seconds", "min_flows"))  # fmt: skip
GRAPH = record({"settings": GRAPH_SETTINGS,
                "structure": kind(lambda v: v in GRAPH_STRUCTURES, f"one of {', '.join(GRAPH_STRUCTURES)}"),
                "node_features": list_of(STRING, "a non-empty list of strings", non_empty=True),
                "inputs": list_of(STRING, "a non-empty list of strings", non_empty=True)},
               required=("settings", "structure", "node_features", "inputs"))  # fmt: skip
REQUIRED = ("model_version", "features", "pipeline", "threshold", "models", "default_model", "batch_sizes", "files")


def schema_check(schema: int) -> Check:
    """The shape check of a manifest of bundle schema ``schema``."""
    entry_required = ("file", "variant", "batch_size") + (("compression", "bytes", "tflite_bytes") if schema >= 2
                                                          else ())  # fmt: skip
    models = object_of(record(ENTRY, entry_required), "an object of model entries", non_empty=True)
    required = REQUIRED + (("family", "family_params", "gateway_input") if schema >= 3 else ())
    return record({**TOP, "models": models, "files": FILES, "graph": GRAPH}, required)  # models first: their errors are clearer


def _check_schema_version(manifest: dict) -> int:
    """The manifest's ``bundle_schema``, if this gateway reads it."""
    schema = manifest.get("bundle_schema")
    if not (is_int(schema) and schema in READABLE_SCHEMAS):
        raise ManifestError(f"bundle schema {shown(schema)} is not supported (this gateway reads "
                            f"{', '.join(map(str, READABLE_SCHEMAS))}); export the bundle again with a matching "
                            "version")  # fmt: skip
    return schema


def _check_models(manifest: dict) -> None:
    """Each entry is keyed by its variant and batch size, an xz entry records its unpacked size, and every model
    file has a sha256."""
    for key, entry in manifest["models"].items():
        where = member("models", key)
        expected = f"{entry['variant']}_b{entry['batch_size']}"
        if key != expected:
            fail(where, f"must be keyed {expected!r} (its variant and batch size)")
        if entry.get("compression", "none") == "xz" and "tflite_bytes" not in entry:
            fail(where, "is missing field(s) tflite_bytes (the unpacked size of its xz file)")
        if entry["file"] not in manifest["files"]:
            fail(member(where, "file"), f"{entry['file']} has no sha256 in 'files'")


def _check_batch_sizes(manifest: dict) -> None:
    """``batch_sizes`` lists the models' batch sizes once each, and every variant has a model for each."""
    entries = manifest["models"].values()
    sizes = sorted({entry["batch_size"] for entry in entries})
    listed = manifest["batch_sizes"]
    if sorted(listed) != sizes:
        got = str(listed) if len(listed) <= 8 else f"{len(listed)} sizes"
        fail("batch_sizes", f"must list each exported batch size once ({', '.join(map(str, sizes))}), got {got}")
    present = {(entry["variant"], entry["batch_size"]) for entry in entries}
    for variant in sorted({entry["variant"] for entry in entries}):
        for size in sizes:
            if (variant, size) not in present:
                fail("models", f"has no {variant} model for batch size {size} ('batch_sizes' lists "
                               f"{', '.join(map(str, sizes))})")  # fmt: skip


def _check_default_and_input(manifest: dict) -> None:
    """The default model is a variant the bundle has; the gateway input is one this runtime can feed."""
    variants = sorted({entry["variant"] for entry in manifest["models"].values()})
    if manifest["default_model"] not in variants:
        fail("default_model", f"must be one of the bundle's variants ({', '.join(variants)}), got "
                              f"{shown(manifest['default_model'])}")  # fmt: skip
    kind_ = manifest.get("gateway_input", LEGACY_GATEWAY_INPUT)
    if not (isinstance(kind_, str) and kind_ in GATEWAY_INPUTS):
        raise ManifestError(f"gateway input {shown(kind_)} (family {shown(manifest.get('family'))}) is not one this "
                            f"gateway can feed ({', '.join(GATEWAY_INPUTS)}); update the gateway")  # fmt: skip


def _check_graph(manifest: dict) -> None:
    """A ``host_graphs`` bundle has its ``graph`` object and node and edge capacities on every model (the edge
    capacity is the batch size); other bundles have neither."""
    graphs = manifest.get("gateway_input") == "host_graphs"
    if graphs and "graph" not in manifest:
        fail("", "is missing field(s) graph (the windowing and inputs of a host_graphs bundle)")
    for key, entry in manifest["models"].items():
        where = member("models", key)
        if not graphs:
            continue
        missing = [name for name in ("node_capacity", "edge_capacity") if name not in entry]
        if missing:
            fail(where, f"is missing field(s) {', '.join(missing)} (a host_graphs model's capacities)")
        for name in ("node_capacity", "edge_capacity"):
            POSITIVE_INT(entry[name], member(where, name))
        if entry["edge_capacity"] != entry["batch_size"]:
            fail(member(where, "edge_capacity"), f"must equal batch_size ({entry['batch_size']}), got "
                                                 f"{shown(entry['edge_capacity'])}")  # fmt: skip


def check_manifest(manifest: object) -> None:
    """Raise :class:`ManifestError` unless ``manifest`` (parsed JSON) is a manifest of a readable bundle schema
    whose fields have the types, sizes and relations the runtime relies on."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"the manifest must be a JSON object, got {shown(manifest)}")
    schema_check(_check_schema_version(manifest))(manifest, "")
    _check_models(manifest)
    _check_batch_sizes(manifest)
    _check_default_and_input(manifest)
    _check_graph(manifest)
