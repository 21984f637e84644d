"""Model families (issue 13): the registry and its errors, model specs, checkpoints and every refusal, local training
and evaluation on real rows, LiteRT export through the family, bundle manifests that record the family, and no
module outside a family's own that names it."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import RAW_FILE
from models.checkpoint import CheckpointError, ModelSpec, load_checkpoint, save_checkpoint
from models.family import ModelFamily
from models.flow_rows import FlowRowFamily
from models.registry import UnknownModelFamily, family_names, get_family, register_family

REPO = Path(__file__).resolve().parents[1]
FAMILY = "cnn_lstm"
SMALL = {"conv_channels": 4, "lstm_hidden": 8, "dense": 8, "pool": 8}


@pytest.fixture(scope="module")
def raw_rows(data_dir):
    """(FlowTable, fitted PipelineState) of the 3,000 raw UNSW-NB15 records the gateway tests serve."""
    from flows.loader import load_file
    from flows.pipeline import FeaturePipeline, PipelineConfig

    table = load_file("unsw-nb15-raw", data_dir / "unsw-nb15" / "raw" / RAW_FILE)
    return table, FeaturePipeline(PipelineConfig(nonfinite="error")).fit(table).state_


@pytest.fixture(scope="module")
def tiny(raw_rows, tmp_path_factory):
    """A small untrained CNN-LSTM saved as a checkpoint: (path, spec, model, pipeline JSON)."""
    _, pipeline = raw_rows
    spec = ModelSpec(FAMILY, pipeline.n_outputs, SMALL)
    torch.manual_seed(0)
    model = spec.build().eval()
    path = tmp_path_factory.mktemp("run") / "final.pt"
    save_checkpoint(path, spec, model.state_dict(), pipeline.to_json(), 2)
    return path, spec, model, pipeline.to_json()


# --- registry ---------------------------------------------------------------------------------------------------

def test_listing_the_families_imports_no_torch():
    code = ("import json, sys; from models.registry import family_names; "
            "print(json.dumps([family_names(), 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    names, torch_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert FAMILY in names and torch_loaded is False


@pytest.mark.parametrize("name", ["gcn_nope", "", None, "CNN_LSTM"])
def test_an_unknown_family_is_refused_naming_it_and_the_available_ones(name):
    with pytest.raises(UnknownModelFamily, match=rf"unknown model family {re.escape(repr(name))}; available: .*{FAMILY}"):
        get_family(name)
    assert issubclass(UnknownModelFamily, ValueError)


class _Linear(torch.nn.Module):
    def __init__(self, n_features: int, scale: float) -> None:
        super().__init__()
        self.n_features, self.fc = n_features, torch.nn.Linear(n_features, 1)
        self.scale = scale

    def forward(self, x):
        return self.fc(x).squeeze(-1) * self.scale


@dataclasses.dataclass(frozen=True)
class _LinearParams:
    scale: float = 1.0


class _LinearFamily(FlowRowFamily):
    name = "toy_linear"
    params_type = _LinearParams

    def build(self, n_features, params):
        return _Linear(n_features, **self.resolve(params))


@pytest.fixture
def clean_registry(monkeypatch):
    import models.registry as registry

    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))


def test_a_registered_family_is_listed_and_found_and_its_name_cannot_be_taken_twice(clean_registry):
    toy = _LinearFamily()
    register_family(toy)
    register_family(toy)  # the same object again: no change
    assert "toy_linear" in family_names() and get_family("toy_linear") is toy
    with pytest.raises(ValueError, match="'toy_linear' is already registered"):
        register_family(_LinearFamily())
    spec = ModelSpec("toy_linear", 5, {"scale": 2})
    assert spec.params == {"scale": 2.0} and spec.build()(torch.ones(3, 5)).shape == (3,)


def test_malformed_families_are_refused(clean_registry):
    @dataclasses.dataclass
    class ListParams:
        sizes: list = dataclasses.field(default_factory=list)

    @dataclasses.dataclass
    class NoDefault:
        width: int

    with pytest.raises(ValueError, match="needs a models.family.ModelFamily"):
        register_family(object())
    bad_name = _LinearFamily()
    bad_name.name = "Bad-Name"
    with pytest.raises(ValueError, match="lower-case letters"):
        register_family(bad_name)
    for params_type, message in ((dict, "must be a dataclass"), (ListParams, "is not one of int, float, str, bool"),
                                 (NoDefault, "has no default")):  # fmt: skip
        family = _LinearFamily()
        family.name, family.params_type = "toy_bad", params_type
        with pytest.raises(TypeError, match=message):
            register_family(family)
    assert "toy_bad" not in family_names()


def test_the_baselines_factory_builds_the_family_detector_and_lists_every_family():
    from models.baselines import DETECTOR_NAMES, make_detector

    assert set(family_names()) <= set(DETECTOR_NAMES)
    assert type(make_detector(FAMILY, seed=0)) is get_family(FAMILY).detector_class()
    with pytest.raises(ValueError, match=f"unknown detector 'svm'; valid names: .*xgboost.*{FAMILY}"):
        make_detector("svm")


# --- parameters and specs ---------------------------------------------------------------------------------------

def test_the_params_dataclass_is_the_only_place_of_the_defaults():
    family = get_family(FAMILY)
    assert family.default_params() == dataclasses.asdict(family.params_type())
    network = type(family.build(16, {}))
    signature = inspect.signature(network.__init__)
    defaults = {n: p.default for n, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    assert defaults == {}, f"{network.__name__}.__init__ repeats defaults: {defaults}"
    assert family.build(16, {"lstm_hidden": 5}).params == {**family.default_params(), "lstm_hidden": 5}


@pytest.mark.parametrize("params, message", [
    ({"hidden": 3}, r"unknown cnn_lstm parameter\(s\) \['hidden'\]; valid: .*lstm_hidden"),
    ({"pool": "2"}, "parameter 'pool' must be int, got '2'"),
    ({"batch_norm": 1}, "parameter 'batch_norm' must be bool"),
    ({"lstm_layers": 2.0}, "parameter 'lstm_layers' must be int"),
    ({"kernel_size": 4}, "kernel_size must be a positive odd number"),
    ({"readout": "first"}, "readout must be one of"),
    ({"pool": 64}, "pool=64 leaves no sequence steps for n_features=16"),
])  # fmt: skip
def test_build_refuses_bad_params_naming_them(params, message):
    with pytest.raises(ValueError, match=message):
        get_family(FAMILY).build(16, params)


def test_a_spec_round_trips_through_json_with_every_parameter():
    spec = ModelSpec(FAMILY, 41, {"dropout": 0})
    assert set(spec.params) == {f.name for f in dataclasses.fields(get_family(FAMILY).params_type)}
    assert spec.params["dropout"] == 0.0 and isinstance(spec.params["dropout"], float)
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and again.to_json() == spec.to_json() and hash(again) == hash(spec)
    assert again != ModelSpec(FAMILY, 41, {"dropout": 0.5}) and len({spec, again}) == 1
    model = again.build()
    assert model.n_features == 41 and model.params == spec.params


@pytest.mark.parametrize("text, message", [
    ("{", r"model spec: not valid JSON \(Expecting property name.*line 1 column 2"),
    ("[1]", "model spec: expected a JSON object with family, n_features, params, got list"),
    ('{"family": "cnn_lstm", "n_features": 4}', r"missing key\(s\) \['params'\]"),
    ('{"family": "cnn_lstm", "n_features": 4, "params": {}, "extra": 1}', r"unknown key\(s\) \['extra'\]"),
    ('{"family": "rnn", "n_features": 4, "params": {}}', "unknown model family 'rnn'; available: cnn_lstm"),
    ('{"family": "cnn_lstm", "n_features": 4, "params": {"width": 2}}', r"unknown cnn_lstm parameter\(s\) \['width'\]"),
    ('{"family": "cnn_lstm", "n_features": 0, "params": {}}', "n_features must be a positive integer, got 0"),
    ('{"family": "cnn_lstm", "n_features": "4", "params": {}}', "n_features must be a positive integer, got '4'"),
    ('{"family": "cnn_lstm", "n_features": 4, "params": []}', "params must be an object, got list"),
])  # fmt: skip
def test_a_bad_spec_is_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_json(text)


# --- checkpoints ------------------------------------------------------------------------------------------------

def test_a_checkpoint_round_trips(tiny, raw_rows):
    path, spec, model, pipeline_json = tiny
    loaded = load_checkpoint(path)
    assert loaded.spec == spec and loaded.round == 2 and loaded.path == path
    assert loaded.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.pipeline_state == pipeline_json and loaded.pipeline.output_names == raw_rows[1].output_names
    assert loaded.family is get_family(FAMILY)
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict[key], tensor), key
    rebuilt = loaded.model()
    assert not rebuilt.training and rebuilt is not loaded.model()
    x = torch.from_numpy(raw_rows[1].transform(raw_rows[0].frame[:64]))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def _save_raw(path: Path, data) -> Path:
    torch.save(data, path)
    return path


def _valid_dict(tiny) -> dict:
    path, spec, model, pipeline_json = tiny
    return dict(torch.load(path, weights_only=True))


class _NotWeights:
    pass


@pytest.mark.parametrize("make, message", [
    (lambda d, p: p / "absent.pt", "checkpoint not found: .*absent.pt"),
    (lambda d, p: (p / "junk.pt").write_bytes(b"not a torch file") and p / "junk.pt", "is not a readable checkpoint"),
    (lambda d, p: _save_raw(p / "obj.pt", {"x": _NotWeights()}), "is not a readable checkpoint"),
    (lambda d, p: _save_raw(p / "list.pt", [1, 2]), "is not a BotDefender checkpoint: it holds a list"),
    (lambda d, p: _save_raw(p / "old.pt", {"state_dict": d["state_dict"], "model_config": {"n_features": 3},
                                           "pipeline_state": d["pipeline_state"], "round": 3}),
     "predates model families"),
    (lambda d, p: _save_raw(p / "fmt.pt", {**d, "format": "other"}), "format 'other', expected 'botdefender-"),
    (lambda d, p: _save_raw(p / "ver.pt", {**d, "format_version": 9}), "format version 9 is not supported"),
    (lambda d, p: _save_raw(p / "noround.pt", {k: v for k, v in d.items() if k != "round"}), "lacks round"),
    (lambda d, p: _save_raw(p / "fam.pt", {**d, "model_spec": d["model_spec"].replace("cnn_lstm", "gru")}),
     "unknown model family 'gru'; available: cnn_lstm"),
    (lambda d, p: _save_raw(p / "param.pt", {**d, "model_spec": d["model_spec"].replace('"dense"', '"wide"')}),
     r"unknown cnn_lstm parameter\(s\) \['wide'\]"),
    (lambda d, p: _save_raw(p / "pipe.pt", {**d, "pipeline_state": "{"}), "pipeline_state: "),
    (lambda d, p: _save_raw(p / "nfeat.pt", {**d, "model_spec": json.dumps({**json.loads(d["model_spec"]),
                                                                           "n_features": 7})}),
     "the pipeline encodes .* features, the model reads 7"),
    (lambda d, p: _save_raw(p / "keys.pt", {**d, "state_dict": {k: v for k, v in list(d["state_dict"].items())[1:]}}),
     "the weights do not fit a cnn_lstm model of this spec: missing"),
    (lambda d, p: _save_raw(p / "shape.pt", {**d, "model_spec": d["model_spec"].replace('"dense": 8', '"dense": 9')}),
     "weight 'fc1.weight' has shape"),
])  # fmt: skip
def test_a_file_that_is_not_a_usable_checkpoint_is_refused_with_the_reason(tiny, tmp_path, make, message):
    path = make(_valid_dict(tiny), tmp_path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_saving_checks_the_weights_and_the_pipeline_against_the_spec(tiny, tmp_path):
    _, spec, model, pipeline_json = tiny
    other = ModelSpec(FAMILY, spec.n_features, {**SMALL, "lstm_hidden": 9})
    with pytest.raises(CheckpointError, match="weight 'lstm.weight_ih_l0' has shape"):
        save_checkpoint(tmp_path / "a.pt", other, model.state_dict(), pipeline_json, 1)
    with pytest.raises(CheckpointError, match="the pipeline encodes .* features, the model reads 5"):
        save_checkpoint(tmp_path / "b.pt", ModelSpec(FAMILY, 5, {"pool": 1}), ModelSpec(FAMILY, 5, {"pool": 1})
                        .build().state_dict(), pipeline_json, 1)  # fmt: skip
    with pytest.raises(CheckpointError, match="spec must be a ModelSpec"):
        save_checkpoint(tmp_path / "c.pt", spec.to_json(), model.state_dict(), pipeline_json, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, no temporary left behind
    numpy_state = {k: v.numpy() for k, v in model.state_dict().items()}  # arrays as a ServerApp holds them
    save_checkpoint(tmp_path / "d.pt", spec, numpy_state, pipeline_json, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"] and load_checkpoint(tmp_path / "d.pt").round == 1


# --- local training and evaluation ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def partition_rows(unsw_table):
    """4,000 fit and 1,000 held-out rows of the 82,332-record partition (both classes), encoded by the family."""
    from flows.pipeline import FeaturePipeline

    rng = np.random.default_rng(0)
    index = rng.choice(len(unsw_table), size=5000, replace=False)
    fit, held = unsw_table.subset(list(index[:4000])), unsw_table.subset(list(index[4000:]))
    pipeline = FeaturePipeline().fit(fit).state_
    family = get_family(FAMILY)
    return family.batches(fit, pipeline), family.batches(held, pipeline), pipeline


def test_batches_are_the_encoded_rows_and_the_labels(partition_rows):
    (X, y), _, pipeline = partition_rows
    assert X.dtype == np.float32 and y.dtype == np.int64 and X.shape == (4000, pipeline.n_outputs)
    assert 0.3 < y.mean() < 0.8


def test_train_local_learns_on_real_rows_deterministically_and_fedprox_holds_it_near_the_start(partition_rows):
    (X, y), (X_held, y_held), _ = partition_rows
    family = get_family(FAMILY)
    torch.manual_seed(0)
    start = family.build(X.shape[1], SMALL)
    initial = {k: v.clone() for k, v in start.state_dict().items()}
    loss_before, _ = family.evaluate_local(start, X_held, y_held)

    def trained(mu: float):
        model = family.build(X.shape[1], SMALL)
        model.load_state_dict(initial)
        loss = family.train_local(model, X, y, epochs=3, batch_size=64, lr=1e-2, seed=5, proximal_mu=mu)
        return model, loss

    model, train_loss = trained(0.0)
    loss_after, accuracy = family.evaluate_local(model, X_held, y_held)
    assert np.isfinite(train_loss) and loss_after < loss_before
    assert accuracy > 0.75  # 55% of the rows are attacks; the untrained model is at chance
    logits = family.predict_logits(model, X_held)
    assert logits.shape == (1000,) and logits.dtype == np.float32
    expected = float(np.mean(np.logaddexp(0, logits.astype(np.float64)) - y_held * logits))
    assert loss_after == pytest.approx(expected, rel=1e-6)
    assert accuracy == pytest.approx(float(np.mean((logits >= 0) == y_held)))
    again, _ = trained(0.0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    def drift(m) -> float:
        return float(sum(((m.state_dict()[k] - initial[k]) ** 2).sum() for k in initial))

    proximal, _ = trained(10.0)
    assert drift(proximal) < 0.5 * drift(model)
    with pytest.raises(ValueError, match="local-epochs must be >= 1"):
        family.train_local(model, X, y, epochs=0, batch_size=64, lr=1e-3, seed=0)
    with pytest.raises(ValueError, match="no training rows"):
        family.train_local(model, X[:0], y[:0], epochs=1, batch_size=64, lr=1e-3, seed=0)


# --- export -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layers, readout", [(1, "last"), (2, "mean"), (2, "max")])
def test_the_export_form_computes_what_the_model_computes(layers, readout):
    family = get_family(FAMILY)
    torch.manual_seed(layers)
    model = family.build(41, {"lstm_layers": layers, "readout": readout}).eval()
    x = torch.randn(64, 41) * 3
    with torch.no_grad():
        assert torch.allclose(family.export_form(model)(x), model(x), atol=1e-5)


def _litert(content: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(-1)


def test_the_family_exports_an_fp32_tflite_that_equals_pytorch_on_real_rows(tiny, raw_rows):
    _, spec, model, _ = tiny
    table, pipeline = raw_rows
    x = pipeline.transform(table.frame.iloc[2900:2908])  # rows with attacks among them
    content = get_family(FAMILY).export_tflite(model, 8)
    assert content[4:8] == b"TFL3"
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_litert(content, x), reference, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_bundle(tiny, tmp_path_factory):
    from gateway.export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle")
    manifest = export_bundle(tiny[0], out, ExportOptions(batch_sizes=(4,), compression="none"))
    return out, manifest


def test_the_manifest_records_the_family_its_params_and_the_gateway_input(tiny, tiny_bundle):
    from gateway.bundle import load_bundle

    out, manifest = tiny_bundle
    assert manifest["family"] == FAMILY and manifest["family_params"] == tiny[1].params
    assert manifest["gateway_input"] == "flow_rows" and "architecture" not in manifest
    bundle = load_bundle(out)
    assert bundle.family == FAMILY and bundle.gateway_input == "flow_rows"


def _edited_copy(out: Path, tmp_path: Path, edit) -> Path:
    import shutil

    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_bundle_written_before_families_reads_as_flow_rows(tiny_bundle, tmp_path):
    from gateway.bundle import load_bundle
    from gateway.engine import VerdictModel

    def as_schema_2(manifest: dict) -> None:
        manifest["bundle_schema"] = 2
        for key in ("family", "family_params", "gateway_input"):
            del manifest[key]
        manifest["architecture"] = "cnn_lstm"

    bundle = load_bundle(_edited_copy(tiny_bundle[0], tmp_path, as_schema_2))
    assert bundle.gateway_input == "flow_rows" and bundle.family is None
    assert VerdictModel(bundle, "fp32").probabilities(np.zeros((3, bundle.pipeline.n_outputs))).shape == (3,)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(gateway_input="host_graph"),
     "gateway input 'host_graph' \\(family 'cnn_lstm'\\) is not one this gateway can feed \\(flow_rows, "
     "host_graphs\\)"),
    (lambda m: m.pop("gateway_input"), r"missing field\(s\) gateway_input"),
    (lambda m: m.pop("family"), r"missing field\(s\) family"),
    (lambda m: m.update(family=3), "'family' must be a model family name, got 3"),
    (lambda m: m.update(family_params=[1]), "'family_params' must be an object, got list"),
    (lambda m: m.update(bundle_schema=2, gateway_input="host_graph"), "gateway input 'host_graph'"),
])  # fmt: skip
def test_a_bundle_whose_family_fields_the_gateway_cannot_use_is_refused(tiny_bundle, tmp_path, edit, message):
    from gateway.bundle import BundleError, load_bundle

    with pytest.raises(BundleError, match=message):
        load_bundle(_edited_copy(tiny_bundle[0], tmp_path, edit))


def test_a_checkpoint_refusal_reaches_the_exporter_as_an_export_error(tmp_path):
    from gateway.export import ExportError, export_bundle

    _save_raw(tmp_path / "old.pt", {"state_dict": {}, "model_config": {"n_features": 3}, "pipeline_state": "{}",
                                    "round": 1})  # fmt: skip
    with pytest.raises(ExportError, match="predates model families"):
        export_bundle(tmp_path / "old.pt", tmp_path / "out")


def test_the_attack_report_scores_through_the_checkpoint_family(tiny, raw_rows):
    from simulation.attack_report import final_model_scores

    path, _, model, _ = tiny
    table, pipeline = raw_rows
    with torch.no_grad():
        reference = torch.sigmoid(model(torch.from_numpy(pipeline.transform(table.frame)))).numpy()
    np.testing.assert_allclose(final_model_scores(path, table), reference, atol=1e-6)


# --- nothing outside a family's modules names it ----------------------------------------------------------------

PRODUCT_EXCLUDED = {"conf", "benchmarks", "tests", "docs"}


def _product_files() -> list[Path]:
    packages = [p for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name not in PRODUCT_EXCLUDED]
    assert {"models", "gateway", "fl_client", "fl_server", "simulation"} <= {p.name for p in packages}
    return [f for package in packages for f in package.rglob("*")
            if f.is_file() and f.suffix in {".py", ".yaml", ".toml", ".json"} and "__pycache__" not in f.parts]  # fmt: skip


@pytest.mark.parametrize("name", family_names())
def test_nothing_outside_the_family_modules_names_the_family(name):
    family: ModelFamily = get_family(name)
    assert family.modules, f"family {name} declares no modules"
    own = [REPO.joinpath(*m.split(".")) for m in family.modules]
    own_files = {p.with_suffix(".py") for p in own} | {f for p in own if p.is_dir() for f in p.rglob("*.py")}
    package = sys.modules[type(family).__module__.rsplit(".", 1)[0]]
    identifiers = {name, type(family).__name__, *getattr(package, "__all__", [])}
    identifiers |= {cls.__name__ for cls in (type(family.build(16, {})), family.detector_class()) if cls is not None}
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, identifiers))) + r")\b")
    hits = []
    for path in _product_files():
        if path in own_files:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not hits, f"{name} is named outside its modules ({sorted(identifiers)}):\n" + "\n".join(hits)
