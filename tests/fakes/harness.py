"""Test helpers for the TensorRT code: install the fakes as ``tensorrt``/``pycuda``, make a small bundle.

Loaded by file path from the tests (never by putting ``tests/fakes`` on ``sys.path``, which would
make the fakes importable as ``tensorrt`` everywhere, including the real-TensorRT tests).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

FAKES = Path(__file__).parent
_FAKE_ROOTS = ("tensorrt", "pycuda")


def _ours(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in _FAKE_ROOTS)


def _load_package(name: str, directory: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, directory / "__init__.py", submodule_search_locations=[str(directory)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_module(name: str, path: Path) -> ModuleType:
    """Import one helper file under a private name (not via sys.path)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def fake_gpu() -> Iterator[SimpleNamespace]:
    """Fresh fake ``tensorrt`` + ``pycuda`` (+ a fake libcuda) in ``sys.modules``; the originals come back after.

    Yields:
        ``trt`` (the fake tensorrt), ``cuda`` (the fake pycuda.driver, state in ``cuda.MACHINE``),
        ``libcuda`` (a :class:`FakeLibcuda`; the test routes the engine's ``_libcuda`` to it).
    """
    saved = {k: v for k, v in sys.modules.items() if _ours(k)}
    for k in saved:
        del sys.modules[k]
    try:
        _load_package("pycuda", FAKES / "pycuda")
        import pycuda.driver as cuda  # the fake: sys.modules["pycuda"].__path__ is tests/fakes/pycuda

        trt = _load_package("tensorrt", FAKES / "tensorrt")
        libcuda = load_module("jemc_fake_libcuda", FAKES / "libcuda.py").FakeLibcuda()
        yield SimpleNamespace(trt=trt, cuda=cuda, libcuda=libcuda)
    finally:
        for k in [k for k in sys.modules if _ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)


# --- a small bundle with an exported text graph ------------------------------------------------------

CAPTIONS = ["a man is cooking in a kitchen", "a dog runs on the street", "people are dancing", "a cat sleeps"]


def make_text_bundle(dest: Path) -> Path:
    """A JEMC bundle (two spaces, tiny sizes) whose text encoder is exported to ``onnx/text.onnx`` and
    recorded in the manifest as the exporter records it (files, precision, spec)."""
    import torch

    from jemc_infer.config import ModelConfig, SpaceConfig
    from jemc_infer.manifest import update_manifest
    from jemc_infer.nn import JEMC, save_model
    from jemc_infer.specs import text_spec
    from jemc_infer.text import Vocabulary

    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    config = ModelConfig(spaces=(SpaceConfig("object", ("resnet",)), SpaceConfig("activity", ("i3d", "audio"))),
                         vocab_size=len(vocab), feature_dims={"resnet": 12, "i3d": 6, "audio": 4}, word_dim=8, embed_dim=10)
    torch.manual_seed(0)
    model = JEMC(config).eval()
    save_model(model, vocab, dest)
    spec = text_spec(config)

    class TextGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: Any, lengths: Any) -> tuple[Any, ...]:
            out = self.model.encode_text(ids, lengths)
            return tuple(out[s.name] for s in config.spaces)

    ids, lengths = vocab.encode_batch(CAPTIONS[:2])
    (dest / "onnx").mkdir()
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy exporter warns about itself, tracing and GRU batch sizes (the explicit h0 handles those)
        warnings.simplefilter("ignore")
        torch.onnx.export(TextGraph(), (torch.from_numpy(ids), torch.from_numpy(lengths)), str(dest / "onnx" / "text.onnx"),
                          input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
                          dynamic_axes=spec.dynamic_axes(), opset_version=17, dynamo=False)
    sha = hashlib.sha256((dest / "onnx" / "text.onnx").read_bytes()).hexdigest()
    update_manifest(dest, lambda m: m["graphs"].__setitem__(
        "text", {"files": {"onnx/text.onnx": sha}, "precision": "fp32", "spec": spec.to_json(), "opset": 17}))
    return dest


_TEMPLATE: list[Path] = []


def template_bundle(factory: Any) -> Path:
    """One text bundle per test session (``factory``: pytest's tmp_path_factory); copy it before changing it."""
    if not _TEMPLATE or not _TEMPLATE[0].exists():
        _TEMPLATE[:] = [make_text_bundle(factory.mktemp("trt-template") / "bundle")]
    return _TEMPLATE[0]


def copy_bundle(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


def text_batch(n: int, seed: int = 0) -> dict[str, Any]:
    """``n`` captions as the text graph takes them, lengths unsorted (the longest not first)."""
    import numpy as np

    from jemc_infer.text import Vocabulary

    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    rng = np.random.default_rng(seed)
    words = " ".join(CAPTIONS).split()
    sizes = [(3 * i + 2) % 8 + 1 for i in range(n)]  # 3, 6, 1, 4, 7, ...: unsorted, as real batches are
    texts = [" ".join(rng.choice(words, size=k)) for k in sizes]
    ids, lengths = vocab.encode_batch(texts)
    return {"ids": ids.astype(np.int64), "lengths": lengths.astype(np.int64)}
