"""``jemc-infer export --to triton``: the repository's configs parse with Triton's own ModelConfig
protobuf and agree with the ONNX graphs; the Python-backend tokenizer equals jemc_infer's; the
two ensembles, run step by step with onnxruntime, give the query and row the runtime gives."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import text_format  # noqa: E402  (after the skip: protobuf comes with tritonclient)
from support.limits import small_limits_value  # noqa: E402

from jemc_infer.bundle import read_bundle  # noqa: E402
from jemc_infer.text import Vocabulary  # noqa: E402

TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}


@pytest.fixture(scope="module")
def exported(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_bundle`` (object, activity and a shared space with a paired audio mask) with text and video exported."""
    from jemc_infer.export.onnx import export_bundle

    out = tmp_path_factory.mktemp("triton") / "model"
    shutil.copytree(tiny_bundle, out)
    export_bundle(out, small_limits_value(), only=("text", "video"), echo=lambda s: None)
    return out


@pytest.fixture(scope="module")
def repo(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jemc_infer.export.triton import export_triton

    out = tmp_path_factory.mktemp("repo") / "triton"
    export_triton(exported, out, echo=lambda s: None)
    return out


def _config(repo: Path, name: str) -> Any:
    return text_format.Parse((repo / name / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def _type(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def test_every_config_parses_and_names_its_folder(repo: Path) -> None:
    names = sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))
    assert names == sorted(["text", "video", "query_fuse", "row_concat", "tokenizer", "query", "index_row"])
    for name in names:
        config = _config(repo, name)
        assert config.name == name
        assert (repo / name / "1").is_dir()
    assert json.loads((repo / "jemc-triton.json").read_text())["models"]


@pytest.mark.parametrize("graph", ["text", "video"])
def test_graph_configs_match_the_onnx_graphs(repo: Path, exported: Path, graph: str) -> None:
    import onnx

    from jemc_infer.manifest import graph_entry

    config = _config(repo, graph)
    assert config.platform == "onnxruntime_onnx"
    model = onnx.load(str(repo / graph / "1" / "model.onnx"))
    assert (repo / graph / "1" / "model.onnx").read_bytes() == (exported / "onnx" / f"{graph}.onnx").read_bytes()
    spec = graph_entry(exported, graph).spec
    limits = json.loads(dict(config.parameters)["jemc.shape_limits"].string_value)
    assert config.max_batch_size == 9 == min(v["max"][0] for v in limits.values())  # small_limits_value().max_batch
    assert config.dynamic_batching is not None and config.HasField("dynamic_batching")
    assert config.instance_group[0].count == 1
    for declared, onnx_values, spec_values in ((config.input, model.graph.input, spec.inputs),
                                               (config.output, model.graph.output, spec.outputs)):
        assert [t.name for t in declared] == [v.name for v in onnx_values] == [t.name for t in spec_values]
        for t, v, s in zip(declared, onnx_values, spec_values, strict=True):
            assert _type(t.data_type) == TYPES[s.dtype]
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
            assert shape[0] == -1  # the batch axis, Triton's
            if len(shape) == 1:
                assert list(t.dims) == [1] and t.HasField("reshape") and list(t.reshape.shape) == []
            else:
                assert list(t.dims) == shape[1:]
    if graph == "text":
        assert limits["ids"]["max"] == [9, 12] and limits["lengths"]["min"] == [1]
        assert _type(config.input[0].data_type) == "TYPE_INT64" and list(config.input[0].dims) == [-1]
    else:
        assert "TYPE_BOOL" in {_type(t.data_type) for t in config.input}  # the shared space's audio mask


def test_ensembles_wire_real_tensors(repo: Path, exported: Path) -> None:
    b = read_bundle(exported)
    width = b.config.embed_dim * len(b.config.spaces)
    query = _config(repo, "query")
    assert query.platform == "ensemble" and query.max_batch_size == 9
    assert [s.model_name for s in query.ensemble_scheduling.step] == ["tokenizer", "text", "query_fuse"]
    assert _type(query.input[0].data_type) == "TYPE_STRING" and list(query.output[0].dims) == [width]
    row = _config(repo, "index_row")
    assert [s.model_name for s in row.ensemble_scheduling.step] == ["video", "row_concat"]
    assert [t.name for t in row.input] == [t.name for t in _config(repo, "video").input]
    for ensemble in (query, row):
        produced = {t.name for t in ensemble.input}
        for step in ensemble.ensemble_scheduling.step:
            model = _config(repo, step.model_name)
            assert set(step.input_map) == {t.name for t in model.input}  # every model input fed
            assert set(step.input_map.values()) <= produced  # from a tensor made before it
            assert set(step.output_map) <= {t.name for t in model.output}
            produced |= set(step.output_map.values())
            assert model.max_batch_size >= ensemble.max_batch_size
        assert {t.name for t in ensemble.output} <= produced


# --- the Python-backend tokenizer, with a stand-in for triton_python_backend_utils -------------------


def _fake_pb_utils() -> ModuleType:
    """The parts of ``triton_python_backend_utils`` a model uses, as Triton's behave."""
    pb = ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name: str, array: np.ndarray) -> None:
            self._name, self._array = name, np.asarray(array)

        def name(self) -> str:
            return self._name

        def as_numpy(self) -> np.ndarray:
            return self._array

    class TritonError:
        def __init__(self, message: str) -> None:
            self._message = message

        def message(self) -> str:
            return self._message

    class InferenceResponse:
        def __init__(self, output_tensors: list[Tensor], error: TritonError | None = None) -> None:
            self._outputs, self._error = output_tensors, error

        def output_tensors(self) -> list[Tensor]:
            return self._outputs

        def has_error(self) -> bool:
            return self._error is not None

        def error(self) -> TritonError | None:
            return self._error

    def get_input_tensor_by_name(request: Any, name: str) -> Tensor | None:
        return next((t for t in request.inputs() if t.name() == name), None)

    def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
        return next((t for t in response.output_tensors() if t.name() == name), None)

    pb.Tensor, pb.TritonError, pb.InferenceResponse = Tensor, TritonError, InferenceResponse
    pb.get_input_tensor_by_name, pb.get_output_tensor_by_name = get_input_tensor_by_name, get_output_tensor_by_name
    return pb


@pytest.fixture()
def tokenizer(repo: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """``tokenizer/1/model.py`` loaded from the repository (not from jemc_infer) and initialised as Triton does."""
    from google.protobuf import json_format

    pb = _fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec = importlib.util.spec_from_file_location("triton_tokenizer_model", repo / "tokenizer" / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    config = json_format.MessageToJson(_config(repo, "tokenizer"), preserving_proto_field_name=True)
    model.initialize({"model_config": config, "model_repository": str(repo / "tokenizer"), "model_version": "1",
                      "model_name": "tokenizer", "model_instance_kind": "CPU"})
    return SimpleNamespace(model=model, pb=pb, module=module)


def _request(pb: ModuleType, texts: list[str]) -> Any:
    tensor = pb.Tensor("text", np.array([t.encode("utf-8") for t in texts], dtype=np.object_).reshape(-1, 1))
    return SimpleNamespace(inputs=lambda: [tensor])


def _strings(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    pieces = ["a", "man", "dog's", "t-shirt", "Cooking", "KITCHEN", "street", "’s", "it’s", "--", "_", "x_y", "42", "3.5",
              "café", "Straße", "naïve", "日本語", "ünïcödé", "!", "?", ",", "'", "-a-", "a--b", "  ", "\t", "\n", "people",
              "dancing", "cat", "sleeps", "ΣΑΣ", "İstanbul", "x'", "'y", "o'neil-smith", "🙂", "a\u0301"]
    return [" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def test_tokenizer_rules_equal_jemc_infers(tokenizer: SimpleNamespace, exported: Path) -> None:
    vocab = read_bundle(exported).vocab
    table = tokenizer.model.table
    texts = _strings(0, 2000) + ["A man's cooking.", "a dog runs on the street", "people are dancing"]
    from jemc_infer.text import tokenize

    for t in texts:
        assert tokenizer.module.tokenize(t) == tokenize(t), t
    for max_len in (None, 2, 5, 12):
        ids, lengths = tokenizer.module.encode(texts, table, max_len)
        want_ids, want_lengths = vocab.encode_batch(texts, max_len=max_len)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(lengths, want_lengths)


def test_tokenizer_execute_equals_jemc_infers(tokenizer: SimpleNamespace, exported: Path) -> None:
    vocab: Vocabulary = read_bundle(exported).vocab
    batches = [["a man is cooking in a kitchen"], _strings(1, 7), _strings(2, 3) + ["x " * 40]]
    responses = tokenizer.model.execute([_request(tokenizer.pb, texts) for texts in batches])
    assert len(responses) == len(batches)
    assert tokenizer.model.max_len == 12  # the text graph's checked sequence limit, from the config
    for texts, response in zip(batches, responses, strict=True):
        assert not response.has_error()
        want_ids, want_lengths = vocab.encode_batch(texts, max_len=12)
        ids = tokenizer.pb.get_output_tensor_by_name(response, "ids").as_numpy()
        lengths = tokenizer.pb.get_output_tensor_by_name(response, "lengths").as_numpy()
        assert ids.dtype == np.int64 and lengths.shape == (len(texts), 1)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(lengths[:, 0], want_lengths)


def test_tokenizer_refuses_an_empty_text(tokenizer: SimpleNamespace) -> None:
    (response,) = tokenizer.model.execute([_request(tokenizer.pb, ["a dog", "  "])])
    assert response.has_error() and "text 2 | empty" in response.error().message()


def test_the_tokenizer_model_needs_no_jemc_infer() -> None:
    source = (Path(__file__).parents[2] / "export" / "triton_tokenizer.py").read_text(encoding="utf-8")
    assert "jemc_infer" not in "\n".join(line for line in source.splitlines() if "import" in line)


# --- the ensembles' arithmetic, step by step on onnxruntime -------------------------------------------


def test_query_and_row_equal_the_runtimes(repo: Path, exported: Path, tokenizer: SimpleNamespace) -> None:
    import onnxruntime as ort

    from jemc_infer.embed import pooled_rows
    from jemc_infer.engines import open_engine
    from jemc_infer.query import encode_queries

    b = read_bundle(exported)

    def run(name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))

    texts = ["a man is cooking", "a dog runs on the street in the rain", "people"]
    (response,) = tokenizer.model.execute([_request(tokenizer.pb, texts)])
    tok = {t.name(): t.as_numpy() for t in response.output_tensors()}
    emb = run("text", {"ids": tok["ids"], "lengths": tok["lengths"].reshape(-1)})  # Triton's reshape [1] → []
    query = run("query_fuse", emb)["query"]
    with open_engine(exported, "text", backend="onnxruntime")[0] as engine:
        want, _ = encode_queries(b, engine, texts, {s.name: s.weight for s in b.config.spaces})
    np.testing.assert_allclose(query, want, atol=1e-6)

    rng = np.random.default_rng(0)
    features = [{f: rng.standard_normal(d).astype(np.float32) for f, d in b.config.feature_dims.items()} for _ in range(4)]
    features[1].pop("audio")  # a silent video: zeros and mask False
    with open_engine(exported, "video", backend="onnxruntime")[0] as heads:
        want_rows = pooled_rows(b.config, heads, features, batch_size=4)
        inputs = {name: np.stack([p.get(name, np.zeros(b.config.feature_dims[name], np.float32)) for p in features])
                  for name in b.config.features}
        inputs["audio_mask"] = np.array(["audio" in p for p in features])
        rows = run("row_concat", run("video", inputs))["row"]
    np.testing.assert_allclose(rows, want_rows, atol=1e-6)


# --- TensorRT plans, errors, the CLI --------------------------------------------------------------------


def test_a_recorded_plan_becomes_a_tensorrt_model(exported: Path, tmp_path: Path) -> None:
    from jemc_infer.export.triton import export_triton
    from jemc_infer.manifest import graph_entry, update_manifest

    bundle = shutil.copytree(exported, tmp_path / "model")
    plan = b"not a real engine, only bytes the manifest vouches for"
    (bundle / "engines").mkdir()
    (bundle / "engines" / "k1.plan").write_bytes(plan)
    entry = graph_entry(bundle, "text")
    profile = {"ids": {"min": [1, 1], "opt": [4, 6], "max": [9, 12]}, "lengths": {"min": [1], "opt": [4], "max": [9]}}
    record = {"graph": "text", "file": "engines/k1.plan", "sha256": hashlib.sha256(plan).hexdigest(), "onnx_sha256": entry.sha256,
              "tensorrt": "10.13.0", "gpu": "NVIDIA H200", "compute_capability": "9.0", "precision": "fp16", "profiles": [profile]}
    update_manifest(bundle, lambda m: m["engines"].__setitem__("k1", record))
    names = export_triton(bundle, tmp_path / "repo", echo=lambda s: None)
    assert "text_trt_fp16" in names
    config = _config(tmp_path / "repo", "text_trt_fp16")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 9
    assert (tmp_path / "repo" / "text_trt_fp16" / "1" / "model.plan").read_bytes() == plan
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"
    assert [t.name for t in config.input] == ["ids", "lengths"]
    assert json.loads(dict(config.parameters)["jemc.shape_limits"].string_value)["ids"]["max"] == [9, 12]

    (bundle / "engines" / "k1.plan").write_bytes(b"tampered")
    from jemc_infer.errors import BundleError

    with pytest.raises(BundleError, match="missing or not the file the manifest records"):
        export_triton(bundle, tmp_path / "repo", echo=lambda s: None)


def test_refuses_a_bundle_without_graphs_and_a_foreign_folder(tiny_bundle: Path, exported: Path, tmp_path: Path) -> None:
    from jemc_infer.errors import BundleError, InputError
    from jemc_infer.export.triton import export_triton

    with pytest.raises(BundleError, match="no exported text or video graph"):
        export_triton(tiny_bundle, tmp_path / "repo", echo=lambda s: None)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="non-empty directory"):
        export_triton(exported, tmp_path / "mine", echo=lambda s: None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_cli_writes_a_repository(exported: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jemc_infer.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["export", str(exported), "--to", "triton", "--out", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    assert "tritonserver --model-repository" in result.stdout
    assert (tmp_path / "repo" / "query" / "config.pbtxt").is_file()
    result = runner.invoke(app, ["export", str(exported), "--to", "triton"])
    assert result.exit_code == 1 and "expected --out REPO" in result.stderr
